"""The Llama-2-chat dialog format, exactly as Meta's `chat_completion` builds it (llama/generation.py).

A dialog is a list of {"role", "content"} messages: an optional system message, then user
and assistant messages alternating. Every completed (user, assistant) pair becomes
BOS + "[INST] {user} [/INST] {answer} " + EOS; a final user message becomes
BOS + "[INST] {user} [/INST]", after which the model writes its answer. The tags are plain
text, not special tokens (llama/generation.py encodes them as text). Training adds a loss mask: 1 on the assistant's
tokens and the EOS that ends each answer, 0 on everything the user or template wrote
(Llama 2 SFT zeroes the loss on the prompt [P2 §3.1]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from .guards import TextError, check_text

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")
UNSAFE_ERROR = "Error: special tags are not allowed as part of the prompt."  # Meta's text
ROLES = ("system", "user", "assistant")

Dialog = Sequence[Mapping[str, str]]


class DialogError(ValueError):
    """A dialog that Meta's `chat_completion` would reject (or flag as unsafe)."""


class Segment(NamedTuple):
    """Where one token came from: the (user, assistant) pair it belongs to and what wrote it.

    role is one of "bos", "eos", "tag" (template text: [INST], <<SYS>>, the spaces around
    them), "system", "user", "assistant".
    """

    turn: int
    role: str


def validate_dialog(dialog: Dialog, *, last: Literal["user", "assistant", "any"] = "user") -> None:
    """Raise `DialogError` saying what is wrong and how to fix it; `last` is the role the
    dialog must end with ("user" for a prompt, "assistant" for training data)."""
    if isinstance(dialog, (str, bytes, Mapping)) or not isinstance(dialog, Sequence):
        raise DialogError(
            f"A dialog is a list of messages like {{'role': 'user', 'content': 'Hi'}}, got {type(dialog).__name__}."
        )
    if not dialog:
        raise DialogError("The dialog is empty: give at least one message, e.g. [{'role': 'user', 'content': 'Hi'}].")
    for i, msg in enumerate(dialog):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise DialogError(f"Message {i} must be a dict with 'role' and 'content' keys, got {msg!r}.")
        if msg["role"] not in ROLES:
            raise DialogError(
                f"Message {i} has role {msg['role']!r}; Llama 2 chat knows only {', '.join(map(repr, ROLES))}."
            )
        if not isinstance(msg["content"], str):
            raise DialogError(
                f"Message {i} ({msg['role']}) content must be a str, got {type(msg['content']).__name__}."
            )
        try:
            check_text(msg["content"], f"Message {i} ({msg['role']})")
        except TextError as e:
            raise DialogError(str(e)) from None
        # Meta does not raise here: it generates anyway and replaces the answer with
        # UNSAFE_ERROR (llama/generation.py). We raise, because a tag inside a message would let
        # it fake a turn boundary, and silently answering an error string helps nobody.
        for tag in SPECIAL_TAGS:
            if tag in msg["content"]:
                raise DialogError(
                    f"Message {i} ({msg['role']}) contains the special tag {tag!r}. "
                    f"The chat format reserves {', '.join(SPECIAL_TAGS)}; remove or "
                    "rewrite them (Meta flags such dialogs as unsafe)."
                )
    roles = [msg["role"] for msg in dialog]
    if "system" in roles[1:]:
        raise DialogError(
            f"Message {roles.index('system', 1)} is a system message, but a system "
            "message may only come first: merge it into the first one."
        )
    if roles[0] == "system" and len(roles) == 1:
        raise DialogError(
            "The dialog has only a system message: add the user message it "
            "applies to (the system text is merged into it)."
        )
    turns = roles[1:] if roles[0] == "system" else roles
    offset = len(roles) - len(turns)
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise DialogError(
                f"Message {i + offset} is from the {role}, but it is the {expected}'s "
                "turn: after an optional system message, roles must alternate "
                "user, assistant, user, ... starting with the user."
            )
    if last != "any" and roles[-1] != last:
        if last == "user":
            raise DialogError(
                f"The last message must be from the user (got {roles[-1]}): the "
                "model answers it. For training data that ends with the answer, "
                "use encode_training_dialog()."
            )
        raise DialogError(
            f"A training dialog must end with an assistant message (got "
            f"{roles[-1]}): its answers are what the model learns. To build a "
            "prompt for generation, use encode_dialog()."
        )


