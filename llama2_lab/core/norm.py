"""RMSNorm (Llama's pre-normalisation) and LayerNorm for contrast (Llama 2 paper §2.2).

RMSNorm rescales each vector by the reciprocal of its root mean square; unlike LayerNorm it does
not subtract the mean and has no bias. It is computed in float32 and cast back, as in Meta's code,
because squaring bf16/fp16 activations loses precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim; (…, dim) -> (…, dim), dtype of x."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        # The same formula as below in one fused kernel (torch >= 2.4): decoding one token is
        # hundreds of tiny ops, and this norm alone was eight of them per call.
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # eps inside the square root
    return normed.type_as(x) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # the gain g, initialised to 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (…, dim) -> (…, dim)
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Classic LayerNorm (re-centre, then rescale, then gain and bias), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (…, dim) -> (…, dim)
        xf = x.float()
        centred = xf - xf.mean(-1, keepdim=True)
        normed = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight + self.bias
