"""Data for the course: a generated story corpus, user text files, and token packing.

Nothing can be downloaded, so the tiny Llama 2 of notebook 07 is pretrained on simple English
stories that this module writes itself, in the spirit of TinyStories (Eldan & Li, 2023): a
small vocabulary, short sentences, named characters whose pronouns stay consistent, a little
plot, dialogue in quotes, and an ending (sometimes a moral).

How a story is made: a plot (lost toy, new friend, trip, storm, race, ...) is a short Python
function that calls small randomized building blocks (openings, feelings, dialogue, searches,
endings) with word lists drawn from the top of this module. Everything is driven by one
`random.Random`, so a seed always gives the same stories and the global RNG is never touched.

    generate_story(rng)       one story (and, with return_meta=True, its plot and characters)
    stories(seed, n)          the stories from one seed, in order (infinite if n is None)
    train_stories(n)          TRAIN_SEED stream; valid_stories(n) uses the disjoint VALID_SEED
    corpus_stats(n)           words, characters, uniqueness, speed and a token estimate
    write_stories(path, n)    stories to a text file, one per blank-line-separated block
    read_text_file(path)      documents of a user's UTF-8 text file (`llama2-lab train --text`)
    split_train_valid(docs)   a seeded held-out validation part
    pack_documents(...)       BOS + doc + EOS streams cut into (seq_len + 1)-token chunks
    chunk_tensor / batches    those chunks as a (N, T+1) LongTensor and seeded (B, T+1) batches

Limits, said plainly: the stories are simple and formulaic on purpose, because a 5-15M
parameter model trained for minutes on a CPU can only learn something this regular. The
generator knows a few hundred words, not English; a model trained on it will not know what a
"volcano" is.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

TRAIN_SEED = 20230718  # Llama 2's release date
VALID_SEED = 7_000_001  # any other seed gives an independent stream
PARAGRAPH_SEP = "\n"  # paragraphs inside a story; stories themselves never contain "\n\n"


def _words(text: str) -> list[str]:
    return text.split()


# --------------------------------------------------------------------------------------------
# Word lists
# --------------------------------------------------------------------------------------------

# Names that are also everyday words ("Will", "Hope", "Joy") are left out on purpose.
GIRL_NAMES = _words("""
    Lily Mia Emma Sophie Lucy Anna Sara Ella Zoe Amy Grace Chloe Ruby Daisy Rosie Molly Lila
    Nora Ivy Hannah Sue Jane Kate Amelia Olivia Ava Isla Poppy Millie Evie Alice Clara Maya
    Leah Luna Stella Hazel Violet Penny Holly Julia Emily Bella Abby Jenny Katie Megan Nina
    Tina Rita Wendy Fiona Heidi Irene Olive Paula Rachel Sally Tara Vera Willow Yasmin Zara
    Amber Beth Cora Dora Elsa Freya Gemma Gina Iris Jade Kira Lena Lola Mabel Nellie Phoebe
    Polly Sadie Tessa Tilly Esme Ada Aria Eva Jasmine Lucia Mila Naomi Ellie Lottie Maisie
    Matilda Nadia Priya Layla Sophia Anya Mira Rosa Elena Carmen Keiko Aiko Mei Amara Zuri
    Greta Hilda Marta Nell Rena Lana
""")
BOY_NAMES = _words("""
    Tom Ben Max Tim Jack Leo Jake Finn Noah Oliver Harry Oscar Henry Theo Jacob Liam Lucas
    Ethan Mason Owen Ryan Adam Danny Eddie Felix George Hugo Isaac Joe Kevin Louis Milo Ned
    Peter Paul Ralph Roy Sean Toby Victor Zack Arthur Alfie Archie Billy Bobby Carl Dave Dylan
    Evan Frank Fred Gabe Hank Ian Jasper Jonah Kai Larry Luke Matt Mike Nathan Nick Omar Pete
    Rory Rudy Seth Simon Teddy Tony Vince Wally Zane Ali Amir Arjun Ravi Hiro Kenji Chen Diego
    Carlos Mateo Pablo Marco Luca Kofi Kwame Tariq Yusuf Ivan Boris Sven Lars Otto Bruno Ezra
    Caleb Eli Gus Ted Bob Andy Dan Jim Neil Walter
""")

# The protagonist: a child, or (a quarter of the time) a named animal.
CHILD_ADJECTIVES = _words("""
    little kind brave shy curious happy cheerful friendly gentle clever smart playful silly
    funny helpful polite quiet busy lively sweet caring honest patient careful jolly young
    thoughtful bold generous creative dreamy loving bright merry chatty giggly sporty musical
    artistic tidy
""")
# animal kind -> where it lives (used as "lived {home}")
ANIMAL_HOMES = {
    "bunny": "in a cozy burrow under a big tree",
    "rabbit": "in a snug burrow at the edge of the woods",
    "squirrel": "in a tall oak tree in the forest",
    "fox": "in a warm den in the forest",
    "bear": "in a big cave near the river",
    "mouse": "in a tiny hole under an old barn",
    "owl": "in a hollow tree in the woods",
    "hedgehog": "under a pile of leaves in a garden",
    "pig": "in a muddy pen on a farm",
    "lamb": "in a green field on a farm",
    "pony": "in a red barn on a farm",
    "goat": "on a rocky hill near a farm",
    "duck": "by a quiet pond",
    "frog": "by a big green pond",
    "turtle": "near a sunny pond",
    "puppy": "in a little house with a blue door",
    "kitten": "in a warm house near the park",
    "monkey": "high in the trees of the jungle",
    "elephant": "in the hot, green jungle",
    "lion": "on the wide, grassy plains",
    "giraffe": "on the wide, grassy plains",
    "penguin": "on the cold, white ice",
    "panda": "in a forest of tall bamboo",
    "beaver": "in a lodge on a calm river",
    "deer": "in a quiet forest",
}
# These fit any animal (a "furry turtle" would not).
ANIMAL_ADJECTIVES = _words("""
    little small young playful gentle friendly happy brave curious shy clever jolly kind
    cheerful sweet busy wise speedy sleepy
