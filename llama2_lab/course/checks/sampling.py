"""check_temperature, check_top_k, check_top_p: the learner's sampling filters (notebook 08)."""

from __future__ import annotations

import torch

from ... import inference as _gen
from .builds import _run
from .harness import CheckResult, _Case, _Mistake


# =============================================================================================
# 08: the sampling filters
# =============================================================================================
def _logit_cases(seed0=0):
    return [
        _Case(
            "logits (50,)",
            torch.float32,
            {"logits": torch.randn(50, generator=torch.Generator().manual_seed(seed0)) * 3},
        ),
        _Case(
            "a batch of logits (3, 40)",
            torch.float32,
            {"logits": torch.randn(3, 40, generator=torch.Generator().manual_seed(seed0 + 1)) * 2},
        ),
        _Case(
            "peaked logits (2, 30)",
            torch.float32,
            {"logits": torch.randn(2, 30, generator=torch.Generator().manual_seed(seed0 + 2)) * 8},
        ),
    ]


def check_temperature(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(logits, T) -> probs`` with softmax(logits / T) for T in (0.5, 1, 1.7)."""
    cases = []
    for c in _logit_cases(10):
        for T in (0.5, 1.0, 1.7):
            cases.append(_Case(f"{c.label}, temperature {T}", torch.float32, {**c.data, "T": T}))
    ref = lambda c: torch.softmax(c.data["logits"] / c.data["T"], -1)
    mistakes = [
        _Mistake(
            "times_T",
            "your output matches softmax(logits * T): divide the logits by the temperature "
            "(T < 1 sharpens, T > 1 flattens).",
            lambda c: torch.softmax(c.data["logits"] * c.data["T"], -1),
        ),
        _Mistake(
            "after_softmax",
            "your output matches softmax(logits) / T: the temperature divides the logits "
            "before the softmax, not the probabilities after it.",
            lambda c: torch.softmax(c.data["logits"], -1) / c.data["T"],
        ),
        _Mistake(
            "after_softmax_again",
            "your output matches softmax(softmax(logits) / T): the temperature "
            "divides the logits, not the probabilities, and there is one softmax.",
            lambda c: torch.softmax(torch.softmax(c.data["logits"], -1) / c.data["T"], -1),
        ),
        _Mistake(
            "no_softmax",
            "your output matches logits / T: return probabilities, softmax(logits / T, -1).",
            lambda c: c.data["logits"] / c.data["T"],
        ),
        _Mistake(
            "wrong_dim",
            "your softmax runs over the wrong axis: use dim=-1 (the vocabulary).",
            lambda c: torch.softmax(c.data["logits"] / c.data["T"], 0),
        ),
    ]
    return _run(
        "check_temperature",
        "temperature scaling",
        cases,
        lambda c: fn(c.data["logits"].clone(), c.data["T"]),
        ref,
        mistakes,
        fallback="Expected softmax(logits / T, dim=-1).",
        verbose=verbose,
    )


def _kept_view(x: torch.Tensor):
    """(which entries are -inf, the finite values with -inf read as 0): comparable with allclose."""
    x = x.float()
    return (torch.isneginf(x).float(), torch.nan_to_num(x, neginf=0.0, posinf=0.0))


def _topk_variant(kind):
    def fn(c):
        x, k = c.data["logits"], c.data["k"]
        if kind == "ties_dropped":
            idx = torch.topk(x, k, dim=-1).indices
            keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, idx, True)
            return _kept_view(x.masked_fill(~keep, float("-inf")))
        if kind in ("k_plus_1", "k_minus_1"):
            kk = max(1, k + (1 if kind == "k_plus_1" else -1))
            return _kept_view(_gen.top_k_filter(x, kk))
        if kind == "zero_not_inf":
            return _kept_view(x.masked_fill(x < torch.topk(x, k, -1).values[..., -1:], 0.0))
        if kind == "smallest":
            kth = torch.topk(x, k, dim=-1, largest=False).values[..., -1:]
            return _kept_view(x.masked_fill(x > kth, float("-inf")))
        if kind == "probs":
            return _kept_view(torch.softmax(_gen.top_k_filter(x, k), -1))
        raise AssertionError(kind)

    return fn


def check_top_k(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(logits, k)`` with ``generate.top_k_filter``, ties at the k-th value included."""
    cases = []
    for c in _logit_cases(20):
        for k in (1, 5, 12):
            cases.append(_Case(f"{c.label}, k={k}", torch.float32, {**c.data, "k": k}))
    tied = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.5, 2.0, -1.0, 0.0]])
    cases.append(_Case("logits with a three-way tie at the k-th value, k=2", torch.float32, {"logits": tied, "k": 2}))
    cases.append(_Case("k larger than the vocabulary, k=20", torch.float32, {"logits": tied[0], "k": 20}))
    mistakes = [
        _Mistake(
            "ties_dropped",
            "your filter keeps exactly k tokens and drops logits tied with the k-th largest; "
            "keep every logit >= the k-th largest (mask logits < kth with -inf), as gpt-fast does.",
            _topk_variant("ties_dropped"),
        ),
        _Mistake(
            "k_plus_1",
            "your filter keeps k+1 tokens: the k-th largest is torch.topk(logits, k).values[..., -1:].",
            _topk_variant("k_plus_1"),
        ),
        _Mistake(
            "k_minus_1",
            "your filter keeps k-1 tokens: keep the logits >= the k-th largest (the k-th included).",
            _topk_variant("k_minus_1"),
        ),
        _Mistake(
            "zero_not_inf",
            "your filter sets the dropped logits to 0: a logit of 0 still gets probability "
            "after the softmax; set them to float('-inf').",
            _topk_variant("zero_not_inf"),
        ),
        _Mistake(
            "smallest",
            "your filter keeps the k smallest logits: torch.topk picks the largest by default.",
            _topk_variant("smallest"),
        ),
        _Mistake(
            "probs",
            "your filter returns probabilities: return the filtered logits (-inf outside the top k); "
            "the softmax comes after.",
            _topk_variant("probs"),
        ),
    ]

    def learner(c):
        out = fn(c.data["logits"].clone(), c.data["k"])
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"return the filtered logits as a tensor, got {type(out).__name__}")
        return _kept_view(out)

    return _run(
        "check_top_k",
        "top-k filter",
        cases,
        learner,
        lambda c: _kept_view(_gen.top_k_filter(c.data["logits"], min(c.data["k"], c.data["logits"].shape[-1]))),
        mistakes,
        fallback="Output 0 marks the dropped (-inf) entries, output 1 the kept values.",
        verbose=verbose,
    )


