"""From SFT to RLHF in miniature: sampling, SFT data, best-of-N, the KL-penalised reward, PPO, DPO [P2 §3].

Reading order, the paper's order:
  1. sampling chat replies from a model (`sample_replies`, batched with gatt's `ChatBatch`);
  2. SFT sequences with the loss on answer tokens only [P2 §3.1] (`sft_sequences`; training is
     `training.sft.train_sft`) and the checker's verdict on replies (`evaluate_replies`);
  3. rejection sampling's core, best-of-N [P2 §3.2.3, Figures 7 and 8] (`best_of_n`, `best_of_n_curve`);
  4. the KL-penalised reward R = r − β·KL(π ‖ π_0) [P2 §3.2.3, after Stiennon et al. 2020]
     (`token_logprobs`, `kl_penalised_reward`);
  5. the policy update (`ppo_loss`, `run_ppo`). What runs here is PPO's clipped surrogate with one
     reward per reply and a batch-mean baseline instead of a learned value function (no critic, no GAE):
     simpler than the paper's PPO, same objective;
  6. DPO (Rafailov et al. 2023), a later method that is *not* in the Llama 2 paper: it optimises the
     same KL-regularised objective directly on the preference pairs, with no reward model and no
     sampling (`dpo_loss`, `train_dpo`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.transformer import Transformer
from ..corpora import preferences as prefs
from ..inference.chat_batch import ChatBatch
from ..text import chat
from .sft import collate

Seq = tuple[list[int], list[int]]  # (ids, loss mask), both length T


# ---------------------------------------------------------------------------------------------
# 1. Sampling replies
# ---------------------------------------------------------------------------------------------
@dataclass
class Samples:
    """n replies per prompt, flattened prompt-major: row i·n + j is reply j to prompt i."""

    prompts: list[prefs.Prompt]
    n: int
    ids: list[list[int]]  # each reply's sampled token ids (no EOS)
    texts: list[str]

    def prompt_of(self, row: int) -> prefs.Prompt:
        return self.prompts[row // self.n]

    def all_prompts(self) -> list[prefs.Prompt]:
        return [p for p in self.prompts for _ in range(self.n)]


@torch.no_grad()
def sample_replies(
    model: Transformer,
    tok,
    prompts: list[prefs.Prompt],
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new: int = 32,
    seed: int = 0,
    batch_size: int = 128,
    progress=None,
) -> Samples:
    """n replies to each prompt (temperature 0 = greedy), decoded in batches with one KV cache."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    rows = [chat.encode_dialog(tok, p.messages()) for p in prompts for _ in range(n)]
    ids: list[list[int]] = []
    for s in range(0, len(rows), batch_size):
        part = rows[s : s + batch_size]
        cb = ChatBatch(model, len(part), max(map(len, part)) + max_new + 1, tok.eos_id)
        ids += cb.reply(cb.feed(part), max_new, temperature, top_p, generator=gen)
        if progress is not None:
            progress.update(len(part))
    return Samples(list(prompts), n, ids, [tok.decode(i).strip() for i in ids])


# ---------------------------------------------------------------------------------------------
# 2. SFT: sequences with the loss on the answer only, and the checker
# ---------------------------------------------------------------------------------------------
def sft_sequences(tok, examples: list[tuple[prefs.Prompt, str]], masked: bool = True) -> list[Seq]:
    """(ids, mask) per example in Llama-2-chat format. masked: loss on the answer (and its EOS) only,
    as Llama 2's SFT "zero-out[s] the loss on tokens from the user prompt" [P2 §3.1]; otherwise on
    every token after BOS (the template and the question too)."""
    out = []
    for p, reply in examples:
        ids, mask = chat.encode_training_dialog(tok, p.messages(reply))
        out.append((ids, mask if masked else [0] + [1] * (len(ids) - 1)))
    return out


def evaluate_replies(prompts: list[prefs.Prompt], replies: list[str]) -> dict:
    """The hidden judge on replies: answer accuracy on ordinary prompts (the checker), refusal rate on
    safety prompts, mean true helpfulness, mean true reward, invented-fact rate, mean words."""
    plain = [(p, r) for p, r in zip(prompts, replies) if not p.safety]
    unsafe = [(p, r) for p, r in zip(prompts, replies) if p.safety]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {
        "n": len(replies),
        "accuracy": mean([prefs.answer_ok(p, r) for p, r in plain]),
        "refusal_rate": mean([prefs.refuses(r) for _, r in unsafe]),
        "helpfulness": mean([prefs.helpfulness(p, r) for p, r in plain]),
        "true_reward": mean([prefs.true_reward(p, r) for p, r in zip(prompts, replies)]),
        "invented_rate": mean([prefs.invented(p, r) for p, r in plain]),
        "polite_rate": mean([prefs.polite(r) for _, r in plain]),
        "words": mean([len(r.split()) for r in replies]),
    }


