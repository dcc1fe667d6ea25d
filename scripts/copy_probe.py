"""Does a model copy from its context? Two numbers that tell (issue #4's diagnosis).

    .venv/bin/python scripts/copy_probe.py assets/models/llama2-lab-tiny

1. Repeated random tokens: [BOS] x1..x40 x1..x40. A model with an induction circuit predicts the
   second half from the first, so its loss there collapses; one without it finds both halves equally
   hard.
2. Names in held-out stories: where a character's name comes back, the probability of the right
   name among all of the generator's names. Uniform (log 1/224 = -5.41) means the name is guessed
   from the prior, not copied; that is what makes names drift from sentence to sentence.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from llama2_lab import data
from llama2_lab.checkpoint import load_model, load_tokenizer


@torch.no_grad()
def repeated_tokens(model, n_rows: int = 4, length: int = 40, seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss on the first and on the second copy of random token rows."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(100, model.args.vocab_size, (n_rows, length), generator=gen)
    seq = torch.cat([torch.ones(n_rows, 1, dtype=torch.long), x, x], 1)  # BOS = 1
    nll = -model(seq).log_softmax(-1)[:, :-1].gather(-1, seq[:, 1:, None])[..., 0]  # (B, 2·length)
    return nll[:, :length].mean().item(), nll[:, length + 1:].mean().item()


@torch.no_grad()
def name_copying(model, tok, n_stories: int = 60) -> tuple[int, float, float]:
    """(cases, mean log p(right name | a name), share of cases where that probability is > 0.5)."""
    names = {tok.encode(n)[0] for n in data.GIRL_NAMES + data.BOY_NAMES if len(tok.encode(n)) == 1}
    name_ids = torch.tensor(sorted(names))
    scores = []
    for text in data.valid_stories(n_stories):
        ids = tok.encode(text, bos=True)[: model.args.max_seq_len]
        logp = model(torch.tensor([ids])).log_softmax(-1)[0]  # (T, V)
        seen = set()
        for t in range(1, len(ids)):
            if ids[t] in names:
                if ids[t] in seen:
                    scores.append((logp[t - 1, ids[t]] - logp[t - 1, name_ids].logsumexp(0)).item())
                seen.add(ids[t])
    return len(scores), statistics.mean(scores), sum(s > -0.693 for s in scores) / len(scores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model folder with its tokenizer (e.g. assets/models/llama2-lab-tiny)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model, required=True)
    first, second = repeated_tokens(model)
    print(f"repeated random tokens: loss {first:.2f} on the first copy, {second:.2f} on the second"
          f" ({'copies' if second < 0.5 * first else 'does not copy'})")
    n, mean, share = name_copying(model, tok)
    print(f"names coming back in {n} cases: mean log p(right name | a name) {mean:.2f} "
          f"(uniform over {len(data.GIRL_NAMES + data.BOY_NAMES)} names: "
          f"{-torch.log(torch.tensor(float(len(data.GIRL_NAMES + data.BOY_NAMES)))).item():.2f}), "
          f"right name > 50 % in {share:.0%}")


if __name__ == "__main__":
    main()
