"""Documents for training: a user's text file read as documents, a seeded validation split, and
documents packed into BOS + doc + EOS streams cut into (seq_len + 1)-token rows."""

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

DOC_DELIMITER = "<|endoftext|>"


class TextFileError(ValueError):
    """A text file that cannot be used for training; the message says why and what to do."""


def read_text_file(path: str | Path, delimiter: str | None = None) -> Iterator[str]:
    """The documents of a plain UTF-8 text file, checked up front.

    Documents are separated by `delimiter` if given, else by "<|endoftext|>" when the file
    contains it, else by blank lines. Each document is stripped; empty ones are dropped.
    Errors (missing file, a directory, empty file, bytes that are not UTF-8) are raised here,
    at the call, not on the first next(). The whole file is read into memory.
    """
    path = Path(path)
    if not path.exists():
        raise TextFileError(f"text file not found: {path}")
    if path.is_dir():
        raise TextFileError(f"{path} is a directory; give the path of one plain text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TextFileError(
            f"{path} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
            f"(line {line}) cannot be decoded. Re-encode the file as UTF-8, for example "
            f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt`."
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    docs = split_documents(text, delimiter)
    if not docs:
        raise TextFileError(f"{path} is empty: it has no text to train on")
    return iter(docs)


def split_documents(text: str, delimiter: str | None = None) -> list[str]:
    """Split text into stripped, non-empty documents (see read_text_file for the rule)."""
    if delimiter is None and DOC_DELIMITER in text:
        delimiter = DOC_DELIMITER
    parts = text.split(delimiter) if delimiter else re.split(r"\n[ \t]*\n", text)
    return [p.strip() for p in parts if p.strip()]


def text_documents(path: str | Path, delimiter: str | None = None) -> list[str]:
    """read_text_file as a list."""
    return list(read_text_file(path, delimiter))


def split_train_valid(docs: Sequence[str], valid_fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out a seeded random `valid_fraction` of the documents (at least one).

    Both parts keep the documents' original order. A single document is cut in two at the
    whitespace nearest the split point, so a file without blank lines still works.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    docs = list(docs)
    if not docs:
        raise ValueError("no documents to split")
    if len(docs) == 1:
        text = docs[0]
        cut = int(len(text) * (1 - valid_fraction))
        space = text.rfind(" ", 0, cut)
        cut = space if space > 0 else cut
        train, valid = text[:cut].strip(), text[cut:].strip()
        if not train or not valid:
            raise ValueError("the text is too short to hold out a validation part")
        return [train], [valid]
    n_valid = min(len(docs) - 1, max(1, round(len(docs) * valid_fraction)))
    held = set(random.Random(seed).sample(range(len(docs)), n_valid))
    train = [d for i, d in enumerate(docs) if i not in held]
    valid = [d for i, d in enumerate(docs) if i in held]
    return train, valid


# --------------------------------------------------------------------------------------------
# Packing tokens for pretraining
# --------------------------------------------------------------------------------------------


def pack_documents(
    token_lists: Iterable[Sequence[int]],
    seq_len: int,
    bos_id: int | None = 1,
    eos_id: int | None = 2,
    drop_last: bool = True,
) -> Iterator[list[int]]:
    """Concatenate BOS + doc + EOS for every doc and cut the stream into seq_len + 1 chunks.

    Each chunk gives inputs chunk[:-1] and targets chunk[1:] (T = seq_len of each). Consecutive
    chunks overlap by one token (the last target of one chunk is the first input of the
    next), so every token of the stream after the first is a target exactly once and none is
    lost. The tail shorter than seq_len + 1 is dropped unless drop_last=False.
    Pass bos_id=None or eos_id=None to leave that marker out.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    size = seq_len + 1
    buf: list[int] = []
    start = 0  # buf[start:] is what has not been emitted yet
    for toks in token_lists:
        if bos_id is not None:
            buf.append(bos_id)
        buf.extend(toks)
        if eos_id is not None:
            buf.append(eos_id)
        while len(buf) - start >= size:
            yield buf[start : start + size]
            start += seq_len  # keep the chunk's last token as the next chunk's first
        if start > 65536:  # drop what was emitted, so the buffer stays small
            buf, start = buf[start:], 0
    if not drop_last and len(buf) - start > 1:
        yield buf[start:]


def chunk_tensor(token_lists: Iterable[Sequence[int]], seq_len: int, bos_id: int | None = 1, eos_id: int | None = 2):
    """All packed chunks as one LongTensor of shape (N, seq_len + 1)."""
    import torch

    chunks = list(pack_documents(token_lists, seq_len, bos_id, eos_id))
    if not chunks:
        raise ValueError(f"not enough tokens for one chunk of {seq_len + 1}")
    return torch.tensor(chunks, dtype=torch.long)  # (N, T+1)


def batches(chunks, batch_size: int, seed: int = 0, epochs: int | None = None):
    """Seeded random batches of rows of `chunks` (N, T+1), each a LongTensor (B, T+1).

    Rows are visited in a fresh random order every epoch (torch.Generator seeded once, so the
    same seed gives the same batches). Infinite when epochs is None; otherwise stops after
    `epochs` passes, dropping a last batch shorter than batch_size.
    """
    import torch

    n = chunks.shape[0]
    gen = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    epoch = 0
    while True:
        while len(pending) < batch_size:
            if epochs is not None and epoch >= epochs:
                return
            pending = torch.cat([pending, torch.randperm(n, generator=gen)])
            epoch += 1
        idx, pending = pending[:batch_size], pending[batch_size:]
        yield chunks[idx]  # (B, T+1)


def split_batch(batch):
    """(B, T+1) -> inputs (B, T) and targets (B, T), shifted by one."""
    return batch[:, :-1], batch[:, 1:]
