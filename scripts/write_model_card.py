"""Write MODEL_CARD.md for a model trained by `llama2_lab.training` (run by scripts/make_tiny_model.sh).

Every number comes from the run's own loss_curve.json and the saved files; the two sample stories
are generated here from "Once upon a time" (greedy, and T = 0.8 with a fixed seed).

    .venv/bin/python scripts/write_model_card.py assets/models/llama2-lab-tiny [--note-file FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
from pathlib import Path

import torch
from copy_probe import name_copying  # scripts/copy_probe.py, beside this file

from llama2_lab.corpora import stories as data
from llama2_lab.formats import load_model, load_tokenizer
from llama2_lab.training import TrainConfig, repeated_token_losses, sample_text
from llama2_lab.utils.io import atomic_write_text

PROMPT = "Once upon a time"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def extension_section(folder: Path) -> tuple[str, float] | None:
    """Phase 3 (the context extension) from loss_curve_extension.json and loss_by_position.json, when
    the folder has them -> (Markdown section, its wall time in s)."""
    curve_file, pos_file = folder / "loss_curve_extension.json", folder / "loss_by_position.json"
    if not curve_file.is_file():
        return None
    curve = json.loads(curve_file.read_text())
    s, cfg = curve["summary"], TrainConfig.from_dict(curve["config"])
    pos = json.loads(pos_file.read_text())
    labels = list(pos["models"])
    first_train = next(r["train_loss"] for r in curve["rows"])
    table = "| positions | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n"
    n_bins = len(pos["models"][labels[0]]["binned"])
    table += "\n".join(
        f"| {i * pos['bin']}–{(i + 1) * pos['bin'] - 1} | "
        + " | ".join(f"{pos['models'][k]['binned'][i]:.3f}" for k in labels)
        + " |"
        for i in range(n_bins)
    )
    supplement = ""
    if cfg.supplement_share:
        supplement = (
            f", with {cfg.supplement_share:.0%} of the documents from `corpora/numbers.py`: counting stories "
            'written with digits ("3 plus 4 is 7") and stories whose characters shout in capitals, two things '
            "the stories never contain and the chat questions need (the tokenizer spells digits with byte "
            "tokens and capital words letter by letter: phases 1–2 never trained those tokens)"
        )
    probes = ""
    if "probes" in pos:
        rows = "\n".join(
            f"| {k} | {v['sum_accuracy']:.0%} | {v['loss_plain']:.3f} | {v['loss_shouted']:.3f} |"
            for k, v in pos["probes"].items()
        )
        probes = f"""
What the supplement taught (`scripts/context_extension.py`: `training.sum_accuracy`, greedy, the 100 sums
of two digits after `Mia said, "a plus b is`; `training.shout_loss`, mean loss per token on 40 held-out
stories as written and with every quoted line in capitals):

| model | sums right | loss, stories | loss, quotes shouted |
|---|---|---|---|
{rows}
"""
    text = f"""
## Phase 3: the context extended from 256 to {cfg.seq_len} positions

Llama 2 doubled Llama 1's context (2k -> 4k) by pretraining on longer rows (paper §2.2, Table 1); this
model was extended the same way, by continued pretraining of the phase-2 weights
(`--preset lab-tiny-long --init-from <phase-2 model>`) on the same stories packed into rows of
{cfg.seq_len + 1} tokens (several stories per row, BOS/EOS between them){supplement}, a fresh AdamW, {cfg.warmup_steps}
warmup steps to a peak LR of {cfg.lr:g}, cosine to {cfg.min_lr_ratio:.0%}: {s["step"]:,} steps of
{cfg.batch_size} × {cfg.seq_len} tokens ({s["tokens_seen"]:,} tokens), {s["wall_time_s"] / 60:.1f} min at
{s["tokens_per_s"]:,.0f} tokens/s. Train loss over the first {cfg.log_every} steps {first_train:.3f}
(positions past 256 were new), over the last {cfg.log_every} {s["train_loss"]:.3f}; validation loss on
1,024-token rows {s["val_loss"]:.3f}.

Loss by position on {pos["rows"]} rows of held-out stories packed to {pos["seq_len"]} tokens, mean per
{pos["bin"]} positions (`scripts/context_extension.py`; the phase-2 model reads them with a RoPE table
that reaches {pos["seq_len"]}, which has no weights to learn):

