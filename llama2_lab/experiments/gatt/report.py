"""What a GAtt run leaves behind: the figures (adherence by turn, attention to the system span)
and, for each shipped model, results.json and its MODEL_CARD.md."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from ...corpora import dialogues as dlg
from .config import ARM_FOLDERS, ARM_LABELS, ARMS, PRESETS, GattConfig, _models_dir
from .evaluate import format_attention, format_table, headline, pooled_rate, summarize

COLORS = {"baseline": "tab:red", "gatt": "tab:blue", "upper": "tab:gray"}


def plot_adherence(summary: dict, split: str = "free"):
    """Table 30 as curves: pooled adherence@k with 95 % bands for the three arms (left), and one small panel
    per instruction family with two lines each, GAtt solid and baseline dashed (right). Legends sit outside
    the data."""
    import matplotlib.pyplot as plt

    fams = [f for f in summary[split]["gatt"] if f != "pooled"]
    ncol = 3
    nrow = max(1, math.ceil(len(fams) / ncol))
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(nrow, 1 + ncol, width_ratios=[2.2] + [1] * ncol, wspace=0.35, hspace=0.55)
    ax0 = fig.add_subplot(grid[:, 0])
    ks = [r["k"] for r in summary[split]["gatt"]["pooled"]]
    for arm in ARMS:
        rows = summary[split][arm]["pooled"]
        ax0.plot(ks, [r["p"] for r in rows], "o-", ms=3, color=COLORS[arm], label=ARM_LABELS[arm])
        ax0.fill_between(ks, [r["low"] for r in rows], [r["high"] for r in rows], color=COLORS[arm], alpha=0.15)
    ax0.set(
        xlabel="turn k",
        ylabel="adherence (all checks at turn k)",
        ylim=(-0.02, 1.02),
        title="Pooled, free-running (held-out values)",
    )
    ax0.set_xticks([k for k in (1, 4, 8, 12, 16, 20) if k <= max(ks)])
    ax0.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=1, frameon=False)
    for i, fam in enumerate(fams):
        ax = fig.add_subplot(grid[i // ncol, 1 + i % ncol])
        for arm, style in (("baseline", "--"), ("gatt", "-")):
            rows = summary[split][arm].get(fam)
            if rows:
                ax.plot(ks, [r["p"] for r in rows], style, color=COLORS[arm], lw=1.5)
        ax.set_title(fam, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks([k for k in (1, 4, 8, 12, 16, 20) if k <= max(ks)])
        ax.tick_params(labelsize=7)
        if i // ncol == nrow - 1:
            ax.set_xlabel("turn k", fontsize=8)
    from matplotlib.lines import Line2D

    fig.legend(
        [Line2D([], [], color=COLORS["gatt"]), Line2D([], [], color=COLORS["baseline"], ls="--")],
        [ARM_LABELS["gatt"], ARM_LABELS["baseline"]],
        loc="upper right",
        ncol=2,
        fontsize=8,
        frameon=False,
        title="per family",
        title_fontsize=8,
    )
    fig.subplots_adjust(left=0.06, right=0.99, top=0.84, bottom=0.22)
    return fig


def plot_attention_share(summary: dict):
    """Attention mass on the system message at turn k's decision positions (top row) and its lift over
    uniform causal attention (bottom row), one small panel per layer (max over heads) with two lines each:
    GAtt solid, baseline dashed."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    att = summary["attention"]
    L, K = len(att["gatt"]["share"]), len(att["gatt"]["share"][0])
    ks = list(range(1, K + 1))
    fig, axes = plt.subplots(2, L, figsize=(max(8, 2.1 * L), 4.8), sharex=True, squeeze=False)
    for row, m in enumerate(("share", "lift")):
        top = max(max(max(v) for v in att[arm][m]) for arm in ("baseline", "gatt"))
        for layer in range(L):
            ax = axes[row, layer]
            for arm, style in (("baseline", "--"), ("gatt", "-")):
                ax.plot(ks, att[arm][m][layer], style, color=COLORS[arm], lw=1.5)
            ax.set_ylim(0, top * 1.08)
            if m == "lift":
                ax.axhline(1.0, color="k", lw=0.5)
                ax.set_xlabel("turn k", fontsize=8)
            else:
                ax.set_title(f"layer {layer}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[row, 0].set_ylabel("share on the system span" if m == "share" else "lift over uniform", fontsize=8)
    fig.legend(
        [Line2D([], [], color=COLORS["gatt"]), Line2D([], [], color=COLORS["baseline"], ls="--")],
        [ARM_LABELS["gatt"], ARM_LABELS["baseline"]],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.95),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        "Attention on the system message where turn k's reply is decided (max over heads)", fontsize=10, y=0.995
    )
    for ax in axes.flat:
        ax.set_xticks([k for k in (1, 4, 8, 12, 16, 20) if k <= K])
    fig.tight_layout(rect=(0, 0, 1, 0.89))
    return fig


