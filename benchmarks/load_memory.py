"""Peak host memory while loading a Llama-2-7B-sized checkpoint, measured (a benchmark, not a test).

``checkpoint.load_model`` builds the model on the meta device and assigns the tensors one by one
(gpt-fast's recipe), so loading should need about the weights' bytes and no more: the target is a
peak resident set <= 1.2x the weight bytes.

1. A checkpoint of the chosen shape (random bf16 values; the values do not matter for memory) is
   written to a temporary folder WITHOUT ever holding the model in memory: the safetensors file is
   written by hand, tensor by tensor (8-byte little-endian header length, a JSON header with
   dtype/shape/data_offsets, then the raw bytes; offsets count from the end of the header).
2. A fresh Python process calls ``load_model(folder, dtype=torch.bfloat16)`` and reports its peak
   RSS (``getrusage`` ru_maxrss and /proc/self/status VmHWM), the peak of its anonymous and
   file-backed parts (sampled every 20 ms), and the load time.
3. The folder is deleted, whatever happens.

    python benchmarks/load_memory.py                       # llama2-7b, ~13.5 GB on disk, ~14 GB RAM
    python benchmarks/load_memory.py --shape lab-tiny      # a quick check
    python benchmarks/load_memory.py --n-layers 8          # a 7B-shaped model cut to 8 layers
    python benchmarks/load_memory.py --format hf --out build/load_memory_hf.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from llama2_lab import formats as checkpoint  # noqa: E402
from llama2_lab.core.config import ModelArgs  # noqa: E402
from llama2_lab.utils.io import atomic_write_text  # noqa: E402

_BLOCK = 1 << 24  # elements of random bf16 reused for every tensor (32 MiB): writing stays pure I/O


def tensor_table(args: ModelArgs, fmt: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every weight, under the project's (Meta's) or Hugging Face's names."""
    table = list(checkpoint._expected_shapes(args).items())
    if fmt == "hf":
        table = [(checkpoint.meta_to_hf_name(n), s) for n, s in table]
    return table