""")

COLORS = _words("red blue green yellow orange purple pink brown black white gray golden silver")
THING_ADJECTIVES = COLORS + _words("little new old shiny pretty special big small bright tiny")

# Things a child can own, lose, share or get as a present. All singular and countable.
TOYS = [
    "ball", "kite", "doll", "teddy bear", "toy car", "toy train", "toy boat", "toy robot",
    "yo-yo", "puzzle", "drum", "whistle", "jump rope", "spinning top", "marble", "crayon",
    "paintbrush", "book", "storybook", "hat", "scarf", "necklace", "bracelet", "ring",
    "hair clip", "ribbon", "backpack", "lunch box", "water bottle", "umbrella", "blanket",
    "pillow", "stuffed bunny", "stuffed elephant", "toy dinosaur", "wooden horse", "balloon",
    "bubble wand", "feather", "badge", "medal", "coin", "key", "flashlight", "basket",
    "bucket", "shovel", "notebook", "pencil", "pencil case", "sticker", "music box",
    "toy piano", "harmonica", "flute", "tambourine", "bell", "magnifying glass", "watch",
    "cape", "crown", "wand", "kazoo", "toy plane", "toy truck", "rubber duck", "jigsaw",
    "sock monkey", "glove", "slipper", "boot", "sweater", "jacket", "raincoat", "pebble",
]
# Foods that come in handfuls, so "five cookies" and "one cookie" both read well, grouped
# with the adjectives that suit them ("juicy pears", never "sticky pears").
_FOOD_GROUPS = [
    ("juicy ripe fresh sweet yummy",
     "apple banana orange pear peach plum cherry strawberry grape mango melon apricot fig "
     "blueberry raspberry tomato"),
    ("crunchy fresh tasty yummy", "carrot cracker pretzel cucumber nut"),
    ("warm soft golden yummy tasty delicious big",
     "cookie cupcake muffin pie sandwich pancake waffle donut bun bagel biscuit"),
    ("sweet sticky yummy colorful", "lollipop popsicle jelly bean"),
]
FOOD_ADJECTIVES_FOR = {food: adjectives.split() for adjectives, foods in _FOOD_GROUPS
                       for food in foods.split()}
FOOD_ADJECTIVES_FOR.update({"cinnamon roll": ["warm", "sticky", "sweet"],
                            "gingerbread man": ["spicy", "yummy", "little"],
                            "chocolate bar": ["sweet", "big", "yummy"],
                            "granola bar": ["crunchy", "tasty"],
                            "candy cane": ["sweet", "striped", "sticky"]})
FOODS = list(FOOD_ADJECTIVES_FOR)
FOOD_ADJECTIVES = sorted({adj for adjs in FOOD_ADJECTIVES_FOR.values() for adj in adjs})
# Animals met in stories (helped, seen at the zoo, on the farm...).
ANIMALS = [
    "cat", "dog", "puppy", "kitten", "bunny", "rabbit", "bird", "duck", "duckling", "chick",
    "hen", "rooster", "goose", "owl", "frog", "toad", "turtle", "fish", "goldfish", "snail",
    "worm", "ladybug", "butterfly", "bee", "caterpillar", "ant", "spider", "grasshopper",
    "squirrel", "chipmunk", "mouse", "hedgehog", "fox", "bear", "deer", "wolf", "raccoon",
    "beaver", "otter", "badger", "mole", "bat", "horse", "pony", "cow", "pig", "sheep",
    "lamb", "goat", "donkey", "llama", "lion", "tiger", "elephant", "monkey", "giraffe",
    "zebra", "hippo", "rhino", "kangaroo", "koala", "panda", "penguin", "seal", "dolphin",
    "whale", "crab", "starfish", "octopus", "parrot", "peacock", "swan", "robin", "sparrow",
    "eagle", "crow", "pigeon", "seagull", "dragonfly", "firefly", "lizard", "snake", "moose",
    "calf", "bull", "flamingo", "camel", "gorilla", "puffin", "jellyfish", "beetle", "moth",
]
PLACES = [
    "park", "garden", "beach", "playground", "backyard", "meadow", "forest", "lake", "river",
    "pond", "farm", "zoo", "aquarium", "museum", "library", "school", "bakery", "market",
    "toy shop", "candy shop", "ice cream shop", "circus", "fair", "castle", "island",
    "mountain", "hill", "valley", "village", "town", "city", "jungle", "cave", "camp",
    "harbor", "train station", "airport", "swimming pool", "bridge", "lighthouse", "barn",
    "orchard", "field", "house", "street", "kitchen", "bedroom", "classroom", "shed",
]
NATURE = [
    "tree", "flower", "rock", "stone", "cloud", "leaf", "bush", "branch", "log", "stick",
    "puddle", "rainbow", "sun", "moon", "star", "snowflake", "snowman", "sandcastle",
    "seashell", "wave", "pinecone", "mushroom", "seed", "nest", "hole", "path", "fence",
    "gate", "bench", "swing", "slide", "sandbox", "sprinkler", "hose", "wagon",
    "wheelbarrow", "daisy", "rose", "tulip", "sunflower", "dandelion", "daffodil", "lily",
    "oak tree", "pine tree", "apple tree", "stream", "waterfall", "hay bale", "scarecrow",
]
HOUSEHOLD = [
    "bed", "chair", "table", "door", "window", "cup", "plate", "bowl", "spoon", "vase",
    "lamp", "clock", "mirror", "box", "bag", "shelf", "drawer", "closet", "sofa", "rug",
    "jar", "pot", "pan", "oven", "bathtub", "towel", "toothbrush", "sock", "shoe", "coat",
    "dress", "shirt", "cap", "bike", "scooter", "car", "bus", "train", "boat", "plane",
    "truck", "tractor", "present", "gift", "card", "letter", "picture", "game", "party",
    "song", "map", "treasure chest", "candle", "tent", "sleeping bag", "teapot", "kettle",
]
PEOPLE = [
    "mom", "dad", "grandma", "grandpa", "friend", "teacher", "baker", "farmer", "neighbor",
    "sister", "brother", "aunt", "uncle", "cousin", "girl", "boy", "man", "woman", "lady",
    "king", "queen", "prince", "princess", "doctor", "pilot", "captain", "zookeeper", "child",
    "baby", "family",
]

# Plurals: the regular rule, plus the words it gets wrong.
_IRREGULAR_PLURALS = {
    "mouse": "mice", "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish",
    "goldfish": "goldfish", "moose": "moose", "wolf": "wolves", "leaf": "leaves",
    "calf": "calves", "shelf": "shelves", "scarf": "scarves", "child": "children",
    "man": "men", "woman": "women", "tomato": "tomatoes", "mango": "mangoes",
    "potato": "potatoes", "gingerbread man": "gingerbread men", "octopus": "octopuses",
    "volcano": "volcanoes", "hero": "heroes", "jellyfish": "jellyfish", "starfish": "starfish",
    "yo-yo": "yo-yos",
}


def plural(noun: str) -> str:
    """The plural of a (possibly two-word) noun: 'toy car' -> 'toy cars', 'mouse' -> 'mice'."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    head, sep, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        return head + sep + _IRREGULAR_PLURALS[last]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return head + sep + last


NOUNS: dict[str, str] = {
    n: plural(n) for n in TOYS + FOODS + ANIMALS + PLACES + NATURE + HOUSEHOLD + PEOPLE
}

# Words that start with a vowel letter but a consonant sound, and the other way round.
_CONSONANT_SOUND = ("uni", "use", "usu", "uk", "one", "eu", "ewe")
_VOWEL_SOUND = ("hour", "honest", "honor", "heir")


def a(phrase: str) -> str:
    """'a' or 'an' by the sound of the phrase's first word: 'an orange ball', 'a unicorn'."""
    word = phrase.lower()
    vowel = word[0] in "aeiou"
    if vowel and word.startswith(_CONSONANT_SOUND):
        vowel = False
    elif word.startswith(_VOWEL_SOUND):
        vowel = True
    return ("an " if vowel else "a ") + phrase


NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve")

# Verbs: base -> past. Regular verbs are listed bare; only irregular pasts are spelled out.
_VERB_TEXT = """
    be:was have:had do:did go:went come:came get:got give:gave take:took make:made see:saw
    say:said tell:told find:found lose:lost know:knew think:thought feel:felt run:ran
    swim:swam sing:sang ride:rode fly:flew eat:ate drink:drank sit:sat stand:stood
    build:built draw:drew throw:threw catch:caught bring:brought buy:bought hold:held
    keep:kept leave:left meet:met read:read win:won hide:hid seek:sought fall:fell
    break:broke wake:woke grow:grew blow:blew dig:dug spin:spun swing:swung slide:slid
    sleep:slept shake:shook wear:wore write:wrote hear:heard begin:began put:put cut:cut
    let:let hit:hit shine:shone bake:baked light:lit teach:taught forget:forgot
    understand:understood choose:chose stick:stuck creep:crept sweep:swept bend:bent
    spend:spent send:sent lend:lent fight:fought weep:wept
    play jump dance climb hop:hopped skip:skipped paint explore skate giggle whistle hum:hummed
    bounce splash march twirl roll race wander crawl waddle laugh smile nod:nodded
    clap:clapped cheer grin:grinned gasp sigh shout whisper reply:replied call cry:cried
    yell answer explain exclaim ask look search hug:hugged help thank share wave want need
    love like hope wish try:tried walk pick kick push pull open close clean wash fix water
    plant wait watch listen learn practice count chase collect feed:fed visit invite
    decide notice point follow carry:carried hurry:hurried worry:worried stop:stopped
    drop:dropped grab:grabbed pat:patted rub:rubbed wag:wagged tap:tapped sip:sipped
    trip:tripped scream shiver tremble peek wiggle pretend bloom sparkle glow rain pour
    thunder flash rumble jog:jogged dash rush float sail row fish picnic:picnicked
    mix stir:stirred pour taste smell sniff lick chew munch bite:bit arrive return hand
    wrap:wrapped unwrap:unwrapped blink yawn stretch rest nap:napped snore squeak chirp quack
    bark purr roar buzz hoot neigh moo hunt sob:sobbed nibble glue
"""
VERBS: dict[str, str] = {}
for _item in _VERB_TEXT.split():
    _base, _, _past = _item.partition(":")
    VERBS[_base] = _past or (_base + "d" if _base.endswith("e") else
                             _base[:-1] + "ied" if _base.endswith("y") and _base[-2] not in "aeiou"
                             else _base + "ed")
_DOUBLE_FINAL = {"run", "swim", "sit", "put", "cut", "let", "hit", "win", "begin", "dig",
                 "spin", "forget", "get", "hop", "skip", "nod", "clap", "grin",
                 "hug", "stop", "drop", "grab", "pat", "rub", "wag", "tap", "sip", "trip",
                 "jog", "stir", "nap", "shop", "chat", "plan", "hum", "wrap", "unwrap",
                 "sob"}


def past(phrase: str) -> str:
    """Past tense of a verb phrase (its first word changes): 'ride my bike' -> 'rode my bike'."""
    verb, sep, rest = phrase.partition(" ")
    return VERBS[verb] + sep + rest


def ing(phrase: str) -> str:
    """The -ing form of a verb phrase: 'make a cake' -> 'making a cake', 'swim' -> 'swimming'."""
    verb, sep, rest = phrase.partition(" ")
    if verb in _DOUBLE_FINAL:
        verb += verb[-1]
    elif verb.endswith("c"):  # picnic -> picnicking
        verb += "k"
    elif verb.endswith("ie"):
        verb = verb[:-2] + "y"
    elif verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and verb != "be":
        verb = verb[:-1]
    return verb + "ing" + sep + rest


