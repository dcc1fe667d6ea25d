"""Load and save Llama 2 checkpoints, strictly: the project's folder, Meta, Hugging Face, llama2.c.

Every reader turns its files into the same thing: a ``ModelArgs`` plus a table of *lazy* tensors
under Meta's names (``tok_embeddings.weight``, ``layers.{i}.attention.wq.weight``, …) whose shapes
and dtypes are known from headers alone. ``load_model`` checks that table against the model the
config describes (every name, every shape) and the memory it will take *before* reading a byte of
weights, then builds the model on the meta device and assigns the tensors one by one, converting
each to the requested dtype, so peak memory stays near the size of the weights (gpt-fast's recipe).

Formats:

* project   ``params.json`` (Meta's field names, all of them) + ``model.safetensors`` + ``tokenizer.model``.
* meta      ``params.json`` + ``consolidated.NN.pth``, one file per model-parallel shard.
* hf        ``config.json`` + ``model.safetensors`` (or shards + ``model.safetensors.index.json``,
            or ``pytorch_model*.bin``); q/k rows permuted for rotate-half RoPE.
* llama2c   a llama2.c ``.bin``: legacy v0 (7 int32 header) or version 1 (magic "ak42", 256-byte header).

Pickled ``.pth``/``.bin`` files are only ever read with ``torch.load(weights_only=True)``: a file
that asks to build anything but tensors is refused, and no code inside it runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..core.calc import buffer_bytes, count_params, human_bytes
from ..core.config import ModelArgs
from ..core.transformer import Transformer
from ..utils.paths import MODELS_DIR
from .common import (
    FORMATS,
    CheckpointError,
    CheckpointNotFoundError,
    _as_dtype,
    _safetensors_header,
    _Source,
    check_regular_file,
)
from .hf import _open_hf
from .llama2c import _open_llama2c
from .meta import _open_meta, meta_shards
from .project import _open_project


# --- format detection -----------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """'project', 'meta', 'hf' or 'llama2c' for a checkpoint path, from the files present (not their names alone)."""
    return _resolve(Path(path))[0]


def _resolve(path: Path) -> tuple[str, Path]:
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the path does not exist.\n{_formats_help()}")
    if path.is_file():
        if (
            path.name
            in (
                "params.json",
                "config.json",
                "model.safetensors",
                "model.safetensors.index.json",
                "pytorch_model.bin.index.json",
            )
            or re.fullmatch(r"consolidated\.\d+\.pth", path.name)
            or re.fullmatch(r"(pytorch_model|model)-\d+-of-\d+\.(bin|safetensors)", path.name)
            or path.name == "pytorch_model.bin"
        ):
            return _resolve(path.parent)
        if path.suffix == ".bin":
            return "llama2c", path
        raise CheckpointError(f"cannot tell the checkpoint format of the file {path}.\n{_formats_help()}")
    if not path.is_dir():
        check_regular_file(path)  # a FIFO or device given as the checkpoint: refused, never opened
    # Present and not a folder: a FIFO under a checkpoint's file name is refused by its reader, not skipped.
    has = lambda name: (path / name).exists() and not (path / name).is_dir()  # noqa: E731
    shards = meta_shards(path)[0]
    hf_weights = (
        has("model.safetensors")
        or has("model.safetensors.index.json")
        or has("pytorch_model.bin")
        or has("pytorch_model.bin.index.json")
    )
    if has("params.json") and has("model.safetensors"):
        if has("config.json") and "model.embed_tokens.weight" in _safetensors_header(path / "model.safetensors"):
            return "hf", path  # a HF folder that also carries a params.json: the weight names decide
        return "project", path
    if has("params.json") and shards:
        return "meta", path
    if has("config.json") and hf_weights:
        return "hf", path
    present = sorted(p.name for p in path.iterdir())[:20]
    raise CheckpointError(
        f"cannot tell the checkpoint format of the folder {path} (it holds {present}).\n{_formats_help()}"
    )


def _formats_help() -> str:
    return "Recognised formats:\n" + "\n".join(f"  - {k}: {v}" for k, v in FORMATS.items())


def _open(path: str | Path) -> _Source:
    fmt, where = _resolve(Path(path))
    return {"project": _open_project, "meta": _open_meta, "hf": _open_hf, "llama2c": _open_llama2c}[fmt](where)


# --- loading --------------------------------------------------------------------------------------
def available_memory(device) -> int | None:
    """Bytes free on ``device`` now (CPU: MemAvailable; CUDA: mem_get_info), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type in ("cpu", "mps"):  # Apple silicon shares system memory
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            import psutil  # optional

            return int(psutil.virtual_memory().available)
        except ImportError:
            return None
    return None