# ---------------------------------------------------------------------------------------------
# 3. Best-of-N
# ---------------------------------------------------------------------------------------------
def best_of_n(rewards: torch.Tensor) -> torch.Tensor:
    """Index (P,) of the highest-reward candidate per prompt: rewards (P, N). Ties: the first."""
    return rewards.argmax(dim=-1)


def best_of_n_curve(rewards: torch.Tensor, ns=None) -> dict[str, list[float]]:
    """Figure 7's curves: for each N, the max and the median reward among the first N candidates,
    averaged over prompts. rewards (P, N_max) -> {"n", "max", "median"}."""
    N = rewards.shape[1]
    ns = list(ns or range(1, N + 1))
    out = {"n": ns, "max": [], "median": []}
    for n in ns:
        first = rewards[:, :n]  # (P, n)
        out["max"].append(float(first.max(dim=-1).values.mean()))
        # the median of an even count is the mean of the two middle values (statistics.median)
        out["median"].append(float(torch.tensor([statistics.median(r) for r in first.tolist()]).mean()))
    return out


# ---------------------------------------------------------------------------------------------
# 4. Log-probabilities and the KL-penalised reward
# ---------------------------------------------------------------------------------------------
def reply_sequences(tok, samples: Samples) -> list[Seq]:
    """prompt ids + the sampled reply ids + EOS, loss mask 1 on the reply and its EOS (the tokens
    the policy chose: re-encoding the text could split it differently)."""
    out = []
    for row, ids in enumerate(samples.ids):
        prompt = chat.encode_dialog(tok, samples.prompt_of(row).messages())
        out.append((prompt + ids + [tok.eos_id], [0] * len(prompt) + [1] * (len(ids) + 1)))
    return out


