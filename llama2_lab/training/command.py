"""``llama2-lab train`` (wired in the cli package): options -> TrainConfig -> train, with a progress table."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..utils.validate import at_least
from .config import PRESETS, TrainConfig, TrainError
from .pretrain import prepare_outputs, train
from .probes import sample_text


# Command line (`llama2-lab train`, wired in the cli package; also `python -m llama2_lab.training`)
# ----------------------------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `llama2-lab train`."""
    p = parser
    p.add_argument(
        "--preset",
        default="fast",
        choices=sorted(PRESETS),
        help="model size and recipe: 'fast' (~2 min on 2 cores), 'lab-tiny' (the shipped "
        "model's 256-position phase, ~100 min on 2 idle cores), 'lab-tiny-long' (its extension to 1024 "
        "positions, with --init-from), 'test' (seconds)",
    )
    p.add_argument(
        "--init-from",
        metavar="DIR",
        help="continue pretraining this model folder (same shape; e.g. a longer --seq-len to extend its context)",
    )
    p.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead of the generated stories")
    p.add_argument(
        "--out", metavar="DIR", help="folder for the model, tokenizer and loss curve (default: runs/<preset>)"
    )
    p.add_argument("--steps", type=int, action=at_least(1), help="optimizer steps (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, action=at_least(0), help="warmup steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, action=at_least(1), help="sequences per step B (default: the preset's)")
    p.add_argument(
        "--final-steps",
        type=int,
        action=at_least(0),
        help="steps of a last phase at the floor LR (default: the preset's)",
    )
    p.add_argument("--final-batch-size", type=int, action=at_least(1), help="sequences per step in that last phase")
    p.add_argument("--seq-len", type=int, action=at_least(1), help="tokens per sequence T (default: the preset's)")
    p.add_argument("--vocab-size", type=int, action=at_least(1), help="tokenizer vocabulary (default: the preset's)")
    p.add_argument("--stories", type=int, action=at_least(1), help="generated training stories (default: the preset's)")
    p.add_argument("--eval-every", type=int, action=at_least(0), help="steps between validations")
    p.add_argument(
        "--checkpoint-every", type=int, action=at_least(0), help="steps between checkpoints (0 = at the end only)"
    )
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint file (default: OUT/checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run from its checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, action=at_least(1), help="torch CPU threads (default: torch's, one per core)")
    p.add_argument(
        "--seed", type=int, action=at_least(0), help="seed for init, data order and tokenizer (default: the preset's)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.add_argument(
        "--samples",
        type=int,
        action=at_least(0),
        default=120,
        help="tokens of the greedy and T=0.8 samples printed at the end (0 = none)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        "text_file": args.text,
        "init_from": args.init_from,
        "max_steps": args.steps,
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "batch_size": args.batch_size,
        "final_steps": args.final_steps,
        "final_batch_size": args.final_batch_size,
        "seq_len": args.seq_len,
        "vocab_size": args.vocab_size,
        "n_train_stories": args.stories,
        "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_path": args.checkpoint,
        "num_threads": args.threads,
        "seed": args.seed,
        "device": args.device,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["out_dir"] = args.out or str(Path("runs") / args.preset)
    return TrainConfig.from_preset(args.preset, **overrides)


def run_from_args(args: argparse.Namespace) -> int:
    """Run `llama2-lab train`; returns the exit code (2 for a bad request, with the reason on stderr)."""
    try:
        cfg = config_from_args(args)
        if args.text and not Path(args.text).is_file():
            raise TrainError(f"--text {args.text}: no such file.")
        prepare_outputs(cfg)  # --out an existing file: refused before the banner, not after training
        final = (
            f" + {cfg.final_steps} steps of {cfg.batch_size_at(cfg.max_steps) * cfg.seq_len:,} tokens"
            if cfg.final_steps
            else ""
        )
        print(
            f"training {cfg.preset}: {cfg.model_args().attention_kind} "
            f"{_shape(cfg)}, {cfg.max_steps} steps of {cfg.tokens_per_step:,} tokens{final} -> {cfg.out_dir}",
            file=sys.stderr,
        )
        result = train(
            cfg, progress=not args.no_progress, resume=args.resume, callback=_print_row if args.no_progress else None
        )
    except (TrainError, ValueError, FileNotFoundError) as err:
        print(f"llama2-lab train: error: {err}", file=sys.stderr)
        return 2
    s = result.summary()
    print(
        f"done: {s['step']} steps, {s['tokens_seen']:,} tokens, {s['params']:,} params, "
        f"train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f} (ppl {s['val_perplexity']:.2f}), "
        f"{s['wall_time_s']:.0f} s, {s['tokens_per_s']:,.0f} tokens/s"
    )
    print(f"saved to {cfg.out_dir}")
    if args.samples:
        for label, temp in (("greedy", 0.0), ("T=0.8", 0.8)):
            text = sample_text(
                result.model, result.tokenizer, "Once upon a time", args.samples, temperature=temp, seed=cfg.seed
            )
            print(f"\n--- sample ({label}) ---\n{text}")
    return 0


def _print_row(row: dict) -> None:
    """One log line per logged step, for runs without a progress bar (nohup, CI)."""
    val = f" val {row['val_loss']:.4f} (ppl {math.exp(row['val_loss']):.2f})" if row["val_loss"] is not None else ""
    print(
        f"step {row['step']:>6}  tokens {row['tokens']:>11,}  train {row['train_loss']:.4f}{val}  "
        f"lr {row['lr']:.2e}  {row['tokens_per_s']:,.0f} tok/s  {row['elapsed']:.0f} s",
        flush=True,
    )


def _shape(cfg: TrainConfig) -> str:
    from ..core.calc import count_params

    a = cfg.model_args()
    return (
        f"dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads / {a.kv_heads} kv heads, "
        f"vocab {a.vocab_size}, {count_params(a)['total']:,} params"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama2_lab.train", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