def memory_needed(args: ModelArgs, dtype: torch.dtype) -> dict[str, int]:
    """Bytes a loaded model holds: {"weights", "buffers" (the float32 RoPE table), "total"}."""
    weights = count_params(args)["total"] * dtype.itemsize
    buffers = buffer_bytes(args)
    return {"weights": weights, "buffers": buffers, "total": weights + buffers}


def _check_fits(args: ModelArgs, dtype: torch.dtype, device: torch.device, path: Path) -> None:
    need = memory_needed(args, dtype)
    free = available_memory(device)
    if free is not None and need["total"] > free:
        tip = "load with dtype=torch.bfloat16 (half the bytes of float32), " if dtype.itemsize > 2 else ""
        if need["buffers"] > need["weights"]:
            tip = f"a smaller max_seq_len in the config (the RoPE table takes max_seq_len x head_dim x 4 bytes), {tip}"
        raise CheckpointError(
            f"{path} needs about {human_bytes(need['total'])} on {device}: {human_bytes(need['weights'])} for its "
            f"weights in {str(dtype).replace('torch.', '')} and {human_bytes(need['buffers'])} for the RoPE table "
            f"(max_seq_len {args.max_seq_len}), but only {human_bytes(free)} is available. Try: {tip}another "
            "device, or a smaller model (check_memory=False tries anyway)."
        )


def _expected_shapes(args: ModelArgs) -> dict[str, tuple]:
    """Every tensor name the model has, with its shape, computed without allocating weights."""
    d, kv, f, V = args.dim, args.kv_heads * args.head_dim, args.hidden_dim, args.vocab_size
    out: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (V, d)}
    for i in range(args.n_layers):
        for name, shape in (
            ("attention.wq", (d, d)),
            ("attention.wk", (kv, d)),
            ("attention.wv", (kv, d)),
            ("attention.wo", (d, d)),
            ("feed_forward.w1", (f, d)),
            ("feed_forward.w2", (d, f)),
            ("feed_forward.w3", (f, d)),
            ("attention_norm", (d,)),
            ("ffn_norm", (d,)),
        ):
            out[f"layers.{i}.{name}.weight"] = shape
    out["norm.weight"], out["output.weight"] = (d,), (V, d)
    return out


def _strict_problems(src: _Source, expected: dict[str, tuple]) -> list[str]:
    problems = []
    missing = [k for k in expected if k not in src.tensors]
    unexpected = [k for k in src.tensors if k not in expected]
    if missing:
        problems.append(f"missing tensor(s) {missing[:8]}{' …' if len(missing) > 8 else ''} ({len(missing)} in all)")
    if unexpected:
        problems.append(
            f"unexpected tensor(s) {unexpected[:8]}{' …' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)"
        )
    for name, shape in expected.items():
        t = src.tensors.get(name)
        if t is not None and tuple(t.shape) != shape:
            problems.append(
                f"tensor {name}: expected shape {shape} from the config, found {tuple(t.shape)}"
                f"{f' in {t.file}' if t.file else ''}"
            )
        elif t is not None and not t.dtype.is_floating_point:
            problems.append(f"tensor {name}: dtype {t.dtype} is not floating point (quantized files are not supported)")
    return problems


# Above this many parameters the model is built on the meta device (no memory, no init work). Below
# it a normal build is cheaper: the first meta build imports torch._dynamo (nn.Embedding's normal_ and
# arange run Python decompositions there), which costs seconds; initialising a small model costs ms.
META_BUILD_MIN_PARAMS = 50_000_000


def _build(args: ModelArgs) -> Transformer:
    """An unloaded Transformer: on the meta device when large, else on the CPU (weights get replaced)."""
    if count_params(args)["total"] >= META_BUILD_MIN_PARAMS:
        with torch.device("meta"):
            return Transformer(args)
    return Transformer(args)


def load_model(path: str | Path, device=None, dtype=None, *, check_memory: bool = True) -> Transformer:
    """A ``Transformer`` from any supported checkpoint, on ``device`` (default CPU), in ``dtype``.

    ``dtype`` None keeps the checkpoint's own (the embedding's) dtype; 'bf16', 'float32' and torch
    dtypes are accepted. Every name and shape is checked before weights are read (strict).
    """
    device = torch.device(device if device is not None else "cpu")
    dtype = _as_dtype(dtype)
    with _open(path) as src:
        expected = _expected_shapes(src.args)
        problems = _strict_problems(src, expected)
        if problems:
            raise CheckpointError(
                f"{src.path} ({src.format}) does not match the model its config describes "
                f"({src.args.attention_kind}, dim {src.args.dim}, {src.args.n_layers} layers):\n  - "
                + "\n  - ".join(problems)
            )
        target = dtype or src.tensors["tok_embeddings.weight"].dtype
        if check_memory:
            _check_fits(src.args, target, device, src.path)
        model = _build(src.args)  # shapes only for large models; the weights are assigned below
        built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if built != expected:  # core/transformer.py and this file must agree on every name and shape
            raise RuntimeError(
                f"internal: formats' tensor table differs from Transformer's: "
                f"{sorted(set(built.items()) ^ set(expected.items()))[:4]}"
            )
        state = {}
        for name in expected:  # one tensor at a time: read, convert, place
            t = src.tensors[name]
            x = t.read()
            if tuple(x.shape) != expected[name]:
                raise CheckpointError(f"tensor {name}: header said {t.shape}, data has {tuple(x.shape)}; corrupt file.")
            state[name] = x.to(device=device, dtype=target)
        model.load_state_dict(state, strict=True, assign=True)
        model.reset_rope(device)
    return model.eval()


