"""Sampling: pure functions on logits (..., V), as Meta's ``llama/generation.py`` does it.

Divide the logits by the temperature, softmax, then nucleus (top-p) sampling [Holtzman et al. 2020];
top-k (gpt-fast, HF) is there too. Temperature 0 means greedy (argmax).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..utils.validate import check_int


def check_sampling(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise ValueError for sampling settings that mean nothing."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}.")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 or None = no nucleus filter), got {top_p!r}.")
    check_int("top_k", top_k, 1, allow_none=True, note=" (None = no top-k filter)")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf: (..., V) -> (..., V).

    Logits tied with the k-th largest are kept too (as gpt-fast does); k > V keeps everything.
    """
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: the smallest set of most likely tokens whose mass is >= p, renormalised.

    probs (..., V) -> (..., V). The most likely token is always kept. Meta's ``sample_top_p``
    masks with ``> p`` where this uses ``>= p``; they differ only when a prefix sums to exactly p.
    """
    if p >= 1:
        return probs
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (..., V)
    mass_before = torch.cumsum(probs_sort, dim=-1) - probs_sort  # mass of the more likely tokens
    probs_sort = probs_sort.masked_fill(mass_before >= p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, probs_idx, probs_sort)  # back to vocabulary order
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Meta's nucleus sampling: probs (B, V) -> token ids (B, 1).

    Sort, drop the tail beyond mass p, renormalise, draw, map back to vocabulary ids. Drawing in
    sorted order, as Meta does, means a seed gives the same token as Meta's code would.
    """
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (B, V)
    probs_sum = torch.cumsum(probs_sort, dim=-1)
    mask = probs_sum - probs_sort >= p  # the top token has 0 mass before it: always kept
    probs_sort = probs_sort.masked_fill(mask, 0.0)
    probs_sort = probs_sort / probs_sort.sum(dim=-1, keepdim=True)
    next_token = torch.multinomial(probs_sort, num_samples=1, generator=generator)  # (B, 1) sorted rank
    return torch.gather(probs_idx, -1, next_token)  # (B, 1) vocabulary ids


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(torch.float32)


def filtered_distributions(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None) -> dict[str, torch.Tensor]:
    """The next-token distribution after each step of the sampler, for the sampling playground.

    logits (..., V) -> {"raw": softmax(logits), "temperature": softmax(logits / T),
    "top_k": after the top-k filter, "top_p": after the nucleus filter}, each (..., V) float32
    and summing to 1. A step that is off (top_k None, top_p None or 1) repeats the previous
    distribution; temperature 0 is a one-hot on the argmax. "top_p" is what ``sample_next`` draws from.
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    out = {"raw": torch.softmax(logits, dim=-1)}
    if temperature == 0:
        out["temperature"] = out["top_k"] = out["top_p"] = _one_hot_argmax(logits)
        return out
    scaled = logits / temperature
    out["temperature"] = torch.softmax(scaled, dim=-1)
    out["top_k"] = out["temperature"] if top_k is None else torch.softmax(top_k_filter(scaled, top_k), dim=-1)
    out["top_p"] = out["top_k"] if top_p is None else top_p_filter(out["top_k"], top_p)
    return out


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> torch.Tensor:
    """The distribution the sampler draws from: logits (..., V) -> probs (..., V) float32."""
    return filtered_distributions(logits, temperature, top_k, top_p)["top_p"]


def sample_next(logits: torch.Tensor, temperature: float = 0.6, top_k: int | None = None,
                top_p: float | None = 0.9, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token: logits (B, V) -> ids (B,), or (V,) -> a 0-d id. Temperature 0 is argmax."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    rows = logits.float().reshape(-1, logits.shape[-1]) / temperature  # (B, V)
    if top_k is not None:
        rows = top_k_filter(rows, top_k)
    probs = torch.softmax(rows, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1:
        ids = sample_top_p(probs, top_p, generator)  # (B, 1)
    else:
        ids = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return ids.reshape(logits.shape[:-1])

