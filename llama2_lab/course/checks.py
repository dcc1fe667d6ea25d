"""Check a learner's component against the package, on seeded inputs, with a verdict and a hint.

Each ``check_*`` runs the learner's version and the package's on the same inputs (several shapes,
float32 and a low-precision dtype, MHA/GQA/MQA ratios), prints one verdict line and returns a
``CheckResult``. When a case fails, the learner's output is compared with known-wrong variants
(LayerNorm instead of RMSNorm, rotate-half pairs, ReLU instead of SiLU, a tiled repeat_kv, a
missing causal mask…): the variant it matches names the mistake in the hint. Notebooks write::

    assert check_rmsnorm(MyRMSNorm).passed

A learner's code that raises ``NotImplementedError`` (a TODO skeleton) is *not written yet*, not wrong:
the check returns ``CheckResult(passed=False, not_written=True)`` and prints one line saying the
notebook goes on with the package's version. ``use(result, mine, package, what)`` then returns what
later cells should build with — the learner's version once it passes — so a student copy runs top to
bottom whatever is filled in::

    Norm = use(check_rmsnorm(MyRMSNorm), MyRMSNorm, RMSNorm, "RMSNorm")

``check_answer(name, value, expected)`` does the same for an exercise's number (``...`` = not written).

What each check expects of the learner's code (Meta's names, so package weights can be copied in):

==================  ===========================================================================
check_rmsnorm       a class ``C(dim, eps=...)`` holding a gain ``weight`` (dim,), or ``fn(x, weight, eps)``
check_rope          ``apply_rotary_emb(xq, xk, freqs_cis)`` with Meta's complex ``freqs_cis`` (T, hd/2),
                    and/or ``precompute_freqs_cis(head_dim, end, theta)`` -> complex (end, hd/2)
                    or real (end, hd/2, 2)
check_swiglu        a class ``C(dim, hidden_dim)`` with Linear ``w1``, ``w2``, ``w3``, or ``fn(x, w1, w2, w3)``
check_repeat_kv     ``fn(x, n_rep)``, x (B, S, n_kv_heads, head_dim)
check_attention     a class ``C(args)`` with ``wq wk wv wo``; ``forward(x, freqs_cis)`` builds its own
                    causal mask; if ``forward`` takes ``start_pos`` and ``cache`` (a package
                    ``KVCache``) the cached path is checked too; a ``mask`` argument gets Meta's
                    additive (T, S) mask
check_block         a class ``C(layer_id, args)`` with ``attention``, ``feed_forward``,
                    ``attention_norm``, ``ffn_norm``; forward as for attention
check_model         a class ``C(args)`` with Meta's parameter names; ``forward(tokens)`` or
                    ``forward(tokens, start_pos=0, cache=None)`` -> logits (B, T, V); with start_pos,
                    cached decoding in chunks at start_pos > 0 is checked (a package ``KVCache`` is
                    passed if forward takes ``cache``), and one config has rope_theta 1e6
check_greedy        ``fn(model, ids, max_new_tokens, eos_id)`` -> the new ids (list of int)
==================  ===========================================================================

When no known mistake matches a block's or model's output, the check feeds the learner's own
sub-layers the package's intermediate values and says which step differs.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core import attention as _attn
from ..core import ffn as _ffn
from ..core import norm as _norm
from ..core import rope as _rope
from ..core.config import ModelArgs

__all__ = [
    "CheckResult",
    "use",
    "check_answer",
    "check_greedy",
    "check_rmsnorm",
    "check_rope",
    "check_swiglu",
    "check_repeat_kv",
    "check_attention",
    "check_block",
    "check_model",
]


@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, cases run, the largest |learner − package| and a hint."""

    name: str
    passed: bool
    cases: int  # cases run and passed; on failure, the number of the failing case
    max_error: float  # over the float32 cases when passed; on the failing case otherwise
    hint: str = ""
    mistake: str | None = None  # key of the diagnosed mistake, e.g. "layernorm"; None if none matched
    failed_case: str | None = None
    not_written: bool = False  # the learner's code raised NotImplementedError (a TODO skeleton)
    what: str = ""  # the component in words ("RMSNorm"), for the not-written line and ``use``
    note: str = ""  # something worth knowing about a passing implementation (e.g. a wider dtype)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.not_written:
            what = self.what or self.name
            return (
                f"{what}: not written yet — fill in the TODO cell above; the rest of this notebook uses "
                f"the package's {what}."
            )
        if self.passed:
            line = f"✓ {self.name}: passed {self.cases} cases (max error {self.max_error:.1g})"
            return line + (f"\n  note: {self.note}" if self.note else "")
        lines = [f"✗ {self.name}: failed on case {self.cases} — {self.failed_case}"]
        if not math.isnan(self.max_error):
            lines.append(f"  max error {self.max_error:.3g}")
        lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def use(result: CheckResult, mine, package, what: str):
    """``mine`` if the learner's build passed its check, else ``package``; prints which one the notebook uses.

    Later cells of a notebook call what this returns, so a student copy runs top to bottom whether or not
    the TODO cells are filled in, and switches to the learner's own code as soon as it passes::

        result = checks.check_rmsnorm(MyRMSNorm)
        Norm = checks.use(result, MyRMSNorm, RMSNorm, "RMSNorm")
    """
    if result.passed:
        print(f"Using your {what}.")
        return mine
    why = "is not written yet" if result.not_written else "did not pass its check"
    print(f"Using the package's {what} (yours {why}).")
    return package


def check_answer(
    name: str, got, expected=None, *, ok: Callable | None = None, rel: float = 0.0, hint: str = "", verbose: bool = True
) -> CheckResult:
    """Check a value an exercise asks for. ``got`` is ``...`` (Ellipsis) while the TODO is not filled in.

    Passes when ``ok(got)`` is true, or else when ``got`` equals ``expected`` (within ``rel`` relative
    error for numbers). Prints one line; never raises on a wrong answer, so Run All goes on.
    """
    if got is ... or got is NotImplemented:
        result = CheckResult(name, False, 0, math.nan, not_written=True, what=name)
        if verbose:
            print(f"{name}: not written yet — fill in the TODO cell above.")
        return result
    try:
        if ok is not None:
            passed = bool(ok(got))
        elif isinstance(expected, (int, float)) and isinstance(got, (int, float)) and rel > 0:
            passed = abs(got - expected) <= rel * abs(expected)
        else:
            passed = bool(got == expected)
    except Exception as e:  # a comparison that cannot be made is a wrong answer, said plainly
        passed, hint = False, f"{type(e).__name__}: {e}. {hint}"
    result = CheckResult(name, passed, 1, math.nan, "" if passed else (hint or f"expected {expected!r}"), what=name)
    if verbose:
        print(f"✓ {name} = {got!r}" if passed else f"✗ {name} = {got!r}\n  hint: {result.hint}")
    return result


class _SetupError(Exception):
    """The learner's object cannot be driven at all (wrong constructor, names, signature)."""


@dataclass
class _Case:
    label: str
    dtype: torch.dtype
    data: dict


@dataclass
class _Mistake:
    key: str
    hint: str
    fn: Callable  # case -> output of the wrong variant, shaped like the reference output