def plot_attention_maps(maps: dict, tokens_per_bin: int | None = None):
    """Figure 10: whole-dialogue attention (max over layers and heads, binned), without and with GAtt,
    on one log colour scale with its colourbar."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    im = None
    for ax, arm in zip(axes, ("baseline", "gatt")):
        m = np.array(maps[arm]["map"])
        m = np.where(np.tril(np.ones_like(m)) > 0, m, np.nan)
        im = ax.imshow(np.log10(np.clip(m, 1e-3, 1)), cmap="magma", vmin=-3, vmax=0)
        lo, hi = maps[arm]["system"]
        ax.axvspan(lo - 0.5, hi - 0.5, color="cyan", alpha=0.12)
        for b in maps[arm]["turns"][1:]:
            ax.axhline(b - 0.5, color="w", lw=0.3)
        ax.set(
            title=f"{ARM_LABELS[arm]}: max over layers and heads",
            xlabel=f"key (bins of {maps[arm]['bin']} tokens; system span shaded)",
            ylabel="query",
        )
        cbar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cbar.set_ticks([-3, -2, -1, 0])
        cbar.set_ticklabels(["≤0.001", "0.01", "0.1", "1"])
        cbar.set_label("attention weight (log scale)", fontsize=8)
    fig.tight_layout()
    return fig


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ...utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _positions_note(cfg: GattConfig, info: dict) -> str:
    """What the card says about the context: only what was trained."""
    trained = max(info["base_context"], cfg.max_train_tokens)
    note = (
        f"max_seq_len {cfg.context}: the base was pretrained on {info['base_context']}-token rows and the chat "
        f"fine-tune used sequences of at most {cfg.max_train_tokens} tokens."
    )
    if cfg.context > trained:
        note += f" Positions {trained}–{cfg.context - 1} were never trained on: expect nonsense there."
    return note


def _deep_lines(h: dict) -> str:
    lines = []
    for key in [k for k in h["gatt"] if k.startswith("turns")]:
        lo, hi = key[5:].split("-")
        cells = ", ".join(
            f"{name} {h[arm][key][0]:.2f} [{h[arm][key][1]:.2f}, {h[arm][key][2]:.2f}]"
            for arm, name in (("baseline", "baseline"), ("gatt", "GAtt"), ("upper", "upper"))
        )
        lines.append(f"Turns {lo}–{hi} pooled: {cells}.")
    return "\n".join(lines)


def _past_context_note(summary: dict, cfg: GattConfig) -> str:
    """How many free-running chats ran past the trained context, per arm, by the last turn."""
    past = summary.get("free_past_context")
    if not past:
        return ""
    cells = ", ".join(f"{arm} {v[-1]:.0%}" for arm, v in past.items())
    return (
        f"Chats that had passed {cfg.context} tokens (the trained context) by turn {cfg.eval_turns}: {cells}; "
        "those turns ran on positions no model here was trained on (a longer RoPE table, same weights)."
    )


def _content_lines(summary: dict) -> str:
    lines = []
    for key, per_arm in summary["content_headline"].items():
        for arm in ("baseline", "gatt", "upper"):
            p, lo, hi, n = per_arm[arm]
            lines.append(f"- {arm}, turns {key}: {p:.2f} [{lo:.2f}, {hi:.2f}] (n={n})")
    return "\n".join(lines)


def write_card(folder: Path, arm: str, cfg: GattConfig, summary: dict, info: dict) -> None:
    """MODEL_CARD.md: what the model is, how it was made, and the measured table."""
    from ...utils.io import atomic_write_text

    h = summary["headline"]
    other = "llama2-lab-tiny-chat-gatt" if arm == "baseline" else "llama2-lab-tiny-chat"
    what = (
        "baseline chat SFT: plain multi-turn chat + instruction-following examples (no GAtt)"
        if arm == "baseline"
        else "chat SFT with Ghost Attention: plain multi-turn chat + GAtt sequences (instruction in turn 1 "
        + ("only, loss on every accepted reply)" if cfg.gatt_loss == "all" else "only, loss on the last reply)")
    )
    text = f"""# {folder.name}

