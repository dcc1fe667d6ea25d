"""Reward models: the tiny chat model with a scalar head, trained on preference pairs [P2 §3.2.2].

The paper initialises each reward model from a chat model checkpoint, so the reward model "knows"
what the chat model knows, and replaces "the classification head for next-token prediction ... with a
regression head for outputting a scalar reward". It reads one score per (prompt, reply): here the final
hidden state of the reply's last token (the EOS that closes the answer), as causal reward models do.

The loss is the binary ranking loss with a margin that grows with the annotators' rating:

    L = −log σ(r(x, y_c) − r(x, y_r) − m(r))          [P2 eq. 2, margins in Table 27]

Two reward models are trained, helpfulness and safety, and PPO uses a piecewise combination of them
[P2 §3.2.3]: the safety score when the prompt is tagged as safety-relevant or the safety score is below
0.15, the helpfulness score otherwise; the chosen score is turned back from a probability into a logit
and whitened "to increase stability". `combine` and `whiten` implement that.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.transformer import Transformer
from ..corpora import preferences as prefs
from ..text import chat

SAFETY_THRESHOLD = 0.15  # [P2 §3.2.3]: R_s(g|p) < 0.15 selects the safety reward


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class RewardModel(nn.Module):
    """A `Transformer` body (its `output` head unused) and a scalar head on the final hidden state.

    tokens (B, T) right-padded, lengths (B,) -> rewards (B,) read at position lengths − 1.
    """

    def __init__(self, body: Transformer):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.args.dim, 1)
        nn.init.normal_(self.head.weight, std=body.args.dim**-0.5)
        nn.init.zeros_(self.head.bias)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) -> final normed hidden states (B, T, dim), with gradients (the body's own forward pass)."""
        return self.body.features(tokens)  # (B, T, dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.hidden(tokens)  # (B, T, dim)
        last = h[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]  # (B, dim)
        return self.head(last.float()).squeeze(-1)  # (B,)


def reward_model_from(chat_model: Transformer) -> RewardModel:
    """A reward model initialised from a chat model (a copy: the chat model is not changed)."""
    body = Transformer(chat_model.args)
    body.load_state_dict(chat_model.state_dict())
    return RewardModel(body)


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------
def encode_reply(tok, prompt: prefs.Prompt, reply: str) -> list[int]:
    """BOS [INST] prompt [/INST] reply ▁ EOS: the chat format of one completed pair (chat.py)."""
    return chat.encode_training_dialog(tok, prompt.messages(reply))[0]


