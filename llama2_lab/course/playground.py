"""The sampling playground (notebook 08): the next-token distribution after each step of the sampler
(temperature, top-k, top-p), and a sample drawn from it, token by token."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..inference.sampling import MAX_SEED
from ..text.guards import check_text
from ..utils.validate import check_int
from .attention_patterns import ExplorerError, _to_numpy, display_token
from .attention_views import GENERATED_COLOUR, _LiveView
from .viz import figure_png

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
        self.model, self.tokenizer = model, tokenizer
        self.seed = check_int("seed", seed, 0, maximum=MAX_SEED, error=ExplorerError)
        self.top_n = check_int("top_n", top_n, 1, error=ExplorerError)
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
            try:
                self.prompt = check_text(prompt, "the prompt")
            except ValueError as e:
                raise ExplorerError(str(e)) from None
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
