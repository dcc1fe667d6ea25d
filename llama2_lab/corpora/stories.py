"""Data for the course: a generated story corpus, user text files, and token packing.

Nothing can be downloaded, so the tiny Llama 2 of notebook 07 is pretrained on simple English
stories that this module writes itself, in the spirit of TinyStories (Eldan & Li, 2023): a
small vocabulary, short sentences, named characters whose pronouns stay consistent, a little
plot, dialogue in quotes, and an ending (sometimes a moral).

How a story is made: a plot (lost toy, new friend, trip, storm, race, ...) is a short Python
function that calls small randomized building blocks (openings, feelings, dialogue, searches,
endings) with word lists drawn from the top of this module. Everything is driven by one
`random.Random`, so a seed always gives the same stories and the global RNG is never touched.

    generate_story(rng)       one story (and, with return_meta=True, its plot and characters)
    stories(seed, n)          the stories from one seed, in order (infinite if n is None)
    train_stories(n)          TRAIN_SEED stream; valid_stories(n) uses the disjoint VALID_SEED
    corpus_stats(n)           words, characters, uniqueness, speed and a token estimate
    write_stories(path, n)    stories to a text file, one per blank-line-separated block
    read_text_file(path)      documents of a user's UTF-8 text file (`llama2-lab train --text`)
    split_train_valid(docs)   a seeded held-out validation part
    pack_documents(...)       BOS + doc + EOS streams cut into (seq_len + 1)-token chunks
    chunk_tensor / batches    those chunks as a (N, T+1) LongTensor and seeded (B, T+1) batches

Limits, said plainly: the stories are simple and formulaic on purpose, because a 5-15M
parameter model trained for minutes on a CPU can only learn something this regular. The
generator knows a few hundred words, not English; a model trained on it will not know what a
"volcano" is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

# The corpus's front door: the vocabulary (words.py), the builder and plots, and the document tools
# (documents.py) are reached through this module, as notebooks 07-08 and the trainer do.
from .builder import GROWNUPS, Character
from .documents import (
    DOC_DELIMITER,
    TextFileError,
    batches,
    chunk_tensor,
    pack_documents,
    read_text_file,
    split_batch,
    split_documents,
    split_train_valid,
    text_documents,
)
from .plots import PLOTS, generate_story
from .words import (
    ADJECTIVES,
    ANIMALS,
    BOY_NAMES,
    FOODS,
    GIRL_NAMES,
    GROUP_ACTIVITIES,
    NOUNS,
    PARAGRAPH_SEP,
    PLACE_INFO,
    PLACES,
    SOLO_ACTIVITIES,
    TOYS,
    VERBS,
    a,
    ing,
    past,
    plural,
)

TRAIN_SEED = 20230718  # Llama 2's release date
VALID_SEED = 7_000_001  # any other seed gives an independent stream

__all__ = [
    "TRAIN_SEED",
    "VALID_SEED",
    "stories",
    "train_stories",
    "valid_stories",
    "write_stories",
    "estimate_tokens",
    "corpus_stats",
    "GROWNUPS",
    "Character",
    "DOC_DELIMITER",
    "TextFileError",
    "batches",
    "chunk_tensor",
    "pack_documents",
    "read_text_file",
    "split_batch",
    "split_documents",
    "split_train_valid",
    "text_documents",
    "PLOTS",
    "generate_story",
    "ADJECTIVES",
    "ANIMALS",
    "BOY_NAMES",
    "FOODS",
    "GIRL_NAMES",
    "GROUP_ACTIVITIES",
    "NOUNS",
    "PARAGRAPH_SEP",
    "PLACE_INFO",
    "PLACES",
    "SOLO_ACTIVITIES",
    "TOYS",
    "VERBS",
    "a",
    "ing",
    "past",
    "plural",
]


def stories(seed: int, n: int | None = None, return_meta: bool = False) -> Iterator:
    """The stories of one seed, in order; infinite when n is None."""
    rng = random.Random(seed)
    i = 0
    while n is None or i < n:
        yield generate_story(rng, return_meta=return_meta)
        i += 1


def train_stories(n: int | None = None) -> Iterator[str]:
    return stories(TRAIN_SEED, n)


def valid_stories(n: int | None = None) -> Iterator[str]:
    return stories(VALID_SEED, n)


def write_stories(path: str | Path, n: int, seed: int = TRAIN_SEED) -> Path:
    """Write n stories to a text file, separated by blank lines (read_text_file reads them
    back one per document). Useful for training a tokenizer or for `train --text`."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for story in stories(seed, n):
            f.write(story + "\n\n")
    return path


def estimate_tokens(words: int, tokens_per_word: float = 1.3) -> int:
    """Tokens a word count becomes, punctuation included. On this corpus a SentencePiece BPE
    with Llama 2's settings gives 1.32 tokens/word at vocab 2048 and 1.23 at vocab 4096."""
    return int(words * tokens_per_word)


def corpus_stats(n: int = 2000, seed: int = TRAIN_SEED, tokens_per_word: float = 1.3) -> dict:
    """Size and speed of the first n stories of a seed, and what a token budget needs.

    'stories_for_10M_tokens' says how many stories give ten million tokens (estimated).
    """
    t0 = time.perf_counter()
    texts = list(stories(seed, n))
    seconds = time.perf_counter() - t0
    words = sum(len(t.split()) for t in texts)
    chars = sum(len(t) for t in texts)
    tokens = estimate_tokens(words, tokens_per_word)
    return {
        "stories": n,
        "unique_stories": len(set(texts)),
        "words": words,
        "chars": chars,
        "avg_words": words / n,
        "min_words": min(len(t.split()) for t in texts),
        "max_words": max(len(t.split()) for t in texts),
        "est_tokens": tokens,
        "seconds": seconds,
        "stories_per_s": n / seconds,
        "words_per_s": words / seconds,
        "stories_for_10M_tokens": int(10_000_000 / (tokens / n)),
    }


# --------------------------------------------------------------------------------------------
# A user's own text file (`llama2-lab train --text FILE`)
# --------------------------------------------------------------------------------------------
