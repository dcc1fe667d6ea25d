"""What every checkpoint reader shares: lazy tensors under Meta's names, errors, header readers.

A reader turns its files into a ``_Source``: a ``ModelArgs`` plus a table of *lazy* tensors whose
shapes and dtypes are known from headers alone. Pickled ``.pth``/``.bin`` files are only ever read
with ``torch.load(weights_only=True)``: a file that asks to build anything but tensors is refused.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.config import ConfigError, ModelArgs
from ..core.transformer import Transformer
from ..utils.device import resolve_dtype
from ..utils.io import atomic_path


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a Llama model; the message names the file or tensor and the fix."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist (also catchable as FileNotFoundError)."""


FORMATS: dict[str, str] = {
    "project": "a folder with params.json + model.safetensors (+ tokenizer.model), as written by save_model",
    "meta": "a folder with params.json + consolidated.00.pth (one consolidated.NN.pth per shard), as Meta ships",
    "hf": "a folder with config.json + model.safetensors, or model-0000k-of-0000n.safetensors + "
    "model.safetensors.index.json (or pytorch_model*.bin), as on the Hugging Face hub",
    "llama2c": "a llama2.c .bin file: legacy v0 (7-int32 header) or version 1 (magic 'ak42')",
}

# Meta's sharded tensors: these are split along their input dim (dim 1), the rest along dim 0 (Meta's llama/model.py: ColumnParallelLinear splits rows, RowParallelLinear and ParallelEmbedding columns).
_CAT_DIM1 = ("tok_embeddings.weight", "attention.wo.weight", "feed_forward.w2.weight")
_LLAMA2C_MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


# --- the common currency: lazy tensors under Meta's names ---------------------------------------
@dataclass
class LazyTensor:
    """A tensor known by its header (shape, dtype) and read only when ``read()`` is called."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    read: Callable[[], torch.Tensor]
    file: str = ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class _Source:
    format: str
    path: Path
    args: ModelArgs
    tensors: dict[str, LazyTensor]
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stack.close()


# --- reading headers ------------------------------------------------------------------------------
def _safetensors_header(path: Path) -> dict[str, dict]:
    """Parse and validate a safetensors header: {name: {dtype, shape, data_offsets}}, no weights read."""
    size = check_regular_file(path).stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short to be a safetensors file; it is truncated.")
        n = int.from_bytes(raw, "little")
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{path}: the safetensors header claims {n} bytes but the file has {size}; "
                "the file is truncated or not safetensors. Re-download or re-save it."
            )
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"{path}: the safetensors header is not valid JSON ({e}); the file is corrupt."
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object; the file is corrupt.")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = _ST_DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: the header entry for {name!r} is malformed ({entry!r}).") from None
        if end > data_len or end - start != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(
                f"{path}: tensor {name!r} {list(shape)} needs bytes {start}..{end} but the data "
                f"section has {data_len}; the file is truncated or corrupt."
            )
    return header


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .pth/.bin, read with weights_only=True and mmap: no code runs, no copy."""
    check_regular_file(path)
    try:
        try:
            obj = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, weights_only=True, map_location="cpu")  # legacy (non-zip) torch.save format
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError(
                f"{path} asks to unpickle objects other than tensors, so it was refused (weights_only=True) and "
                f"nothing in it ran ({first}). A checkpoint must hold only tensors; if you trust the file's "
                "source, re-save its state dict with torch.save(model.state_dict(), ...)."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {type(e).__name__}: {first}"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict {{name: tensor}}.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        hint = (
            " (it looks like a training checkpoint: save its 'model' state dict alone)"
            if any(isinstance(obj[k], dict) for k in bad)
            else ""
        )
        raise CheckpointError(
            f"{path}: entries {bad[:5]} are not tensors{hint}; a checkpoint must map names to tensors."
        )
    return obj


