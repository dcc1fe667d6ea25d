"""The story builder: characters with consistent pronouns, and the building blocks every plot uses
(openings, feelings, dialogue, endings), driven by one seeded ``random.Random``."""

import random
from collections.abc import Sequence

from .words import (
    ANIMAL_ADJECTIVES,
    ANIMAL_HOMES,
    ANIMAL_PLACES,
    BOY_NAMES,
    CHILD_ADJECTIVES,
    COLORS,
    EXCLAIM_VERBS,
    GIRL_NAMES,
    GROUP_ACTIVITIES,
    HUMAN_PLACES,
    PARAGRAPH_SEP,
    PERSONAL_FEELINGS,
    PLACE_INFO,
    REPLY_VERBS,
    SAY_VERBS,
    SOLO_ACTIVITIES,
    THING_ADJECTIVES,
    TOYS,
    WEATHER_ADJECTIVES,
    a,
)


class Character:
    """A named character with a fixed gender, so every pronoun about them agrees."""

    __slots__ = ("name", "gender", "kind", "adjective", "animal")

    def __init__(self, name: str, gender: str, kind: str, adjective: str, animal: bool):
        self.name, self.gender, self.kind = name, gender, kind
        self.adjective, self.animal = adjective, animal

    # pronouns: A.he, A.him, A.his, A.himself ("she", "her", "her", "herself" for girls)
    he = property(lambda self: "he" if self.gender == "m" else "she")
    him = property(lambda self: "him" if self.gender == "m" else "her")
    his = property(lambda self: "his" if self.gender == "m" else "her")
    himself = property(lambda self: "himself" if self.gender == "m" else "herself")
    He = property(lambda self: self.he.capitalize())
    His = property(lambda self: self.his.capitalize())

    def fill(self, template: str) -> str:
        return template.format(he=self.he, him=self.him, his=self.his, himself=self.himself)

    def meta(self) -> dict:
        return {"name": self.name, "gender": self.gender, "kind": self.kind}


_ANIMAL_KINDS = list(ANIMAL_HOMES)

# Adults who appear by title; they are referred to as "Mom", "Dad"... like names.
GROWNUPS = {"Mom": "f", "Dad": "m", "Grandma": "f", "Grandpa": "m"}


def _cap(sentence: str) -> str:
    """Capitalize the first letter, also when the sentence starts with a quote."""
    first = sentence[0]
    if first == '"':
        return '"' + sentence[1].upper() + sentence[2:]
    return sentence if first.isupper() else first.upper() + sentence[1:]


class _Story:
    """The story being written: its RNG, its characters and its paragraphs."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._random = rng.random
        self.paragraphs: list[list[str]] = [[]]
        self.cast: list[Character] = []
        self.grownups: list[str] = []
        self.day_started = False  # True once a sentence has said which day it is
        self.opening = ""

    # randomness -------------------------------------------------------------------------
    def pick(self, options: Sequence):
        return options[int(self._random() * len(options))]

    def chance(self, p: float) -> bool:
        return self._random() < p

    # writing ----------------------------------------------------------------------------
    def add(self, *sentences: str) -> None:
        paragraph = self.paragraphs[-1]
        for s in sentences:
            if s:
                paragraph.append(_cap(s))

    def new_paragraph(self) -> None:
        if self.paragraphs[-1]:
            self.paragraphs.append([])

    def text(self) -> str:
        return PARAGRAPH_SEP.join(" ".join(p) for p in self.paragraphs if p)

    # characters -------------------------------------------------------------------------
    def character(self, animal: bool = False, gender: str | None = None) -> Character:
        used = {c.name for c in self.cast}
        gender = gender or self.pick("fm")
        names = GIRL_NAMES if gender == "f" else BOY_NAMES
        name = self.pick(names)
        while name in used:
            name = self.pick(names)
        if animal:
            kind = self.pick(_ANIMAL_KINDS)
            adjective = self.pick(ANIMAL_ADJECTIVES)
        else:
            kind = "girl" if gender == "f" else "boy"
            adjective = self.pick(CHILD_ADJECTIVES)
        c = Character(name, gender, kind, adjective, animal)
        self.cast.append(c)
        return c

    def grownup(self, title: str | None = None) -> str:
        title = title or self.pick(["Mom", "Mom", "Dad", "Dad", "Grandma", "Grandpa"])
        if title not in self.grownups:
            self.grownups.append(title)
        return title

    # small building blocks ------------------------------------------------------------
    def when(self) -> str:
        """A time phrase for the day the plot happens, not repeating the opening's."""
        if self.day_started:
            return self.pick(["After breakfast", "Later that day", "That afternoon", "Soon"])
        self.day_started = True
        return self.pick(
            [
                "One day",
                "One day",
                "One morning",
                "One sunny day",
                "One bright morning",
                "One afternoon",
                "One Saturday morning",
            ]
        )

    def feel(self, group: str) -> str:
        return self.pick(PERSONAL_FEELINGS[group])

    def thing(self) -> str:
        """A thing with an adjective: 'red ball', 'shiny key'."""
        return f"{self.pick(THING_ADJECTIVES)} {self.pick(TOYS)}"

    def place(self, c: Character) -> str:
        return self.pick(ANIMAL_PLACES if c.animal else HUMAN_PLACES)

    def activity(self, place: str | None = None, group: bool = False) -> str:
        """Something to do, at `place` if given, alone or (group=True) with friends."""
        if place and self.chance(0.6):
            return self.pick(PLACE_INFO[place][1])
        return self.pick(GROUP_ACTIVITIES if group else SOLO_ACTIVITIES)

    def described(self, c: Character) -> str:
        """'a little girl named Lily', 'a curious fox called Max'."""
        named = "named" if self.chance(0.75) else "called"
        return f"{a(c.adjective + ' ' + c.kind)} {named} {c.name}"

    def quote(
        self, who: str, line: str, pronoun: str | None = None, verb: str | None = None, reply: bool = False
    ) -> str:
        """A line of dialogue, '"Can I help you?" asked Tom.', in one of three word orders.

        `who` is a name; pass `pronoun` ("he"/"she") only when it clearly refers to `who`.
        The speech verb follows the line ("asked" for a question) unless `verb` is given.
        """
        end = line[-1]
        if verb:
            pass
        elif end == "?":
            verb = "asked"
        elif end == "!":
            verb = self.pick(EXCLAIM_VERBS)
        else:
            verb = self.pick(REPLY_VERBS if reply else SAY_VERBS)
        body = line[:-1] + "," if end == "." else line
        r = self.rng.random()
        if pronoun and r < 0.3:
            return f'"{body}" {pronoun} {verb}.'
        if r < 0.65:
            return f'"{body}" {verb} {who}.'
        if r < 0.8:
            return f'"{body}" {who} {verb}.'
        return f'{who} {verb}, "{line}"'