def write_safetensors(path: Path, table: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """Write a bf16 safetensors file tensor by tensor; at most one 32 MiB block is ever in memory.

    Returns the bytes of tensor data written.
    """
    header, offset = {}, 0
    for name, shape in table:
        n = math.prod(shape) * 2  # bf16: 2 bytes
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned
    gen = torch.Generator().manual_seed(seed)
    block = (torch.randn(_BLOCK, generator=gen) * 0.02).to(torch.bfloat16).view(torch.int16).numpy()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _name, shape in table:
            left = math.prod(shape)
            while left:
                k = min(left, _BLOCK)
                f.write(block[:k].data)  # a view, no copy
                left -= k
    return offset


def write_checkpoint(folder: Path, args: ModelArgs, fmt: str) -> int:
    """A project folder (params.json + model.safetensors) or an HF one (config.json + model.safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    nbytes = write_safetensors(folder / "model.safetensors", tensor_table(args, fmt))
    if fmt == "hf":
        cfg = json.dumps(checkpoint.hf_config(args, torch.bfloat16), indent=2)
        atomic_write_text(folder / "config.json", cfg + "\n")
    else:
        atomic_write_text(folder / "params.json", json.dumps(args.to_dict(), indent=2) + "\n")
    return nbytes


# --- the measuring child ------------------------------------------------------------------------------
_CHILD = r"""
import json, resource, sys, threading, time
sys.path.insert(0, sys.argv[3])
import torch
torch.set_num_threads(1)

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out

peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
done = threading.Event()
def sample():
    while not done.is_set():
        s = status()
        for k in peaks:
            peaks[k] = max(peaks[k], s.get(k, 0))
        time.sleep(0.02)

from llama2_lab import formats as checkpoint
before = status()
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
model = checkpoint.load_model(sys.argv[1], device=sys.argv[2], dtype=torch.bfloat16)
seconds = time.perf_counter() - t0
after = status()
# safetensors may hand back tensors that still live in the file's memory map, paged in only when read:
# read every weight once (what the first forward pass does) and measure again.
t1 = time.perf_counter()
with torch.no_grad():
    checksum = 0.0
    for p in model.parameters():  # in 4M-element chunks: no full float32 copy of any weight
        for chunk in p.detach().reshape(-1).split(1 << 22):
            checksum += float(chunk.float().sum())
touch_s = time.perf_counter() - t1
done.set()
touched = status()
print(json.dumps({
    "load_s": seconds, "rss_before_load": before["VmRSS"], "rss_after_load": after["VmRSS"],
    "vm_hwm_load": after["VmHWM"], "touch_s": touch_s, "rss_after_touch": touched["VmRSS"],
    "rss_anon_after_touch": touched["RssAnon"], "rss_file_after_touch": touched["RssFile"],
    "vm_hwm": touched["VmHWM"], "checksum_finite": checksum == checksum, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "peak_rss_anon_sampled": peaks["RssAnon"], "peak_rss_file_sampled": peaks["RssFile"],
    "params": model.num_params(), "dtype": str(model.output.weight.dtype),
    "device": str(model.output.weight.device),
    "cuda_peak_allocated": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
}))
"""


def measure(folder: Path, device: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), device, str(ROOT)], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode:
        raise RuntimeError(f"the loading process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shape", default="llama2-7b", help="a preset from llama2_lab.core.config.PRESETS (default llama2-7b)"
    )
    p.add_argument("--n-layers", type=int, help="override the preset's layer count (a smaller, same-width model)")
    p.add_argument("--format", choices=["project", "hf"], default="project")
    p.add_argument("--device", default="cpu", help="where load_model puts the weights (cpu or cuda)")
    p.add_argument("--dir", default=str(ROOT / "build"), help="where the temporary checkpoint folder goes")
    p.add_argument("--out", help="write the result as JSON here")
    args_ns = p.parse_args(argv)

    overrides = {"n_layers": args_ns.n_layers} if args_ns.n_layers else {}
    args = ModelArgs.from_name(args_ns.shape, **overrides)
    weight_bytes = sum(math.prod(s) for _, s in tensor_table(args, "project")) * 2
    where = Path(args_ns.dir)
    where.mkdir(parents=True, exist_ok=True)
    free_disk = shutil.disk_usage(where).free
    if free_disk < weight_bytes * 1.1:
        sys.exit(
            f"{where} has {free_disk / 1e9:.1f} GB free but the checkpoint needs {weight_bytes / 1e9:.1f} GB; "
            "pass --dir on a bigger disk or a smaller --shape / --n-layers."
        )
    avail = checkpoint.available_memory("cpu")
    if avail is not None and avail < weight_bytes * 1.15:
        sys.exit(
            f"only {avail / 1e9:.1f} GB of memory is available but loading needs about {weight_bytes / 1e9:.1f} GB; "
            "wait for a quieter machine or use a smaller --shape / --n-layers."
        )

    tmp = Path(tempfile.mkdtemp(prefix="load_memory_", dir=where))
    try:
        t0 = time.perf_counter()
        data_bytes = write_checkpoint(tmp, args, args_ns.format)
        write_s = time.perf_counter() - t0
        assert data_bytes == weight_bytes, (data_bytes, weight_bytes)
        m = measure(tmp, args_ns.device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # VmHWM is this process's own high-water mark. ru_maxrss can also carry the parent's resident set
    # from before exec (Linux keeps the larger), so it is reported but not used for the ratio.
    peak, base = m["vm_hwm"], m["rss_before_load"]  # base: Python + torch + the package, no weights yet
    result = {
        "shape": args_ns.shape,
        "n_layers": args.n_layers,
        "format": args_ns.format,
        "device": args_ns.device,
        "params": m["params"],
        "weight_bytes": weight_bytes,
        "write_s": write_s,
        **m,
        "peak_rss": peak,
        "ratio_peak_to_weights": peak / weight_bytes,
        "ratio_peak_minus_baseline_to_weights": (peak - base) / weight_bytes,
        "target_ratio": 1.2,
        "memory_available_at_start": avail,
    }
    GB = 1e9
    print(
        f"{args_ns.shape} ({args.n_layers} layers, {args_ns.format} format) -> load_model(dtype=bf16, device={args_ns.device})"
    )
    print(f"  weights              {weight_bytes / GB:8.2f} GB  ({m['params']:,} params)")
    print(f"  write (by hand)      {write_s:8.1f} s")
    print(f"  load_model           {m['load_s']:8.1f} s   then reading every weight once {m['touch_s']:.1f} s")
    print(f"  RSS before load      {base / GB:8.2f} GB  (interpreter + torch)")
    print(f"  RSS after load       {m['rss_after_load'] / GB:8.2f} GB  (peak so far {m['vm_hwm_load'] / GB:.2f} GB)")
    print(
        f"  RSS after reading    {m['rss_after_touch'] / GB:8.2f} GB  = anon {m['rss_anon_after_touch'] / GB:.2f}"
        f" + file-backed (mmap) {m['rss_file_after_touch'] / GB:.2f}"
    )
    print(
        f"  peak RSS (VmHWM)     {peak / GB:8.2f} GB  (sampled peaks: anon {m['peak_rss_anon_sampled'] / GB:.2f}, "
        f"file {m['peak_rss_file_sampled'] / GB:.2f}; ru_maxrss {m['ru_maxrss'] / GB:.2f})"
    )
    print(
        f"  peak / weights       {result['ratio_peak_to_weights']:8.3f}   (target <= 1.2; "
        f"{result['ratio_peak_minus_baseline_to_weights']:.3f} without the interpreter's baseline)"
    )
    if args_ns.out:
        Path(args_ns.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args_ns.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
