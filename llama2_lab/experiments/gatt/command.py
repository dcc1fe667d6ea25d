"""``llama2-lab gatt``: options -> GattConfig -> the pipeline, then the headline numbers."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from .config import ARM_LABELS, ARMS, PRESETS, GattConfig, _models_dir
from .pipeline import run_pipeline


def add_gatt_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`llama2-lab gatt` options (registered by the cli package)."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="full: 3 seeds, 200 dialogues x 20 turns per arm; ship: the shipped models' run "
        "(1 seed); fast: CI size (default: full, or fast when LLAMA2_LAB_FAST=1)",
    )
    parser.add_argument("--fast", action="store_true", help="same as --preset fast")
    parser.add_argument(
        "--mode",
        choices=("sampled", "oracle"),
        default=None,
        help="GAtt replies: sampled from the model with rejection sampling (default, the paper) "
        "or deterministic oracle rewrites (faster)",
    )
    parser.add_argument("--base", default=None, help="pretrained model folder (default: the shipped llama2-lab-tiny)")
    parser.add_argument(
        "--start-from",
        default=None,
        metavar="CHAT_MODEL",
        help="skip stage 1 and start both arms from this chat model, as the paper samples GAtt data from the "
        "latest RLHF model (e.g. assets/models/llama2-lab-tiny-sft from `llama2-lab rlhf`)",
    )
    parser.add_argument("--out-dir", default=None, help="where the two chat model folders go (default: assets/models)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> GattConfig:
    """The preset (--fast, or LLAMA2_LAB_FAST=1 when no --preset is given) with the overrides."""
    name = "fast" if args.fast else args.preset or ("fast" if os.environ.get("LLAMA2_LAB_FAST") == "1" else "full")
    cfg = PRESETS[name]
    changes = {
        k: v
        for k, v in (
            ("mode", args.mode),
            ("base", args.base),
            ("stage1", args.start_from),
            ("out_dir", args.out_dir),
            ("steps", args.steps),
            ("threads", args.threads),
        )
        if v is not None
    }
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.no_progress:
        changes["progress"] = False
    for k in ("steps", "threads"):  # checked before any work, so `llama2-lab gatt` refuses them in one line
        if k in changes and changes[k] < 1:
            raise ValueError(f"--{k} must be >= 1, got {changes[k]}.")
    if "stage1" in changes and not (Path(changes["stage1"]) / "params.json").is_file():
        raise ValueError(
            f"--start-from {changes['stage1']}: not a model folder (no params.json); "
            "make the RLHF models with `llama2-lab rlhf`, or give another chat model."
        )
    if any(s < 0 for s in changes.get("seeds", ())):
        raise ValueError(f"--seeds must be >= 0, got {list(changes['seeds'])}.")
    return replace(cfg, **changes)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for `llama2-lab gatt`: run the pipeline, print the headline numbers -> exit code."""
    cfg = config_from_args(args)
    res = run_pipeline(cfg)
    h = res["summary"]["headline"]
    print(f"wall time {res['wall_minutes']:.1f} min; GAtt replies: {cfg.mode}")
    for arm in ARMS:
        deep = next(v for k, v in h[arm].items() if k.startswith("turns"))
        print(
            f"  {ARM_LABELS[arm]:38s} turn 1 {h[arm]['turn1']:.2f}   deep turns {deep[0]:.2f} "
            f"[{deep[1]:.2f}, {deep[2]:.2f}]"
        )
    print(f"models, cards and figures in {_models_dir(cfg)}/llama2-lab-tiny-chat{{,-gatt}}")
    return 0


def main(argv=None) -> int:
    """`python -m llama2_lab.gatt [--fast] ...`, the same as `llama2-lab gatt`."""
    parser = add_gatt_arguments(argparse.ArgumentParser(prog="llama2-lab gatt", description=__doc__.split("\n")[0]))
    return run_from_args(parser.parse_args(argv))