# --- comparison -------------------------------------------------------------------------------
# float32: elementwise |a − b| ≤ atol + rtol·|b|. bf16/fp16: relative RMS error, because a correct
# implementation may round at different points (a bf16 ulp is 2⁻⁸ of the value).
_REL_RMS = {torch.bfloat16: 1.5e-2, torch.float16: 3e-3}


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _close(got, want, dtype, atol, rtol, slack=1.0, equal_nan=False) -> tuple[bool, float, str]:
    """(ok, max abs error, what is wrong) for outputs that may be tuples of tensors."""
    got, want = _as_tuple(got), _as_tuple(want)
    if len(got) != len(want):
        return False, math.nan, f"returned {len(got)} value(s), expected {len(want)}"
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        which = f"output {i}: " if len(want) > 1 else ""
        if not isinstance(g, torch.Tensor):
            return False, math.nan, f"{which}returned {type(g).__name__}, expected a tensor"
        if tuple(g.shape) != tuple(w.shape):
            return False, math.nan, f"{which}output shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        g32, w32 = g.detach().float(), w.detach().float()
        if equal_nan:
            both = torch.isnan(g32) & torch.isnan(w32)
            g32, w32 = g32.masked_fill(both, 0.0), w32.masked_fill(both, 0.0)
        if not torch.isfinite(g32).all():
            return False, math.inf, f"{which}output has NaN or inf where the package's is finite"
        err = (g32 - w32).abs()
        worst = max(worst, float(err.max()) if err.numel() else 0.0)
        if dtype in _REL_RMS:
            rel = float(err.pow(2).mean().sqrt() / (w32.pow(2).mean().sqrt() + 1e-12))
            ok = rel <= _REL_RMS[dtype] * slack
            detail = f"relative RMS error {rel:.2g} > {_REL_RMS[dtype]:.1g}"
        else:
            ok = bool((err <= slack * (atol + rtol * w32.abs())).all())
            idx = tuple(int(j) for j in torch.unravel_index(err.argmax(), err.shape)) if err.numel() else ()
            detail = (
                f"at index {idx}: got {float(g32[idx]):.5g}, expected {float(w32[idx]):.5g}" if idx else "values differ"
            )
        if not ok:
            return False, worst, which + detail
    return True, worst, ""


def _dtype_problem(got, want) -> str:
    for g, w in zip(_as_tuple(got), _as_tuple(want)):
        if isinstance(g, torch.Tensor) and g.dtype != w.dtype:
            return (
                f"the values are right but the output dtype is {g.dtype}, expected {w.dtype}: compute in "
                "float32 if you like, then cast back with .type_as(x) so the next layer gets its own dtype."
            )
    return ""


def _diagnose(got, want, case: _Case, mistakes: list[_Mistake], atol, rtol) -> _Mistake | None:
    """The known-wrong variant the learner's output matches (and the package's does not), if any."""
    best, best_err = None, math.inf
    for m in mistakes:
        try:
            with torch.no_grad():
                wrong = m.fn(case)
        except Exception:
            continue
        if _close(wrong, want, case.dtype, atol, rtol, equal_nan=True)[0]:
            continue  # indistinguishable from the right answer on this input
        ok, err, _ = _close(got, wrong, case.dtype, atol, rtol, slack=4.0, equal_nan=True)
        if ok and (best is None or err < best_err):
            best, best_err = m, err
    return best


# --- exceptions in the learner's code -------------------------------------------------------
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # llama2_lab/
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _learner_frame(tb) -> traceback.FrameSummary | None:
    """The last traceback frame in the learner's code: not in llama2_lab/, torch/ or Python itself."""
    stdlib = os.path.dirname(os.path.abspath(inspect.__file__)) + os.sep
    for frame in reversed(traceback.extract_tb(tb)):
        path = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else frame.filename
        if path.startswith((_PACKAGE_DIR, _TORCH_DIR, stdlib)):
            continue
        return frame
    return None


def _where(frame: traceback.FrameSummary | None) -> str:
    if frame is None:
        return ""
    code = f": {frame.line}" if frame.line else ""
    name = frame.filename.rsplit("/", 1)[-1]
    if "ipykernel" in frame.filename or name.startswith("<ipython-input"):
        return f" (in your cell, line {frame.lineno}{code})"
    return f" (at {name}:{frame.lineno}{code})"


def _exception_hint(e: BaseException, extra: str = "") -> str:
    msg = str(e).split("\n")[0]
    where = _where(_learner_frame(e.__traceback__))
    low = msg.lower()
    if "view_as_complex" in low:
        tip = "torch.view_as_complex needs float32 pairs: do xq.float().reshape(..., -1, 2) first and cast the result back with .type_as(xq)."
    elif "view size is not compatible" in low:
        tip = "a .view() after .transpose() needs .contiguous() first (or use .reshape())."
    elif "is invalid for input of size" in low:
        tip = (
            "the sizes in your .view/.reshape do not multiply to the tensor's size: check your view/transpose; "
            "q is (B, T, n_heads, head_dim), k and v are (B, T, n_kv_heads, head_dim)."
        )
    elif "mat1 and mat2" in low or "size mismatch" in low:
        tip = "a matrix product got the wrong inner size: check nn.Linear(in, out) sizes and transpose before the product."
    elif "must match the size" in low or "size of tensor a" in low or "broadcast" in low:
        tip = "two tensors do not line up: check your view/transpose and which axis is which."
    elif "expected scalar type" in low or "dtype" in low:
        tip = "tensors of different dtypes meet: compute in float32, then cast back with .type_as(x)."
    elif isinstance(e, TypeError) and ("argument" in low or "positional" in low):
        tip = "the call signature differs from what the check passes (see the llama2_lab.checks docstring)."
    else:
        tip = "run the failing case yourself with the shapes above and read the traceback."
    tip = tip[0].upper() + tip[1:]
    return f"{type(e).__name__}: {msg}{where}. {extra}{tip}"


# --- the runner ---------------------------------------------------------------------------------
def _run(
    name,
    cases,
    learner,
    reference,
    mistakes,
    atol=2e-5,
    rtol=1e-4,
    fallback="",
    exc_extra=None,
    verbose=True,
    what="",
    substep=None,
) -> CheckResult:
    with torch.random.fork_rng(devices=[]):  # building modules draws from the global RNG: leave the learner's alone
        torch.manual_seed(0)
        result = _run_cases(name, cases, learner, reference, mistakes, atol, rtol, fallback, exc_extra, substep)
        result.what = what
        return _report(result, verbose)


def _run_cases(name, cases, learner, reference, mistakes, atol, rtol, fallback, exc_extra, substep=None) -> CheckResult:
    worst = 0.0
    for i, case in enumerate(cases, start=1):
        with torch.no_grad():
            want = reference(case)
        try:
            with torch.no_grad():
                got = learner(case)
        except _SetupError as e:
            return CheckResult(name, False, i, math.nan, str(e), "setup", case.label)
        except NotImplementedError:  # a TODO skeleton: not written yet, not wrong
            return CheckResult(name, False, 0, math.nan, "", None, None, not_written=True)
        except Exception as e:  # the learner's code raised: say where, with which shapes
            extra = exc_extra(case, e) if exc_extra else ""
            return CheckResult(name, False, i, math.nan, _exception_hint(e, extra), "exception", case.label)
        ok, err, detail = _close(got, want, case.dtype, atol, rtol)
        if not ok:
            m = _diagnose(got, want, case, mistakes, atol, rtol)
            if m is not None:
                hint, key = m.hint, m.key
            else:
                step = None
                if substep is not None:
                    try:
                        with torch.no_grad():
                            step = substep(case, got)
                    except Exception:  # the diagnosis is a bonus: never let it hide the verdict
                        step = None
                if step is not None:
                    key, hint = step
                else:
                    hint, key = f"{detail}. {fallback}", None
            return CheckResult(name, False, i, err, hint, key, case.label)
        dtype_msg = _dtype_problem(got, want)
        if dtype_msg:
            return CheckResult(name, False, i, err, dtype_msg, "dtype", case.label)
        if case.dtype == torch.float32:  # low-precision cases pass on a relative error; report the fp32 one
            worst = max(worst, err)
    return CheckResult(name, True, len(cases), worst)


