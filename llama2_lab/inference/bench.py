"""Speed and memory benchmark: the project's model (eager and compiled) next to Hugging Face.

A benchmark, not a test: it measures, prints a table with ratios and the memory-bandwidth bound,
and writes JSON. Decode at batch 1 reads every weight once per token, so its ceiling is
    bound (tokens/s) = device copy bandwidth (bytes/s) / weight bytes per token.
Run: ``llama2-lab bench`` (CPU: the shipped tiny model; CUDA: a Llama-2-7B-shaped model with random
bf16 weights — decode speed does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from ..core.config import ModelArgs
from ..core.transformer import Transformer
from ..utils.validate import at_least


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 5) -> float:
    """Measured device-to-device copy bandwidth in bytes/s, counting read + write (median of repeats)."""
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)  # the values do not matter to a copy
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * nbytes / statistics.median(times)


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes read per decoded token at batch 1: every weight matrix except the embedding table (a gather)."""
    total = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "tok_embeddings.weight")
    emb = model.tok_embeddings.weight if hasattr(model, "tok_embeddings") else None
    return total + (emb[0].numel() * emb.element_size() if emb is not None else 0)


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    except (ImportError, AttributeError):
        return None


def bench_project(
    model: Transformer, prompt: torch.Tensor, new_tokens: int, compile: bool = False, repeats: int = 3
) -> dict:
    """Prefill tokens/s, time to first token, decode tokens/s for a greedy run of ``new_tokens``.

    prompt (B, P) on the model's device. Uses the same code path as ``generate`` (prefill, then one
    token at a time against a KV cache sized to the request).
    """
    from .fast import compiled_decoder

    device = prompt.device
    B, P = prompt.shape
    max_len = P + new_tokens
    runs = []
    for r in range(repeats + 1):  # the first run warms up (and compiles)
        with torch.inference_mode():
            _sync(device)
            t0 = time.perf_counter()
            if compile:
                dec = compiled_decoder(model, B, max_len)
                logits = dec.prefill(prompt)
            else:
                cache = model.new_cache(B, max_len)
                logits = model(prompt, 0, cache)[:, -1]  # (B, V)
            token = logits.argmax(-1, keepdim=True)  # (B, 1)
            _sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            for i in range(new_tokens - 1):
                if compile:
                    logits = dec.decode(token, P + i)
                else:
                    logits = model(token, P + i, cache)[:, -1]
                token = logits.argmax(-1, keepdim=True)
            _sync(device)
            t2, c2 = time.perf_counter(), time.process_time()
        if r:
            runs.append((t1 - t0, t2 - t1, c2 - c1))
    ttft = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    return _rates(device, B, P, new_tokens, ttft, decode, statistics.median(r[2] for r in runs))


def _rates(device, B, P, new_tokens, ttft, decode, decode_cpu) -> dict:
    out = {"ttft_s": ttft, "prefill_tok_s": B * P / ttft, "decode_tok_s": B * (new_tokens - 1) / max(decode, 1e-9)}
    if device.type == "cpu":  # CPU time ignores waiting for a core: steadier on a shared machine
        out["decode_tok_s_cpu_time"] = B * (new_tokens - 1) / max(decode_cpu, 1e-9)
    return out


def bench_hf(
    hf_model, prompt: torch.Tensor, new_tokens: int, cache_implementation: str | None = None, repeats: int = 3
) -> dict:
    """Hugging Face ``generate`` (greedy, exactly ``new_tokens``): total time -> decode tokens/s.

    Prefill is timed separately with a 1-token generate, and subtracted.
    """
    device = prompt.device
    B, P = prompt.shape
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if cache_implementation:
        kwargs["cache_implementation"] = cache_implementation

    def timed(n):  # -> (wall seconds, CPU seconds)
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            hf_model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kwargs)
        _sync(device)
        return time.perf_counter() - t, time.process_time() - c

    timed(new_tokens), timed(1)  # warm-up both lengths (HF compiles the static-cache decode step on CUDA)
    first = [timed(1) for _ in range(repeats)]
    whole = [timed(new_tokens) for _ in range(repeats)]
    ttft, ttft_cpu = (statistics.median(x[i] for x in first) for i in (0, 1))
    total, total_cpu = (statistics.median(x[i] for x in whole) for i in (0, 1))
    return _rates(device, B, P, new_tokens, ttft, total - ttft, total_cpu - ttft_cpu)