{table}

Before the extension the loss is fine up to position 255 and climbs past it: the model never saw
those rotation angles, so its attention there is noise (notebook 07 shows the same on a model you
train). After it the loss stays flat to the last position: every position of `max_seq_len` has been
trained. ![loss by position](loss_by_position.png) The phase-3 loss curve: `loss_curve_extension.png`.
{probes}"""
    return text, s["wall_time_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--note", default="", help="a paragraph about the run (e.g. machine contention)")
    p.add_argument("--note-file", type=Path, help="Markdown file whose text is used as --note")
    args = p.parse_args()
    folder = args.folder
    if args.note_file:
        args.note = args.note_file.read_text(encoding="utf-8").strip()
    torch.set_num_threads(1)

    curve = json.loads((folder / "loss_curve.json").read_text())
    s, cfg = curve["summary"], TrainConfig.from_dict(curve["config"])
    if not s:
        raise SystemExit(f"{folder}/loss_curve.json has no summary: the training run did not finish.")
    model = load_model(folder, device="cpu", dtype=torch.float32).eval()
    tok = load_tokenizer(folder)
    a = model.args
    n_params = model.num_params()
    size = (folder / "model.safetensors").stat().st_size
    dtype = next(model.parameters()).dtype
    first_val = next(r for r in curve["rows"] if r.get("val_loss") is not None)
    n_threads = cfg.num_threads or "torch default"
    threads_arg = f" --threads {cfg.num_threads}" if cfg.num_threads else ""
    n_names, name_logp, name_share = name_copying(model, tok)
    greedy = sample_text(model, tok, PROMPT, min(a.max_seq_len, 256), temperature=0.0)
    hot = sample_text(model, tok, PROMPT, min(a.max_seq_len, 256), temperature=0.8, top_p=0.9, seed=0)
    final_schedule = final_batch = ""
    if cfg.final_steps:
        fb = cfg.batch_size_at(cfg.max_steps)
        final_schedule = f", then {cfg.final_steps:,} steps at that floor ({cfg.lr * cfg.min_lr_ratio:g})"
        final_batch = f"; {fb} × {cfg.seq_len} = {fb * cfg.seq_len:,} in the final {cfg.final_steps:,} steps"
    rep_first, rep_second = repeated_token_losses(model)
    ext = extension_section(folder)
    total_min = (s["wall_time_s"] + (ext[1] if ext else 0)) / 60
    positions = (
        f"RoPE, theta {a.rope_theta:g}, max_seq_len {a.max_seq_len} (trained on {cfg.seq_len}-token rows in "
        f"phases 1–2, {a.max_seq_len}-token rows in phase 3)"
        if ext
        else f"RoPE, theta {a.rope_theta:g}, max_seq_len {a.max_seq_len}"
    )
    n_sample = min(a.max_seq_len, 256)

    card = f"""# llama2-lab-tiny

A {n_params / 1e6:.1f} M-parameter Llama 2, trained from scratch in about {total_min:.0f} minutes
on a 2-core CPU with the Llama 2 pretraining recipe (paper §2.2), on simple English stories written by
`llama2_lab.corpora.stories`. It is the model the course and `llama2-lab generate` use by default. It writes
short children's stories and nothing else: it knows a few hundred words and no facts.

## Architecture (Llama 2, small)

| | |
|---|---|
| dim / layers | {a.dim} / {a.n_layers} |
| heads / kv heads | {a.n_heads} / {a.kv_heads} ({a.attention_kind}: {a.n_rep} query heads share each key/value head, as in Llama 2 34B/70B) |
| head_dim | {a.head_dim} |
| FFN (SwiGLU) hidden | {a.hidden_dim} (multiple_of {a.multiple_of}) |
| norm | RMSNorm, eps {a.norm_eps}, pre-norm |
| positions | {positions} |
| vocab | {a.vocab_size} (SentencePiece BPE, Llama 2 trainer settings, byte fallback) |
| parameters | {n_params:,} (untied embedding and output) |
| file | `model.safetensors`, {dtype}, {size / 2**20:.1f} MiB; `params.json`; `tokenizer.model` |

## Data

- Training: the first {cfg.n_train_stories:,} stories of `llama2_lab.corpora.stories.train_stories` (seed
  `data.TRAIN_SEED`); each story is `BOS + story + EOS`, packed into rows of {cfg.seq_len + 1} tokens.
