"""SwiGLU feed-forward: w2(silu(w1 x) * w3 x), no biases (Llama 2 paper §2.2; Shazeer 2020).

The gate (w1) and the value (w3) both map dim -> hidden; w2 maps back. Because there are three
matrices instead of two, the hidden width is 2/3 of the usual 4·dim, rounded up (see config.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ffn_hidden_dim


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """Pure-function form: (…, dim) with w1, w3 (hidden, dim) and w2 (dim, hidden) -> (…, dim)."""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up (value)

    @classmethod
    def from_sizes(cls, dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> FeedForward:
        return cls(dim, ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, T, dim)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, hidden) gated, then back to dim
