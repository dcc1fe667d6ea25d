"""The plots (lost toy, new friend, trip, storm, race, ...): short functions that tell a story with the
builder's blocks and the vocabulary of words.py; ``generate_story`` picks one."""

import random

from .builder import Character, _intro, _moral, _Story
from .words import (
    COLORS,
    FOOD_ADJECTIVES_FOR,
    FOODS,
    NUMBER_WORDS,
    PARAGRAPH_SEP,
    PLACE_INFO,
    SKILLS,
    TRIPS,
    a,
    at,
    ing,
    past,
    plural,
)


def _plot_lost(s: _Story, A: Character) -> None:
    obj = s.thing()  # "yellow bubble wand", later just "bubble wand"
    noun = obj.split(" ", 1)[1]
    _intro(s, A)
    s.add(
        s.pick(
            [
                f"{A.name} had {a(obj)} that {A.he} loved very much.",
                f"{A.name}'s favorite thing in the whole world was {A.his} {obj}.",
                f"{A.name} loved {A.his} {obj} more than anything.",
                f"{s.grownup('Grandma')} had given {A.name} {a(obj)}, and {A.he} loved it very much.",
            ]
        )
    )
    s.add(
        s.pick(
            [
                f"{A.He} took it everywhere {A.he} went.",
                f"{A.He} played with it every day.",
                "",
                f"{A.He} never went anywhere without it.",
            ]
        )
    )
    place = s.place(A)
    spots, _ = PLACE_INFO[place]
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} took {A.his} {noun} to {place}.")
    act1, act2 = s.activity(place), s.activity(place)
    if act1 == act2:
        s.add(f"{A.He} {past(act1)} and had lots of fun.")
    else:
        s.add(f"{A.He} {past(act1)} and {past(act2)}.")
    s.add(
        s.pick(
            [
                f"When it was time to go home, {A.name} looked for {A.his} {obj}.",
                f"After a while, {A.name} wanted to play with {A.his} {noun} again.",
            ]
        ),
        s.pick(["But it was gone!", "But it was not there!", f"But {A.he} could not find it anywhere!"]),
    )
    s.add(
        s.quote(
            A.name, s.pick([f"Oh no! Where is my {noun}?", f"Where did my {noun} go?"]), verb=s.pick(["cried", "asked"])
        )
    )
    s.add(
        s.pick(
            [
                f"{A.name} felt very {s.feel('sad')}.",
                f"Tears filled {A.his} eyes.",
                f"{A.name} sat down and felt very {s.feel('sad')}.",
            ]
        )
    )
    s.new_paragraph()
    friend = s.chance(0.6)
    if friend:
        B = s.character(animal=A.animal)
        helper = B.name
        s.add(s.pick([f"Just then, {A.his} friend {B.name} came by.", f"Just then, {s.described(B)} came over."]))
        s.add(s.quote(B.name, s.pick(["What is wrong?", f"Why are you sad, {A.name}?", "Are you okay?"])))
    else:
        helper = s.grownup()
        s.add(f"{A.name} ran to {helper}.")
        s.add(s.quote(helper, s.pick(["What is wrong, sweetie?", "Why are you crying?", "What happened?"])))
    s.add(s.quote(A.name, f"I lost my {obj}.", reply=True))
    s.add(
        s.quote(
            helper,
            s.pick(
                [
                    "Don't worry. I will help you look for it.",
                    "Let's look for it together.",
                    "Don't be sad. We will find it.",
                ]
            ),
            reply=True,
        )
    )
    s1, s2, s3, s4 = s.rng.sample(spots, 4)
    s.add(
        f"{A.name} and {helper} looked {s1}.",
        f"They looked {s2}.",
        s.pick([f"They even looked {s3}.", f"Then they looked {s3}."]),
        s.pick(["But it was not there.", "But they could not find it."]),
    )
    if s.chance(0.7):
        color = obj.split()[0]
        seen = f"something {color}" if color in COLORS else "something"
        s.add(f"At last, {helper} saw {seen} {s4}.", f"It was {A.name}'s {obj}!")
    else:
        dog = s.pick(["dog", "puppy", "squirrel", "goat"])
        s.add(
            f"Then {a(s.pick(['little', 'funny', 'friendly']) + ' ' + dog)} ran up to them "
            "with something in its mouth.",
            f"It was {A.name}'s {obj}!",
        )
    s.add(s.quote(A.name, s.pick([f"My {noun}! Thank you, {helper}!", f"You found it! Thank you so much, {helper}!"])))
    s.add(s.pick([f"{A.name} gave {helper} a big hug.", f"{A.name} hugged {helper} tight."]))
    s.add(
        s.pick(
            [
                f"From that day on, {A.name} always kept {A.his} {noun} close.",
                f"{A.name} and {helper} played with the {noun} until the sun went down.",
                f"{A.name} held {A.his} {noun} tight all the way home.",
            ]
        )
    )
    _moral(s, A, "good friends always help each other" if friend else "it is good to ask for help when you need it")


