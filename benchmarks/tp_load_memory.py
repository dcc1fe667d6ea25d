"""Peak host memory per rank when a sharded checkpoint is loaded with tensor parallelism, measured
(a benchmark, not a test), next to the whole model loaded in one process.

1. A Meta-style folder of the chosen shape with ``--shards`` consolidated.NN.pth files (random bf16
   values; they do not matter for memory) is written shard by shard: the model is never whole in
   memory, only one shard's tensors at a time.
2. ``torchrun --nproc-per-node N`` runs this file as the worker: every rank calls
   ``parallel.load_parallel(folder, ctx, dtype=bf16)``, reads every weight it holds once (what the first
   forward pass does, so memory-mapped pages are really resident), and reports its peak RSS (VmHWM),
   its anonymous and file-backed parts, and the bytes of weights it holds.
3. The same folder is loaded whole in one process with ``checkpoint.load_model`` (load_memory.py's
   measuring child), for comparison.
4. The folder is deleted, whatever happens.

    python benchmarks/tp_load_memory.py                         # llama2-7b, 2 shards, N = 2: ~13.5 GB on disk
    python benchmarks/tp_load_memory.py --n-layers 4            # a 7B-wide model cut to 4 layers, quick
    python benchmarks/tp_load_memory.py --out build/tp_load_memory.json

Result on the 2-core, 23 GB CPU machine this was written on (llama2-7b shape, 2 shards, N = 2, bf16, 13.48 GB):
each rank peaked at 7.08 GB RSS (0.525 of the model: 6.74 GB of weights it holds, memory-mapped, plus the
0.24 GB interpreter), against 19.99 GB (1.48x) for ``checkpoint.load_model`` of the same folder in one
process, whose ``_merge_meta`` concatenates the two shards of every split tensor into new memory while
their mapped pages stay resident (file-backed pages the kernel could drop, which capped that peak here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from llama2_lab import formats as checkpoint  # noqa: E402
from llama2_lab.core.config import ModelArgs  # noqa: E402
from llama2_lab.formats import sharded as shards  # noqa: E402
from llama2_lab.inference import parallel  # noqa: E402
from llama2_lab.utils.io import atomic_path, atomic_write_text  # noqa: E402

_BLOCK = 1 << 24  # 16M random bf16 values, tiled into every tensor


def write_meta(folder: Path, args: ModelArgs, n_shards: int, seed: int = 0) -> int:
    """params.json + consolidated.NN.pth written one shard at a time; returns the weight bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    block = (torch.randn(_BLOCK, generator=gen) * 0.02).to(torch.bfloat16)
    shapes = shards.local_shapes(args, n_shards)
    total = 0
    for rank in range(n_shards):
        state = {}
        for name, shape in shapes.items():
            t = torch.empty(shape, dtype=torch.bfloat16)  # its own storage: torch.save writes it in full
            flat = t.view(-1)
            for start in range(0, flat.numel(), _BLOCK):
                k = min(_BLOCK, flat.numel() - start)
                flat[start : start + k] = block[:k]
            state[name] = t
            total += t.numel() * 2
        with atomic_path(folder / f"consolidated.{rank:02d}.pth") as tmp:
            torch.save(state, tmp)
        del state
    atomic_write_text(folder / "params.json", json.dumps(args.to_dict(), indent=2) + "\n")
    return total


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def worker(folder: str, out: str) -> None:
    """One torchrun process: load its slices, read them once, report its memory."""
    torch.set_num_threads(1)
    ctx = parallel.init_distributed("cpu")
    before = _status()
    t0 = time.perf_counter()
    model = parallel.load_parallel(folder, ctx, dtype=torch.bfloat16)
    load_s = time.perf_counter() - t0
    checksum = 0.0
    with torch.no_grad():
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            for chunk in local.detach().reshape(-1).split(1 << 22):
                checksum += float(chunk.float().sum())
    after = _status()
    row = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "load_s": load_s,
        "rss_before_load": before["VmRSS"],
        "vm_hwm": after["VmHWM"],
        "rss_after_touch": after["VmRSS"],
        "rss_anon": after["RssAnon"],
        "rss_file": after["RssFile"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "held": parallel.rank_weight_bytes(model),
        "checksum_finite": math.isfinite(checksum),
    }
    Path(out, f"rank{ctx.rank}.json").write_text(json.dumps(row))
    parallel.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shape", default="llama2-7b", help="a preset of llama2_lab.core.config.PRESETS (default llama2-7b)"
    )
    p.add_argument("--n-layers", type=int, help="override the preset's layer count (same width, fewer layers)")
    p.add_argument("--shards", type=int, default=2, help="consolidated.NN.pth files to write (default 2)")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes (default 2)")
    p.add_argument("--dir", default=str(ROOT / "build"), help="where the temporary folder goes")
    p.add_argument("--skip-whole", action="store_true", help="do not load the whole model in one process")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args(argv)

    args = ModelArgs.from_name(a.shape, **({"n_layers": a.n_layers} if a.n_layers else {}))
    shards.check_world_size(args, a.shards)
    weight_bytes = sum(math.prod(s) for s in checkpoint._expected_shapes(args).values()) * 2
    where = Path(a.dir)
    where.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(where).free < weight_bytes * 1.1:
        sys.exit(f"{where} has too little disk for {weight_bytes / 1e9:.1f} GB; use --dir or a smaller --n-layers.")
    tmp = Path(tempfile.mkdtemp(prefix="tp_load_memory_", dir=where))
    try:
        t0 = time.perf_counter()
        written = write_meta(tmp / "ckpt", args, a.shards)
        write_s = time.perf_counter() - t0
        # every shard carries its own copy of the norm gains, so the files hold a little more than the model
        assert written >= weight_bytes, (written, weight_bytes)
        reports = tmp / "reports"
        reports.mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(a.nproc),
                __file__,
                "--worker",
                str(tmp / "ckpt"),
                str(reports),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
        )
        if proc.returncode:
            raise RuntimeError(f"the torchrun workers failed:\n{proc.stderr[-3000:]}")
        ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(a.nproc)]
        whole = None
        avail = checkpoint.available_memory("cpu")
        if not a.skip_whole and avail is not None and avail < weight_bytes * 1.3:
            print(
                f"skipping the one-process load: {avail / 1e9:.1f} GB available, it needs about "
                f"{weight_bytes * 1.3 / 1e9:.1f} GB",
                file=sys.stderr,
            )
        elif not a.skip_whole:
            from load_memory import measure  # the one-process measuring child of load_memory.py

            whole = measure(tmp / "ckpt", "cpu")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    GB = 1e9
    print(
        f"{a.shape} ({args.n_layers} layers), Meta folder with {a.shards} shards, bf16: "
        f"{weight_bytes / GB:.2f} GB of weights, written in {write_s:.0f} s"
    )
    for r in ranks:
        held = r["held"]["sharded"] + r["held"]["replicated"]
        print(
            f"  rank {r['rank']} of {a.nproc}: peak RSS (VmHWM) {r['vm_hwm'] / GB:6.2f} GB = "
            f"{r['vm_hwm'] / weight_bytes:.3f} of the model; after reading every weight: anon "
            f"{r['rss_anon'] / GB:.2f} + file-backed {r['rss_file'] / GB:.2f} GB; holds {held / GB:.2f} GB "
            f"of weights; baseline {r['rss_before_load'] / GB:.2f} GB; load {r['load_s']:.1f} s"
        )
    if whole:
        print(
            f"  one process, load_model: peak RSS (VmHWM) {whole['vm_hwm'] / GB:6.2f} GB = "
            f"{whole['vm_hwm'] / weight_bytes:.3f} of the model; after reading: anon "
            f"{whole['rss_anon_after_touch'] / GB:.2f} + file-backed {whole['rss_file_after_touch'] / GB:.2f} GB; "
            f"load {whole['load_s']:.1f} s"
        )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            a.out,
            json.dumps(
                {
                    "shape": a.shape,
                    "n_layers": args.n_layers,
                    "shards": a.shards,
                    "nproc": a.nproc,
                    "weight_bytes": weight_bytes,
                    "write_s": write_s,
                    "ranks": ranks,
                    "whole": whole,
                },
                indent=2,
            )
            + "\n",
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
