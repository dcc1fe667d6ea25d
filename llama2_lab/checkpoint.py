"""Load and save Llama 2 checkpoints, strictly: the project's folder, Meta, Hugging Face, llama2.c.

Every reader turns its files into the same thing: a ``ModelArgs`` plus a table of *lazy* tensors
under Meta's names (``tok_embeddings.weight``, ``layers.{i}.attention.wq.weight``, …) whose shapes
and dtypes are known from headers alone. ``load_model`` checks that table against the model the
config describes (every name, every shape) and the memory it will take *before* reading a byte of
weights, then builds the model on the meta device and assigns the tensors one by one, converting
each to the requested dtype, so peak memory stays near the size of the weights (gpt-fast's recipe).

Formats (FACTS §4, §5):

* project   ``params.json`` (Meta's field names, all of them) + ``model.safetensors`` + ``tokenizer.model``.
* meta      ``params.json`` + ``consolidated.NN.pth``, one file per model-parallel shard.
* hf        ``config.json`` + ``model.safetensors`` (or shards + ``model.safetensors.index.json``,
            or ``pytorch_model*.bin``); q/k rows permuted for rotate-half RoPE.
* llama2c   a llama2.c ``.bin``: legacy v0 (7 int32 header) or version 1 (magic "ak42", 256-byte header).

Pickled ``.pth``/``.bin`` files are only ever read with ``torch.load(weights_only=True)``: a file
that asks to build anything but tensors is refused, and no code inside it runs.
"""

from __future__ import annotations

import json
import math
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .calc import count_params, human_bytes
from .config import ConfigError, ModelArgs, ffn_hidden_dim
from .io_utils import atomic_path, atomic_write_bytes, atomic_write_text
from .model import Transformer
from .rope import permute_from_hf, permute_to_hf, rope_frequencies

try:  # llama2.c's tokenizer.bin lives with the tokenizer; re-exported so one import serves a .bin user.
    from .tokenizer import read_tokenizer_bin, write_tokenizer_bin  # noqa: F401
except ImportError:  # pragma: no cover - tokenizer.py is optional for loading weights
    pass


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

# Meta's sharded tensors: these are split along their input dim (dim 1), the rest along dim 0 (FACTS §4.5).
_CAT_DIM1 = ("tok_embeddings.weight", "attention.wo.weight", "feed_forward.w2.weight")
_LLAMA2C_MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


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


# --- format detection -----------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """'project', 'meta', 'hf' or 'llama2c' for a checkpoint path, from the files present (not their names alone)."""
    return _resolve(Path(path))[0]


def _resolve(path: Path) -> tuple[str, Path]:
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the path does not exist.\n{_formats_help()}")
    if path.is_file():
        if path.name in ("params.json", "config.json", "model.safetensors", "model.safetensors.index.json",
                         "pytorch_model.bin.index.json") or re.fullmatch(r"consolidated\.\d+\.pth", path.name) \
                or re.fullmatch(r"(pytorch_model|model)-\d+-of-\d+\.(bin|safetensors)", path.name) \
                or path.name == "pytorch_model.bin":
            return _resolve(path.parent)
        if path.suffix == ".bin":
            return "llama2c", path
        raise CheckpointError(f"cannot tell the checkpoint format of the file {path}.\n{_formats_help()}")
    has = lambda name: (path / name).is_file()  # noqa: E731
    shards = sorted(path.glob("consolidated.*.pth"))
    hf_weights = (has("model.safetensors") or has("model.safetensors.index.json") or has("pytorch_model.bin")
                  or has("pytorch_model.bin.index.json"))
    if has("params.json") and has("model.safetensors"):
        if has("config.json") and "model.embed_tokens.weight" in _safetensors_header(path / "model.safetensors"):
            return "hf", path  # a HF folder that also carries a params.json: the weight names decide
        return "project", path
    if has("params.json") and shards:
        return "meta", path
    if has("config.json") and hf_weights:
        return "hf", path
    present = sorted(p.name for p in path.iterdir())[:20]
    raise CheckpointError(f"cannot tell the checkpoint format of the folder {path} (it holds {present}).\n"
                          f"{_formats_help()}")


