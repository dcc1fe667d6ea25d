"""Hugging Face folders: ``config.json`` + safetensors (or ``pytorch_model*.bin``).

HF's ``LlamaForCausalLM`` rotates halves (rotate-half RoPE), so its q/k rows are a permutation of
Meta's interleaved pairs; ``core.rope.permute_to_hf`` / ``permute_from_hf`` convert, here only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch

from ..core.config import ConfigError, ModelArgs, ffn_hidden_dim
from ..core.rope import permute_from_hf, permute_to_hf
from ..core.transformer import Transformer
from ..utils.io import atomic_write_bytes, atomic_write_text
from .common import (
    _ST_DTYPES,
    CheckpointError,
    LazyTensor,
    _check_sizes,
    _cpu_state,
    _lazy,
    _read_json,
    _safetensors_header,
    _save_safetensors,
    _Source,
    _tokenizer_bytes,
    _torch_load,
    check_field,
)


def _open_safetensors(
    path: Path, stack: ExitStack, rename: Callable[[str], str | None] = lambda n: n, names: set[str] | None = None
) -> dict[str, LazyTensor]:
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


# --- Hugging Face ---------------------------------------------------------------------------------
_HF_LAYER = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
_HF_TOP = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}


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
    powers = [256] + [2**k for k in range(13, -1, -1)]
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
    raise CheckpointError(
        f"no (multiple_of, ffn_dim_multiplier) makes Meta's FFN formula give hidden {hidden} "
        f"for dim {dim}; this model's FFN width cannot be described by ModelArgs."
    )


def _args_from_hf_config(cfg: dict, path: Path) -> ModelArgs:
    """ModelArgs from a Llama ``config.json``; anything that is not plain Llama 2 is refused by name.

    Every field read is type-checked first (``check_field``): a wrong JSON type is named with the
    field and the type expected, never a TypeError or a silent float("1e-5").
    """

    def get(key, kind, default=None):
        return check_field(path, cfg, key, kind, default)

    arch = get("architectures", "list?") or ["LlamaForCausalLM"]
    model_type = get("model_type", "str", "llama")
    if model_type != "llama" or "LlamaForCausalLM" not in arch:
        raise CheckpointError(
            f"{path}: model_type {model_type!r}, architectures {arch}: only Llama "
            "(model_type 'llama', LlamaForCausalLM) checkpoints can be loaded here."
        )
    rope = get("rope_parameters", "object?") or {}  # transformers >= 5 writes rope_parameters instead of rope_theta
    scaling = get("rope_scaling", "object?") or {}
    for key in ("rope_type", "type"):
        check_field(path, scaling, key, "str", where="rope_scaling.")
    check_field(path, rope, "rope_type", "str", where="rope_parameters.")
    rope_type = (
        scaling.get("rope_type", scaling.get("type", "default")) if scaling else rope.get("rope_type", "default")
    )
    if rope_type != "default":
        raise CheckpointError(
            f"{path}: rope scaling {scaling or rope} is not supported (Llama 2 uses plain RoPE, "
            "Meta's params.json); this looks like a long-context or Llama 3.x variant."
        )
    for key, kind, want in (
        ("hidden_act", "str", "silu"),
        ("attention_bias", "bool", False),
        ("mlp_bias", "bool", False),
    ):
        if get(key, kind, want) != want:
            raise CheckpointError(f"{path}: {key} = {cfg[key]!r}, but Llama 2 has {want!r}; not supported.")
    try:
        sizes = {
            name: get(key, "int?" if name in ("n_kv_heads", "max_seq_len") else "int")
            for name, key in (
                ("dim", "hidden_size"),
                ("n_layers", "num_hidden_layers"),
                ("n_heads", "num_attention_heads"),
                ("n_kv_heads", "num_key_value_heads"),
                ("vocab_size", "vocab_size"),
                ("hidden_dim", "intermediate_size"),
                ("max_seq_len", "max_position_embeddings"),
            )
        }
        for name, key in (
            ("dim", "hidden_size"),
            ("n_layers", "num_hidden_layers"),
            ("n_heads", "num_attention_heads"),
            ("vocab_size", "vocab_size"),
            ("hidden_dim", "intermediate_size"),
        ):
            if sizes[name] is None:
                raise KeyError(key)
        _check_sizes(path, **sizes)
        dim, n_heads = sizes["dim"], sizes["n_heads"]
        head_dim = get("head_dim", "int?")
        if head_dim not in (None, dim // n_heads):
            raise CheckpointError(
                f"{path}: head_dim {head_dim} != hidden_size/num_attention_heads; decoupled head sizes are not Llama 2."
            )
        n_kv = sizes["n_kv_heads"] or n_heads
        multiple_of, mult = ffn_args_for_hidden(dim, sizes["hidden_dim"])
        theta = (
            check_field(path, rope, "rope_theta", "number", where="rope_parameters.")
            if "rope_theta" in rope
            else get("rope_theta", "number", 10000.0)
        )
        return ModelArgs(
            dim=dim,
            n_layers=sizes["n_layers"],
            n_heads=n_heads,
            n_kv_heads=None if n_kv == n_heads else n_kv,
            vocab_size=sizes["vocab_size"],
            multiple_of=multiple_of,
            ffn_dim_multiplier=mult,
            norm_eps=float(get("rms_norm_eps", "number", 1e-6)),
            rope_theta=float(theta),
            max_seq_len=sizes["max_seq_len"] or 4096,
        )
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
            index = _read_json(folder / index_name)
            wmap = check_field(folder / index_name, index, "weight_map", "object")
            if wmap is None:
                raise CheckpointError(f"{folder / index_name} has no 'weight_map' object.")
            for name in wmap:  # each value names a shard file in this folder
                check_field(folder / index_name, wmap, name, "str", where="weight_map.")
                if Path(wmap[name]).name != wmap[name] or wmap[name] in (".", ".."):
                    raise CheckpointError(
                        f"{folder / index_name}: weight_map.{name} = {wmap[name]!r} must be a file "
                        "name in the same folder, not a path."
                    )
            files = sorted(set(wmap.values()))
            missing = [f for f in files if not (folder / f).exists()]
            if missing:
                raise CheckpointError(f"{folder}: {index_name} lists shard files that are absent: {missing}.")
            src.files += [folder / index_name] + [folder / f for f in files]
            break
    else:
        single = "model.safetensors" if (folder / "model.safetensors").exists() else "pytorch_model.bin"
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
            raise CheckpointError(
                f"{folder / f}: the index promises {sorted(names - part.keys())[:5]} but the file "
                "lacks them; the shards and the index do not match."
            )
        raw.update(part)
    for name, t in raw.items():
        new = hf_to_meta_name(name)
        if new is None:
            src.notes.append("dropped rotary_emb.inv_freq")
            continue
        if new.endswith(("attention.wq.weight", "attention.wk.weight")):
            # Undo HF's rotate-half row order (transformers' convert_llama_weights_to_hf.py, permute): wq by n_heads, wk by n_kv_heads.
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


def hf_config(args: ModelArgs, dtype: torch.dtype = torch.float32) -> dict:
    """A ``config.json`` for ``transformers.LlamaForCausalLM`` describing ``args``."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": str(dtype).replace("torch.", ""),
    }


def save_hf(
    model: Transformer, folder: str | Path, max_shard_bytes: int | None = None, *, dtype=None, tokenizer=None
) -> Path:
    """A Hugging Face folder: ``config.json`` + safetensors (sharded with an index above ``max_shard_bytes``).

    wq and wk rows are permuted to HF's rotate-half order (transformers' convert_llama_weights_to_hf.py, permute).
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
        atomic_write_text(
            folder / "model.safetensors.index.json",
            json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2) + "\n",
        )
    dt = next(iter(hf.values())).dtype
    atomic_write_text(folder / "config.json", json.dumps(hf_config(a, dt), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_bytes(folder / "tokenizer.model", _tokenizer_bytes(tokenizer))
    return folder
