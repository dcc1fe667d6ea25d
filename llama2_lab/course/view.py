"""What a learner sees in the course notebooks: small tables, progress bars and the figures of 02, 03 and 06.

These helpers keep plotting and HTML out of the notebooks, so a notebook cell shows the idea and one
call draws it::

    from llama2_lab.course import view as course_view
    course_view.show_table({1: 1690.0, 2: 2210.5}, headers=("n_kv_heads", "tokens/s"))
    with course_view.call_progress(model, total=150, desc="greedy, uncached"):
        ids = my_greedy(model, prompt_ids, 150, eos_id)
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F


# --- tables ---------------------------------------------------------------------------------------
def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table_html(rows, headers: Sequence[str] | None = None, caption: str = "") -> str:
    """An HTML table from a dict (key -> value or tuple of values) or a list of rows; no wrapping mid-word."""
    if isinstance(rows, dict):
        rows = [(k, *(v if isinstance(v, (tuple, list)) else (v,))) for k, v in rows.items()]
    rows = [r if isinstance(r, (tuple, list)) else (r,) for r in rows]
    style = "border-collapse:collapse;font-family:monospace;font-size:12px;margin:4px 0"
    td = "padding:2px 10px;text-align:right;white-space:nowrap;border-bottom:1px solid #ddd"
    out = [f'<table class="l2l-table" style="{style}">']
    if caption:
        out.append(
            f'<caption style="text-align:left;font-family:sans-serif;padding-bottom:2px">'
            f"{html.escape(caption)}</caption>"
        )
    if headers:
        out.append(
            "<tr>" + "".join(f'<th style="{td};font-weight:bold">{html.escape(str(h))}</th>' for h in headers) + "</tr>"
        )
    for r in rows:
        out.append("<tr>" + "".join(f'<td style="{td}">{html.escape(_cell(v))}</td>' for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def show_table(rows, headers: Sequence[str] | None = None, caption: str = ""):
    """Display ``table_html(...)`` in a notebook (plain text elsewhere); returns the HTML object."""
    from IPython.display import HTML, display

    obj = HTML(table_html(rows, headers, caption))
    display(obj)
    return obj


# --- progress -------------------------------------------------------------------------------------
@contextmanager
def call_progress(module: torch.nn.Module, total: int, desc: str = ""):
    """A tqdm bar that advances once per forward call of ``module`` (e.g. one per generated token).

    Works around any loop, the learner's included: the loop does not need to know about the bar.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=True)

    def tick(*_):  # a forward hook that returns something would replace the module's output: return None
        bar.update(1)

    handle = module.register_forward_hook(tick)
    try:
        yield bar
    finally:
        handle.remove()
        bar.close()