# Things to do anywhere outdoors, alone ("{he} liked to {base}") or with a friend.
SOLO_ACTIVITIES = [
    "sing songs", "blow bubbles", "chase butterflies", "pick flowers", "look at the clouds",
    "dance in the sun", "hunt for bugs", "collect pretty leaves", "watch the birds",
    "jump over sticks", "hum happy songs", "look for shiny stones", "splash in puddles",
    "bounce a ball", "make mud pies", "twirl around", "hop around", "build a little fort",
    "draw pictures in the dirt", "search for treasure", "wander along the path",
    "count the birds", "pretend to be a pirate", "pretend to be a dinosaur", "climb trees",
]
GROUP_ACTIVITIES = [
    "play tag", "play hide and seek", "play catch", "tell funny jokes", "make funny faces",
    "pretend to be pirates", "pretend to be dinosaurs", "chase each other", "race each other",
    "make crowns out of flowers", "play a guessing game", "march like soldiers",
    "build a little fort", "search for treasure", "sing songs", "blow bubbles",
    "chase butterflies", "look at the clouds", "hunt for bugs", "climb trees", "hop around",
]
# Skills for "learning to do something": (to-phrase, what goes wrong, what success looks like).
# "{his}", "{he}" and "{him}" are filled with the learner's pronouns.
SKILLS = [
    ("ride {his} bike", "{he} wobbled and fell over", "{he} rode all the way down the street"),
    ("tie {his} shoes", "the laces got all tangled", "{he} made two neat bows"),
    ("swim", "{he} splashed and sank", "{he} swam all the way across the pool"),
    ("whistle", "only air came out", "a loud, clear whistle came out"),
    ("skip rope", "the rope caught {his} feet", "{he} skipped ten times without stopping"),
    ("fly a kite", "the kite fell straight down", "the kite flew high into the sky"),
    ("write {his} name", "the letters came out wobbly", "{he} wrote every letter just right"),
    ("play the piano", "the notes sounded all wrong", "{he} played a whole song"),
    ("do a cartwheel", "{he} landed on {his} bottom", "{he} did a perfect cartwheel"),
    ("catch a ball", "the ball bounced off {his} hands", "{he} caught the ball with both hands"),
    ("skate", "{he} slipped and fell on the ice", "{he} glided across the ice"),
    ("juggle three balls", "the balls fell everywhere", "{he} kept all three balls in the air"),
    ("climb the big tree", "{he} slid back down", "{he} reached the top branch"),
    ("bake bread", "the bread came out flat", "the bread came out tall and golden"),
    ("read a whole book", "the long words were too hard", "{he} read the whole book out loud"),
    ("play the drums", "the beat kept getting lost", "{he} played a steady, happy beat"),
    ("paint a picture of the sea", "the colors ran together", "{he} painted bright blue waves"),
    ("hop on one foot", "{he} kept falling over", "{he} hopped all the way to the gate"),
    ("count to one hundred", "{he} kept forgetting what came after thirty",
     "{he} counted all the way to one hundred"),
    ("make a paper boat", "the paper tore", "{he} made a boat that floated in the bath"),
    ("button {his} coat", "the buttons went in the wrong holes", "{he} buttoned every button"),
    ("kick the ball into the goal", "the ball rolled the wrong way",
     "the ball flew right into the goal"),
]

PERSONAL_FEELINGS = {
    "good": _words("happy glad cheerful joyful delighted thrilled excited proud pleased"),
    "sad": _words("sad upset unhappy miserable disappointed"),
    "scared": _words("scared afraid frightened nervous worried"),
    "sorry": _words("sorry ashamed guilty bad"),
    "calm": _words("calm safe cozy warm relieved peaceful sleepy"),
    "cross": _words("angry cross grumpy frustrated cranky"),
    "amazed": _words("amazed surprised curious puzzled"),
    "thankful": _words("thankful grateful"),
}
FEELINGS = sorted({f for group in PERSONAL_FEELINGS.values() for f in group})
WEATHER_ADJECTIVES = _words("sunny warm bright windy cloudy cold chilly lovely beautiful clear "
                            "breezy crisp hot gray")
PLACE_ADJECTIVES = _words("big small quiet busy green pretty peaceful old little friendly "
                          "colorful shady sleepy tiny lovely")
ADJECTIVES = sorted(set(CHILD_ADJECTIVES + ANIMAL_ADJECTIVES + THING_ADJECTIVES + FOOD_ADJECTIVES
                        + FEELINGS + WEATHER_ADJECTIVES + PLACE_ADJECTIVES
                        + _words("tall short long wide deep dark heavy light loud wet dry "
                                 "muddy sandy rocky hungry tired thirsty sick hurt stuck lost "
                                 "funny strange wonderful magic fast slow")))

SAY_VERBS = ["said", "said", "said", "said", "whispered"]
REPLY_VERBS = ["said", "said", "replied", "answered"]
EXCLAIM_VERBS = ["said", "shouted", "exclaimed", "called", "said"]

# Places to play: where a lost thing can hide, and what one does there.
PLACE_INFO = {
    "the park": (
        ["under a bench", "behind a big tree", "near the pond", "in the tall grass",
         "under a pile of leaves", "by the fountain"],
        ["swing on the swings", "feed the ducks", "fly a kite", "roll down the hill",
         "kick a ball", "chase the pigeons"]),
    "the garden": (
        ["under a bush", "behind the flower pots", "next to the shed",
         "in the vegetable patch", "under the big sunflowers", "by the fence"],
        ["pick flowers", "water the plants", "hunt for bugs", "make mud pies",
         "watch the bees", "look for ladybugs"]),
    "the beach": (
        ["under a towel", "behind a sandcastle", "near the rocks",
         "in a hole in the sand", "by the lifeguard chair", "under a beach umbrella"],
        ["build a sandcastle", "dig in the sand", "splash in the waves", "collect shells",
         "fly a kite", "look for crabs"]),
    "the playground": (
        ["under the slide", "near the swings", "in the sandbox",
         "behind the fence", "under the climbing frame", "by the seesaw"],
        ["swing on the swings", "slide down the slide", "climb the climbing frame",
         "play hopscotch", "dig in the sandbox", "spin on the merry-go-round"]),
    "the backyard": (
        ["under the porch", "behind the shed", "in the doghouse",
         "near the fence", "under the old wagon", "in the tall grass"],
        ["kick a ball", "run through the sprinkler", "blow bubbles", "make mud pies",
         "swing on the tire swing", "play with the dog"]),
    "the meadow": (
        ["behind a big rock", "under a bush", "in the tall grass",
         "near a little stream", "under a pile of leaves", "by a hollow log"],
        ["chase butterflies", "pick flowers", "roll in the grass", "hop in the tall grass",
         "look at the clouds", "sniff the flowers"]),
    "the field": (
        ["behind a hay bale", "under a bush", "near the old fence",
         "in the tall grass", "by the scarecrow", "next to a big rock"],
        ["run through the grass", "chase butterflies", "jump over the hay bales",
         "look at the clouds", "roll down the little hill", "play near the scarecrow"]),
    "the pond": (
        ["under a lily pad", "behind some reeds", "near the big rock",
         "in the mud by the water", "under a log", "by the little bridge"],
        ["splash in the water", "watch the frogs", "look at the fish", "float on a leaf",
         "chase the dragonflies", "sit in the sun"]),
}
_IN_PLACES = {"the garden", "the backyard", "the meadow", "the field"}


def at(place: str) -> str:
    """'at the park', 'in the garden'."""
    return ("in " if place in _IN_PLACES else "at ") + place


HUMAN_PLACES = ["the park", "the garden", "the beach", "the playground", "the backyard"]
ANIMAL_PLACES = ["the meadow", "the field", "the pond", "the meadow", "the garden"]

