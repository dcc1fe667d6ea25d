"""Llama 2's tokenizer: a SentencePiece BPE model, used as Meta does (paper §2.1: the
Llama 1 tokenizer, SentencePiece BPE, split digits, byte fallback, 32k pieces).

Two things live here:

* `Tokenizer`, a thin wrapper with Meta's interface (`encode(s, bos, eos)`, `bos_id`, `eos_id`,
  `pad_id`, `n_words`) that also loads from bytes, saves atomically and gives character offsets;
* `StreamDecoder`, which turns generated ids into text one id at a time without ever
  emitting half a UTF-8 character.

Beside it, and importable from here too: `train_tokenizer` and `LLAMA2_TRAINER_SPEC` (trainer.py), which
train a small tokenizer in memory with Llama 2's settings; `describe` (spm_model.py), which reads the
settings back out of any `.model` file; `check_text`, `TextError` and `as_id_list` (guards.py), the
checks on text and ids; llama2.c's `tokenizer.bin` format is in formats/llama2c.py.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from ..utils.io import atomic_write_bytes
from .guards import TextError, as_id_list, check_text
from .trainer import LLAMA2_TRAINER_SPEC, train_tokenizer

__all__ = [
    "LLAMA2_TRAINER_SPEC",
    "SPACE",
    "StreamDecoder",
    "TextError",
    "Tokenizer",
    "as_id_list",
    "check_text",
    "describe",
    "train_tokenizer",
]

SPACE = "\u2581"  # "▁", SentencePiece's visible space


class Tokenizer:
    """A SentencePiece model with Meta's `Tokenizer` interface (`llama/tokenizer.py` [ML])."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            hint = f" Did you mean {path / 'tokenizer.model'}?" if (path / "tokenizer.model").is_file() else ""
            raise IsADirectoryError(
                f"{path} is a folder; give the path of the SentencePiece "
                f"tokenizer file itself (Llama 2 calls it tokenizer.model).{hint}"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"No tokenizer file at {path}: expected a SentencePiece model file such as Llama 2's tokenizer.model."
            )
        self._load(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, model_proto: bytes) -> Tokenizer:
        """Load a tokenizer from the bytes of a `.model` file (what `model_proto` returns)."""
        tok = cls.__new__(cls)
        tok._load(bytes(model_proto), source="the given bytes")
        return tok

    def _load(self, proto: bytes, source: str) -> None:
        if not proto:
            raise ValueError(f"{source}: empty, expected a SentencePiece model (tokenizer.model).")
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as err:
            raise ValueError(
                f"{source} is not a SentencePiece model ({err.__class__.__name__}: "
                f"{str(err).strip()}).{_format_hint(proto)}"
            ) from None
        self.sp = sp
        self.source = source
        # With a dummy prefix, the first piece of "a" starts with "▁" (Meta's tokenizer.model: add_dummy_prefix).
        self._dummy_prefix = sp.encode("a", out_type=str)[0].startswith(SPACE)

    # Meta's attribute names, as properties so that they always agree with the model.
    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    @property
    def n_words(self) -> int:
        return self.sp.vocab_size()

    vocab_size = n_words

    def __len__(self) -> int:
        return self.n_words

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, n_words={self.n_words})"

    @property
    def model_proto(self) -> bytes:
        """The serialized model: exactly the bytes of a `.model` file."""
        return self.sp.serialized_model_proto()

    def save(self, path: str | os.PathLike) -> None:
        """Write the `.model` file atomically (temp file, then rename)."""
        atomic_write_bytes(path, self.model_proto)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Text -> ids (length T), BOS/EOS added as ids only: the text "<s>" is not BOS (Meta's tokenizer.model: add_dummy_prefix)."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        ids = self.sp.encode(check_text(text))
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int]) -> str:
        """Ids (length T) -> text; BOS/EOS (control ids) decode to nothing.

        One text does not survive the round trip: "▁" itself comes back as a space, because
        SentencePiece uses that character to mark spaces.
        """
        return self.sp.decode(self._check_ids(ids))

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(self._check_ids([i])[0])

    def piece_to_id(self, piece: str) -> int:
        """Id of a piece such as "▁Hello" or "<0x0A>"; unknown pieces give `unk_id`, as in SentencePiece."""
        return self.sp.piece_to_id(piece)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The piece string of every id, e.g. ["▁Hello", "▁world"]: what notebooks display."""
        return [self.sp.id_to_piece(i) for i in self._check_ids(ids)]

    def score(self, i: int) -> float:
        """The piece's score; for BPE it ranks merges (earlier merge = higher score)."""
        return self.sp.get_score(self._check_ids([i])[0])

    def is_byte(self, i: int) -> bool:
        return self.sp.is_byte(self._check_ids([i])[0])

    def is_control(self, i: int) -> bool:
        return self.sp.is_control(self._check_ids([i])[0])

    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """Text -> [(id, start, end)] (length T), where text[start:end] is what the token covers.

        A piece's leading "▁" covers the space before the word; the dummy-prefix "▁" covers
        nothing; every byte-fallback token of a character covers that whole character.
        Works for models with an identity normalizer (Llama 2 and those trained here).
        """
        ids = self.encode(text)
        # SentencePiece's view of the text: dummy prefix, spaces shown as "▁" (Meta's tokenizer.model: add_dummy_prefix).
        prefix = SPACE if (ids and self._dummy_prefix) else ""
        norm = prefix + text.replace(" ", SPACE)
        out, pos, pending = [], 0, b""
        for i in ids:
            piece = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                pending += bytes([int(piece[3:5], 16)])
                char_bytes = norm[pos].encode() if pos < len(norm) else b""
                span = (pos, pos + 1)
                if pending == char_bytes:
                    pos, pending = pos + 1, b""
            elif not pending and norm.startswith(piece, pos):
                span = (pos, pos + len(piece))
                pos += len(piece)
            else:
                raise ValueError(
                    f"cannot align piece {piece!r} with the text at character "
                    f"{pos - len(prefix)}: offsets need a model that keeps text as written "
                    "(identity normalizer, remove_extra_whitespaces=False)"
                )
            out.append((i, max(span[0] - len(prefix), 0), max(span[1] - len(prefix), 0)))
        if pos != len(norm):
            raise ValueError(
                "the pieces do not cover the text: offsets need a model that keeps "
                "text as written (identity normalizer, remove_extra_whitespaces=False)"
            )
        return out

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = as_id_list(ids)
        n = self.n_words
        for pos, i in enumerate(ids):
            if not 0 <= i < n:
                why = " (-1 is Llama 2's pad id: drop the padding first)" if i == self.pad_id else ""
                raise ValueError(
                    f"token id {i} at position {pos} is out of range for this tokenizer: valid ids are 0..{n - 1}{why}"
                )
        return ids