# --------------------------------------------------------------------------------------------
# Openings and endings
# --------------------------------------------------------------------------------------------

HUMAN_HOMES = [
    "in a little house with a blue door",
    "in a small house near the park",
    "in a yellow house on a quiet street",
    "in a cozy cottage by the woods",
    "in a tall building in the big city",
    "on a farm with lots of animals",
    "in a little town by the sea",
    "in a white house at the top of a hill",
    "in a busy town full of shops",
    "in a small village near a river",
]
# (weight, opening name); "Once upon a time" is the most common, as the demo prompt uses it.
OPENINGS = [
    (45, "once"),
    (13, "one day"),
    (10, "there was once"),
    (7, "once there was"),
    (5, "long ago"),
    (7, "name was"),
    (6, "morning"),
    (7, "in a"),
]
_OPENING_NAMES = [name for weight, name in OPENINGS for _ in range(weight)]


def _intro(s: _Story, A: Character, trait: bool = True) -> None:
    """The first sentence or two: who the story is about and where they live."""
    d = s.described(A)
    home = ANIMAL_HOMES[A.kind] if A.animal else s.pick(HUMAN_HOMES)
    kind = s.opening = s.pick(_OPENING_NAMES)
    if kind == "once":
        s.add(
            s.pick(
                [
                    f"Once upon a time, there was {d}.",
                    f"Once upon a time, there was {d}.",
                    f"Once upon a time, there lived {d}.",
                    f"Once upon a time, {d} lived {home}.",
                    f"Once upon a time, {d} lived {home}.",
                ]
            )
        )
    elif kind == "one day":
        s.day_started = True
        s.add(
            s.pick(
                [
                    f"One day, {d} woke up early.",
                    f"One day, {d} woke up with a big smile.",
                    f"One day, {d} was feeling very {s.pick(['happy', 'cheerful'])}.",
                ]
            )
        )
    elif kind == "there was once":
        s.add(s.pick([f"There was once {d}.", f"There was once {d} who lived {home}."]))
    elif kind == "once there was":
        s.add(f"Once there was {d}.")
    elif kind == "long ago":
        s.add(s.pick([f"Long ago, {d} lived {home}.", f"Long ago, in a faraway land, there lived {d}."]))
    elif kind == "name was":
        s.add(f"{A.name} was {a(A.adjective + ' ' + A.kind)} who lived {home}.")
    elif kind == "morning":
        s.day_started = True
        s.add(f"One {s.pick(WEATHER_ADJECTIVES[:6])} morning, {d} woke up and looked out of the window.")
    else:
        town = s.pick(
            [
                "a little town by the sea",
                "a small village",
                "a quiet little town",
                "a faraway land",
                "a big, busy city",
                "a village near the mountains",
            ]
        )
        if A.animal:
            s.add(f"In {s.pick(['a big green forest', 'a faraway land', 'a sunny valley'])}, there lived {d}.")
        else:
            s.add(f"In {town}, there lived {d}.")
    if trait and s.chance(0.75):
        likes = s.pick(SOLO_ACTIVITIES)
        s.add(
            s.pick(
                [
                    f"{A.He} loved to {likes}.",
                    f"Every day, {A.he} liked to {likes}.",
                    f"{A.He} was always {s.pick(['kind', 'nice', 'friendly', 'polite'])} to everyone {A.he} met.",
                    f"{A.His} favorite color was {s.pick(COLORS[:7])}.",
                    f"{A.He} had a big smile and a kind heart.",
                    f"More than anything, {A.he} loved to {likes}.",
                ]
            )
        )


def _moral(s: _Story, A: Character, lesson: str, p: float = 0.4) -> None:
    if s.chance(p):
        s.add(
            s.pick(
                [
                    f"{A.name} learned that {lesson}.",
                    f"That day, {A.name} learned that {lesson}.",
                    f"And so {A.name} learned that {lesson}.",
                ]
            )
        )


# --------------------------------------------------------------------------------------------
# Plots. Each writes a whole story about its hero A into s. Rule of thumb for pronouns: a
# sentence that names two characters is followed by one that starts with a name.
# --------------------------------------------------------------------------------------------
