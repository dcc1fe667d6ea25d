"""Many dialogues at once, turn by turn, on one KV cache: each row at its own positions (left-padded
prompts), greedy replies fed back as history. What evaluation and rejection sampling run on."""

from __future__ import annotations

import torch

from ...corpora import dialogues as dlg
from ...inference.chat_batch import ChatBatch
from ...text import chat
from .sequences import encode_turns


def _turn_ids(tok, system: str | None, user: str) -> list[int]:
    """BOS [INST] (<<SYS>> system <</SYS>>) user [/INST]: the prompt part of one turn."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return chat.encode_dialog(tok, msgs)


def _slots_needed(tok, dialogues, n_turns: int, max_new: int, sys_every: bool) -> int:
    total = 0
    for k in range(n_turns):
        total += (
            max(
                len(_turn_ids(tok, d.system if (k == 0 or sys_every) else None, d.questions[k].text))
                for d in dialogues
                if k < len(d.questions)
            )
            + max_new
            + 1
        )
    return total


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids).strip()


@torch.no_grad()
def run_chats(
    model,
    tok,
    dialogues: list[dlg.Dialogue],
    n_turns: int,
    sys_every: bool = False,
    max_new: int = 40,
    batch_size: int = 64,
    progress=None,
) -> list[list[str]]:
    """Free-running chats, greedy: each dialogue's first n_turns questions, the model's own replies
    as history; the system message in turn 1 (or in every turn: the upper bound). -> replies."""
    out = []
    for start in range(0, len(dialogues), batch_size):
        part = dialogues[start : start + batch_size]
        cb = ChatBatch(model, len(part), _slots_needed(tok, part, n_turns, max_new, sys_every), tok.eos_id)
        replies = [[] for _ in part]
        for k in range(n_turns):
            logits = cb.feed(
                [_turn_ids(tok, d.system if (k == 0 or sys_every) else None, d.questions[k].text) for d in part]
            )
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
