"""Rotary position embeddings (RoPE; Su et al. 2021; Llama 2 paper §2.2).

Meta's convention, used by this package: the head vector is read as head_dim/2 *consecutive* pairs
(x[2i], x[2i+1]) and pair i at position m is rotated by the angle m·θ_i, θ_i = theta^(-2i/head_dim).
Hugging Face checkpoints use the "rotate-half" convention instead, pairing (x[i], x[i + head_dim/2]);
the two agree once the rows of wq and wk are permuted (``permute_to_hf`` / ``permute_from_hf``),
which is what formats/hf.py does when it reads or writes an HF folder (formats/hf.py).
"""

from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """θ_i = theta^(-2i/head_dim) for i < head_dim/2, float32; shape (head_dim/2,)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))


def precompute_freqs_cis(head_dim: int, end: int, theta: float = 10000.0) -> torch.Tensor:
    """Meta's table e^{i·m·θ_k} for positions m < end: complex64 of shape (end, head_dim/2)."""
    angles = torch.outer(torch.arange(end, dtype=torch.float32), rope_frequencies(head_dim, theta))
    return torch.polar(torch.ones_like(angles), angles)  # (end, head_dim/2) complex64


def freqs_cis_real(head_dim: int, end: int, theta: float = 10000.0) -> torch.Tensor:
    """The same table as real (cos, sin) pairs, float32 (end, head_dim/2, 2): no complex dtype needed."""
    return torch.view_as_real(precompute_freqs_cis(head_dim, end, theta)).contiguous()


def apply_rotary_emb(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate consecutive pairs of q (B, T, n_heads, head_dim) and k (B, T, n_kv_heads, head_dim).

    ``freqs_cis`` is (T, head_dim/2), complex as Meta's, or its real form (T, head_dim/2, 2).
    Computed in float32 and cast back, as in the reference.
    """
    return rotate_pairs(xq, freqs_cis), rotate_pairs(xk, freqs_cis)


def rotate_pairs(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """(x[2i] + i·x[2i+1]) · e^{i·m·θ_i} on x (B, T, H, head_dim).

    ``freqs_cis`` is complex (T, hd/2) or real (T, hd/2, 2): one position per time step, shared by the
    batch; or, with a leading batch dim, (B, T, hd/2[, 2]): each row at its own positions (padded chat
    batches, where rows of different lengths share one KV cache).
    """
    xf = x if x.dtype == torch.float32 else x.float()  # no conversion op when it is float32 already
    pairs = xf.reshape(*x.shape[:-1], -1, 2)  # (B, T, H, head_dim/2, 2)
    per_row = freqs_cis.dim() == (3 if freqs_cis.is_complex() else 4)
    if not torch.compiler.is_compiling():
        # Eager: one complex multiply is a single kernel (Meta's formulation), ~3x fewer ops than below.
        rot = freqs_cis if freqs_cis.is_complex() else torch.view_as_complex(freqs_cis)  # ([B,] T, head_dim/2)
        rot = rot[:, :, None, :] if per_row else rot[None, :, None, :]  # (B or 1, T, 1, head_dim/2)
        out = torch.view_as_real(torch.view_as_complex(pairs) * rot).flatten(-2)  # (B, T, H, head_dim)
        return out if out.dtype == x.dtype else out.type_as(x)
    # Compiled: the same rotation in real arithmetic, which the compiler fuses (it handles no complex dtypes).
    if freqs_cis.is_complex():
        freqs_cis = torch.view_as_real(freqs_cis)
    if not per_row:
        freqs_cis = freqs_cis[None]  # (1, T, head_dim/2, 2)
    cos, sin = freqs_cis[:, :, None, :, 0], freqs_cis[:, :, None, :, 1]  # (B or 1, T, 1, head_dim/2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (B, T, H, head_dim/2, 2)
    return rotated.flatten(-2).type_as(x)  # (B, T, H, head_dim)


# --- the rotate-half convention (Hugging Face, GPT-NeoX) -----------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_emb_rotate_half(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """HF-style RoPE: x·cos + rotate_half(x)·sin with the frequencies repeated over both halves.

    x is (B, T, H, head_dim), positions (T,); pairs are (x[i], x[i + head_dim/2]).
    """
    head_dim = x.shape[-1]
    angles = torch.outer(positions.float(), rope_frequencies(head_dim, theta).to(x.device))  # (T, hd/2)
    emb = torch.cat((angles, angles), dim=-1)[None, :, None, :]  # (1, T, 1, head_dim)
    xf = x.float()
    return (xf * emb.cos() + rotate_half(xf) * emb.sin()).type_as(x)


def permute_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of Meta's wq (n_heads) or wk (n_kv_heads) for rotate-half RoPE.

    Within each head, Meta row 2i + j (pair i, member j) becomes HF row j·head_dim/2 + i.
    w: (n_heads·head_dim, dim) -> same shape.
    """
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.view(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of ``permute_to_hf``: HF rotate-half rows back to Meta's interleaved pairs."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.view(n_heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)
