"""Checks for the learner's builds of notebooks 01, 07, 08 and 09, and the fallback to the package.

Like ``llama2_lab.checks``: each ``check_*`` runs the learner's function and the package's on seeded
inputs, prints one verdict line and returns a ``CheckResult``; on a failure the learner's output is
compared with known-wrong variants, and the variant it matches names the mistake in the hint.
A build that still raises ``NotImplementedError`` (the skeleton's ``TODO``) is reported as not
written yet, and ``use`` then hands the notebook the package's version::

    result = check_top_p(my_top_p)
    top_p = use(result, my_top_p, generate.top_p_filter, "top-p filter")

==================  ==========================================================================
check_chat_encoder  ``fn(tokenizer, dialog) -> list[int]``, a prompt dialog ending with the user
                    (notebook 01; the package's ``chat.encode_dialog``)
check_temperature   ``fn(logits, temperature) -> probs`` (..., V), temperature > 0
check_top_k         ``fn(logits, k) -> logits`` (..., V) with -inf outside the k largest
                    (``generate.top_k_filter``: logits tied with the k-th are kept)
check_top_p         ``fn(probs, p) -> probs`` (..., V), renormalised (``generate.top_p_filter``)
check_generate      ``fn(model, prompt_ids, max_new_tokens, temperature=0.0, top_k=None,
                    top_p=None, generator=None) -> list[int]`` (the new ids), with a KV cache
check_masked_loss   ``fn(model, rows, mask) -> loss``: rows (B, T+1) ids, mask (B, T+1) 1 on the
                    tokens to learn (notebook 07)
check_train_step    ``fn(model, opt, rows, mask, step, cfg) -> loss``: one optimiser step of the
                    Llama 2 recipe (notebook 07; ``train.TrainConfig``)
check_gatt_sequence ``fn(tok, system, users, replies) -> (ids, mask)`` (notebook 12)
==================  ==========================================================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import inference as _gen
from ..core.config import ModelArgs
from ..core.transformer import Transformer
from ..text import chat as _chat
from .checks.harness import CheckResult, _Case, _exception_hint, _Mistake, _run_cases, use
from .checks.harness import CheckResult as _BaseResult

__all__ = [
    "CheckResult",
    "check_chat_encoder",
    "check_gatt_sequence",
    "check_generate",
    "check_masked_loss",
    "check_temperature",
    "check_top_k",
    "check_top_p",
    "check_train_step",
    "reference_masked_loss",
    "reference_train_step",
    "use",
]


# --- the shared mechanism (checks.CheckResult.not_written and checks.use) ---------------------------------
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
    from ..formats import default_model_path, load_tokenizer

    return load_tokenizer(default_model_path(), required=True)


def _chat_dialogs():
    s = {"role": "system", "content": "Answer in French."}
    u1, a1 = {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Bonjour"}
    u2, a2 = {"role": "user", "content": "  How are you?  "}, {"role": "assistant", "content": " Bien, merci. "}
    u3 = {"role": "user", "content": "Bye"}
    return [
        ("one user message", [u1]),
        ("a system message and one user message", [s, u1]),
        ("system, user, assistant, user", [s, u1, a1, u3]),
        ("two exchanges and a prompt, no system (contents with spaces to strip)", [u1, a1, u2, a2, u3]),
        ("two exchanges and a prompt, with a system message", [s, u1, a1, u2, a2, u3]),
    ]


def _chat_variant(kind):
    """A wrong encoder: fn(tok, dialog) -> ids."""

    def encode(tok, dialog):
        msgs = list(dialog)
        system = None
        if msgs and msgs[0]["role"] == "system":
            system, msgs = msgs[0]["content"], msgs[1:]
        strip = (lambda s: s) if kind == "no_strip" else (lambda s: s.strip())
        ids = []
        text_all = ""
        for k in range(0, len(msgs), 2):
            user = msgs[k]["content"]
            if system is not None and (k == 0 or kind == "system_every_turn"):
                if kind == "sys_no_newlines":
                    user = f"<<SYS>>{system}<</SYS>>{user}"
                else:
                    user = _chat.B_SYS + system + _chat.E_SYS + user
            b_inst = "[INST]" if kind == "no_space_after_inst" else "[INST] "
            text = f"{b_inst}{strip(user)} [/INST]"
            done = k + 1 < len(msgs)
            if done:
                tail = "" if kind == "no_trailing_space" else " "
                text += f" {strip(msgs[k + 1]['content'])}{tail}"
            if kind == "one_bos":
                text_all += text
                continue
            ids += tok.encode(text, bos=True, eos=done and kind != "no_eos")
        if kind == "one_bos":
            ids = tok.encode(text_all, bos=True)
        return ids

    return encode


_CHAT_MISTAKES = [
    (
        "one_bos",
        (
            "your ids match the whole dialog encoded as one string with a single BOS: every exchange is "
            "its own BOS + [INST] user [/INST] answer + EOS, encoded separately (Meta's chat_completion)."
        ),
    ),
    (
        "no_eos",
        (
            "your ids match BOS per exchange but no EOS after the answers: a finished exchange ends with EOS "
            "(tok.encode(text, bos=True, eos=True)); only the last, open prompt has none."
        ),
    ),
    (
        "no_space_after_inst",
        (
            "your ids match '[INST]' with no space before the user's text: the template is "
            'f"[INST] {user} [/INST]", one space after [INST] and one before [/INST].'
        ),
    ),
    (
        "no_trailing_space",
        (
            "your ids match an answer without its trailing space: Meta writes "
            'f"[INST] {user} [/INST] {answer} " (a space after the answer, which becomes a bare ▁ before EOS).'
        ),
    ),
    (
        "system_every_turn",
        (
            "your ids match the system message repeated in every user message: it goes into the "
            "first user message only (that is what GAtt, notebook 12, works around)."
        ),
    ),
    (
        "sys_no_newlines",
        (
            "your ids match <<SYS>> without its newlines: the block is "
            '"<<SYS>>\\n" + system + "\\n<</SYS>>\\n\\n" in front of the first user message.'
        ),
    ),
    (
        "no_strip",
        (
            "your ids match contents that were not stripped: Meta strips every message "
            "(content.strip()) before putting it in the template."
        ),
    ),
]


def _first_difference(tok, got, want) -> str:
    n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))

    def piece(ids, i):
        return repr(tok.id_to_piece(ids[i])) if i < len(ids) else "(nothing)"

    return (
        f"{len(got)} ids, expected {len(want)}; the first difference is at position {n}: "
        f"got {piece(got, n)}, expected {piece(want, n)}"
    )


def check_chat_encoder(fn, tokenizer=None, verbose: bool = True) -> CheckResult:
    """Compare ``fn(tokenizer, dialog) -> list[int]`` with ``chat.encode_dialog`` on five dialogs."""
    name, what = "check_chat_encoder", "chat encoder"
    tok = tokenizer if tokenizer is not None else _default_tokenizer()
    cases = _chat_dialogs()
    for i, (label, dialog) in enumerate(cases, start=1):
        want = _chat.encode_dialog(tok, dialog)
        try:
            got = fn(tok, [dict(m) for m in dialog])
        except Exception as e:
            return _learner_exception(name, what, i, label, e, verbose)
        try:
            got = [int(t) for t in got]
        except (TypeError, ValueError):
            return _fail(
                name, what, i, label, f"return a list of ints (token ids), got {type(got).__name__}.", "setup", verbose
            )
        if got == want:
            continue
        for key, hint in _CHAT_MISTAKES:
            wrong = _chat_variant(key)(tok, dialog)
            if wrong != want and got == wrong:
                return _fail(name, what, i, label, hint, key, verbose)
        return _fail(
            name,
            what,
            i,
            label,
            _first_difference(tok, got, want) + ". Print "
            "tok.pieces(your_ids) next to tok.pieces(chat.encode_dialog(tok, dialog)).",
            None,
            verbose,
        )
    return _ok(name, what, len(cases), verbose)


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


def _tiny_model(seed: int = 0) -> Transformer:
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=16, max_seq_len=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(args)
        for p in model.parameters():  # larger weights than the default init: peaked, seed-stable logits
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.3)
    return model.eval()


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


# =============================================================================================
# 07: the masked loss and one optimiser step
# =============================================================================================
def _loss_reference(model, rows, mask, kind="right"):
    x, y = rows[:, :-1], rows[:, 1:]  # (B, T) inputs and next-token targets
    if kind == "no_shift":
        x, y = rows[:, :-1], rows[:, :-1]
    m = mask[:, 1:] if kind != "mask_off_by_one" else mask[:, :-1]  # the mask of the predicted token
    logits = model(x).float()  # (B, T, V)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none").view_as(y)
    m = m.float()
    if kind == "no_mask":
        return ce.mean()
    if kind == "mean_over_all":
        return (ce * m).sum() / m.numel()
    if kind == "row_means":
        return ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if kind == "sum":
        return (ce * m).sum()
    return (ce * m).sum() / m.sum().clamp(min=1)


def reference_masked_loss(model, rows, mask):
    """The package's masked loss behind notebook 07's signature: rows (B, T+1) ids, mask (B, T+1) -> scalar."""
    return _loss_reference(model, rows, mask)


def _loss_cases():
    g = torch.Generator().manual_seed(7)
    rows = torch.randint(0, 96, (3, 13), generator=g)
    full = torch.ones_like(rows)
    sft = torch.zeros_like(rows)
    sft[0, 6:] = 1
    sft[1, 3:8] = 1
    sft[2, 10:] = 1
    return [
        _Case("pretraining: every token is learned (mask all 1)", torch.float32, {"rows": rows, "mask": full}),
        _Case("SFT: a different answer span in every row", torch.float32, {"rows": rows, "mask": sft}),
    ]


_LOSS_MISTAKES = [
    (
        "mask_off_by_one",
        (
            "your loss matches the mask taken on the inputs (mask[:, :-1]): the mask belongs to the "
            "token being predicted, so use mask[:, 1:] next to targets rows[:, 1:]."
        ),
    ),
    (
        "no_mask",
        (
            "your loss ignores the mask (a plain mean over every token): multiply the per-token losses by the "
            "mask and divide by the mask's sum."
        ),
    ),
    ("mean_over_all", ("your loss divides by all B·T tokens: divide by the number of learned tokens, mask.sum().")),
    (
        "row_means",
        (
            "your loss averages per-row means: sum the masked losses over the whole batch and divide by the "
            "total number of learned tokens (a row with a long answer counts more)."
        ),
    ),
    ("sum", ("your loss is the sum, not the mean, over the learned tokens: divide by mask.sum().")),
    (
        "no_shift",
        (
            "your targets are the inputs themselves: the model at position t predicts token t+1, so the inputs "
            "are rows[:, :-1] and the targets rows[:, 1:]."
        ),
    ),
]


def check_masked_loss(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(model, rows, mask) -> scalar`` with sum(ce · mask[:, 1:]) / sum(mask[:, 1:])."""
    model = _tiny_model(1)

    def variant(kind):
        return lambda c: _loss_reference(model, c.data["rows"], c.data["mask"], kind)

    mistakes = [_Mistake(k, h, variant(k)) for k, h in _LOSS_MISTAKES]
    return _run(
        "check_masked_loss",
        "masked loss",
        _loss_cases(),
        lambda c: _as_scalar(fn(model, c.data["rows"].clone(), c.data["mask"].clone())),
        lambda c: _loss_reference(model, c.data["rows"], c.data["mask"]),
        mistakes,
        atol=1e-5,
        rtol=1e-5,
        fallback="Expected sum(cross_entropy · mask[:, 1:]) / mask[:, 1:].sum(), on logits of rows[:, :-1].",
        verbose=verbose,
    )