def _report(result: CheckResult, verbose: bool) -> CheckResult:
    if verbose:
        print(result)
    return result


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed)) * scale + shift


def _is_module_class(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _build(cls, *attempts):
    """Instantiate ``cls`` with the first argument list it accepts (TypeError = try the next)."""
    errors = []
    for args, kwargs in attempts:
        try:
            return cls(*args, **kwargs)
        except TypeError as e:
            errors.append(str(e))
    shown = " or ".join(
        f"{cls.__name__}({', '.join([*map(repr, a), *(f'{k}={v!r}' for k, v in kw.items())])})" for a, kw in attempts
    )
    raise _SetupError(f"could not construct {shown}: {errors[0]}. Give the constructor that signature.")


_ALIASES = {
    "freqs_cis": ("freqs_cis", "freqs", "freqs_complex", "rope"),
    "start_pos": ("start_pos", "pos"),
    "mask": ("mask", "attn_mask"),
    "cache": ("cache", "kv_cache"),
}


def _call_by_name(fn, x, available: dict, what: str):
    """Call ``fn(x, ...)``: x goes first, the other values by the names (or aliases) its signature uses."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    kwargs, missing = {}, []
    for p in params[1:]:
        key = next((k for k, names in _ALIASES.items() if p.name in names), p.name)
        if key in available:
            kwargs[p.name] = available[key]
        elif p.default is p.empty:
            missing.append(p.name)
    if missing:
        raise _SetupError(
            f"{what} has required argument(s) {missing} the check cannot fill; after x it can pass "
            f"{sorted(available)} by name (see the llama2_lab.checks docstring)."
        )
    return fn(x, **kwargs)


def _require_module(obj, check: str, example: str) -> None:
    if not (_is_module_class(obj) or isinstance(obj, nn.Module)):
        raise TypeError(f"{check} takes your nn.Module class (e.g. {check}({example})), got {obj!r}.")


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


# =============================================================================================
# repeat_kv
# =============================================================================================
def _repeat_variant(kind):
    def fn(case):
        x, n = case.data["x"], case.data["n_rep"]
        if kind == "tiled":
            return x.repeat(1, 1, n, 1)  # head h gets KV head h % n_kv
        if kind == "seq_axis":
            return x.repeat_interleave(n, dim=1)
        if kind == "not_repeated":
            return x
        if kind == "batch_axis":
            return x.repeat_interleave(n, dim=0)
        raise ValueError(kind)

    return fn


_REPEAT_MISTAKES = [
    _Mistake(
        "tiled",
        "your output matches the heads tiled (query head h gets KV head h % n_kv_heads): each KV head "
        "must serve a *contiguous* group, h // n_rep — repeat each head n_rep times in place "
        "(x[:, :, :, None, :].expand(...) or x.repeat_interleave(n_rep, dim=2)).",
        _repeat_variant("tiled"),
    ),
    _Mistake(
        "seq_axis",
        "you repeated along the sequence axis (dim 1): repeat along the head axis, dim 2 of "
        "(B, S, n_kv_heads, head_dim).",
        _repeat_variant("seq_axis"),
    ),
    _Mistake(
        "batch_axis",
        "you repeated along the batch axis (dim 0): repeat along the head axis, dim 2.",
        _repeat_variant("batch_axis"),
    ),
    _Mistake(
        "not_repeated",
        "the output is the input unchanged: with n_rep > 1 every KV head must appear n_rep times, "
        "giving (B, S, n_kv_heads·n_rep, head_dim).",
        _repeat_variant("not_repeated"),
    ),
]


def _repeat_cases() -> list[_Case]:
    spec = [
        ((2, 5, 4, 8), 1, torch.float32),
        ((1, 6, 2, 8), 2, torch.float32),
        ((2, 3, 2, 16), 4, torch.float32),
        ((1, 4, 1, 8), 8, torch.float32),
        ((1, 3, 2, 8), 3, torch.bfloat16),
    ]
    cases = []
    for i, (shape, n_rep, dtype) in enumerate(spec):
        kind = "MHA" if n_rep == 1 else ("MQA" if shape[2] == 1 else "GQA")
        cases.append(
            _Case(
                f"x {shape} {str(dtype).replace('torch.', '')}, n_rep {n_rep} ({kind})",
                dtype,
                dict(x=_randn(*shape, seed=600 + i).to(dtype), n_rep=n_rep),
            )
        )
    return cases


def check_repeat_kv(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(x, n_rep)``: (B, S, n_kv_heads, head_dim) -> (B, S, n_kv_heads·n_rep, head_dim)."""
    return _run(
        "check_repeat_kv",
        _repeat_cases(),
        lambda c: fn(c.data["x"].clone(), c.data["n_rep"]),
        lambda c: _attn.repeat_kv(c.data["x"], c.data["n_rep"]),
        _REPEAT_MISTAKES,
        fallback="Query head h uses KV head h // n_rep.",
        verbose=verbose,
        what="repeat_kv",
    )


# =============================================================================================
# Attention, block, model: a functional reference whose variants are the usual mistakes
# =============================================================================================
def _attention_fn(x, W, freqs, n_heads, n_kv, starts, kind=None):
    """Meta's attention written out, x (B, T, dim) processed in chunks starting at ``starts``.

    ``W`` holds wq/wk/wv/wo weights; ``freqs`` the real RoPE table for all T positions.
    ``kind`` selects a known mistake (None = right).
    """
    B, T, dim = x.shape
    hd = W["wq"].shape[0] // n_heads
    n_rep = n_heads // n_kv
    q = F.linear(x, W["wq"]).view(B, T, n_heads, hd)  # (B, T, n_heads, head_dim)
    k = F.linear(x, W["wk"]).view(B, T, n_kv, hd)  # (B, T, n_kv_heads, head_dim)
    v = F.linear(x, W["wv"]).view(B, T, n_kv, hd)
    if kind != "no_rope":
        rot = _rope_apply_variant("rotate_half" if kind == "rope_rotate_half" else "right")
        q, k = rot(_Case("", x.dtype, dict(xq=q, xk=k, table=freqs)))
        if kind == "rotate_v":
            v = rot(_Case("", x.dtype, dict(xq=v, xk=v, table=freqs)))[0]
    if kind == "repeat_tiled":
        k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
    else:
        k, v = _attn.repeat_kv(k, n_rep), _attn.repeat_kv(v, n_rep)
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))  # (B, n_heads, T, head_dim)
    bounds = list(starts) + [T]
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        ks, kv_ = (k[:, :, s:e], v[:, :, s:e]) if kind == "cache_ignored" else (k[:, :, :e], v[:, :, :e])
        scale = hd if kind == "scale_head_dim" else (1.0 if kind == "no_scale" else math.sqrt(hd))
        scores = q[:, :, s:e] @ ks.transpose(-2, -1) / scale  # (B, n_heads, t, S)
        qpos = torch.arange(s, e)[:, None] - (s if kind in ("cache_ignored", "mask_not_offset") else 0)
        kpos = torch.arange(ks.shape[2])[None, :]
        allowed = {
            "no_mask": torch.ones_like(kpos <= qpos),
            "mask_excludes_diagonal": kpos < qpos,
            "mask_off_by_one": kpos <= qpos + 1,
        }.get(kind, kpos <= qpos)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-2 if kind == "softmax_wrong_dim" else -1)
        outs.append(probs @ kv_)  # (B, n_heads, t, head_dim)
    out = torch.cat(outs, 2)  # (B, n_heads, T, head_dim)
    if kind == "merge_without_transpose":
        out = out.reshape(B, T, n_heads * hd)  # mixes positions and heads
    else:
        out = out.transpose(1, 2).reshape(B, T, n_heads * hd)  # (B, T, n_heads·head_dim)
    out = out.type_as(x)
    return out if kind == "no_wo" else F.linear(out, W["wo"])