def _plot_friend(s: _Story, A: Character) -> None:
    A.adjective = s.pick(["little", "kind", "gentle", "quiet", "sweet", "young"])  # not "jolly"
    _intro(s, A, trait=False)
    s.add(
        s.pick(
            [
                f"{A.name} was a little shy, and {A.he} did not have many friends.",
                f"{A.name} had just moved to a new home, and {A.he} did not know anyone.",
                f"{A.name} often felt {s.pick(['lonely', 'sad'])} because {A.he} had no one to play with.",
            ]
        )
    )
    place = s.place(A)
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} went to {place} all alone.")
    others = "animals" if A.animal else s.pick(["children", "kids"])
    s.add(
        f"{A.He} saw some {others} {ing(s.activity(place, group=True))}, "
        f"but {A.he} was too {s.feel('scared')} to say hello."
    )
    s.add(
        s.pick(
            [
                f"So {A.he} sat down by {A.himself} and watched.",
                f"{A.He} stood by {A.himself} and looked at {A.his} feet.",
            ]
        )
    )
    B = s.character(animal=A.animal)
    s.new_paragraph()
    s.add(f"Then {s.described(B)} came over.")
    s.add(
        s.quote(
            B.name,
            s.pick([f"Hi! My name is {B.name}. What is your name?", f"Hello! I am {B.name}. What is your name?"]),
        )
    )
    s.add(s.quote(A.name, f"I am {A.name}.", reply=True))
    play = s.activity(place, group=True)
    s.add(s.quote(B.name, f"Do you want to {play} with me?"))
    s.add(s.pick([f"{A.name} smiled and nodded.", f"{A.name} felt {s.feel('good')}."]))
    s.add(s.quote(A.name, s.pick(["Yes, please!", "I would love to!", "Yes! That sounds fun!"]), reply=True))
    s.new_paragraph()
    other = s.activity(place, group=True)
    s.add(f"{A.name} and {B.name} {past(play)} all afternoon.")
    if other != play:
        s.add(s.pick([f"Then they {past(other)}.", f"After that, they {past(other)}."]))
    s.add(
        s.pick(["They laughed and laughed.", "They had so much fun together.", f"{A.name} had never had so much fun."])
    )
    s.add(f"When the sun went down, {A.name} waved goodbye to {B.name}.")
    s.add(s.quote(A.name, "Can we play again tomorrow?"))
    s.add(s.quote(B.name, s.pick(["Yes! See you tomorrow!", "Of course! You are my friend now."]), reply=True))
    s.add(
        s.pick(
            [
                f"From that day on, {A.name} and {B.name} were best friends.",
                f"{A.name} walked home with a big smile. {A.He} had made a new friend.",
            ]
        )
    )
    _moral(s, A, "a friendly hello is the first step to a new friend")


def _plot_trip(s: _Story, A: Character) -> None:
    dest = s.pick(list(TRIPS))
    ways, seen, done = TRIPS[dest]
    G = s.grownup()
    _intro(s, A)
    s.new_paragraph()
    s.add(f"{s.when()}, {G} had a surprise for {A.name}.")
    s.add(s.quote(G, f"Today we are going to {dest}!"))
    s.add(f"{A.name} was so {s.feel('good')} that {A.he} jumped up and down.")
    s.add(
        s.pick(
            [
                f"{A.He} packed a snack and {A.his} {s.thing()} in a bag.",
                f"{A.He} put on {A.his} {s.pick(COLORS)} hat and ran to the door.",
                f"{A.He} got ready in no time.",
            ]
        )
    )
    s.add(
        f"They went {s.pick(ways)}.",
        s.pick([f"On the way, {A.name} sang songs with {G}.", f"On the way, {A.name} asked lots of questions.", ""]),
    )
    s.new_paragraph()
    x, y, z = s.rng.sample(seen, 3)
    s.add(f"When they got to {dest}, {A.name} saw {x}, {y} and {z}.")
    s.add(s.quote(A.name, s.pick([f"Look at all the {x}!", f"Wow! Look at the {y}!"])))
    d1, d2, d3 = s.rng.sample(done, 3)
    s.add(f"They {d1}, and then they {d2}.")
    s.add(s.pick([f"{A.name}'s favorite part was when they {d3}.", f"Later, they {d3}. That was the best part!"]))
    s.new_paragraph()
    s.add("At the end of the day, they went home.", f"{A.name} was tired but very {s.feel('good')}.")
    s.add(s.quote(A.name, f"Thank you, {G}! That was the best day ever!"))
    s.add(
        s.pick(
            [
                f"That night, {A.name} dreamed about {x} and {y}.",
                f"{A.name} fell asleep with a big smile on {A.his} face.",
                f"{A.name} could not wait to go back to {dest} again.",
            ]
        )
    )


