"""The package's one policy for input it cannot tokenize or decode: text that is not valid Unicode (lone
surrogates from bytes that were not UTF-8) is refused with a ``TextError`` naming the position, never guessed
at (``check_text``), and token ids must be a sequence of integers (``as_id_list``: lists, tuples, integer
arrays and tensors pass; strings, floats and bools do not)."""

from __future__ import annotations

import operator


class TextError(ValueError):
    """Text that is not valid Unicode, so it has no UTF-8 bytes to tokenize."""


def check_text(text: str, what: str = "the text") -> str:
    """``text`` itself if it can be written as UTF-8, else a ``TextError`` naming the position.

    The package's one policy for text that is not clean UTF-8: refuse it, never guess. Python turns
    bytes that are not UTF-8 (from a terminal, a file read with errors="surrogateescape", sys.argv)
    into lone surrogates U+D800..U+DFFF, which no UTF-8 text can hold; SentencePiece would fail on them
    with a cast error deep inside. Decoding the input with errors="replace" turns them into U+FFFD.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        raise TextError(
            f"{what} holds a character that is not valid Unicode at position {e.start} "
            f"(U+{ord(bad):04X}, a lone surrogate: bytes that were not UTF-8, near "
            f"{text[max(e.start - 10, 0) : e.start]!r}); decode the input as UTF-8, "
            "e.g. with errors='replace'."
        ) from None
    return text


def as_id_list(ids) -> list[int]:
    """A sequence of integer token ids as ``list[int]``; anything else is a TypeError.

    Lists and tuples of ints, numpy integer arrays and torch integer tensors (1-D) pass, numpy
    integers and one-element integer tensors as items too. A str ("123" is not three ids), floats
    (3.7 is not an id), bools and single numbers are refused instead of being converted.
    """
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(
            f"token ids must be a sequence of integers, got a {type(ids).__name__} ({ids[:20]!r}); "
            "to turn text into ids use encode()."
        )
    dtype = str(getattr(ids, "dtype", ""))
    if dtype and hasattr(ids, "tolist"):  # a numpy array or torch tensor: its dtype decides
        if "int" not in dtype or getattr(ids, "ndim", 1) != 1:
            raise TypeError(
                f"token ids must be a 1-D integer array or tensor, got dtype {dtype} with shape "
                f"{tuple(getattr(ids, 'shape', ()))}."
            )
        return [int(i) for i in ids.tolist()]
    try:
        items = list(ids)
    except TypeError:
        raise TypeError(
            f"token ids must be a sequence of integers, got {type(ids).__name__} {ids!r}; for one id write [i]."
        ) from None
    out = []
    for pos, i in enumerate(items):
        if isinstance(i, bool) or "bool" in str(getattr(i, "dtype", "")):
            ok = False
        elif isinstance(i, int):
            out.append(i)
            continue
        else:
            try:
                i = operator.index(i)  # numpy integers, one-element integer tensors
                ok = True
            except TypeError:
                ok = False
        if not ok:
            raise TypeError(
                f"token id at position {pos} is {i!r} ({type(i).__name__}), not an integer; "
                "token ids are whole numbers (cast with int() only if you mean it)."
            )
        out.append(i)
    return out
