"""check_gatt_sequence: the learner's GAtt training sequence and its loss mask (notebook 12)."""

from __future__ import annotations

import torch

from .builds import _default_tokenizer, _fail, _learner_exception, _ok
from .chat import _first_difference
from .harness import CheckResult


def _with_grad(f, c):
    with torch.enable_grad():
        return f(c)


# =============================================================================================
# 09: the GAtt training sequence and its loss mask
# =============================================================================================
def _gatt_variant(tok, kind, system, users, replies):
    from ...experiments.gatt import encode_turns

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
    from ...experiments.gatt import encode_turns

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
