"""Recorded attention as data, before any picture: ``ExplorerError`` for attention or tokens that cannot be
shown, the checks that turn a recorded dict into one (n_heads, S, S) array per layer, max-pooling long texts
into bins (``bin_attention``, ``bin_size_for``), which query heads share a KV head (``kv_groups``,
``head_label``) and short visible labels for SentencePiece pieces (``display_token``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import torch

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.attention\.pattern$")


class ExplorerError(ValueError):
    """Attention or tokens the explorer cannot show; the message says what is wrong and what to do."""


def bin_attention(mat, bin: int) -> np.ndarray:
    """Max-pool the last two axes in ``bin`` x ``bin`` blocks: (..., S, S) -> (..., ceil(S/bin), ceil(S/bin)).

    Max, not mean, so one strong link survives binning (the paper's Figure 10 does the same:
    "maximum activations ... we bin neighboring tokens together"). A partial last block is pooled
    over the tokens it has.
    """
    a = _to_numpy(mat)
    if a.ndim < 2:
        raise ExplorerError(f"bin_attention needs a (..., S, S) array, got shape {a.shape}.")
    if not isinstance(bin, (int, np.integer)) or bin < 1:
        raise ExplorerError(f"bin must be a positive integer, got {bin!r}.")
    if bin == 1:
        return a
    *lead, R, C = a.shape
    r, c = math.ceil(R / bin), math.ceil(C / bin)
    padded = np.full((*lead, r * bin, c * bin), -np.inf, dtype=a.dtype)
    padded[..., :R, :C] = a
    # (..., r·bin, c·bin) -> (..., r, bin, c, bin) -> max over both bin axes -> (..., r, c)
    return padded.reshape(*lead, r, bin, c, bin).max(axis=(-3, -1))


def bin_size_for(S: int, max_cells: int) -> int:
    """The smallest bin that brings S tokens down to at most ``max_cells`` cells."""
    if max_cells < 1:
        raise ExplorerError(f"max_cells must be >= 1, got {max_cells}.")
    return max(1, math.ceil(S / max_cells))


def display_token(tok: str, width: int = 12) -> str:
    """A token string as a short, visible label: SentencePiece's "▁" as a space, newlines as ↵."""
    t = _readable(tok).replace("\n", "↵").replace("\t", "⇥")
    if t.strip() == "":
        t = "·" * max(1, len(t)) if t else "∅"
    return t if len(t) <= width else t[: width - 1] + "…"


_BYTE_NAMES = {"<0x0A>": "↵", "<0x09>": "⇥", "<0x20>": " "}


def _readable(tok: str) -> str:
    """SentencePiece's visible space "▁" as a space, newline/tab byte pieces as ↵/⇥."""
    return _BYTE_NAMES.get(tok, tok).replace("\u2581", " ")


def kv_groups(n_heads: int, n_kv_heads: int) -> list[list[int]]:
    """Query heads of each KV head: head h reads KV head h // (n_heads / n_kv_heads), as ``repeat_kv``."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ExplorerError(
            f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}; pass the model's args.kv_heads."
        )
    n_rep = n_heads // n_kv_heads
    return [list(range(g * n_rep, (g + 1) * n_rep)) for g in range(n_kv_heads)]


def head_label(h: int, n_heads: int, n_kv_heads: int) -> str:
    """ "h5 (kv 1)": query head 5 reads key/value head 1."""
    return f"h{h} (kv {h // (n_heads // n_kv_heads)})"


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _check_tokens(tokens, S: int) -> list[str] | None:
    if tokens is None:
        return None
    tokens = list(tokens)
    if len(tokens) != S:
        raise ExplorerError(
            f"{len(tokens)} token strings for attention over {S} positions; "
            "pass one string per position (tokenizer.pieces(ids) of prompt + generated ids)."
        )
    return [str(t) for t in tokens]


def _normalise_patterns(patterns: Mapping) -> dict[int, np.ndarray]:
    """{layer index or "layers.{i}.attention.pattern": (n_heads, S, S) or (1, n_heads, S, S)}
    -> {i: float32 (n_heads, S, S)} sorted by layer; other recorded keys (block outputs) are ignored."""
    out: dict[int, np.ndarray] = {}
    for key, value in patterns.items():
        if isinstance(key, (int, np.integer)):
            i = int(key)
        else:
            m = _LAYER_KEY.match(str(key))
            if m is None:
                continue  # e.g. "layers.3.output" from run_with_cache
            i = int(m.group(1))
        a = _to_numpy(value)
        if a.ndim == 4:
            if a.shape[0] != 1:
                raise ExplorerError(
                    f"layer {i} attention has batch {a.shape[0]}; the explorer shows one "
                    "sequence: pass pattern[b] for the sequence b you want."
                )
            a = a[0]
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise ExplorerError(
                f"layer {i} attention must be (n_heads, S, S) or (1, n_heads, S, S), got {a.shape}. "
                "Record it with model.run_with_cache(tokens) or generate(..., record_attention=True)."
            )
        if a.shape[1] == 0:
            raise ExplorerError(f"layer {i} attention is empty (S = 0): record it on at least one token.")
        if not np.isfinite(a).all():
            raise ExplorerError(
                f"layer {i} attention holds NaN or infinite values: the logits that produced it were not "
                "finite (a corrupt checkpoint, or a float16 overflow); check the model before exploring it."
            )
        if (a < 0).any():
            raise ExplorerError(f"layer {i} attention has negative weights: these are not softmax probabilities.")
        out[i] = a
    if not out:
        raise ExplorerError(
            "no attention patterns found: expected keys like 'layers.0.attention.pattern' "
            "or layer indices; record them with model.run_with_cache(tokens)."
        )
    shapes = {a.shape for a in out.values()}
    if len(shapes) != 1:
        raise ExplorerError(f"layers disagree on the attention shape: {sorted(shapes)}.")
    return dict(sorted(out.items()))