def _plot_learning(s: _Story, A: Character) -> None:
    skill, fail, success = (A.fill(t) for t in s.pick(SKILLS))
    _intro(s, A)
    s.add(
        s.pick(
            [
                f"{A.name} really wanted to learn to {skill}.",
                f"More than anything, {A.name} wanted to learn how to {skill}.",
            ]
        )
    )
    s.add(
        s.pick(
            [
                f"All of {A.his} friends could do it, but {A.name} could not.",
                f"It looked so easy when {A.his} big cousin did it.",
                "",
            ]
        )
    )
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} tried for the first time.", f"But {fail}.")
    s.add(f"{A.name} tried again, but {fail} again.")
    s.add(s.pick([f"{A.name} felt {s.feel('cross')}.", f"{A.name} felt {s.feel('sad')}."]))
    s.add(
        s.quote(
            A.name,
            s.pick(["It is too hard!", "I will never be able to do it!", "I give up!"]),
            verb=s.pick(["cried", "said", "shouted"]),
        )
    )
    friend = s.chance(0.35)
    if friend:
        B = s.character()
        M = B.name
        s.add(f"{A.His} friend {B.name} saw {A.him} and came over.")
    else:
        M = s.grownup()
        s.add(s.pick([f"{M} sat down next to {A.name}.", f"{M} saw {A.name} and came over."]))
    s.add(
        s.quote(
            M,
            s.pick(
                [
                    "Everyone finds it hard at first. Just keep trying.",
                    "Don't give up. You are getting better every time.",
                    "When I was little, I could not do it either. Practice a little every day.",
                ]
            ),
        )
    )
    s.add(
        s.quote(
            M,
            s.pick(
                [
                    "Go slowly and take a deep breath.",
                    "Try it one more time. I will help you.",
                    "You can do it. I know you can.",
                ]
            ),
            verb="added",
        )
    )
    s.new_paragraph()
    s.add(
        s.pick(
            [
                f"So {A.name} practiced every day.",
                f"Every day after lunch, {A.name} practiced.",
                f"{A.name} practiced in the morning and in the afternoon.",
            ]
        )
    )
    s.add(f"Some days it went well, and some days it did not, but {A.he} did not give up.")
    s.add(f"Then one day, {success}!")
    s.add(s.quote(A.name, "I did it! I did it!"))
    s.add(s.pick([f"{M} clapped and cheered.", f"{M} gave {A.name} a big high five.", f"{M} smiled from ear to ear."]))
    s.add(f"{A.name} felt very proud of {A.himself}.")
    _moral(
        s,
        A,
        s.pick(
            [
                "if you keep trying, you can do hard things",
                "practice and patience can help you do anything",
                "it is okay to fall, as long as you get up again",
            ]
        ),
        p=0.5,
    )


def _plot_storm(s: _Story, A: Character) -> None:
    _intro(s, A)
    place = s.place(A)
    s.new_paragraph()
    s.add(f"{s.when()}, the sky was blue, and {A.name} went to {place} to {s.activity(place)}.")
    s.add(
        s.pick(["Suddenly, the wind began to blow.", "All at once, the wind started to howl."]),
        s.pick(["Big, dark clouds covered the sun.", "The sky turned dark and gray."]),
    )
    s.add(
        s.pick(["Then it started to rain.", "Soon, big drops of rain began to fall."]),
        s.pick(
            [
                "Boom! Thunder rumbled across the sky.",
                "Flash! Lightning lit up the sky.",
                "Crash! The thunder was very loud.",
            ]
        ),
    )
    s.add(f"{A.name} was very {s.feel('scared')}.")
    s.add(s.quote(A.name, s.pick(["I want to go home!", "What should I do?"]), pronoun=A.he, verb="cried"))
    s.new_paragraph()
    G = s.grownup("Mom" if s.chance(0.6) else "Dad")
    if s.chance(0.5) or A.animal:
        legs = f"{A.his} little legs" if A.animal else A.he
        s.add(f"{A.name} ran home as fast as {legs} could go.")
        s.add(f"{G} was waiting at the door with a warm towel.")
        s.add(s.quote(G, "You are safe now. It is only a storm."))
        s.add(
            s.pick([f"{G} wrapped {A.name} in a soft blanket.", f"{G} made {A.name} a cup of warm milk."]),
            f"{A.name} and {G} sat by the window and watched the rain.",
        )
    else:
        B = s.character()
        s.add(f"Then {A.name} saw {A.his} friend {B.name} waving from a little shed.")
        s.add(s.quote(B.name, f"Over here, {A.name}! It is dry in here!"))
        s.add(f"{A.name} ran inside, and the two friends sat close together.")
        s.add(f"{B.name} told funny stories until {A.name} was not scared anymore.")
    s.new_paragraph()
    s.add(
        s.pick(["After a while, the rain stopped.", "Soon, the storm was over."]),
        "The sun came out again.",
        s.pick(["A big rainbow shone across the sky.", "There was a beautiful rainbow in the sky."]),
    )
    s.add(s.quote(A.name, s.pick(["Look! A rainbow!", "It is so pretty!"])))
    s.add(
        s.pick(
            [
                f"{A.name} ran outside and jumped in all the puddles.",
                f"{A.name} went outside and splashed in the puddles.",
            ]
        )
    )
    s.add(s.pick([f"{A.name} was not scared anymore.", "The storm was gone, and the world smelled fresh and clean."]))
    _moral(s, A, "storms do not last forever")


