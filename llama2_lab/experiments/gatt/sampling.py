"""Rejection sampling with the checker as the reward (paper §3.2.3 and §3.3): sample several
replies, keep one that follows the instruction and answers correctly."""

from __future__ import annotations

import torch

from ...corpora import dialogues as dlg
from ...inference.chat_batch import ChatBatch
from .chats import _decode, _slots_needed, _turn_ids
from .sequences import encode_turns


def accept(d: dlg.Dialogue, q: dlg.Question, reply: str) -> bool:
    """The reward: every applicable constraint of the instruction is obeyed *and* the question is
    answered right (`answer_correct`: an invented name when no persona was set fails, so the sampler
    cannot buy adherence with a wrong answer)."""
    return all(dlg.check_reply(d.constraints, q, reply).values()) and dlg.answer_correct(q, reply, d.constraints)


def choose(d: dlg.Dialogue, q: dlg.Question, candidates: list[str]) -> int | None:
    """Index of the first candidate `accept` passes, or None (then the turn falls back or ends)."""
    return next((j for j, c in enumerate(candidates) if accept(d, q, c)), None)


def rejection_sample(
    sampler, dialogues: list[dlg.Dialogue], n_candidates: int, fallback=None, stats: dict | None = None
) -> list[list[str]]:
    """Turn by turn: `sampler.propose(turn, alive)` gives n_candidates replies per dialogue (made
    with the instruction on every user message); one that `accept` passes is kept (`choose`) and
    `sampler.keep(choice)` continues each dialogue from it; a dialogue stops at a turn where
    no candidate passes, unless `fallback(d, q) -> reply` supplies one (the reference answer, as
    SFT data would; counted in `stats["fallback"]`). -> the kept replies per dialogue (possibly
    fewer turns than questions). The model sampler is `ModelSampler`; tests pass a stub.
    """
    stats = {} if stats is None else stats
    for key in ("sampled", "fallback", "failed"):
        stats.setdefault(key, 0)
    kept: list[list[str]] = [[] for _ in dialogues]
    alive = [True] * len(dialogues)
    for k in range(max(len(d.questions) for d in dialogues)):
        alive = [a and k < len(d.questions) for a, d in zip(alive, dialogues)]
        if not any(alive):
            break
        cands = sampler.propose(k, alive)
        choice: list[int | None] = [None] * len(dialogues)
        forced: dict[int, str] = {}
        for i, d in enumerate(dialogues):
            if not alive[i]:
                continue
            if len(cands[i]) != n_candidates:
                raise ValueError(f"the sampler gave {len(cands[i])} candidates, expected {n_candidates}.")
            choice[i] = choose(d, d.questions[k], cands[i])
            if choice[i] is not None:
                kept[i].append(cands[i][choice[i]])
                stats["sampled"] += 1
            elif fallback is not None:
                forced[i] = fallback(d, d.questions[k])
                kept[i].append(forced[i])
                stats["fallback"] += 1
            else:
                alive[i] = False
                stats["failed"] += 1
        sampler.keep(choice, forced)
    return kept


class ModelSampler:
    """GAtt steps 1-2 with the model itself: K rows per dialogue in one `ChatBatch`, the instruction
    in every user message, sampled replies; `keep` copies the accepted row over its siblings."""

    def __init__(
        self,
        model,
        tok,
        dialogues,
        n_candidates: int,
        temperature: float = 0.8,
        max_new: int = 40,
        generator: torch.Generator | None = None,
    ):
        self.tok, self.ds, self.K = tok, dialogues, n_candidates
        self.temperature, self.max_new, self.gen = temperature, max_new, generator
        n_turns = max(len(d.questions) for d in dialogues)
        self.cb = ChatBatch(
            model,
            len(dialogues) * n_candidates,
            # room for a forced (oracle) reply per turn on top of the sampled ones
            _slots_needed(tok, dialogues, n_turns, max_new, True)
            + sum(
                max(len(tok.encode(d.oracle_replies()[k])) + 4 for d in dialogues if k < len(d.questions))
                for k in range(n_turns)
            ),
            tok.eos_id,
        )
        self.pending = [[] for _ in dialogues]  # forced reply tokens, fed before the next turn

    def propose(self, turn: int, alive: list[bool]) -> list[list[str]]:
        rows = [
            self.pending[i] + _turn_ids(self.tok, d.system, d.questions[turn].text) if alive[i] else []
            for i, d in enumerate(self.ds)
            for _ in range(self.K)
        ]
        self.pending = [[] for _ in self.ds]
        active = torch.tensor(alive).repeat_interleave(self.K)
        ids = self.cb.reply(self.cb.feed(rows), self.max_new, self.temperature, generator=self.gen, active=active)
        self.last_ids = ids  # (B·K) token lists, for inspection
        return [[_decode(self.tok, ids[i * self.K + j]) for j in range(self.K)] for i in range(len(self.ds))]

    def keep(self, choice: list[int | None], forced: dict[int, str] | None = None) -> None:
        """Continue dialogue i from candidate choice[i], or from the reply forced[i] (the fallback)."""
        src = torch.arange(len(self.ds) * self.K)
        for i, c in enumerate(choice):
            if c is not None:
                src[i * self.K : (i + 1) * self.K] = i * self.K + c
        self.cb.select(src)
        if forced:
            rows = torch.zeros(len(self.ds) * self.K, dtype=torch.bool)
            for i, text in forced.items():
                rows[i * self.K : (i + 1) * self.K] = True
                ids, mask = encode_turns(self.tok, "", ["x"], [text])
                self.pending[i] = [t for t, m in zip(ids, mask) if m]  # the reply's tokens, "▁" and EOS
            self.cb.forget_reply(rows.to(self.cb.pos.device))


@torch.no_grad()
def sample_gatt_replies(
    model,
    tok,
    dialogues: list[dlg.Dialogue],
    n_candidates: int = 4,
    temperature: float = 0.8,
    max_new: int = 40,
    seed: int = 0,
    batch_size: int = 32,
    progress=None,
    fallback: bool = False,
    stats: dict | None = None,
) -> list[list[str]]:
    """Rejection-sampled GAtt replies from the model, `batch_size` dialogues at a time; with
    `fallback`, a turn where no candidate passes takes the oracle reply instead of ending."""
    fb = (lambda d, q: dlg.apply_constraints(d.constraints, q)) if fallback else None
    gen = torch.Generator().manual_seed(seed)
    order = sorted(range(len(dialogues)), key=lambda i: len(dialogues[i].questions))  # similar lengths together
    out: list[list[str]] = [[] for _ in dialogues]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        part = [dialogues[i] for i in idx]
        kept = rejection_sample(
            ModelSampler(model, tok, part, n_candidates, temperature, max_new, gen), part, n_candidates, fb, stats
        )
        for i, k in zip(idx, kept):
            out[i] = k
        if progress is not None:
            progress.update(sum(len(d.questions) for d in part))
    return out
