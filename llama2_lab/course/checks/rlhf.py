"""Checks for the RLHF exercises (notebooks 10 and 11), in the style of the other checks: the learner's
function and the package's run on the same seeded inputs; when they differ, the learner's output is
compared with known-wrong variants, and the one it matches names the mistake in the hint.

==============================  ===================================================================
check_ranking_loss              ``fn(r_chosen, r_rejected, margin) -> scalar``: −log σ(r_c − r_r − m),
                                averaged over pairs [P2 eq. 2]
check_best_of_n                 ``fn(rewards) -> indices``: rewards (P, N) -> (P,) best candidate
check_kl_penalised_reward       ``fn(reward, logp, logp_ref, mask, beta) -> R``: reward (B,), the
                                rest (B, T) -> R (B,) = r − β Σ_t mask·(log π − log π_0) [P2 §3.2.3]
==============================  ===================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...training import reward as _reward
from ...training import rlhf as _rlhf
from .harness import CheckResult, _Case, _Mistake, _run

__all__ = ["check_best_of_n", "check_kl_penalised_reward", "check_ranking_loss"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the ranking loss ---------------------------------------------------------------------------
def _ranking_cases() -> list[_Case]:
    cases = []
    for i, n in enumerate((1, 5, 64)):
        g = _gen(10 + i)
        rc, rr = torch.randn(n, generator=g) * 2, torch.randn(n, generator=g) * 2
        margin = torch.tensor([(1.0, 2 / 3, 1 / 3, 0.0)[j % 4] for j in range(n)])
        cases.append(_Case(f"{n} pair(s), margins from the small set", torch.float32, dict(rc=rc, rr=rr, m=margin)))
    cases.append(
        _Case(
            "margin 0 everywhere",
            torch.float32,
            dict(rc=torch.tensor([2.0, 0.5]), rr=torch.tensor([1.0, 1.5]), m=torch.zeros(2)),
        )
    )
    return cases


_RANKING_MISTAKES = [
    _Mistake(
        "margin_added",
        "your loss matches −log σ(r_c − r_r + m): the margin is subtracted, so a clearly "
        "better pair must win by at least m before the loss gets small.",
        lambda c: -F.logsigmoid(c.data["rc"] - c.data["rr"] + c.data["m"]).mean(),
    ),
    _Mistake(
        "no_margin",
        "your loss ignores the margin: subtract m(r) inside the sigmoid, −log σ(r_c − r_r − m).",
        lambda c: -F.logsigmoid(c.data["rc"] - c.data["rr"]).mean(),
    ),
    _Mistake(
        "swapped",
        "your loss matches −log σ(r_r − r_c − m): chosen and rejected are swapped; the chosen "
        "reply's score comes first.",
        lambda c: -F.logsigmoid(c.data["rr"] - c.data["rc"] - c.data["m"]).mean(),
    ),
    _Mistake(
        "sum",
        "your loss matches the sum over pairs: average it (.mean()), so the scale does not depend on the batch size.",
        lambda c: -F.logsigmoid(c.data["rc"] - c.data["rr"] - c.data["m"]).sum(),
    ),
    _Mistake(
        "no_log",
        "your loss matches −σ(r_c − r_r − m) (or 1 − σ): take the log of the sigmoid; F.logsigmoid is the stable way.",
        lambda c: -torch.sigmoid(c.data["rc"] - c.data["rr"] - c.data["m"]).mean(),
    ),
    _Mistake(
        "one_minus",
        "your loss matches 1 − σ(r_c − r_r − m): the loss is −log σ(...), use F.logsigmoid.",
        lambda c: (1 - torch.sigmoid(c.data["rc"] - c.data["rr"] - c.data["m"])).mean(),
    ),
]


def check_ranking_loss(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(r_chosen, r_rejected, margin)`` with `reward.ranking_loss`."""
    return _run(
        "check_ranking_loss",
        _ranking_cases(),
        lambda c: fn(c.data["rc"].clone(), c.data["rr"].clone(), c.data["m"].clone()),
        lambda c: _reward.ranking_loss(c.data["rc"], c.data["rr"], c.data["m"]),
        _RANKING_MISTAKES,
        atol=1e-5,
        rtol=1e-5,
        fallback="L = −log σ(r_c − r_r − m(r)), averaged over pairs.",
        verbose=verbose,
    )


# --- best-of-N ----------------------------------------------------------------------------------
def _bon_cases() -> list[_Case]:
    cases = [_Case("1 prompt, 4 candidates", torch.float32, dict(r=torch.tensor([[0.1, 2.0, -1.0, 0.5]])))]
    for i, (p, n) in enumerate(((3, 5), (8, 16), (5, 3))):
        cases.append(
            _Case(f"{p} prompts x {n} candidates", torch.float32, dict(r=torch.randn(p, n, generator=_gen(20 + i))))
        )
    return cases


