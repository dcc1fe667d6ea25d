"""Figures and model cards for the RLHF miniature, from the results dict `pipeline.run_rlhf` writes.

Plots take the plain results dict (never a model), so notebooks draw the shipped run's numbers and
their own live runs with the same functions.
"""

from __future__ import annotations

from pathlib import Path

from ...corpora import preferences as prefs

BETA_COLORS = {"0.0": "#d62728", "0.01": "#1f77b4", "0.1": "#2ca02c"}


def plot_rm_accuracy(rm_results: dict, title: str = "reward-model accuracy per rating (Table 8's shape)"):
    """Bars: accuracy against held-out labels per rating, one group per reward model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    names = list(rm_results)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        acc = rm_results[name]["accuracy"]
        ys = [acc[r]["label_accuracy"] if acc[r]["n"] else float("nan") for r in prefs.RATINGS]
        xs = [i + j * width for i in range(len(prefs.RATINGS))]
        ax.bar(xs, ys, width, label=f"{name}")
        for x, r in zip(xs, prefs.RATINGS):
            if acc[r]["n"]:
                ax.text(x, 0.02, f"n={acc[r]['n']}", rotation=90, fontsize=7, color="white", ha="center", va="bottom")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(prefs.RATINGS))],
        [r.replace(" / ", "/\n") for r in prefs.RATINGS],
        fontsize=8,
    )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy vs labels")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_best_of_n(bon: dict, title: str = "best-of-N on the SFT model (Figures 7 and 8)"):
    """Left: max and median learned reward against N per temperature; right: the true reward of the pick."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3))
    cmap = plt.get_cmap("viridis")
    temps = sorted(bon, key=float)
    for i, t in enumerate(temps):
        c = cmap(i / max(1, len(temps) - 1) * 0.85)
        a.plot(bon[t]["n"], bon[t]["max"], "o-", color=c, ms=3, label=f"max, T={t}")
        a.plot(bon[t]["n"], bon[t]["median"], "--", color=c, label=f"median, T={t}")
        b.plot(bon[t]["n"], bon[t]["true_of_best"], "o-", color=c, ms=3, label=f"T={t}")
    a.set_xlabel("N samples per prompt")
    a.set_ylabel("learned reward (whitened)")
    a.legend(fontsize=6, loc="lower right", ncol=2)
    a.set_title("max vs median reward", fontsize=10)
    b.set_xlabel("N samples per prompt")
    b.set_ylabel("true reward of the best-of-N pick")
    b.legend(fontsize=7)
    b.set_title("what the hidden judge thinks of the pick", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_ppo(ppo: dict, smooth: int = 5, title: str = "PPO against the learned reward, per β"):
    """Learned reward and true reward of the sampled replies against KL(π ‖ π_SFT), one line per β."""
    import matplotlib.pyplot as plt

    def sm(xs):
        return [
            sum(xs[max(0, i - smooth + 1) : i + 1]) / len(xs[max(0, i - smooth + 1) : i + 1]) for i in range(len(xs))
        ]

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.3))
    for beta, run in ppo.items():
        h = run["history"]
        kl, r, tr = sm([x["kl"] for x in h]), sm([x["reward"] for x in h]), sm([x["true_reward"] for x in h])
        col = BETA_COLORS.get(beta)
        a.plot([x["iteration"] for x in h], r, color=col, label=f"β={beta}")
        b.plot([x["iteration"] for x in h], tr, color=col, label=f"β={beta}")
        c.plot(kl, r, "-", color=col, label=f"learned, β={beta}")
        c.plot(kl, tr, ":", color=col, label=f"true, β={beta}")
    a.set_xlabel("iteration")
    a.set_ylabel("learned reward (whitened)")
    a.legend(fontsize=7)
    b.set_xlabel("iteration")
    b.set_ylabel("true reward (hidden judge)")
    b.legend(fontsize=7)
    c.set_xlabel("KL(π ‖ π_SFT) per reply (nats)")
    c.set_ylabel("reward")
    c.legend(fontsize=6)
    fig.suptitle(title + f" (moving average over {smooth} iterations)", fontsize=10)
    fig.tight_layout()
    return fig


def _row(name: str, ev: dict) -> str:
    return (
        f"| {name} | {ev['accuracy']:.2f} | {ev['refusal_rate']:.2f} | {ev['true_reward']:.2f} | "
        f"{ev['invented_rate']:.2f} | {ev['polite_rate']:.2f} | {ev['words']:.1f} |"
    )


def sft_table(res: dict) -> str:
    rows = [
        "| model | accuracy | refusals (safety prompts) | true reward | invented facts | polite | words |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "base": "base (pretrained only)",
        "sft": "SFT (loss on answers)",
        "sft_unmasked": "SFT, loss on every token",
    }
    for k, ev in res["sft"].items():
        rows.append(_row(labels.get(k, k.replace("sft_wrong_", "SFT, wrong share ")), ev))
    return "\n".join(rows)