def _formats_help() -> str:
    return "Recognised formats:\n" + "\n".join(f"  - {k}: {v}" for k, v in FORMATS.items())


def _open(path: str | Path) -> _Source:
    fmt, where = _resolve(Path(path))
    return {"project": _open_project, "meta": _open_meta, "hf": _open_hf, "llama2c": _open_llama2c}[fmt](where)


# --- reading headers ------------------------------------------------------------------------------
def _safetensors_header(path: Path) -> dict[str, dict]:
    """Parse and validate a safetensors header: {name: {dtype, shape, data_offsets}}, no weights read."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short to be a safetensors file; it is truncated.")
        n = int.from_bytes(raw, "little")
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: the safetensors header claims {n} bytes but the file has {size}; "
                                  "the file is truncated or not safetensors. Re-download or re-save it.")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); the file is corrupt.") from None
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
            raise CheckpointError(f"{path}: tensor {name!r} {list(shape)} needs bytes {start}..{end} but the data "
                                  f"section has {data_len}; the file is truncated or corrupt.")
    return header


def _open_safetensors(path: Path, stack: ExitStack, rename: Callable[[str], str | None] = lambda n: n,
                      names: set[str] | None = None) -> dict[str, LazyTensor]:
    """Lazy tensors of one safetensors file, renamed (None drops a tensor)."""
    from safetensors import safe_open

    header = _safetensors_header(path)
    try:
        handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{path} cannot be opened as safetensors: {e}") from None

    def reader(name):
        def read():
            try:
                return handle.get_tensor(name)
            except Exception as e:
                raise CheckpointError(f"{path}: reading tensor {name!r} failed: {e}") from None
        return read

    out = {}
    for name, entry in header.items():
        if names is not None and name not in names:
            continue
        new = rename(name)
        if new is not None:
            out[new] = LazyTensor(tuple(entry["shape"]), _ST_DTYPES[entry["dtype"]], reader(name), path.name)
    return out


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .pth/.bin, read with weights_only=True and mmap: no code runs, no copy."""
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
                "source, re-save its state dict with torch.save(model.state_dict(), ...).") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {first}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict {{name: tensor}}.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        hint = " (it looks like a training checkpoint: save its 'model' state dict alone)" \
            if any(isinstance(obj[k], dict) for k in bad) else ""
        raise CheckpointError(f"{path}: entries {bad[:5]} are not tensors{hint}; a checkpoint must map names to tensors.")
    return obj


def _lazy(t: torch.Tensor, file: str = "") -> LazyTensor:
    return LazyTensor(tuple(t.shape), t.dtype, lambda: t, file)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


# Generous upper bounds (70B is dim 8192, 80 layers, 64 heads, hidden 28672): a corrupt header or config
# must fail fast with a clear message, not build an absurd model.
_SIZE_LIMITS = dict(dim=2**16, hidden_dim=2**18, n_layers=2**10, n_heads=2**10, n_kv_heads=2**10,
                    vocab_size=2**22, max_seq_len=2**22)


def _check_sizes(path: Path, **sizes) -> None:
    for name, value in sizes.items():
        if value is None or (name == "vocab_size" and value == -1):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _SIZE_LIMITS[name]:
            raise CheckpointError(f"{path}: {name} = {value!r} is not a plausible size (1..{_SIZE_LIMITS[name]}); "
                                  "the file is corrupt or not a Llama checkpoint.")


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


# --- project folder -------------------------------------------------------------------------------
def _open_project(folder: Path) -> _Source:
    src = _Source("project", folder, None, {}, [folder / "params.json", folder / "model.safetensors"])  # type: ignore[arg-type]
    src.tensors = _open_safetensors(folder / "model.safetensors", src.stack)
    src.args = _args_from_params(folder / "params.json", src.tensors)
    return src