{what}. Fine-tuned from `{info["base"]}` by `llama2-lab gatt` (`llama2_lab/experiments/gatt/`, notebook 12);
the companion model is `{other}`. Llama-2-chat format (`llama2_lab/text/chat.py`).
{_positions_note(cfg, info)}

## How it was made
- preset `{info["preset"]}`, GAtt replies: **{cfg.mode}** ({
        "the baseline model's own samples, "
        f"{cfg.n_candidates} candidates per turn at T={cfg.temperature}, first one the checker accepts"
        if cfg.mode == "sampled"
        else "deterministic oracle rewrites of the plain answers"
    }).
- data: {cfg.n_dialogues} generated dialogues (`llama2_lab/corpora/dialogues.py`) of 1–{
        cfg.max_turns
    } turns, sequences cut to
  ≤ {cfg.max_train_tokens} tokens; each dialogue gives one shared plain-chat sequence and one arm sequence
  ({2 * cfg.n_dialogues} sequences per arm); when a persona is set, {cfg.attribute_boost:.0%} of the
  turns ask for its name. Mean tokens per sequence: {json.dumps(info["mean_tokens"])}.
  GAtt replies are kept only when they obey the instruction *and* answer the question right
  (`dialogues.answer_correct`; an invented name when no persona was set is wrong). They were sampled
  with the instruction on every user message, as the paper's step 1 does; those chats run up to about
  twice as long as the training sequences, so the sampler ran with a longer RoPE table (positions past
  {cfg.context} untrained; a reply sampled there is kept only if it passes the same check).
- training, two stages: (1) shared chat SFT of the pretrained model, {cfg.sft_steps} steps × {cfg.batch_size}
  sequences (plain chat + instruction examples from {cfg.sft_dialogues} other dialogues; trained once, with
  seed {cfg.seeds[0]}, for all seeds), peak LR {cfg.lr}{info.get("stage1_note", "")};
  (2) each arm continues from that model for {cfg.steps} steps × {cfg.batch_size} sequences, peak LR {cfg.lr2}.
  AdamW (0.9, 0.95), eps 1e-5, wd 0.1 on matrices, clip 1.0, 5 % warmup, cosine to 10 %; masked loss = sum of
  CE over trained tokens / their count. Same steps, batch and sequence counts for both arms.{
        " A GAtt sequence trains every accepted reply (the paper's last-reply loss on each prefix of the "
        "dialogue at once, `gatt_sequence(loss='all')`), a baseline sequence the one reply that follows its "
        "instruction: GAtt's data holds more trained replies per sequence, which is what the method makes."
        if cfg.gatt_loss == "all"
        else ""
    }
- seeds {list(cfg.seeds)} (this folder holds seed {cfg.seeds[0]}); rejection sampling kept
  {info.get("kept", "n/a")}.
- wall time: {info["wall_min"]:.1f} min for the whole pipeline on {info["threads"]} thread(s).

## Evaluation (all seeds pooled; 95 % Wilson intervals, which ignore the clustering of checks within a dialogue)
{cfg.eval_dialogues} free-running {
        cfg.eval_turns
    }-turn dialogues per seed and arm (greedy, own replies as history, at most {
        cfg.max_new
    } new tokens a reply), held-out