def hf_twin(model: Transformer):
    """The same weights in a transformers ``LlamaForCausalLM`` on the same device, built in memory.

    Names are mapped and wq/wk permuted by the project's own converter (formats/hf.py).
    """
    import transformers

    from ..core.rope import permute_to_hf
    from ..formats import hf_config, meta_to_hf_name

    a, w = model.args, model.output.weight
    cfg = {k: v for k, v in hf_config(a, w.dtype).items() if k not in ("architectures", "model_type", "torch_dtype")}
    with torch.device(w.device):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).to(w.dtype).eval()
    state = {}
    for name, t in model.state_dict().items():
        if name.endswith("attention.wq.weight"):
            t = permute_to_hf(t, a.n_heads)
        elif name.endswith("attention.wk.weight"):
            t = permute_to_hf(t, a.kv_heads)
        state[meta_to_hf_name(name)] = t
    hf.load_state_dict(state, strict=True)
    return hf


def random_model(shape: str, device: torch.device, max_seq_len: int) -> Transformer:
    """A model of a preset's shape with random weights: bf16 on CUDA, float32 elsewhere."""
    args = ModelArgs.from_name(shape, max_seq_len=max_seq_len)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to(dtype).to_empty(device=device)  # allocated once, directly in the target dtype
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # decode speed does not depend on the values
            p.normal_(0, 0.02, generator=gen) if p.dim() > 1 else p.fill_(1.0)
    model.reset_rope(device)
    return model.eval()


def run(
    device: str | None = None,
    shape: str | None = None,
    prompt_len: int = 64,
    new_tokens: int = 128,
    batches=(1, 8),
    compile: bool = True,
    hf: bool = True,
    repeats: int = 3,
    out: str | None = None,
) -> dict:
    """One benchmark run: every engine, batch 1 and 8, printed side by side and returned as a dict."""
    from . import pick_device

    dev = pick_device(device)
    torch.manual_seed(0)
    if shape is None and dev.type == "cpu":
        from ..formats import default_model_path, load_model

        model, label = load_model(default_model_path(), device=dev).eval(), "llama2-lab-tiny (shipped)"
    else:
        shape = shape or "llama2-7b"
        model = random_model(shape, dev, max(prompt_len + new_tokens, 256))
        label = f"{shape} shape, random weights"
    dtype = model.output.weight.dtype
    bw = copy_bandwidth(dev)
    wbytes = weight_bytes_per_token(model)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    result = {
        "device": str(dev),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "model": label,
        "dtype": str(dtype).replace("torch.", ""),
        "params": model.num_params(),
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "copy_bandwidth_GBps": bw / 1e9,
        "weight_bytes_per_token": wbytes,
        "bound_tok_s": bw / wbytes,
        "rows": [],
    }
    engines = [("project eager", lambda p: bench_project(model, p, new_tokens, False, repeats))]
    if compile:
        engines.append(("project compiled", lambda p: bench_project(model, p, new_tokens, True, repeats)))
    if hf:
        twin = hf_twin(model)
        engines.append(("HF generate (default cache)", lambda p: bench_hf(twin, p, new_tokens, None, repeats)))
        engines.append(("HF generate (static cache)", lambda p: bench_hf(twin, p, new_tokens, "static", repeats)))
    for B in batches:
        gen = torch.Generator().manual_seed(B)
        prompt = torch.randint(3, model.args.vocab_size, (B, prompt_len), generator=gen).to(dev)  # (B, P)
        for name, fn in engines:
            before = 0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                before = torch.cuda.memory_allocated(dev)  # both models' weights, and nothing else of ours
            try:
                row = {"engine": name, "batch": B, **fn(prompt)}
            except Exception as e:  # a benchmark reports what failed and goes on
                row = {"engine": name, "batch": B, "error": f"{type(e).__name__}: {e}"[:300]}
            row["peak_memory_bytes"] = _peak_memory(dev)  # CPU: the process's high-water mark so far
            if dev.type == "cuda":  # what this engine needed beyond the resident weights (cache, activations, graphs)
                row["peak_extra_bytes"] = row["peak_memory_bytes"] - before
            result["rows"].append(row)
            print(_format_row(row, result), flush=True)
            _add_ratios(result)
            _write(result, out)  # after every row: a run stopped by a timeout keeps what it measured
    print(format_result(result))
    return result