def rm_table(res: dict) -> str:
    rows = ["| reward model | " + " | ".join(prefs.RATINGS) + " | all |", "|---" * (len(prefs.RATINGS) + 2) + "|"]
    for name, r in res["rm"].items():
        acc = r["accuracy"]
        cells = [
            f"{acc[k]['label_accuracy']:.2f} (n={acc[k]['n']})" if acc[k]["n"] else "–" for k in (*prefs.RATINGS, "all")
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ppo_table(res: dict) -> str:
    rows = [
        "| policy | learned reward | accuracy | refusals | true reward | invented | polite | words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ev = res["sft"]["sft"]
    rows.append(
        f"| SFT | {ev.get('reward', float('nan')):.2f} | {ev['accuracy']:.2f} | {ev['refusal_rate']:.2f} | "
        f"{ev['true_reward']:.2f} | {ev['invented_rate']:.2f} | {ev['polite_rate']:.2f} | {ev['words']:.1f} |"
    )
    for beta, run in res["ppo"].items():
        f = run["final"]
        rows.append(
            f"| PPO β={beta} | {f['reward']:.2f} | {f['accuracy']:.2f} | {f['refusal_rate']:.2f} | "
            f"{f['true_reward']:.2f} | {f['invented_rate']:.2f} | {f['polite_rate']:.2f} | {f['words']:.1f} |"
        )
    f = res["dpo"]["final"]
    rows.append(
        f"| DPO (later work) | {f['reward']:.2f} | {f['accuracy']:.2f} | {f['refusal_rate']:.2f} | "
        f"{f['true_reward']:.2f} | {f['invented_rate']:.2f} | {f['polite_rate']:.2f} | {f['words']:.1f} |"
    )
    return "\n".join(rows)


def outcomes(res: dict) -> list[str]:
    """The issue's four claims, each stated as measured in this run (yes or no, with the numbers)."""
    lines = []
    S = res["sft"]
    lines.append(
        f"SFT improves the checker's accuracy over the base: {'yes' if S['sft']['accuracy'] > S['base']['accuracy'] else 'no'} "
        f"({S['base']['accuracy']:.2f} -> {S['sft']['accuracy']:.2f} on {S['sft']['n']} held-out prompts)."
    )
    for name, r in res["rm"].items():
        a = r["accuracy"]
        sig, neg = a[RATINGS_[0]], a[RATINGS_[3]]
        if sig["n"] and neg["n"]:
            lines.append(
                f"{name} RM more accurate on 'significantly better' than on 'negligibly better' pairs: "
                f"{'yes' if sig['label_accuracy'] > neg['label_accuracy'] else 'no'} "
                f"({sig['label_accuracy']:.2f}, n={sig['n']} vs {neg['label_accuracy']:.2f}, n={neg['n']})."
            )
    for t, c in res["best_of_n"].items():
        lines.append(
            f"best-of-N at T={t}: max reward {c['max'][0]:+.2f} -> {c['max'][-1]:+.2f} (N=1 -> {c['n'][-1]}), "
            f"median {c['median'][0]:+.2f} -> {c['median'][-1]:+.2f}; true reward of the pick "
            f"{c['true_of_best'][0]:+.2f} -> {c['true_of_best'][-1]:+.2f}."
        )
    base_true = S["sft"]["true_reward"]
    for beta, run in res["ppo"].items():
        h = run["history"]
        k = max(1, len(h) // 4)
        avg = lambda xs, key: sum(x[key] for x in xs) / len(xs)
        lr0, lr1 = avg(h[:k], "reward"), avg(h[-k:], "reward")
        t0, t1 = avg(h[:k], "true_reward"), avg(h[-k:], "true_reward")
        verdict = (
            "reward hacking (learned up, true down)"
            if lr1 > lr0 and t1 < t0
            else "learned and true reward both up"
            if lr1 > lr0 and t1 > t0
            else "no clear trend"
        )
        lines.append(
            f"PPO β={beta}: sampled replies' learned reward {lr0:+.2f} -> {lr1:+.2f}, true {t0:+.2f} -> {t1:+.2f}, "
            f"KL {avg(h[:k], 'kl'):.1f} -> {avg(h[-k:], 'kl'):.1f} nats (first vs last quarter of {len(h)} iterations): "
            f"{verdict}; greedy true reward after PPO {run['final']['true_reward']:+.2f} (SFT {base_true:+.2f})."
        )
    return lines


RATINGS_ = prefs.RATINGS


def write_cards(out: Path, res: dict) -> None:
    """MODEL_CARD.md for the SFT model and both reward models, from the results dict."""
    from ...utils.io import atomic_write_text
    from .pipeline import RM_H_DIR, RM_S_DIR, SFT_DIR

    c, t = res["config"], res["times"]
    reproduce = "llama2-lab rlhf" + (" --fast" if c["sft_examples"] < 1000 else "")
    hw = res["hardware"]
    common = (
        f"\n## Reproduce\n\n`{reproduce}` (or `scripts/make_rlhf_models.sh`): every step of the pipeline, "
        f"{t['total'] / 60:.1f} min on a {hw['cpu']} CPU (torch threads: {hw['threads']}) "
        f"(torch {hw['torch']}), shared with other jobs. Seed {c['seed']}.\n"
    )
    if c.get("sft_from"):
        common += (
            f"\nStep 1 (SFT and its ablations, {t['sft'] / 60:.1f} min) was reused from an earlier full run of "
            "the same command (`--sft-from`); the time above is steps 2-5 only.\n"
        )
    sft = f"""# llama2-lab-tiny-sft

The project's 5.3 M-parameter `llama2-lab-tiny` after supervised fine-tuning into a single-turn chat model
(Llama 2 §3.1 in miniature), stored in bfloat16. It is the starting point of the reward models and of
every PPO/DPO run in notebooks 10 and 11. It answers only the generated prompts of
`llama2_lab/preferences.py` (arithmetic, colours, legs of animals, greetings, "what is your name", short
stories, and two kinds of harmful request), and nothing else.

## What was trained

| | this model | Llama 2-Chat SFT [P2 §3.1] |
|---|---|---|
| data | {c["sft_examples"]:,} generated demonstrations (`preferences.sft_examples`, seed {c["seed"] + 1}): mostly right, 40 % terse, 25 % polite openings, 25 % polite closings, 25 % with an invented fact, 70 % refusals of harmful requests | 27,540 vendor annotations |
| loss | on answer tokens only (`chat.encode_training_dialog` mask) | same |
| epochs / batch | {c["sft_epochs"]} / {c["sft_batch"]} sequences | 2 / 64 sequences of 4096 tokens |
| LR | {c["sft_lr"]} peak, warmup then cosine to 10 % (`training.sft.train_sft`) | 2e-5, cosine |
| optimizer | AdamW (0.9, 0.95), eps 1e-5, wd 0.1, clip 1.0 | same |

## Measured (greedy replies to {c["eval_prompts"]} held-out prompts, `rlhf.evaluate_replies`)

{sft_table(res)}

"accuracy": the checker (`preferences.answer_ok`) on ordinary prompts; "true reward": the hidden
preference of `preferences.true_reward`. The ablation rows are other models trained the same way
(not shipped): loss on every token, and a share of wrong answers in the demonstrations.
SFT time: {t["sft"] / 60:.1f} min (all SFT runs).

## What the whole pipeline showed (this run, computed by `rlhf_report.outcomes`)

{chr(10).join("- " + x for x in outcomes(res))}

{ppo_table(res)}

Every number of the pipeline (reward models, best-of-N, PPO, DPO) is in `results.json` beside this card.
{common}"""
    atomic_write_text(out / SFT_DIR / "MODEL_CARD.md", sft)
    for folder, kind in ((RM_H_DIR, "helpfulness"), (RM_S_DIR, "safety")):
        r = res["rm"][f"{kind}/{c['margins']}"]
        card = f"""# llama2-lab-tiny-rm-{"helpful" if kind == "helpfulness" else "safety"}

A {kind} reward model (Llama 2 §3.2.2 in miniature): `llama2-lab-tiny-sft` with a scalar head
(`reward.RewardModel`: a Linear(256, 1) on the final normed hidden state of the reply's last token; the
body's `output` layer is the SFT model's and unused). Body in bfloat16 (`model.safetensors`), head in
float32 (`reward_head.safetensors`); load with `reward.load_reward_model(folder)`.

## What was trained

| | this model | Llama 2 [P2 §3.2.2] |
|---|---|---|
| init | `llama2-lab-tiny-sft` | a pretrained chat model checkpoint |
| data | {r["train_pairs"]:,} generated {kind} comparisons (`preferences.make_pairs`, kind "{kind}") with noisy labels | 1.4 M Meta comparisons + open data |
| loss | −log σ(r_c − r_r − m(r)), margins "{c["margins"]}" = {prefs.MARGINS[c["margins"]]} | same, Table 27 |
| epochs / batch | {c["rm_epochs"]} / {c["rm_batch"]} pairs | 1 / 512 pairs |
| LR | {c["rm_lr"]}, warmup 3 % (≥ 5 steps), cosine to 10 % | 1e-5 (5e-6 for 70B) |
| calibration | head bias shifted by {-r.get("calibration_shift", 0):+.3f} so the mean score of the training replies is 0 (σ = 0.5); needed for the 0.15 threshold of the combination | not described |

## Measured: accuracy on {r["test_pairs"]} held-out pairs, per rating (Table 8's layout)

{rm_table(res)}

Accuracy is against the held-out *labels*, which are noisy on purpose (`preferences.NOISE`): on
"negligibly better" pairs the label itself disagrees with the true score about a quarter of the time.
{common}"""
        atomic_write_text(out / folder / "MODEL_CARD.md", card)