names and words (the voice family's table is the same in training); 1–3 constraints from
{", ".join(dlg.FAMILIES)}. "upper" = the baseline with the instruction repeated in every user
message (its chats are about twice as long: past {cfg.context} positions it runs on positions no
model here was trained on).

Turn 1: baseline {h["baseline"]["turn1"]:.2f}, GAtt {h["gatt"]["turn1"]:.2f}, upper {h["upper"]["turn1"]:.2f}.
{_deep_lines(h)}

Content accuracy (the question answered right, `answer_correct`, whatever the instruction), pooled:
{_content_lines(summary)}

{_past_context_note(summary, cfg)}

### Adherence@k, free-running
{format_table(summary, "free")}
### Content accuracy@k, free-running (by question kind)
{format_table(summary, "free_content")}
### Held-out combination (caps + start word, never combined in training)
{format_table(summary, "combo", fams=False)}
### Plain-history probe (earlier replies teacher-forced unconstrained)
{format_table(summary, "probe", fams=False)}
### Attention on the system span at turn k's decision positions (max over heads; lift over uniform)
{format_attention(summary)}
Figures: `adherence.png`, `attention_share.png`, `attention_maps.png`; numbers: `results.json`.

## Limits
{info.get("limits", "")}
"""
    atomic_write_text(folder / "MODEL_CARD.md", text)


def write_report(
    cfg: GattConfig,
    tok,
    per_seed: dict,
    ships: dict,
    maps: dict,
    times: dict,
    kept: dict,
    mean_tokens: dict,
    base_context,
    wall_minutes: float,
    limits: str = "",
) -> dict:
    """Summarize the seeds, then write both model folders: weights, results.json, figures, MODEL_CARD.md."""
    from ...formats import save_model
    from ...utils.io import atomic_write_text

    summary = summarize(per_seed, cfg)
    summary["maps"] = maps
    K = cfg.eval_turns
    ranges = [(min(8, K), min(12, K))] + ([(13, K)] if K >= 13 else [])
    summary["headline"] = {}
    summary["combo_headline"] = {}
    for lo, hi in ranges:
        for key, table in (("headline", summary), ("combo_headline", {"free": summary["combo"]})):
            for arm, v in headline(table, lo, hi).items():
                summary[key].setdefault(arm, {}).update(v)
    summary["content_headline"] = {
        f"1-{hi}": {
            arm: pooled_rate([r for s in per_seed.values() for r in s["free"][arm]["content"]], 1, hi) for arm in ARMS
        }
        for hi in sorted({min(12, K), K})
    }
    results = {
        "config": cfg.to_dict(),
        "summary": summary,
        "times_s": times,
        "gatt_data": kept,
        "wall_minutes": wall_minutes,
        "examples": {
            str(s): {split: {a: v[split][a]["example"] for a in ARMS} for split in ("free", "combo")}
            for s, v in per_seed.items()
        },
        "mean_tokens": mean_tokens,
    }
    preset = next(
        (
            k
            for k, v in PRESETS.items()
            if replace(v, threads=None, progress=True, out_dir=None)
            == replace(cfg, threads=None, progress=True, out_dir=None)
        ),
        "custom",
    )
    info = {
        "base": str(cfg.base or "assets/models/llama2-lab-tiny"),
        "base_context": base_context,
        "preset": preset,
        "mean_tokens": {k: round(v, 1) for k, v in mean_tokens.items()},
        "kept": {
            s: (
                f"{v['sampled']} turns sampled and accepted, {v['fallback']} oracle fallbacks, "
                f"{v['failed']} failed, of {v['turns_asked']}"
                if "sampled" in v
                else "oracle mode"
            )
            for s, v in kept.items()
        },
        "wall_min": wall_minutes,
        "threads": torch.get_num_threads(),
        "limits": limits,
    }
    results["card_info"] = info
    for arm, name in ARM_FOLDERS.items():
        folder = _models_dir(cfg) / name
        folder.mkdir(parents=True, exist_ok=True)
        save_model(ships[arm], folder, tok)
        atomic_write_text(folder / "results.json", json.dumps(results, indent=1, default=float) + "\n")
        _save_fig(plot_adherence(summary), folder / "adherence.png")
        _save_fig(plot_attention_share(summary), folder / "attention_share.png")
        _save_fig(plot_attention_maps(maps), folder / "attention_maps.png")
        write_card(folder, arm, cfg, summary, info)
    return results
