"""llama2.c's ``.bin`` files: legacy v0 (a 7-int32 header) or version 1 (magic "ak42", 256-byte header).

Layouts follow ``export.py`` in karpathy/llama2.c (``legacy_export`` and ``version1_export``).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..core.config import ConfigError, ModelArgs
from ..core.rope import rope_frequencies
from ..core.transformer import Transformer
from ..text.tokenizer import SPACE as _SPACE
from ..text.tokenizer import Tokenizer
from ..utils.io import atomic_path, atomic_write_bytes
from .common import _LLAMA2C_MAGIC, CheckpointError, LazyTensor, _check_sizes, _cpu_state, _Source
from .hf import ffn_args_for_hidden


# --- llama2.c .bin --------------------------------------------------------------------------------
def _llama2c_layout(args: ModelArgs, hidden: int, version: int, shared: bool) -> list[tuple[str | None, tuple]]:
    """The (name, shape) sequence of a llama2.c file; None names the RoPE tables v0 still writes (llama2.c's export.py)."""
    d, L, V, kv = args.dim, args.n_layers, args.vocab_size, args.kv_heads * args.head_dim
    per_layer = lambda kind, shape: [(f"layers.{i}.{kind}.weight", shape) for i in range(L)]  # noqa: E731
    attn = [
        *per_layer("attention.wq", (d, d)),
        *per_layer("attention.wk", (kv, d)),
        *per_layer("attention.wv", (kv, d)),
        *per_layer("attention.wo", (d, d)),
    ]
    ffn = [
        *per_layer("feed_forward.w1", (hidden, d)),
        *per_layer("feed_forward.w2", (d, hidden)),
        *per_layer("feed_forward.w3", (hidden, d)),
    ]
    if version == 0:
        table = (args.max_seq_len * args.head_dim // 2,)
        out = [
            ("tok_embeddings.weight", (V, d)),
            *per_layer("attention_norm", (d,)),
            *attn[: 4 * L],
            *per_layer("ffn_norm", (d,)),
            *ffn,
            ("norm.weight", (d,)),
            (None, table),
            (None, table),
        ]
    else:
        out = [
            *per_layer("attention_norm", (d,)),
            *per_layer("ffn_norm", (d,)),
            ("norm.weight", (d,)),
            ("tok_embeddings.weight", (V, d)),
            *attn,
            *ffn,
        ]
    if not shared:
        out.append(("output.weight", (V, d)))
    return out


def _open_llama2c(path: Path) -> _Source:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
    if head[:2] == b"PK":
        raise CheckpointError(
            f"{path} is a zip (a PyTorch checkpoint), not a llama2.c .bin; put it in a Hugging Face "
            "folder as pytorch_model.bin beside its config.json, or export it with llama2.c."
        )
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == _LLAMA2C_MAGIC:
        (version,) = struct.unpack_from("<i", head, 4)
        if version != 1:
            raise CheckpointError(
                f"{path}: llama2.c version {version} is not supported (version 2 is int8 Q8_0 "
                "quantized); export with version 0 or 1 (float32)."
            )
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
        _check_sizes(
            path,
            dim=dim,
            hidden_dim=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            vocab_size=vocab,
            max_seq_len=seq_len,
        )
        multiple_of, mult = ffn_args_for_hidden(dim, hidden)
        args = ModelArgs(
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads,
            vocab_size=vocab,
            multiple_of=multiple_of,
            ffn_dim_multiplier=mult,
            max_seq_len=seq_len,
        )
    except (ConfigError, CheckpointError) as e:
        raise CheckpointError(
            f"{path}: the header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, "
            f"seq_len) = {dims} does not describe a Llama model ({e}); is this a llama2.c .bin?"
        ) from None
    layout = _llama2c_layout(args, hidden, version, shared)
    n_floats = sum(math.prod(s) for _, s in layout)
    expected = offset + 4 * n_floats
    if size != expected:
        raise CheckpointError(
            f"{path}: the llama2.c v{version} header {dims} implies {expected:,} bytes but the file "
            f"has {size:,}; it is {'truncated' if size < expected else 'longer than its header says'}"
            " or not a llama2.c checkpoint."
        )
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
    return lambda: torch.from_numpy(flat[pos : pos + n]).view(shape)


def export_llama2c(model: Transformer, path: str | Path, version: int = 0) -> Path:
    """A llama2.c ``.bin`` (float32), v0 as run.c reads it or version 1; written atomically.

    The format has no room for norm_eps or rope_theta (run.c hard-codes 1e-5 and 10000), so other
    values are refused rather than silently lost. The classifier is stored shared when it equals the embedding.
    """
    a = model.args
    if version not in (0, 1):
        raise CheckpointError(f"llama2.c version must be 0 or 1, got {version!r}.")
    if a.norm_eps != 1e-5 or a.rope_theta != 10000.0:
        raise CheckpointError(
            f"llama2.c files cannot store norm_eps={a.norm_eps} / rope_theta={a.rope_theta} "
            "(run.c assumes 1e-5 and 10000); use save_model instead."
        )
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


# --- llama2.c's tokenizer.bin (written by tokenizer.py in karpathy/llama2.c, read by run.c) ------


class TokenizerBin(NamedTuple):
    """A llama2.c tokenizer.bin: the header and one (piece text, score) per id."""

    max_token_length: int
    pieces: list[tuple[str, float]]


def write_tokenizer_bin(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Export as llama2.c's `tokenizer.py` does, byte for byte (atomic write)."""
    records, scores = [], []
    for i in range(tokenizer.n_words):
        piece = tokenizer.sp.id_to_piece(i)
        # run.c prints BOS/EOS as these strings and strips the space after BOS when decoding.
        if i == tokenizer.bos_id:
            piece = "\n<s>\n"
        elif i == tokenizer.eos_id:
            piece = "\n</s>\n"
        records.append(piece.replace(_SPACE, " ").encode("utf-8"))  # byte pieces stay "<0xHH>"
        scores.append(tokenizer.sp.get_score(i))
    out = [struct.pack("<I", max(len(r) for r in records))]
    for record, score in zip(records, scores):
        out.append(struct.pack("<fI", score, len(record)) + record)
    atomic_write_bytes(path, b"".join(out))


def read_tokenizer_bin(path: str | os.PathLike, vocab_size: int | None = None) -> TokenizerBin:
    """Read a tokenizer.bin; the file does not store its count, so give the model's vocab_size
    (None reads records until the file ends)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No llama2.c tokenizer file at {path} (expected e.g. tokenizer.bin).")
    data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for a llama2.c tokenizer.bin header.")
    (max_len,) = struct.unpack_from("<I", data)
    pos = 4
    pieces: list[tuple[str, float]] = []
    while (pos < len(data)) if vocab_size is None else (len(pieces) < vocab_size):
        if pos + 8 > len(data):
            raise ValueError(
                f"{path} is truncated: it ends inside the record of id {len(pieces)}"
                f"{'' if vocab_size is None else f' of {vocab_size}'}; is vocab_size right?"
            )
        score, n = struct.unpack_from("<fi", data, pos)
        if not 0 <= n <= max_len or pos + 8 + n > len(data):
            raise ValueError(
                f"{path} is corrupt or truncated: id {len(pieces)} at byte {pos} claims "
                f"{n} bytes (header max_token_length={max_len}, {len(data) - pos - 8} left)."
            )
        raw = data[pos + 8 : pos + 8 + n]
        try:
            pieces.append((raw.decode("utf-8"), score))
        except UnicodeDecodeError:
            raise ValueError(
                f"{path}: id {len(pieces)} at byte {pos} is not UTF-8 text; "
                "the file is corrupt or not a llama2.c tokenizer.bin."
            ) from None
        pos += 8 + n
    if pos != len(data):
        raise ValueError(
            f"{path}: {len(data) - pos} bytes left after {len(pieces)} records; "
            "vocab_size does not match this file (or it is not a tokenizer.bin)."
        )
    return TokenizerBin(max_len, pieces)
