"""Look inside generation: an attention explorer and a sampling playground (notebook 08).

The explorer takes *recorded* attention, never the model (DESIGN "Inspection is explicit"):
a dict ``{layer: (n_heads, S, S)}`` as ``model.run_with_cache`` or ``generate(...,
record_attention=True)`` give it, and the token strings. Every view is a matplotlib figure
rendered to PNG bytes and shown in an ``ipywidgets.Image``: cheap to redraw, easy to test,
and the image stays the same size however long the text is, because long inputs are
max-pooled to at most ``max_cells`` cells per side before drawing.

Pure figure functions come first (`bin_attention`, `attention_heatmap`, `heads_grid`,
`network_view`, `token_row_html`); the widgets (`AttentionExplorer`, `SamplingPlayground`)
are thin shells around them with a Python API (``.set(...)``, ``.current_png()``) so tests and
notebooks can drive them without a browser.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from ..utils.io import atomic_write_bytes

# Attention maps are dominated by a few large weights (BOS, the previous token); a square-root
# colour scale (gamma 0.5) keeps the small ones visible while 0 stays white and 1 stays dark.
GAMMA = 0.5
CMAP = "Blues"
GROUP_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
PROMPT_COLOUR, GENERATED_COLOUR = "#333333", "#c2410c"
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.attention\.pattern$")


class ExplorerError(ValueError):
    """Attention or tokens the explorer cannot show; the message says what is wrong and what to do."""


# --- pure helpers ------------------------------------------------------------------------------
ROW_BEFORE, ROW_AFTER = 160, 24  # tokens of context shown around the query in the explorer's row text


def bin_attention(mat, bin: int) -> np.ndarray:
    """Max-pool the last two axes in ``bin`` x ``bin`` blocks: (..., S, S) -> (..., ceil(S/bin), ceil(S/bin)).

    Max, not mean, so one strong link survives binning (the paper's Figure 10 does the same:
    "maximum activations ... we bin neighboring tokens together"). A partial last block is pooled
    over the tokens it has.
    """
    a = _to_numpy(mat)
    if a.ndim < 2:
        raise ExplorerError(f"bin_attention needs a (..., S, S) array, got shape {a.shape}.")
    if not isinstance(bin, (int, np.integer)) or bin < 1:
        raise ExplorerError(f"bin must be a positive integer, got {bin!r}.")
    if bin == 1:
        return a
    *lead, R, C = a.shape
    r, c = math.ceil(R / bin), math.ceil(C / bin)
    padded = np.full((*lead, r * bin, c * bin), -np.inf, dtype=a.dtype)
    padded[..., :R, :C] = a
    # (..., r·bin, c·bin) -> (..., r, bin, c, bin) -> max over both bin axes -> (..., r, c)
    return padded.reshape(*lead, r, bin, c, bin).max(axis=(-3, -1))


def bin_size_for(S: int, max_cells: int) -> int:
    """The smallest bin that brings S tokens down to at most ``max_cells`` cells."""
    if max_cells < 1:
        raise ExplorerError(f"max_cells must be >= 1, got {max_cells}.")
    return max(1, math.ceil(S / max_cells))


def display_token(tok: str, width: int = 12) -> str:
    """A token string as a short, visible label: SentencePiece's "▁" as a space, newlines as ↵."""
    t = _readable(tok).replace("\n", "↵").replace("\t", "⇥")
    if t.strip() == "":
        t = "·" * max(1, len(t)) if t else "∅"
    return t if len(t) <= width else t[: width - 1] + "…"


_BYTE_NAMES = {"<0x0A>": "↵", "<0x09>": "⇥", "<0x20>": " "}


def _readable(tok: str) -> str:
    """SentencePiece's visible space "▁" as a space, newline/tab byte pieces as ↵/⇥."""
    return _BYTE_NAMES.get(tok, tok).replace("\u2581", " ")


def token_row_html(
    tokens: Sequence[str],
    weights,
    *,
    query: int | None = None,
    n_prompt: int | None = None,
    normalize: bool = False,
    offset: int = 0,
) -> str:
    """The text with each token shaded by its attention weight: HTML spans, background alpha = weight.

    weights (S,) or shorter (a causal row stops at the query). ``normalize`` divides by the row's
    maximum so weak patterns show up; the exact weight is always in the span's tooltip.
    The query token is outlined; generated tokens (index >= n_prompt) are underlined in orange.
    ``offset`` is the position of tokens[0] in the whole text (a window of it), for the tooltips' numbers.
    """
    w = _to_numpy(weights).astype(np.float64).ravel()
    if len(w) > len(tokens):
        raise ExplorerError(f"{len(w)} weights for {len(tokens)} tokens: pass the row of one query token.")
    if np.any(w < -1e-6) or not np.all(np.isfinite(w)):
        raise ExplorerError("attention weights must be finite and >= 0 (probabilities).")
    scale = w.max() if (normalize and len(w) and w.max() > 0) else 1.0
    spans = []
    for i, tok in enumerate(tokens):
        text = html.escape(_readable(tok).replace("\n", "↵"))
        if i < len(w):
            alpha = float(np.clip(w[i] / scale, 0.0, 1.0))
            tip = f"#{i + offset} {html.escape(repr(tok))}: {w[i]:.4f}"
        else:
            alpha, tip = 0.0, f"#{i + offset} {html.escape(repr(tok))}: masked (future token)"
        style = [f"background-color:rgba(31,119,180,{alpha:.3f})", "padding:1px 0", "white-space:pre-wrap"]
        if alpha > 0.6:
            style.append("color:white")
        if i >= len(w):
            style.append("color:#aaa")
        if query is not None and i == query:
            style.append("outline:2px solid #d62728")
        if n_prompt is not None and i >= n_prompt:
            style.append(f"border-bottom:2px solid {GENERATED_COLOUR}")
        spans.append(f'<span title="{tip}" style="{";".join(style)}">{text}</span>')
    return (
        '<div class="l2l-row" style="font-family:monospace;line-height:1.7;max-height:30em;'
        'overflow-y:auto;word-break:break-word">' + "".join(spans) + "</div>"
    )


