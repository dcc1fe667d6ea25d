"""Many dialogues at once, turn by turn, on one KV cache: each row at its own positions (left-padded
prompts), greedy replies fed back as history. What evaluation and rejection sampling run on."""

from __future__ import annotations

import torch

from ...core.attention import KVCache
from ...core.transformer import Transformer
from ...corpora import dialogues as dlg
from ...inference import check_logits, sample_top_p
from ...text import chat
from .sequences import encode_turns


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

    def reply(self, logits: torch.Tensor, max_new: int, temperature: float = 0.0, top_p: float = 0.9,
              generator: torch.Generator | None = None, active: torch.Tensor | None = None) -> list[list[int]]:
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

def _turn_ids(tok, system: str | None, user: str) -> list[int]:
    """BOS [INST] (<<SYS>> system <</SYS>>) user [/INST]: the prompt part of one turn."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return chat.encode_dialog(tok, msgs)

def _slots_needed(tok, dialogues, n_turns: int, max_new: int, sys_every: bool) -> int:
    total = 0
    for k in range(n_turns):
        total += max(len(_turn_ids(tok, d.system if (k == 0 or sys_every) else None, d.questions[k].text))
                     for d in dialogues if k < len(d.questions)) + max_new + 1
    return total

def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids).strip()

@torch.no_grad()
def run_chats(model, tok, dialogues: list[dlg.Dialogue], n_turns: int, sys_every: bool = False,
              max_new: int = 40, batch_size: int = 64, progress=None) -> list[list[str]]:
    """Free-running chats, greedy: each dialogue's first n_turns questions, the model's own replies
    as history; the system message in turn 1 (or in every turn: the upper bound). -> replies."""
    out = []
    for start in range(0, len(dialogues), batch_size):
        part = dialogues[start : start + batch_size]
        cb = ChatBatch(model, len(part), _slots_needed(tok, part, n_turns, max_new, sys_every), tok.eos_id)
        replies = [[] for _ in part]
        for k in range(n_turns):
            logits = cb.feed([_turn_ids(tok, d.system if (k == 0 or sys_every) else None, d.questions[k].text)
                              for d in part])
            for r, ids in zip(replies, cb.reply(logits, max_new)):
                r.append(_decode(tok, ids))
            if progress is not None:
                progress.update(len(part))
        out += replies
    return out

def reply_to(model, tok, messages: list[dict], max_new: int = 40, sys_every: bool = False) -> str:
    """Greedy reply to a chat (system?, user, assistant, ..., user), for the notebook's chat widget;
    `sys_every` repeats the system message in every user turn (the upper bound)."""
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else ""
    users = [m["content"] for m in msgs if m["role"] == "user"]
    replies = [m["content"] for m in msgs if m["role"] == "assistant"]
    ids, _ = encode_turns(tok, system, users, replies, sys_turns=range(len(users)) if sys_every else (0,))
    cb = ChatBatch(model, 1, len(ids) + max_new + 1, tok.eos_id)
    with torch.no_grad():
        return _decode(tok, cb.reply(cb.feed([ids]), max_new)[0])