# --- Meta consolidated.NN.pth ---------------------------------------------------------------------
def _open_meta(folder: Path) -> _Source:
    shards = sorted(folder.glob("consolidated.*.pth"))
    numbers = [int(p.name.split(".")[1]) for p in shards]
    if numbers != list(range(len(shards))):
        raise CheckpointError(f"{folder}: shard files {[p.name for p in shards]} are not consolidated.00.pth .. "
                              f"consolidated.{len(shards) - 1:02d}.pth; a shard is missing.")
    states = [_torch_load(p) for p in shards]
    notes = []
    for s in states:
        if s.pop("rope.freqs", None) is not None:  # some Meta files carry the RoPE table; it is recomputed
            notes.append("dropped rope.freqs")
    for p, s in zip(shards[1:], states[1:]):
        if s.keys() != states[0].keys():
            diff = sorted(s.keys() ^ states[0].keys())[:5]
            raise CheckpointError(f"{p.name} and {shards[0].name} hold different tensor names (e.g. {diff}); "
                                  "the shards do not belong to the same checkpoint.")
    tensors = {name: _merge_meta(name, [s[name] for s in states], shards) for name in states[0]}
    src = _Source("meta", folder, None, tensors, [folder / "params.json", *shards], sorted(set(notes)))  # type: ignore[arg-type]
    src.args = _args_from_params(folder / "params.json", tensors)
    return src


def _merge_meta(name: str, parts: list[torch.Tensor], shards: list[Path]) -> LazyTensor:
    """One tensor from its model-parallel pieces (FACTS §4.5): norms replicated, the rest concatenated."""
    first = parts[0]
    if len(parts) == 1:
        return _lazy(first, shards[0].name)
    if first.dim() == 1:
        if any(p.shape != first.shape for p in parts):
            raise CheckpointError(f"{name}: 1-D tensor has shapes {[tuple(p.shape) for p in parts]} across shards; "
                                  "norm weights must be replicated identically.")

        def read_replicated():
            for p, path in zip(parts[1:], shards[1:]):
                if not torch.equal(p, first):
                    raise CheckpointError(f"{name}: the copy in {path.name} differs from the one in {shards[0].name}; "
                                          "replicated norm weights must be identical in every shard.")
            return first
        return LazyTensor(tuple(first.shape), first.dtype, read_replicated, shards[0].name)
    d = 1 if name.endswith(_CAT_DIM1) else 0
    other = [tuple(s for i, s in enumerate(p.shape) if i != d) for p in parts]
    if len(set(other)) != 1 or len({p.dtype for p in parts}) != 1:
        raise CheckpointError(f"{name}: shards have incompatible shapes {[tuple(p.shape) for p in parts]} "
                              f"for concatenation along dim {d}.")
    shape = list(first.shape)
    shape[d] = sum(p.shape[d] for p in parts)
    return LazyTensor(tuple(shape), first.dtype, lambda: torch.cat(parts, dim=d), f"{len(parts)} shards")


# --- Hugging Face ---------------------------------------------------------------------------------
_HF_LAYER = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
_HF_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}


def hf_to_meta_name(name: str) -> str | None:
    """'model.layers.3.mlp.gate_proj.weight' -> 'layers.3.feed_forward.w1.weight'; None for RoPE buffers.

    An unknown name is returned unchanged, so the strict check reports it as unexpected.
    """
    if ".rotary_emb." in name:
        return None  # old HF files store inv_freq; it is a function of the config
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m and m.group(2) in _HF_LAYER:
        return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return name


