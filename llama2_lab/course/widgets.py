"""Interactive explorers (ipywidgets) built on the static figures of ``viz.py``.

Each explorer is a small class: controls, a PNG of the current ``viz`` figure, and a Python API, so
tests and headless notebook runs can drive it without a frontend::

    ex = NormExplorer()        # displays as a widget in Jupyter
    ex.set(shift=2.0)          # same as moving the slider; redraws once
    ex.figure, ex.data         # the current matplotlib Figure and the numbers it plots

Displayed in a notebook, an explorer offers both the live widget and a static ``image/png`` of its
current figure: JupyterLab shows the widget, renderers without a widget manager show the picture,
so no rendering is blank. Every update redraws one figure (a few tenths of a second).

    NormExplorer        shift / scale a vector: RMSNorm vs LayerNorm invariances      (02)
    RopeExplorer        positions m, n and a pair: rotation, score vs m − n, spectrum  (03)
    ActivationExplorer  ReLU / GELU / SiLU / SwiGLU gate and their gradients           (04)
    GQAExplorer         n_kv_heads -> KV-cache memory (7B/70B) and measured decode speed (05)
    ConfigExplorer      preset -> parameter breakdown                                  (00)
"""

from __future__ import annotations

import base64
import os
import statistics
import time

import ipywidgets as W
import torch

from ..core.config import PRESETS, ModelArgs
from ..utils.validate import check_float, check_int
from . import viz
from .explorer import ExplorerError


class Explorer:
    """Base class: ``controls`` (name -> widget), ``set(**values)``, ``figure``, ``png``, ``widget``."""

    def __init__(self):
        self.controls: dict[str, W.ValueWidget] = self._controls()
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.status = W.HTML()
        self.widget = W.VBox(
            [W.HBox(list(self.controls.values()), layout=W.Layout(flex_flow="row wrap")), self.image, self.status]
        )
        # Stable selectors for the browser tests: l2l-component, -image, and l2l-control-<name>.
        self.widget.add_class("l2l-component")
        self.image.add_class("l2l-component-image")
        for name, control in self.controls.items():
            control.add_class(f"l2l-control-{name}")
        self._holding = False
        self.figure = None
        self.png = b""
        self.data: dict = {}
        self.last_update_s = 0.0
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    # --- to be provided by subclasses ---------------------------------------------------------------
    def _controls(self) -> dict:
        raise NotImplementedError

    def _draw(self, **values):
        """Return the Figure for these control values (and fill ``self.data``)."""
        raise NotImplementedError

    # --- the API --------------------------------------------------------------------------------
    @property
    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def set(self, **values) -> Explorer:
        """Set several controls at once, as a user would, and redraw once."""
        for name, value in values.items():
            if name not in self.controls:
                raise ValueError(
                    f"{type(self).__name__} has no control {name!r}; its controls are {list(self.controls)}."
                )
            self._validate(name, self.controls[name], value)
        self._holding = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        self.redraw()
        return self

    @staticmethod
    def _validate(name, control, value) -> None:
        options = getattr(control, "options", None)
        if options is not None:
            labels = [o[1] if isinstance(o, tuple) else o for o in options]
            if value not in labels:
                raise ValueError(f"{name}={value!r} is not an option; choose one of {labels}.")
        elif hasattr(control, "min") and hasattr(control, "max") and not control.min <= value <= control.max:
            raise ValueError(f"{name}={value!r} is outside [{control.min}, {control.max}].")

    def redraw(self) -> None:
        start = time.perf_counter()
        self.figure = self._draw(**self.values)
        self.png = viz.figure_png(self.figure, dpi=90)
        self.image.value = self.png
        self.last_update_s = time.perf_counter() - start

    def _on_change(self, change) -> None:
        if not self._holding:
            self.redraw()

    # --- display: the live widget plus a static picture -------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(self.widget._repr_mimebundle_() or {})
        data["image/png"] = base64.b64encode(self.png).decode("ascii")
        data["text/plain"] = f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values.items())})"
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values.items())})"


_STYLE = {"description_width": "initial"}


class NormExplorer(Explorer):
    """x -> scale·x + shift: RMSNorm ignores the scale but not the shift; LayerNorm ignores both."""

    def _controls(self):
        return {
            "shift": W.FloatSlider(value=1.0, min=-3.0, max=3.0, step=0.1, description="shift", style=_STYLE),
            "scale": W.FloatSlider(value=2.0, min=0.2, max=4.0, step=0.1, description="scale", style=_STYLE),
        }

    def _draw(self, shift, scale):
        self.data = viz.norm_invariance_data(shift, scale)
        rms_change = float(abs(self.data["rms_new"] - self.data["rms"]).max())
        ln_change = float(abs(self.data["ln_new"] - self.data["ln"]).max())
        self.status.value = (
            f"RMSNorm output moved by up to <b>{rms_change:.3g}</b>, LayerNorm output by up to <b>{ln_change:.3g}</b>."
        )
        return viz.norm_invariance(shift, scale)


