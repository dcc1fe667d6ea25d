"""A supplement for continued pretraining: counting stories written with digits, and stories whose
characters shout in capital letters.

The generated stories (`stories`) never contain a digit and never a word in capitals, so the tiny
base's tokenizer spells "7" with its byte token and "HELLO" letter by letter, and pretraining never
trained those tokens: their embeddings shrank under weight decay to a twentieth of a trained row's
length. A chat fine-tune then has to learn them from nothing, and the shipped chat models answered
"What is 3 plus 4?" with the sky's colour. Mixed into the context-extension phase (the `lab-tiny-long`
preset, `TrainConfig.supplement_share`), these documents teach the base what a digit is, how small sums
come out ("3 plus 4 is 7"), and how the story words are spelled in capitals, as Llama 2's pretraining
data covered numbers and shouting long before any chat data did [P2 §2.1].

    numbers  "Mia had 3 apples. Leo gave her 4 more. Mia counted: 3 plus 4 is 7."
    loud     a generated story in which some of the quoted lines are shouted in capitals

`supplement(seed, n)` mixes both, half and half, from one seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from .words import BOY_NAMES, FOODS, GIRL_NAMES, TOYS, plural

_THINGS = tuple(sorted(set(TOYS[:40] + FOODS[:40])))
_QUOTE = re.compile(r'"([^"]+)"')


def _sum_sentences(rng: random.Random, name: str, friend: str, pron: str) -> list[str]:
    """One small sum (operands 0-9) in one of four forms: a story event and its count, a question
    answered, things on a table counted, or a sum said aloud."""
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    thing = plural(rng.choice(_THINGS))
    form = rng.randrange(4)
    if form == 0:
        return [
            f"{name} had {a} {thing}.",
            f"{friend} gave {pron} {b} more.",
            f"{name} counted: {a} plus {b} is {a + b}.",
            f"Now {name} had {a + b} {thing}.",
        ]
    if form == 1:
        return [f'{friend} asked, "What is {a} plus {b}?"', f'{name} said, "{a} plus {b} is {a + b}."']
    if form == 2:
        a, b = max(a, 1), max(b, 1)  # "There were 0 kites" reads oddly
        return [
            f"There were {a} {thing} on the table and {b} {thing} in the box.",
            f"{a} plus {b} is {a + b}, so there were {a + b} {thing} in all.",
        ]
    return [f'"{a} plus {b} is {a + b}!" {name} told {friend}.', f'"Yes, {a + b}!" said {friend}.']


def number_story(rng: random.Random) -> str:
    """A short counting story: two children and two to four small sums (operands 0-9)."""
    girl = rng.random() < 0.5
    name = rng.choice(GIRL_NAMES if girl else BOY_NAMES)
    friend = rng.choice([n for n in GIRL_NAMES + BOY_NAMES if n != name])
    pron = "her" if girl else "him"
    out = [f"{name} and {friend} liked to count things."]
    for _ in range(rng.randint(2, 4)):
        out += _sum_sentences(rng, name, friend, pron)
    out.append(f"{name} was happy to count with {friend}.")
    return " ".join(out)


def loud_story(story: str, rng: random.Random, share: float = 0.5) -> str:
    """The story with about `share` of its quoted lines shouted in capitals (at least one when it has a quote)."""
    quotes = list(_QUOTE.finditer(story))
    if not quotes:
        return story
    pick = {i for i in range(len(quotes)) if rng.random() < share} or {rng.randrange(len(quotes))}
    parts, last = [], 0
    for i, m in enumerate(quotes):
        parts.append(story[last : m.start()])
        parts.append(f'"{m.group(1).upper()}"' if i in pick else m.group(0))
        last = m.end()
    return "".join(parts) + story[last:]


def supplement(seed: int, n: int) -> Iterator[str]:
    """n documents from one seed: counting stories and loud stories, alternating."""
    from .stories import stories

    rng = random.Random(seed)
    plain = stories(seed + 1, None)
    for i in range(n):
        yield number_story(rng) if i % 2 == 0 else loud_story(next(plain), rng)