def pad_rows(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens (B, T) and lengths (B,)."""
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, : len(r)] = torch.tensor(r)
    return x, torch.tensor([len(r) for r in rows])


@torch.no_grad()
def score(rm: RewardModel, tok, prompts: list[prefs.Prompt], replies: list[str], batch_size: int = 64) -> torch.Tensor:
    """Raw scores (N,) of replies[i] to prompts[i]."""
    rm.eval()
    rows = [encode_reply(tok, p, r) for p, r in zip(prompts, replies)]
    out = []
    for s in range(0, len(rows), batch_size):
        out.append(rm(*pad_rows(rows[s : s + batch_size])))
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------------------------------------
# The ranking loss and training
# ---------------------------------------------------------------------------------------------
def ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """−log σ(r_c − r_r − m(r)), averaged over pairs [P2 eq. 2]. All (N,) or scalars."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def margins_for(pairs: list[prefs.Pair], which: str = "small") -> torch.Tensor:
    """m(r) for each pair from its rating: prefs.MARGINS["none" | "small" | "large"] [P2 Table 27]."""
    if which not in prefs.MARGINS:
        raise ValueError(f"margin set must be one of {', '.join(prefs.MARGINS)}, got {which!r}.")
    table = prefs.MARGINS[which]
    return torch.tensor([table[p.rating] for p in pairs])


def lr_scale(step: int, steps: int, warmup: int) -> float:
    """Linear warmup then cosine to 10 % [P2 §3.2.2: warmup 3 % of steps, at least 5]."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_reward_model(
    rm: RewardModel,
    tok,
    pairs: list[prefs.Pair],
    margins: str = "small",
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 1e-4,
    seed: int = 0,
    progress=None,
) -> list[float]:
    """Train in place with the ranking loss; AdamW β (0.9, 0.95), eps 1e-5, wd 0.1 on matrices, clip 1.0,
    warmup 3 % (≥ 5 steps) then cosine to 10 % [P2 §3.2.2]. The paper trains one epoch ("training
    longer can lead to over-fitting"). -> loss per step."""
    from .recipe import param_groups

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m_all = margins_for(pairs, margins)
    rows_c = [encode_reply(tok, p.prompt, p.chosen) for p in pairs]
    rows_r = [encode_reply(tok, p.prompt, p.rejected) for p in pairs]
    steps = epochs * (len(pairs) // batch_size)
    if steps == 0:
        raise ValueError(f"{len(pairs)} pairs do not fill one batch of {batch_size}; give more pairs.")
    opt = torch.optim.AdamW(param_groups(rm, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-5)
    warmup = max(5, int(0.03 * steps))
    losses: list[float] = []
    rm.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(pairs), generator=g).tolist()
        for s in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[s : s + batch_size]
            x, n = pad_rows([rows_c[i] for i in idx] + [rows_r[i] for i in idx])  # (2B, T)
            r = rm(x, n)  # (2B,)
            loss = ranking_loss(r[: len(idx)], r[len(idx) :], m_all[idx])
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale(step, steps, warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.3f}")
    rm.eval()
    return losses


@torch.no_grad()
def pair_scores(rm: RewardModel, tok, pairs: list[prefs.Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected), each (N,)."""
    ps = [p.prompt for p in pairs]
    return score(rm, tok, ps, [p.chosen for p in pairs]), score(rm, tok, ps, [p.rejected for p in pairs])


def accuracy_by_rating(rc: torch.Tensor, rr: torch.Tensor, pairs: list[prefs.Pair]) -> dict[str, dict]:
    """Per rating (and "all"): n, accuracy against the annotators' labels (the paper's Table 8) and
    against the hidden true preference (which no real annotation can give)."""
    right = (rc > rr).tolist()
    out = {}
    for name, keep in [
        *((r, lambda p, i=i: p.rating == i) for i, r in enumerate(prefs.RATINGS)),
        ("all", lambda p: True),
    ]:
        idx = [j for j, p in enumerate(pairs) if keep(p)]
        n = len(idx)
        label = sum(right[j] for j in idx) / n if n else float("nan")
        truth = sum(right[j] == pairs[j].agrees for j in idx) / n if n else float("nan")
        out[name] = {"n": n, "label_accuracy": label, "true_accuracy": truth}
    return out


@torch.no_grad()
def calibrate(rm: RewardModel, tok, prompts: list[prefs.Prompt], replies: list[str]) -> float:
    """Shift the head's bias so the mean score over a reference set is 0 (σ = 0.5). The ranking loss
    sees only differences, so the level is arbitrary; the paper's 0.15 threshold on σ(R_s) needs one.
    -> the shift applied."""
    shift = float(score(rm, tok, prompts, replies).mean())
    rm.head.bias -= shift
    return shift


# ---------------------------------------------------------------------------------------------
# The paper's combination of the two reward models
# ---------------------------------------------------------------------------------------------
def combine(
    safety_tagged: torch.Tensor, r_safety: torch.Tensor, r_help: torch.Tensor, threshold: float = SAFETY_THRESHOLD
) -> torch.Tensor:
    """R_c [P2 §3.2.3]: σ(r_s) if the prompt is safety-tagged or σ(r_s) < threshold, else σ(r_h).

    Inputs are raw scores (N,) and a bool (N,); the output is a probability-like score in (0, 1).
    """
    s, h = torch.sigmoid(r_safety), torch.sigmoid(r_help)
    return torch.where(safety_tagged | (s < threshold), s, h)


def whiten(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(logit(x) − mean) / std: the paper's whitening of "the final linear scores (shown here by
    reversing the sigmoid with the logit function)" [P2 §3.2.3]."""
    return (torch.logit(x.clamp(1e-6, 1 - 1e-6)) - mean) / std


class CombinedReward:
    """Helpfulness and safety reward models, combined and whitened: `__call__(prompts, replies)` -> (N,).

    `fit_whitening` sets mean and std of logit(R_c) on a reference set (the SFT model's own replies).
    """

    def __init__(self, helpful: RewardModel, safe: RewardModel, tok, mean: float = 0.0, std: float = 1.0):
        self.helpful, self.safe, self.tok, self.mean, self.std = helpful, safe, tok, mean, std

    def parts(self, prompts, replies) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(raw helpfulness, raw safety, safety tags), each (N,)."""
        tags = torch.tensor([p.safety for p in prompts], dtype=torch.bool)
        return score(self.helpful, self.tok, prompts, replies), score(self.safe, self.tok, prompts, replies), tags

    def fit_whitening(self, prompts, replies) -> None:
        h, s, tags = self.parts(prompts, replies)
        z = torch.logit(combine(tags, s, h).clamp(1e-6, 1 - 1e-6))
        self.mean, self.std = float(z.mean()), float(z.std().clamp(min=1e-3))

    def __call__(self, prompts, replies) -> torch.Tensor:
        h, s, tags = self.parts(prompts, replies)
        return whiten(combine(tags, s, h), self.mean, self.std)


# ---------------------------------------------------------------------------------------------
# Saving and loading (the body in the project format, the head beside it)
# ---------------------------------------------------------------------------------------------
HEAD_FILE = "reward_head.safetensors"


def save_reward_model(rm: RewardModel, folder: str | Path, tok, dtype=torch.bfloat16) -> Path:
    """`checkpoint.save_model` for the body (bf16), the scalar head in float32 beside it."""
    from safetensors.torch import save_file

    from ..formats import save_model
    from ..utils.io import atomic_path

    folder = Path(folder)
    save_model(rm.body, folder, tok, dtype=dtype)
    with atomic_path(folder / HEAD_FILE) as tmp:
        save_file(
            {
                "weight": rm.head.weight.detach().float().contiguous(),
                "bias": rm.head.bias.detach().float().contiguous(),
            },
            str(tmp),
            metadata={"format": "pt"},
        )
    return folder


def load_reward_model(folder: str | Path) -> RewardModel:
    """A `RewardModel` written by `save_reward_model`, in float32, eval mode."""
    from safetensors.torch import load_file

    from ..formats import load_model

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} has no {HEAD_FILE}: it is not a reward model folder (make one with `llama2-lab rlhf`)."
        )
    rm = RewardModel(load_model(folder, dtype=torch.float32))
    head = load_file(str(folder / HEAD_FILE))
    rm.head.load_state_dict(head)
    return rm.eval()