def _plot_sharing(s: _Story, A: Character) -> None:
    food = s.pick(FOODS)
    n = s.rng.randint(2, 6)
    snack = f"{s.pick(FOOD_ADJECTIVES_FOR[food])} {plural(food)}"
    G = s.grownup()
    _intro(s, A)
    s.new_paragraph()
    s.add(f"{s.when()}, {G} gave {A.name} {NUMBER_WORDS[n]} {snack}.")
    place = s.place(A)
    s.add(f"{A.name} took them to {place} to eat.")
    B = s.character(animal=A.animal)
    s.add(f"There, {A.he} saw {s.described(B)}.")
    s.add(f"{B.name} was sitting all alone and looked very {s.pick(['sad', 'hungry'])}.")
    s.add(
        s.quote(
            B.name,
            s.pick(
                [
                    "I forgot my snack, and I am so hungry.",
                    "I dropped my lunch in the mud.",
                    "I have not eaten anything all day.",
                ]
            ),
        )
    )
    s.new_paragraph()
    if s.chance(0.5):
        s.add(f"{A.name} looked at {A.his} {plural(food)}.", f"{A.He} wanted to eat them all by {A.himself}.")
        s.add(f'But then {A.name} remembered what {G} always said: "Sharing makes everyone happy."')
    k = n // 2
    s.add(s.quote(A.name, s.pick([f"Would you like {a(food)}?", f"Here, you can have some of my {plural(food)}!"])))
    s.add(f"{A.name} gave {B.name} {NUMBER_WORDS[k]} of them." if k > 1 else f"{A.name} gave {B.name} one of them.")
    s.add(s.pick([f"{B.name}'s face lit up.", f"{B.name} smiled a big smile."]))
    s.add(
        s.quote(
            B.name, s.pick(["Thank you! You are very kind.", "Thank you so much! You are a good friend."]), reply=True
        )
    )
    s.add(
        s.pick([f"They sat together and ate the {snack}.", f"Together, {A.name} and {B.name} ate the {snack}."]),
        f"The {plural(food)} tasted even better because they shared them.",
    )
    s.new_paragraph()
    other = s.pick(FOODS)
    gift = a(f"{s.pick(FOOD_ADJECTIVES_FOR[other])} {other}")
    s.add(f"The next day, {B.name} brought {gift} to share with {A.name}.")
    s.add(
        s.pick(
            [
                f"From then on, {A.name} and {B.name} were the best of friends.",
                f"{A.name} and {B.name} shared their snacks every day after that.",
            ]
        )
    )
    _moral(s, A, "sharing makes everyone happy", p=0.5)


def _plot_race(s: _Story, A: Character) -> None:
    _intro(s, A)
    B = s.character(animal=A.animal)
    s.add(s.pick([f"{A.name} had a friend named {B.name}.", f"{A.His} best friend was {s.described(B)}."]))
    s.add(f"{A.name} and {B.name} both loved to run.")
    goal = s.pick(
        [
            "the big tree",
            "the old fence",
            "the top of the hill",
            "the red barn",
            "the end of the path",
            "the little bridge",
        ]
    )
    s.new_paragraph()
    s.add(f'{s.when()}, {B.name} said, "Let\'s have a race to {goal}!"')
    s.add(s.quote(A.name, "Okay! Ready, set, go!", verb="shouted"))
    s.add("They ran as fast as they could.")
    if s.chance(0.5):
        s.add(f"Halfway there, {B.name} tripped over {s.pick(['a rock', 'a root', 'a stick'])} and fell down.")
        s.add(s.quote(B.name, s.pick(["Ouch! My knee!", "Ow! That hurts!"]), verb="cried"))
        s.add(
            f"{A.name} could see {goal} just ahead.",
            f"{A.name} wanted to win, but {A.he} stopped and ran back to {B.name}.",
        )
        s.add(s.quote(A.name, "Are you okay? Let me help you up."))
        s.add(f"{A.name} helped {B.name} stand up, and they walked to {goal} together.")
        s.add(f"Nobody won the race, but {A.name} and {B.name} did not mind.")
        lesson = "being kind is more important than winning"
    else:
        s.add(f"{B.name} was a little faster and reached {goal} first.")
        s.add(f"{A.name} felt {s.feel('sad')} for a moment.", f"But then {A.name} smiled.")
        s.add(s.quote(A.name, f"Good job, {B.name}! You are so fast!"))
        s.add(s.quote(B.name, "Thank you! You are fast too. Let's race again tomorrow!", reply=True))
        lesson = "it is fun to play, even when you do not win"
    s.new_paragraph()
    s.add(
        s.pick(
            [
                "Then they sat in the shade and drank cold water.",
                "Then they went home for a snack.",
                "Then they lay on the grass and looked at the clouds.",
            ]
        )
    )
    _moral(s, A, lesson, p=0.5)


