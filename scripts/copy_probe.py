"""Does a model copy from its context? Three numbers that tell (issue #4's diagnosis).

    .venv/bin/python scripts/copy_probe.py assets/models/llama2-lab-tiny

1. Repeated random tokens: [BOS] x1..x40 x1..x40. A model with an induction circuit predicts the
   second half from the first, so its loss there collapses; one without it finds both halves equally
   hard.
2. Names in held-out stories: where a character's name comes back, the probability of the right
   name among all of the generator's names. Uniform (log 1/224 = -5.41) means the name is guessed
   from the prior, not copied; that is what makes names drift from sentence to sentence.
3. Names at an introduction ("... a girl named"): nothing to copy there, so the probability mass on
   names should stay high. After the small-batch phase of the lab-tiny recipe the model copied names
   (-0.05 above) but put only 63 % there and wrote "a boy named He"; the shipped model, after the
   final bigger-batch phase, puts 88 % there.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from llama2_lab.corpora import stories as data
from llama2_lab.formats import load_model, load_tokenizer
from llama2_lab.training import name_copy_scores, name_token_ids, repeated_token_losses


def name_copying(model, tok, n_stories: int = 60) -> tuple[int, float, float]:
    """(cases, mean log p(right name | a name), share of cases where that probability is > 0.5)."""
    scores = name_copy_scores(model, tok, data.valid_stories(n_stories))
    return len(scores), statistics.mean(scores), sum(s > -0.693 for s in scores) / len(scores)


@torch.no_grad()
def names_at_introduction(model, tok) -> float:
    """Mean probability mass on the generator's names right after "named", where a story introduces a
    character: nothing can be copied there, so a model must still pick *some* name (a model whose copy
    heads misfire puts mass on "He", "Once", ... and writes "a boy named He")."""
    names = name_token_ids(tok)
    prompts = [
        "Once upon a time, there was a little girl named",
        "Once upon a time, a clever boy named",
        "Once upon a time, there was a generous boy named",
        "One day, a cat named",
        "Once upon a time, there was a kind rabbit named",
    ]
    mass = [model(torch.tensor([tok.encode(p, bos=True)]))[0, -1].softmax(-1)[names].sum().item() for p in prompts]
    return statistics.mean(mass)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model folder with its tokenizer (e.g. assets/models/llama2-lab-tiny)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model, required=True)
    first, second = repeated_token_losses(model)
    print(
        f"repeated random tokens: loss {first:.2f} on the first copy, {second:.2f} on the second"
        f" ({'copies' if second < 0.5 * first else 'does not copy'})"
    )
    n, mean, share = name_copying(model, tok)
    print(
        f"names coming back in {n} cases: mean log p(right name | a name) {mean:.2f} "
        f"(uniform over {len(data.GIRL_NAMES + data.BOY_NAMES)} names: "
        f"{-math.log(len(data.GIRL_NAMES + data.BOY_NAMES)):.2f}), "
        f"right name > 50 % in {share:.0%}"
    )
    print(
        f"after 'named' (a character is introduced): {names_at_introduction(model, tok):.0%} of the "
        f"probability on names"
    )


if __name__ == "__main__":
    main()