- Validation: {cfg.n_valid_stories:,} stories from `data.valid_stories` (seed `data.VALID_SEED`, never trained on).
- Tokenizer: `llama2_lab.text.tokenizer.train_tokenizer` on the first {cfg.tokenizer_docs:,} training stories,
  vocab {cfg.vocab_size}; a newline (between paragraphs) is byte token `<0x0A>`, as in Llama 2.

## Training (the Llama 2 recipe, scaled down)

| | this model | Llama 2 (§2.2) |
|---|---|---|
| optimizer | AdamW β=({cfg.beta1}, {cfg.beta2}), eps {cfg.eps:g} | same |
| weight decay | {cfg.weight_decay} (matrices only) | 0.1 |
| gradient clipping | {cfg.grad_clip} | 1.0 |
| schedule | {cfg.warmup_steps} warmup steps, cosine to {cfg.min_lr_ratio:.0%} of peak at step {cfg.max_steps:,}{final_schedule} | 2000 warmup steps, cosine to 10 % |
| peak LR | {cfg.lr:g} | 3e-4 (7B) |
| batch | {cfg.batch_size} × {cfg.seq_len} = {cfg.tokens_per_step:,} tokens{final_batch} | 4M tokens |
| steps | {s["step"]:,} | ~500k |
| tokens seen | {s["tokens_seen"]:,} | 2T |
| seed | {cfg.seed} | |

## Results{" (phases 1–2, on 256-token rows; phase 3 below)" if ext else ""}

| | |
|---|---|
| train loss (last {min(cfg.log_every, s["step"])} steps) | {s["train_loss"]:.3f} |
| validation loss | {s["val_loss"]:.3f} (first measured: {first_val["val_loss"]:.3f} at step {first_val["step"]}) |
| validation perplexity | {s["val_perplexity"]:.2f} |
| names copied from the context (`scripts/copy_probe.py`{", the shipped weights" if ext else ""}) | where a name comes back ({n_names} cases in 60 validation stories): mean log p(right name \\| a name) {name_logp:.2f} (uniform guess: {-math.log(len(data.GIRL_NAMES + data.BOY_NAMES)):.2f}); right name above 50 % in {name_share:.0%} |
| repeated random tokens{" (shipped weights)" if ext else ""} | loss {rep_first:.2f} on the first copy, {rep_second:.2f} on the second |
| wall time | {s["wall_time_s"]:.0f} s ({s["wall_time_s"] / 60:.1f} min) |
| throughput | {s["tokens_per_s"]:,.0f} tokens/s |
| hardware | 2-core CPU, {cpu_name()}, torch threads: {n_threads} |
| software | torch {torch.__version__}, Python {platform.python_version()} |

![loss curve](loss_curve.png) — the numbers behind it are in `loss_curve.json`.

{args.note}
{ext[0] if ext else ""}
## Samples (prompt "{PROMPT}", up to {n_sample} tokens)

Greedy (`llama2-lab generate --prompt "{PROMPT}" --temperature 0`):

> {greedy.replace(chr(10), chr(10) + "> ")}

Temperature 0.8, top-p 0.9, seed 0:

> {hot.replace(chr(10), chr(10) + "> ")}

## Reproduce

```bash
scripts/make_tiny_model.sh          # = python -m llama2_lab.training --preset lab-tiny --out runs/lab-tiny-256{threads_arg}
                                    #   (phases 1-2), then --preset lab-tiny-long --init-from runs/lab-tiny-256
                                    #   (phase 3), copied into {folder.as_posix()}; then
                                    #   scripts/context_extension.py and scripts/write_model_card.py
```

Training is deterministic for a given seed, thread count and torch build; on other machines the
weights differ by float rounding and the losses agree to about two decimals.

## Licence

MIT, like the rest of llama2-lab. Trained from scratch on text generated by this project's own code:
no Meta weights and no third-party data are involved. Llama 2 is a trademark of Meta; this is an
independent, tiny model with the Llama 2 architecture, made for teaching.
"""
    atomic_write_text(folder / "MODEL_CARD.md", card)
    print(f"wrote {folder / 'MODEL_CARD.md'}: ppl {s['val_perplexity']:.2f}, {n_params:,} params")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