def meta_to_hf_name(name: str) -> str:
    """Inverse of ``hf_to_meta_name``."""
    top = {v: k for k, v in _HF_TOP.items()}
    if name in top:
        return top[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    inverse = {v: k for k, v in _HF_LAYER.items()}
    if not m or m.group(2) not in inverse:
        raise CheckpointError(f"no Hugging Face name for tensor {name!r}.")
    return f"model.layers.{m.group(1)}.{inverse[m.group(2)]}.weight"


def ffn_args_for_hidden(dim: int, hidden: int) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) for which Meta's FFN formula gives exactly ``hidden``.

    HF and llama2.c store the FFN width itself; ModelArgs stores the recipe. Meta's own choices are
    tried first (256, then 4096 with ×1.3 for 70B) so real configs map back to their params.json.
    """
    powers = [256] + [2 ** k for k in range(13, -1, -1)]
    for mult in (None, 1.3):
        for m in powers:
            if ffn_hidden_dim(dim, m, mult) == hidden:
                return m, mult
    base = int(2 * (4 * dim) / 3)
    for mult in (hidden / base, (hidden + 0.5) / base):  # any width: an exact multiplier with multiple_of 1
        if ffn_hidden_dim(dim, 1, mult) == hidden:
            return 1, mult
    if hidden >= base and ffn_hidden_dim(dim, hidden, None) == hidden:
        return hidden, None
    raise CheckpointError(f"no (multiple_of, ffn_dim_multiplier) makes Meta's FFN formula give hidden {hidden} "
                          f"for dim {dim}; this model's FFN width cannot be described by ModelArgs.")


def _args_from_hf_config(cfg: dict, path: Path) -> ModelArgs:
    """ModelArgs from a Llama ``config.json``; anything that is not plain Llama 2 is refused by name."""
    arch = cfg.get("architectures") or ["LlamaForCausalLM"]
    if cfg.get("model_type", "llama") != "llama" or "LlamaForCausalLM" not in arch:
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r}, architectures {arch}: only Llama "
                              "(model_type 'llama', LlamaForCausalLM) checkpoints can be loaded here.")
    rope = cfg.get("rope_parameters") or {}  # transformers >= 5 writes rope_parameters instead of rope_theta
    scaling = cfg.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else rope.get("rope_type", "default")
    if rope_type != "default":
        raise CheckpointError(f"{path}: rope scaling {scaling or rope} is not supported (Llama 2 uses plain RoPE, "
                              "FACTS §4); this looks like a long-context or Llama 3.x variant.")
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if key in cfg and cfg[key] != want:
            raise CheckpointError(f"{path}: {key} = {cfg[key]!r}, but Llama 2 has {want!r}; not supported.")
    try:
        _check_sizes(path, dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
                     n_kv_heads=cfg.get("num_key_value_heads"), vocab_size=cfg["vocab_size"],
                     hidden_dim=cfg["intermediate_size"], max_seq_len=cfg.get("max_position_embeddings"))
        dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        if cfg.get("head_dim") not in (None, dim // n_heads):
            raise CheckpointError(f"{path}: head_dim {cfg['head_dim']} != hidden_size/num_attention_heads; "
                                  "decoupled head sizes are not Llama 2.")
        n_kv = int(cfg.get("num_key_value_heads") or n_heads)
        multiple_of, mult = ffn_args_for_hidden(dim, int(cfg["intermediate_size"]))
        return ModelArgs(dim=dim, n_layers=int(cfg["num_hidden_layers"]), n_heads=n_heads,
                         n_kv_heads=None if n_kv == n_heads else n_kv, vocab_size=int(cfg["vocab_size"]),
                         multiple_of=multiple_of, ffn_dim_multiplier=mult,
                         norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                         rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
                         max_seq_len=int(cfg.get("max_position_embeddings", 4096)))
    except KeyError as e:
        raise CheckpointError(f"{path}: config.json lacks {e.args[0]!r}, needed to build the model.") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _open_hf(folder: Path) -> _Source:
    cfg = _read_json(folder / "config.json")
    args = _args_from_hf_config(cfg, folder / "config.json")
    src = _Source("hf", folder, args, {}, [folder / "config.json"])
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            wmap = _read_json(folder / index_name).get("weight_map")
            if not isinstance(wmap, dict):
                raise CheckpointError(f"{folder / index_name} has no 'weight_map' object.")
            files = sorted(set(wmap.values()))
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise CheckpointError(f"{folder}: {index_name} lists shard files that are absent: {missing}.")
            src.files += [folder / index_name] + [folder / f for f in files]
            break
    else:
        single = "model.safetensors" if (folder / "model.safetensors").is_file() else "pytorch_model.bin"
        files, wmap = [single], None
        src.files.append(folder / single)
    raw: dict[str, LazyTensor] = {}
    for f in files:
        names = None if wmap is None else {k for k, v in wmap.items() if v == f}
        if f.endswith(".safetensors"):
            part = _open_safetensors(folder / f, src.stack, names=names)
        else:
            part = {k: _lazy(t, f) for k, t in _torch_load(folder / f).items() if names is None or k in names}
        if names is not None and names - part.keys():
            raise CheckpointError(f"{folder / f}: the index promises {sorted(names - part.keys())[:5]} but the file "
                                  "lacks them; the shards and the index do not match.")
        raw.update(part)
    for name, t in raw.items():
        new = hf_to_meta_name(name)
        if new is None:
            src.notes.append("dropped rotary_emb.inv_freq")
            continue
        if new.endswith(("attention.wq.weight", "attention.wk.weight")):
            # Undo HF's rotate-half row order (FACTS §4.4): wq by n_heads, wk by n_kv_heads.
            heads = args.n_heads if new.endswith("wq.weight") else args.kv_heads
            t = LazyTensor(t.shape, t.dtype, _unpermuted(t, heads, new), t.file)
        src.tensors[new] = t
    if "output.weight" not in src.tensors and cfg.get("tie_word_embeddings") and "tok_embeddings.weight" in src.tensors:
        emb = src.tensors["tok_embeddings.weight"]
        src.tensors["output.weight"] = LazyTensor(emb.shape, emb.dtype, lambda: emb.read().clone(), emb.file)
        src.notes.append("tied embeddings: output = tok_embeddings")
    src.notes = sorted(set(src.notes))
    return src


def _unpermuted(t: LazyTensor, heads: int, name: str) -> Callable[[], torch.Tensor]:
    def read():
        w = t.read()
        if w.dim() != 2 or w.shape[0] % (2 * heads):
            raise CheckpointError(f"{name}: shape {tuple(w.shape)} cannot hold {heads} heads of even size.")
        return permute_from_hf(w, heads)
    return read


# --- llama2.c .bin --------------------------------------------------------------------------------
def _llama2c_layout(args: ModelArgs, hidden: int, version: int, shared: bool) -> list[tuple[str | None, tuple]]:
    """The (name, shape) sequence of a llama2.c file; None names the RoPE tables v0 still writes (FACTS §5)."""
    d, L, V, kv = args.dim, args.n_layers, args.vocab_size, args.kv_heads * args.head_dim
    per_layer = lambda kind, shape: [(f"layers.{i}.{kind}.weight", shape) for i in range(L)]  # noqa: E731
    attn = [*per_layer("attention.wq", (d, d)), *per_layer("attention.wk", (kv, d)),
            *per_layer("attention.wv", (kv, d)), *per_layer("attention.wo", (d, d))]
    ffn = [*per_layer("feed_forward.w1", (hidden, d)), *per_layer("feed_forward.w2", (d, hidden)),
           *per_layer("feed_forward.w3", (hidden, d))]
    if version == 0:
        table = (args.max_seq_len * args.head_dim // 2,)
        out = [("tok_embeddings.weight", (V, d)), *per_layer("attention_norm", (d,)), *attn[: 4 * L],
               *per_layer("ffn_norm", (d,)), *ffn, ("norm.weight", (d,)), (None, table), (None, table)]
    else:
        out = [*per_layer("attention_norm", (d,)), *per_layer("ffn_norm", (d,)), ("norm.weight", (d,)),
               ("tok_embeddings.weight", (V, d)), *attn, *ffn]
    if not shared:
        out.append(("output.weight", (V, d)))
    return out


def _open_llama2c(path: Path) -> _Source:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
    if head[:2] == b"PK":
        raise CheckpointError(f"{path} is a zip (a PyTorch checkpoint), not a llama2.c .bin; put it in a Hugging Face "
                              "folder as pytorch_model.bin beside its config.json, or export it with llama2.c.")
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == _LLAMA2C_MAGIC:
        (version,) = struct.unpack_from("<i", head, 4)
        if version != 1:
            raise CheckpointError(f"{path}: llama2.c version {version} is not supported (version 2 is int8 Q8_0 "
                                  "quantized); export with version 0 or 1 (float32).")
        if len(head) < 256:
            raise CheckpointError(f"{path}: {size} bytes, shorter than the 256-byte version 1 header; truncated.")
        dims, shared, offset = struct.unpack_from("<7i", head, 8), bool(head[36]), 256
    else:
        if len(head) < 28:
            raise CheckpointError(f"{path}: {size} bytes, shorter than the 28-byte llama2.c header; truncated.")
        version, dims, offset = 0, struct.unpack_from("<7i", head), 28
        shared = dims[5] > 0  # legacy flag: a negative vocab_size means a separate classifier follows
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = dims
    vocab = abs(vocab)
    try:
        _check_sizes(path, dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                     vocab_size=vocab, max_seq_len=seq_len)
        multiple_of, mult = ffn_args_for_hidden(dim, hidden)
        args = ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads,
                         n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads, vocab_size=vocab,
                         multiple_of=multiple_of, ffn_dim_multiplier=mult, max_seq_len=seq_len)
    except (ConfigError, CheckpointError) as e:
        raise CheckpointError(f"{path}: the header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, "
                              f"seq_len) = {dims} does not describe a Llama model ({e}); is this a llama2.c .bin?") from None
    layout = _llama2c_layout(args, hidden, version, shared)
    n_floats = sum(math.prod(s) for _, s in layout)
    expected = offset + 4 * n_floats
    if size != expected:
        raise CheckpointError(f"{path}: the llama2.c v{version} header {dims} implies {expected:,} bytes but the file "
                              f"has {size:,}; it is {'truncated' if size < expected else 'longer than its header says'}"
                              " or not a llama2.c checkpoint.")
    # Copy-on-write map: tensors view the file without reading it, and stay writable (no torch warning).
    flat = np.memmap(path, dtype="<f4", mode="c", offset=offset, shape=(n_floats,))
    src = _Source("llama2c", path, args, {}, [path], [f"llama2.c v{version}"])
    pos = 0
    for name, shape in layout:
        n = math.prod(shape)
        if name is not None:
            src.tensors[name] = LazyTensor(shape, torch.float32, _memmap_reader(flat, pos, n, shape), path.name)
        pos += n
    if shared:
        emb = src.tensors["tok_embeddings.weight"]
        src.tensors["output.weight"] = LazyTensor(emb.shape, emb.dtype, lambda: emb.read().clone(), path.name)
        src.notes.append("shared classifier: output = tok_embeddings")
    return src


def _memmap_reader(flat: np.ndarray, pos: int, n: int, shape: tuple) -> Callable[[], torch.Tensor]:
    return lambda: torch.from_numpy(flat[pos:pos + n]).view(shape)


# --- loading --------------------------------------------------------------------------------------
def _as_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "").lower()
    if name not in _DTYPE_NAMES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}.")
    return _DTYPE_NAMES[name]


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


def _check_fits(args: ModelArgs, dtype: torch.dtype, device: torch.device, path: Path) -> None:
    needed = count_params(args)["total"] * dtype.itemsize
    free = available_memory(device)
    if free is not None and needed > free:
        tip = "load with dtype=torch.bfloat16 (half the bytes of float32), " if dtype.itemsize > 2 else ""
        raise CheckpointError(
            f"{path} needs about {human_bytes(needed)} for its weights in {str(dtype).replace('torch.', '')} on "
            f"{device}, but only {human_bytes(free)} is available. Try: {tip}another device, or a smaller model "
            "(check_memory=False tries anyway).")


def _expected_shapes(args: ModelArgs) -> dict[str, tuple]:
    """Every tensor name the model has, with its shape, computed without allocating weights."""
    d, kv, f, V = args.dim, args.kv_heads * args.head_dim, args.hidden_dim, args.vocab_size
    out = {"tok_embeddings.weight": (V, d)}
    for i in range(args.n_layers):
        for name, shape in (("attention.wq", (d, d)), ("attention.wk", (kv, d)), ("attention.wv", (kv, d)),
                            ("attention.wo", (d, d)), ("feed_forward.w1", (f, d)), ("feed_forward.w2", (d, f)),
                            ("feed_forward.w3", (f, d)), ("attention_norm", (d,)), ("ffn_norm", (d,))):
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
        problems.append(f"unexpected tensor(s) {unexpected[:8]}{' …' if len(unexpected) > 8 else ''} "
                        f"({len(unexpected)} in all)")
    for name, shape in expected.items():
        t = src.tensors.get(name)
        if t is not None and tuple(t.shape) != shape:
            problems.append(f"tensor {name}: expected shape {shape} from the config, found {tuple(t.shape)}"
                            f"{f' in {t.file}' if t.file else ''}")
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
            raise CheckpointError(f"{src.path} ({src.format}) does not match the model its config describes "
                                  f"({src.args.attention_kind}, dim {src.args.dim}, {src.args.n_layers} layers):\n  - "
                                  + "\n  - ".join(problems))
        target = dtype or src.tensors["tok_embeddings.weight"].dtype
        if check_memory:
            _check_fits(src.args, target, device, src.path)
        model = _build(src.args)  # shapes only for large models; the weights are assigned below
        built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if built != expected:  # model.py and this file must agree on every name and shape
            raise RuntimeError(f"internal: checkpoint.py's tensor table differs from Transformer's: "
                               f"{sorted(set(built.items()) ^ set(expected.items()))[:4]}")
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
    from .tokenizer import Tokenizer

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
                raise CheckpointError(f"{cand} has {len(tok)} pieces but the model's vocabulary is {vocab}; "
                                      "they do not belong together.")
    if required:
        where_hint = f"{candidates[0]}" if fmt == "llama2c" else f"{where / 'tokenizer.model'}"
        raise CheckpointError(f"no tokenizer found for {path}: expected {where_hint} (a SentencePiece model with "
                              f"{vocab} pieces); pass its path explicitly.")
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
    path = Path(__file__).resolve().parents[1] / "assets" / "models" / "llama2-lab-tiny"
    if not (path / "params.json").is_file():
        raise CheckpointNotFoundError(f"the shipped model is missing: {path} does not hold params.json + "
                                      "model.safetensors. Make it with `llama2-lab train --preset lab-tiny`, "
                                      "or pass a checkpoint path explicitly.")
    return path


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
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _tokenizer_bytes(tokenizer) -> bytes:
    if isinstance(tokenizer, (bytes, bytearray)):
        return bytes(tokenizer)
    if isinstance(tokenizer, (str, Path)):
        return Path(tokenizer).read_bytes()
    return bytes(tokenizer.model_proto)


def save_model(model: Transformer, folder: str | Path, tokenizer=None, *, dtype=None) -> Path:
    """The project format: ``params.json`` (every ModelArgs field), ``model.safetensors``, ``tokenizer.model``.

    ``tokenizer`` is a Tokenizer (its ``model_proto`` bytes), raw bytes or a path to a ``.model``.
    Each file is written atomically.
    """
    folder = Path(folder)
    _save_safetensors(_cpu_state(model, dtype), folder / "model.safetensors")
    atomic_write_text(folder / "params.json", json.dumps(model.args.to_dict(), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_bytes(folder / "tokenizer.model", _tokenizer_bytes(tokenizer))
    return folder


def save_meta(model: Transformer, folder: str | Path, n_shards: int = 1, *, dtype=None) -> Path:
    """Meta's layout: ``params.json`` + ``consolidated.NN.pth``, split as model parallelism would (FACTS §4.5)."""
    a, folder = model.args, Path(folder)
    for what, n in (("n_heads", a.n_heads), ("n_kv_heads", a.kv_heads), ("dim", a.dim),
                    ("hidden_dim", a.hidden_dim), ("vocab_size", a.vocab_size)):
        if n % n_shards:
            raise CheckpointError(f"cannot split into {n_shards} shards: {what} = {n} is not divisible by it.")
    state = _cpu_state(model, dtype)
    for rank in range(n_shards):
        shard = {}
        for name, t in state.items():
            if t.dim() == 1:
                shard[name] = t.clone()  # norms are replicated on every rank
            else:
                d = 1 if name.endswith(_CAT_DIM1) else 0
                shard[name] = t.chunk(n_shards, dim=d)[rank].clone()  # clone: save only this piece's bytes
        with atomic_path(folder / f"consolidated.{rank:02d}.pth") as tmp:
            torch.save(shard, tmp)
    atomic_write_text(folder / "params.json", json.dumps(a.to_dict(), indent=2) + "\n")
    return folder


