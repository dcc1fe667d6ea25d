"""GAtt training sequences (paper §3.3): the system instruction is kept in the first turn only, and
the loss is masked on every earlier turn, so the model learns to follow an instruction it no
longer sees repeated."""

from __future__ import annotations

from ...corpora import dialogues as dlg
from ...text import chat
from ...training.sft import Seq


def encode_turns(tok, system: str, users: list[str], replies: list[str], sys_turns=(0,), train_turns=None) -> Seq:
    """Llama-2-chat ids and loss mask, built pair by pair, as Meta concatenates them (Meta's llama/generation.py).

    `system` goes into the user messages of `sys_turns` (turn 0 only = the normal format; every
    turn = GAtt step 1). A final user message without reply is left open (the prompt). The mask is
    1 on the replies (and their EOS) of `train_turns` (None = all replies).
    """
    ids, mask = [], []
    for k, user in enumerate(users):
        msgs = [{"role": "system", "content": system}] if system and k in sys_turns else []
        msgs.append({"role": "user", "content": user})
        if k < len(replies):
            msgs.append({"role": "assistant", "content": replies[k]})
            i, m = chat.encode_training_dialog(tok, msgs)
            if train_turns is not None and k not in train_turns:
                m = [0] * len(m)
        else:
            i = chat.encode_dialog(tok, msgs)
            m = [0] * len(i)
        ids += i
        mask += m
    return ids, mask


def plain_sequence(tok, d: dlg.Dialogue, n: int) -> Seq:
    """Shared by both arms: the first n turns as plain chat (no system), loss on every reply."""
    return encode_turns(tok, "", [q.text for q in d.questions[:n]], d.plain_replies()[:n], sys_turns=())


def baseline_sequence(tok, d: dlg.Dialogue, t: int) -> Seq:
    """Baseline SFT: plain history, then the instruction in the message of turn t (1-based) and the
    demonstrated reply; loss on that reply only. t = 1 is the usual single-turn example."""
    users = [q.text for q in d.questions[:t]]
    replies = d.plain_replies()[: t - 1] + [dlg.apply_constraints(d.constraints, d.questions[t - 1])]
    return encode_turns(tok, d.system, users, replies, sys_turns=(t - 1,), train_turns={t - 1})


def gatt_sequence(tok, d: dlg.Dialogue, replies: list[str], loss: str = "last") -> Seq:
    """GAtt steps 3-4: instruction in turn 1 only, replies sampled with it everywhere.

    loss="last": the loss on the last reply and its EOS only, as the paper writes it (the earlier
    turns are context). loss="all": on every reply. Every reply here was sampled with the
    instruction and accepted by the checker (or is the oracle's, which obeys it too), so this is the
    paper's last-turn loss applied to each prefix of the dialogue at once: in a causal model the loss
    on reply k of the whole sequence equals the loss on the last reply of its first k turns.
    """
    if loss not in ("last", "all"):
        raise ValueError(f"loss must be 'last' or 'all', got {loss!r}.")
    n = len(replies)
    users = [q.text for q in d.questions[:n]]
    return encode_turns(tok, d.system, users, replies, sys_turns=(0,), train_turns=None if loss == "all" else {n - 1})


def _fit_turns(build, n: int, max_tokens: int) -> tuple[Seq, int]:
    """build(n) with n lowered until the sequence fits max_tokens."""
    while n > 1:
        seq = build(n)
        if len(seq[0]) <= max_tokens:
            return seq, n
        n -= 1
    return build(1), 1