# Trips: destination -> (how they get there, things seen (plural nouns), things done).
TRIPS = {
    "the zoo": (["by bus", "in the car", "by train"],
                ["lions", "elephants", "giraffes", "monkeys", "zebras", "penguins", "tigers",
                 "hippos", "kangaroos", "flamingos", "gorillas", "camels"],
                ["fed the goats", "watched the seals play", "rode on a little train",
                 "laughed at the silly monkeys"]),
    "the beach": (["in the car", "by bus", "by train"],
                  ["seagulls", "crabs", "seashells", "big waves", "boats", "starfish"],
                  ["built a sandcastle", "splashed in the waves", "collected shells",
                   "ate ice cream by the water", "dug a deep hole in the sand"]),
    "the farm": (["in the car", "in a truck", "by bus"],
                 ["cows", "pigs", "sheep", "horses", "hens", "ducks", "goats", "tractors"],
                 ["fed the chickens", "picked apples", "rode a pony", "milked a cow",
                  "jumped in the hay"]),
    "the lake": (["in the car", "on their bikes", "by bus"],
                 ["ducks", "swans", "fish", "boats", "frogs", "dragonflies"],
                 ["rowed a little boat", "fed the ducks", "had a picnic on the grass",
                  "threw stones into the water", "went fishing from a little dock"]),
    "the forest": (["on foot", "in the car", "on their bikes"],
                   ["squirrels", "tall trees", "mushrooms", "birds", "deer", "pinecones"],
                   ["followed a little path", "built a fort out of sticks",
                    "listened to the birds sing", "looked for animal tracks",
                    "had lunch by a stream"]),
    "the aquarium": (["by bus", "by train", "in the car"],
                     ["fish", "sharks", "turtles", "octopuses", "jellyfish", "seals"],
                     ["touched a starfish", "watched the penguins swim",
                      "looked through the big glass wall", "saw a show with dolphins"]),
    "the mountains": (["in the car", "by train"],
                      ["goats", "eagles", "waterfalls", "tall pine trees", "rocks"],
                      ["climbed a steep path", "had a picnic at the top", "threw snowballs",
                       "looked down at the tiny houses below"]),
    "the museum": (["by bus", "by train", "in the car"],
                   ["dinosaur bones", "old coins", "paintings", "statues", "rockets"],
                   ["looked at a giant dinosaur", "drew a picture of a rocket",
                    "learned about the stars", "bought a little toy in the shop"]),
    "the fair": (["in the car", "by bus", "on foot"],
                 ["clowns", "balloons", "ponies", "jugglers", "bright lights"],
                 ["rode the merry-go-round", "ate pink cotton candy", "won a little prize",
                  "went on the big wheel"]),
    "the city": (["by train", "by bus"],
                 ["tall buildings", "busy streets", "buses", "pigeons", "shops"],
                 ["rode in a big red bus", "visited a toy shop", "fed the pigeons in the square",
                  "ate noodles at a little cafe"]),
}


# --------------------------------------------------------------------------------------------
# Characters and the story being written
# --------------------------------------------------------------------------------------------

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
        return self.pick(["One day", "One day", "One morning", "One sunny day",
                          "One bright morning", "One afternoon", "One Saturday morning"])

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

    def quote(self, who: str, line: str, pronoun: str | None = None, verb: str | None = None,
              reply: bool = False) -> str:
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
    "in a little house with a blue door", "in a small house near the park",
    "in a yellow house on a quiet street", "in a cozy cottage by the woods",
    "in a tall building in the big city", "on a farm with lots of animals",
    "in a little town by the sea", "in a white house at the top of a hill",
    "in a busy town full of shops", "in a small village near a river",
]
# (weight, opening name); "Once upon a time" is the most common, as the demo prompt uses it.
OPENINGS = [(45, "once"), (13, "one day"), (10, "there was once"), (7, "once there was"),
            (5, "long ago"), (7, "name was"), (6, "morning"), (7, "in a")]
_OPENING_NAMES = [name for weight, name in OPENINGS for _ in range(weight)]


def _intro(s: _Story, A: Character, trait: bool = True) -> None:
    """The first sentence or two: who the story is about and where they live."""
    d = s.described(A)
    home = ANIMAL_HOMES[A.kind] if A.animal else s.pick(HUMAN_HOMES)
    kind = s.opening = s.pick(_OPENING_NAMES)
    if kind == "once":
        s.add(s.pick([f"Once upon a time, there was {d}.",
                      f"Once upon a time, there was {d}.",
                      f"Once upon a time, there lived {d}.",
                      f"Once upon a time, {d} lived {home}.",
                      f"Once upon a time, {d} lived {home}."]))
    elif kind == "one day":
        s.day_started = True
        s.add(s.pick([f"One day, {d} woke up early.",
                      f"One day, {d} woke up with a big smile.",
                      f"One day, {d} was feeling very {s.pick(['happy', 'cheerful'])}."]))
    elif kind == "there was once":
        s.add(s.pick([f"There was once {d}.", f"There was once {d} who lived {home}."]))
    elif kind == "once there was":
        s.add(f"Once there was {d}.")
    elif kind == "long ago":
        s.add(s.pick([f"Long ago, {d} lived {home}.",
                      f"Long ago, in a faraway land, there lived {d}."]))
    elif kind == "name was":
        s.add(f"{A.name} was {a(A.adjective + ' ' + A.kind)} who lived {home}.")
    elif kind == "morning":
        s.day_started = True
        s.add(f"One {s.pick(WEATHER_ADJECTIVES[:6])} morning, {d} woke up and looked "
              f"out of the window.")
    else:
        town = s.pick(["a little town by the sea", "a small village", "a quiet little town",
                       "a faraway land", "a big, busy city", "a village near the mountains"])
        if A.animal:
            s.add(f"In {s.pick(['a big green forest', 'a faraway land', 'a sunny valley'])}, "
                  f"there lived {d}.")
        else:
            s.add(f"In {town}, there lived {d}.")
    if trait and s.chance(0.75):
        likes = s.pick(SOLO_ACTIVITIES)
        s.add(s.pick([
            f"{A.He} loved to {likes}.",
            f"Every day, {A.he} liked to {likes}.",
            f"{A.He} was always {s.pick(['kind', 'nice', 'friendly', 'polite'])} "
            f"to everyone {A.he} met.",
            f"{A.His} favorite color was {s.pick(COLORS[:7])}.",
            f"{A.He} had a big smile and a kind heart.",
            f"More than anything, {A.he} loved to {likes}.",
        ]))


def _moral(s: _Story, A: Character, lesson: str, p: float = 0.4) -> None:
    if s.chance(p):
        s.add(s.pick([f"{A.name} learned that {lesson}.",
                      f"That day, {A.name} learned that {lesson}.",
                      f"And so {A.name} learned that {lesson}."]))


# --------------------------------------------------------------------------------------------
# Plots. Each writes a whole story about its hero A into s. Rule of thumb for pronouns: a
# sentence that names two characters is followed by one that starts with a name.
# --------------------------------------------------------------------------------------------

def _plot_lost(s: _Story, A: Character) -> None:
    obj = s.thing()  # "yellow bubble wand", later just "bubble wand"
    noun = obj.split(" ", 1)[1]
    _intro(s, A)
    s.add(s.pick([f"{A.name} had {a(obj)} that {A.he} loved very much.",
                  f"{A.name}'s favorite thing in the whole world was {A.his} {obj}.",
                  f"{A.name} loved {A.his} {obj} more than anything.",
                  f"{s.grownup('Grandma')} had given {A.name} {a(obj)}, and {A.he} loved it "
                  "very much."]))
    s.add(s.pick([f"{A.He} took it everywhere {A.he} went.", f"{A.He} played with it every day.",
                  "", f"{A.He} never went anywhere without it."]))
    place = s.place(A)
    spots, _ = PLACE_INFO[place]
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} took {A.his} {noun} to {place}.")
    act1, act2 = s.activity(place), s.activity(place)
    if act1 == act2:
        s.add(f"{A.He} {past(act1)} and had lots of fun.")
    else:
        s.add(f"{A.He} {past(act1)} and {past(act2)}.")
    s.add(s.pick([f"When it was time to go home, {A.name} looked for {A.his} {obj}.",
                  f"After a while, {A.name} wanted to play with {A.his} {noun} again."]),
          s.pick(["But it was gone!", "But it was not there!",
                  f"But {A.he} could not find it anywhere!"]))
    s.add(s.quote(A.name, s.pick([f"Oh no! Where is my {noun}?", f"Where did my {noun} go?"]),
                  verb=s.pick(["cried", "asked"])))
    s.add(s.pick([f"{A.name} felt very {s.feel('sad')}.", f"Tears filled {A.his} eyes.",
                  f"{A.name} sat down and felt very {s.feel('sad')}."]))
    s.new_paragraph()
    friend = s.chance(0.6)
    if friend:
        B = s.character(animal=A.animal)
        helper = B.name
        s.add(s.pick([f"Just then, {A.his} friend {B.name} came by.",
                      f"Just then, {s.described(B)} came over."]))
        s.add(s.quote(B.name, s.pick(["What is wrong?", f"Why are you sad, {A.name}?",
                                       "Are you okay?"])))
    else:
        helper = s.grownup()
        s.add(f"{A.name} ran to {helper}.")
        s.add(s.quote(helper, s.pick(["What is wrong, sweetie?", "Why are you crying?",
                                       "What happened?"])))
    s.add(s.quote(A.name, f"I lost my {obj}.", reply=True))
    s.add(s.quote(helper, s.pick(["Don't worry. I will help you look for it.",
                                   "Let's look for it together.",
                                   "Don't be sad. We will find it."]), reply=True))
    s1, s2, s3, s4 = s.rng.sample(spots, 4)
    s.add(f"{A.name} and {helper} looked {s1}.", f"They looked {s2}.",
          s.pick([f"They even looked {s3}.", f"Then they looked {s3}."]),
          s.pick(["But it was not there.", "But they could not find it."]))
    if s.chance(0.7):
        color = obj.split()[0]
        seen = f"something {color}" if color in COLORS else "something"
        s.add(f"At last, {helper} saw {seen} {s4}.", f"It was {A.name}'s {obj}!")
    else:
        dog = s.pick(["dog", "puppy", "squirrel", "goat"])
        s.add(f"Then {a(s.pick(['little', 'funny', 'friendly']) + ' ' + dog)} ran up to them "
              "with something in its mouth.", f"It was {A.name}'s {obj}!")
    s.add(s.quote(A.name, s.pick([f"My {noun}! Thank you, {helper}!",
                                   f"You found it! Thank you so much, {helper}!"])))
    s.add(s.pick([f"{A.name} gave {helper} a big hug.", f"{A.name} hugged {helper} tight."]))
    s.add(s.pick([f"From that day on, {A.name} always kept {A.his} {noun} close.",
                  f"{A.name} and {helper} played with the {noun} until the sun went down.",
                  f"{A.name} held {A.his} {noun} tight all the way home."]))
    _moral(s, A, "good friends always help each other" if friend
           else "it is good to ask for help when you need it")