def hf_config(args: ModelArgs, dtype: torch.dtype = torch.float32) -> dict:
    """A ``config.json`` for ``transformers.LlamaForCausalLM`` describing ``args``."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": args.dim, "intermediate_size": args.hidden_dim, "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads, "num_key_value_heads": args.kv_heads, "head_dim": args.head_dim,
        "vocab_size": args.vocab_size, "rms_norm_eps": args.norm_eps, "rope_theta": args.rope_theta,
        "rope_scaling": None, "max_position_embeddings": args.max_seq_len, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "pretraining_tp": 1,
        "use_cache": True, "torch_dtype": str(dtype).replace("torch.", ""),
    }


def save_hf(model: Transformer, folder: str | Path, max_shard_bytes: int | None = None, *, dtype=None,
            tokenizer=None) -> Path:
    """A Hugging Face folder: ``config.json`` + safetensors (sharded with an index above ``max_shard_bytes``).

    wq and wk rows are permuted to HF's rotate-half order (FACTS §4.4).
    """
    a, folder = model.args, Path(folder)
    hf = {}
    for name, t in _cpu_state(model, dtype).items():
        if name.endswith("attention.wq.weight"):
            t = permute_to_hf(t, a.n_heads).contiguous()
        elif name.endswith("attention.wk.weight"):
            t = permute_to_hf(t, a.kv_heads).contiguous()
        hf[meta_to_hf_name(name)] = t
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in hf.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        _save_safetensors(shards[0], folder / "model.safetensors")
    else:
        wmap = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            _save_safetensors(shard, folder / fname)
            wmap.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in hf.values())
        atomic_write_text(folder / "model.safetensors.index.json",
                          json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2) + "\n")
    dt = next(iter(hf.values())).dtype
    atomic_write_text(folder / "config.json", json.dumps(hf_config(a, dt), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_bytes(folder / "tokenizer.model", _tokenizer_bytes(tokenizer))
    return folder


def export_llama2c(model: Transformer, path: str | Path, version: int = 0) -> Path:
    """A llama2.c ``.bin`` (float32), v0 as run.c reads it or version 1; written atomically.

    The format has no room for norm_eps or rope_theta (run.c hard-codes 1e-5 and 10000), so other
    values are refused rather than silently lost. The classifier is stored shared when it equals the embedding.
    """
    a = model.args
    if version not in (0, 1):
        raise CheckpointError(f"llama2.c version must be 0 or 1, got {version!r}.")
    if a.norm_eps != 1e-5 or a.rope_theta != 10000.0:
        raise CheckpointError(f"llama2.c files cannot store norm_eps={a.norm_eps} / rope_theta={a.rope_theta} "
                              "(run.c assumes 1e-5 and 10000); use save_model instead.")
    state = _cpu_state(model, torch.float32)
    shared = torch.equal(state["tok_embeddings.weight"], state["output.weight"])
    dims = (a.dim, a.hidden_dim, a.n_layers, a.n_heads, a.kv_heads, a.vocab_size, a.max_seq_len)
    if version == 0:
        header = struct.pack("<7i", *dims[:5], a.vocab_size if shared else -a.vocab_size, a.max_seq_len)
        # The RoPE tables run.c skips, computed as llama2.c's model.py does so a re-export is byte-exact.
        angles = torch.outer(torch.arange(a.max_seq_len).float(), rope_frequencies(a.head_dim, a.rope_theta))
        tables = [torch.cos(angles), torch.sin(angles)]  # (seq_len, head_dim/2) each, in file order
    else:
        header = struct.pack("<Ii7iB", _LLAMA2C_MAGIC, 1, *dims, int(shared))
        header += b"\0" * (256 - len(header))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            for name, _ in _llama2c_layout(a, a.hidden_dim, version, shared):
                t = state[name] if name is not None else tables.pop(0)
                f.write(t.contiguous().numpy().astype("<f4").tobytes())
    return Path(path)