def _lazy(t: torch.Tensor, file: str = "") -> LazyTensor:
    return LazyTensor(tuple(t.shape), t.dtype, lambda: t, file)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(check_regular_file(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


# Generous upper bounds (70B is dim 8192, 80 layers, 64 heads, hidden 28672): a corrupt header or config
# must fail fast with a clear message, not build an absurd model.
_SIZE_LIMITS = dict(
    dim=2**16, hidden_dim=2**18, n_layers=2**10, n_heads=2**10, n_kv_heads=2**10, vocab_size=2**22, max_seq_len=2**22
)


def _check_sizes(path: Path, **sizes) -> None:
    for name, value in sizes.items():
        if value is None or (name == "vocab_size" and value == -1):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(f"{path}: {name} must be an integer, got {_given(value)}.")
        if not 0 < value <= _SIZE_LIMITS[name]:
            raise CheckpointError(
                f"{path}: {name} = {value!r} is not a plausible size (1..{_SIZE_LIMITS[name]}); "
                "the file is corrupt or not a Llama checkpoint."
            )


def _given(value) -> str:
    """A JSON value as the user wrote it, with its JSON type: "'1e-5' (a string)", "null"."""
    kind = {str: "a string", bool: "a boolean", list: "a list", dict: "an object", type(None): "null"}
    name = kind.get(type(value))
    return json.dumps(value) if value is None else f"{value!r} ({name})" if name else repr(value)


def check_field(path: Path, data: dict, key: str, kind: str, default=None, *, where: str = ""):
    """``data[key]`` (or ``default`` when absent) if it has the JSON type ``kind``, else a CheckpointError.

    kinds: "int", "number" (int or float), "str", "bool", "object" (dict), "list"; a trailing "?"
    also accepts null. The error names the file, the field and the expected type, e.g.
    ``config.json: rope_scaling must be an object or null, got 'linear' (a string)``.
    """
    if key not in data:
        return default
    value = data[key]
    nullable = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None and nullable:
        return None
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "list": lambda v: isinstance(v, list),
    }
    if not checks[base](value):
        names = {
            "int": "an integer",
            "number": "a number",
            "str": "a string",
            "bool": "true or false",
            "object": "an object",
            "list": "a list",
        }
        raise CheckpointError(
            f"{path}: {where}{key} must be {names[base]}{' or null' if nullable else ''}, got {_given(value)}."
        )
    return value


def check_regular_file(path: Path, what: str = "") -> Path:
    """``path`` if it is a regular file (or a link to one); a named pipe, device or folder is refused.

    Opening a FIFO blocks until someone writes to it, so every reader checks before it opens.
    """
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file{f' ({what})' if what else ''}.") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise CheckpointError(
            f"{path} is {kind}, not a regular file{f' ({what})' if what else ''}; "
            "a checkpoint's files must be plain files. Replace it with the real file."
        )
    return path


def _args_from_params(path: Path, tensors: dict[str, LazyTensor]) -> ModelArgs:
    """ModelArgs from Meta's params.json; vocab_size -1 comes from the embedding (Meta takes it from the tokenizer)."""
    params = _read_json(path)
    _check_sizes(path, **{k: params.get(k) for k in _SIZE_LIMITS if k != "hidden_dim"})
    vocab = None
    if params.get("vocab_size", -1) in (-1, None) and "tok_embeddings.weight" in tensors:
        vocab = tensors["tok_embeddings.weight"].shape[0]
    try:
        return ModelArgs.from_dict(params, vocab_size=vocab)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


# --- writers --------------------------------------------------------------------------------------
def _cpu_state(model: Transformer, dtype=None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies that never share memory (safetensors refuses shared tensors)."""
    dtype = _as_dtype(dtype)
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu", dtype or t.dtype).contiguous()
        if t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[name] = t
    return out


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        except Exception as e:  # safetensors' own SafetensorError: a full disk becomes an OSError with its errno
            m = re.search(r"os error (\d+)", str(e))
            if m is None:
                raise
            code = int(m.group(1))
            raise OSError(code, os.strerror(code), str(path)) from e


def _tokenizer_bytes(tokenizer) -> bytes:
    if isinstance(tokenizer, (bytes, bytearray)):
        return bytes(tokenizer)
    if isinstance(tokenizer, (str, Path)):
        return Path(tokenizer).read_bytes()
    return bytes(tokenizer.model_proto)


def _as_dtype(dtype) -> torch.dtype | None:
    """None (keep the file's dtype) or a weight dtype by name or value; a CheckpointError otherwise."""
    if dtype is None:
        return None
    try:
        return resolve_dtype(dtype)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