def _plot_friend(s: _Story, A: Character) -> None:
    A.adjective = s.pick(["little", "kind", "gentle", "quiet", "sweet", "young"])  # not "jolly"
    _intro(s, A, trait=False)
    s.add(s.pick([f"{A.name} was a little shy, and {A.he} did not have many friends.",
                  f"{A.name} had just moved to a new home, and {A.he} did not know anyone.",
                  f"{A.name} often felt {s.pick(['lonely', 'sad'])} because {A.he} had no one "
                  "to play with."]))
    place = s.place(A)
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} went to {place} all alone.")
    others = "animals" if A.animal else s.pick(["children", "kids"])
    s.add(f"{A.He} saw some {others} {ing(s.activity(place, group=True))}, "
          f"but {A.he} was too {s.feel('scared')} to say hello.")
    s.add(s.pick([f"So {A.he} sat down by {A.himself} and watched.",
                  f"{A.He} stood by {A.himself} and looked at {A.his} feet."]))
    B = s.character(animal=A.animal)
    s.new_paragraph()
    s.add(f"Then {s.described(B)} came over.")
    s.add(s.quote(B.name, s.pick([f"Hi! My name is {B.name}. What is your name?",
                                   f"Hello! I am {B.name}. What is your name?"])))
    s.add(s.quote(A.name, f"I am {A.name}.", reply=True))
    play = s.activity(place, group=True)
    s.add(s.quote(B.name, f"Do you want to {play} with me?"))
    s.add(s.pick([f"{A.name} smiled and nodded.", f"{A.name} felt {s.feel('good')}."]))
    s.add(s.quote(A.name, s.pick(["Yes, please!", "I would love to!", "Yes! That sounds fun!"]),
                  reply=True))
    s.new_paragraph()
    other = s.activity(place, group=True)
    s.add(f"{A.name} and {B.name} {past(play)} all afternoon.")
    if other != play:
        s.add(s.pick([f"Then they {past(other)}.", f"After that, they {past(other)}."]))
    s.add(s.pick(["They laughed and laughed.", "They had so much fun together.",
                  f"{A.name} had never had so much fun."]))
    s.add(f"When the sun went down, {A.name} waved goodbye to {B.name}.")
    s.add(s.quote(A.name, "Can we play again tomorrow?"))
    s.add(s.quote(B.name, s.pick(["Yes! See you tomorrow!", "Of course! You are my friend now."]),
                  reply=True))
    s.add(s.pick([f"From that day on, {A.name} and {B.name} were best friends.",
                  f"{A.name} walked home with a big smile. {A.He} had made a new friend."]))
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
    s.add(s.pick([f"{A.He} packed a snack and {A.his} {s.thing()} in a bag.",
                  f"{A.He} put on {A.his} {s.pick(COLORS)} hat and ran to the door.",
                  f"{A.He} got ready in no time."]))
    s.add(f"They went {s.pick(ways)}.", s.pick([f"On the way, {A.name} sang songs with {G}.",
                                                 f"On the way, {A.name} asked lots of questions.",
                                                 ""]))
    s.new_paragraph()
    x, y, z = s.rng.sample(seen, 3)
    s.add(f"When they got to {dest}, {A.name} saw {x}, {y} and {z}.")
    s.add(s.quote(A.name, s.pick([f"Look at all the {x}!", f"Wow! Look at the {y}!"])))
    d1, d2, d3 = s.rng.sample(done, 3)
    s.add(f"They {d1}, and then they {d2}.")
    s.add(s.pick([f"{A.name}'s favorite part was when they {d3}.",
                  f"Later, they {d3}. That was the best part!"]))
    s.new_paragraph()
    s.add("At the end of the day, they went home.",
          f"{A.name} was tired but very {s.feel('good')}.")
    s.add(s.quote(A.name, f"Thank you, {G}! That was the best day ever!"))
    s.add(s.pick([f"That night, {A.name} dreamed about {x} and {y}.",
                  f"{A.name} fell asleep with a big smile on {A.his} face.",
                  f"{A.name} could not wait to go back to {dest} again."]))


def _plot_learning(s: _Story, A: Character) -> None:
    skill, fail, success = (A.fill(t) for t in s.pick(SKILLS))
    _intro(s, A)
    s.add(s.pick([f"{A.name} really wanted to learn to {skill}.",
                  f"More than anything, {A.name} wanted to learn how to {skill}."]))
    s.add(s.pick([f"All of {A.his} friends could do it, but {A.name} could not.",
                  f"It looked so easy when {A.his} big cousin did it.", ""]))
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} tried for the first time.", f"But {fail}.")
    s.add(f"{A.name} tried again, but {fail} again.")
    s.add(s.pick([f"{A.name} felt {s.feel('cross')}.", f"{A.name} felt {s.feel('sad')}."]))
    s.add(s.quote(A.name, s.pick(["It is too hard!", "I will never be able to do it!",
                                   "I give up!"]), verb=s.pick(["cried", "said", "shouted"])))
    friend = s.chance(0.35)
    if friend:
        B = s.character()
        M = B.name
        s.add(f"{A.His} friend {B.name} saw {A.him} and came over.")
    else:
        M = s.grownup()
        s.add(s.pick([f"{M} sat down next to {A.name}.", f"{M} saw {A.name} and came over."]))
    s.add(s.quote(M, s.pick(["Everyone finds it hard at first. Just keep trying.",
                              "Don't give up. You are getting better every time.",
                              "When I was little, I could not do it either. "
                              "Practice a little every day."])))
    s.add(s.quote(M, s.pick(["Go slowly and take a deep breath.",
                              "Try it one more time. I will help you.",
                              "You can do it. I know you can."]), verb="added"))
    s.new_paragraph()
    s.add(s.pick([f"So {A.name} practiced every day.",
                  f"Every day after lunch, {A.name} practiced.",
                  f"{A.name} practiced in the morning and in the afternoon."]))
    s.add(f"Some days it went well, and some days it did not, but {A.he} did not give up.")
    s.add(f"Then one day, {success}!")
    s.add(s.quote(A.name, "I did it! I did it!"))
    s.add(s.pick([f"{M} clapped and cheered.", f"{M} gave {A.name} a big high five.",
                  f"{M} smiled from ear to ear."]))
    s.add(f"{A.name} felt very proud of {A.himself}.")
    _moral(s, A, s.pick(["if you keep trying, you can do hard things",
                         "practice and patience can help you do anything",
                         "it is okay to fall, as long as you get up again"]), p=0.5)