_BON_MISTAKES = [
    _Mistake(
        "argmin",
        "you picked the lowest reward: best-of-N keeps the candidate with the highest reward (argmax).",
        lambda c: c.data["r"].argmin(-1),
    ),
    _Mistake(
        "wrong_dim",
        "you took the best over prompts (dim 0): rewards are (prompts, candidates), pick over dim=-1.",
        lambda c: c.data["r"].argmax(0),
    ),
    _Mistake(
        "values",
        "you returned the best reward values: return the candidates' indices (argmax, not max).",
        lambda c: c.data["r"].max(-1).values,
    ),
    _Mistake(
        "median",
        "you picked the median candidate: Figure 7's point is that the max pulls away from the median.",
        lambda c: c.data["r"].median(-1).indices,
    ),
]


def check_best_of_n(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(rewards)`` (P, N) -> (P,) indices with `rlhf.best_of_n`."""
    return _run(
        "check_best_of_n",
        _bon_cases(),
        lambda c: torch.as_tensor(fn(c.data["r"].clone())).float(),
        lambda c: _rlhf.best_of_n(c.data["r"]).float(),
        _BON_MISTAKES,
        atol=0,
        rtol=0,
        fallback="For each prompt (row), the index of the candidate with the highest reward.",
        verbose=verbose,
    )


# --- the KL-penalised reward -------------------------------------------------------------------
def _kl_cases() -> list[_Case]:
    cases = [
        _Case(
            "2 replies of 3 tokens, hand-sized",
            torch.float32,
            dict(
                r=torch.tensor([1.0, -0.5]),
                lp=torch.tensor([[-1.0, -2.0, -0.3], [-0.5, -0.5, -4.0]]),
                lr=torch.tensor([[-1.5, -1.0, -3.0], [-0.7, -0.2, -1.0]]),
                m=torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
                beta=0.1,
            ),
        )
    ]
    for i, (B, T, beta) in enumerate(((4, 7, 0.01), (6, 12, 0.5))):
        g = _gen(30 + i)
        lp = -torch.rand(B, T, generator=g) * 3
        lr = -torch.rand(B, T, generator=g) * 3
        m = (torch.rand(B, T, generator=g) > 0.3).float()
        cases.append(
            _Case(
                f"{B} replies, {T} positions, beta {beta}",
                torch.float32,
                dict(r=torch.randn(B, generator=g), lp=lp, lr=lr, m=m, beta=beta),
            )
        )
    return cases


def _kl_variant(c: _Case, kl) -> torch.Tensor:
    return c.data["r"] - c.data["beta"] * kl


_KL_MISTAKES = [
    _Mistake(
        "kl_sign",
        "your KL has the wrong sign: it is log π − log π_0 (policy minus reference) on the tokens the policy sampled.",
        lambda c: _kl_variant(c, ((c.data["lr"] - c.data["lp"]) * c.data["m"]).sum(-1)),
    ),
    _Mistake(
        "beta_added",
        "you added the penalty: R = r − β·KL, the KL term pulls the policy back toward π_0.",
        lambda c: c.data["r"] + c.data["beta"] * ((c.data["lp"] - c.data["lr"]) * c.data["m"]).sum(-1),
    ),
    _Mistake(
        "no_mask",
        "your KL sums over every position, the prompt and the padding too: multiply by the mask "
        "so only the reply's tokens count.",
        lambda c: _kl_variant(c, (c.data["lp"] - c.data["lr"]).sum(-1)),
    ),
    _Mistake(
        "mean_tokens",
        "your KL is a mean over tokens: the KL of a reply is the sum over its tokens (log π(y) = Σ_t log π(y_t)).",
        lambda c: _kl_variant(
            c, ((c.data["lp"] - c.data["lr"]) * c.data["m"]).sum(-1) / c.data["m"].sum(-1).clamp(min=1)
        ),
    ),
    _Mistake(
        "mean_positions",
        "your KL is a mean over positions: the KL of a reply is the masked sum over its tokens "
        "(log π(y) = Σ_t log π(y_t)).",
        lambda c: _kl_variant(c, ((c.data["lp"] - c.data["lr"]) * c.data["m"]).mean(-1)),
    ),
    _Mistake(
        "no_beta",
        "you subtracted the KL without β: R = r − β·KL.",
        lambda c: c.data["r"] - ((c.data["lp"] - c.data["lr"]) * c.data["m"]).sum(-1),
    ),
]


def check_kl_penalised_reward(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(reward, logp, logp_ref, mask, beta)`` -> R (B,) with `rlhf.kl_penalised_reward`."""

    def learner(c):
        out = fn(c.data["r"].clone(), c.data["lp"].clone(), c.data["lr"].clone(), c.data["m"].clone(), c.data["beta"])
        return out[0] if isinstance(out, tuple) else out

    return _run(
        "check_kl_penalised_reward",
        _kl_cases(),
        learner,
        lambda c: _rlhf.kl_penalised_reward(c.data["r"], c.data["lp"], c.data["lr"], c.data["m"], c.data["beta"])[0],
        _KL_MISTAKES,
        atol=1e-5,
        rtol=1e-5,
        fallback="R = r − β Σ_t mask·(log π − log π_0), one value per reply.",
        verbose=verbose,
    )
