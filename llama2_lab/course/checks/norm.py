"""check_rmsnorm: the learner's RMSNorm against the package's, over dtypes, shapes and eps values."""

from __future__ import annotations

import torch
from torch import nn

from ...core import norm as _norm
from .harness import CheckResult, _build, _Case, _is_module_class, _Mistake, _randn, _run, _SetupError


# =============================================================================================
# RMSNorm
# =============================================================================================
def _rms(x, w, eps):  # the package's version, as a pure function
    return _norm.rms_norm(x, w, eps)


def _rms_variant(kind):
    def fn(case):
        x, w, eps = case.data["x"], case.data["w"], case.data["eps"]
        xf = x if kind == "no_upcast" else x.float()
        if kind == "layernorm":
            xf = xf - xf.mean(-1, keepdim=True)
        if kind == "wrong_dim_rows":
            ms = xf.pow(2).mean(-2, keepdim=True)
        elif kind == "wrong_dim_0":
            ms = xf.pow(2).mean(0, keepdim=True)
        elif kind == "wrong_dim_all":
            ms = xf.pow(2).mean()
        elif kind == "sum_not_mean":
            ms = xf.pow(2).sum(-1, keepdim=True)
        elif kind == "divides_by_std":
            ms = xf.var(-1, keepdim=True)
        else:
            ms = xf.pow(2).mean(-1, keepdim=True)
        if kind == "eps_outside_sqrt":
            out = xf / (ms.sqrt() + eps)
        elif kind == "no_eps":
            out = xf * torch.rsqrt(ms)
        elif kind.startswith("eps_fixed_"):
            out = xf * torch.rsqrt(ms + float(kind[len("eps_fixed_") :]))
        elif kind == "sqrt_not_rsqrt":
            out = xf * torch.sqrt(ms + eps)
        else:
            out = xf * torch.rsqrt(ms + eps)
        out = out.type_as(x)
        return out if kind == "no_gain" else out * w

    return fn


_RMS_MISTAKES = [
    _Mistake(
        "layernorm",
        "your output matches LayerNorm: RMSNorm does not subtract the mean. Use "
        "x * rsqrt(mean(x², -1) + eps) with no mean-centering (and no bias).",
        _rms_variant("layernorm"),
    ),
    _Mistake(
        "eps_outside_sqrt",
        "your output matches eps added outside the square root, x / (sqrt(mean(x²)) + eps). "
        "Put eps inside: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps).",
        _rms_variant("eps_outside_sqrt"),
    ),
    _Mistake(
        "no_eps",
        "your output matches RMSNorm without eps: add eps inside the square root, rsqrt(mean(x²) + eps), "
        "so tiny vectors do not blow up.",
        _rms_variant("no_eps"),
    ),
    _Mistake(
        "eps_ignored",
        "your output matches eps = 1e-5 although the module was built with another eps: store "
        "the constructor's eps (self.eps = eps) and use self.eps in forward (Meta's params.json sets norm_eps; "
        "some Hugging Face configs use 1e-6).",
        _rms_variant("eps_fixed_1e-05"),
    ),
    _Mistake(
        "eps_ignored",
        "your output matches eps = 1e-6 although the module was built with another eps: store "
        "the constructor's eps (self.eps = eps) and use self.eps in forward.",
        _rms_variant("eps_fixed_1e-06"),
    ),
    _Mistake(
        "no_gain",
        "your output matches RMSNorm without the gain: multiply by self.weight (the learned per-channel gain g).",
        _rms_variant("no_gain"),
    ),
    _Mistake(
        "wrong_dim",
        "your output matches the mean of x² taken over the wrong dim: normalise each vector over "
        "its last dim, x.pow(2).mean(-1, keepdim=True).",
        _rms_variant("wrong_dim_rows"),
    ),
    _Mistake(
        "wrong_dim",
        "your output matches the mean of x² taken over the wrong dim (dim 0): normalise each "
        "vector over its last dim, x.pow(2).mean(-1, keepdim=True).",
        _rms_variant("wrong_dim_0"),
    ),
    _Mistake(
        "wrong_dim",
        "your output matches one mean of x² over the whole tensor: normalise each vector over "
        "its last dim, x.pow(2).mean(-1, keepdim=True).",
        _rms_variant("wrong_dim_all"),
    ),
    _Mistake(
        "sum_not_mean",
        "your output matches the sum of squares instead of their mean: use .mean(-1, keepdim=True).",
        _rms_variant("sum_not_mean"),
    ),
    _Mistake(
        "divides_by_std",
        "your output matches division by the standard deviation (x.var / x.std): RMSNorm "
        "divides by the root mean square, sqrt(mean(x²) + eps), which does not subtract the mean.",
        _rms_variant("divides_by_std"),
    ),
    _Mistake(
        "sqrt_not_rsqrt",
        "your output matches multiplying by the RMS: divide by it instead (torch.rsqrt(ms + eps) is 1/sqrt).",
        _rms_variant("sqrt_not_rsqrt"),
    ),
    _Mistake(
        "no_upcast",
        "your output matches RMSNorm computed in the input's low precision: in float16, x² "
        "overflows above 256. Compute in float32 (x.float()), then cast back with .type_as(x).",
        _rms_variant("no_upcast"),
    ),
]


