"""Did the context extension work? Loss by position before and after (run by scripts/make_tiny_model.sh).

    .venv/bin/python scripts/context_extension.py runs/lab-tiny-256 assets/models/llama2-lab-tiny

Both models read the same validation rows of 1,024 tokens: held-out stories packed back to back with
BOS/EOS between them (`llama2_lab.corpora.stories.chunk_tensor`), so every position sees the same mix of
text. The 256-position model gets a RoPE table that reaches 1,024 (`training.with_context`; RoPE has no
weights) and shows what a model does past the positions it was trained on. Writes, beside the extended
model: `loss_by_position.json` (the per-position curves and their 128-position bins) and
`loss_by_position.png`, and prints the Markdown table the model card quotes. It also probes what the
phase's supplement taught (`training.sum_accuracy`, `training.shout_loss`): the 100 sums of two digits,
and the loss on 40 held-out stories with their quoted lines as written and shouted in capitals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from llama2_lab.corpora import stories as data
from llama2_lab.formats import load_model, load_tokenizer
from llama2_lab.training import loss_by_position, shout_loss, sum_accuracy, with_context
from llama2_lab.utils.io import atomic_path, atomic_write_text

BIN = 128


def validation_rows(tok, seq_len: int, n_stories: int) -> torch.Tensor:
    """Held-out stories (data.valid_stories: never trained on), packed into (N, seq_len + 1) rows."""
    ids = [tok.encode(s) for s in data.valid_stories(n_stories)]
    return data.chunk_tensor(ids, seq_len, tok.bos_id, tok.eos_id)


def binned(curve: torch.Tensor, size: int = BIN) -> list[float]:
    return [float(curve[i : i + size].mean()) for i in range(0, len(curve), size)]


def plot(curves: dict[str, torch.Tensor], trained: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    for (label, curve), color in zip(curves.items(), ("tab:red", "tab:blue")):
        smooth = torch.nn.functional.avg_pool1d(curve[None, None], 16, 16)[0, 0]  # 16-position means
        ax.plot(torch.arange(len(smooth)) * 16 + 8, smooth, color=color, label=label)
        ax.axvline(trained[label], color=color, ls=":", lw=1)
    ax.set(
        xlabel="position in the row",
        ylabel="validation loss (mean of 16 positions)",
        title="Loss by position on packed held-out stories",
        yscale="log",
    )
    ticks = [0.2, 0.5, 1, 2, 5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("short", type=Path, help="the model before the extension (256 positions)")
    p.add_argument("extended", type=Path, help="the extended model; the results are written here")
    p.add_argument("--stories", type=int, default=300, help="held-out stories packed into rows")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    short, extended = load_model(args.short), load_model(args.extended)
    tok = load_tokenizer(args.extended, required=True)
    T = extended.args.max_seq_len
    rows = validation_rows(tok, T, args.stories)
    labels = {
        f"before: trained on {short.args.max_seq_len} positions": (with_context(short, T), short.args.max_seq_len),
        f"after: extended to {T} positions": (extended, T),
    }
    curves = {label: loss_by_position(m, rows) for label, (m, _) in labels.items()}
    trained = {label: n for label, (_, n) in labels.items()}
    # What the phase's supplement (corpora/numbers.py) taught: sums and shouted lines, before and after.
    stories = list(data.valid_stories(40))
    probes = {}
    for label, (m, _) in labels.items():
        plain, shouted = shout_loss(m, tok, stories)
        probes[label] = {"sum_accuracy": sum_accuracy(m, tok), "loss_plain": plain, "loss_shouted": shouted}
    result = {
        "rows": len(rows),
        "seq_len": T,
        "bin": BIN,
        "models": {label: {"trained_positions": trained[label], "binned": binned(c)} for label, c in curves.items()},
        "probes": probes,
        "curves": {label: [round(float(x), 5) for x in c] for label, c in curves.items()},
    }
    atomic_write_text(args.extended / "loss_by_position.json", json.dumps(result, indent=1) + "\n")
    plot(curves, trained, args.extended / "loss_by_position.png")
    head = "| positions | " + " | ".join(curves) + " |\n|---|" + "---|" * len(curves) + "\n"
    lines = [
        f"| {i * BIN}–{(i + 1) * BIN - 1} | "
        + " | ".join(f"{result['models'][k]['binned'][i]:.3f}" for k in curves)
        + " |"
        for i in range(T // BIN)
    ]
    print(f"{len(rows)} held-out rows of {T} tokens (mean loss per 128 positions)\n")
    print(head + "\n".join(lines))
    for label, v in probes.items():
        print(
            f"{label}: sums right {v['sum_accuracy']:.0%}; loss on stories {v['loss_plain']:.3f}, shouted {v['loss_shouted']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