def _plot_birthday(s: _Story, A: Character) -> None:
    G = s.grownup()
    _intro(s, A, trait=False)
    age = s.rng.randint(3, 9)
    s.new_paragraph()
    if s.day_started:  # the opening already woke the hero up
        s.add(f"It was a very special day. It was {A.name}'s birthday!")
    else:
        s.add(f"{s.when()}, {A.name} woke up and smiled. It was {A.his} birthday!")
    if not A.animal:
        s.add(f"{A.He} was {NUMBER_WORDS[age]} years old today.")
    flavor = s.pick(["chocolate", "strawberry", "lemon", "vanilla", "carrot", "banana", "apple", "orange", "honey"])
    s.add(f"{G} baked {a(flavor + ' cake')} with {s.pick(COLORS[:9])} frosting.")
    B, C = s.character(animal=A.animal), s.character(animal=A.animal)
    s.add(f"In the afternoon, {B.name} and {C.name} came to the party.")
    game = s.pick(
        ["musical chairs", "hide and seek", "tag", "a guessing game", "pin the tail on the donkey", "a treasure hunt"]
    )
    s.add(f"They played {game}, and they danced to funny songs.")
    s.new_paragraph()
    g1, g2 = s.thing(), s.thing()
    s.add(f"{B.name} gave {A.name} {a(g1)}, and {C.name} gave {A.name} {a(g2)}.")
    s.add(s.quote(A.name, s.pick(["Thank you! I love them!", "Thank you so much!"])))
    candles = f"{NUMBER_WORDS[age]} candles" if not A.animal else "little candles on top"
    s.add(f"Then {G} brought out the cake with {candles}.")
    s.add(f"Everyone sang a birthday song for {A.name}.")
    s.add(f"{A.name} closed {A.his} eyes, made a wish, and blew out all the candles.")
    s.add(s.quote(B.name, "What did you wish for?"))
    s.add(s.quote(A.name, "If I tell you, it will not come true!", reply=True))
    s.add(f"Everyone laughed and ate a big piece of {flavor} cake.")
    s.add(
        s.pick(
            [
                "It was the best birthday ever.",
                f"That night, {A.name} went to sleep with a happy heart.",
                f"{A.name} thought it was the best birthday of all.",
            ]
        )
    )


_SOUNDS = {
    "kitten": "Meow",
    "cat": "Meow",
    "squirrel": "Squeak",
    "bird": "Tweet",
    "robin": "Tweet",
    "sparrow": "Cheep",
    "pigeon": "Coo",
    "duckling": "Quack",
    "chick": "Peep",
    "lamb": "Baa",
    "puppy": "Woof",
    "hedgehog": "Squeak",
    "rabbit": "Squeak",
    "mouse": "Squeak",
}
# (animals that fit, the trouble, how the story solves it)
_HELP_SCENES = [
    (
        ["kitten", "cat", "squirrel"],
        "stuck high up in a tree",
        [
            "{G} got a ladder and climbed up slowly.",
            "{G} reached out and gently lifted the {animal} down.",
            "{A} held the {animal} close until it stopped shaking.",
        ],
    ),
    (
        ["bird", "robin", "sparrow", "pigeon"],
        "with a hurt wing",
        [
            "{A} and {G} put the {animal} in a box with soft grass.",
            "Every day, {A} gave it water and seeds.",
            "After a week, the wing was better, and the {animal} flew up into the sky.",
        ],
    ),
    (
        ["duckling", "chick", "lamb", "puppy"],
        "all alone and calling for its mother",
        [
            "{A} and {G} looked all around for the {animal}'s mother.",
            "At last, they found the mother {mother} near the {near}.",
            "The little {animal} ran to its mother, and they were both very happy.",
        ],
    ),
    (
        ["hedgehog", "rabbit", "mouse"],
        "caught in an old net",
        [
            "{G} found some scissors and cut the net very carefully.",
            "{A} held the {animal} still and talked to it softly.",
            "Soon the {animal} was free, and it hurried away into the bushes.",
        ],
    ),
    (
        ["puppy", "kitten"],
        "shivering in the cold rain",
        [
            "{A} wrapped the {animal} in {his} coat and carried it home.",
            "{G} gave it a warm bath and a bowl of food.",
            "Nobody came to look for it, so the {animal} stayed with {A} for good.",
        ],
    ),
]


