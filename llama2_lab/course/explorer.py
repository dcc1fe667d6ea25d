"""The attention explorer (notebook 08): every head of every layer of recorded attention, grouped by the KV
head it shares, with a query row to follow one token; a thin widget over ``attention_views``."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..utils.validate import check_int
from .attention_patterns import (
    ExplorerError,
    _check_tokens,
    _normalise_patterns,
    bin_attention,
    bin_size_for,
    head_label,
    kv_groups,
)
from .attention_views import (
    GROUP_COLOURS,
    VIEWS,
    _bin_note,
    _LiveView,
    attention_heatmap,
    heads_grid,
    network_view,
    token_row_html,
)
from .viz import figure_png

ROW_BEFORE, ROW_AFTER = 160, 24  # tokens of context shown around the query in the explorer's row text


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
        self.n_kv_heads = (
            self.n_heads if n_kv_heads is None else check_int("n_kv_heads", n_kv_heads, 1, error=ExplorerError)
        )
        if self.n_heads % self.n_kv_heads:
            raise ExplorerError(f"n_kv_heads={self.n_kv_heads} must divide the {self.n_heads} heads of the pattern.")
        self.groups = kv_groups(self.n_heads, self.n_kv_heads)
        n_prompt = check_int("n_prompt", n_prompt, 0, error=ExplorerError, allow_none=True)
        if n_prompt is not None and not 0 <= n_prompt <= self.S:
            raise ExplorerError(f"n_prompt={n_prompt} must be between 0 and the {self.S} tokens.")
        self.n_prompt = n_prompt
        self.max_cells = check_int("max_cells", max_cells, 1, error=ExplorerError)
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


# Notebook 08 imports the explorer, its figure functions and the playground from here.
from .playground import STAGES, SamplingPlayground, distributions_chart  # noqa: E402, F401