def _format_hint(data: bytes) -> str:
    """Guess what a non-SentencePiece file is, to say what to do instead."""
    head = data[:64].lstrip()
    if head.startswith(b"{"):
        return (
            " It looks like JSON (a Hugging Face tokenizer.json?); this class needs the SentencePiece tokenizer.model."
        )
    if len(data) >= 4 and 0 < struct.unpack_from("<I", data)[0] <= 64:
        return (
            " It may be a llama2.c tokenizer.bin; read that with read_tokenizer_bin(), "
            "or load the tokenizer.model it was exported from."
        )
    return " Expected the tokenizer.model file of a Llama 2 checkpoint or one saved by Tokenizer.save()."


class StreamDecoder:
    """Ids in one at a time, text out: the pushed pieces always concatenate to `decode(all_ids)`.

    Each push re-decodes a short window of recent ids and returns only the text that grew.
    Decoding a window (not the single id) keeps SentencePiece's leading-space rule right, and
    holding back text that ends in U+FFFD keeps a character split over byte-fallback tokens
    (an emoji is 4) from being emitted half done. (The same scheme as HF's TextStreamer.)
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._start = 0  # the window starts here
        self._read = 0  # ids before this are already emitted

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes ("" while a character is unfinished)."""
        self.ids.extend(self.tokenizer._check_ids([token_id]))
        decode = self.tokenizer.sp.decode
        done = decode(self.ids[self._start : self._read])
        text = decode(self.ids[self._start :])
        if len(text) > len(done) and not text.endswith("\ufffd"):
            self._start, self._read = self._read, len(self.ids)
            return text[len(done) :]
        return ""

    def flush(self) -> str:
        """Emit whatever is held back (at the end of generation), broken characters included."""
        decode = self.tokenizer.sp.decode
        done = decode(self.ids[self._start : self._read])
        text = decode(self.ids[self._start :])
        self._start = self._read = len(self.ids)
        return text[len(done) :]


# --- Reading the settings back out of a .model file --------------------------------------------


# Reading a .model file's settings lives in spm_model.py; notebook 01 and the tests ask for it here too.
from .spm_model import describe  # noqa: E402, F401
