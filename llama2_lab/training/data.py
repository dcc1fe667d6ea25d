"""Pretraining data: documents -> tokenizer -> packed (N, T + 1) rows."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .config import TrainConfig, TrainError


# Data: documents -> tokenizer -> packed (N, T + 1) rows
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """Packed rows (N, T + 1) for training and validation, and the tokenizer that made them."""

    train: torch.Tensor
    valid: torch.Tensor
    tokenizer: object
    source: str
    n_train_docs: int
    n_valid_docs: int

    @property
    def train_tokens(self) -> int:
        return self.train.numel()


def _documents(cfg: TrainConfig) -> tuple[list[str], list[str], str]:
    """Training and validation documents: generated stories (disjoint seeds) or a text file."""
    from ..corpora import stories as data

    if cfg.text_file is None:
        # Disjoint seeds (data.TRAIN_SEED / VALID_SEED): validation stories are never trained on.
        train = list(data.train_stories(cfg.n_train_stories))
        source = f"generated stories (llama2_lab.data, train seed {data.TRAIN_SEED}, valid seed {data.VALID_SEED})"
        if cfg.supplement_share:
            from ..corpora.numbers import supplement

            n_extra = round(len(train) * cfg.supplement_share / (1 - cfg.supplement_share))
            train += list(supplement(data.TRAIN_SEED + 1, n_extra))
            random.Random(cfg.seed).shuffle(train)  # mixed through the rows, not a block at the end
            source += f" + {n_extra} supplement documents (corpora/numbers.py: digits, sums, capitals)"
        return train, list(data.valid_stories(cfg.n_valid_stories)), source
    docs = data.text_documents(cfg.text_file)  # raises data.TextFileError (a ValueError) with the reason
    try:
        # A seeded 5 % of the documents (one document is cut near its end) is held out.
        train_docs, valid_docs = data.split_train_valid(docs, 0.05, seed=cfg.seed)
    except ValueError as err:
        raise TrainError(f"{cfg.text_file}: {err}; give a longer text file.") from None
    return train_docs, valid_docs, f"text file {cfg.text_file}"


def _pack(tok, docs: list[str], seq_len: int, what: str) -> torch.Tensor:
    """BOS + doc + EOS for every document, concatenated and cut into (N, T + 1) rows."""
    from ..corpora import stories as data

    ids = [tok.encode(d) for d in docs]
    try:
        return data.chunk_tensor(ids, seq_len, tok.bos_id, tok.eos_id)  # (N, T + 1)
    except ValueError:
        n_tok = sum(len(x) + 2 for x in ids)
        raise TrainError(
            f"the {what} text is {n_tok} tokens, fewer than one row of seq_len + 1 = "
            f"{seq_len + 1}. Use more text or a smaller --seq-len."
        ) from None


def prepare_data(cfg: TrainConfig, tokenizer=None) -> TrainData:
    """Documents, a tokenizer trained on a sample of them (unless given), and packed rows."""
    from ..text.tokenizer import train_tokenizer

    train_docs, valid_docs, source = _documents(cfg)
    if tokenizer is None and cfg.init_from:
        from ..formats import load_tokenizer

        tokenizer = load_tokenizer(cfg.init_from, required=True)  # continued pretraining keeps its pieces
    if tokenizer is None:
        tokenizer = train_tokenizer(train_docs[: cfg.tokenizer_docs], cfg.vocab_size, seed=cfg.seed)
    elif tokenizer.vocab_size != cfg.vocab_size:
        raise TrainError(
            f"the tokenizer has {tokenizer.vocab_size} pieces but the config says "
            f"vocab_size={cfg.vocab_size}; make them agree."
        )
    train_rows = _pack(tokenizer, train_docs, cfg.seq_len, "training")
    try:
        valid_rows = _pack(tokenizer, valid_docs, cfg.seq_len, "validation")
    except TrainError:
        if len(train_rows) < 2:
            raise
        # A short text file: its held-out documents fill no row, so the last rows are held out.
        n_valid = max(1, len(train_rows) // 10)
        train_rows, valid_rows = train_rows[:-n_valid], train_rows[-n_valid:]
        source += f" (last {n_valid} rows held out)"
    return TrainData(train_rows, valid_rows, tokenizer, source, len(train_docs), len(valid_docs))