def _write(result: dict, out: str | None) -> None:
    if out:
        from ..utils.io import atomic_write_text

        atomic_write_text(out, json.dumps(result, indent=2) + "\n")


def _add_ratios(result: dict) -> None:
    for B in {r["batch"] for r in result["rows"]}:
        rows = [r for r in result["rows"] if r["batch"] == B and "decode_tok_s" in r]
        hf_best = max((r["decode_tok_s"] for r in rows if r["engine"].startswith("HF")), default=None)
        hf_cpu = max((r.get("decode_tok_s_cpu_time", 0) for r in rows if r["engine"].startswith("HF")), default=0)
        for r in rows:
            r["vs_hf_best"] = r["decode_tok_s"] / hf_best if hf_best else None
            if hf_cpu and "decode_tok_s_cpu_time" in r:
                r["vs_hf_best_cpu_time"] = r["decode_tok_s_cpu_time"] / hf_cpu
            r["of_bound"] = r["decode_tok_s"] / (result["bound_tok_s"] * B) if B == 1 else None


def _format_row(r: dict, result: dict) -> str:
    if "error" in r:
        return f"  {r['engine']:<30} B={r['batch']:<3} failed: {r['error']}"
    return (
        f"  {r['engine']:<30} B={r['batch']:<3} prefill {r['prefill_tok_s']:>10.0f} tok/s  "
        f"TTFT {1000 * r['ttft_s']:>8.1f} ms  decode {r['decode_tok_s']:>9.1f} tok/s"
    )


def format_result(result: dict) -> str:
    cpu = result["device"] == "cpu"
    lines = [
        f"{result['model']} on {result['device']} ({result['device_name']}), {result['dtype']}, "
        f"{result['params']:,} params, torch {result['torch']}",
        f"copy bandwidth {result['copy_bandwidth_GBps']:.1f} GB/s, weights read per token "
        f"{result['weight_bytes_per_token'] / 1e6:.1f} MB -> batch-1 decode bound {result['bound_tok_s']:.0f} tok/s",
        f"{'engine':<30}{'batch':>6}{'prefill tok/s':>15}{'TTFT ms':>10}{'decode tok/s':>14}{'vs HF best':>12}{'of bound':>10}"
        + (f"{'CPU-time tok/s':>16}{'vs HF':>7}" if cpu else ""),
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['engine']:<30}{r['batch']:>6}  failed: {r['error'][:60]}")
            continue
        vs = f"{r['vs_hf_best']:.2f}x" if r.get("vs_hf_best") else "-"
        ob = f"{100 * r['of_bound']:.0f}%" if r.get("of_bound") else "-"
        lines.append(
            f"{r['engine']:<30}{r['batch']:>6}{r['prefill_tok_s']:>15.0f}{1000 * r['ttft_s']:>10.1f}"
            f"{r['decode_tok_s']:>14.1f}{vs:>12}{ob:>10}"
            + (f"{r['decode_tok_s_cpu_time']:>16.1f}{r.get('vs_hf_best_cpu_time', 0):>6.2f}x" if cpu else "")
        )
    if cpu and result.get("load_average"):
        lines.append(
            f"load average at the start {result['load_average'][0]:.2f} on {os.cpu_count()} cores, "
            f"{result['threads']} torch thread(s); CPU-time rates ignore time spent waiting for a core"
        )
    return "\n".join(lines)