def kv_groups(n_heads: int, n_kv_heads: int) -> list[list[int]]:
    """Query heads of each KV head: head h reads KV head h // (n_heads / n_kv_heads), as ``repeat_kv``."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ExplorerError(
            f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}; pass the model's args.kv_heads."
        )
    n_rep = n_heads // n_kv_heads
    return [list(range(g * n_rep, (g + 1) * n_rep)) for g in range(n_kv_heads)]


def head_label(h: int, n_heads: int, n_kv_heads: int) -> str:
    """ "h5 (kv 1)": query head 5 reads key/value head 1."""
    return f"h{h} (kv {h // (n_heads // n_kv_heads)})"


# --- figures -----------------------------------------------------------------------------------
def attention_heatmap(
    pattern,
    tokens: Sequence[str] | None = None,
    *,
    title: str | None = None,
    n_prompt: int | None = None,
    max_cells: int = 256,
    query: int | None = None,
    ax=None,
    gamma: float = GAMMA,
    labels: bool = True,
) -> Figure:
    """One head's attention (S, S) as a heatmap, rows = query tokens, columns = keys.

    Longer than ``max_cells`` tokens, it is max-pooled (`bin_attention`) and the ticks name token
    ranges. A line marks where the prompt ends and generation starts; ``query`` marks one row.
    """
    a = _to_numpy(pattern)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ExplorerError(
            f"attention_heatmap needs one (S, S) pattern, got shape {a.shape}; "
            "pick a layer and head first, e.g. patterns[layer][head]."
        )
    S = a.shape[0]
    tokens = _check_tokens(tokens, S)
    b = bin_size_for(S, max_cells)
    img = bin_attention(a, b)
    if ax is None:
        # Fixed margins instead of constrained layout: measuring ~100 tick labels twice per redraw
        # was most of the redraw time for long inputs.
        # 6.2 x 5.6 in at 100 dpi: beside the row text, the explorer fits a 1440 x 1000 laptop screen. The
        # margins leave room for binned tick labels ("1000 ▁Tommy") and the axis labels outside them.
        fig = Figure(figsize=(6.2, 5.6), dpi=100)
        fig.subplots_adjust(left=0.22, right=0.9, bottom=0.22, top=0.92)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    im = ax.imshow(img, cmap=CMAP, norm=PowerNorm(gamma, vmin=0.0, vmax=1.0), interpolation="nearest", aspect="auto")
    if labels:
        _token_ticks(ax, tokens, b, img.shape[0], n_prompt)
        ax.set_xlabel("key (attended-to) token")
        ax.set_ylabel("query token")
        cbar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02, fraction=0.05)
        cbar.set_label(f"attention weight (colour ∝ weight^{gamma:g})", fontsize=8)
        cbar.set_ticks([0, 0.05, 0.2, 0.5, 1.0])
        cbar.ax.tick_params(labelsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    _mark_prompt(ax, n_prompt, b, S)
    if query is not None and 0 <= query < S:
        y = query // b
        ax.axhspan(y - 0.5, y + 0.5, fill=False, edgecolor="#d62728", linewidth=1.5)
    if title is not None:
        ax.set_title(title + _bin_note(S, b), fontsize=10)
    return fig


def heads_grid(
    layer_pattern,
    n_kv_heads: int | None = None,
    tokens: Sequence[str] | None = None,
    *,
    n_prompt: int | None = None,
    max_cells: int = 128,
    title: str | None = None,
    gamma: float = GAMMA,
) -> Figure:
    """Every head of one layer (n_heads, S, S) as thumbnails, grouped by the KV head they share.

    Heads that read the same keys and values (GQA, Llama 2 §2.2) sit in one row with one frame
    colour; with MHA (n_kv_heads = n_heads) each head is its own group.
    """
    a = _to_numpy(layer_pattern)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ExplorerError(f"heads_grid needs one layer's (n_heads, S, S) pattern, got shape {a.shape}.")
    H, S, _ = a.shape
    n_kv = H if n_kv_heads is None else n_kv_heads
    kv_groups(H, n_kv)  # validates that n_kv divides H
    n_rep = H // n_kv
    _check_tokens(tokens, S)
    # rows = KV groups when that gives a sensible grid; otherwise a square grid, still coloured by group
    if 2 <= n_rep <= 8 and n_kv <= 16:
        ncols, nrows = n_rep, n_kv
    else:
        ncols = math.ceil(math.sqrt(H))
        nrows = math.ceil(H / ncols)
    b = bin_size_for(S, max_cells)
    thumbs = bin_attention(a, b)  # (H, s, s)
    cell = 1.6 if H > 16 else 2.1
    fig = Figure(figsize=(max(4.0, cell * ncols + 0.6), cell * nrows + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm = PowerNorm(gamma, vmin=0.0, vmax=1.0)
    for h in range(nrows * ncols):
        ax = axes[h // ncols][h % ncols]
        if h >= H:
            ax.axis("off")
            continue
        g = h // n_rep
        ax.imshow(thumbs[h], cmap=CMAP, norm=norm, interpolation="nearest", aspect="auto")
        _mark_prompt(ax, n_prompt, b, S, lw=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = GROUP_COLOURS[g % len(GROUP_COLOURS)]
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)
        ax.set_title(head_label(h, H, n_kv), fontsize=9, color=colour)
    kind = "MHA" if n_kv == H else ("MQA" if n_kv == 1 else "GQA")
    sup = (title + " — " if title else "") + f"{H} query heads, {n_kv} KV heads ({kind}): frame colour = shared KV head"
    if b > 1:
        sup += f"\n{S} tokens, bins of {b}, max-pooled"
    fig.suptitle(sup, fontsize=10)
    return fig


def network_view(
    patterns,
    bin_size: int | None = None,
    tokens: Sequence[str] | None = None,
    *,
    n_prompt: int | None = None,
    max_cells: int = 256,
    title: str | None = None,
    gamma: float = GAMMA,
) -> Figure:
    """The whole network at once: max over layers and heads, neighbouring tokens binned (P2 Fig. 10).

    patterns: the recorded dict (or a (L, H, S, S) / (H, S, S) array). ``bin_size`` None picks the
    smallest bin that fits ``max_cells``. A column that stays dark all the way down is a token the
    network keeps looking at — in the paper, the system prompt after GAtt.
    """
    if isinstance(patterns, Mapping):
        layers = _normalise_patterns(patterns)
        net = np.max(np.stack([np.max(p, axis=0) for p in layers.values()]), axis=0)  # (S, S)
    else:
        a = _to_numpy(patterns)
        if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
            raise ExplorerError(f"network_view needs (..., S, S) attention, got shape {a.shape}.")
        net = a.reshape(-1, *a.shape[-2:]).max(axis=0)
    S = net.shape[0]
    b = bin_size_for(S, max_cells) if bin_size is None else bin_size
    if b < 1:
        raise ExplorerError(f"bin_size must be >= 1, got {b}.")
    if math.ceil(S / b) > 1024:
        raise ExplorerError(
            f"bin_size={b} leaves {math.ceil(S / b)} cells per side for {S} tokens; "
            f"use bin_size >= {math.ceil(S / 1024)} so the image stays small."
        )
    fig = attention_heatmap(
        net,
        tokens,
        n_prompt=n_prompt,
        max_cells=math.ceil(S / b),
        gamma=gamma,
        title=(title or "whole network: max over layers and heads"),
    )
    return fig


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """PNG bytes of a figure (the Agg canvas; no pyplot, so nothing is shown twice in a notebook)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


