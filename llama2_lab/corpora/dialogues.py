"""Multi-turn dialogues with system instructions a function can check, for Ghost Attention (notebook 12).

GAtt [P2 §3.3] needs a dialogue dataset and instructions that "should be respected throughout
the conversation". The paper samples them from three families (hobbies, language, public
figure), combines them at random and makes the system text terse half of the time
("Always act as Napoleon from now" -> "Figure: Napoleon"). A tiny model on a CPU cannot be
judged by a reward model, so here every instruction is mechanically checkable (paper §3.3 lists the kinds of instruction):

    family    verbose / terse system text                       effect on a reply
    persona   "Always act as Lila from now on." / "Figure: Lila"  "What is your name?" -> "... Lila."
    voice     "Talk like a dog." / "Voice: dog"                   every reply opens with "Woof!"
    caps      "Always answer in capital letters." / "Style: caps" every letter upper-case
    end       "End every reply with the word Tom." / "End word: Tom"        last word "Tom"
    start     "Start every reply with the word Tom." / "Start word: Tom"    first word "Tom"
    brief     "Answer in four words or fewer." / "Max words: 4"   at most four words

"voice" stands in for the paper's "language" family (a way of speaking kept up all conversation):
an honest replacement for hobbies, which a 5M-parameter model never learned to copy out of the
system message (its only copy circuit is for names; see the chat model cards). Its values are a
small fixed table, the same in training and evaluation, so it measures whether a style holds over
the turns, not whether a new value generalises.

The user asks small questions with one right answer (arithmetic, colours of things, legs of
animals, greetings, "what is your name?", "what is your favorite hobby?", a one-line story),
so a reply is also checked for content (`answer_correct`): the rejection sampler keeps only
replies that obey the instruction *and* answer correctly, and evaluation reports content accuracy.
Without a persona, "What is your name?" must be answered as the assistant: an invented name
("Hello! I am Felix.") is a wrong answer, not a free pass.

Held out of every training set (so evaluation measures generalisation, not recall):
* values: `HELDOUT` names and words never appear in a training dialogue;
* a combination: no training dialogue combines `HELDOUT_COMBO` (caps + start word).

Everything is driven by one `random.Random`, so a seed always gives the same dialogues.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

from ..utils.validate import check_int
from . import stories as data

# --------------------------------------------------------------------------------------------
# The user's questions and their plain answers
# --------------------------------------------------------------------------------------------

COLOR_OF = {
    "banana": "yellow",
    "lemon": "yellow",
    "grass": "green",
    "frog": "green",
    "sky": "blue",
    "snow": "white",
    "milk": "white",
    "strawberry": "red",
    "tomato": "red",
    "carrot": "orange",
    "pumpkin": "orange",
    "crow": "black",
}
LEGS_OF = {"dog": 4, "cat": 4, "horse": 4, "cow": 4, "bird": 2, "duck": 2, "hen": 2, "spider": 8, "ant": 6, "bee": 6}
GREETINGS = ("Hello!", "Hi there!", "Good morning!", "Say hello.")
STORY_ANIMALS = ("fox", "bunny", "bear", "mouse", "goat", "frog", "duck", "puppy")
STORY_THINGS = ("ball", "kite", "key", "hat", "shell", "drum")
NAME_QUESTION = "What is your name?"
HOBBY_QUESTION = "What is your favorite hobby?"

KINDS = ("math", "color", "legs", "greet", "name", "hobby", "story")


@dataclass(frozen=True)
class Question:
    """One user message, its plain answer (>= 5 words), its short answer (<= 2 words) and the
    word a correct answer must contain (`key`, None when any answer is fine)."""

    kind: str
    text: str
    plain: str
    short: str
    key: str | None = None


def make_question(rng: random.Random, kind: str) -> Question:
    """A random question of one kind (see `KINDS`)."""
    if kind == "math":
        a_, b = rng.randint(0, 9), rng.randint(0, 9)
        return Question(kind, f"What is {a_} plus {b}?", f"{a_} plus {b} is {a_ + b}.", f"{a_ + b}.", str(a_ + b))
    if kind == "color":
        thing = rng.choice(sorted(COLOR_OF))
        color = COLOR_OF[thing]
        return Question(
            kind,
            f"What color is the {thing}?",
            f"The color of the {thing} is {color}.",
            f"{color.capitalize()}.",
            color,
        )
    if kind == "legs":
        animal = rng.choice(sorted(LEGS_OF))
        n = LEGS_OF[animal]
        return Question(kind, f"How many legs does a {animal} have?", f"A {animal} has {n} legs.", f"{n} legs.", str(n))
    if kind == "greet":
        return Question(kind, rng.choice(GREETINGS), "Hello! How can I help you?", "Hello!")
    if kind == "name":
        return Question(kind, NAME_QUESTION, "I am a helpful assistant.", "An assistant.")
    if kind == "hobby":
        return Question(kind, HOBBY_QUESTION, "I like to help people.", "Helping people.")
    if kind == "story":
        animal, thing = rng.choice(STORY_ANIMALS), rng.choice(STORY_THINGS)
        return Question(
            kind,
            f"Tell me a short story about a {animal}.",
            f"Once, a little {animal} found a {thing} and played all day.",
            f"{animal.capitalize()} played.",
            animal,
        )
    raise ValueError(f"Unknown question kind {kind!r}; choose one of {', '.join(KINDS)}.")


# --------------------------------------------------------------------------------------------
# Constraint families
# --------------------------------------------------------------------------------------------

# Values kept out of every training dialogue (evaluation only), and the values seen in training.
# Many training values on purpose: with 20 names a chat model learns a favourite name ("Hello, my name
# is Jack.") instead of reading the name out of the system message; with all the story corpus's 218
# names only copying pays. The start and end words are names too: the pretrained model has one copy
# circuit, for names (it keeps a story's characters), and a chat fine-tune can reuse it. With nouns as
# end words and interjections as start words (192 and 28 values, single-token or not) both families
# stayed at 0 % on held-out words through 720 stage-1 steps, while name-valued start and end words reach
# 0.6-0.9 (see the chat model cards). Hobbies are the paper's family and have no
# such circuit behind them: the miniature does not learn to copy them.
HELDOUT = {"persona": ("Clara", "Felix", "Daisy", "Arthur", "Hazel", "Jasper")}
HELDOUT["end"] = HELDOUT["start"] = HELDOUT["persona"]
# The voice family's table: who to talk like -> the sound every reply opens with.
VOICES = {
    "dog": "Woof",
    "cat": "Meow",
    "cow": "Moo",
    "duck": "Quack",
    "owl": "Hoot",
    "sheep": "Baa",
    "lion": "Roar",
    "mouse": "Squeak",
    "pirate": "Arr",
    "robot": "Beep",
}


_HELD = {v.lower() for vs in HELDOUT.values() for v in vs}


def _training(words) -> tuple[str, ...]:
    """`words` in order, once each, without any held-out value (in any case: "daisy" is Daisy)."""
    return tuple(w for w in dict.fromkeys(words) if w.lower() not in _HELD)


VALUES = {
    "persona": _training(data.GIRL_NAMES + data.BOY_NAMES),  # 218 names
    "voice": tuple(VOICES),  # 10, in training and evaluation alike (see the module docstring)
}
VALUES["end"] = VALUES["start"] = VALUES["persona"]  # "..., Tom." / "Tom! ..."

MAX_WORDS = 4  # the "brief" family's cap; plain answers have >= 5 words, short ones <= 2

# family -> (verbose, terse) system text; {v} is the value.
WORDINGS = {
    "persona": ("Always act as {v} from now on.", "Figure: {v}."),
    "voice": ("Talk like a {v}.", "Voice: {v}."),
    "caps": ("Always answer in capital letters.", "Style: caps."),
    "end": ("End every reply with the word {v}.", "End word: {v}."),
    "start": ("Start every reply with the word {v}.", "Start word: {v}."),
    "brief": (f"Answer in {MAX_WORDS} words or fewer.", f"Max words: {MAX_WORDS}."),
}
FAMILIES = tuple(WORDINGS)
# Families that apply to every reply; persona applies only when its question is asked
# (Table 30's protocol: "from turn 2 to 20 the model is explicitly asked about them").
GLOBAL_FAMILIES = ("voice", "caps", "end", "start", "brief")
HELDOUT_COMBO = frozenset({"caps", "start"})  # never combined in training
EXCLUSIVE = frozenset({"voice", "start"})  # both decide the first word: never combined

Split = Literal["train", "test", "heldout_combo"]


@dataclass(frozen=True)
class Constraint:
    """One instruction: its family and value (None for caps and brief)."""

    family: str
    value: str | None = None

    def text(self, terse: bool = False) -> str:
        return WORDINGS[self.family][int(terse)].format(v=self.value)

    def applies(self, q: Question) -> bool:
        """Whether a reply to `q` can show this constraint (persona only on its question)."""
        return q.kind == "name" if self.family == "persona" else True


_WORD = re.compile(r"[A-Za-z0-9]+")
_ANSWER_WORD = re.compile(r"[A-Za-z]+|[0-9]+")


def _words(reply: str) -> list[str]:
    return _WORD.findall(reply)


def check(c: Constraint, q: Question, reply: str) -> bool | None:
    """Whether `reply` to `q` obeys `c`; None when the constraint does not apply to this question."""
    if not c.applies(q):
        return None
    words = _words(reply)
    if c.family == "persona":
        return c.value.lower() in (w.lower() for w in words)
    if c.family == "voice":
        return bool(words) and words[0].lower() == VOICES[c.value].lower()
    if c.family == "caps":
        # No lower-case letter ("7." obeys: a digits-only short answer has nothing to raise).
        return bool(reply.strip()) and not any(ch.islower() for ch in reply)
    if c.family == "end":
        return bool(words) and words[-1].lower() == c.value.lower()
    if c.family == "start":
        return bool(words) and words[0].lower() == c.value.lower()
    if c.family == "brief":
        return 0 < len(reply.split()) <= MAX_WORDS
    raise ValueError(f"Unknown constraint family {c.family!r}; choose one of {', '.join(FAMILIES)}.")


def check_reply(constraints, q: Question, reply: str) -> dict[str, bool]:
    """{family: obeyed} for every constraint that applies to this turn."""
    out = {}
    for c in constraints:
        ok = check(c, q, reply)
        if ok is not None:
            out[c.family] = ok
    return out


def content_ok(q: Question, reply: str) -> bool:
    """Whether the reply contains the question's key word, ignoring case (a loose check; see
    `answer_correct` for the one the rejection sampler and the evaluation use)."""
    return q.key is None or q.key.lower() in (w.lower() for w in _words(reply))


def answer_correct(q: Question, reply: str, constraints=()) -> bool:
    """Whether the reply answers the question right, ignoring case and the instruction's own words:
    the key word and no competing answer of the same kind ("3 plus 4 is 7": the last small number
    is the answer; a colour, or a story animal, and no other). "What is your name?" is answered with
    the persona's name when one is set, else as the assistant ("I am a helpful assistant."), so an
    invented name is wrong; greetings say hello (or hi); the hobby question, "I like to help people."
    """
    ws = [w.lower() for w in _ANSWER_WORD.findall(reply)]  # "7legs" is "7" and "legs" here
    persona = next((c.value for c in constraints if c.family == "persona"), None)
    if q.kind == "greet":
        return "hello" in ws or "hi" in ws
    if q.kind == "name":
        return (persona or "assistant").lower() in ws
    if q.kind == "hobby":
        return "people" in ws
    key = (q.key or "").lower()
    if key not in ws:
        return False
    if q.kind in ("math", "legs"):
        return [w for w in ws if w.isdigit() and len(w) < 4][-1] == key
    if q.kind == "color":
        return not any(w in set(COLOR_OF.values()) - {key} for w in ws)
    if q.kind == "story":
        return not any(w in set(STORY_ANIMALS) - {key} for w in ws)
    return True


def apply_constraints(constraints, q: Question) -> str:
    """The oracle reply: the plain answer rewritten to obey every constraint (paper §3.3: the instruction applied to the answer)."""
    by = {c.family: c for c in constraints}
    brief = "brief" in by
    # The values are written exactly as the system message spells them (same case, so the same
    # tokens): the reply copies them, and a copy is easier to learn than a copy plus a case change.
    # "Hello! I am <name>." is how the pretraining stories introduce a character, so the chat
    # fine-tune can build on the name-copying the base model already does there.
    if q.kind == "name" and "persona" in by:
        reply = f"{by['persona'].value}." if brief else f"Hello! I am {by['persona'].value}."
    else:
        reply = q.short if brief else q.plain
    if "start" in by:
        reply = f"{by['start'].value}! {reply}"
    if "voice" in by:
        reply = f"{VOICES[by['voice'].value]}! {reply}"
    if "end" in by:
        reply = f"{reply.rstrip('.!?')}, {by['end'].value}."
    if "caps" in by:
        reply = reply.upper()
    return reply


def sample_constraints(rng: random.Random, split: Split = "train", k: int | None = None) -> tuple[Constraint, ...]:
    """1-3 constraints of different families, as the paper's "random combination".

    train: training values, never `HELDOUT_COMBO`; test: held-out values, never the combo;
    heldout_combo: held-out values and always caps + start word (plus, sometimes, one more).
    """
    if split not in ("train", "test", "heldout_combo"):
        raise ValueError(f"split must be 'train', 'test' or 'heldout_combo', got {split!r}.")
    values = VALUES if split == "train" else {**VALUES, **HELDOUT}  # voice has no held-out values
    while True:
        if split == "heldout_combo":
            others = [f for f in FAMILIES if f not in HELDOUT_COMBO | EXCLUSIVE]
            fams = sorted(HELDOUT_COMBO) + rng.sample(others, rng.randint(0, 1))
            rng.shuffle(fams)
        else:
            fams = rng.sample(FAMILIES, k or rng.randint(1, 3))
            if HELDOUT_COMBO <= set(fams) or EXCLUSIVE <= set(fams):
                continue
        return tuple(Constraint(f, rng.choice(values[f]) if f in values else None) for f in fams)


# --------------------------------------------------------------------------------------------
# Dialogues
# --------------------------------------------------------------------------------------------


@dataclass
class Dialogue:
    """A system instruction and n user questions; replies are made by the caller (oracle,
    plain or sampled) and rendered with `messages`."""

    constraints: tuple[Constraint, ...]
    terse: bool
    questions: list[Question] = field(default_factory=list)

    @property
    def system(self) -> str:
        """The system message, verbose or terse as a whole (the paper's 50/50 trick)."""
        return " ".join(c.text(self.terse) for c in self.constraints)

    def plain_replies(self) -> list[str]:
        return [q.plain for q in self.questions]

    def oracle_replies(self) -> list[str]:
        return [apply_constraints(self.constraints, q) for q in self.questions]

    def messages(self, replies: list[str], system: bool = True) -> list[dict]:
        """Chat messages [system?, u1, a1, ..., un(, an)]: pass n replies for a training dialog
        (ends with the assistant) or n-1 for a prompt (ends with the last user question)."""
        if not len(self.questions) - 1 <= len(replies) <= len(self.questions):
            raise ValueError(
                f"{len(self.questions)} questions need {len(self.questions) - 1} replies "
                f"(a prompt) or {len(self.questions)} (a training dialog), got {len(replies)}."
            )
        msgs = [{"role": "system", "content": self.system}] if system else []
        for i, q in enumerate(self.questions):
            msgs.append({"role": "user", "content": q.text})
            if i < len(replies):
                msgs.append({"role": "assistant", "content": replies[i]})
        return msgs


def sample_questions(rng: random.Random, n: int, constraints=(), attribute_boost: float = 0.4) -> list[Question]:
    """n questions; when a persona is set, `attribute_boost` of the turns ask for its name.

    Without the boost a tiny model never learns to copy the name out of the system message
    (without it persona recall stayed near 0.1 even at turn 1).
    """
    attrs = ["name" for c in constraints if c.family == "persona"]
    out = []
    for _ in range(n):
        kind = rng.choice(attrs) if attrs and rng.random() < attribute_boost else rng.choice(KINDS)
        out.append(make_question(rng, kind))
    return out


def make_dialogue(
    rng: random.Random, n_turns: int, split: Split = "train", attribute_boost: float = 0.4, constraints=None
) -> Dialogue:
    """A dialogue of `n_turns` questions under 1-3 sampled constraints (or the given ones)."""
    check_int("n_turns", n_turns, 1)
    cs = tuple(constraints) if constraints is not None else sample_constraints(rng, split)
    return Dialogue(cs, rng.random() < 0.5, sample_questions(rng, n_turns, cs, attribute_boost))


def dialogues(
    seed: int, n: int, max_turns: int, split: Split = "train", min_turns: int = 1, attribute_boost: float = 0.4
) -> list[Dialogue]:
    """n dialogues from one seed with lengths uniform in min_turns..max_turns."""
    rng = random.Random(seed)
    return [make_dialogue(rng, rng.randint(min_turns, max_turns), split, attribute_boost) for _ in range(n)]


def training_values() -> set[str]:
    """Every value of a held-out family a training dialogue can contain (tests check none of
    `HELDOUT` is among them; the voice table is shared by training and evaluation on purpose)."""
    return {v for f, vs in VALUES.items() if f in HELDOUT for v in vs}
