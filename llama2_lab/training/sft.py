"""Supervised fine-tuning with a loss mask: only the tokens a reply should learn count (paper §3.1).

A sequence is ``(ids, mask)``: ``mask[i] = 1`` where token ``i`` is a target the loss sees (the
assistant's answer), 0 on the prompt, the system message and padding. ``collate`` right-pads a batch;
``train_sft`` fine-tunes in place with the same recipe (``recipe.cosine_lr``, ``param_groups``) as
pretraining.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..core.transformer import Transformer
from .recipe import cosine_lr, param_groups

Seq = tuple[list[int], list[int]]  # token ids and their loss mask (1 = a target the loss sees)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy over the unmasked targets / their number: logits (B, T, V), targets and
    mask (B, T)."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (B·T,)
    m = mask.flatten().float()
    return (ce * m).sum() / m.sum().clamp(min=1)


def collate(seqs: list[Seq], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded inputs (B, T-1), next-token targets (B, T-1) and their mask (B, T-1)."""
    T = max(len(ids) for ids, _ in seqs)
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    m = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, (ids, mask) in enumerate(seqs):
        x[b, : len(ids)] = torch.tensor(ids)
        m[b, : len(mask)] = torch.tensor(mask)
    return x[:, :-1], x[:, 1:], m[:, 1:]  # the mask belongs to the token being predicted


def _batches(seqs: list[Seq], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Seeded batches of similar lengths (less padding): shuffle, sort within chunks of 32
    batches, cut, shuffle the batches; new epochs as needed."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    while len(out) < steps:
        order = list(range(len(seqs)))
        rng.shuffle(order)
        chunk = 32 * batch_size
        epoch = []
        for s in range(0, len(order), chunk):
            part = sorted(order[s : s + chunk], key=lambda i: len(seqs[i][0]))
            epoch += [part[j : j + batch_size] for j in range(0, len(part) - batch_size + 1, batch_size)]
        rng.shuffle(epoch)
        out += epoch
    return out[:steps]


def train_sft(
    model: Transformer,
    seqs: list[Seq],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    warmup: float = 0.05,
    progress=None,
) -> list[float]:
    """Fine-tune in place with Llama 2's recipe (AdamW β (0.9, 0.95), eps 1e-5, wd 0.1 on matrices,
    clip 1.0, linear warmup then cosine to 10 %) [P2 §2.2, §3.1]. -> loss per step."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-5)
    n_warm = max(1, int(warmup * steps))
    losses = []
    model.train()
    for step, idx in enumerate(_batches(seqs, batch_size, steps, seed)):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, lr, n_warm, max(steps, n_warm + 1))
        x, y, m = collate([seqs[i] for i in idx])
        loss = masked_loss(model(x), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def with_context(model: Transformer, max_seq_len: int) -> Transformer:
    """A copy of the model whose RoPE table reaches max_seq_len (weights unchanged). The shipped model
    was pretrained on short rows; fine-tuning on longer dialogues extends its context, as Llama 1
    was pretrained at 2048 tokens and GAtt-tuned at 4096 (App. A.3.5)."""
    new = Transformer(model.args.replace(max_seq_len=max(max_seq_len, model.args.max_seq_len)))
    new.load_state_dict(model.state_dict())
    return new.eval()
