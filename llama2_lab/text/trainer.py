"""Training a tokenizer as Meta did for Llama 2 (paper §2.1: the Llama 1 tokenizer, SentencePiece BPE, split
digits, byte fallback, 32k pieces): ``LLAMA2_TRAINER_SPEC``, the trainer settings read from Meta's
tokenizer.model, and ``train_tokenizer``, which trains a small tokenizer in memory with them (one thread, so the
same texts and seed give the same bytes) and names the cause when the text cannot support the vocabulary."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

import sentencepiece as spm

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

# Llama 2's trainer settings, read from Meta's tokenizer.model (`describe` on the
# real file shows them). Keys are SentencePieceTrainer flags, so the dict can be passed as is.
# Meta trained on 200M sentences with 80 threads; `train_tokenizer` keeps every setting but
# the vocabulary size and uses one thread, because only one thread gives identical bytes.
LLAMA2_TRAINER_SPEC = MappingProxyType(
    {
        "model_type": "bpe",
        "vocab_size": 32000,
        "character_coverage": 0.99995,  # rarer characters are left to byte fallback
        "byte_fallback": True,  # 256 pieces <0x00>..<0xFF> at ids 3..258: no <unk> in practice
        "split_digits": True,  # "12345" -> 5 digit tokens [P2 §2.2]
        "split_by_unicode_script": True,
        "split_by_whitespace": True,
        "split_by_number": True,
        "allow_whitespace_only_pieces": True,  # runs of spaces (code indentation) get their own pieces
        "treat_whitespace_as_suffix": False,  # "▁" starts a piece, never ends one
        "max_sentencepiece_length": 16,
        "max_sentence_length": 4192,
        "input_sentence_size": 200_000_000,
        "shuffle_input_sentence": True,
        "hard_vocab_limit": True,
        "use_all_vocab": False,
        "vocabulary_output_piece_score": True,
        "normalization_rule_name": "identity",  # no NFKC: text is tokenized exactly as written
        "add_dummy_prefix": True,  # "Hello" is tokenized as " Hello"
        "remove_extra_whitespaces": False,  # whitespace round-trips
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": -1,  # no pad token: Meta pads prompts with -1 (Meta's llama/generation.py)
    }
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    user_defined_symbols: Sequence[str] = (),
    seed: int = 0,
    num_threads: int = 1,
    **overrides,
) -> Tokenizer:
    """Train a BPE tokenizer in memory with Llama 2's settings (`LLAMA2_TRAINER_SPEC`).

    Texts are split into lines, because SentencePiece trains on lines (Meta fed it a text
    file), so "\\n" is never a piece and falls back to byte <0x0A> as in Llama 2. Lines over
    `max_sentence_length` (4192 bytes) are skipped by SentencePiece.
    `user_defined_symbols` always stay one token (e.g. the chat tags).
    With `num_threads=1` the same texts and seed give byte-identical models.
    """
    from .tokenizer import Tokenizer  # here, not at the top: tokenizer.py imports this module

    if isinstance(texts, str):
        texts = [texts]  # one document, not an iterable of characters

    def lines():
        for text in texts:
            yield from (line for line in text.split("\n") if line)

    spec = {**LLAMA2_TRAINER_SPEC, "vocab_size": vocab_size, "minloglevel": 2, **overrides}
    writer = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(),
            model_writer=writer,
            user_defined_symbols=list(user_defined_symbols),
            num_threads=num_threads,
            **spec,
        )
    except RuntimeError as err:
        msg = str(err)
        if "Vocabulary size too high" in msg:
            most = msg.rsplit("<=", 1)[-1].strip(" .")
            raise ValueError(
                f"Too little text for vocab_size={vocab_size}: BPE ran out of merges "
                f"(this text supports at most {most}). Give more, or more varied, "
                "text, or a smaller vocab_size."
            ) from None
        if "smaller than required_chars" in msg:
            need = msg.split("vs", 1)[-1].split(".")[0].strip()
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 byte pieces, the "
                f"special pieces and the characters of the text need {need}. Use a "
                "larger vocab_size."
            ) from None
        if "sentences_.empty()" in msg:
            raise ValueError("No text to train on: give at least one non-empty line.") from None
        raise
    return Tokenizer.from_bytes(writer.getvalue())
