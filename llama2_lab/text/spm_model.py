"""Reading the settings back out of a SentencePiece ``.model`` file (its protobuf, field by field, with no
protobuf dependency): what ``describe`` shows, and how a tokenizer is checked against Llama 2's settings."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


# A .model file is a protobuf `ModelProto` (sentencepiece_model.proto). Reading the few fields
# we show takes a 20-line wire-format reader, so `describe` needs no protobuf package.
# field number -> (name, kind, default); kinds: s string, e enum, i int, b bool, f float32.
_MODEL_TYPES = (None, "unigram", "bpe", "word", "char")  # spelled as the trainer flag


_PIECE_TYPES = (None, "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE")


_TRAINER_FIELDS = {
    3: ("model_type", "e", 1),
    4: ("vocab_size", "i", 8000),
    10: ("character_coverage", "f", 0.9995),
    11: ("input_sentence_size", "i", 0),
    19: ("shuffle_input_sentence", "b", True),
    18: ("max_sentence_length", "i", 4192),
    16: ("num_threads", "i", 16),
    20: ("max_sentencepiece_length", "i", 16),
    21: ("split_by_unicode_script", "b", True),
    23: ("split_by_number", "b", True),
    22: ("split_by_whitespace", "b", True),
    24: ("treat_whitespace_as_suffix", "b", False),
    26: ("allow_whitespace_only_pieces", "b", False),
    25: ("split_digits", "b", False),
    30: ("control_symbols", "s*", ()),
    31: ("user_defined_symbols", "s*", ()),
    35: ("byte_fallback", "b", False),
    32: ("vocabulary_output_piece_score", "b", True),
    33: ("hard_vocab_limit", "b", True),
    34: ("use_all_vocab", "b", False),
    40: ("unk_id", "i", 0),
    41: ("bos_id", "i", 1),
    42: ("eos_id", "i", 2),
    43: ("pad_id", "i", -1),
    45: ("unk_piece", "s", "<unk>"),
    46: ("bos_piece", "s", "<s>"),
    47: ("eos_piece", "s", "</s>"),
    48: ("pad_piece", "s", "<pad>"),
    44: ("unk_surface", "s", " \u2047 "),
}


_NORMALIZER_FIELDS = {
    1: ("name", "s", ""),
    3: ("add_dummy_prefix", "b", True),
    4: ("remove_extra_whitespaces", "b", True),
    5: ("escape_whitespaces", "b", True),
}


def _fields(buf: bytes):
    """Yield (field number, value) of one protobuf message; value is int, bytes or 4/8 raw bytes."""
    pos = 0

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while pos < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            n = varint()
            yield number, buf[pos : pos + n]
            pos += n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            yield number, buf[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _float32(raw: bytes) -> float:
    """The shortest decimal that is the same float32 (0.99995, not 0.9999499917030334)."""
    x = struct.unpack("<f", raw)[0]
    for digits in range(6, 10):
        if struct.unpack("<f", struct.pack("<f", float(f"{x:.{digits}g}")))[0] == x:
            return float(f"{x:.{digits}g}")
    return x


def _read_spec(buf: bytes, table: dict) -> dict:
    spec = {name: default for name, _, default in table.values()}
    for number, value in _fields(buf):
        if number not in table:
            continue
        name, kind, _ = table[number]
        if kind == "b":
            spec[name] = bool(value)
        elif kind == "i":
            spec[name] = value - (1 << 64) if value >= 1 << 63 else value  # negative int32
        elif kind == "f":
            spec[name] = _float32(value)
        elif kind == "s":
            spec[name] = value.decode()
        elif kind == "s*":
            spec[name] = (*spec[name], value.decode())
        elif kind == "e":
            spec[name] = value
    if "model_type" in spec:
        spec["model_type"] = _MODEL_TYPES[spec["model_type"]]
    return spec


def describe(tokenizer: Tokenizer) -> dict:
    """The settings stored in a model: {"trainer_spec": {...}, "normalizer_spec": {...}, "pieces": {type: count}}."""
    trainer, normalizer = b"", b""
    counts: dict[str | None, int] = {}
    for number, value in _fields(tokenizer.model_proto):
        if number == 1:  # one SentencePiece: piece (1), score (2), type (3, default NORMAL)
            kind = dict(_fields(value)).get(3, 1)
            counts[_PIECE_TYPES[kind]] = counts.get(_PIECE_TYPES[kind], 0) + 1
        elif number == 2:
            trainer = value
        elif number == 3:
            normalizer = value
    return {
        "trainer_spec": _read_spec(trainer, _TRAINER_FIELDS),
        "normalizer_spec": _read_spec(normalizer, _NORMALIZER_FIELDS),
        "pieces": counts,
    }
