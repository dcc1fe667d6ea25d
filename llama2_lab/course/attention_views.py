"""Attention as pictures, from recorded patterns (never the model): one head's heatmap, all heads of a layer
grouped by KV head, the whole network binned, the token row, and the ``_LiveView`` base both notebook-08
widgets share (built on first use, PNG saving, a PNG fallback where widget state is not kept). Reading the
patterns themselves (checks, binning, KV groups, token labels) lives in ``attention_patterns``."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from ..utils.io import atomic_write_bytes
from .attention_patterns import (
    ExplorerError,
    _check_tokens,
    _normalise_patterns,
    _readable,
    _to_numpy,
    bin_attention,
    bin_size_for,
    display_token,
    head_label,
    kv_groups,
)

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


def _bin_note(S: int, b: int) -> str:
    return f"\n{S} tokens, max-pooled in bins of {b}" if b > 1 else ""


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
