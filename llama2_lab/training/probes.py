"""Small measurements of a trained model: a sample, and whether it copies names from its context."""

from __future__ import annotations

import re

import torch

from ..core.transformer import Transformer
from .pretrain import _eval_mode


# Samples
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_text(
    model: Transformer,
    tokenizer,
    prompt: str = "Once upon a time",
    n: int = 200,
    temperature: float = 0.0,
    top_p: float = 0.9,
    seed: int = 0,
) -> str:
    """The prompt and up to `n` generated tokens as text (temperature 0 = greedy), stopping at EOS
    or at the model's max_seq_len."""
    from ..inference import generate

    ids = tokenizer.encode(prompt, bos=True)
    with _eval_mode(model):
        new = generate(
            model, ids, max_new_tokens=n, temperature=temperature, top_p=top_p, seed=seed, eos_id=tokenizer.eos_id
        )
    return tokenizer.decode(ids + list(new))


# ----------------------------------------------------------------------------------------------
# Does the model copy from its context? (what keeps a character's name from drifting)
# ----------------------------------------------------------------------------------------------
def name_token_ids(tokenizer) -> list[int]:
    """The ids of the story generator's character names that are one token (sorted)."""
    from ..corpora import stories as data

    pieces = (tokenizer.encode(n) for n in data.GIRL_NAMES + data.BOY_NAMES)
    return sorted({p[0] for p in pieces if len(p) == 1})


@torch.no_grad()
def name_copy_scores(model: Transformer, tokenizer, stories) -> list[float]:
    """log p(right name | a name) wherever a character's name comes back in `stories` (texts).

    Every generator name is one token, so the probability the model gives the right name among all
    of them measures copying directly: a model that guesses from its prior scores about
    log(1/224) = -5.41 everywhere; one with a copy (induction-style) circuit scores near 0.
    """
    name_ids = torch.tensor(name_token_ids(tokenizer))
    names = set(name_ids.tolist())
    scores = []
    with _eval_mode(model):
        for text in stories:
            ids = tokenizer.encode(text, bos=True)[: model.args.max_seq_len]
            logp = model(torch.tensor([ids])).log_softmax(-1)[0]  # (T, V)
            seen = set()
            for t in range(1, len(ids)):
                if ids[t] in names:
                    if ids[t] in seen:  # a name from earlier in this story comes back
                        scores.append((logp[t - 1, ids[t]] - logp[t - 1, name_ids].logsumexp(0)).item())
                    seen.add(ids[t])
    return scores


@torch.no_grad()
def repeated_token_losses(model: Transformer, n_rows: int = 4, length: int = 40, seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss on the first and the second copy of random token rows [BOS] x x.

    A model with a general induction circuit finds the second copy far easier than the first."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(100, model.args.vocab_size, (n_rows, length), generator=gen)
    seq = torch.cat([torch.ones(n_rows, 1, dtype=torch.long), x, x], 1)  # BOS = 1
    with _eval_mode(model):
        nll = -model(seq).log_softmax(-1)[:, :-1].gather(-1, seq[:, 1:, None])[..., 0]  # (B, 2·length)
    return nll[:, :length].mean().item(), nll[:, length + 1 :].mean().item()


# ----------------------------------------------------------------------------------------------
# Which positions has the model learned? (context extension, Llama 2 paper §2.2)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def loss_by_position(model: Transformer, rows: torch.Tensor, batch_size: int = 4, progress=None) -> torch.Tensor:
    """Mean next-token loss at every position of packed rows (N, T + 1) -> (T,) float32.

    Packed rows hold several documents back to back, so every position sees about the same mix of
    text: a loss that climbs past some position means the model never learned to attend that far
    (RoPE angles it was not trained on), not that the text got harder. ``model`` must take T
    positions: give a model trained on fewer a longer RoPE table first (``training.with_context``).
    """
    import torch.nn.functional as F

    T = rows.shape[1] - 1
    if T > model.args.max_seq_len:
        raise ValueError(
            f"rows of {T} positions but the model takes {model.args.max_seq_len}; "
            "extend its table first: training.with_context(model, T)."
        )
    total = torch.zeros(T)
    with _eval_mode(model):
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size].to(model.output.weight.device)
            logits = model(batch[:, :-1])  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T)
            total += nll.sum(0).float().cpu()
            if progress is not None:
                progress.update(len(batch))
    return total / len(rows)


# ----------------------------------------------------------------------------------------------
# Digits and capitals (what the context-extension phase's supplement teaches, corpora/numbers.py)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sum_accuracy(model: Transformer, tokenizer) -> float:
    """Share of the 100 sums a + b (a, b in 0-9) the model completes right, greedy, after
    '<BOS>Mia said, "a plus b is' - the way the supplement's counting stories write them."""
    from ..inference import generate

    right = 0
    with _eval_mode(model):
        for a in range(10):
            for b in range(10):
                ids = tokenizer.encode(f'Mia said, "{a} plus {b} is', bos=True)
                new = generate(model, ids, max_new_tokens=4, temperature=0.0, eos_id=tokenizer.eos_id)
                answer = re.match(r"\s*(\d*)", tokenizer.decode(list(new))).group(1)  # '7!" Mia' -> '7'
                right += answer == str(a + b)
    return right / 100


@torch.no_grad()
def shout_loss(model: Transformer, tokenizer, stories) -> tuple[float, float]:
    """Mean loss per token on the stories as written and with every quoted line shouted in capitals:
    (plain, shouted). A model that never saw capitals finds the shouted ones much harder."""
    quote = re.compile(r'"[^"]+"')
    out = []
    with _eval_mode(model):
        for shout in (False, True):
            total, n = 0.0, 0
            for text in stories:
                text = quote.sub(lambda m: m.group(0).upper(), text) if shout else text
                ids = torch.tensor([tokenizer.encode(text, bos=True)[: model.args.max_seq_len]])
                logp = model(ids[:, :-1]).log_softmax(-1)[0]
                total -= logp.gather(1, ids[0, 1:, None]).sum().item()
                n += ids.shape[1] - 1
            out.append(total / n)
    return out[0], out[1]
