"""Model-parallel shards: each rank reads only its slice of a checkpoint, and Meta-style folders are written.

Meta ships Llama 2 split for model parallelism, one ``consolidated.NN.pth`` per GPU (7B: 1, 13B: 2,
70B: 8), because its reference code runs the model with fairscale's column- and row-parallel layers
(meta-llama/llama ``llama/model.py``). The split of every tensor is fixed by the layer it feeds:

* dim 0 (output rows, "column parallel"): ``wq``, ``wk``, ``wv``, ``w1``, ``w3`` and ``output``;
* dim 1 (input columns, "row parallel"): ``wo``, ``w2`` and ``tok_embeddings`` (Meta's
  ``ParallelEmbedding`` splits the embedding width, not the vocabulary);
* not split (every rank has a copy): the RMSNorm gains.

``rank_state(path, rank, world_size)`` returns rank ``rank``'s slice of every tensor for a run on
``world_size`` processes, reading only that slice:

* a Meta folder with ``world_size`` shards: rank r memory-maps ``consolidated.{r}.pth`` and nothing else;
* a Meta folder with another shard count S: the rank's range of each tensor is cut from the (memory-mapped)
  shards it overlaps, e.g. N = 2 on 70B's 8 shards opens 4 files, N = 4 on 13B's 2 shards half of one;
* a Hugging Face or project folder (safetensors): ``safe_open(...).get_slice(name)[lo:hi]`` reads the rows
  or columns of the rank and no others; HF's rotate-half q/k rows are permuted back per local head.

Memory-mapped slices are used in place when they are contiguous and already in the asked dtype, so
a rank's resident memory is about its share of the weights (``benchmarks/tp_load_memory.py`` measures it).
``save_sharded`` writes a Meta-style folder with N shards (``checkpoint.save_meta``) plus the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.config import ModelArgs
from ..core.rope import permute_from_hf
from ..utils.io import atomic_write_bytes
from .common import (
    _CAT_DIM1,
    CheckpointError,
    _args_from_params,
    _as_dtype,
    _read_json,
    _safetensors_header,
    _tokenizer_bytes,
    _torch_load,
)
from .hf import _args_from_hf_config, meta_to_hf_name
from .loading import _expected_shapes, _resolve
from .meta import save_meta


class ShardError(CheckpointError):
    """A checkpoint that cannot be split as asked; the message names the size or file and the fix."""


def split_dim(name: str) -> int | None:
    """The dimension model parallelism splits tensor ``name`` along: 0, 1, or None (replicated norm gains)."""
    if name.endswith("norm.weight"):
        return None
    return 1 if name.endswith(_CAT_DIM1) else 0


def check_world_size(args: ModelArgs, world_size: int) -> None:
    """Every split size must divide by ``world_size``; the KV heads are the usual limit (70B has 8)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ShardError(f"the number of processes must be a positive integer, got {world_size!r}.")
    sizes = (
        ("n_kv_heads", args.kv_heads),
        ("n_heads", args.n_heads),
        ("dim", args.dim),
        ("hidden_dim", args.hidden_dim),
        ("vocab_size", args.vocab_size),
    )
    for what, n in sizes:
        if n % world_size:
            ok = [d for d in range(1, args.kv_heads + 1) if all(s % d == 0 for _, s in sizes)]
            raise ShardError(
                f"cannot split this model over {world_size} processes: {what} = {n} is not divisible by "
                f"{world_size} (each rank keeps whole {'KV heads' if 'heads' in what else what + ' slices'}). "
                f"Launch with --nproc-per-node in {ok}."
            )


