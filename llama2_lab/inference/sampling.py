"""Sampling: pure functions on logits (..., V), as Meta's ``llama/generation.py`` does it.

Divide the logits by the temperature, softmax, then nucleus (top-p) sampling [Holtzman et al. 2020];
top-k (gpt-fast, HF) is there too. Temperature 0 means greedy (argmax).

Degenerate but legal numbers have a defined meaning here, never a failure deep in ``torch.multinomial``:
a temperature below float32's smallest normal number (about 1.2e-38) is greedy (float32 cannot divide
by it), and where a small one overflows logits / T the row is shifted by its max first; the most likely token always survives the top-p filter, however small p is; NaN or +inf
logits (a corrupt checkpoint, or float16 overflow) raise ``LogitsError`` instead of being sampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.validate import check_float, check_int

# Below this a temperature is greedy: float32 cannot hold 1/T, so logits / T would overflow to inf.
MIN_TEMPERATURE = float(torch.finfo(torch.float32).tiny)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes a 64-bit seed


class LogitsError(ValueError):
    """Logits that cannot be sampled from: NaN or +inf, or a row with every token at -inf."""


def check_sampling(
    temperature: float, top_k: int | None = None, top_p: float | None = None, seed: int | None = None
) -> None:
    """Raise ValueError for sampling settings that mean nothing (numpy numbers are fine)."""
    check_float("temperature", temperature, at_least=0.0, note=" (0 = greedy)")
    if top_p is not None:
        p = check_float("top_p", top_p, note=" in (0, 1] (1 or None = no nucleus filter)")
        if not 0 < p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 or None = no nucleus filter), got {top_p!r}.")
    check_int("top_k", top_k, 1, allow_none=True, note=" (None = no top-k filter)")
    check_int("seed", seed, 0, maximum=MAX_SEED, allow_none=True, note=" (torch generators take 64 bits)")


def is_greedy(temperature: float) -> bool:
    """Temperature 0, or one so small that logits / T overflows float32: both mean argmax."""
    return temperature < MIN_TEMPERATURE


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (..., V) if every row can be sampled from, else a ``LogitsError``.

    -inf is fine (a masked token), NaN and +inf are not, nor a row that is -inf everywhere. One
    max per row finds all three: it is NaN if any entry is, +inf or -inf in the other two cases.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() == 0:
        raise TypeError(
            f"logits must be a floating-point tensor (..., V), got {type(logits).__name__}"
            f"{f' of dtype {logits.dtype}' if isinstance(logits, torch.Tensor) else ''}."
        )
    row_max = logits.detach().amax(dim=-1)  # (...,)
    if not bool(torch.isfinite(row_max).all()):
        bad = (~torch.isfinite(row_max)).nonzero()[0].tolist()
        kind = (
            "NaN"
            if bool(torch.isnan(logits).any())
            else "+inf"
            if bool((logits == float("inf")).any())
            else "-inf everywhere"
        )
        raise LogitsError(
            f"the logits hold {kind} (row {bad}); nothing can be sampled from them. NaN/inf logits "
            "come from a corrupt checkpoint or a dtype overflow (float16 overflows where bfloat16 and "
            "float32 do not): reload the weights, or run in float32 or bfloat16."
        )
    return logits


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
    drop = mass_before >= p
    drop[..., 0] = False  # the most likely token stays, even for a p that rounds to 0 in float32
    probs_sort = probs_sort.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, probs_idx, probs_sort)  # back to vocabulary order
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Meta's nucleus sampling: probs (B, V) -> token ids (B, 1).

    Sort, drop the tail beyond mass p, renormalise, draw, map back to vocabulary ids. Drawing in
    sorted order, as Meta does, means a seed gives the same token as Meta's code would.
    """
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (B, V)
    probs_sum = torch.cumsum(probs_sort, dim=-1)
    mask = probs_sum - probs_sort >= p  # the top token has 0 mass before it: kept ...
    mask[..., 0] = False  # ... also when p rounds to 0 in float32
    probs_sort = probs_sort.masked_fill(mask, 0.0)
    probs_sort = probs_sort / probs_sort.sum(dim=-1, keepdim=True)
    next_token = torch.multinomial(probs_sort, num_samples=1, generator=generator)  # (B, 1) sorted rank
    return torch.gather(probs_idx, -1, next_token)  # (B, 1) vocabulary ids


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(torch.float32)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T in float32, Meta's first step: (..., V) -> (..., V).

    Where a small T overflows that to +inf, the row is (logits - max) / T instead: the same
    distribution in exact arithmetic (softmax ignores a shift), and finite.
    """
    logits = logits.float()
    scaled = logits / temperature
    row_max = logits.amax(dim=-1, keepdim=True)  # (..., 1)
    over = scaled.amax(dim=-1, keepdim=True) == float("inf")  # (..., 1)
    if bool(over.any()):
        scaled = torch.where(over, (logits - row_max) / temperature, scaled)
    return scaled


def filtered_distributions(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> dict[str, torch.Tensor]:
    """The next-token distribution after each step of the sampler, for the sampling playground.

    logits (..., V) -> {"raw": softmax(logits), "temperature": softmax(logits / T),
    "top_k": after the top-k filter, "top_p": after the nucleus filter}, each (..., V) float32
    and summing to 1. A step that is off (top_k None, top_p None or 1) repeats the previous
    distribution; temperature 0 (or below ``MIN_TEMPERATURE``) is a one-hot on the argmax.
    "top_p" is what ``sample_next`` draws from.
    """
    check_sampling(temperature, top_k, top_p)
    logits = check_logits(logits).float()
    out = {"raw": torch.softmax(logits, dim=-1)}
    if is_greedy(temperature):
        out["temperature"] = out["top_k"] = out["top_p"] = _one_hot_argmax(logits)
        return out
    scaled = _scaled(logits, temperature)
    out["temperature"] = torch.softmax(scaled, dim=-1)
    out["top_k"] = out["temperature"] if top_k is None else torch.softmax(top_k_filter(scaled, top_k), dim=-1)
    out["top_p"] = out["top_k"] if top_p is None else top_p_filter(out["top_k"], top_p)
    return out


def logits_to_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution the sampler draws from: logits (..., V) -> probs (..., V) float32."""
    return filtered_distributions(logits, temperature, top_k, top_p)["top_p"]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.6,
    top_k: int | None = None,
    top_p: float | None = 0.9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token: logits (B, V) -> ids (B,), or (V,) -> a 0-d id. Temperature 0 is argmax.

    NaN or +inf logits raise ``LogitsError`` (argmax would silently pick a NaN's index, often 0 = <unk>).
    """
    check_sampling(temperature, top_k, top_p)
    return sample_checked(logits, temperature, top_k, top_p, generator)


def sample_checked(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``sample_next`` for settings already checked: the decode loops check them once, not every token.

    The logits are still checked every step, but greedy decoding folds that into its argmax: one
    ``max`` gives the ids and the values, and only a non-finite value costs the full check.
    """
    if is_greedy(temperature):
        values, ids = logits.max(dim=-1)  # the first maximal index, as argmax
        if not bool(torch.isfinite(values).all()):
            check_logits(logits)  # raises, naming NaN, +inf or a row that is -inf everywhere
        return ids
    check_logits(logits)
    rows = _scaled(logits, temperature).reshape(-1, logits.shape[-1])  # (B, V)
    if top_k is not None:
        rows = top_k_filter(rows, top_k)
    probs = torch.softmax(rows, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1:
        ids = sample_top_p(probs, top_p, generator)  # (B, 1)
    else:
        ids = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return ids.reshape(logits.shape[:-1])