def _topp_variant(kind):
    def fn(c):
        probs, p = c.data["probs"], c.data["p"]
        ps, idx = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(ps, -1)
        if kind == "drops_crossing":
            drop = cum > p  # keeps only tokens whose cumulative mass stays within p
        elif kind == "no_renorm":
            drop = cum - ps >= p
        elif kind == "ascending":
            ps, idx = torch.sort(probs, dim=-1)
            cum = torch.cumsum(ps, -1)
            drop = cum - ps >= p
        else:
            drop = cum - ps >= p
        ps = ps.masked_fill(drop, 0.0)
        if kind == "sorted_order":
            return ps / ps.sum(-1, keepdim=True)
        kept = torch.zeros_like(probs).scatter(-1, idx, ps)
        if kind == "no_renorm":
            return kept
        return kept / kept.sum(-1, keepdim=True)

    return fn


def check_top_p(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(probs, p)`` with ``generate.top_p_filter`` (the token that crosses p is kept)."""
    cases = []
    for c in _logit_cases(30):
        probs = torch.softmax(c.data["logits"], -1)
        for p in (0.5, 0.9):
            cases.append(_Case(f"probs from {c.label}, p={p}", torch.float32, {"probs": probs, "p": p}))
    peaked = torch.tensor([0.7, 0.1, 0.08, 0.06, 0.04, 0.02])
    cases.append(_Case("p below the top token's probability (0.7), p=0.5", torch.float32, {"probs": peaked, "p": 0.5}))
    cases.append(_Case("p=1: nothing is cut", torch.float32, {"probs": peaked, "p": 1.0}))
    mistakes = [
        _Mistake(
            "drops_crossing",
            "your filter drops the token whose probability carries the mass past p: the "
            "nucleus is the smallest set whose mass reaches p, so keep a token while the mass of the tokens "
            "*before* it is below p (cumsum - sorted_probs < p), as Meta's sample_top_p does.",
            _topp_variant("drops_crossing"),
        ),
        _Mistake(
            "no_renorm",
            "your filter zeroes the tail but does not renormalise: divide by the kept mass so the result sums to 1.",
            _topp_variant("no_renorm"),
        ),
        _Mistake(
            "sorted_order",
            "your output is in sorted order: scatter the kept probabilities back to their "
            "vocabulary ids (torch.zeros_like(probs).scatter(-1, order, kept)).",
            _topp_variant("sorted_order"),
        ),
        _Mistake(
            "ascending",
            "your filter sorts ascending and so keeps the least likely tokens: sort with descending=True.",
            _topp_variant("ascending"),
        ),
    ]

    def learner(c):
        return fn(c.data["probs"].clone(), c.data["p"])

    return _run(
        "check_top_p",
        "top-p filter",
        cases,
        learner,
        lambda c: _gen.top_p_filter(c.data["probs"], c.data["p"]),
        mistakes,
        atol=1e-6,
        rtol=1e-5,
        fallback="Sort descending, keep a token while the mass before it is < p, scatter back, renormalise.",
        verbose=verbose,
    )