_MOTHERS = {"duckling": "duck", "chick": "hen", "lamb": "sheep", "puppy": "dog"}


def _plot_help_animal(s: _Story, A: Character) -> None:
    animals, trouble, fix = s.pick(_HELP_SCENES)
    animal = s.pick(animals)
    sound = _SOUNDS[animal]
    G = s.grownup()
    _intro(s, A)
    place = s.pick(["the park", "the garden", "the backyard", "the woods near home"])
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} was walking in {place} with {G}.")
    s.add(f'Suddenly, {A.name} heard a small sound: "{sound}! {sound}!"')
    s.add(f"{A.name} looked around and saw {a(s.pick(['little', 'tiny', 'small']) + ' ' + animal)} {trouble}.")
    s.add(s.quote(A.name, f"{G}, look! The poor {animal} needs help!"))
    s.new_paragraph()
    near = s.pick(["pond", "barn", "big tree", "old fence"])
    for line in fix:
        s.add(line.format(A=A.name, G=G, animal=animal, his=A.his, near=near, mother=_MOTHERS.get(animal, animal)))
    s.add(
        s.quote(G, s.pick([f"You did a good thing today, {A.name}.", f"I am so proud of you for helping, {A.name}."]))
    )
    s.add(s.pick([f"{A.name} felt warm and happy inside.", f"{A.name} smiled all the way home."]))
    _moral(s, A, s.pick(["it is good to be kind to animals", "even a small helper can make a big difference"]))


def _plot_mistake(s: _Story, A: Character) -> None:
    G = s.grownup()
    _intro(s, A)
    s.new_paragraph()
    if s.chance(0.5):
        thing = s.pick(["vase", "teapot", "lamp", "bowl", "cup", "flower pot"])
        s.add(f"{A.name} knew {A.he} should not play ball in the house.")
        if s.day_started:
            s.add(f"But that afternoon it started to rain, so {A.name} bounced {A.his} ball in the living room.")
        else:
            s.day_started = True
            s.add(
                f"But one rainy {s.pick(['day', 'afternoon', 'morning'])}, {A.name} bounced "
                f"{A.his} ball in the living room."
            )
        s.add(f"The ball hit {G}'s favorite {thing}. Crash!", f"The {thing} broke into pieces.")
        s.add(
            f"{A.name} was very {s.feel('scared')}.", f"{A.He} hid the pieces under the sofa and ran to {A.his} room."
        )
        s.add(
            s.pick(["That night, ", "At dinner, "]) + f"{A.name} could not stop thinking about the {thing}.",
            f"{A.He} felt {s.feel('sorry')} inside.",
        )
        s.new_paragraph()
        s.add(f"At last, {A.name} went to {G}.")
        s.add(s.quote(A.name, f"I am sorry. I broke your {thing}, and I hid the pieces."))
        s.add(
            s.quote(
                G,
                s.pick(
                    [
                        "Thank you for telling me the truth. Accidents happen.",
                        "I am not angry. I am glad you told me the truth.",
                    ]
                ),
                reply=True,
            )
        )
        s.add(
            f"{A.name} and {G} glued the pieces back together.",
            f"The {thing} had a few cracks, but {G} said it was even more special now.",
        )
        _moral(s, A, "telling the truth is always the right thing to do", p=0.6)
    else:
        B = s.character(animal=A.animal)
        obj = s.thing()
        place = s.place(A)
        s.add(f"{s.when()}, {A.name} and {A.his} friend {B.name} were playing {at(place)}.")
        s.add(f"{B.name} had {a(obj)}, and {A.name} wanted it very much.")
        s.add(f"So {A.name} grabbed the {obj} without asking.")
        s.add(s.quote(B.name, s.pick(["Hey! That is mine!", "Give it back!"]), verb=s.pick(["shouted", "cried"])))
        s.add(f"{B.name} started to cry.")
        s.new_paragraph()
        s.add(f"{A.name} looked at {A.his} sad friend and felt {s.feel('sorry')}.")
        s.add(s.quote(A.name, f"I am sorry, {B.name}. I should have asked. Here you go."))
        s.add(f"{A.name} gave the {obj} back.")
        s.add(
            s.quote(
                B.name,
                s.pick(["It is okay. We can play with it together.", "Thank you. Let's take turns!"]),
                reply=True,
            )
        )
        s.add(f"{A.name} and {B.name} took turns with the {obj}, and soon they were laughing again.")
        _moral(s, A, "it is better to ask than to grab", p=0.6)