def load_tokenizer(path: str | Path, required: bool = False):
    """The ``Tokenizer`` that belongs to a checkpoint, or None when there is none (an error if ``required``).

    A folder's ``tokenizer.model``; a ``.model`` file itself; for a llama2.c ``.bin``, ``<stem>.model``
    beside it, or a ``tokenizer.model`` beside it whose vocabulary size matches the model.
    """
    from ..text.tokenizer import Tokenizer

    path = Path(path)
    if path.is_file() and path.suffix == ".model":
        return Tokenizer(path)
    fmt, where = _resolve(path)
    with _open(where) as src:
        vocab = src.args.vocab_size
    if fmt == "llama2c":
        candidates = [where.with_suffix(".model"), where.parent / "tokenizer.model"]
    else:
        candidates = [where / "tokenizer.model"]
    for cand in candidates:
        if cand.is_file():
            tok = Tokenizer(cand)
            if len(tok) == vocab:
                return tok
            if fmt != "llama2c" or cand.name != "tokenizer.model":
                raise CheckpointError(
                    f"{cand} has {len(tok)} pieces but the model's vocabulary is {vocab}; they do not belong together."
                )
    if required:
        where_hint = f"{candidates[0]}" if fmt == "llama2c" else f"{where / 'tokenizer.model'}"
        raise CheckpointError(
            f"no tokenizer found for {path}: expected {where_hint} (a SentencePiece model with "
            f"{vocab} pieces); pass its path explicitly."
        )
    return None


# --- info -----------------------------------------------------------------------------------------
def info(path: str | Path) -> dict:
    """Format, ModelArgs, parameter count, dtypes, bytes on disk and shards, from headers only."""
    with _open(path) as src:
        expected = _expected_shapes(src.args)
        problems = _strict_problems(src, expected)
        return {
            "format": src.format,
            "path": str(src.path),
            "args": src.args,
            "n_params": count_params(src.args)["total"],
            "n_params_stored": sum(t.numel for t in src.tensors.values()),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in src.tensors.values()}),
            "bytes_on_disk": sum(p.stat().st_size for p in src.files),
            "files": [p.name for p in src.files],
            "shards": sum(1 for p in src.files if p.suffix in (".pth", ".safetensors", ".bin")),
            "tokenizer": _tokenizer_file(src),
            "notes": src.notes,
            "problems": problems,
        }


def _tokenizer_file(src: _Source) -> str | None:
    cands = [src.path.with_suffix(".model")] if src.format == "llama2c" else [src.path / "tokenizer.model"]
    return next((str(c) for c in cands if c.is_file()), None)


def format_info(d: dict) -> str:
    """A readable block for ``llama2-lab info``."""
    a: ModelArgs = d["args"]
    lines = [
        f"checkpoint   {d['path']}",
        f"format       {d['format']} ({FORMATS[d['format']].split(',')[0]})",
        f"model        dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads, {a.kv_heads} kv heads "
        f"({a.attention_kind}), head_dim {a.head_dim}, hidden {a.hidden_dim}, vocab {a.vocab_size}",
        f"             norm_eps {a.norm_eps:g}, rope_theta {a.rope_theta:g}, max_seq_len {a.max_seq_len}",
        f"parameters   {d['n_params']:,}",
        f"dtypes       {', '.join(d['dtypes'])}",
        f"on disk      {human_bytes(d['bytes_on_disk'])} in {len(d['files'])} file(s), {d['shards']} weight shard(s)",
        f"tokenizer    {d['tokenizer'] or 'none found'}",
    ]
    if d["notes"]:
        lines.append(f"notes        {'; '.join(d['notes'])}")
    for p in d["problems"]:
        lines.append(f"PROBLEM      {p}")
    return "\n".join(lines)


def default_model_path() -> Path:
    """The shipped model, ``assets/models/llama2-lab-tiny`` beside the package."""
    path = MODELS_DIR / "llama2-lab-tiny"
    if not (path / "params.json").is_file():
        raise CheckpointNotFoundError(
            f"the shipped model is missing: {path} does not hold params.json + "
            "model.safetensors. Make it with `llama2-lab train --preset lab-tiny`, "
            "or pass a checkpoint path explicitly."
        )
    return path
