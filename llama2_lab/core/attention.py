"""Causal self-attention with n_kv_heads (MHA / GQA / MQA) and an explicit KV cache (Llama 2 §2.2, A.2.1).

Grouped-query attention keeps n_kv_heads key/value heads and lets each serve n_heads/n_kv_heads
query heads; ``repeat_kv`` expands them so the arithmetic is ordinary multi-head attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelArgs
from .rope import apply_rotary_emb

AUTO = "auto"  # Attention's default mask argument: build the causal mask from T, S and start_pos


class CacheError(ValueError):
    """The KV cache cannot take these tokens; the message says how to size it."""


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, S, n_kv_heads, head_dim) -> (B, S, n_kv_heads·n_rep, head_dim), each KV head repeated n_rep times.

    Query head h uses KV head h // n_rep, exactly as Meta's ``repeat_kv``.
    """
    if n_rep == 1:
        return x
    B, S, n_kv, hd = x.shape
    return x[:, :, :, None, :].expand(B, S, n_kv, n_rep, hd).reshape(B, S, n_kv * n_rep, hd)


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """Boolean (T, S), True where query i (absolute position S-T+i) may attend key j (j ≤ S-T+i)."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    return k_pos <= q_pos


def attention_mask(T: int, S: int, start_pos, device=None) -> torch.Tensor | None:
    """The mask for T new queries over S keys, or None when plain causal (T == S) or unmasked (T == 1).

    A tensor ``start_pos`` means the keys are a whole fixed-size cache: position j is visible to
    query i when j <= start_pos + i, which also hides the not-yet-written slots.
    """
    if isinstance(start_pos, torch.Tensor):
        q_pos = start_pos + torch.arange(T, device=device)  # (T,)
        return torch.arange(S, device=device)[None, :] <= q_pos[:, None]  # (T, S)
    if T == 1 or T == S:
        return None
    return causal_mask(T, S, device)


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(head_dim)) with masked scores set to -inf, computed in float32.

    q (B, H, T, head_dim), k (B, H, S, head_dim), mask (T, S) or (B, 1, T, S) bool, or None -> (B, H, T, S).
    """
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


class KVCache:
    """Preallocated keys and values for every layer: k, v of shape (B, n_kv_heads, max_len, head_dim).

    ``update(layer, start_pos, k, v)`` writes the new positions and returns the filled prefix.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        device=None,
        dtype=torch.float32,
    ):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.batch_size, self.max_len = batch_size, max_len

    def check(self, start_pos: int, T: int, B: int) -> None:
        if B > self.batch_size:
            raise CacheError(
                f"batch of {B} sequences but the cache holds {self.batch_size}; make a cache with batch_size={B}."
            )
        if start_pos + T > self.max_len:
            raise CacheError(
                f"positions {start_pos}..{start_pos + T - 1} do not fit a KV cache of {self.max_len} positions; "
                f"create it with max_len >= {start_pos + T} (model.new_cache(batch_size, max_len))."
            )

    def update(self, layer: int, start_pos, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, n_kv_heads, T, head_dim) -> the cached keys and values to attend to.

        With an int ``start_pos`` the filled prefix (B, n_kv_heads, start_pos+T, head_dim) comes back.
        With a tensor ``start_pos`` (the fixed-shape path used by torch.compile / CUDA graphs) the write is
        an ``index_copy_`` and the whole buffer (B, n_kv_heads, max_len, head_dim) comes back, so every
        decode step has the same shapes; the attention mask hides the unfilled positions.
        """
        B, _, T, _ = k.shape
        if isinstance(start_pos, torch.Tensor):
            positions = start_pos + torch.arange(T, device=k.device)  # (T,)
            self.k[layer].index_copy_(2, positions, k)
            self.v[layer].index_copy_(2, positions, v)
            return self.k[layer], self.v[layer]
        end = start_pos + T
        self.k[layer][:B, :, start_pos:end] = k
        self.v[layer][:B, :, start_pos:end] = v
        return self.k[layer][:B, :, :end], self.v[layer][:B, :, :end]

    def mark_static(self) -> KVCache:
        """Tell torch.compile the buffers never move, so CUDA graphs can capture in-place writes to them."""
        for t in self.k + self.v:
            torch._dynamo.mark_static_address(t)
        return self

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int = 0):
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.n_rep = args.n_rep
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        freqs_cis: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        record: dict | None = None,
        mask=AUTO,
    ) -> torch.Tensor:
        """x (B, T, dim) at positions start_pos.. -> (B, T, dim); with a cache, attends to all earlier positions.

        ``mask`` is what the transformer built once for every layer: None (plain causal, or everything
        when T == 1), a (T, S) or (B, 1, T, S) boolean (True = may attend). Left as AUTO, the layer
        builds the causal mask itself, so it also runs alone (as notebook 05 uses it).
        """
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, n_heads, head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, n_kv_heads, head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rotary_emb(q, k, freqs_cis)  # rotate q and k (never v) before caching
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        if cache is not None:
            k, v = cache.update(self.layer_id, start_pos, k, v)  # (B, n_kv_heads, S, head_dim), S = start_pos+T
        S = k.shape[2]
        if mask is AUTO:
            mask = attention_mask(T, S, start_pos, x.device)  # None means "causal" (T == S) or "all" (T == 1)
        if record is None:
            # Fast path: the fused kernel, GQA handled inside it (no copies of the cache).
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=self.n_rep > 1
            )
        else:
            # Inspection path: the same maths written out, so the probabilities can be kept.
            k = repeat_kv(k.transpose(1, 2), self.n_rep).transpose(1, 2)  # (B, n_heads, S, head_dim)
            v = repeat_kv(v.transpose(1, 2), self.n_rep).transpose(1, 2)
            probs = attention_probs(q, k, causal_mask(T, S, x.device) if mask is None else mask)  # (B, n_heads, T, S)
            record[f"layers.{self.layer_id}.attention.pattern"] = probs.detach()
            out = (probs @ v.float()).type_as(q)  # (B, n_heads, T, head_dim)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, n_heads·head_dim)
        return self.wo(out)