_ATTN_HINTS = {
    "no_mask": "your output matches attention with no causal mask: query i may only see keys j ≤ i (mask the "
    "upper triangle with -inf before the softmax).",
    "mask_excludes_diagonal": "your output matches a causal mask that also hides the diagonal (j < i): a token must "
    "see itself — torch.triu(..., diagonal=1) marks the *forbidden* entries.",
    "mask_off_by_one": "your output matches a causal mask off by one (query i sees key i+1): use "
    "torch.triu(full(-inf), diagonal=1).",
    "repeat_tiled": "your output matches KV heads tiled (query head h reads KV head h % n_kv_heads): Llama groups "
    "them, h // n_rep — use repeat_kv (repeat_interleave on the head axis), not .repeat.",
    "scale_head_dim": "your output matches scores divided by head_dim: divide by sqrt(head_dim).",
    "no_scale": "your output matches unscaled scores: divide q·kᵀ by sqrt(head_dim).",
    "softmax_wrong_dim": "your output matches a softmax over the query axis: normalise over the keys, dim=-1 of "
    "(B, n_heads, T, S).",
    "rotate_v": "your output matches RoPE applied to v as well: rotate only q and k; values carry content, not "
    "position.",
    "no_rope": "your output matches attention without RoPE: rotate q and k with apply_rotary_emb before the scores.",
    "rope_rotate_half": "your output matches rotate-half RoPE: Meta's weights need interleaved pairs (x[2i], x[2i+1]).",
    "merge_without_transpose": "your output matches heads merged without transposing back: (B, n_heads, T, hd) "
    "-> .transpose(1, 2) -> (B, T, n_heads, hd) -> .reshape(B, T, dim).",
    "no_wo": "your output matches the heads' output without the wo projection: finish with self.wo(out).",
    "cache_ignored": "the uncached output is right but the cached one matches attending only to the new tokens: "
    "write k, v into the cache at start_pos, then attend to the cache prefix [:start_pos + T].",
    "mask_not_offset": "the uncached output is right but the cached chunk matches a causal mask not offset by "
    "start_pos: query i sits at position start_pos + i and sees keys j ≤ start_pos + i.",
}
_ATTN_FALLBACK = (
    "Llama attention: q, k, v = wq(x), wk(x), wv(x) split into heads; RoPE on q and k; repeat_kv; "
    "softmax(q kᵀ / sqrt(head_dim) + causal mask) v; merge heads; wo."
)


def _attn_args(n_heads, n_kv, dim, max_len=64) -> ModelArgs:
    return ModelArgs(
        dim=dim, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=96, multiple_of=16, max_seq_len=max_len
    )


def _meta_mask(T: int, S: int) -> torch.Tensor:
    """Meta's additive mask (T, S): 0 where allowed, -inf above the (offset) diagonal."""
    return torch.zeros(T, S).masked_fill(~_attn.causal_mask(T, S), float("-inf"))


