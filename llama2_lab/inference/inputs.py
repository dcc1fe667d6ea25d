"""What the decode loop is given: prompt ids, stop conditions, seeds; and stop strings held back.

A stop string may arrive split over several tokens, so text that could still become one is held
back until it cannot (``_Holdback``); the caller never sees a stop string's first half.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from ..text.guards import as_id_list
from ..utils.validate import check_int


def _as_ids(prompt_ids, what: str = "prompt") -> list[int]:
    """A list/tuple of ints or a 1-D integer tensor -> list[int]; anything else is a clear error."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 2 and prompt_ids.shape[0] == 1:
            prompt_ids = prompt_ids[0]
        if prompt_ids.dim() != 1 or prompt_ids.is_floating_point():
            raise ValueError(
                f"{what} must be a 1-D list of token ids, got a {prompt_ids.dtype} tensor of shape "
                f"{tuple(prompt_ids.shape)}; for several prompts use generate_batch."
            )
        prompt_ids = prompt_ids.tolist()
    if isinstance(prompt_ids, str):
        raise ValueError(
            f"{what} must be token ids, got a str; encode it first "
            "(tokenizer.encode(text, bos=True)) or use generate_text."
        )
    try:
        ids = list(prompt_ids)
    except TypeError:
        raise ValueError(f"{what} must be a list of token ids, got {type(prompt_ids).__name__}.") from None
    try:
        ids = as_id_list(ids)  # numpy integers pass; floats, bools and nested lists do not
    except TypeError:
        raise ValueError(f"{what} must contain only int token ids; for several prompts use generate_batch.") from None
    if not ids:
        raise ValueError(f"{what} is empty: give at least one token (start with BOS = 1).")
    return ids


def _split_stop(stop, eos_id: int | None) -> tuple[set[int], list[str]]:
    """stop = None | id | str | list/tuple/set of ids and strs -> (stop ids incl. EOS, stop strings).

    Ids may be numpy integers; anything else (a float, bytes, a dict, a generator) is a ValueError
    naming what was given, not a guess (bytes would iterate as ids, a dict as its keys).
    """
    if stop is None:
        items = []
    elif isinstance(stop, (str, int, numbers.Integral)) and not isinstance(stop, bool):
        items = [stop]
    elif isinstance(stop, (list, tuple, set, frozenset)):
        items = list(stop)
    else:
        raise ValueError(
            f"stop must be None, a token id, a string, or a list of ids and strings, got "
            f"{type(stop).__name__} {stop!r}."
        )
    ids = {check_int("eos_id", eos_id, -1, note=" (-1 or None = no EOS)")} if eos_id is not None else set()
    strings: list[str] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise ValueError("a stop string must not be empty.")
            strings.append(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            ids.add(int(item))
        else:
            raise ValueError(f"stop must hold token ids (int) and/or strings, got {item!r} ({type(item).__name__}).")
    return ids, strings


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    from .sampling import MAX_SEED

    return torch.Generator(device=device).manual_seed(check_int("seed", seed, 0, maximum=MAX_SEED))


# Holding back what may still become a stop string
# ---------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Tokens (and their log-probs) and text released by one decode step."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    text: str = ""


class _Holdback:
    """Releases generated tokens and their text, holding back anything that may start a stop string.

    Text comes from a ``StreamDecoder`` primed with the prompt, so it continues the prompt (its
    first piece keeps its leading space) and never ends in half a UTF-8 character. A token is
    released once its characters are complete and lie entirely before any stop string; the
    text is cut exactly where the stop string starts. Without a tokenizer tokens pass straight on.
    """

    def __init__(self, tokenizer, prompt: list[int], stop_strings: list[str]):
        self.stops = stop_strings
        self.decoder = None
        if tokenizer is not None:
            from ..text.tokenizer import StreamDecoder

            self.decoder = StreamDecoder(tokenizer)
            for t in prompt:  # context only: the prompt's own text is not emitted
                self.decoder.push(t)
        self.text = ""  # continuation text decoded so far
        self.sent = 0  # characters of self.text already released
        self.pending: list[list] = []  # [token, logprob, end]; end = len(text) once its characters are complete

    def push(self, token: int, logprob: float | None) -> tuple[_Chunk, bool]:
        """Add one sampled token; return what can be released and whether a stop string appeared."""
        if self.decoder is None:
            return _Chunk([token], [logprob]), False
        self.pending.append([token, logprob, None])
        self._add_text(self.decoder.push(token))
        return self._release(final=False)

    def finish(self) -> tuple[_Chunk, bool]:
        """End of generation: release everything that is left (up to a stop string, if one appears)."""
        if self.decoder is None:
            return _Chunk(), False
        self._add_text(self.decoder.flush())
        return self._release(final=True)

    def _add_text(self, piece: str) -> None:
        if piece:
            self.text += piece
            for entry in self.pending:
                if entry[2] is None:
                    entry[2] = len(self.text)

    def _release(self, final: bool) -> tuple[_Chunk, bool]:
        # A stop string cannot start before self.sent: text before it was never a stop prefix.
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        stopped = bool(hits)
        cut = min(hits) if stopped else len(self.text) if final else len(self.text) - self._holdback()
        n = 0
        if final and not stopped:
            n = len(self.pending)
        else:
            while n < len(self.pending) and self.pending[n][2] is not None and self.pending[n][2] <= cut:
                n += 1
        chunk = _Chunk([e[0] for e in self.pending[:n]], [e[1] for e in self.pending[:n]], self.text[self.sent : cut])
        del self.pending[:n]
        self.sent = cut
        return chunk, stopped

    def _holdback(self) -> int:
        """Length of the longest unreleased suffix of the text that is a proper prefix of a stop string."""
        free = len(self.text) - self.sent
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, free), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return hold
