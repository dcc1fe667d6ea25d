"""check_rope: the learner's RoPE table and rotation against Meta's formulation."""

from __future__ import annotations

import torch

from ...core import rope as _rope
from .harness import CheckResult, _Case, _Mistake, _randn, _report, _run


# =============================================================================================
# RoPE
# =============================================================================================
def _rope_table_variant(kind):
    def fn(case):
        hd, end, theta = case.data["head_dim"], case.data["end"], case.data["theta"]
        i = torch.arange(0, hd, 2)[: hd // 2].float()
        if kind == "theta_ignored":
            freqs = 1.0 / (10000.0 ** (i / hd))
        elif kind == "exponent_i":
            freqs = 1.0 / (theta ** (torch.arange(hd // 2).float() / hd))
        elif kind == "no_reciprocal":
            freqs = theta ** (i / hd)
        else:
            freqs = 1.0 / (theta ** (i / hd))
        t = torch.arange(1, end + 1).float() if kind == "positions_from_1" else torch.arange(end).float()
        angles = torch.outer(t, freqs)
        if kind == "sin_cos_order":
            return torch.stack((angles.sin(), angles.cos()), -1)
        return torch.stack((angles.cos(), angles.sin()), -1)

    return fn


_ROPE_TABLE_MISTAKES = [
    _Mistake(
        "theta_ignored",
        "your table matches theta = 10000 although another theta was asked for: use the "
        "`theta` argument (Code Llama uses 1e6).",
        _rope_table_variant("theta_ignored"),
    ),
    _Mistake(
        "exponent",
        "your frequencies match theta^(−i/head_dim): the exponent is 2i/head_dim, i.e. "
        "torch.arange(0, head_dim, 2) / head_dim.",
        _rope_table_variant("exponent_i"),
    ),
    _Mistake(
        "no_reciprocal",
        "your frequencies match theta^(+2i/head_dim): θ_i = 1 / theta^(2i/head_dim), slower "
        "rotations for higher pairs.",
        _rope_table_variant("no_reciprocal"),
    ),
    _Mistake(
        "positions_off_by_one",
        "your table matches positions 1…end: positions start at 0 "
        "(torch.arange(end)), so position 0 is not rotated at all.",
        _rope_table_variant("positions_from_1"),
    ),
    _Mistake(
        "sin_cos_order",
        "your table matches (sin, cos) pairs: the real form is (cos, sin) = "
        "torch.view_as_real(torch.polar(ones, angles)).",
        _rope_table_variant("sin_cos_order"),
    ),
]


def _to_real_table(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor) and t.is_complex():
        return torch.view_as_real(t)
    return t


def _rope_apply_variant(kind):
    def fn(case):
        xq, xk, table = case.data["xq"], case.data["xk"], case.data["table"]  # table (T, hd/2, 2)
        cos, sin = table[..., 0], table[..., 1]
        if kind == "sin_sign":
            sin = -sin
        if kind == "cos_sin_swapped":
            cos, sin = sin, cos

        def rot(x):
            xf = x.float()
            if kind == "rotate_half":
                a, b = xf.chunk(2, dim=-1)  # pairs (i, i + hd/2)
            else:
                pairs = xf.reshape(*x.shape[:-1], -1, 2)
                a, b = pairs[..., 0], pairs[..., 1]
            c, s = cos[None, :, None, :], sin[None, :, None, :]
            ra, rb = a * c - b * s, a * s + b * c
            out = torch.cat((ra, rb), -1) if kind == "rotate_half" else torch.stack((ra, rb), -1).flatten(-2)
            return out.type_as(x)

        if kind == "k_not_rotated":
            return rot(xq), xk
        if kind == "q_not_rotated":
            return xq, rot(xk)
        if kind == "not_rotated":
            return xq, xk
        return rot(xq), rot(xk)

    return fn


_ROPE_MISTAKES = [
    _Mistake(
        "rotate_half",
        "your output matches rotate-half pairs (x[i], x[i + head_dim/2]) — the Hugging Face "
        "convention. Meta's checkpoints pair consecutive coordinates (x[2i], x[2i+1]): "
        "x.float().reshape(*x.shape[:-1], -1, 2).",
        _rope_apply_variant("rotate_half"),
    ),
    _Mistake(
        "sin_sign",
        "your output matches a rotation by −mθ (the sign of sin flipped): x'[2i] = a·cos − b·sin, "
        "x'[2i+1] = a·sin + b·cos.",
        _rope_apply_variant("sin_sign"),
    ),
    _Mistake(
        "cos_sin_swapped",
        "your output matches cos and sin swapped: the first component is a·cos − b·sin.",
        _rope_apply_variant("cos_sin_swapped"),
    ),
    _Mistake(
        "k_not_rotated",
        "q is rotated but k is returned unrotated: rotate both (the relative-position property "
        "needs the same rotation on q and k).",
        _rope_apply_variant("k_not_rotated"),
    ),
    _Mistake(
        "q_not_rotated",
        "k is rotated but q is returned unrotated: rotate both q and k.",
        _rope_apply_variant("q_not_rotated"),
    ),
    _Mistake(
        "not_rotated",
        "q and k come back unrotated: multiply each pair by e^{i·m·θ_i} (freqs_cis).",
        _rope_apply_variant("not_rotated"),
    ),
]


def _rope_apply_cases() -> list[_Case]:
    spec = [  # (B, T, n_heads, n_kv_heads, head_dim, start, dtype)
        (1, 6, 2, 2, 8, 0, torch.float32),
        (2, 5, 4, 2, 16, 0, torch.float32),
        (1, 3, 4, 1, 32, 7, torch.float32),
        (2, 9, 2, 2, 64, 0, torch.float32),
        (2, 4, 4, 2, 16, 0, torch.bfloat16),
    ]
    cases = []
    for i, (B, T, H, KV, hd, start, dtype) in enumerate(spec):
        xq = _randn(B, T, H, hd, seed=300 + i).to(dtype)
        xk = _randn(B, T, KV, hd, seed=400 + i).to(dtype)
        table = _rope.freqs_cis_real(hd, start + T)[start:]  # (T, hd/2, 2)
        label = (
            f"xq {(B, T, H, hd)}, xk {(B, T, KV, hd)} {str(dtype).replace('torch.', '')}, "
            f"positions {start}..{start + T - 1}"
        )
        cases.append(_Case(label, dtype, dict(xq=xq, xk=xk, table=table, start=start, head_dim=hd)))
    return cases


def _rope_table_cases() -> list[_Case]:
    spec = [(8, 6, 10000.0), (16, 12, 10000.0), (32, 64, 1e6), (128, 40, 10000.0)]
    return [
        _Case(
            f"precompute_freqs_cis(head_dim={hd}, end={end}, theta={theta:g})",
            torch.float32,
            dict(head_dim=hd, end=end, theta=theta),
        )
        for hd, end, theta in spec
    ]


def check_rope(apply_rotary_emb=None, precompute_freqs_cis=None, verbose: bool = True) -> CheckResult:
    """Compare ``apply_rotary_emb(xq, xk, freqs_cis)`` and/or ``precompute_freqs_cis(head_dim, end, theta)``.

    The apply function gets Meta's complex64 table (T, head_dim/2) — or the learner's own table when
    ``precompute_freqs_cis`` is given too; it must return (xq_rotated, xk_rotated) in the input dtype.
    """
    if apply_rotary_emb is None and precompute_freqs_cis is None:
        raise TypeError("check_rope needs apply_rotary_emb=..., precompute_freqs_cis=... or both.")
    result = None
    notes: list[str] = []
    if precompute_freqs_cis is not None:  # check the table first; its verdict is printed only if it fails

        def table_learner(case):
            d = case.data
            table = precompute_freqs_cis(d["head_dim"], d["end"], d["theta"])
            if isinstance(table, torch.Tensor) and table.dtype in (torch.complex128, torch.float64):
                # Right values in a wider dtype are fine: note it, compare the values.
                if not notes:
                    notes.append(
                        f"your table is {str(table.dtype).replace('torch.', '')}; Meta's is complex64 "
                        "(float32 angles). The values agree, so it is accepted; complex64 halves its memory "
                        "and matches the reference bit for bit."
                    )
                table = table.to(torch.complex64 if table.is_complex() else torch.float32)
            return _to_real_table(table)

        result = _run(
            "check_rope (precompute_freqs_cis)",
            _rope_table_cases(),
            table_learner,
            lambda c: _rope.freqs_cis_real(c.data["head_dim"], c.data["end"], c.data["theta"]),
            _ROPE_TABLE_MISTAKES,
            atol=1e-4,
            rtol=1e-4,
            fallback="Angles are outer(arange(end), 1 / theta ** (arange(0, hd, 2) / hd)); the table "
            "is torch.polar(ones, angles), complex64 (end, head_dim/2).",
            verbose=False,
            what="RoPE table" if apply_rotary_emb is None else "RoPE",
        )
        if not result.passed or apply_rotary_emb is None:
            if result.passed and notes:
                result.note = notes[0]
            return _report(result, verbose)

    def apply_learner(case):
        d = case.data
        if precompute_freqs_cis is not None:
            freqs = precompute_freqs_cis(d["head_dim"], d["start"] + d["xq"].shape[1], 10000.0)[d["start"] :]
        else:
            freqs = torch.view_as_complex(d["table"].contiguous())  # (T, hd/2) complex64, as Meta's
        return apply_rotary_emb(d["xq"].clone(), d["xk"].clone(), freqs)

    out = _run(
        "check_rope",
        _rope_apply_cases(),
        apply_learner,
        lambda c: _rope.apply_rotary_emb(c.data["xq"], c.data["xk"], c.data["table"]),
        _ROPE_MISTAKES,
        fallback="Pair (x[2i], x[2i+1]) at position m is rotated by the angle m·θ_i, in float32, then cast back.",
        verbose=False,
        what="apply_rotary_emb" if precompute_freqs_cis is None else "RoPE",
    )
    if result is not None and out.passed:
        out.cases += result.cases
        out.max_error = max(out.max_error, result.max_error)
        if notes:
            out.note = notes[0]
    return _report(out, verbose)