def _plot_night(s: _Story, A: Character) -> None:
    G = s.grownup()
    _intro(s, A)
    s.add(f"Every night, when {G} turned off the light, {A.name} felt a little {s.feel('scared')}.")
    noise, cause, short = s.pick(
        [
            ("Tap, tap, tap", "a branch tapping on the window", "a branch"),
            ("Scratch, scratch", "the cat playing with a ball of yarn", "the cat"),
            ("Drip, drop, drip", "rain falling on the roof", "the rain"),
            ("Hoo, hoo", "an owl sitting in the tree outside", "an owl"),
            ("Tick, tock, tick", "the old clock in the hall", "the clock"),
            ("Squeak, squeak", "a little mouse nibbling a crumb", "a little mouse"),
        ]
    )
    s.new_paragraph()
    s.day_started = True
    s.add(f"One night, {A.name} heard a strange noise. {noise}!")
    s.add(f"{A.He} pulled the blanket over {A.his} head.")
    s.add(f"The noise came again. {noise}!")
    s.add(s.quote(A.name, f"{G}! Come quick!"))
    s.add(f"{G} came in and turned on the lamp.")
    s.add(s.quote(G, "What is wrong?"))
    s.add(s.quote(A.name, "I heard a noise. I think it is a monster!", verb="whispered"))
    s.add(f"{A.name} and {G} looked around the room together.", f"It was not a monster at all. It was just {cause}!")
    s.add(f"{A.name} began to laugh.", s.quote(A.name, f"It was only {short}!"))
    s.new_paragraph()
    light = s.pick(["a star", "a moon", "a duck", "a fish", "an owl"])
    s.add(f"{G} gave {A.name} a little night light shaped like {light}.")
    s.add(
        s.quote(
            G,
            s.pick(
                [
                    "There is nothing to be scared of. I am right next door.",
                    "The dark is just the same room, only sleepy.",
                ]
            ),
        )
    )
    s.add(f"{A.name} closed {A.his} eyes and fell fast asleep.")
    s.add(
        s.pick([f"From then on, {A.name} was not afraid of the dark anymore.", f"{A.name} slept well all night long."])
    )


def _plot_baking(s: _Story, A: Character) -> None:
    G = s.grownup()
    flavor = s.pick(["chocolate", "banana", "lemon", "apple", "honey", "oat", "orange", "berry", "ginger"])
    treat = s.pick(["cookies", "cupcakes", "muffins", "pancakes", "biscuits", "buns"])
    _intro(s, A)
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} and {G} decided to bake {flavor} {treat}.")
    s.add("They got out the flour, the sugar, the eggs and the butter.")
    s.add(f"{A.name} cracked the eggs into a big bowl, and {G} helped {A.him} stir.")
    if s.chance(0.6):
        s.add(
            f"{A.name} stirred so fast that flour flew everywhere!",
            f"There was flour on {A.his} nose and on the floor.",
        )
        s.add(f"{A.name} and {G} looked at each other and laughed.")
    s.add(f"They put the {treat} in the oven and waited.", "Soon the kitchen smelled sweet and warm.")
    s.add(
        f"When the {treat} were ready, they were {s.pick(['golden', 'soft', 'warm'])} and "
        f"{s.pick(['yummy', 'delicious', 'perfect'])}."
    )
    s.new_paragraph()
    B = s.character()
    s.add(f"{A.name} put some {treat} on a plate and took them to {A.his} friend {B.name}.")
    s.add(s.quote(B.name, f"These are the best {treat} I have ever tasted!"))
    s.add(
        s.pick(
            [
                f"{A.name} smiled. Baking was fun, but sharing was even better.",
                f"{A.name} was very proud. {A.He} had baked them all by {A.himself}, with a little help from {G}.",
            ]
        )
    )
    _moral(s, A, "the best treats are the ones you share", p=0.3)


_PLANTS = {
    "sunflower": "it was taller than {A}, with a big yellow flower on top",
    "tomato": "it was full of round red tomatoes",
    "pumpkin": "a big orange pumpkin was growing in the garden",
    "bean": "it climbed all the way up the fence",
    "strawberry": "it was covered in sweet red strawberries",
    "tulip": "a bright red tulip opened in the sun",
    "carrot": "{A} pulled a long orange carrot out of the ground",
    "pea": "it had lots of little green pods full of peas",
}