def _run_chunks(forward, x, table, starts, make_cache, uses_cache):
    """Call the learner's forward on x (B, T, dim) chunk by chunk (or once) and concatenate along T."""
    T = x.shape[1]
    if not uses_cache:
        freqs = torch.view_as_complex(table.contiguous())
        return _call_by_name(
            forward, x, dict(freqs_cis=freqs, start_pos=0, mask=_meta_mask(T, T), cache=None), "forward"
        )
    cache = make_cache()
    bounds, outs = list(starts) + [T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        freqs = torch.view_as_complex(table[s:e].contiguous())
        outs.append(
            _call_by_name(
                forward,
                x[:, s:e],
                dict(freqs_cis=freqs, start_pos=s, mask=_meta_mask(e - s, e), cache=cache),
                "forward",
            )
        )
    return torch.cat(outs, 1)


def _attention_cases(cached: bool) -> list[_Case]:
    spec = [  # (n_heads, n_kv_heads, dim, B, T, dtype)
        (4, 4, 32, 2, 6, torch.float32),  # MHA
        (4, 2, 32, 2, 7, torch.float32),  # GQA, n_rep 2
        (8, 2, 64, 1, 9, torch.float32),  # GQA, n_rep 4
        (4, 1, 32, 2, 5, torch.float32),  # MQA
        (4, 2, 64, 1, 8, torch.bfloat16),
    ]
    cases = []
    for i, (H, KV, dim, B, T, dtype) in enumerate(spec):
        hd = dim // H
        W = {
            "wq": _randn(H * hd, dim, seed=700 + i, scale=1.5 * dim**-0.5),
            "wk": _randn(KV * hd, dim, seed=710 + i, scale=1.5 * dim**-0.5),
            "wv": _randn(KV * hd, dim, seed=720 + i, scale=dim**-0.5),
            "wo": _randn(dim, H * hd, seed=730 + i, scale=dim**-0.5),
        }
        W = {k: w.to(dtype) for k, w in W.items()}
        x = _randn(B, T, dim, seed=740 + i).to(dtype)
        kind = "MHA" if H == KV else ("MQA" if KV == 1 else f"GQA n_rep {H // KV}")
        label = f"x {(B, T, dim)} {str(dtype).replace('torch.', '')}, n_heads {H}, n_kv_heads {KV} ({kind})"
        cases.append(
            _Case(label, dtype, dict(W=W, x=x, H=H, KV=KV, dim=dim, starts=[0], table=_rope.freqs_cis_real(hd, T)))
        )
        if cached and dtype == torch.float32 and i in (1, 3):
            starts = [0, 3, T - 1]  # prefill 3, a chunk, then one token
            cases.append(
                _Case(
                    label + f", cached in chunks starting at {starts}",
                    dtype,
                    dict(W=W, x=x, H=H, KV=KV, dim=dim, starts=starts, table=_rope.freqs_cis_real(hd, T)),
                )
            )
    return cases


def _load_weights(module: nn.Module, state: dict, what: str) -> None:
    """Copy ``state`` into ``module`` by Meta names; missing or mis-shaped names raise a _SetupError."""
    own = module.state_dict()
    missing = [k for k in state if k not in own]
    if missing:
        extra = [k for k in own if k not in state and "freqs" not in k and "cache" not in k]
        tied = ""
        if "output.weight" in missing:
            tied = " Llama 2's output head is untied from the embedding: add self.output = nn.Linear(dim, vocab, bias=False)."
        raise _SetupError(
            f"{what} lacks Meta's parameter name(s) {missing[:4]}{'…' if len(missing) > 4 else ''}"
            f"{'; it has ' + str(extra[:4]) if extra else ''}.{tied} Use Meta's names "
            "(wq, wk, wv, wo; w1, w2, w3; attention_norm, ffn_norm, norm, output)."
        )
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise _SetupError(f"{what}: {k} has shape {tuple(own[k].shape)}, the package's has {tuple(v.shape)}.")
    extra = [
        k
        for k, v in own.items()
        if k not in state
        and isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and "freqs" not in k
        and "cache" not in k
        and "mask" not in k
    ]
    if extra:
        raise _SetupError(f"{what} has parameter(s) Llama does not: {extra[:4]} (no biases anywhere in Llama).")
    module.load_state_dict(state, strict=False)


def _heads_evidence(msg: str, H: int, KV: int, B: int) -> bool:
    """Does an error message show a size that is off by exactly the n_rep factor in the heads?

    E.g. "size of tensor a (4) must match the size of tensor b (2)" with n_heads 4, n_kv_heads 2, or a
    batched matmul that got B·n_kv_heads where it wanted B·n_heads, or a view whose shape holds n_rep
    times the elements it was given.
    """
    n_rep = H // KV
    numbers = [int(n) for n in re.findall(r"\d+", msg)]
    pairs = {(H, KV), (KV, H), (B * H, B * KV), (B * KV, B * H)}
    m = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", msg)
    if m:
        return (int(m.group(1)), int(m.group(2))) in pairs
    m = re.search(r"shape '\[([\d, -]+)\]' is invalid for input of size (\d+)", msg)
    if m:
        dims = [int(d) for d in m.group(1).split(",") if d.strip() not in ("-1", "")]
        return math.prod(dims) == int(m.group(2)) * n_rep
    m = re.search(r"to be: \[(\d+), (\d+)\] but got: \[(\d+), (\d+)\]", msg)  # bmm batch dims
    if m:
        return (int(m.group(1)), int(m.group(3))) in pairs
    return any((a, b) in pairs for a, b in zip(numbers, numbers[1:]))


def _exc_extra_heads(case: _Case, e: BaseException) -> str:
    """Suggest repeat_kv only when the error shows the heads off by the n_rep factor."""
    d = case.data
    H, KV = d.get("H"), d.get("KV")
    B = d["x"].shape[0] if isinstance(d.get("x"), torch.Tensor) else 1
    if H and KV and H != KV and _heads_evidence(str(e).split("\n")[0], H, KV, B):
        return (
            f"The sizes in the error are n_heads={H} against n_kv_heads={KV} (a factor n_rep={H // KV}): "
            f"did you repeat_kv k and v before the scores? "
        )
    return ""


def check_attention(module_class, verbose: bool = True) -> CheckResult:
    """Compare a learner's ``Attention(args)`` (wq/wk/wv/wo) with the package's, uncached and cached."""
    cls = module_class
    _require_module(cls, "check_attention", "MyAttention")
    fwd = cls.forward if _is_module_class(cls) else type(cls).forward
    uses_cache = "cache" in inspect.signature(fwd).parameters

    def learner(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        m = cls if isinstance(cls, nn.Module) else _build(cls, ((args,), {}), ((args, 0), {}))
        _load_weights(m, {f"{k}.weight": w for k, w in d["W"].items()}, f"{type(m).__name__}(args)")
        m = m.to(case.dtype)
        hd = d["dim"] // d["H"]
        make_cache = lambda: _attn.KVCache(1, d["x"].shape[0], d["x"].shape[1], d["KV"], hd, dtype=case.dtype)
        return _run_chunks(m.forward, d["x"], d["table"], d["starts"], make_cache, uses_cache and len(d["starts"]) > 1)

    def reference(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        ref = _attn.Attention(args)
        ref.load_state_dict({f"{k}.weight": w for k, w in d["W"].items()})
        ref = ref.to(case.dtype)
        return ref(d["x"], d["table"])

    mistakes = [
        _Mistake(
            k,
            h,
            (
                lambda kind: (
                    lambda c: _attention_fn(
                        c.data["x"], c.data["W"], c.data["table"], c.data["H"], c.data["KV"], c.data["starts"], kind
                    )
                )
            )(k),
        )
        for k, h in _ATTN_HINTS.items()
    ]
    return _run(
        "check_attention",
        _attention_cases(uses_cache),
        learner,
        reference,
        mistakes,
        atol=1e-4,
        rtol=1e-3,
        fallback=_ATTN_FALLBACK,
        exc_extra=_exc_extra_heads,
        verbose=verbose,
        what="Attention",
    )


# --- block ---------------------------------------------------------------------------------------
def _block_fn(x, P, freqs, H, KV, eps, starts, kind=None):
    """Meta's TransformerBlock written out over the parameter dict P (Meta names)."""
    attn_kind = kind if kind in _ATTN_HINTS else None
    W = {k: P[f"attention.{k}.weight"] for k in ("wq", "wk", "wv", "wo")}
    an, fn_ = P["attention_norm.weight"], P["ffn_norm.weight"]
    if kind == "norms_swapped":
        an, fn_ = fn_, an
    attn = lambda h: _attention_fn(h, W, freqs, H, KV, starts, attn_kind)
    ffn = lambda h: _ffn.swiglu(
        h, P["feed_forward.w1.weight"], P["feed_forward.w2.weight"], P["feed_forward.w3.weight"]
    )
    norm = lambda h, w: _norm.rms_norm(h, w, eps)
    if kind == "post_norm":
        h = norm(x + attn(x), an)
        return norm(h + ffn(h), fn_)
    if kind == "no_residual":
        h = attn(norm(x, an))
        return ffn(norm(h, fn_))
    if kind == "parallel":
        return x + attn(norm(x, an)) + ffn(norm(x, fn_))
    if kind == "ffn_residual_from_x":
        h = x + attn(norm(x, an))
        return x + ffn(norm(h, fn_))
    if kind == "attn_residual_missing":
        h = attn(norm(x, an))
        return h + ffn(norm(h, fn_))
    if kind == "ffn_residual_missing":
        h = x + attn(norm(x, an))
        return ffn(norm(h, fn_))
    if kind == "no_ffn":
        return x + attn(norm(x, an))
    if kind == "no_attention":
        return x + ffn(norm(x, fn_))
    h = x + attn(norm(x, an))
    return h + ffn(norm(h, fn_))


_BLOCK_HINTS = {
    "post_norm": "your output matches post-norm (norm after the residual add, as in the original Transformer): "
    "Llama is pre-norm — h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)).",
    "no_residual": "your output matches the block without residual connections: add the input back, "
    "h = x + attention(...), out = h + feed_forward(...).",
    "parallel": "your output matches attention and FFN in parallel (both read x): in Llama the FFN reads h, the "
    "output of the attention residual.",
    "ffn_residual_from_x": "your output matches out = x + feed_forward(...): the second residual adds to h "
    "(after attention), not x.",
    "norms_swapped": "your output matches the two norms swapped: attention_norm goes before attention, ffn_norm "
    "before the feed-forward.",
    "attn_residual_missing": "the residual of the attention branch is missing: your output matches "
    "h = attention(attention_norm(x)) without the + x. Write h = x + attention(...).",
    "ffn_residual_missing": "the residual of the feed-forward branch is missing: your output matches "
    "out = feed_forward(ffn_norm(h)) without the + h. Write out = h + feed_forward(...).",
    "no_ffn": "the feed-forward branch is missing: your output matches h = x + attention(attention_norm(x)) "
    "alone. Add out = h + feed_forward(ffn_norm(h)).",
    "no_attention": "the attention branch is missing: your output matches x + feed_forward(ffn_norm(x)). "
    "First h = x + attention(attention_norm(x), freqs_cis), then the feed-forward on h.",
}


def _block_cases(cached: bool) -> list[_Case]:
    spec = [
        (4, 4, 32, 2, 6, torch.float32),
        (4, 2, 32, 2, 7, torch.float32),
        (4, 1, 32, 1, 5, torch.float32),
        (4, 2, 64, 1, 6, torch.bfloat16),
    ]
    cases = []
    for i, (H, KV, dim, B, T, dtype) in enumerate(spec):
        args = _attn_args(H, KV, dim)
        from ..core.transformer import TransformerBlock

        blk = TransformerBlock(0, args)
        with torch.no_grad():
            for j, (_name, p) in enumerate(blk.named_parameters()):
                p.copy_(
                    _randn(*p.shape, seed=810 + 20 * i + j, scale=0.3, shift=1.0)
                    if p.dim() == 1
                    else _randn(*p.shape, seed=810 + 20 * i + j, scale=1.2 * p.shape[1] ** -0.5)
                )
        P = {k: v.to(dtype) for k, v in blk.state_dict().items()}
        x = _randn(B, T, dim, seed=830 + i).to(dtype)
        label = f"x {(B, T, dim)} {str(dtype).replace('torch.', '')}, n_heads {H}, n_kv_heads {KV}"
        base = dict(P=P, x=x, H=H, KV=KV, dim=dim, eps=args.norm_eps, table=_rope.freqs_cis_real(dim // H, T))
        cases.append(_Case(label, dtype, {**base, "starts": [0]}))
        if cached and i == 1:
            cases.append(
                _Case(label + ", cached in chunks starting at [0, 3, 6]", dtype, {**base, "starts": [0, 3, 6]})
            )
    return cases


def _differs(got, want, dtype, atol=1e-4, rtol=1e-3) -> bool:
    return not _close(got, want, dtype, atol, rtol)[0]


def _block_substep(m: nn.Module, case: _Case, prefix: str = "your block's") -> tuple[str, str] | None:
    """Which sub-step of a learner's block differs from the package's, each fed the same input.

    Feeds the learner's own attention_norm, attention, ffn_norm and feed_forward the package's intermediate
    values (uncached) and compares each output with the package's piece. None if nothing can be told apart.
    """
    d = case.data
    P, x, eps = d["P"], d["x"], d["eps"]
    W = {k: P[f"attention.{k}.weight"] for k in ("wq", "wk", "wv", "wo")}
    T = x.shape[1]
    freqs = torch.view_as_complex(d["table"].contiguous())
    an = _norm.rms_norm(x, P["attention_norm.weight"], eps)
    a = _attention_fn(an, W, d["table"], d["H"], d["KV"], [0])
    h = x + a
    fn_in = _norm.rms_norm(h, P["ffn_norm.weight"], eps)
    f = _ffn.swiglu(fn_in, P["feed_forward.w1.weight"], P["feed_forward.w2.weight"], P["feed_forward.w3.weight"])
    subs = [
        (
            "attention_norm",
            lambda mod: mod(x),
            an,
            "the RMSNorm before attention (attention_norm)",
            "check it with check_rmsnorm, and build it with args.norm_eps",
        ),
        (
            "attention",
            lambda mod: _call_by_name(
                mod.forward, an, dict(freqs_cis=freqs, start_pos=0, cache=None, mask=_meta_mask(T, T)), "attention"
            ),
            a,
            "the attention sub-layer",
            "check it with check_attention first",
        ),
        (
            "ffn_norm",
            lambda mod: mod(h),
            fn_in,
            "the RMSNorm before the feed-forward (ffn_norm)",
            "check it with check_rmsnorm, and build it with args.norm_eps",
        ),
        ("feed_forward", lambda mod: mod(fn_in), f, "the feed-forward sub-layer", "check it with check_swiglu"),
    ]
    for name, run, want, words, tip in subs:
        mod = getattr(m, name, None)
        if not isinstance(mod, nn.Module):
            continue
        try:
            got = run(mod)
        except Exception:
            return (f"substep_{name}", f"{prefix} {words} raises on the package's input of that step: {tip}.")
        if _differs(got, want, case.dtype):
            return (
                f"substep_{name}",
                f"{prefix} {words} differs from the package's on the same input (everything before it matches): {tip}.",
            )
    if len(d.get("starts", [0])) > 1:
        return (
            "substep_cache",
            f"{prefix} sub-layers each match the package's, uncached; the cached chunks "
            "differ: pass start_pos and the cache through to the attention, and give it the "
            "RoPE rows of positions start_pos.. (freqs_cis[start_pos : start_pos + T]).",
        )
    return (
        "substep_combine",
        f"{prefix} four sub-layers each match the package's on the same input; the way the "
        "block combines them differs: h = x + attention(attention_norm(x)); "
        "out = h + feed_forward(ffn_norm(h)).",
    )


def check_block(cls, verbose: bool = True) -> CheckResult:
    """Compare a learner's ``TransformerBlock(layer_id, args)`` (Meta names) with the package's block."""
    _require_module(cls, "check_block", "MyBlock")
    fwd = cls.forward if _is_module_class(cls) else type(cls).forward
    uses_cache = "cache" in inspect.signature(fwd).parameters
    from ..core.transformer import TransformerBlock

    built: dict = {}

    def learner(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        m = cls if isinstance(cls, nn.Module) else _build(cls, ((0, args), {}), ((args, 0), {}), ((args,), {}))
        _load_weights(m, d["P"], f"{type(m).__name__}(0, args)")
        m = m.to(case.dtype)
        built["m"] = m
        hd = d["dim"] // d["H"]
        make_cache = lambda: _attn.KVCache(1, d["x"].shape[0], d["x"].shape[1], d["KV"], hd, dtype=case.dtype)
        return _run_chunks(m.forward, d["x"], d["table"], d["starts"], make_cache, uses_cache and len(d["starts"]) > 1)

    def reference(case):
        d = case.data
        ref = TransformerBlock(0, _attn_args(d["H"], d["KV"], d["dim"]))
        ref.load_state_dict(d["P"])
        return ref.to(case.dtype)(d["x"], d["table"])

    hints = {
        **_BLOCK_HINTS,
        **{
            k: _ATTN_HINTS[k]
            for k in ("no_mask", "repeat_tiled", "no_rope", "scale_head_dim", "cache_ignored", "mask_not_offset")
        },
    }
    mistakes = [
        _Mistake(
            k,
            h,
            (
                lambda kind: (
                    lambda c: _block_fn(
                        c.data["x"],
                        c.data["P"],
                        c.data["table"],
                        c.data["H"],
                        c.data["KV"],
                        c.data["eps"],
                        c.data["starts"],
                        kind,
                    )
                )
            )(k),
        )
        for k, h in hints.items()
    ]
    return _run(
        "check_block",
        _block_cases(uses_cache),
        learner,
        reference,
        mistakes,
        atol=1e-4,
        rtol=1e-3,
        fallback="A Llama block: h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)).",
        exc_extra=_exc_extra_heads,
        verbose=verbose,
        what="TransformerBlock",
        substep=lambda case, got: _block_substep(built["m"], case) if "m" in built else None,
    )


# --- model ---------------------------------------------------------------------------------------
def _model_fn(tokens, sd, args: ModelArgs, kind=None, starts=(0,)):
    """Meta's Transformer forward over a state dict, with an optional known mistake.

    ``starts``: the chunks a cached run feeds (prefill, then more); the result is the same as one pass
    unless ``kind`` is a mistake that only shows when decoding with a cache.
    """
    emb, out_w = sd["tok_embeddings.weight"], sd["output.weight"]
    if kind == "tied_to_output":
        emb = out_w
    if kind == "tied_to_embedding":
        out_w = emb
    h = F.embedding(tokens, emb)  # (B, T, dim)
    if kind == "emb_scaled":
        h = h * math.sqrt(args.dim)
    T = tokens.shape[1]
    theta = 10000.0 if kind == "theta_ignored" else args.rope_theta
    table = _rope.freqs_cis_real(args.head_dim, T, theta)  # (T, head_dim/2, 2)
    if kind == "rope_not_offset":  # every chunk rotated as if it started at position 0
        bounds = list(starts) + [T]
        table = torch.cat([table[: e - s] for s, e in zip(bounds[:-1], bounds[1:])])
    block_kind = kind if kind in _BLOCK_HINTS or kind in _ATTN_HINTS else None
    for i in range(args.n_layers):
        P = {k[len(f"layers.{i}.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        h = _block_fn(h, P, table, args.n_heads, args.kv_heads, args.norm_eps, list(starts), block_kind)
    if kind != "no_final_norm":
        h = _norm.rms_norm(h, sd["norm.weight"], args.norm_eps)
    return F.linear(h, out_w).float()  # (B, T, V)


_MODEL_HINTS = {
    "no_final_norm": "your logits match the model without the final RMSNorm: apply self.norm to h before self.output.",
    "tied_to_output": "your logits match an output head tied to the embedding: Llama 2 keeps tok_embeddings and "
    "output as two separate matrices.",
    "tied_to_embedding": "your logits match logits computed with the embedding matrix: use the separate "
    "self.output head (untied in Llama 2).",
    "emb_scaled": "your logits match embeddings scaled by sqrt(dim): Llama uses the embedding rows as they are.",
    "theta_ignored": "your logits match RoPE with theta = 10000 although this config has another rope_theta: "
    "build the table with args.rope_theta (Code Llama uses 1e6).",
    "rope_not_offset": "the first chunk is right but the later cached chunks match RoPE restarted at position 0: "
    "a chunk at start_pos needs the rows freqs_cis[start_pos : start_pos + T].",
    "post_norm": _BLOCK_HINTS["post_norm"],
    "no_residual": _BLOCK_HINTS["no_residual"],
    "parallel": _BLOCK_HINTS["parallel"],
    "attn_residual_missing": _BLOCK_HINTS["attn_residual_missing"],
    "ffn_residual_missing": _BLOCK_HINTS["ffn_residual_missing"],
    "no_mask": _ATTN_HINTS["no_mask"],
    "no_rope": _ATTN_HINTS["no_rope"],
    "repeat_tiled": _ATTN_HINTS["repeat_tiled"],
    "cache_ignored": _ATTN_HINTS["cache_ignored"],
    "mask_not_offset": _ATTN_HINTS["mask_not_offset"],
}


def _model_cases(cached: bool) -> list[_Case]:
    from ..core.transformer import Transformer

    cases = []
    spec = [
        ("tiny", torch.float32, None),
        ("tiny-mha", torch.float32, None),
        ("tiny-mqa", torch.float32, None),
        ("tiny", torch.bfloat16, None),
        ("tiny", torch.float32, 1e6),
    ]
    for i, (preset, dtype, theta) in enumerate(spec):
        args = ModelArgs.from_name(preset, vocab_size=96, max_seq_len=32)
        if theta is not None:
            args = args.replace(rope_theta=theta)
        model = Transformer(args).init_weights(std=0.08, seed=900 + i)
        with torch.no_grad():
            for j, (_name, p) in enumerate(model.named_parameters()):
                if p.dim() == 1:
                    p.copy_(_randn(*p.shape, seed=910 + 50 * i + j, scale=0.3, shift=1.0))
        sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
        T = 7 if theta is None else 12
        tokens = torch.randint(0, args.vocab_size, (2, T), generator=_gen(920 + i))
        label = (
            f"tokens (2, {T}), preset {preset!r} (n_heads {args.n_heads}, n_kv_heads {args.kv_heads}), "
            f"{str(dtype).replace('torch.', '')}" + (f", rope_theta {theta:g}" if theta is not None else "")
        )
        cases.append(_Case(label, dtype, dict(args=args, sd=sd, tokens=tokens, starts=[0])))
        if cached and dtype == torch.float32 and i in (0, 4):
            starts = [0, 4, T - 1]  # a prompt, a chunk at start_pos 4, then one token
            cases.append(
                _Case(
                    label + f", cached decoding in chunks at start_pos {', '.join(map(str, starts))}",
                    dtype,
                    dict(args=args, sd=sd, tokens=tokens, starts=starts),
                )
            )
    return cases


def _forward_params(cls_or_module) -> tuple[str | None, str | None]:
    """The names ``forward`` uses for start_pos and the cache (None if it takes none)."""
    owner = cls_or_module if isinstance(cls_or_module, type) else type(cls_or_module)
    names = [
        p.name
        for p in inspect.signature(owner.forward).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ][1:]  # without self
    pos = next((n for n in names[1:] if n in _ALIASES["start_pos"]), None)
    cache = next((n for n in names[1:] if n in _ALIASES["cache"]), None)
    return pos, cache


def _model_substep(m: nn.Module, case: _Case) -> tuple[str, str] | None:
    """Which piece of a learner's model differs: embedding, a block (fed the package's input), the final norm."""
    d = case.data
    args, sd, tokens = d["args"], d["sd"], d["tokens"]
    T = tokens.shape[1]
    table = _rope.freqs_cis_real(args.head_dim, T, args.rope_theta)
    h = F.embedding(tokens, sd["tok_embeddings.weight"])
    emb = getattr(m, "tok_embeddings", None)
    if isinstance(emb, nn.Module) and _differs(emb(tokens), h, case.dtype):
        return (
            "substep_embedding",
            "your tok_embeddings gives other vectors than the package's embedding: use "
            "nn.Embedding(vocab_size, dim) and look the tokens up as they are.",
        )
    layers = getattr(m, "layers", None)
    for i in range(args.n_layers):
        P = {k[len(f"layers.{i}.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        want = _block_fn(h, P, table, args.n_heads, args.kv_heads, args.norm_eps, [0])
        if isinstance(layers, nn.ModuleList) and i < len(layers):
            try:
                got = _call_by_name(
                    layers[i].forward,
                    h,
                    dict(
                        freqs_cis=torch.view_as_complex(table.contiguous()),
                        start_pos=0,
                        cache=None,
                        mask=_meta_mask(T, T),
                    ),
                    "block",
                )
            except Exception:
                got = None
            if got is not None and _differs(got, want, case.dtype):
                c = _Case(
                    case.label,
                    case.dtype,
                    dict(
                        P=P,
                        x=h,
                        H=args.n_heads,
                        KV=args.kv_heads,
                        dim=args.dim,
                        eps=args.norm_eps,
                        table=table,
                        starts=[0],
                    ),
                )
                inner = _block_substep(layers[i], c, prefix=f"in block {i},")
                if inner is not None and inner[0] != "substep_combine":
                    return inner
                return (
                    "substep_block",
                    f"block {i} differs from the package's block on the same input: check "
                    "MyBlock with check_block (and that the model gives it the RoPE table "
                    "for args.rope_theta).",
                )
        h = want
    if len(d["starts"]) > 1:
        return (
            "substep_cache",
            "the uncached logits are right; the cached chunks differ: for a chunk at start_pos "
            "take freqs_cis[start_pos : start_pos + T], pass start_pos and the cache to every "
            "block, and attend to the cached prefix.",
        )
    fn = getattr(m, "norm", None)
    if isinstance(fn, nn.Module) and _differs(fn(h), _norm.rms_norm(h, sd["norm.weight"], args.norm_eps), case.dtype):
        return (
            "substep_final_norm",
            "your blocks match; the final norm differs: self.norm = RMSNorm(dim, "
            "args.norm_eps), applied to h before self.output.",
        )
    return None


def check_model(cls, verbose: bool = True) -> CheckResult:
    """Load the package model's state dict (Meta names) into a learner's ``Transformer(args)``; compare logits.

    If ``forward`` takes ``start_pos`` (and ``cache``, a package ``KVCache``; without one, the model keeps
    its own cache, as Meta's does), cached decoding in chunks at start_pos > 0 is checked too.
    """
    from ..core.transformer import Transformer

    _require_module(cls, "check_model", "MyTransformer")
    pos_name, cache_name = _forward_params(cls)
    built: dict = {}

    def learner(case):
        d = case.data
        m = _build(cls, ((d["args"],), {})) if _is_module_class(cls) else cls
        _load_weights(m, d["sd"], f"{type(m).__name__}(args)")
        m = m.to(case.dtype)
        built["m"] = m
        tokens, starts = d["tokens"], d["starts"]
        if len(starts) > 1:
            a = d["args"]
            cache = _attn.KVCache(
                a.n_layers, tokens.shape[0], tokens.shape[1], a.kv_heads, a.head_dim, dtype=case.dtype
            )
            bounds, outs = list(starts) + [tokens.shape[1]], []
            for s, e in zip(bounds[:-1], bounds[1:]):
                kwargs = {pos_name: s}
                if cache_name:
                    kwargs[cache_name] = cache
                outs.append(m(tokens[:, s:e], **kwargs))
            logits = torch.cat(outs, 1)
        else:
            params = [p for p in inspect.signature(m.forward).parameters.values()]
            needs_pos = len(params) > 1 and params[1].default is params[1].empty
            logits = m(tokens, 0) if needs_pos else m(tokens)
        return logits.float() if isinstance(logits, torch.Tensor) else logits

    def reference(case):
        d = case.data
        ref = Transformer(d["args"])
        ref.load_state_dict(d["sd"])
        return ref.to(case.dtype)(d["tokens"])

    mistakes = [
        _Mistake(
            k,
            h,
            (lambda kind: lambda c: _model_fn(c.data["tokens"], c.data["sd"], c.data["args"], kind, c.data["starts"]))(
                k
            ),
        )
        for k, h in _MODEL_HINTS.items()
    ]
    result = _run(
        "check_model",
        _model_cases(pos_name is not None),
        learner,
        reference,
        mistakes,
        atol=2e-4,
        rtol=1e-3,
        fallback="Llama: embed; n_layers pre-norm blocks; final RMSNorm; untied output head.",
        verbose=False,
        what="Transformer",
        substep=lambda case, got: _model_substep(built["m"], case) if "m" in built else None,
    )
    if result.passed and pos_name is None:
        result.note = (
            "forward takes no start_pos, so cached decoding was not checked: give it "
            "forward(tokens, start_pos=0, cache=None) to have it checked."
        )
    return _report(result, verbose)


# --- the greedy loop -------------------------------------------------------------------------------
def _greedy_variant(kind):
    def fn(case):
        d = case.data
        model, ids, n, eos = d["model"], list(d["ids"]), d["n"], d["eos"]
        new = []
        with torch.no_grad():
            for _ in range(n):
                if kind != "past_context" and len(ids) >= model.args.max_seq_len:
                    break
                logits = model(torch.tensor([ids[-model.args.max_seq_len :]]))[0]
                nxt = int(logits[0 if kind == "first_position" else -1].argmax())
                if nxt == eos and kind != "ignores_eos":
                    if kind == "eos_included":
                        new.append(nxt)
                    break
                ids.append(nxt)
                new.append(nxt)
        out = (list(d["ids"]) + new) if kind == "prompt_included" else new
        return torch.tensor(out, dtype=torch.float32)

    return fn


_GREEDY_MISTAKES = [
    _Mistake(
        "first_position",
        "your tokens match the prediction of the *first* position at every step: the next "
        "token comes from the logits of the last position, logits[0, -1].",
        _greedy_variant("first_position"),
    ),
    _Mistake(
        "prompt_included",
        "your list starts with the prompt: return only the new ids (the notebook prints prompt + new).",
        _greedy_variant("prompt_included"),
    ),
    _Mistake(
        "eos_included", "your list ends with the EOS id: stop *before* appending it.", _greedy_variant("eos_included")
    ),
    _Mistake(
        "ignores_eos",
        "your loop goes on after the model picked EOS: stop when next_id == eos_id.",
        _greedy_variant("ignores_eos"),
    ),
]


def _greedy_cases() -> list[_Case]:
    from ..core.transformer import Transformer

    args = ModelArgs.from_name("tiny", vocab_size=48, max_seq_len=16)
    model = Transformer(args).init_weights(std=0.3, seed=1234).eval()
    prompt = [1, 7, 19]
    free = _greedy_variant(None)(_Case("", torch.float32, dict(model=model, ids=prompt, n=8, eos=-1))).long().tolist()
    unused = next(i for i in range(3, args.vocab_size) if i not in free)
    eos_at = free[3]  # the model's 4th greedy token becomes EOS: the loop must stop before it
    long_prompt = [1] + [int(t) for t in torch.randint(3, args.vocab_size, (12,), generator=_gen(5))]
    spec = [
        (prompt, 8, unused, "prompt of 3 tokens, 8 new, EOS never chosen"),
        (prompt, 8, eos_at, f"prompt of 3 tokens, 8 new, EOS = {eos_at} (the model's 4th greedy choice)"),
        (
            long_prompt,
            10,
            unused,
            f"prompt of {len(long_prompt)} tokens, 10 new, max_seq_len {args.max_seq_len}: "
            "stop at the end of the context",
        ),
    ]
    return [_Case(label, torch.float32, dict(model=model, ids=ids, n=n, eos=eos)) for ids, n, eos, label in spec]


def check_greedy(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(model, ids, max_new_tokens, eos_id)`` -> the new ids (list of int) with the package's
    greedy loop (``course_view.greedy_uncached``) on a small random model: argmax of the last position's
    logits, stop before EOS, stop at max_seq_len."""
    from .view import greedy_uncached

    def learner(case):
        d = case.data
        out = fn(d["model"], list(d["ids"]), d["n"], d["eos"])
        try:
            return torch.tensor([int(t) for t in out], dtype=torch.float32)
        except (TypeError, ValueError):
            raise _SetupError(f"return the new token ids as a list of ints; got {type(out).__name__}.") from None

    def reference(case):
        d = case.data
        return torch.tensor(greedy_uncached(d["model"], d["ids"], d["n"], d["eos"]), dtype=torch.float32)

    return _run(
        "check_greedy",
        _greedy_cases(),
        learner,
        reference,
        _GREEDY_MISTAKES,
        atol=0.0,
        rtol=0.0,
        fallback="Greedy: at each step run the model on all ids so far, take logits[0, -1].argmax(), stop at "
        "eos_id (not appended) or at max_seq_len.",
        verbose=verbose,
        what="greedy loop",
    )