def _plot_storm(s: _Story, A: Character) -> None:
    _intro(s, A)
    place = s.place(A)
    s.new_paragraph()
    s.add(f"{s.when()}, the sky was blue, and {A.name} went to {place} to "
          f"{s.activity(place)}.")
    s.add(s.pick(["Suddenly, the wind began to blow.", "All at once, the wind started to howl."]),
          s.pick(["Big, dark clouds covered the sun.", "The sky turned dark and gray."]))
    s.add(s.pick(["Then it started to rain.", "Soon, big drops of rain began to fall."]),
          s.pick(["Boom! Thunder rumbled across the sky.",
                  "Flash! Lightning lit up the sky.", "Crash! The thunder was very loud."]))
    s.add(f"{A.name} was very {s.feel('scared')}.")
    s.add(s.quote(A.name, s.pick(["I want to go home!", "What should I do?"]),
                  pronoun=A.he, verb="cried"))
    s.new_paragraph()
    G = s.grownup("Mom" if s.chance(0.6) else "Dad")
    if s.chance(0.5) or A.animal:
        legs = f"{A.his} little legs" if A.animal else A.he
        s.add(f"{A.name} ran home as fast as {legs} could go.")
        s.add(f"{G} was waiting at the door with a warm towel.")
        s.add(s.quote(G, "You are safe now. It is only a storm."))
        s.add(s.pick([f"{G} wrapped {A.name} in a soft blanket.",
                      f"{G} made {A.name} a cup of warm milk."]),
              f"{A.name} and {G} sat by the window and watched the rain.")
    else:
        B = s.character()
        s.add(f"Then {A.name} saw {A.his} friend {B.name} waving from a little shed.")
        s.add(s.quote(B.name, f"Over here, {A.name}! It is dry in here!"))
        s.add(f"{A.name} ran inside, and the two friends sat close together.")
        s.add(f"{B.name} told funny stories until {A.name} was not scared anymore.")
    s.new_paragraph()
    s.add(s.pick(["After a while, the rain stopped.", "Soon, the storm was over."]),
          "The sun came out again.",
          s.pick(["A big rainbow shone across the sky.",
                  "There was a beautiful rainbow in the sky."]))
    s.add(s.quote(A.name, s.pick(["Look! A rainbow!", "It is so pretty!"])))
    s.add(s.pick([f"{A.name} ran outside and jumped in all the puddles.",
                  f"{A.name} went outside and splashed in the puddles."]))
    s.add(s.pick([f"{A.name} was not scared anymore.",
                  "The storm was gone, and the world smelled fresh and clean."]))
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
    s.add(s.quote(B.name, s.pick(["I forgot my snack, and I am so hungry.",
                                   "I dropped my lunch in the mud.",
                                   "I have not eaten anything all day."])))
    s.new_paragraph()
    if s.chance(0.5):
        s.add(f"{A.name} looked at {A.his} {plural(food)}.",
              f"{A.He} wanted to eat them all by {A.himself}.")
        s.add(f"But then {A.name} remembered what {G} always said: \"Sharing makes "
              "everyone happy.\"")
    k = n // 2
    s.add(s.quote(A.name, s.pick([f"Would you like {a(food)}?",
                                   f"Here, you can have some of my {plural(food)}!"])))
    s.add(f"{A.name} gave {B.name} {NUMBER_WORDS[k]} of them." if k > 1 else
          f"{A.name} gave {B.name} one of them.")
    s.add(s.pick([f"{B.name}'s face lit up.", f"{B.name} smiled a big smile."]))
    s.add(s.quote(B.name, s.pick(["Thank you! You are very kind.",
                                   "Thank you so much! You are a good friend."]), reply=True))
    s.add(s.pick([f"They sat together and ate the {snack}.",
                  f"Together, {A.name} and {B.name} ate the {snack}."]),
          f"The {plural(food)} tasted even better because they shared them.")
    s.new_paragraph()
    other = s.pick(FOODS)
    gift = a(f"{s.pick(FOOD_ADJECTIVES_FOR[other])} {other}")
    s.add(f"The next day, {B.name} brought {gift} to share with {A.name}.")
    s.add(s.pick([f"From then on, {A.name} and {B.name} were the best of friends.",
                  f"{A.name} and {B.name} shared their snacks every day after that."]))
    _moral(s, A, "sharing makes everyone happy", p=0.5)


def _plot_race(s: _Story, A: Character) -> None:
    _intro(s, A)
    B = s.character(animal=A.animal)
    s.add(s.pick([f"{A.name} had a friend named {B.name}.",
                  f"{A.His} best friend was {s.described(B)}."]))
    s.add(f"{A.name} and {B.name} both loved to run.")
    goal = s.pick(["the big tree", "the old fence", "the top of the hill", "the red barn",
                   "the end of the path", "the little bridge"])
    s.new_paragraph()
    s.add(f"{s.when()}, {B.name} said, \"Let's have a race to {goal}!\"")
    s.add(s.quote(A.name, "Okay! Ready, set, go!", verb="shouted"))
    s.add("They ran as fast as they could.")
    if s.chance(0.5):
        s.add(f"Halfway there, {B.name} tripped over {s.pick(['a rock', 'a root', 'a stick'])} "
              "and fell down.")
        s.add(s.quote(B.name, s.pick(["Ouch! My knee!", "Ow! That hurts!"]), verb="cried"))
        s.add(f"{A.name} could see {goal} just ahead.",
              f"{A.name} wanted to win, but {A.he} stopped and ran back to {B.name}.")
        s.add(s.quote(A.name, "Are you okay? Let me help you up."))
        s.add(f"{A.name} helped {B.name} stand up, and they walked to {goal} together.")
        s.add(f"Nobody won the race, but {A.name} and {B.name} did not mind.")
        lesson = "being kind is more important than winning"
    else:
        s.add(f"{B.name} was a little faster and reached {goal} first.")
        s.add(f"{A.name} felt {s.feel('sad')} for a moment.", f"But then {A.name} smiled.")
        s.add(s.quote(A.name, f"Good job, {B.name}! You are so fast!"))
        s.add(s.quote(B.name, "Thank you! You are fast too. Let's race again tomorrow!",
                      reply=True))
        lesson = "it is fun to play, even when you do not win"
    s.new_paragraph()
    s.add(s.pick(["Then they sat in the shade and drank cold water.",
                  "Then they went home for a snack.",
                  "Then they lay on the grass and looked at the clouds."]))
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
    flavor = s.pick(["chocolate", "strawberry", "lemon", "vanilla", "carrot", "banana",
                     "apple", "orange", "honey"])
    s.add(f"{G} baked {a(flavor + ' cake')} with {s.pick(COLORS[:9])} frosting.")
    B, C = s.character(animal=A.animal), s.character(animal=A.animal)
    s.add(f"In the afternoon, {B.name} and {C.name} came to the party.")
    game = s.pick(["musical chairs", "hide and seek", "tag", "a guessing game",
                   "pin the tail on the donkey", "a treasure hunt"])
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
    s.add(s.pick(["It was the best birthday ever.",
                  f"That night, {A.name} went to sleep with a happy heart.",
                  f"{A.name} thought it was the best birthday of all."]))


_SOUNDS = {"kitten": "Meow", "cat": "Meow", "squirrel": "Squeak", "bird": "Tweet",
           "robin": "Tweet", "sparrow": "Cheep", "pigeon": "Coo", "duckling": "Quack",
           "chick": "Peep", "lamb": "Baa", "puppy": "Woof", "hedgehog": "Squeak",
           "rabbit": "Squeak", "mouse": "Squeak"}
