"""Many chats decoded in lockstep on one KV cache, each row at its own positions.

Rows of different lengths share cache slots; each keeps its own RoPE positions and a mask of the
slots that hold its real tokens (``Transformer.forward(positions=..., valid=...)``), so every row
gets what it would get alone. Used for evaluating and sampling whole dialogues (Ghost Attention,
rejection sampling, PPO rollouts).
"""

from __future__ import annotations

import torch

from ..core.attention import KVCache
from ..core.transformer import Transformer
from .sampling import check_logits, sample_top_p


class ChatBatch:
    """B chats decoded in lockstep: each row has its own position; all share cache slots.

    `feed(rows)` appends token lists (ragged) and returns each row's next-token logits;
    `reply(...)` decodes until every row has written EOS (finished rows idle on masked padding).
    """

    def __init__(self, model: Transformer, batch_size: int, max_slots: int, eos_id: int = 2):
        a = model.args
        w = model.tok_embeddings.weight
        self.model, self.B, self.eos_id = model, batch_size, eos_id
        self.cache = KVCache(a.n_layers, batch_size, max_slots, a.kv_heads, a.head_dim, w.device, w.dtype)
        self.valid = torch.zeros(batch_size, max_slots, dtype=torch.bool, device=w.device)
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=w.device)
        self.slot = 0

    def feed(self, rows: list[list[int]]) -> torch.Tensor:
        """Append rows[b] to chat b (empty = nothing) -> logits (B, V) after each row's last token
        (meaningless for rows given nothing: they only occupy masked slots)."""
        L = max(1, max(len(r) for r in rows))
        if self.slot + L > self.cache.max_len:
            raise RuntimeError(f"ChatBatch ran out of cache slots ({self.cache.max_len}); give a larger max_slots.")
        n = torch.tensor([len(r) for r in rows], device=self.pos.device)  # (B,)
        if int((self.pos + n).max()) > self.model.args.max_seq_len:
            raise RuntimeError(f"a chat would pass max_seq_len={self.model.args.max_seq_len}; use fewer turns.")
        tokens = torch.zeros(self.B, L, dtype=torch.long, device=self.pos.device)
        for b, r in enumerate(rows):
            if r:
                tokens[b, : len(r)] = torch.tensor(r)
        steps = torch.arange(L, device=self.pos.device)
        positions = (self.pos[:, None] + steps).clamp(max=self.model.args.max_seq_len - 1)  # (B, L)
        self.valid[:, self.slot : self.slot + L] = steps[None, :] < n[:, None]
        logits = self.model(tokens, self.slot, self.cache, positions=positions, valid=self.valid)  # (B, L, V)
        self.slot += L
        self.pos += n
        last = (n - 1).clamp(min=0)
        return logits[torch.arange(self.B), last]  # (B, V)

    def reply(
        self,
        logits: torch.Tensor,
        max_new: int,
        temperature: float = 0.0,
        top_p: float = 0.9,
        generator: torch.Generator | None = None,
        active: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Decode one reply per active row, greedy (temperature 0) or sampled; the reply and its
        EOS enter the history (an EOS is forced after max_new tokens). -> ids without EOS."""
        out = [[] for _ in range(self.B)]
        done = torch.zeros(self.B, dtype=torch.bool) if active is None else ~active.cpu()
        self._reply_start = (self.slot, self.pos.clone())  # for forget_reply
        for _ in range(max_new + 1):
            check_logits(logits)  # NaN/inf logits: a named error, never an argmax onto <unk>
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = sample_top_p(probs, top_p, generator)[:, 0]
            else:
                nxt = logits.argmax(-1)
            nxt = nxt.cpu()
            feed = []
            for b in range(self.B):
                if done[b]:
                    feed.append([])
                    continue
                t = int(nxt[b])
                if t != self.eos_id and len(out[b]) >= max_new:
                    t = self.eos_id  # too long: close the turn so the chat stays well formed
                if t == self.eos_id:
                    done[b] = True
                else:
                    out[b].append(t)
                feed.append([t])
            if all(len(f) == 0 for f in feed):
                break
            logits = self.feed(feed)
        return out

    def forget_reply(self, rows: torch.Tensor) -> None:
        """Remove the last reply (and its EOS) from the history of rows (B,) bool: its slots are
        masked and the rows' positions rewound, as if it had never been written."""
        slot, pos = self._reply_start
        self.valid[rows, slot : self.slot] = False
        self.pos = torch.where(rows, pos, self.pos)

    def select(self, index: torch.Tensor) -> None:
        """Make row b a copy of row index[b] (to continue every candidate from the kept one)."""
        for layer in range(len(self.cache.k)):
            self.cache.k[layer] = self.cache.k[layer][index]
            self.cache.v[layer] = self.cache.v[layer][index]
        self.valid, self.pos = self.valid[index], self.pos[index]
