"""check_generate: the learner's generation loop with the KV cache (notebook 08)."""

from __future__ import annotations

import torch

from ... import inference as _gen
from ...core.transformer import Transformer
from .builds import _fail, _learner_exception, _ok, _tiny_model
from .harness import CheckResult


# =============================================================================================
# 08: the generation loop with the KV cache
# =============================================================================================
class _Recorder(torch.nn.Module):
    """Wraps a model and records how it is called: (tokens fed, start_pos, a cache passed?)."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.args = model.args
        self.calls: list[tuple[int, int, bool]] = []

    def forward(self, tokens, start_pos: int = 0, cache=None, *rest, **kw):
        self.calls.append((int(tokens.shape[-1]), int(start_pos), cache is not None))
        return self.model(tokens, start_pos, cache, *rest, **kw)

    def new_cache(self, *a, **kw):
        return self.model.new_cache(*a, **kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def check_generate(fn, model=None, verbose: bool = True) -> CheckResult:
    """Check ``fn(model, prompt_ids, n, temperature=0.0, top_k=None, top_p=None, generator=None)``.

    Greedy ids must equal ``generate.generate(..., temperature=0)``; the model must be called once on the
    whole prompt at start_pos 0 and then once per new token, one token at a time at the next position,
    with a cache; top_k=1 and a tiny top_p must give the greedy ids too (the sampling path, deterministic).
    """
    name, what = "check_generate", "generation loop"
    base = model if model is not None else _tiny_model()
    cases = [
        ("greedy, a 5-token prompt, 8 new tokens", [1, 5, 9, 22, 7], 8, {}),
        ("greedy, a 1-token prompt, 6 new tokens", [1], 6, {}),
        ("greedy, 1 new token", [1, 40, 41], 1, {}),
        ("temperature 1 and top_k=1 (must equal greedy)", [1, 5, 9], 6, {"temperature": 1.0, "top_k": 1}),
        ("temperature 0.8 and top_p=1e-6 (must equal greedy)", [1, 17], 6, {"temperature": 0.8, "top_p": 1e-6}),
    ]
    for i, (label, prompt, n, kw) in enumerate(cases, start=1):
        want = list(_gen.generate(base, prompt, n, temperature=0, eos_id=None))
        rec = _Recorder(base)
        gen = torch.Generator().manual_seed(0)
        try:
            with torch.no_grad():
                got = fn(rec, list(prompt), n, generator=gen, **kw)
        except Exception as e:
            return _learner_exception(name, what, i, label, e, verbose)
        try:
            got = [int(t) for t in got]
        except (TypeError, ValueError):
            return _fail(
                name, what, i, label, f"return the list of new ids, got {type(got).__name__}.", "setup", verbose
            )
        calls = rec.calls
        if got[: len(prompt)] == list(prompt) and len(got) == len(prompt) + n:
            return _fail(
                name,
                what,
                i,
                label,
                f"you returned the prompt and the new ids: return only the {n} new ids.",
                "returns_prompt",
                verbose,
            )
        if len(got) != n:
            return _fail(
                name,
                what,
                i,
                label,
                f"you returned {len(got)} ids for max_new_tokens={n}: stop after "
                f"exactly {n} new tokens (the last one needs no forward pass after it).",
                "length",
                verbose,
            )
        if not calls:
            return _fail(name, what, i, label, "your loop never called the model it was given.", "setup", verbose)
        if calls[0][0] != len(prompt) or calls[0][1] != 0:
            return _fail(
                name,
                what,
                i,
                label,
                f"the first call fed {calls[0][0]} tokens at start_pos {calls[0][1]}: "
                f"prefill the whole prompt ({len(prompt)} tokens) once, at start_pos=0.",
                "prefill",
                verbose,
            )
        if not all(c[2] for c in calls):
            return _fail(
                name,
                what,
                i,
                label,
                "the model was called without a cache: make one with "
                "model.new_cache(batch_size=1, max_len=len(prompt_ids) + max_new_tokens) and pass "
                "cache=cache on every call.",
                "no_cache",
                verbose,
            )
        later = calls[1:]
        if any(c[0] != 1 for c in later):
            return _fail(
                name,
                what,
                i,
                label,
                "after the prefill you fed more than one token per step: with the KV "
                "cache, feed only the newest token; the cache already holds the others.",
                "refeeds",
                verbose,
            )
        expected_pos = [len(prompt) + j for j in range(len(later))]
        if [c[1] for c in later] != expected_pos:
            got_pos = [c[1] for c in later][:4]
            return _fail(
                name,
                what,
                i,
                label,
                f"decode steps ran at start_pos {got_pos}..., expected "
                f"{expected_pos[:4]}...: the newest token sits at position len(prompt) + (tokens generated "
                "before it); an off-by-one here writes over the cache.",
                "start_pos",
                verbose,
            )
        if len(calls) != n:
            return _fail(
                name,
                what,
                i,
                label,
                f"{len(calls)} forward passes for {n} new tokens, expected {n} (one "
                "prefill, then one per new token except the last).",
                "extra_calls",
                verbose,
            )
        if got != want:
            j = next(k for k, (a, b) in enumerate(zip(got, want)) if a != b)
            hint = f"new token {j} is {got[j]}, the greedy choice is {want[j]}. " + (
                "With temperature 0 take logits[0, -1].argmax() (the last position's logits)."
                if not kw
                else "Your sampling path (temperature, then the top-k / top-p filters, then "
                "torch.multinomial with the generator) should leave only the greedy token here."
            )
            return _fail(name, what, i, label, hint, "tokens", verbose)
    return _ok(name, what, len(cases), verbose)