def _as_scalar(x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"return the loss as a tensor (so .backward() works), got {type(x).__name__}")
    return x.reshape(())


def _step_reference(model, opt, rows, mask, step, cfg, kind="right"):
    """Meta-style recipe step: lr from the schedule, zero grads, backward, clip, step."""
    from ..training import lr_at

    lr = lr_at(step + (1 if kind == "lr_next_step" else 0), cfg)
    if kind != "lr_not_set":
        for g in opt.param_groups:
            g["lr"] = lr
    loss = _loss_reference(model, rows, mask)
    if kind != "no_zero_grad":
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if kind not in ("no_clip",):
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss


def reference_train_step(model, opt, rows, mask, step, cfg, loss_fn=None):
    """The package's recipe step behind notebook 07's signature (``loss_fn`` replaces the masked loss)."""
    from ..training import lr_at

    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg)
    loss = (loss_fn or reference_masked_loss)(model, rows, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss


_STEP_MISTAKES = [
    (
        "no_clip",
        (
            "your parameters match a step without gradient clipping: call "
            "torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) between backward() and opt.step() "
            "(clipping after opt.step() is the same as not clipping: the update already used the raw gradients)."
        ),
    ),
    (
        "no_zero_grad",
        (
            "your second step matches gradients accumulated over both steps: call "
            "opt.zero_grad() before loss.backward() (PyTorch adds new gradients to the old ones)."
        ),
    ),
    (
        "lr_not_set",
        (
            "your parameters match the optimiser's own learning rate: set every param group's lr to "
            "train.lr_at(step, cfg) before the step (warmup and cosine come from the schedule)."
        ),
    ),
    ("lr_next_step", ("your parameters match lr_at(step + 1, cfg): step is 0-based, use lr_at(step, cfg).")),
]


def check_train_step(fn, verbose: bool = True) -> CheckResult:
    """Run ``fn(model, opt, rows, mask, step, cfg)`` twice (steps 0 and 1) and compare every parameter
    with the package's recipe: lr from ``train.lr_at``, zero_grad, backward, clip at cfg.grad_clip, step."""
    from ..training import TrainConfig, make_optimizer

    cfg = TrainConfig.from_preset("test", lr=5e-2, warmup_steps=3, grad_clip=0.5)
    cases = _loss_cases()

    def run(step_fn):
        def go(c):
            model = _tiny_model(2).train()
            opt = make_optimizer(model, cfg)
            for g in opt.param_groups:
                g["lr"] = 1.0  # a value the schedule never gives: forgetting to set it shows
            for step in (0, 1):
                step_fn(model, opt, c.data["rows"], c.data["mask"], step, cfg)
            return tuple(p.detach().clone() for p in model.parameters())

        return go

    def learner(c):
        with torch.enable_grad():
            return run(fn)(c)

    def reference(c):
        with torch.enable_grad():
            return run(_step_reference)(c)

    def variant(kind):
        wrong = run(lambda *a: _step_reference(*a, kind=kind))
        return lambda c: _with_grad(wrong, c)  # _diagnose runs under no_grad; a step needs gradients

    mistakes = [_Mistake(k, h, variant(k)) for k, h in _STEP_MISTAKES]
    return _run(
        "check_train_step",
        "training step",
        cases,
        learner,
        reference,
        mistakes,
        atol=1e-5,
        rtol=1e-4,
        fallback="The parameters after two steps differ from the recipe's: lr_at(step, cfg) into every "
        "param group, zero_grad, your masked loss, backward, clip_grad_norm_, step.",
        verbose=verbose,
    )


def _with_grad(f, c):
    with torch.enable_grad():
        return f(c)


# =============================================================================================
# 09: the GAtt training sequence and its loss mask
# =============================================================================================
def _gatt_variant(tok, kind, system, users, replies):
    from ..experiments.gatt import encode_turns

    n = len(replies)
    if kind == "system_every_turn":
        return encode_turns(tok, system, users, replies, sys_turns=range(n), train_turns={n - 1})
    if kind == "all_replies":
        return encode_turns(tok, system, users, replies, sys_turns=(0,), train_turns=None)
    if kind == "first_reply":
        return encode_turns(tok, system, users, replies, sys_turns=(0,), train_turns={0})
    ids, mask = encode_turns(tok, system, users, replies, sys_turns=(0,), train_turns={n - 1})
    if kind == "mask_user_turn":  # the whole last exchange, user message and template included
        start = max(i for i, t in enumerate(ids) if t == tok.bos_id)
        return ids, [1 if i >= start else 0 for i in range(len(ids))]
    if kind == "mask_shift_left":
        return ids, mask[1:] + [0]
    if kind == "mask_shift_right":
        return ids, [0] + mask[:-1]
    if kind == "no_eos_in_mask":
        return ids, [0 if (m and t == tok.eos_id) else m for t, m in zip(ids, mask)]
    raise AssertionError(kind)


_GATT_MISTAKES = [
    (
        "system_every_turn",
        (
            "your ids keep the system message in every user message: GAtt step 3 drops it from all "
            "but the first, so the last reply must come from an instruction several turns back."
        ),
    ),
    (
        "all_replies",
        (
            "your mask trains every reply: GAtt sets the loss to 0 on all earlier turns and trains only the "
            "last reply (and its EOS) — the earlier replies were sampled with an instruction the data no longer shows."
        ),
    ),
    ("first_reply", ("your mask trains the first reply: train the last one, whose instruction is furthest back.")),
    (
        "mask_user_turn",
        (
            "your mask covers the whole last exchange, the user's message and the template included: "
            "the loss is on the assistant's reply and its EOS only."
        ),
    ),
    (
        "mask_shift_left",
        (
            "your mask is one token too early (it starts on the token before the reply and misses the "
            "EOS): mark the reply's own tokens and its EOS."
        ),
    ),
    (
        "mask_shift_right",
        (
            "your mask is one token too late (it misses the reply's first token and marks the token "
            "after the EOS): mark the reply's own tokens and its EOS."
        ),
    ),
    (
        "no_eos_in_mask",
        ("your mask leaves out the EOS after the last reply: train the EOS too, or the model never learns to stop."),
    ),
]


def _gatt_cases():
    return [
        (
            "a system message and three exchanges",
            "Always answer in capital letters.",
            ["What is 2 plus 3?", "What color is the sky?", "How many legs has a cat?"],
            ["FIVE.", "BLUE.", "FOUR."],
        ),
        ("one exchange", "Figure: Ben.", ["What is your name?"], ["Hello! I am Ben."]),
        (
            "two exchanges, spaces to strip",
            "  Start every answer with Mia. ",
            [" Hi ", "What is 1 plus 1?"],
            ["Mia: hello.", "Mia: two."],
        ),
    ]


def check_gatt_sequence(fn, tokenizer=None, verbose: bool = True) -> CheckResult:
    """Compare ``fn(tok, system, users, replies) -> (ids, mask)`` with ``gatt.encode_turns(...,
    sys_turns=(0,), train_turns={n - 1})``."""
    from ..experiments.gatt import encode_turns

    name, what = "check_gatt_sequence", "GAtt sequence"
    tok = tokenizer if tokenizer is not None else _default_tokenizer()
    cases = _gatt_cases()
    for i, (label, system, users, replies) in enumerate(cases, start=1):
        want = encode_turns(tok, system, users, replies, sys_turns=(0,), train_turns={len(replies) - 1})
        try:
            got = fn(tok, system, list(users), list(replies))
            got = ([int(t) for t in got[0]], [int(m) for m in got[1]])
        except Exception as e:
            return _learner_exception(name, what, i, label, e, verbose)
        if got == want:
            continue
        for key, hint in _GATT_MISTAKES:
            wrong = _gatt_variant(tok, key, system, users, replies)
            if wrong != want and tuple(wrong) == tuple(got):
                return _fail(name, what, i, label, hint, key, verbose)
        if got[0] != want[0]:
            return _fail(
                name,
                what,
                i,
                label,
                "the ids differ: " + _first_difference(tok, got[0], want[0]) + ". Each "
                "exchange is BOS [INST] user [/INST] reply EOS, with <<SYS>> only in the first.",
                None,
                verbose,
            )
        if len(got[1]) != len(want[1]):
            return _fail(
                name,
                what,
                i,
                label,
                f"the mask has {len(got[1])} entries for {len(want[0])} ids: one per id.",
                "mask_length",
                verbose,
            )
        j = next(k for k, (a, b) in enumerate(zip(got[1], want[1])) if a != b)
        return _fail(
            name,
            what,
            i,
            label,
            f"the ids are right; the mask first differs at position {j} "
            f"({tok.id_to_piece(want[0][j])!r}): got {got[1][j]}, expected {want[1][j]}. The mask is 1 on the "
            "last reply's tokens and its EOS, 0 elsewhere.",
            None,
            verbose,
        )
    return _ok(name, what, len(cases), verbose)
