"""check_chat_encoder: the learner's Llama-2-chat encoder against Meta's format (notebook 01)."""

from __future__ import annotations

from ...text import chat as _chat
from .builds import _default_tokenizer, _fail, _learner_exception, _ok
from .harness import CheckResult


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