def _turns(dialog: Dialog) -> list[list[tuple[str, str]]]:
    """The dialog as Meta encodes it: one list of (text, role) parts per BOS-delimited turn."""
    msgs = list(dialog)
    system: list[tuple[str, str]] = []
    if msgs[0]["role"] == "system":
        # The system text is folded into the first user message and only the merged whole
        # is stripped (llama/generation.py strips it), so leading/trailing whitespace of it survives.
        system = [(B_SYS, "tag"), (msgs[0]["content"], "system"), (E_SYS, "tag")]
        msgs = msgs[1:]
    turns = []
    for k in range(0, len(msgs), 2):
        user = _strip([*(system if k == 0 else []), (msgs[k]["content"], "user")])
        parts = [(B_INST + " ", "tag"), *user, (" " + E_INST, "tag")]
        if k + 1 < len(msgs):
            # The answer's trailing space becomes a bare "▁" before EOS (llama/generation.py: f"{answer['content'].strip()} ");
            # it is part of the answer string, so it is labelled (and trained) as assistant.
            parts += [(" ", "tag"), (msgs[k + 1]["content"].strip(), "assistant"), (" ", "assistant")]
        turns.append(parts)
    return turns


def _strip(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`"".join(texts).strip()` on labelled parts, keeping each part's label."""
    parts = list(parts)
    while parts and not parts[0][0].lstrip():
        parts.pop(0)
    if parts:
        parts[0] = (parts[0][0].lstrip(), parts[0][1])
    while parts and not parts[-1][0].rstrip():
        parts.pop()
    if parts:
        parts[-1] = (parts[-1][0].rstrip(), parts[-1][1])
    return parts


def render_dialog(dialog: Dialog) -> list[str]:
    """The exact strings Meta tokenizes, one per BOS; a dialog may end with either role here."""
    validate_dialog(dialog, last="any")
    return ["".join(text for text, _ in parts) for parts in _turns(dialog)]


def _encode(tokenizer, dialog: Dialog) -> tuple[list[int], list[Segment]]:
    ids: list[int] = []
    segments: list[Segment] = []
    for turn, parts in enumerate(_turns(dialog)):
        text = "".join(t for t, _ in parts)
        char_roles = [role for t, role in parts for _ in t]
        ids.append(tokenizer.bos_id)
        segments.append(Segment(turn, "bos"))
        for token, start, end in tokenizer.encode_with_offsets(text):
            ids.append(token)
            segments.append(Segment(turn, _token_role(text, char_roles, start, end)))
        if parts[-1][1] == "assistant":  # a completed pair ends with EOS; the final prompt does not
            ids.append(tokenizer.eos_id)
            segments.append(Segment(turn, "eos"))
    return ids, segments


def _token_role(text: str, char_roles: list[str], start: int, end: int) -> str:
    """A token's role is that of its first non-space character: "▁Bon" belongs to the answer
    even though its "▁" is the template's space after [/INST]."""
    for pos in range(start, end):
        if not text[pos].isspace():
            return char_roles[pos]
    return char_roles[min(start, len(text) - 1)]


def encode_dialog(tokenizer, dialog: Dialog) -> list[int]:
    """A prompt dialog (ending with the user) -> ids (length T), as Meta's `chat_completion`."""
    validate_dialog(dialog, last="user")
    return _encode(tokenizer, dialog)[0]


def dialog_segments(tokenizer, dialog: Dialog) -> list[Segment]:
    """One `Segment(turn, role)` per token of the encoded dialog (length T), to colour tokens.

    The dialog may end with either role; its ids are `encode_dialog` (ends with the user) or
    `encode_training_dialog` (ends with the assistant).
    """
    validate_dialog(dialog, last="any")
    return _encode(tokenizer, dialog)[1]


def _mask(segments: list[Segment], turns: set[int] | None = None) -> list[int]:
    return [int(s.role in ("assistant", "eos") and (turns is None or s.turn in turns)) for s in segments]


def encode_dialog_with_mask(tokenizer, dialog: Dialog) -> tuple[list[int], list[int]]:
    """A prompt dialog -> (ids, mask), both length T; mask 1 on the earlier answers and their EOS."""
    validate_dialog(dialog, last="user")
    ids, segments = _encode(tokenizer, dialog)
    return ids, _mask(segments)


def encode_training_dialog(
    tokenizer, dialog: Dialog, *, train_on: Literal["all", "last"] = "all"
) -> tuple[list[int], list[int]]:
    """An SFT dialog that ends with the assistant -> (ids, mask), both length T.

    Every pair is complete, so every answer ends with EOS. The mask is 1 on the answers'
    tokens (trailing "▁" included) and their EOS; `train_on="last"` keeps only the final
    answer, as GAtt's training sequences do (paper §3.3).
    """
    validate_dialog(dialog, last="assistant")
    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
    ids, segments = _encode(tokenizer, dialog)
    return ids, _mask(segments, None if train_on == "all" else {segments[-1].turn})
