"""Meta's folders: ``params.json`` + ``consolidated.NN.pth``, one file per model-parallel shard.

Meta's reference code (``llama/model.py``) splits ``wq wk wv w1 w3`` and ``output`` by rows
(ColumnParallelLinear) and ``wo w2`` and the embedding by columns (RowParallelLinear /
ParallelEmbedding), so merging shards concatenates along dim 0 or dim 1 accordingly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..core.transformer import Transformer
from ..utils.io import atomic_path, atomic_write_text
from .common import _CAT_DIM1, CheckpointError, LazyTensor, _args_from_params, _cpu_state, _lazy, _Source, _torch_load

# --- Meta consolidated.NN.pth ---------------------------------------------------------------------
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")


def meta_shards(folder: Path) -> tuple[list[Path], list[Path]]:
    """(shard files in rank order, look-alikes that are not shards) of a Meta folder.

    A shard is exactly ``consolidated.NN.pth``; ``consolidated.backup.pth`` or ``consolidated.00.old.pth``
    beside them (copies users keep) are not shards and are set aside, never parsed as a rank.
    """
    shards: list[Path] = []
    others: list[Path] = []
    for p in folder.glob("consolidated.*.pth"):
        (shards if _SHARD.fullmatch(p.name) else others).append(p)
    return sorted(shards, key=lambda p: int(p.name.split(".")[1])), sorted(others)


def _open_meta(folder: Path) -> _Source:
    shards, ignored = meta_shards(folder)
    numbers = [int(p.name.split(".")[1]) for p in shards]
    if numbers != list(range(len(shards))):
        raise CheckpointError(
            f"{folder}: shard files {[p.name for p in shards]} are not consolidated.00.pth .. "
            f"consolidated.{len(shards) - 1:02d}.pth; a shard is missing."
        )
    states = [_torch_load(p) for p in shards]
    notes = [f"ignored {p.name} (not a shard name: consolidated.NN.pth)" for p in ignored]
    for s in states:
        if s.pop("rope.freqs", None) is not None:  # some Meta files carry the RoPE table; it is recomputed
            notes.append("dropped rope.freqs")
    for p, s in zip(shards[1:], states[1:]):
        if s.keys() != states[0].keys():
            diff = sorted(s.keys() ^ states[0].keys())[:5]
            raise CheckpointError(
                f"{p.name} and {shards[0].name} hold different tensor names (e.g. {diff}); "
                "the shards do not belong to the same checkpoint."
            )
    tensors = {name: _merge_meta(name, [s[name] for s in states], shards) for name in states[0]}
    src = _Source("meta", folder, None, tensors, [folder / "params.json", *shards], sorted(set(notes)))  # type: ignore[arg-type]
    src.args = _args_from_params(folder / "params.json", tensors)
    return src


def _merge_meta(name: str, parts: list[torch.Tensor], shards: list[Path]) -> LazyTensor:
    """One tensor from its model-parallel pieces (Meta's llama/model.py: ColumnParallelLinear splits rows, RowParallelLinear and ParallelEmbedding columns): norms replicated, the rest concatenated."""
    first = parts[0]
    if len(parts) == 1:
        return _lazy(first, shards[0].name)
    if len({p.dtype for p in parts}) > 1:
        found = ", ".join(f"{str(p.dtype).removeprefix('torch.')} in {path.name}" for p, path in zip(parts, shards))
        raise CheckpointError(
            f"{name}: dtype mismatch across shards ({found}); every shard of a checkpoint has one "
            "dtype. Re-save the odd shard in the others' dtype (or re-export all of them)."
        )
    if first.dim() == 1:
        if any(p.shape != first.shape for p in parts):
            raise CheckpointError(
                f"{name}: 1-D tensor has shapes {[tuple(p.shape) for p in parts]} across shards; "
                "norm weights must be replicated identically."
            )

        def read_replicated():
            for p, path in zip(parts[1:], shards[1:]):
                if not torch.equal(p, first):
                    raise CheckpointError(
                        f"{name}: the copy in {path.name} differs from the one in {shards[0].name}; "
                        "replicated norm weights must be identical in every shard."
                    )
            return first

        return LazyTensor(tuple(first.shape), first.dtype, read_replicated, shards[0].name)
    d = 1 if name.endswith(_CAT_DIM1) else 0
    other = [tuple(s for i, s in enumerate(p.shape) if i != d) for p in parts]
    if len(set(other)) != 1:
        raise CheckpointError(
            f"{name}: shards have incompatible shapes {[tuple(p.shape) for p in parts]} "
            f"for concatenation along dim {d}."
        )
    shape = list(first.shape)
    shape[d] = sum(p.shape[d] for p in parts)
    return LazyTensor(tuple(shape), first.dtype, lambda: torch.cat(parts, dim=d), f"{len(parts)} shards")


def save_meta(model: Transformer, folder: str | Path, n_shards: int = 1, *, dtype=None) -> Path:
    """Meta's layout: ``params.json`` + ``consolidated.NN.pth``, split as model parallelism would (Meta's llama/model.py: ColumnParallelLinear splits rows, RowParallelLinear and ParallelEmbedding columns)."""
    a, folder = model.args, Path(folder)
    for what, n in (
        ("n_heads", a.n_heads),
        ("n_kv_heads", a.kv_heads),
        ("dim", a.dim),
        ("hidden_dim", a.hidden_dim),
        ("vocab_size", a.vocab_size),
    ):
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
