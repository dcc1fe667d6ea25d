"""The course's figure machinery, shared by the static figures (``viz``), the widgets and the explorers: the
colours and style, ``new_figure`` (a ``matplotlib.figure.Figure`` and its axes with fixed margins, never pyplot,
so figures work headless and are not kept alive by pyplot), ``figure_png``, the one PNG helper, and, in
IPython, a PNG formatter for ``Figure`` registered on import (unless one exists), so a notebook displays a
figure by ending a cell with it."""

from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure

BLUE, ORANGE, GREEN, RED, GREY, PURPLE = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f", "#9467bd"
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def new_figure(ncols: int = 1, width: float = 4.2, height: float = 3.4, nrows: int = 1, **margins):
    """A Figure and its axes (a flat list), in the course's style.

    Margins are fixed (``subplots_adjust``) rather than constrained layout: a widget redraws in about
    half the time, and the panels do not jump when a title changes length.
    """
    adjust = (
        dict(
            left=0.7 / (width * ncols),
            right=1 - 0.25 / (width * ncols),
            bottom=0.55 / height,
            top=1 - 0.55 / height,
            wspace=0.32,
        )
        | margins
    )
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width * ncols, height * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
        fig.subplots_adjust(**adjust)
    for ax in axes:
        ax.tick_params(labelsize=_STYLE["xtick.labelsize"])
        ax.spines[["top", "right"]].set_visible(False)
        ax.title.set_fontsize(_STYLE["axes.titlesize"])
        ax.xaxis.label.set_fontsize(_STYLE["axes.labelsize"])
        ax.yaxis.label.set_fontsize(_STYLE["axes.labelsize"])
    return fig, axes


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """PNG bytes of a figure, through the Agg canvas (no pyplot, so nothing is shown twice in a notebook).

    The one PNG helper of the course: widgets show these bytes, and a static renderer falls back to them.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


def _register_png_formatter() -> None:
    """In IPython/Jupyter, display a returned Figure as a PNG (whatever the matplotlib backend)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    png = ip.display_formatter.formatters.get("image/png")
    if png is not None and not _has_png_formatter(png):
        png.for_type(Figure, lambda fig: figure_png(fig, dpi=90))


def _has_png_formatter(png) -> bool:
    try:
        png.lookup_by_type(Figure)
        return True
    except KeyError:
        return False


_register_png_formatter()
