"""What each torchrun process runs for tests/test_parallel.py (not a test file itself).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/parallel_worker.py OUT \
        [--tp FOLDER...] [--errors FOLDER...] [--train]

--tp       tensor-parallel load of each folder: logits of fixed tokens, bytes per rank, and 64 greedy
           tokens from the first folder's model
--errors   load each (broken) folder and record the error every rank raises
--train    FSDP2 training: a straight run, a run that crashes after step 3's checkpoint, and its resume
Everything runs in one launch (starting processes is the slow part); results go to OUT/rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llama2_lab.inference import parallel  # noqa: E402

TOKENS = [1, 9, 52, 7, 300, 41, 1000, 2000, 5, 66, 77, 88]  # any ids < 2048 (the shipped model's vocab)
PROMPT = [1, 52, 7, 300]
N_GREEDY = 64


def run_tp(ctx, folders: list[str]) -> dict:
    from llama2_lab.inference import generate

    out = {}
    for i, folder in enumerate(folders):
        model = parallel.load_parallel(folder, ctx)
        with torch.inference_mode():
            logits = model(torch.tensor([TOKENS]))  # (1, T, V), all-gathered: the same on every rank
        # decoding costs the most time: only the first folder's model generates
        greedy = list(generate(model, PROMPT, N_GREEDY, temperature=0.0, eos_id=None)) if i == 0 else None
        attn = model.layers[0].attention
        out[folder] = {
            "logits": logits.clone(),
            "greedy": greedy,
            "bytes": parallel.rank_weight_bytes(model),
            "local_heads": (attn.n_heads, attn.n_kv_heads),
            "wq_local": model.layers[0].attention.wq.weight.to_local().clone(),
        }
    return out


class Crash(RuntimeError):
    pass


def run_train(ctx, out_dir: Path) -> dict:
    from llama2_lab import training as tr

    def cfg(name):
        return tr.TrainConfig.from_preset(
            "test",
            max_steps=6,
            log_every=1,
            eval_every=3,
            checkpoint_every=3,
            checkpoint_path=str(out_dir / f"{name}.pt"),
            device="cpu",
        )

    data = tr.prepare_data(cfg("straight"))  # the same on every rank: seeded tokenizer and rows
    straight = tr.train(cfg("straight"), progress=False, data=data)

    def crash_at_4(row):
        if row["step"] == 4:  # step 3's checkpoint is on disk, step 4's work is lost (on every rank)
            raise Crash

    try:
        tr.train(cfg("crashed"), progress=False, callback=crash_at_4, data=data)
    except Crash:
        pass
    resumed = tr.train(cfg("crashed"), progress=False, resume=True, data=data)
    return {
        "straight": straight.model.state_dict(),
        "straight_history": straight.history,
        "resumed": resumed.model.state_dict(),
        "resumed_history": resumed.history,
        "tokens_seen": (straight.tokens_seen, resumed.tokens_seen),
    }


def run_errors(ctx, folders: list[str]) -> dict:
    out = {}
    for folder in folders:
        try:
            parallel.load_parallel(folder, ctx)
            out[folder] = None
        except ValueError as e:
            out[folder] = f"{type(e).__name__}: {e}"
    return out


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--tp", nargs="*", default=[])
    p.add_argument("--errors", nargs="*", default=[])
    p.add_argument("--train", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    ctx = parallel.init_distributed("cpu")
    result = {
        "tp": run_tp(ctx, a.tp),
        "errors": run_errors(ctx, a.errors),
        "train": run_train(ctx, a.out) if a.train else None,
    }
    torch.save(result, a.out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    main()