class RopeExplorer(Explorer):
    """Positions m (query) and n (key) and one pair: watch the rotation and the score depend on m − n."""

    def __init__(self, head_dim: int = 64, theta: float = 10000.0, positions: int = 24):
        # Refused here, with the argument named, rather than as a traitlets or shape error later.
        head_dim = check_int("head_dim", head_dim, 2, error=ExplorerError)
        if head_dim % 2:
            raise ExplorerError(f"head_dim must be even (RoPE rotates pairs of dimensions), got {head_dim}.")
        self.head_dim = head_dim
        self.theta = check_float("theta", theta, above=0, error=ExplorerError)
        self.positions = check_int("positions", positions, 1, error=ExplorerError)
        super().__init__()

    def _controls(self):
        P = self.positions - 1
        return {
            "m": W.IntSlider(value=min(5, P), min=0, max=P, description="query position m", style=_STYLE),
            "n": W.IntSlider(value=min(2, P), min=0, max=P, description="key position n", style=_STYLE),
            "pair": W.IntSlider(value=0, min=0, max=self.head_dim // 2 - 1, description="pair i", style=_STYLE),
        }

    def _draw(self, m, n, pair):
        self.data = viz.rope_scores_data(self.head_dim, self.positions, self.theta)
        score = float(self.data["score"][m, n])
        self.status.value = f"q<sub>{m}</sub>·k<sub>{n}</sub> / √d = <b>{score:.4f}</b> at distance m − n = {m - n}"
        self.data["current_score"] = score
        return viz.rope_explorer(m, n, pair, self.head_dim, self.theta, self.positions)


class ActivationExplorer(Explorer):
    """Pick an activation; see its shape, its gradient, and SwiGLU's gate scaled by the value path."""

    def _controls(self):
        return {
            "name": W.Dropdown(options=list(viz.ACTIVATIONS), value="SiLU", description="activation"),
            "show_grad": W.Checkbox(value=True, description="show gradient"),
            "value": W.FloatSlider(
                value=1.0, min=-2.0, max=2.0, step=0.1, description="SwiGLU value w3·x", style=_STYLE
            ),
        }

    def _draw(self, name, show_grad, value):
        import numpy as np

        x = np.linspace(-5, 5, 401)
        f, g = viz.activation_data(name, x, value)
        self.data = {"x": x, "f": f, "grad": g}
        i = int(np.argmin(f))
        self.status.value = f"{name}: minimum {f[i]:.3f} at x = {x[i]:.2f}; gradient at 0 = {g[200]:.3f}"
        return viz.activation_curves(name, show_grad, value)


# --- GQA: memory from calc.py, speed measured on this machine ---------------------------------------
_SPEED_CACHE: dict[tuple, dict] = {}


def _quartiles(runs: list[float]) -> dict:
    runs = sorted(runs)
    q = statistics.quantiles(runs, n=4, method="inclusive") if len(runs) > 1 else [runs[0]] * 3
    return {"median": q[1], "lo": q[0], "hi": q[2], "runs": runs}


def measure_decode_all(
    options, context: int | None = None, batch: int | None = None, steps: int | None = None, seed: int = 0
) -> dict[int, dict]:
    """Tokens/s of cached decoding for each ``n_kv_heads`` in ``options``, measured interleaved.

    A tiny model (dim 256, 8 query heads, 2 layers) per option decodes single tokens at position
    ``context`` with a cache of that many positions in place (zeros: values do not change the cost), for
    ``batch`` sequences. The options take turns, one step each, ``steps`` rounds after a warm-up round, so
    a burst of other work on the machine hits every option alike. At this size the KV cache, not the
    weights, dominates the bytes read per token, as for a large model at long context. Returns
    {n_kv_heads: {"median", "lo", "hi", "runs"}} in tokens/s (lo, hi: the quartiles; runs: every step),
    cached per setting; ``LLAMA2_LAB_FAST=1`` shortens the run.
    """
    from ..core.transformer import Transformer

    fast = os.environ.get("LLAMA2_LAB_FAST") == "1"
    context = context or (1024 if fast else 4096)
    batch = batch or (4 if fast else 8)
    steps = steps or (7 if fast else 15)
    todo = [k for k in options if (k, context, batch, steps) not in _SPEED_CACHE]
    if todo:
        runs: dict[int, list[float]] = {k: [] for k in todo}
        setups = {}
        for k in todo:
            args = ModelArgs(
                dim=256,
                n_layers=2,
                n_heads=8,
                n_kv_heads=k,
                vocab_size=256,
                multiple_of=32,
                max_seq_len=context + steps + 1,
            )
            with torch.random.fork_rng(devices=[]):
                model = Transformer(args).init_weights(seed=seed).eval()
            setups[k] = (model, model.new_cache(batch, context + steps + 1))
        tok = torch.zeros(batch, 1, dtype=torch.long)
        with torch.no_grad():
            for model, cache in setups.values():
                model(tok, context, cache)  # warm-up
            for i in range(steps):
                for k, (model, cache) in setups.items():
                    start = time.perf_counter()
                    model(tok, context + 1 + i, cache)
                    runs[k].append(batch / (time.perf_counter() - start))
        del setups
        for k in todo:
            _SPEED_CACHE[(k, context, batch, steps)] = _quartiles(runs[k])
    return {k: _SPEED_CACHE[(k, context, batch, steps)] for k in options}


def measure_decode_stats(
    n_kv_heads: int, context: int | None = None, batch: int | None = None, steps: int | None = None, seed: int = 0
) -> dict:
    """``measure_decode_all`` for one setting: {"median", "lo", "hi", "runs"} in tokens/s."""
    return measure_decode_all([n_kv_heads], context, batch, steps, seed)[n_kv_heads]


def measure_decode_speed(
    n_kv_heads: int, context: int | None = None, batch: int | None = None, steps: int | None = None, seed: int = 0
) -> float:
    """The median tokens/s of ``measure_decode_stats`` (same arguments; cached per setting)."""
    return measure_decode_stats(n_kv_heads, context, batch, steps, seed)["median"]


class GQAExplorer(Explorer):
    """n_kv_heads -> KV-cache GiB for the 7B/70B shapes, and the decode speed of a tiny model.

    The speeds of every option are measured once, when the explorer is made (median and range of
    several single-token steps each); moving the slider only redraws, it never re-measures, so what
    the bars compare was measured under the same conditions.
    """

    OPTIONS = (1, 2, 4, 8)

    def __init__(self, measure: bool = True, value: int = 8):
        self.measure = measure
        self._initial = value
        self.stats: dict[int, dict | None] = {k: None for k in self.OPTIONS}
        self.measured: dict[int, float | None] = {k: None for k in self.OPTIONS}
        if measure:
            self._measure()
        super().__init__()

    def _measure(self) -> None:
        self.stats.update(measure_decode_all(self.OPTIONS))
        self.measured.update({k: s["median"] for k, s in self.stats.items()})

    def _controls(self):
        return {
            "n_kv_heads": W.SelectionSlider(
                options=list(self.OPTIONS), value=self._initial, description="n_kv_heads", style=_STYLE
            )
        }

    def measure_all(self) -> dict:
        """Measure every option again now (a second or two) and redraw."""
        _SPEED_CACHE.clear()
        self._measure()
        self.redraw()
        return dict(self.measured)

    @property
    def noise(self) -> float | None:
        """The largest interquartile range / median over the options: how far apart repeated steps landed."""
        spreads = [(s["hi"] - s["lo"]) / s["median"] for s in self.stats.values() if s]
        return max(spreads) if spreads else None

    def _draw(self, n_kv_heads):
        from . import view as course_view

        self.data = viz.kv_cache_data(n_kv_heads)
        self.data["measured"] = dict(self.measured)
        gib = {p: self.data[p]["chosen"][-1] for p in viz.KV_PRESETS}
        status = (
            "At 4,096 tokens: "
            + ", ".join(f"{p} <b>{v:.2f} GiB</b>" for p, v in gib.items())
            + " of KV cache per sequence (bf16)."
        )
        fast = os.environ.get("LLAMA2_LAB_FAST") == "1"
        title = f"decode speed at {'1k' if fast else '4k'} context, batch {4 if fast else 8}"
        if self.measure and self.noise is not None:
            n = len(next(iter(self.stats.values()))["runs"])
            status += (
                f"<br>Speeds: median of {n} single-token steps per setting, the settings taking turns, measured "
                f"once when this explorer opened; whiskers: the middle half of the steps (up to "
                f"{self.noise:.0%} of the median wide). Bars closer than that are not different."
            )
        self.status.value = status
        return course_view.kv_cache_figure(n_kv_heads, self.stats if self.measure else None, measured_title=title)


class ConfigExplorer(Explorer):
    """Pick a preset; see where its parameters live."""

    def __init__(self, value: str = "llama2-7b"):
        if value not in PRESETS:
            raise ExplorerError(f"unknown preset {value!r}; valid names: {', '.join(PRESETS)}.")
        self._initial = value
        super().__init__()

    def _controls(self):
        return {"preset": W.Dropdown(options=list(PRESETS), value=self._initial, description="preset")}

    def _draw(self, preset):
        from ..core import calc

        a = ModelArgs.from_name(preset)
        self.data = calc.count_params(a)
        self.status.value = (
            f"<b>{preset}</b>: dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads, "
            f"{a.kv_heads} KV heads ({a.attention_kind}), FFN hidden {a.hidden_dim}, "
            f"{self.data['total']:,} parameters"
        )
        return viz.param_breakdown(preset)