def _rms_cases() -> list[_Case]:
    spec = [  # (shape, dtype, eps, scale, shift, note)
        ((2, 5, 16), torch.float32, 1e-5, 1.0, 0.5, "random values with a non-zero mean"),
        ((3, 64), torch.float32, 1e-6, 2.0, 0.0, "2-D input"),
        ((1, 4, 32), torch.float32, 1e-5, 1e-3, 0.0, "tiny values, mean(x²) ≈ 1e-6 < eps"),
        ((2, 3, 8), torch.float32, 1e-5, 1.0, -1.0, "negative mean"),
        ((2, 7, 128), torch.bfloat16, 1e-5, 1.0, 0.2, "bfloat16"),
        ((2, 4, 64), torch.float16, 1e-5, 300.0, 0.0, "float16 with large values (x² > 65504)"),
        ((2, 3, 16), torch.float32, 0.5, 1.0, 0.0, "a large eps, so the eps your module uses shows"),
        ((1, 3, 32), torch.float32, 1e-3, 0.03, 0.0, "eps 1e-3 on small values"),
    ]
    cases = []
    for i, (shape, dtype, eps, scale, shift, note) in enumerate(spec):
        x = _randn(*shape, seed=100 + i, scale=scale, shift=shift).to(dtype)
        w = _randn(shape[-1], seed=200 + i, scale=0.5, shift=1.0).to(dtype)
        cases.append(
            _Case(
                f"x {tuple(shape)} {str(dtype).replace('torch.', '')}, eps {eps:g} ({note})",
                dtype,
                dict(x=x, w=w, eps=eps),
            )
        )
    return cases


def _rms_learner(obj):
    if isinstance(obj, nn.Module) or _is_module_class(obj):

        def run(case):
            x, w, eps = case.data["x"], case.data["w"], case.data["eps"]
            dim = x.shape[-1]
            # The module is built with the case's eps and must use it: no eps is patched in afterwards.
            m = (
                obj
                if isinstance(obj, nn.Module)
                else _build(obj, ((dim,), {"eps": eps}), ((dim, eps), {}), ((dim,), {}))
            )
            gain = getattr(m, "weight", None)
            if not isinstance(gain, torch.Tensor):
                ones = [p for _, p in m.named_parameters() if p.shape == (dim,)]
                if len(ones) != 1:
                    raise _SetupError(
                        f"{type(m).__name__}({dim}) should hold one gain of shape ({dim},) named "
                        f"`weight` (Meta's name); found parameters "
                        f"{[(n, tuple(p.shape)) for n, p in m.named_parameters()]}."
                    )
                gain = ones[0]
            if tuple(gain.shape) != (dim,):
                raise _SetupError(f"the gain `weight` has shape {tuple(gain.shape)}, expected ({dim},) for dim={dim}.")
            m = m.to(x.dtype)
            gain = getattr(m, "weight", gain)
            gain.data.copy_(w)
            return m(x)

        return run
    if callable(obj):
        return lambda case: obj(case.data["x"], case.data["w"], case.data["eps"])
    raise TypeError(
        f"check_rmsnorm takes a class, a module or a function fn(x, weight, eps); got {type(obj).__name__}."
    )


def check_rmsnorm(fn_or_module_class, verbose: bool = True) -> CheckResult:
    """Compare a learner's RMSNorm (class ``C(dim, eps=...)`` with gain ``weight``, or ``fn(x, weight, eps)``)."""
    return _run(
        "check_rmsnorm",
        _rms_cases(),
        _rms_learner(fn_or_module_class),
        lambda c: _rms(c.data["x"], c.data["w"], c.data["eps"]),
        _RMS_MISTAKES,
        fallback="Build it from x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight, in float32.",
        verbose=verbose,
        what="RMSNorm",
    )
