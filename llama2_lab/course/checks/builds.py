"""What the checks of the later builds share: results named after the build, the not-written line, and
the tiny model and tokenizer they run on."""

from __future__ import annotations

import math

import torch

from ...core.config import ModelArgs
from ...core.transformer import Transformer
from .harness import CheckResult, _exception_hint, _run_cases
from .harness import CheckResult as _BaseResult


def _promote(r: _BaseResult, what: str) -> CheckResult:
    return CheckResult(r.name, r.passed, r.cases, r.max_error, r.hint, r.mistake, r.failed_case, what=what)


def _not_written(name: str, what: str, case: str = "") -> CheckResult:
    return CheckResult(
        name,
        False,
        0,
        math.nan,
        "the build still raises NotImplementedError (its TODO).",
        "not_written",
        case or None,
        not_written=True,
        what=what,
    )


def _raised_todo(e: BaseException) -> bool:
    return isinstance(e, NotImplementedError)


def _finish(r: CheckResult, verbose: bool) -> CheckResult:
    if verbose:
        print(r)
    return r


def _run(name, what, cases, learner, reference, mistakes, atol=2e-5, rtol=1e-4, fallback="", verbose=True):
    """checks._run_cases, with a NotImplementedError in the learner's code reported as not written."""
    todo = []

    def guarded(case):
        try:
            return learner(case)
        except NotImplementedError:
            todo.append(case.label)
            raise

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        r = _run_cases(name, cases, guarded, reference, mistakes, atol, rtol, fallback, None)
    if todo:
        return _finish(_not_written(name, what, todo[0]), verbose)
    return _finish(_promote(r, what), verbose)


def _fail(name, what, case_no, case, hint, mistake=None, verbose=True) -> CheckResult:
    return _finish(CheckResult(name, False, case_no, math.nan, hint, mistake, case, what=what), verbose)


def _ok(name, what, n, verbose=True, err=0.0) -> CheckResult:
    return _finish(CheckResult(name, True, n, err, what=what), verbose)


def _learner_exception(name, what, case_no, label, e, verbose) -> CheckResult:
    if _raised_todo(e):
        return _finish(_not_written(name, what, label), verbose)
    return _fail(name, what, case_no, label, _exception_hint(e), "exception", verbose)


# =============================================================================================
# 01: the Llama-2-chat encoder
# =============================================================================================
def _default_tokenizer():
    from ...formats import default_model_path, load_tokenizer

    return load_tokenizer(default_model_path(), required=True)


def _tiny_model(seed: int = 0) -> Transformer:
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=16, max_seq_len=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(args)
        for p in model.parameters():  # larger weights than the default init: peaked, seed-stable logits
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.3)
    return model.eval()