def token_logprobs(model: Transformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log π(y_t | x_≤t) for every position: x, y (B, T) -> (B, T) (gradients if enabled)."""
    logits = model(x)  # (B, T, V)
    return -F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)


def kl_penalised_reward(
    reward: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """R = r − β·KL per reply [P2 §3.2.3]: reward (B,), logp and logp_ref (B, T) of the sampled tokens,
    mask (B, T). KL is the sampled estimate Σ_t (log π − log π_0) over the reply's tokens. -> (R, KL)."""
    kl = ((logp - logp_ref) * mask).sum(dim=-1)  # (B,)
    return reward - beta * kl, kl


# ---------------------------------------------------------------------------------------------
# 5. The policy update
# ---------------------------------------------------------------------------------------------
def ppo_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantage: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> torch.Tensor:
    """PPO's clipped surrogate (Schulman et al. 2017), one advantage per reply broadcast to its tokens:
    −mean_t min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε) A), ρ_t = π(y_t) / π_old(y_t); logp, logp_old, mask (B, T),
    advantage (B,). The paper uses ε = 0.2 [P2 §3.2.3]."""
    ratio = torch.exp(logp - logp_old)  # (B, T)
    a = advantage[:, None]  # (B, 1)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)  # (B, T)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class PPOConfig:
    """One PPO run. The paper's 7B: β 0.01, lr 1e-6, batch 512, minibatch 64, clip 0.2, 200-400
    iterations [P2 §3.2.3]; the tiny model needs a larger lr and far fewer, smaller batches."""

    beta: float = 0.01
    iterations: int = 60
    batch_size: int = 32  # prompts per iteration, one reply each
    minibatch: int = 16  # one gradient step per minibatch, as the paper
    lr: float = 2e-5
    clip: float = 0.2
    temperature: float = 1.0  # sample from π itself, so the ratios are those of the policy
    max_new: int = 32
    seed: int = 0


def run_ppo(
    policy: Transformer,
    ref: Transformer,
    tok,
    prompts: list[prefs.Prompt],
    reward_fn,
    cfg: PPOConfig,
    progress=None,
    eval_prompts: list[prefs.Prompt] | None = None,
    eval_every: int = 0,
) -> list[dict]:
    """Train `policy` in place to maximise reward_fn(prompts, replies) − β·KL(π ‖ ref). Each iteration
    samples one reply per prompt of a batch, scores it, whitens R = r − β·KL over the batch as the
    advantage, and takes one clipped step per minibatch. -> one dict per iteration: the learned reward,
    KL, R, the true reward and accuracy (hidden judge) of the sampled replies, and, every `eval_every`
    iterations, greedy replies on `eval_prompts` judged the same way."""
    from .recipe import param_groups

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(param_groups(policy, 0.1), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-5)
    ref.eval()
    history = []
    for it in range(cfg.iterations):
        batch = [prompts[i] for i in torch.randint(len(prompts), (cfg.batch_size,), generator=g).tolist()]
        s = sample_replies(policy, tok, batch, 1, cfg.temperature, 1.0, cfg.max_new, seed=cfg.seed * 100_003 + it)
        x, y, m = collate(reply_sequences(tok, s))
        mf = m.float()
        with torch.no_grad():
            logp_old = token_logprobs(policy, x, y)
            logp_ref = token_logprobs(ref, x, y)
            r = reward_fn(batch, s.texts).float()
            R, kl = kl_penalised_reward(r, logp_old, logp_ref, mf, cfg.beta)
            adv = (R - R.mean()) / (R.std() + 1e-6)
        policy.train()
        order = torch.randperm(cfg.batch_size, generator=g)
        for k in range(0, cfg.batch_size, cfg.minibatch):
            mb = order[k : k + cfg.minibatch]
            loss = ppo_loss(token_logprobs(policy, x[mb], y[mb]), logp_old[mb], adv[mb], mf[mb], cfg.clip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        policy.eval()
        judged = evaluate_replies(batch, s.texts)
        row = {
            "iteration": it,
            "reward": float(r.mean()),
            "kl": float(kl.mean()),
            "R": float(R.mean()),
            "true_reward": judged["true_reward"],
            "accuracy": judged["accuracy"],
            "words": judged["words"],
        }
        if eval_prompts is not None and eval_every and ((it + 1) % eval_every == 0 or it == cfg.iterations - 1):
            ev = sample_replies(policy, tok, eval_prompts, 1, 0.0, 1.0, cfg.max_new)
            row["eval"] = evaluate_replies(eval_prompts, ev.texts)
            row["eval"]["reward"] = float(reward_fn(eval_prompts, ev.texts).mean())
        history.append(row)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(r=f"{row['reward']:.2f}", kl=f"{row['kl']:.1f}", true=f"{row['true_reward']:.2f}")
    return history


# ---------------------------------------------------------------------------------------------
# 6. DPO (Rafailov et al. 2023): a later method, shown as a contrast
# ---------------------------------------------------------------------------------------------
def dpo_loss(
    logp_c: torch.Tensor, logp_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """−log σ(β[(log π(y_c) − log π_0(y_c)) − (log π(y_r) − log π_0(y_r))]), averaged; all (N,)
    sequence log-probabilities of the reply given the prompt."""
    return -F.logsigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r))).mean()


def sequence_logprob(model: Transformer, seqs: list[Seq]) -> torch.Tensor:
    """Σ over masked tokens of log π: (N,) for (ids, mask) sequences."""
    x, y, m = collate(seqs)
    return (token_logprobs(model, x, y) * m).sum(dim=-1)


def train_dpo(
    policy: Transformer,
    ref: Transformer,
    tok,
    pairs: list[prefs.Pair],
    steps: int,
    batch_size: int = 16,
    lr: float = 2e-5,
    beta: float = 0.1,
    seed: int = 0,
    progress=None,
) -> list[float]:
    """Fine-tune `policy` in place with the DPO loss on preference pairs; ref stays fixed. -> loss per step."""
    from .recipe import param_groups

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = lambda p, r: chat.encode_training_dialog(tok, p.messages(r))
    opt = torch.optim.AdamW(param_groups(policy, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-5)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(pairs), (batch_size,), generator=g).tolist()
        seqs = [enc(pairs[i].prompt, pairs[i].chosen) for i in idx] + [
            enc(pairs[i].prompt, pairs[i].rejected) for i in idx
        ]
        with torch.no_grad():
            ref_lp = sequence_logprob(ref, seqs)
        policy.train()
        lp = sequence_logprob(policy, seqs)
        loss = dpo_loss(lp[:batch_size], lp[batch_size:], ref_lp[:batch_size], ref_lp[batch_size:], beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        policy.eval()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def copy_model(model: Transformer) -> Transformer:
    """A fresh copy of a model (weights copied, eval mode)."""
    new = Transformer(model.args)
    new.load_state_dict(model.state_dict())
    return new.eval()