# --- timing ---------------------------------------------------------------------------------------
def time_repeats(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> tuple[float, float, float]:
    """(median, min, max) seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


# --- losses (02, 03) ------------------------------------------------------------------------------
@torch.no_grad()
def token_losses(model, rows: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy at every position: rows (B, T+1) int64 -> (B, T) float32."""
    logits = model(rows[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.transpose(1, 2).float(), rows[:, 1:], reduction="none")


def story_rows(tokenizer, stories: Iterable[str], length: int) -> torch.Tensor:
    """Concatenate stories (BOS before each) and cut rows of ``length + 1`` tokens: (n_rows, length+1)."""
    ids: list[int] = []
    for s in stories:
        ids += tokenizer.encode(s, bos=True)
    n = len(ids) // (length + 1)
    if n == 0:
        raise ValueError(f"the stories give {len(ids)} tokens, fewer than one row of {length + 1}: pass more stories.")
    return torch.tensor(ids[: n * (length + 1)]).view(n, length + 1)


def plot_position_losses(curves: dict, train_len: int, bucket: int = 32, title: str = ""):
    """Mean loss per bucket of positions for each curve (name -> (T,) losses); a line at ``train_len``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    for name, losses in curves.items():
        losses = torch.as_tensor(losses).float()
        T = losses.shape[-1] // bucket * bucket
        means = (
            losses[..., :T].reshape(-1, bucket).mean(-1)
            if losses.dim() == 1
            else losses[:, :T].mean(0).reshape(-1, bucket).mean(-1)
        )
        centres = torch.arange(len(means)) * bucket + bucket / 2
        ax.plot(centres.tolist(), means.tolist(), "o-", ms=3, label=name)
    ax.axvline(train_len, color="gray", ls="--", lw=1)
    ax.text(
        train_len,
        ax.get_ylim()[1],
        f" trained on {train_len}-token rows",
        va="top",
        ha="left",
        fontsize=9,
        color="gray",
    )
    ax.set_xlabel("position in the row")
    ax.set_ylabel(f"mean loss (per {bucket} positions)")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    plt.show()
    return fig


# --- 06: layer by layer ---------------------------------------------------------------------------
@torch.no_grad()
def compare_blocks(mine, package_model, tokens: torch.Tensor, freqs_cis: torch.Tensor) -> dict:
    """Run ``mine``'s blocks one by one next to the package model's recorded block outputs.

    Returns {"rms_mine", "rms_package", "layer_diffs"} (lists, one entry per block); each diff is the
    largest |mine − package| relative to the block's largest value.
    """
    _, recorded = package_model.run_with_cache(tokens)  # "layers.{i}.output": (B, T, dim)
    h = mine.tok_embeddings(tokens)
    out = {"rms_mine": [], "rms_package": [], "layer_diffs": []}
    for i, layer in enumerate(mine.layers):
        h = layer(h, freqs_cis)
        ref = recorded[f"layers.{i}.output"]
        out["rms_mine"].append(h.pow(2).mean().sqrt().item())
        out["rms_package"].append(ref.pow(2).mean().sqrt().item())
        out["layer_diffs"].append((h - ref).abs().max().item() / ref.abs().max().item())
    return out


def plot_blocks_and_next_token(stats: dict, logits: torch.Tensor, tokenizer, prompt: str, k: int = 10):
    """Left: RMS of the residual stream after each block, mine vs package. Right: the top-k next tokens."""
    import matplotlib.pyplot as plt

    probs = logits.float().softmax(-1)
    top = probs.topk(k)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    blocks = list(range(len(stats["layer_diffs"])))
    ax0.plot(blocks, stats["rms_mine"], "-", lw=3, alpha=0.5, label="mine")
    ax0.plot(blocks, stats["rms_package"], "o", color="black", ms=4, label="package")
    ax0.set_xticks(blocks)
    ax0.set_xlabel("block")
    ax0.set_ylabel("RMS of the residual stream")
    ax0.set_title(f"Block outputs agree (max relative diff {max(stats['layer_diffs']):.0e})")
    ax0.legend(frameon=False)
    labels = []
    for i in top.indices.tolist():
        text = tokenizer.decode([i])
        labels.append(repr(text) if text.strip() else repr(tokenizer.id_to_piece(i)))
    ax1.barh(labels[::-1], top.values.tolist()[::-1], color="#2ca02c")
    ax1.set_xlabel("probability")
    ax1.set_title(f"Next token after “…{prompt[-20:]}”")
    for ax in (ax0, ax1):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    plt.show()
    return fig


# --- 05: KV cache and decode speed ----------------------------------------------------------------
def kv_cache_figure(n_kv_heads: int = 8, stats: dict | None = None, measured_title: str = "measured decode speed"):
    """KV-cache GiB vs context for the 7B/70B shapes (solid: ``n_kv_heads``; dashed MHA, dotted MQA), and,
    when ``stats`` ({n_kv_heads: {"median", "lo", "hi"}} or None per option) is given, the measured decode
    speed of a tiny model as bars (median) with whiskers (the quartiles of the steps).

    The GiB at 4k go into the legend, not onto the lines, so no label sits on another.
    """
    import matplotlib.pyplot as plt

    from . import viz

    d = viz.kv_cache_data(n_kv_heads)
    ncols = 2 if stats is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.7), squeeze=False)
    ax = axes[0][0]
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c")
    for name, color in zip(viz.KV_PRESETS, colors):
        p, c = d[name], d["contexts"]
        ax.plot(
            c,
            p["chosen"],
            "-o",
            ms=3,
            color=color,
            lw=2,
            label=f"{name}: {p['n_kv_heads']} of {p['n_heads']} KV heads, {p['chosen'][-1]:.2f} GiB at 4k",
        )
        ax.plot(c, p["MHA"], "--", color=color, lw=1, alpha=0.6)
        ax.plot(c, p["MQA"], ":", color=color, lw=1, alpha=0.6)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("KV cache, GiB (bf16, batch 1)")
    ax.set_title("KV cache per sequence (dashed MHA, dotted MQA)", fontsize=10)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    if stats is not None:
        ax2 = axes[0][1]
        keys = sorted(stats)
        med = [stats[k]["median"] if stats[k] else 0.0 for k in keys]
        lo = [stats[k]["median"] - stats[k]["lo"] if stats[k] else 0.0 for k in keys]
        hi = [stats[k]["hi"] - stats[k]["median"] if stats[k] else 0.0 for k in keys]
        bars = ax2.bar(
            [str(k) for k in keys],
            med,
            yerr=[lo, hi],
            capsize=4,
            ecolor="#444444",
            color=["#d62728" if k == n_kv_heads else "#9e9e9e" for k in keys],
        )
        top = max((stats[k]["hi"] for k in keys if stats[k]), default=1.0)
        for b, k in zip(bars, keys):
            txt = "not measured" if not stats[k] else f"{stats[k]['median']:,.0f}"
            ax2.text(
                b.get_x() + b.get_width() / 2,
                0.02 * top,
                txt,
                ha="center",
                va="bottom",
                fontsize=8,
                color="white" if stats[k] else "black",
            )
        ax2.set_ylim(0, top * 1.1)
        ax2.set_xlabel("n_kv_heads (tiny model, 8 query heads)")
        ax2.set_ylabel("decode tokens / s (this machine)")
        ax2.set_title(measured_title + "\nmedian; whiskers: middle half of the steps", fontsize=10)
        ax2.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- 06: the greedy loop, written out -------------------------------------------------------------
@torch.no_grad()
def greedy_uncached(model, ids, max_new_tokens: int, eos_id: int | None) -> list[int]:
    """The package's greedy loop without a cache: the new ids (EOS not included), stopping at max_seq_len.

    Each step runs the whole sequence so far; any model with ``args.max_seq_len`` and
    ``forward(tokens) -> logits (B, T, V)`` works (notebook 06's check compares a learner's loop with this).
    """
    ids, new = list(ids), []
    device = next(model.parameters()).device
    for _ in range(max_new_tokens):
        if len(ids) >= model.args.max_seq_len:
            break
        logits = model(torch.tensor([ids], device=device))[0, -1]  # (V,): the prediction for the next position
        next_id = int(logits.argmax())
        if next_id == eos_id:
            break
        ids.append(next_id)
        new.append(next_id)
    return new