def _plot_garden(s: _Story, A: Character) -> None:
    G = s.grownup()
    plant = s.pick(list(_PLANTS))
    _intro(s, A)
    s.new_paragraph()
    s.add(f"{s.when()}, {G} gave {A.name} a tiny {plant} seed.")
    s.add(s.quote(G, "If you take good care of it, it will grow."))
    s.add(
        f"{A.name} dug a little hole in the garden and put the seed inside.",
        f"{A.He} covered it with soil and gave it some water.",
    )
    s.add(f"The next day, {A.name} ran outside to look, but nothing was there.")
    s.add(s.quote(A.name, "Why is it not growing?"))
    s.add(
        s.quote(
            G,
            s.pick(["Be patient. Good things take time.", "Seeds need time, water and sun. Wait and see."]),
            reply=True,
        )
    )
    s.new_paragraph()
    s.add(f"So {A.name} waited and waited.", f"Every day, {A.he} gave the seed some water.")
    s.add(f"Then one morning, {A.name} saw a tiny green shoot!")
    s.add(s.quote(A.name, f"{G}! Come and look!", pronoun=None))
    s.add("The little plant grew taller and taller.", f"Soon {_PLANTS[plant].format(A=A.name)}.")
    s.add(s.pick([f"{A.name} was so {s.feel('good')}.", f"{A.name} clapped {A.his} hands with joy."]))
    if plant in ("tomato", "strawberry", "carrot", "pea", "bean"):
        s.add(f"{A.name} and {G} shared the {plural(plant)} with all the neighbors.")
    _moral(s, A, "good things take time", p=0.5)


def _plot_treasure(s: _Story, A: Character) -> None:
    _intro(s, A)
    B = s.character(animal=A.animal)
    s.new_paragraph()
    where = (
        "under a flat rock"
        if A.animal
        else s.pick(["in Grandpa's old attic", "inside an old book", "under a flat rock"])
    )
    s.add(f"{s.when()}, {A.name} found an old map {where}.")
    s.add("The map had a big red X on it.")
    s.add(f"{A.name} ran to show the map to {A.his} friend {B.name}.")
    s.add(s.quote(B.name, s.pick(["A treasure map! Let's follow it!", "Wow! Maybe there is treasure!"])))
    a1 = s.pick(["the big oak tree", "the old barn", "a field of flowers", "the apple trees"])
    a2 = s.pick(["the little bridge", "a fallen log", "a small stream", "a tall hill"])
    a3 = s.pick(["the pond", "a big rock", "the old well", "a thick hedge"])
    s.add(f"{A.name} and {B.name} walked past {a1}, over {a2}, and around {a3}.")
    s.add("At last, they found the spot with the X.", "They dug and dug until they hit something hard.")
    s.add(s.pick(["It was a small wooden box!", "It was an old tin box!"]))
    s.new_paragraph()
    inside = s.rng.sample(
        ["shiny stones", "old coins", "pretty shells", "colored marbles", "tiny toy animals", "golden buttons"], 2
    )
    s.add(f"Inside, there were {inside[0]}, {inside[1]} and a little note.")
    s.add(f'{A.name} read the note out loud: "The best treasure is a good friend."')
    s.add(f"{A.name} looked at {B.name} and smiled.")
    s.add(s.quote(A.name, f"Then I already have the best treasure, {B.name}!"))
    s.add(f"{A.name} and {B.name} shared the treasure and walked home together.")


# name -> (function, whether an animal can be the hero)
PLOTS = {
    "lost object": (_plot_lost, True),
    "new friend": (_plot_friend, True),
    "trip": (_plot_trip, False),
    "learning": (_plot_learning, False),
    "storm": (_plot_storm, True),
    "sharing": (_plot_sharing, True),
    "race": (_plot_race, True),
    "birthday": (_plot_birthday, True),
    "helping an animal": (_plot_help_animal, False),
    "mistake and apology": (_plot_mistake, False),
    "scared of the dark": (_plot_night, False),
    "baking": (_plot_baking, False),
    "planting a seed": (_plot_garden, False),
    "treasure map": (_plot_treasure, True),
}
_PLOT_NAMES = list(PLOTS)
MIN_WORDS, MAX_WORDS = 80, 250


# --------------------------------------------------------------------------------------------
# The public story API
# --------------------------------------------------------------------------------------------


def generate_story(rng: random.Random, return_meta: bool = False):
    """One story from `rng` (only `rng` is used, so a seeded Random gives the same story).

    With return_meta=True returns (text, meta); meta has the plot, the opening, the named
    characters with their genders, and the grown-ups ("Mom", "Dad", ...) who appear.
    """
    for _ in range(20):  # almost always the first try; the loop guards the 80-250 word range
        s = _Story(rng)
        name = s.pick(_PLOT_NAMES)
        plot, animals_ok = PLOTS[name]
        hero = s.character(animal=animals_ok and s.chance(0.3))
        plot(s, hero)
        text = s.text()
        n_words = text.count(" ") + text.count(PARAGRAPH_SEP) + 1  # = len(text.split())
        if MIN_WORDS <= n_words <= MAX_WORDS:
            break
    if not return_meta:
        return text
    meta = {"plot": name, "opening": s.opening, "characters": [c.meta() for c in s.cast], "grownups": list(s.grownups)}
    return text, meta