# --- internal helpers --------------------------------------------------------------------------
def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _check_tokens(tokens, S: int) -> list[str] | None:
    if tokens is None:
        return None
    tokens = list(tokens)
    if len(tokens) != S:
        raise ExplorerError(
            f"{len(tokens)} token strings for attention over {S} positions; "
            "pass one string per position (tokenizer.pieces(ids) of prompt + generated ids)."
        )
    return [str(t) for t in tokens]


def _token_ticks(ax, tokens, b: int, n_cells: int, n_prompt: int | None, max_labels: int = 40) -> None:
    step = max(1, math.ceil(n_cells / max_labels))
    cells = list(range(0, n_cells, step))
    if tokens is None:
        names = [f"{c * b}" if b == 1 else f"{c * b}–{min((c + 1) * b, n_cells * b) - 1}" for c in cells]
    elif b == 1:
        names = [f"{display_token(tokens[c])}" if step == 1 else f"{c} {display_token(tokens[c])}" for c in cells]
    else:
        names = [f"{c * b} {display_token(tokens[c * b], 8)}" for c in cells]  # first token of each bin
    small = 7 if len(cells) > 24 else 8
    ax.set_xticks(cells, names, rotation=90, fontsize=small)
    ax.set_yticks(cells, names, fontsize=small)
    if n_prompt is not None:
        for lab_x, lab_y, c in zip(ax.get_xticklabels(), ax.get_yticklabels(), cells):
            colour = GENERATED_COLOUR if c * b >= n_prompt else PROMPT_COLOUR
            lab_x.set_color(colour)
            lab_y.set_color(colour)


def _mark_prompt(ax, n_prompt: int | None, b: int, S: int, lw: float = 1.2) -> None:
    """Dashed lines where the prompt ends: below/right of them are generated tokens."""
    if n_prompt is None or not 0 < n_prompt < S:
        return
    edge = n_prompt / b - 0.5
    ax.axhline(edge, color=GENERATED_COLOUR, lw=lw, ls="--")
    ax.axvline(edge, color=GENERATED_COLOUR, lw=lw, ls="--")


def _normalise_patterns(patterns: Mapping) -> dict[int, np.ndarray]:
    """{layer index or "layers.{i}.attention.pattern": (n_heads, S, S) or (1, n_heads, S, S)}
    -> {i: float32 (n_heads, S, S)} sorted by layer; other recorded keys (block outputs) are ignored."""
    out: dict[int, np.ndarray] = {}
    for key, value in patterns.items():
        if isinstance(key, (int, np.integer)):
            i = int(key)
        else:
            m = _LAYER_KEY.match(str(key))
            if m is None:
                continue  # e.g. "layers.3.output" from run_with_cache
            i = int(m.group(1))
        a = _to_numpy(value)
        if a.ndim == 4:
            if a.shape[0] != 1:
                raise ExplorerError(
                    f"layer {i} attention has batch {a.shape[0]}; the explorer shows one "
                    "sequence: pass pattern[b] for the sequence b you want."
                )
            a = a[0]
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise ExplorerError(
                f"layer {i} attention must be (n_heads, S, S) or (1, n_heads, S, S), got {a.shape}. "
                "Record it with model.run_with_cache(tokens) or generate(..., record_attention=True)."
            )
        out[i] = a
    if not out:
        raise ExplorerError(
            "no attention patterns found: expected keys like 'layers.0.attention.pattern' "
            "or layer indices; record them with model.run_with_cache(tokens)."
        )
    shapes = {a.shape for a in out.values()}
    if len(shapes) != 1:
        raise ExplorerError(f"layers disagree on the attention shape: {sorted(shapes)}.")
    return dict(sorted(out.items()))