# (animals that fit, the trouble, how the story solves it)
_HELP_SCENES = [
    (["kitten", "cat", "squirrel"], "stuck high up in a tree",
     ["{G} got a ladder and climbed up slowly.",
      "{G} reached out and gently lifted the {animal} down.",
      "{A} held the {animal} close until it stopped shaking."]),
    (["bird", "robin", "sparrow", "pigeon"], "with a hurt wing",
     ["{A} and {G} put the {animal} in a box with soft grass.",
      "Every day, {A} gave it water and seeds.",
      "After a week, the wing was better, and the {animal} flew up into the sky."]),
    (["duckling", "chick", "lamb", "puppy"], "all alone and calling for its mother",
     ["{A} and {G} looked all around for the {animal}'s mother.",
      "At last, they found the mother {mother} near the {near}.",
      "The little {animal} ran to its mother, and they were both very happy."]),
    (["hedgehog", "rabbit", "mouse"], "caught in an old net",
     ["{G} found some scissors and cut the net very carefully.",
      "{A} held the {animal} still and talked to it softly.",
      "Soon the {animal} was free, and it hurried away into the bushes."]),
    (["puppy", "kitten"], "shivering in the cold rain",
     ["{A} wrapped the {animal} in {his} coat and carried it home.",
      "{G} gave it a warm bath and a bowl of food.",
      "Nobody came to look for it, so the {animal} stayed with {A} for good."]),
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
    s.add(f"Suddenly, {A.name} heard a small sound: \"{sound}! {sound}!\"")
    s.add(f"{A.name} looked around and saw {a(s.pick(['little', 'tiny', 'small']) + ' ' + animal)}"
          f" {trouble}.")
    s.add(s.quote(A.name, f"{G}, look! The poor {animal} needs help!"))
    s.new_paragraph()
    near = s.pick(["pond", "barn", "big tree", "old fence"])
    for line in fix:
        s.add(line.format(A=A.name, G=G, animal=animal, his=A.his, near=near,
                          mother=_MOTHERS.get(animal, animal)))
    s.add(s.quote(G, s.pick([f"You did a good thing today, {A.name}.",
                              f"I am so proud of you for helping, {A.name}."])))
    s.add(s.pick([f"{A.name} felt warm and happy inside.",
                  f"{A.name} smiled all the way home."]))
    _moral(s, A, s.pick(["it is good to be kind to animals",
                         "even a small helper can make a big difference"]))


def _plot_mistake(s: _Story, A: Character) -> None:
    G = s.grownup()
    _intro(s, A)
    s.new_paragraph()
    if s.chance(0.5):
        thing = s.pick(["vase", "teapot", "lamp", "bowl", "cup", "flower pot"])
        s.add(f"{A.name} knew {A.he} should not play ball in the house.")
        if s.day_started:
            s.add(f"But that afternoon it started to rain, so {A.name} bounced {A.his} ball in "
                  "the living room.")
        else:
            s.day_started = True
            s.add(f"But one rainy {s.pick(['day', 'afternoon', 'morning'])}, {A.name} bounced "
                  f"{A.his} ball in the living room.")
        s.add(f"The ball hit {G}'s favorite {thing}. Crash!", f"The {thing} broke into pieces.")
        s.add(f"{A.name} was very {s.feel('scared')}.",
              f"{A.He} hid the pieces under the sofa and ran to {A.his} room.")
        s.add(s.pick(["That night, ", "At dinner, "]) + f"{A.name} could not stop thinking "
              f"about the {thing}.", f"{A.He} felt {s.feel('sorry')} inside.")
        s.new_paragraph()
        s.add(f"At last, {A.name} went to {G}.")
        s.add(s.quote(A.name, f"I am sorry. I broke your {thing}, and I hid the pieces."))
        s.add(s.quote(G, s.pick(["Thank you for telling me the truth. Accidents happen.",
                                  "I am not angry. I am glad you told me the truth."]),
                      reply=True))
        s.add(f"{A.name} and {G} glued the pieces back together.",
              f"The {thing} had a few cracks, but {G} said it was even more special now.")
        _moral(s, A, "telling the truth is always the right thing to do", p=0.6)
    else:
        B = s.character(animal=A.animal)
        obj = s.thing()
        place = s.place(A)
        s.add(f"{s.when()}, {A.name} and {A.his} friend {B.name} were playing {at(place)}.")
        s.add(f"{B.name} had {a(obj)}, and {A.name} wanted it very much.")
        s.add(f"So {A.name} grabbed the {obj} without asking.")
        s.add(s.quote(B.name, s.pick(["Hey! That is mine!", "Give it back!"]),
                      verb=s.pick(["shouted", "cried"])))
        s.add(f"{B.name} started to cry.")
        s.new_paragraph()
        s.add(f"{A.name} looked at {A.his} sad friend and felt {s.feel('sorry')}.")
        s.add(s.quote(A.name, f"I am sorry, {B.name}. I should have asked. Here you go."))
        s.add(f"{A.name} gave the {obj} back.")
        s.add(s.quote(B.name, s.pick(["It is okay. We can play with it together.",
                                       "Thank you. Let's take turns!"]), reply=True))
        s.add(f"{A.name} and {B.name} took turns with the {obj}, and soon they were laughing "
              "again.")
        _moral(s, A, "it is better to ask than to grab", p=0.6)


def _plot_night(s: _Story, A: Character) -> None:
    G = s.grownup()
    _intro(s, A)
    s.add(f"Every night, when {G} turned off the light, {A.name} felt a little "
          f"{s.feel('scared')}.")
    noise, cause, short = s.pick([
        ("Tap, tap, tap", "a branch tapping on the window", "a branch"),
        ("Scratch, scratch", "the cat playing with a ball of yarn", "the cat"),
        ("Drip, drop, drip", "rain falling on the roof", "the rain"),
        ("Hoo, hoo", "an owl sitting in the tree outside", "an owl"),
        ("Tick, tock, tick", "the old clock in the hall", "the clock"),
        ("Squeak, squeak", "a little mouse nibbling a crumb", "a little mouse"),
    ])
    s.new_paragraph()
    s.day_started = True
    s.add(f"One night, {A.name} heard a strange noise. {noise}!")
    s.add(f"{A.He} pulled the blanket over {A.his} head.")
    s.add(f"The noise came again. {noise}!")
    s.add(s.quote(A.name, f"{G}! Come quick!"))
    s.add(f"{G} came in and turned on the lamp.")
    s.add(s.quote(G, "What is wrong?"))
    s.add(s.quote(A.name, "I heard a noise. I think it is a monster!", verb="whispered"))
    s.add(f"{A.name} and {G} looked around the room together.",
          f"It was not a monster at all. It was just {cause}!")
    s.add(f"{A.name} began to laugh.", s.quote(A.name, f"It was only {short}!"))
    s.new_paragraph()
    light = s.pick(["a star", "a moon", "a duck", "a fish", "an owl"])
    s.add(f"{G} gave {A.name} a little night light shaped like {light}.")
    s.add(s.quote(G, s.pick(["There is nothing to be scared of. I am right next door.",
                              "The dark is just the same room, only sleepy."])))
    s.add(f"{A.name} closed {A.his} eyes and fell fast asleep.")
    s.add(s.pick([f"From then on, {A.name} was not afraid of the dark anymore.",
                  f"{A.name} slept well all night long."]))


def _plot_baking(s: _Story, A: Character) -> None:
    G = s.grownup()
    flavor = s.pick(["chocolate", "banana", "lemon", "apple", "honey", "oat", "orange",
                     "berry", "ginger"])
    treat = s.pick(["cookies", "cupcakes", "muffins", "pancakes", "biscuits", "buns"])
    _intro(s, A)
    s.new_paragraph()
    s.add(f"{s.when()}, {A.name} and {G} decided to bake {flavor} {treat}.")
    s.add("They got out the flour, the sugar, the eggs and the butter.")
    s.add(f"{A.name} cracked the eggs into a big bowl, and {G} helped {A.him} stir.")
    if s.chance(0.6):
        s.add(f"{A.name} stirred so fast that flour flew everywhere!",
              f"There was flour on {A.his} nose and on the floor.")
        s.add(f"{A.name} and {G} looked at each other and laughed.")
    s.add(f"They put the {treat} in the oven and waited.",
          "Soon the kitchen smelled sweet and warm.")
    s.add(f"When the {treat} were ready, they were {s.pick(['golden', 'soft', 'warm'])} and "
          f"{s.pick(['yummy', 'delicious', 'perfect'])}.")
    s.new_paragraph()
    B = s.character()
    s.add(f"{A.name} put some {treat} on a plate and took them to {A.his} friend {B.name}.")
    s.add(s.quote(B.name, f"These are the best {treat} I have ever tasted!"))
    s.add(s.pick([f"{A.name} smiled. Baking was fun, but sharing was even better.",
                  f"{A.name} was very proud. {A.He} had baked them all by {A.himself}, "
                  f"with a little help from {G}."]))
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
    s.add(f"{A.name} dug a little hole in the garden and put the seed inside.",
          f"{A.He} covered it with soil and gave it some water.")
    s.add(f"The next day, {A.name} ran outside to look, but nothing was there.")
    s.add(s.quote(A.name, "Why is it not growing?"))
    s.add(s.quote(G, s.pick(["Be patient. Good things take time.",
                              "Seeds need time, water and sun. Wait and see."]), reply=True))
    s.new_paragraph()
    s.add(f"So {A.name} waited and waited.", f"Every day, {A.he} gave the seed some water.")
    s.add(f"Then one morning, {A.name} saw a tiny green shoot!")
    s.add(s.quote(A.name, f"{G}! Come and look!", pronoun=None))
    s.add("The little plant grew taller and taller.",
          f"Soon {_PLANTS[plant].format(A=A.name)}.")
    s.add(s.pick([f"{A.name} was so {s.feel('good')}.",
                  f"{A.name} clapped {A.his} hands with joy."]))
    if plant in ("tomato", "strawberry", "carrot", "pea", "bean"):
        s.add(f"{A.name} and {G} shared the {plural(plant)} with all the neighbors.")
    _moral(s, A, "good things take time", p=0.5)


def _plot_treasure(s: _Story, A: Character) -> None:
    _intro(s, A)
    B = s.character(animal=A.animal)
    s.new_paragraph()
    where = "under a flat rock" if A.animal else s.pick(["in Grandpa's old attic",
                                                         "inside an old book",
                                                         "under a flat rock"])
    s.add(f"{s.when()}, {A.name} found an old map {where}.")
    s.add("The map had a big red X on it.")
    s.add(f"{A.name} ran to show the map to {A.his} friend {B.name}.")
    s.add(s.quote(B.name, s.pick(["A treasure map! Let's follow it!",
                                   "Wow! Maybe there is treasure!"])))
    a1 = s.pick(["the big oak tree", "the old barn", "a field of flowers", "the apple trees"])
    a2 = s.pick(["the little bridge", "a fallen log", "a small stream", "a tall hill"])
    a3 = s.pick(["the pond", "a big rock", "the old well", "a thick hedge"])
    s.add(f"{A.name} and {B.name} walked past {a1}, over {a2}, and around {a3}.")
    s.add("At last, they found the spot with the X.",
          "They dug and dug until they hit something hard.")
    s.add(s.pick(["It was a small wooden box!", "It was an old tin box!"]))
    s.new_paragraph()
    inside = s.rng.sample(["shiny stones", "old coins", "pretty shells", "colored marbles",
                           "tiny toy animals", "golden buttons"], 2)
    s.add(f"Inside, there were {inside[0]}, {inside[1]} and a little note.")
    s.add(f"{A.name} read the note out loud: \"The best treasure is a good friend.\"")
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
    meta = {"plot": name, "opening": s.opening, "characters": [c.meta() for c in s.cast],
            "grownups": list(s.grownups)}
    return text, meta


def stories(seed: int, n: int | None = None, return_meta: bool = False) -> Iterator:
    """The stories of one seed, in order; infinite when n is None."""
    rng = random.Random(seed)
    i = 0
    while n is None or i < n:
        yield generate_story(rng, return_meta=return_meta)
        i += 1


def train_stories(n: int | None = None) -> Iterator[str]:
    return stories(TRAIN_SEED, n)


def valid_stories(n: int | None = None) -> Iterator[str]:
    return stories(VALID_SEED, n)


def write_stories(path: str | Path, n: int, seed: int = TRAIN_SEED) -> Path:
    """Write n stories to a text file, separated by blank lines (read_text_file reads them
    back one per document). Useful for training a tokenizer or for `train --text`."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for story in stories(seed, n):
            f.write(story + "\n\n")
    return path


def estimate_tokens(words: int, tokens_per_word: float = 1.3) -> int:
    """Tokens a word count becomes, punctuation included. On this corpus a SentencePiece BPE
    with Llama 2's settings gives 1.32 tokens/word at vocab 2048 and 1.23 at vocab 4096."""
    return int(words * tokens_per_word)


def corpus_stats(n: int = 2000, seed: int = TRAIN_SEED, tokens_per_word: float = 1.3) -> dict:
    """Size and speed of the first n stories of a seed, and what a token budget needs.

    'stories_for_10M_tokens' says how many stories give ten million tokens (estimated).
    """
    t0 = time.perf_counter()
    texts = list(stories(seed, n))
    seconds = time.perf_counter() - t0
    words = sum(len(t.split()) for t in texts)
    chars = sum(len(t) for t in texts)
    tokens = estimate_tokens(words, tokens_per_word)
    return {
        "stories": n, "unique_stories": len(set(texts)), "words": words, "chars": chars,
        "avg_words": words / n, "min_words": min(len(t.split()) for t in texts),
        "max_words": max(len(t.split()) for t in texts), "est_tokens": tokens,
        "seconds": seconds, "stories_per_s": n / seconds, "words_per_s": words / seconds,
        "stories_for_10M_tokens": int(10_000_000 / (tokens / n)),
    }


# --------------------------------------------------------------------------------------------
# A user's own text file (`llama2-lab train --text FILE`)
# --------------------------------------------------------------------------------------------

DOC_DELIMITER = "<|endoftext|>"


class TextFileError(ValueError):
    """A text file that cannot be used for training; the message says why and what to do."""


def read_text_file(path: str | Path, delimiter: str | None = None) -> Iterator[str]:
    """The documents of a plain UTF-8 text file, checked up front.

    Documents are separated by `delimiter` if given, else by "<|endoftext|>" when the file
    contains it, else by blank lines. Each document is stripped; empty ones are dropped.
    Errors (missing file, a directory, empty file, bytes that are not UTF-8) are raised here,
    at the call, not on the first next(). The whole file is read into memory.
    """
    path = Path(path)
    if not path.exists():
        raise TextFileError(f"text file not found: {path}")
    if path.is_dir():
        raise TextFileError(f"{path} is a directory; give the path of one plain text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TextFileError(
            f"{path} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
            f"(line {line}) cannot be decoded. Re-encode the file as UTF-8, for example "
            f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt`.") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    docs = split_documents(text, delimiter)
    if not docs:
        raise TextFileError(f"{path} is empty: it has no text to train on")
    return iter(docs)


def split_documents(text: str, delimiter: str | None = None) -> list[str]:
    """Split text into stripped, non-empty documents (see read_text_file for the rule)."""
    if delimiter is None and DOC_DELIMITER in text:
        delimiter = DOC_DELIMITER
    parts = text.split(delimiter) if delimiter else re.split(r"\n[ \t]*\n", text)
    return [p.strip() for p in parts if p.strip()]


def text_documents(path: str | Path, delimiter: str | None = None) -> list[str]:
    """read_text_file as a list."""
    return list(read_text_file(path, delimiter))


def split_train_valid(docs: Sequence[str], valid_fraction: float = 0.05,
                      seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out a seeded random `valid_fraction` of the documents (at least one).

    Both parts keep the documents' original order. A single document is cut in two at the
    whitespace nearest the split point, so a file without blank lines still works.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    docs = list(docs)
    if not docs:
        raise ValueError("no documents to split")
    if len(docs) == 1:
        text = docs[0]
        cut = int(len(text) * (1 - valid_fraction))
        space = text.rfind(" ", 0, cut)
        cut = space if space > 0 else cut
        train, valid = text[:cut].strip(), text[cut:].strip()
        if not train or not valid:
            raise ValueError("the text is too short to hold out a validation part")
        return [train], [valid]
    n_valid = min(len(docs) - 1, max(1, round(len(docs) * valid_fraction)))
    held = set(random.Random(seed).sample(range(len(docs)), n_valid))
    train = [d for i, d in enumerate(docs) if i not in held]
    valid = [d for i, d in enumerate(docs) if i in held]
    return train, valid


# --------------------------------------------------------------------------------------------
# Packing tokens for pretraining
# --------------------------------------------------------------------------------------------

def pack_documents(token_lists: Iterable[Sequence[int]], seq_len: int, bos_id: int | None = 1,
                   eos_id: int | None = 2, drop_last: bool = True) -> Iterator[list[int]]:
    """Concatenate BOS + doc + EOS for every doc and cut the stream into seq_len + 1 chunks.

    Each chunk gives inputs chunk[:-1] and targets chunk[1:] (T = seq_len of each). Consecutive
    chunks overlap by one token (the last target of one chunk is the first input of the
    next), so every token of the stream after the first is a target exactly once and none is
    lost. The tail shorter than seq_len + 1 is dropped unless drop_last=False.
    Pass bos_id=None or eos_id=None to leave that marker out.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    size = seq_len + 1
    buf: list[int] = []
    start = 0  # buf[start:] is what has not been emitted yet
    for toks in token_lists:
        if bos_id is not None:
            buf.append(bos_id)
        buf.extend(toks)
        if eos_id is not None:
            buf.append(eos_id)
        while len(buf) - start >= size:
            yield buf[start:start + size]
            start += seq_len  # keep the chunk's last token as the next chunk's first
        if start > 65536:  # drop what was emitted, so the buffer stays small
            buf, start = buf[start:], 0
    if not drop_last and len(buf) - start > 1:
        yield buf[start:]


def chunk_tensor(token_lists: Iterable[Sequence[int]], seq_len: int, bos_id: int | None = 1,
                 eos_id: int | None = 2):
    """All packed chunks as one LongTensor of shape (N, seq_len + 1)."""
    import torch

    chunks = list(pack_documents(token_lists, seq_len, bos_id, eos_id))
    if not chunks:
        raise ValueError(f"not enough tokens for one chunk of {seq_len + 1}")
    return torch.tensor(chunks, dtype=torch.long)  # (N, T+1)


def batches(chunks, batch_size: int, seed: int = 0, epochs: int | None = None):
    """Seeded random batches of rows of `chunks` (N, T+1), each a LongTensor (B, T+1).

    Rows are visited in a fresh random order every epoch (torch.Generator seeded once, so the
    same seed gives the same batches). Infinite when epochs is None; otherwise stops after
    `epochs` passes, dropping a last batch shorter than batch_size.
    """
    import torch

    n = chunks.shape[0]
    gen = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    epoch = 0
    while True:
        while len(pending) < batch_size:
            if epochs is not None and epoch >= epochs:
                return
            pending = torch.cat([pending, torch.randperm(n, generator=gen)])
            epoch += 1
        idx, pending = pending[:batch_size], pending[batch_size:]
        yield chunks[idx]  # (B, T+1)


def split_batch(batch):
    """(B, T+1) -> inputs (B, T) and targets (B, T), shifted by one."""
    return batch[:, :-1], batch[:, 1:]