def rank_range(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank`` along a dimension of ``size`` split evenly over ``world_size``."""
    return rank * size // world_size, (rank + 1) * size // world_size


def local_shapes(args: ModelArgs, world_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor on one rank (all ranks have the same shapes)."""
    out = {}
    for name, shape in _expected_shapes(args).items():
        d = split_dim(name)
        out[name] = shape if d is None else tuple(s // world_size if i == d else s for i, s in enumerate(shape))
    return out


def _finish(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Contiguous, in ``dtype``; a memory-mapped tensor that already is both is returned as it is (no copy)."""
    t = t if dtype is None else t.to(dtype)
    return t.contiguous()


class _HeaderOnly:
    """What ``_args_from_params`` needs from the embedding: its shape (vocab is never split in Meta files)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


# --- Meta folders ---------------------------------------------------------------------------------
def _meta_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("consolidated.*.pth"))
    numbers = [int(p.name.split(".")[1]) for p in files]
    if numbers != list(range(len(files))):
        raise ShardError(
            f"{folder}: shard files {[p.name for p in files]} are not consolidated.00.pth .. "
            f"consolidated.{len(files) - 1:02d}.pth; a shard is missing."
        )
    return files


def _open_shard(path: Path, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """One consolidated.NN.pth, memory-mapped; a failure names the rank and the file."""
    try:
        state = _torch_load(path)
    except CheckpointError as e:
        raise ShardError(f"rank {rank} of {world_size} cannot open its shard {path}: {e}") from None
    state.pop("rope.freqs", None)  # some Meta files carry the RoPE table; the model recomputes it
    return state


def _meta_rank_state(folder: Path, rank: int, world_size: int, dtype) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    files = _meta_files(folder)
    S = len(files)
    # Shard i holds [i·L/S, (i+1)·L/S) of every split dimension L; the rank needs [r·L/N, (r+1)·L/N).
    first, last = rank * S // world_size, -(-(rank + 1) * S // world_size) - 1
    states = {i: _open_shard(files[i], rank, world_size) for i in range(first, last + 1)}
    header: dict[str, Any] = {"tok_embeddings.weight": _HeaderOnly(states[first]["tok_embeddings.weight"].shape)}
    args = _args_from_params(folder / "params.json", header)
    check_world_size(args, world_size)
    for what, n in (
        ("n_kv_heads", args.kv_heads),
        ("dim", args.dim),
        ("hidden_dim", args.hidden_dim),
        ("vocab_size", args.vocab_size),
    ):
        if n % S:
            raise ShardError(
                f"{folder}: {S} shard files, but {what} = {n} is not divisible by {S}; "
                "the folder does not hold a model-parallel split of this model."
            )
    expected = _expected_shapes(args)
    out = {}
    for i, state in states.items():
        missing = sorted(set(expected) - state.keys())
        extra = sorted(state.keys() - set(expected))
        if missing or extra:
            raise ShardError(
                f"{files[i]}: missing tensor(s) {missing[:4]}, unexpected {extra[:4]}; "
                "it does not belong to the model params.json describes."
            )
    for name, shape in expected.items():
        d = split_dim(name)
        if d is None:
            parts = [states[first][name]]
        else:
            L, P = shape[d], shape[d] // S
            lo, hi = rank_range(L, rank, world_size)
            parts = []
            for i in range(first, last + 1):
                have = states[i][name]
                part_shape = tuple(P if k == d else s for k, s in enumerate(shape))
                if tuple(have.shape) != part_shape:
                    implied = (
                        f"; its size along dim {d} says the model was split into {L // have.shape[d]} shards"
                        if have.dim() == len(shape) and have.shape[d] and L % have.shape[d] == 0
                        else ""
                    )
                    raise ShardError(
                        f"shard count mismatch: {files[i].name} holds {name} of shape {tuple(have.shape)}, but "
                        f"params.json and the {S} shard file(s) in {folder} imply {part_shape}{implied}. "
                        "Restore the missing consolidated.NN.pth files (or the right params.json)."
                    )
                a, b = max(lo, i * P), min(hi, (i + 1) * P)
                parts.append(have.narrow(d, a - i * P, b - a))  # a view: nothing is read yet
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=d if d is not None else 0)
        out[name] = _finish(t, dtype)
    return args, out


# --- safetensors folders (Hugging Face and the project's own) -------------------------------------------
def _weight_files(folder: Path) -> dict[str, Path]:
    """name -> the safetensors file holding it, from the index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        wmap = _read_json(index).get("weight_map")
        if not isinstance(wmap, dict):
            raise ShardError(f"{index} has no 'weight_map' object.")
        return {k: folder / v for k, v in wmap.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ShardError(
            f"{folder} has no safetensors weights (pytorch_model*.bin cannot be read in slices); "
            "convert it to safetensors first, e.g. with save_hf(load_model(path), new_folder)."
        )
    return {k: single for k in _safetensors_header(single)}


def _safetensors_rank_state(folder: Path, fmt: str, rank: int, world_size: int, dtype):
    from safetensors import safe_open

    if fmt == "hf":
        cfg = _read_json(folder / "config.json")
        args = _args_from_hf_config(cfg, folder / "config.json")
        file_of = _weight_files(folder)
        rename: Callable[[str], str] = meta_to_hf_name
    else:
        file_of = _weight_files(folder)
        header = _safetensors_header(folder / "model.safetensors")
        shapes: dict[str, Any] = {k: _HeaderOnly(v["shape"]) for k, v in header.items()}
        args = _args_from_params(folder / "params.json", shapes)
        rename = lambda n: n  # noqa: E731 - the project format uses Meta's names
    check_world_size(args, world_size)
    handles: dict[Path, Any] = {}
    out = {}
    for name, shape in _expected_shapes(args).items():
        stored, d = rename(name), split_dim(name)
        if fmt == "hf" and name == "output.weight" and stored not in file_of and cfg.get("tie_word_embeddings"):
            stored = "model.embed_tokens.weight"  # tied: the classifier is the embedding, split by vocabulary rows
        if stored not in file_of:
            raise ShardError(f"{folder}: tensor {stored!r} ({name}) is missing; the folder is incomplete.")
        path = file_of[stored]
        if path not in handles:
            try:
                handles[path] = safe_open(str(path), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own SafetensorError
                raise ShardError(f"rank {rank} of {world_size} cannot open {path}: {e}") from None
        piece = handles[path].get_slice(stored)
        if tuple(piece.get_shape()) != shape:
            raise ShardError(f"{path}: {stored} has shape {tuple(piece.get_shape())}, the config implies {shape}.")
        if d is None:
            t = piece[:]
        else:
            lo, hi = rank_range(shape[d], rank, world_size)
            t = piece[lo:hi] if d == 0 else piece[:, lo:hi]  # reads only these rows / columns
        if fmt == "hf" and name.endswith(("attention.wq.weight", "attention.wk.weight")):
            # HF stores q/k rows in rotate-half order within each head; the rank's rows are whole heads.
            heads = (args.n_heads if name.endswith("wq.weight") else args.kv_heads) // world_size
            t = permute_from_hf(t, heads)
        out[name] = _finish(t, dtype)
    return args, out


# --- the entry points -----------------------------------------------------------------------------------
def rank_state(path: str | Path, rank: int, world_size: int, dtype=None) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """(ModelArgs, {Meta name: rank's slice}) for rank ``rank`` of ``world_size``, reading only that slice.

    Split tensors come back with ``1/world_size`` of their split dimension (``split_dim``), norm gains whole.
    ``dtype`` None keeps the file's dtype.
    """
    if not 0 <= rank < world_size:
        raise ShardError(f"rank must be in 0..{world_size - 1}, got {rank}.")
    fmt, where = _resolve(Path(path))
    dtype = _as_dtype(dtype)
    if fmt == "meta":
        return _meta_rank_state(where, rank, world_size, dtype)
    if fmt in ("hf", "project"):
        return _safetensors_rank_state(where, fmt, rank, world_size, dtype)
    raise ShardError(
        f"{where} is a {fmt} file, which cannot be read in slices; convert it to a Meta or "
        "safetensors folder first (checkpoint.save_meta / save_hf / save_model)."
    )


def shard_count(path: str | Path) -> int:
    """How many model-parallel files a checkpoint has (Meta: consolidated.NN.pth; others 1)."""
    fmt, where = _resolve(Path(path))
    return len(_meta_files(where)) if fmt == "meta" else 1


def save_sharded(model, folder: str | Path, n_shards: int, tokenizer=None, *, dtype=None) -> Path:
    """A Meta-style folder with ``n_shards`` model-parallel files (``checkpoint.save_meta``), plus ``tokenizer.model``."""
    check_world_size(model.args, n_shards)
    folder = Path(folder)
    save_meta(model, folder, n_shards=n_shards, dtype=dtype)
    if tokenizer is not None:
        atomic_write_bytes(folder / "tokenizer.model", _tokenizer_bytes(tokenizer))
    return folder
