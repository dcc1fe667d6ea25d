"""check_swiglu: the learner's SwiGLU feed-forward, with the activations it is often confused with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core import ffn as _ffn
from .harness import CheckResult, _build, _Case, _is_module_class, _Mistake, _randn, _run, _SetupError


# =============================================================================================
# SwiGLU
# =============================================================================================
def _swiglu_variant(kind):
    def fn(case):
        x, w1, w2, w3 = (case.data[k] for k in ("x", "w1", "w2", "w3"))
        a, b = F.linear(x, w1), F.linear(x, w3)  # gate, value: (…, hidden)
        h = {
            "swapped": lambda: F.silu(b) * a,
            "relu": lambda: F.relu(a) * b,
            "gelu": lambda: F.gelu(a) * b,
            "gelu_tanh": lambda: F.gelu(a, approximate="tanh") * b,
            "silu_on_product": lambda: F.silu(a * b),
            "sigmoid": lambda: torch.sigmoid(a) * b,
            "added": lambda: F.silu(a) + b,
            "no_value": lambda: F.silu(a),
        }[kind]()
        return F.linear(h, w2)

    return fn


_SWIGLU_MISTAKES = [
    _Mistake(
        "gate_value_swapped",
        "your output matches the gate and value swapped: w1 is the gate (it goes through "
        "SiLU), w3 is the value: w2(silu(w1(x)) * w3(x)).",
        _swiglu_variant("swapped"),
    ),
    _Mistake(
        "relu",
        "your output matches ReLU as the gate's activation: SwiGLU uses SiLU (x·sigmoid(x)), F.silu.",
        _swiglu_variant("relu"),
    ),
    _Mistake(
        "gelu",
        "your output matches GELU as the gate's activation: SwiGLU uses SiLU (x·sigmoid(x)), F.silu (GELU is GeGLU).",
        _swiglu_variant("gelu"),
    ),
    _Mistake(
        "gelu", "your output matches GELU (tanh approximation): SwiGLU uses SiLU, F.silu.", _swiglu_variant("gelu_tanh")
    ),
    _Mistake(
        "silu_on_product",
        "your output matches SiLU applied to the product: apply it to the gate only, silu(w1(x)) * w3(x).",
        _swiglu_variant("silu_on_product"),
    ),
    _Mistake(
        "sigmoid",
        "your output matches a sigmoid gate (the original GLU): Swish/SiLU is x·sigmoid(x), F.silu.",
        _swiglu_variant("sigmoid"),
    ),
    _Mistake(
        "added",
        "your output matches gate + value: the gate multiplies the value, silu(w1(x)) * w3(x).",
        _swiglu_variant("added"),
    ),
    _Mistake(
        "no_value",
        "your output matches w2(silu(w1(x))) with no value path: multiply by w3(x) before w2.",
        _swiglu_variant("no_value"),
    ),
]


def _swiglu_cases() -> list[_Case]:
    spec = [
        ((2, 5, 16), 48, torch.float32),
        ((1, 3, 32), 96, torch.float32),
        ((4, 24), 64, torch.float32),
        ((2, 3, 64), 192, torch.bfloat16),
    ]
    cases = []
    for i, (shape, hidden, dtype) in enumerate(spec):
        dim = shape[-1]
        d = dict(
            x=_randn(*shape, seed=500 + i),
            w1=_randn(hidden, dim, seed=510 + i, scale=dim**-0.5),
            w2=_randn(dim, hidden, seed=520 + i, scale=hidden**-0.5),
            w3=_randn(hidden, dim, seed=530 + i, scale=dim**-0.5),
        )
        d = {k: v.to(dtype) for k, v in d.items()}
        cases.append(_Case(f"x {shape} {str(dtype).replace('torch.', '')}, dim {dim}, hidden {hidden}", dtype, d))
    return cases


def _swiglu_learner(obj):
    if isinstance(obj, nn.Module) or _is_module_class(obj):

        def run(case):
            d = case.data
            hidden, dim = d["w1"].shape
            m = (
                obj
                if isinstance(obj, nn.Module)
                else _build(obj, ((dim, hidden), {}), ((), {"dim": dim, "hidden_dim": hidden}))
            )
            for name in ("w1", "w2", "w3"):
                lin = getattr(m, name, None)
                if not isinstance(lin, nn.Linear):
                    raise _SetupError(
                        f"{type(m).__name__} needs nn.Linear layers named w1 (gate), w2 (down) and "
                        f"w3 (value), Meta's names; `{name}` is {type(lin).__name__}."
                    )
                if tuple(lin.weight.shape) != tuple(d[name].shape):
                    raise _SetupError(
                        f"{name}.weight has shape {tuple(lin.weight.shape)}, expected "
                        f"{tuple(d[name].shape)}: w1, w3 = nn.Linear(dim, hidden), w2 = nn.Linear(hidden, dim)."
                    )
                if lin.bias is not None:
                    raise _SetupError(f"{name} has a bias: Llama has none (nn.Linear(..., bias=False)).")
            m = m.to(case.dtype)
            for name in ("w1", "w2", "w3"):
                getattr(m, name).weight.data.copy_(d[name])
            return m(d["x"])

        return run
    if callable(obj):
        return lambda case: obj(*(case.data[k] for k in ("x", "w1", "w2", "w3")))
    raise TypeError(f"check_swiglu takes a class, a module or fn(x, w1, w2, w3); got {type(obj).__name__}.")


def check_swiglu(module_class_or_fn, verbose: bool = True) -> CheckResult:
    """Compare a learner's SwiGLU: class ``C(dim, hidden_dim)`` with w1/w2/w3, or ``fn(x, w1, w2, w3)``."""
    return _run(
        "check_swiglu",
        _swiglu_cases(),
        _swiglu_learner(module_class_or_fn),
        lambda c: _ffn.swiglu(c.data["x"], c.data["w1"], c.data["w2"], c.data["w3"]),
        _SWIGLU_MISTAKES,
        fallback="SwiGLU is w2(silu(w1(x)) * w3(x)) with no biases.",
        verbose=verbose,
        what="SwiGLU",
    )