def plot_breakdown(result: dict):
    """Two panels from a ``run`` result: decode tokens/s per engine and batch with the bandwidth bound,
    and where one request's time goes (prefill = TTFT, then decode). Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    rows = [r for r in result["rows"] if "decode_tok_s" in r]
    if not rows:
        raise ValueError("the result has no successful rows to plot; every engine failed (see its 'error').")
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.8 / len(batches)
    for j, B in enumerate(batches):
        x = [i + j * width for i, e in enumerate(engines)]
        y = [next((r["decode_tok_s"] for r in rows if r["engine"] == e and r["batch"] == B), 0) for e in engines]
        ax1.bar_label(ax1.bar(x, y, width, label=f"batch {B}"), fmt="%.0f", fontsize=7)
    ax1.axhline(
        result["bound_tok_s"],
        color="k",
        ls="--",
        lw=1,
        label=f"batch-1 bound {result['bound_tok_s']:.0f} tok/s (bandwidth / weight bytes)",
    )
    ax1.set_xticks([i + width * (len(batches) - 1) / 2 for i in range(len(engines))])
    ax1.set_xticklabels([e.replace(" (", "\n(") for e in engines], fontsize=8)
    ax1.set_ylim(0, 1.35 * max([result["bound_tok_s"]] + [r["decode_tok_s"] for r in rows]))  # room for the legend
    ax1.set_ylabel("decode tokens/s (all sequences)")
    ax1.set_title(f"{result['model']} on {result['device']}", fontsize=10)
    ax1.legend(fontsize=8, loc="upper left")
    # One request: TTFT (prefill of prompt_len tokens), then new_tokens - 1 decode steps.
    B = batches[0]
    brow = [r for r in rows if r["batch"] == B]
    pre = [1000 * r["ttft_s"] for r in brow]
    dec = [1000 * B * (result["new_tokens"] - 1) / r["decode_tok_s"] for r in brow]
    labels = [r["engine"].replace(" (", "\n(") for r in brow]
    ax2.barh(labels, pre, label=f"prefill ({result['prompt_len']} tokens) = TTFT")
    ax2.barh(labels, dec, left=pre, label=f"decode ({result['new_tokens'] - 1} steps)")
    ax2.set_xlabel(f"milliseconds for one request at batch {B}")
    ax2.tick_params(axis="y", labelsize=8)
    ax2.invert_yaxis()
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument(
        "--shape", help="a preset shape with random weights (default: shipped model on CPU, llama2-7b on CUDA)"
    )
    p.add_argument("--prompt-len", type=int, action=at_least(1), default=64)
    p.add_argument("--new-tokens", type=int, action=at_least(1), default=128)
    p.add_argument("--batch", type=int, action=at_least(1), nargs="+", default=[1, 8])
    p.add_argument("--no-compile", action="store_true", help="skip the compiled fast path")
    p.add_argument("--no-hf", action="store_true", help="skip Hugging Face transformers")
    p.add_argument("--repeats", type=int, action=at_least(1), default=3)
    p.add_argument(
        "--threads", type=int, action=at_least(1), help="CPU threads for torch (default: torch's own choice)"
    )
    p.add_argument("--out", help="write the results as JSON here (rewritten after every row)")


def run_from_args(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy machine one thread per engine is steadier
    run(
        device=args.device,
        shape=args.shape,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        batches=tuple(args.batch),
        compile=not args.no_compile,
        hf=not args.no_hf,
        repeats=args.repeats,
        out=args.out,
    )
    return 0
