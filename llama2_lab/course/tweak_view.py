"""Views of the tweak lab (experiments/tweak/): a live loss plot with a band over seeds, summary panels, a widget.

    results, fig = run_live({"pre-norm": Variant(), "post-norm": Variant(norm_place="post")}, lab)
    TweakWidget(lab)            # pick variants, steps and seeds; train; compare with the seed spread

The live plot redraws one matplotlib figure in place through an IPython display handle, every few
steps; outside a notebook (scripts, tests, nbval) the same code runs and simply draws nothing on screen.
"""

from __future__ import annotations

import time
from dataclasses import replace

import matplotlib.pyplot as plt

from ..experiments.tweak import CATALOG, Lab, RunResult, compare, format_table, mean_curve, run_arms, summarize

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
PANELS = ("final", "position", "kv", None)


def _display(fig):
    """A display handle for fig in a notebook, None elsewhere (the figure is then only drawn, not shown)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    if get_ipython() is None:
        return None
    return display(fig, display_id=True)


def smooth(values: list[float], window: int = 10) -> list[float]:
    """Trailing moving average over up to `window` values (the train loss of one batch is noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class LivePlot:
    """Loss curves of several arms while they train: per arm one colour, a faint smoothed train-loss line
    per seed, and the validation loss as the mean over seeds with a band from the lowest to the highest seed.

    Use it as run_arms' callback. ``panel`` adds a right-hand summary drawn as runs finish:
    "final" (validation loss per seed), "position" (loss by position past the training length),
    "kv" (validation loss against KV-cache bytes per token), or None.
    """

    def __init__(
        self,
        labels,
        lab: Lab,
        title: str = "",
        panel: str | None = "final",
        redraw_every: int = 25,
        ymax: float | None = None,
        min_interval_s: float = 3.0,
        output=None,
    ):
        if panel not in PANELS:
            raise ValueError(f"panel={panel!r}; choose one of {PANELS}.")
        self.labels, self.lab, self.title, self.panel = list(labels), lab, title, panel
        self.redraw_every, self.ymax, self.min_interval_s = redraw_every, ymax, min_interval_s
        self.rows: dict[tuple[str, int], list[dict]] = {}
        self.results: dict[str, list[RunResult]] = {label: [] for label in self.labels}
        ncols = 2 if panel else 1
        self.fig, axes = plt.subplots(1, ncols, figsize=(11 if panel else 6.5, 3.8), squeeze=False)
        self.ax, self.ax2 = axes[0][0], axes[0][1] if panel else None
        self.fig.subplots_adjust(left=0.07 if panel else 0.12, right=0.98, bottom=0.2, top=0.9, wspace=0.25)
        # In a widget, an ipywidgets Output shows the figure (redrawn by clearing it); in a cell, a display handle.
        self.output = output
        self.handle = None if output is not None else _display(self.fig)
        plt.close(self.fig)  # shown through the handle only, not a second time at the end of the cell
        self.t0 = self.last_draw = time.perf_counter()

    def color(self, label: str) -> str:
        return COLORS[self.labels.index(label) % len(COLORS)]

    def __call__(self, label: str, seed: int, item) -> None:
        if isinstance(item, RunResult):
            self.rows[(label, seed)] = item.history
            self.results[label].append(item)
        else:
            self.rows.setdefault((label, seed), []).append(item)
            if item["step"] % self.redraw_every:
                return
        # Drawing and sending a PNG costs a fraction of a second: at most one redraw every min_interval_s.
        if time.perf_counter() - self.last_draw >= self.min_interval_s:
            self.redraw(final=False)

    def redraw(self, final: bool = True) -> None:
        """Draw everything known so far; ``final`` also tightens the layout (slower, done once at the end)."""
        self.last_draw = time.perf_counter()
        self._draw_curves()
        if self.panel:
            self.ax2.clear()
            done = {k: v for k, v in self.results.items() if v}
            if done:
                {"final": plot_final, "position": plot_loss_by_position, "kv": plot_kv_tradeoff}[self.panel](
                    done, self.lab, ax=self.ax2, colors={k: self.color(k) for k in done}
                )
        if final:
            self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)
        elif self.output is not None:
            from IPython.display import display

            self.output.clear_output(wait=True)
            with self.output:
                display(self.fig)

    def _draw_curves(self) -> None:
        ax = self.ax
        ax.clear()
        top = 0.0
        for label in self.labels:
            c = self.color(label)
            seeds = [rows for (lab_, _), rows in self.rows.items() if lab_ == label]
            for rows in seeds:  # faint smoothed train loss per seed
                pts = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
                if pts:
                    steps, losses = zip(*pts)
                    smoothed = smooth(list(losses))
                    ax.plot(steps, smoothed, color=c, lw=0.8, alpha=0.35)
                    top = max(top, min(max(smoothed[len(smoothed) // 3 :]), losses[0] + 0.5))  # a spike stays off-scale
                if rows and rows[-1]["train_loss"] is None:  # diverged: mark where
                    ax.plot(rows[-1]["step"], ax.get_ylim()[1] if ax.has_data() else 8, "x", color=c, ms=8)
            finished = self.results.get(label) or []
            if finished:
                steps, mean, lo, hi = mean_curve(finished)
                if steps:
                    ax.fill_between(steps, lo, hi, color=c, alpha=0.25, lw=0)
                    ax.plot(
                        steps,
                        mean,
                        "o-",
                        color=c,
                        ms=3,
                        lw=1.8,
                        label=f"{label} (val, {len(finished)} seed{'s' * (len(finished) > 1)})",
                    )
                    top = max(top, max(hi[len(hi) // 3 :]))
                elif any(r.diverged_at for r in finished):
                    ax.plot([], [], "x", color=c, label=f"{label}: diverged")
            else:
                ax.plot([], [], color=c, lw=0.8, label=f"{label} (training…)")
        ax.set_xlim(0, self.lab.steps)
        if top:
            ax.set_ylim(top=self.ymax or top + 0.3)
        ax.set_xlabel(
            "step   (thin: train loss of each seed; band: validation loss, lowest to highest seed)", fontsize=8
        )
        ax.set_ylabel("loss (nats/token)")
        elapsed = time.perf_counter() - self.t0
        ax.set_title(f"{self.title}  ({elapsed:.0f} s)" if self.title else f"{elapsed:.0f} s", fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.spines[["top", "right"]].set_visible(False)


def plot_final(
    results: dict[str, list[RunResult]], lab: Lab | None = None, ax=None, colors=None, metric: str = "val_loss"
):
    """Final validation loss of every seed (dots) and the mean over seeds (a bar), per arm."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    colors = colors or {k: COLORS[i % len(COLORS)] for i, k in enumerate(results)}
    for i, row in enumerate(summarize(results, metric)):
        label = row["arm"]
        vals = [r.val_loss if metric == "val_loss" else r.probes.get(metric) for r in results[label]]
        ok = [v for v in vals if v is not None]
        ax.plot([i] * len(ok), ok, "o", color=colors[label], ms=5, alpha=0.8)
        if row["n"]:
            ax.hlines(row["mean"], i - 0.3, i + 0.3, color=colors[label], lw=2.5)
            ax.text(i + 0.32, row["mean"], f"{row['mean']:.3f}", va="center", fontsize=7)
        if len(ok) < len(vals):  # x in data units, y near the top of the axes
            ax.text(
                i,
                0.95,
                f"{len(vals) - len(ok)} diverged",
                ha="center",
                fontsize=7,
                color=colors[label],
                transform=ax.get_xaxis_transform(),
            )
    ax.set_xticks(range(len(results)), list(results), rotation=15, fontsize=8)
    ax.set_xlim(-0.6, len(results) - 0.2)
    ax.set_ylabel(f"final {metric.replace('_', ' ')}")
    ax.set_title("each dot a seed, each bar their mean", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_loss_by_position(results: dict[str, list[RunResult]], lab: Lab, ax=None, colors=None, window: int = 8):
    """Validation loss at each position of longer windows, mean over seeds (band: min..max); the training
    length is marked. Learned absolute positions stop there: the model cannot read further."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    colors = colors or {k: COLORS[i % len(COLORS)] for i, k in enumerate(results)}
    for label, runs in results.items():
        curves = [smooth(r.probes["loss_by_position"], window) for r in runs if r.probes]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = list(range(1, n + 1))
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
        ax.fill_between(
            xs,
            [min(c[i] for c in curves) for i in range(n)],
            [max(c[i] for c in curves) for i in range(n)],
            color=colors[label],
            alpha=0.25,
            lw=0,
        )
        stop = " (stops: no table rows)" if n < lab.probe_len else ""
        ax.plot(xs, mean, color=colors[label], lw=1.6, label=label + stop)
    ax.axvline(lab.seq_len, color="grey", ls="--", lw=1)
    ax.text(lab.seq_len, ax.get_ylim()[1], " training length", fontsize=7, color="grey", va="top")
    ax.set_xlabel("position in the window")
    ax.set_ylabel(f"loss (moving mean of {window})")
    ax.set_title("past the training length", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_kv_tradeoff(results: dict[str, list[RunResult]], lab: Lab | None = None, ax=None, colors=None):
    """One point per arm: validation loss (mean, bar = min..max over seeds) against KV-cache bytes per token."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    colors = colors or {k: COLORS[i % len(COLORS)] for i, k in enumerate(results)}
    for row in summarize(results):
        if not row["n"]:
            continue
        x = row["kv_bytes_per_token"]
        ax.errorbar(
            [x],
            [row["mean"]],
            yerr=[[row["mean"] - row["min"]], [row["max"] - row["mean"]]],
            fmt="o",
            color=colors[row["arm"]],
            capsize=4,
            ms=6,
        )
        ax.annotate(f" {row['arm']}", (x, row["mean"]), fontsize=8)
    ax.set_xscale("log", base=2)
    xs = [row["kv_bytes_per_token"] for row in summarize(results)]
    ax.set_xlim(min(xs) / 1.5, max(xs) * 2.5)  # room for the labels on the right
    ax.set_xlabel("KV cache per token (bytes, bf16)")
    ax.set_ylabel("final validation loss")
    ax.set_title("quality against cache memory", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def run_live(
    arms: dict,
    lab: Lab,
    seeds=(0, 1),
    title: str = "",
    panel: str | None = "final",
    use_cache: bool = True,
    cache=None,
    ymax: float | None = None,
    output=None,
):
    """Train the arms with a live plot; returns (results, figure). Cached runs appear at once.
    ``output``, an ipywidgets Output, shows the plot there instead of below the cell."""
    plot = LivePlot(list(arms), lab, title=title, panel=panel, ymax=ymax, output=output)
    results = run_arms(arms, lab, seeds=seeds, callback=plot, use_cache=use_cache, cache=cache)
    plot.redraw()
    return results, plot.fig


def verdicts(results: dict[str, list[RunResult]], reference: str, metric: str = "val_loss") -> list[str]:
    """compare() of every other arm against `reference`, as sentences."""
    return [compare(results, reference, label, metric)["verdict"] for label in results if label != reference]


class TweakWidget:
    """Pick arms from tweak.CATALOG (and your own models), the number of steps and seeds, then train.

    ``extra_arms`` adds named arms, e.g. {"my model": MyTransformer} (a function args -> model).
    The first selected arm is the reference the others are compared with.
    """

    def __init__(
        self,
        lab: Lab | None = None,
        extra_arms: dict | None = None,
        choices: dict | None = None,
        selected=("reference (Llama 2)", "post-norm"),
        cache=None,
    ):
        import ipywidgets as W

        self.lab = lab or Lab.preset("learner")
        self.arms = {**(choices or CATALOG), **(extra_arms or {})}
        self.cache = cache
        self.results: dict[str, list[RunResult]] = {}
        self.pick = W.SelectMultiple(
            options=list(self.arms),
            value=tuple(s for s in selected if s in self.arms),
            rows=min(12, len(self.arms)),
            description="arms",
        )
        self.steps = W.IntSlider(
            value=self.lab.steps,
            min=max(2 * self.lab.warmup_steps, 10),
            max=max(600, self.lab.steps),
            step=10,
            description="steps",
        )
        self.seeds = W.IntSlider(value=2, min=1, max=4, description="seeds")
        self.button = W.Button(description="train", button_style="primary", icon="play")
        self.plot_out, self.out = W.Output(), W.Output()  # the live figure; the table and the verdicts
        self.button.on_click(self._on_click)
        hint = W.HTML(
            f"<small>about {self.estimate_s():.0f} s for the default choice on one idle core; "
            "finished runs come from the cache</small>"
        )
        self.box = W.VBox(
            [W.HBox([self.pick, W.VBox([self.steps, self.seeds, self.button, hint])]), self.plot_out, self.out]
        )

    def estimate_s(self, arms: int = 2, seeds: int = 2, steps: int | None = None) -> float:
        """Rough wall time: about 45 µs per trained token on one idle core for the learner lab."""
        steps = steps or self.lab.steps
        return arms * seeds * steps * self.lab.batch_size * self.lab.seq_len * 45e-6

    def run(self) -> dict[str, list[RunResult]]:
        chosen = list(self.pick.value)
        if not chosen:
            with self.out:
                print("select at least one arm (hold Ctrl or Shift to select several)")
            return {}
        lab = replace(self.lab, steps=self.steps.value, eval_every=max(1, self.steps.value // 6))
        self.out.clear_output()
        results, _ = run_live(
            {k: self.arms[k] for k in chosen},
            lab,
            seeds=tuple(range(self.seeds.value)),
            title="your experiment",
            cache=self.cache,
            output=self.plot_out,
        )
        with self.out:
            print(format_table(summarize(results)))
            for line in verdicts(results, chosen[0]):
                print("•", line)
        self.results = results
        return results

    def _on_click(self, _button) -> None:
        # A widget callback's exception would only reach the server log: show it where the learner looks.
        try:
            self.run()
        except Exception as err:  # noqa: BLE001 - shown to the learner, with what failed
            with self.out:
                print(f"the experiment stopped: {type(err).__name__}: {err}")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.box._repr_mimebundle_(include=include, exclude=exclude)
