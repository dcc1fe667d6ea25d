"""The machinery every check shares: ``CheckResult``, ``use``, cases and known mistakes, comparing outputs,
and hints that point at the learner's own line."""

from __future__ import annotations

import inspect
import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


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


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep  # llama2_lab/

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