def _bin_note(S: int, b: int) -> str:
    return f"\n{S} tokens, max-pooled in bins of {b}" if b > 1 else ""


# --- the attention explorer --------------------------------------------------------------------
VIEWS = {"head": "single head", "heads": "all heads", "network": "whole network"}


class _LiveView:
    """What both explorers share: the ipywidgets box built on first use (so the figure functions
    work without ipywidgets), PNG saving, and a display that falls back to the PNG where no widget
    state is kept (nbconvert, GitHub). Subclasses provide `current_png` and `_build_widget`."""

    _widget = None

    def current_png(self) -> bytes:
        raise NotImplementedError

    def _build_widget(self) -> None:
        raise NotImplementedError

    @property
    def widget(self):
        if self._widget is None:
            self._build_widget()
        return self._widget

    def save_png(self, path) -> Path:
        """Write the current view as a PNG file (atomically) and return its path."""
        path = Path(path)
        atomic_write_bytes(path, self.current_png())
        return path

    def _repr_mimebundle_(self, **kwargs):
        # A live frontend renders the widget; nbconvert/GitHub (no widget state) fall back to the PNG.
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(self.current_png()).decode("ascii")
        bundle["text/plain"] = repr(self)
        return bundle


class AttentionExplorer(_LiveView):
    """Widgets over recorded attention: pick a layer, a head, a view and a query token.

    patterns: {layer or "layers.{i}.attention.pattern": (n_heads, S, S) or (1, n_heads, S, S)};
    tokens: S strings; n_prompt: how many of them were the prompt (the rest were generated).
    Python API: ``set(layer=, head=, view=, token=)``, ``current_png()``, ``figure``, ``save_png(path)``.
    """

    def __init__(
        self,
        patterns: Mapping,
        tokens: Sequence[str],
        n_kv_heads: int | None = None,
        *,
        n_prompt: int | None = None,
        max_cells: int = 256,
        title: str | None = None,
    ):
        self.patterns = _normalise_patterns(patterns)
        self.layers = list(self.patterns)
        self.n_heads, self.S, _ = next(iter(self.patterns.values())).shape
        self.tokens = _check_tokens(tokens, self.S)
        self.n_kv_heads = self.n_heads if n_kv_heads is None else int(n_kv_heads)
        self.groups = kv_groups(self.n_heads, self.n_kv_heads)
        if n_prompt is not None and not 0 <= n_prompt <= self.S:
            raise ExplorerError(f"n_prompt={n_prompt} must be between 0 and the {self.S} tokens.")
        self.n_prompt = n_prompt
        self.max_cells = max_cells
        self.title = title
        self.state = {
            "layer": self.layers[0],
            "head": 0,
            "view": "head",
            "token": self.S - 1 if n_prompt is None or n_prompt >= self.S else n_prompt,
        }
        self._network = None  # (S, S) max over everything, computed once on first use
        self._cache: dict = {}  # (view, layer) -> (figure, png) for the grid and network views
        self._head_fig = None  # the single-head figure, redrawn by blitting
        self._figure: Figure | None = None
        self._png: bytes | None = None
        self._widget = None
        self._redraw()

    # ---- Python API ----
    def set(
        self, layer: int | None = None, head: int | None = None, view: str | None = None, token: int | None = None
    ) -> AttentionExplorer:
        """Change the view and redraw once. layer: an index in the recording; head: 0..n_heads-1;
        view: "head", "heads" or "network"; token: the query position whose row is shown as text."""
        new = dict(self.state)
        if layer is not None:
            if layer not in self.patterns:
                raise ExplorerError(f"layer {layer} was not recorded; recorded layers: {self.layers}.")
            new["layer"] = layer
        if head is not None:
            if not 0 <= head < self.n_heads:
                raise ExplorerError(f"head must be in 0..{self.n_heads - 1}, got {head}.")
            new["head"] = head
        if view is not None:
            if view not in VIEWS:
                raise ExplorerError(f"view must be one of {list(VIEWS)}, got {view!r}.")
            new["view"] = view
        if token is not None:
            if not 0 <= token < self.S:
                raise ExplorerError(f"token must be in 0..{self.S - 1}, got {token}.")
            new["token"] = token
        changed = new != self.state
        self.state = new
        if changed:
            self._redraw()
        return self

    @property
    def figure(self) -> Figure:
        return self._figure

    def current_png(self) -> bytes:
        return self._png

    def row_html(self) -> str:
        """The selected query token's attention row as shaded text: this layer and head, or in the
        whole-network view the maximum over all layers and heads."""
        t, lay, h = self.state["token"], self.state["layer"], self.state["head"]
        if self.state["view"] == "network":
            row = self._network_max()[t, : t + 1]
        else:
            row = self.patterns[lay][h, t, : t + 1]
        # A long text shows a window that ends a little after the query, so the query is never scrolled away.
        lo, hi = max(0, t - ROW_BEFORE), min(self.S, t + ROW_AFTER + 1)
        n_prompt = None if self.n_prompt is None else self.n_prompt - lo
        note = f'<span style="color:#888">… {lo} earlier tokens … </span>' if lo else ""
        html_row = token_row_html(self.tokens[lo:hi], row[lo:], query=t - lo, n_prompt=n_prompt, offset=lo)
        return html_row.replace('">', '">' + note, 1)  # the note goes first inside the row's box

    def _row_title(self) -> str:
        s = self.state
        which = (
            "max over all layers and heads"
            if s["view"] == "network"
            else f"layer {s['layer']}, {head_label(s['head'], self.n_heads, self.n_kv_heads)}"
        )
        return (
            f"<b>attention row of query token #{s['token']}</b> ({which}; shade = weight, hover for "
            "the number, outlined = the query, orange underline = generated):"
        )

    def make_figure(self) -> Figure:
        """A fresh figure of the current view (what ``figure`` and ``save_png`` show)."""
        s = self.state
        lay, h = s["layer"], s["head"]
        if s["view"] == "head":
            return attention_heatmap(
                self.patterns[lay][h],
                self.tokens,
                n_prompt=self.n_prompt,
                max_cells=self.max_cells,
                query=s["token"],
                title=self._head_title(),
            )
        if s["view"] == "heads":
            return heads_grid(
                self.patterns[lay],
                self.n_kv_heads,
                self.tokens,
                n_prompt=self.n_prompt,
                max_cells=min(self.max_cells, 128),
                title=f"{self._prefix()}layer {lay}",
            )
        return network_view(
            self._network_max(),
            tokens=self.tokens,
            n_prompt=self.n_prompt,
            max_cells=self.max_cells,
            title=f"{self._prefix()}whole network: max over {len(self.layers)} layers × {self.n_heads} heads",
        )

    def _prefix(self) -> str:
        return (self.title + ": ") if self.title else ""

    def _head_title(self) -> str:
        s = self.state
        return f"{self._prefix()}layer {s['layer']}, {head_label(s['head'], self.n_heads, self.n_kv_heads)}"

    def _network_max(self) -> np.ndarray:
        if self._network is None:  # (S, S): max over layers and heads, computed once
            self._network = np.max(np.stack([p.max(axis=0) for p in self.patterns.values()]), axis=0)
        return self._network

    def _redraw(self) -> None:
        s = self.state
        if s["view"] == "head":
            self._png = self._blit_head()
        else:
            # The grid and network views only change with the layer: cache their PNGs.
            key = (s["view"], s["layer"] if s["view"] == "heads" else None)
            if key not in self._cache:
                fig = self.make_figure()
                self._cache[key] = (fig, figure_png(fig))
            self._figure, self._png = self._cache[key]
        if self._widget is not None:
            self._sync_widgets()

    def _blit_head(self) -> bytes:
        """Redraw the single-head heatmap by blitting: the axes, tick labels and colourbar (most of
        the drawing time for long inputs) are drawn once; each change redraws only the image,
        the title and the query marker, then encodes the pixels as PNG."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.patches import Rectangle
        from PIL import Image

        s = self.state
        b = bin_size_for(self.S, self.max_cells)
        img = bin_attention(self.patterns[s["layer"]][s["head"]], b)
        if self._head_fig is None:
            fig = attention_heatmap(
                self.patterns[s["layer"]][s["head"]],
                self.tokens,
                n_prompt=self.n_prompt,
                max_cells=self.max_cells,
                title=self._head_title(),
            )
            ax = fig.axes[0]
            im = ax.images[0]
            marker = Rectangle((-0.5, -0.5), img.shape[1], 1, fill=False, edgecolor="#d62728", linewidth=1.0)
            ax.add_patch(marker)
            for artist in (im, marker, ax.title):
                artist.set_animated(True)
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            self._head_fig = (fig, canvas, ax, im, marker, canvas.copy_from_bbox(fig.bbox))
        fig, canvas, ax, im, marker, background = self._head_fig
        canvas.restore_region(background)
        im.set_data(img)
        marker.set_y(s["token"] // b - 0.5)
        ax.title.set_text(self._head_title() + _bin_note(self.S, b))
        ax.draw_artist(im)
        for line in ax.lines:  # the prompt/generated separators sit on top of the image
            ax.draw_artist(line)
        ax.draw_artist(marker)
        ax.draw_artist(ax.title)
        self._figure = fig
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="png", compress_level=3)
        return buf.getvalue()

    # ---- widgets ----
    def _build_widget(self) -> None:
        import ipywidgets as W

        H = self.n_heads
        self._w_view = W.ToggleButtons(
            options=[(v, k) for k, v in VIEWS.items()], value=self.state["view"], description="view"
        )
        self._w_layer = W.Dropdown(
            options=[(f"layer {i}", i) for i in self.layers],
            value=self.state["layer"],
            description="layer",
            layout=W.Layout(width="180px"),
        )
        self._w_head = W.Dropdown(
            options=[(head_label(h, H, self.n_kv_heads), h) for h in range(H)],
            value=self.state["head"],
            description="head",
            layout=W.Layout(width="200px"),
        )
        self._w_token = W.IntSlider(
            value=self.state["token"],
            min=0,
            max=self.S - 1,
            description="query token",
            continuous_update=False,
            layout=W.Layout(width="480px"),
            style={"description_width": "initial"},
        )
        self._w_token_label = W.HTML()
        self._w_image = W.Image(format="png", value=self._png, layout=W.Layout(max_width="620px", flex="0 0 auto"))
        self._w_row = W.HTML(layout=W.Layout(width="100%"))
        self._w_row_title = W.HTML(layout=W.Layout(width="100%"))
        self._w_legend = W.HTML(self._legend_html())
        self._w_path = W.Text(value="build/attention.png", description="file", layout=W.Layout(width="320px"))
        self._w_save = W.Button(description="Save PNG", icon="download")
        self._w_status = W.HTML()
        for w, cls in [
            (self._w_view, "view"),
            (self._w_layer, "layer"),
            (self._w_head, "head"),
            (self._w_token, "token"),
            (self._w_image, "image"),
            (self._w_row, "row"),
            (self._w_legend, "legend"),
            (self._w_save, "save"),
            (self._w_path, "path"),
            (self._w_status, "status"),
        ]:
            w.add_class(f"l2l-explorer-{cls}")
        self._updating = False
        self._w_view.observe(lambda c: self._from_widget(view=c["new"]), names="value")
        self._w_layer.observe(lambda c: self._from_widget(layer=c["new"]), names="value")
        self._w_head.observe(lambda c: self._from_widget(head=c["new"]), names="value")
        self._w_token.observe(lambda c: self._from_widget(token=c["new"]), names="value")
        self._w_save.on_click(self._on_save)
        self._widget = W.VBox(
            [
                W.HBox([self._w_view]),
                W.HBox([self._w_layer, self._w_head, self._w_legend]),
                W.HBox([self._w_token, self._w_token_label]),
                # the image and the query's row side by side: the whole explorer fits a 1440 x 1000 screen
                W.HBox(
                    [
                        self._w_image,
                        W.VBox(
                            [self._w_row_title, self._w_row],
                            layout=W.Layout(flex="1 1 0", min_width="300px", padding="0 0 0 8px"),
                        ),
                    ],
                    layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
                W.HBox([self._w_path, self._w_save, self._w_status]),
            ],
            layout=W.Layout(padding="4px 8px"),
        )
        self._widget.add_class("l2l-explorer")
        self._sync_widgets()

    def _legend_html(self) -> str:
        parts = []
        for g, heads in enumerate(self.groups):
            c = GROUP_COLOURS[g % len(GROUP_COLOURS)]
            hs = " ".join(f"h{h}" for h in heads)
            parts.append(
                f'<span style="border:2px solid {c};border-radius:4px;padding:0 4px;margin-right:4px;'
                f'white-space:nowrap"><b style="color:{c}">kv {g}</b> ← {hs}</span>'
            )
        kind = "MHA" if self.n_kv_heads == self.n_heads else ("MQA" if self.n_kv_heads == 1 else "GQA")
        return (
            f'<div style="font-size:12px;line-height:1.9;max-width:520px">{kind}: query heads sharing a '
            f"key/value head<br>{''.join(parts)}</div>"
        )

    def _from_widget(self, **kw) -> None:
        if self._updating:
            return
        self.set(**kw)

    def _sync_widgets(self) -> None:
        s = self.state
        self._updating = True
        try:
            self._w_view.value = s["view"]
            self._w_layer.value = s["layer"]
            self._w_head.value = s["head"]
            self._w_token.value = s["token"]
            self._w_head.disabled = s["view"] != "head"
            self._w_layer.disabled = s["view"] == "network"
            self._w_image.value = self._png
            t = s["token"]
            kind = "prompt" if self.n_prompt is None or t < self.n_prompt else "generated"
            self._w_token_label.value = f"<code>#{t} {html.escape(repr(self.tokens[t]))}</code> ({kind})"
            self._w_row.value = self.row_html()
            self._w_row_title.value = self._row_title()
        finally:
            self._updating = False

    def _on_save(self, _button) -> None:
        try:
            path = self.save_png(self._w_path.value)
            self._w_status.value = f"saved <code>{html.escape(str(path))}</code>"
        except OSError as err:
            self._w_status.value = f'<span style="color:#b00">could not save: {html.escape(str(err))}</span>'

    def __repr__(self) -> str:
        s = self.state
        return (
            f"AttentionExplorer({len(self.layers)} layers, {self.n_heads} heads / {self.n_kv_heads} KV heads, "
            f"{self.S} tokens; view={s['view']}, layer={s['layer']}, head={s['head']}, token={s['token']})"
        )


# --- the sampling playground -------------------------------------------------------------------
STAGES = [
    ("raw", "softmax(logits)"),
    ("temperature", "÷ temperature"),
    ("top_k", "top-k filter"),
    ("top_p", "top-p filter → sampled"),
]


def distributions_chart(
    dists: Mapping[str, torch.Tensor],
    labels: Sequence[str],
    *,
    top_n: int = 15,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    title: str | None = None,
) -> Figure:
    """The next-token distribution after each sampling step, as four bar charts side by side.

    dists: ``generate.filtered_distributions(logits (V,), ...)`` (each (V,) summing to 1); labels: V
    token strings. Shows the ``top_n`` most likely tokens under the raw softmax (the filters keep
    the order, so the same rows stay comparable); a token a filter removed shows as ✕.
    """
    raw = _to_numpy(dists["raw"]).ravel()
    if len(labels) != len(raw):
        raise ExplorerError(f"{len(labels)} token labels for a vocabulary of {len(raw)}.")
    order = np.argsort(-raw, kind="stable")[:top_n]
    height = 0.26 * len(order) + 1.6
    fig = Figure(figsize=(10.5, height), dpi=100)
    fig.subplots_adjust(left=0.11, right=0.99, bottom=0.45 / height, top=1 - 1.0 / height, wspace=0.08)
    axes = fig.subplots(1, len(STAGES), sharey=True)
    y = np.arange(len(order))
    # one x scale for all panels, so a bar's length means the same probability everywhere
    xmax = min(1.0, max(float(_to_numpy(dists[k]).ravel()[order].max()) for k, _ in STAGES)) * 1.22
    names = {
        "temperature": ("T = 0: greedy" if temperature == 0 else f"÷ T = {temperature:g}")
        if temperature is not None
        else "÷ temperature",
        "top_k": "top-k off" if not top_k else f"top-k = {top_k}",
        "top_p": "top-p off" if top_p is None or top_p >= 1 else f"top-p = {top_p:g}",
    }
    for ax, (key, name) in zip(axes, STAGES):
        p = _to_numpy(dists[key]).ravel()
        kept = int((p > 0).sum())
        shown = p[order]
        colour = "#c2410c" if key == "top_p" else "#1f77b4"
        ax.barh(y, shown, color=colour, height=0.75)
        for yi, v in zip(y, shown):
            if v == 0:
                ax.text(0.01 * xmax, yi, "✕", va="center", ha="left", color="#999", fontsize=8)
            elif key == "top_p":  # numbers on the distribution actually sampled from
                ax.text(v, yi, f" {100 * v:.1f}%" if v >= 0.001 else " <0.1%", va="center", ha="left", fontsize=7)
        ax.set_xlim(0, xmax)
        ax.tick_params(labelsize=7)
        rest = 1.0 - float(shown.sum())
        ax.set_title(f"{names.get(key, name)}\n{kept:,} kept, {rest:.2f} off chart", fontsize=9)
    axes[0].set_yticks(y, [display_token(labels[i], 14) for i in order], fontsize=8)
    axes[0].invert_yaxis()  # shared y: the most likely token on top in every panel
    fig.suptitle(title or "next-token distribution at each step of the sampler", fontsize=10, y=1 - 0.12 / height)
    return fig


def _sampler_settings(temperature, top_k, top_p) -> tuple[float, int | None, float | None]:
    """Slider values -> sampler settings: top_k 0/None = off, top_p 1/None = off; nonsense raises."""
    from ..inference import check_sampling

    k = None if top_k in (None, 0) else (int(top_k) if float(top_k).is_integer() else top_k)
    p = None if top_p is None or top_p == 1 else top_p
    check_sampling(temperature, k, p)
    return float(temperature), k, (None if p is None else float(p))


class SamplingPlayground(_LiveView):
    """Prompt, temperature / top-k / top-p sliders, the next-token distribution after each step,
    and a button that samples one token and appends it (seeded, so a session replays exactly).

    The model runs once per text: its last-position logits are cached, so moving a slider only
    re-filters them. Python API: ``set(temperature=, top_k=, top_p=, prompt=)``, ``sample(n)``,
    ``text``, ``distributions``, ``current_png()``, ``reset()``; ``model_calls`` counts forwards.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = "Once upon a time",
        *,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = 0.9,
        seed: int = 0,
        top_n: int = 15,
    ):
        self.model, self.tokenizer, self.seed, self.top_n = model, tokenizer, seed, top_n
        self.temperature, self.top_k, self.top_p = _sampler_settings(temperature, top_k, top_p)
        self.model_calls = 0
        self._logits: dict[tuple, torch.Tensor] = {}
        self._labels = [tokenizer.id_to_piece(i) for i in range(len(tokenizer))]
        if len(self._labels) != model.args.vocab_size:
            raise ExplorerError(
                f"tokenizer has {len(self._labels)} pieces but the model's vocab_size is "
                f"{model.args.vocab_size}: load the tokenizer that belongs to this model."
            )
        self._widget = None
        self.reset(prompt)

    # ---- Python API ----
    def reset(self, prompt: str | None = None) -> SamplingPlayground:
        """Start again from ``prompt`` (default: the current one), with the generator re-seeded."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ExplorerError(f"prompt must be a str, got {type(prompt).__name__}.")
            self.prompt = prompt
        self.ids = self.tokenizer.encode(self.prompt, bos=True)
        self.n_prompt = len(self.ids)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._redraw()
        return self

    def set(
        self,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        prompt: str | None = None,
    ) -> SamplingPlayground:
        """Change sampler settings (top_k 0 or None = off, top_p 1 or None = off) and/or the prompt."""
        self.temperature, self.top_k, self.top_p = _sampler_settings(
            self.temperature if temperature is None else temperature,
            (self.top_k or 0) if top_k is None else top_k,
            (1.0 if self.top_p is None else self.top_p) if top_p is None else top_p,
        )
        if prompt is not None and prompt != self.prompt:
            self.reset(prompt)  # redraws
        else:
            self._redraw()
        return self

    @property
    def text(self) -> str:
        """The prompt and everything sampled so far, as text."""
        return self.tokenizer.decode(self.ids)

    @property
    def distributions(self) -> dict[str, torch.Tensor]:
        """``generate.filtered_distributions`` of the next token under the current settings: name -> (V,)."""
        from ..inference import filtered_distributions

        return filtered_distributions(self.logits(), self.temperature, self.top_k, self.top_p)

    def logits(self) -> torch.Tensor:
        """Next-token logits (V,) float32 on the CPU for the current ids, computed once per text."""
        key = tuple(self.ids)
        if key not in self._logits:
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                out = self.model(torch.tensor([self.ids], device=device))  # (1, T, V)
            self.model_calls += 1
            if len(self._logits) >= 8:
                self._logits.pop(next(iter(self._logits)))
            self._logits[key] = out[0, -1].float().cpu()
        return self._logits[key]

    def sample(self, n: int = 1) -> str:
        """Draw n tokens from the filtered distribution, append them, return their text."""
        if len(self.ids) + n > self.model.args.max_seq_len:
            raise ExplorerError(
                f"{len(self.ids)} tokens already; {n} more would pass the model's "
                f"max_seq_len={self.model.args.max_seq_len}. Call reset() to start again."
            )
        before = len(self.ids)
        for _ in range(n):
            probs = self.distributions["top_p"]  # (V,)
            self.ids.append(int(torch.multinomial(probs, 1, generator=self._generator)))
        self._redraw()
        return self.tokenizer.decode(self.ids)[len(self.tokenizer.decode(self.ids[:before])) :]

    def current_png(self) -> bytes:
        self._render()
        return self._png

    @property
    def figure(self) -> Figure:
        self._render()
        return self._figure

    def _redraw(self) -> None:
        # Drawn lazily: a script that samples 50 tokens draws one chart, not 50. A live widget
        # needs the picture at once.
        self._png = None
        if self._widget is not None:
            self._sync_widgets()

    def _render(self) -> None:
        if self._png is not None:
            return
        self._figure = distributions_chart(
            self.distributions,
            self._labels,
            top_n=self.top_n,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            title=f"next token after {len(self.ids)} tokens ({len(self.ids) - self.n_prompt} sampled)",
        )
        self._png = figure_png(self._figure)

    # ---- widgets ----
    def _build_widget(self) -> None:
        import ipywidgets as W

        style = {"description_width": "90px"}
        self._w_prompt = W.Text(
            value=self.prompt,
            description="prompt",
            continuous_update=False,
            layout=W.Layout(width="520px"),
            style=style,
        )
        self._w_temp = W.FloatSlider(
            value=self.temperature,
            min=0.0,
            max=2.0,
            step=0.05,
            description="temperature",
            continuous_update=False,
            style=style,
            readout_format=".2f",
        )
        self._w_topk = W.IntSlider(
            value=self.top_k or 0,
            min=0,
            max=min(200, len(self._labels)),
            description="top-k (0 off)",
            continuous_update=False,
            style=style,
        )
        self._w_topp = W.FloatSlider(
            value=1.0 if self.top_p is None else self.top_p,
            min=0.05,
            max=1.0,
            step=0.05,
            description="top-p (1 off)",
            continuous_update=False,
            style=style,
            readout_format=".2f",
        )
        self._w_sample = W.Button(description="Sample next token", button_style="primary")
        self._w_sample10 = W.Button(description="Sample 10")
        self._w_reset = W.Button(description="Reset")
        self._w_chart = W.Image(format="png", layout=W.Layout(max_width="1050px"))
        self._w_text = W.HTML()
        self._w_status = W.HTML()
        for w, cls in [
            (self._w_prompt, "prompt"),
            (self._w_temp, "temperature"),
            (self._w_topk, "topk"),
            (self._w_topp, "topp"),
            (self._w_sample, "sample"),
            (self._w_sample10, "sample10"),
            (self._w_reset, "reset"),
            (self._w_chart, "chart"),
            (self._w_text, "text"),
            (self._w_status, "status"),
        ]:
            w.add_class(f"l2l-sampling-{cls}")
        self._updating = False
        for w in (self._w_temp, self._w_topk, self._w_topp):
            w.observe(self._on_slider, names="value")
        self._w_prompt.observe(lambda c: self._guard(self.set, prompt=c["new"]), names="value")
        self._w_sample.on_click(lambda _b: self._guard(self.sample, 1))
        self._w_sample10.on_click(lambda _b: self._guard(self.sample, 10))
        self._w_reset.on_click(lambda _b: self._guard(self.reset))
        self._widget = W.VBox(
            [
                self._w_prompt,
                W.HBox([self._w_temp, self._w_topk, self._w_topp]),
                W.HBox([self._w_sample, self._w_sample10, self._w_reset, self._w_status]),
                self._w_text,
                self._w_chart,
            ],
            layout=W.Layout(padding="4px 8px"),
        )
        self._widget.add_class("l2l-sampling")
        self._sync_widgets()

    def _on_slider(self, _change) -> None:
        if self._updating:
            return
        self._guard(self.set, temperature=self._w_temp.value, top_k=self._w_topk.value, top_p=self._w_topp.value)

    def _guard(self, fn, *args, **kwargs) -> None:
        if self._updating:
            return
        try:
            fn(*args, **kwargs)
            self._w_status.value = ""
        except ValueError as err:
            self._w_status.value = f'<span style="color:#b00">{html.escape(str(err))}</span>'

    def _sync_widgets(self) -> None:
        self._updating = True
        try:
            self._w_prompt.value = self.prompt
            self._w_temp.value = self.temperature
            self._w_topk.value = self.top_k or 0
            self._w_topp.value = 1.0 if self.top_p is None else self.top_p
            self._w_chart.value = self.current_png()
            prompt_text = self.tokenizer.decode(self.ids[: self.n_prompt])
            new_text = self.text[len(prompt_text) :]
            self._w_text.value = (
                f'<div style="font-family:monospace;white-space:pre-wrap;max-width:1000px;'
                f'padding:4px;border:1px solid #ddd">{html.escape(prompt_text)}'
                f'<span style="color:{GENERATED_COLOUR};font-weight:bold">'
                f"{html.escape(new_text)}</span></div>"
            )
            full = len(self.ids) >= self.model.args.max_seq_len
            self._w_sample.disabled = self._w_sample10.disabled = full
        finally:
            self._updating = False

    def __repr__(self) -> str:
        return (
            f"SamplingPlayground({len(self.ids)} tokens, temperature={self.temperature}, top_k={self.top_k}, "
            f"top_p={self.top_p})"
        )
