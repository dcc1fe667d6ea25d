"""The story generator's vocabulary: names, nouns, verbs, places, feelings, and the small grammar
helpers that inflect them (plural, a/an, past tense, -ing). Pure data tables, apart from the logic."""

from __future__ import annotations

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
    "ball",
    "kite",
    "doll",
    "teddy bear",
    "toy car",
    "toy train",
    "toy boat",
    "toy robot",
    "yo-yo",
    "puzzle",
    "drum",
    "whistle",
    "jump rope",
    "spinning top",
    "marble",
    "crayon",
    "paintbrush",
    "book",
    "storybook",
    "hat",
    "scarf",
    "necklace",
    "bracelet",
    "ring",
    "hair clip",
    "ribbon",
    "backpack",
    "lunch box",
    "water bottle",
    "umbrella",
    "blanket",
    "pillow",
    "stuffed bunny",
    "stuffed elephant",
    "toy dinosaur",
    "wooden horse",
    "balloon",
    "bubble wand",
    "feather",
    "badge",
    "medal",
    "coin",
    "key",
    "flashlight",
    "basket",
    "bucket",
    "shovel",
    "notebook",
    "pencil",
    "pencil case",
    "sticker",
    "music box",
    "toy piano",
    "harmonica",
    "flute",
    "tambourine",
    "bell",
    "magnifying glass",
    "watch",
    "cape",
    "crown",
    "wand",
    "kazoo",
    "toy plane",
    "toy truck",
    "rubber duck",
    "jigsaw",
    "sock monkey",
    "glove",
    "slipper",
    "boot",
    "sweater",
    "jacket",
    "raincoat",
    "pebble",
]
# Foods that come in handfuls, so "five cookies" and "one cookie" both read well, grouped
# with the adjectives that suit them ("juicy pears", never "sticky pears").
_FOOD_GROUPS = [
    (
        "juicy ripe fresh sweet yummy",
        "apple banana orange pear peach plum cherry strawberry grape mango melon apricot fig "
        "blueberry raspberry tomato",
    ),
    ("crunchy fresh tasty yummy", "carrot cracker pretzel cucumber nut"),
    (
        "warm soft golden yummy tasty delicious big",
        "cookie cupcake muffin pie sandwich pancake waffle donut bun bagel biscuit",
    ),
    ("sweet sticky yummy colorful", "lollipop popsicle jelly bean"),
]
FOOD_ADJECTIVES_FOR = {food: adjectives.split() for adjectives, foods in _FOOD_GROUPS for food in foods.split()}
FOOD_ADJECTIVES_FOR.update(
    {
        "cinnamon roll": ["warm", "sticky", "sweet"],
        "gingerbread man": ["spicy", "yummy", "little"],
        "chocolate bar": ["sweet", "big", "yummy"],
        "granola bar": ["crunchy", "tasty"],
        "candy cane": ["sweet", "striped", "sticky"],
    }
)
FOODS = list(FOOD_ADJECTIVES_FOR)
FOOD_ADJECTIVES = sorted({adj for adjs in FOOD_ADJECTIVES_FOR.values() for adj in adjs})
# Animals met in stories (helped, seen at the zoo, on the farm...).
ANIMALS = [
    "cat",
    "dog",
    "puppy",
    "kitten",
    "bunny",
    "rabbit",
    "bird",
    "duck",
    "duckling",
    "chick",
    "hen",
    "rooster",
    "goose",
    "owl",
    "frog",
    "toad",
    "turtle",
    "fish",
    "goldfish",
    "snail",
    "worm",
    "ladybug",
    "butterfly",
    "bee",
    "caterpillar",
    "ant",
    "spider",
    "grasshopper",
    "squirrel",
    "chipmunk",
    "mouse",
    "hedgehog",
    "fox",
    "bear",
    "deer",
    "wolf",
    "raccoon",
    "beaver",
    "otter",
    "badger",
    "mole",
    "bat",
    "horse",
    "pony",
    "cow",
    "pig",
    "sheep",
    "lamb",
    "goat",
    "donkey",
    "llama",
    "lion",
    "tiger",
    "elephant",
    "monkey",
    "giraffe",
    "zebra",
    "hippo",
    "rhino",
    "kangaroo",
    "koala",
    "panda",
    "penguin",
    "seal",
    "dolphin",
    "whale",
    "crab",
    "starfish",
    "octopus",
    "parrot",
    "peacock",
    "swan",
    "robin",
    "sparrow",
    "eagle",
    "crow",
    "pigeon",
    "seagull",
    "dragonfly",
    "firefly",
    "lizard",
    "snake",
    "moose",
    "calf",
    "bull",
    "flamingo",
    "camel",
    "gorilla",
    "puffin",
    "jellyfish",
    "beetle",
    "moth",
]
PLACES = [
    "park",
    "garden",
    "beach",
    "playground",
    "backyard",
    "meadow",
    "forest",
    "lake",
    "river",
    "pond",
    "farm",
    "zoo",
    "aquarium",
    "museum",
    "library",
    "school",
    "bakery",
    "market",
    "toy shop",
    "candy shop",
    "ice cream shop",
    "circus",
    "fair",
    "castle",
    "island",
    "mountain",
    "hill",
    "valley",
    "village",
    "town",
    "city",
    "jungle",
    "cave",
    "camp",
    "harbor",
    "train station",
    "airport",
    "swimming pool",
    "bridge",
    "lighthouse",
    "barn",
    "orchard",
    "field",
    "house",
    "street",
    "kitchen",
    "bedroom",
    "classroom",
    "shed",
]
NATURE = [
    "tree",
    "flower",
    "rock",
    "stone",
    "cloud",
    "leaf",
    "bush",
    "branch",
    "log",
    "stick",
    "puddle",
    "rainbow",
    "sun",
    "moon",
    "star",
    "snowflake",
    "snowman",
    "sandcastle",
    "seashell",
    "wave",
    "pinecone",
    "mushroom",
    "seed",
    "nest",
    "hole",
    "path",
    "fence",
    "gate",
    "bench",
    "swing",
    "slide",
    "sandbox",
    "sprinkler",
    "hose",
    "wagon",
    "wheelbarrow",
    "daisy",
    "rose",
    "tulip",
    "sunflower",
    "dandelion",
    "daffodil",
    "lily",
    "oak tree",
    "pine tree",
    "apple tree",
    "stream",
    "waterfall",
    "hay bale",
    "scarecrow",
]
HOUSEHOLD = [
    "bed",
    "chair",
    "table",
    "door",
    "window",
    "cup",
    "plate",
    "bowl",
    "spoon",
    "vase",
    "lamp",
    "clock",
    "mirror",
    "box",
    "bag",
    "shelf",
    "drawer",
    "closet",
    "sofa",
    "rug",
    "jar",
    "pot",
    "pan",
    "oven",
    "bathtub",
    "towel",
    "toothbrush",
    "sock",
    "shoe",
    "coat",
    "dress",
    "shirt",
    "cap",
    "bike",
    "scooter",
    "car",
    "bus",
    "train",
    "boat",
    "plane",
    "truck",
    "tractor",
    "present",
    "gift",
    "card",
    "letter",
    "picture",
    "game",
    "party",
    "song",
    "map",
    "treasure chest",
    "candle",
    "tent",
    "sleeping bag",
    "teapot",
    "kettle",
]
PEOPLE = [
    "mom",
    "dad",
    "grandma",
    "grandpa",
    "friend",
    "teacher",
    "baker",
    "farmer",
    "neighbor",
    "sister",
    "brother",
    "aunt",
    "uncle",
    "cousin",
    "girl",
    "boy",
    "man",
    "woman",
    "lady",
    "king",
    "queen",
    "prince",
    "princess",
    "doctor",
    "pilot",
    "captain",
    "zookeeper",
    "child",
    "baby",
    "family",
]

# Plurals: the regular rule, plus the words it gets wrong.
_IRREGULAR_PLURALS = {
    "mouse": "mice",
    "goose": "geese",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "goldfish": "goldfish",
    "moose": "moose",
    "wolf": "wolves",
    "leaf": "leaves",
    "calf": "calves",
    "shelf": "shelves",
    "scarf": "scarves",
    "child": "children",
    "man": "men",
    "woman": "women",
    "tomato": "tomatoes",
    "mango": "mangoes",
    "potato": "potatoes",
    "gingerbread man": "gingerbread men",
    "octopus": "octopuses",
    "volcano": "volcanoes",
    "hero": "heroes",
    "jellyfish": "jellyfish",
    "starfish": "starfish",
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


NOUNS: dict[str, str] = {n: plural(n) for n in TOYS + FOODS + ANIMALS + PLACES + NATURE + HOUSEHOLD + PEOPLE}

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
    VERBS[_base] = _past or (
        _base + "d"
        if _base.endswith("e")
        else _base[:-1] + "ied"
        if _base.endswith("y") and _base[-2] not in "aeiou"
        else _base + "ed"
    )
_DOUBLE_FINAL = {
    "run",
    "swim",
    "sit",
    "put",
    "cut",
    "let",
    "hit",
    "win",
    "begin",
    "dig",
    "spin",
    "forget",
    "get",
    "hop",
    "skip",
    "nod",
    "clap",
    "grin",
    "hug",
    "stop",
    "drop",
    "grab",
    "pat",
    "rub",
    "wag",
    "tap",
    "sip",
    "trip",
    "jog",
    "stir",
    "nap",
    "shop",
    "chat",
    "plan",
    "hum",
    "wrap",
    "unwrap",
    "sob",
}


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
    "sing songs",
    "blow bubbles",
    "chase butterflies",
    "pick flowers",
    "look at the clouds",
    "dance in the sun",
    "hunt for bugs",
    "collect pretty leaves",
    "watch the birds",
    "jump over sticks",
    "hum happy songs",
    "look for shiny stones",
    "splash in puddles",
    "bounce a ball",
    "make mud pies",
    "twirl around",
    "hop around",
    "build a little fort",
    "draw pictures in the dirt",
    "search for treasure",
    "wander along the path",
    "count the birds",
    "pretend to be a pirate",
    "pretend to be a dinosaur",
    "climb trees",
]
GROUP_ACTIVITIES = [
    "play tag",
    "play hide and seek",
    "play catch",
    "tell funny jokes",
    "make funny faces",
    "pretend to be pirates",
    "pretend to be dinosaurs",
    "chase each other",
    "race each other",
    "make crowns out of flowers",
    "play a guessing game",
    "march like soldiers",
    "build a little fort",
    "search for treasure",
    "sing songs",
    "blow bubbles",
    "chase butterflies",
    "look at the clouds",
    "hunt for bugs",
    "climb trees",
    "hop around",
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
    ("count to one hundred", "{he} kept forgetting what came after thirty", "{he} counted all the way to one hundred"),
    ("make a paper boat", "the paper tore", "{he} made a boat that floated in the bath"),
    ("button {his} coat", "the buttons went in the wrong holes", "{he} buttoned every button"),
    ("kick the ball into the goal", "the ball rolled the wrong way", "the ball flew right into the goal"),
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
WEATHER_ADJECTIVES = _words("sunny warm bright windy cloudy cold chilly lovely beautiful clear breezy crisp hot gray")
PLACE_ADJECTIVES = _words(
    "big small quiet busy green pretty peaceful old little friendly colorful shady sleepy tiny lovely"
)
ADJECTIVES = sorted(
    set(
        CHILD_ADJECTIVES
        + ANIMAL_ADJECTIVES
        + THING_ADJECTIVES
        + FOOD_ADJECTIVES
        + FEELINGS
        + WEATHER_ADJECTIVES
        + PLACE_ADJECTIVES
        + _words(
            "tall short long wide deep dark heavy light loud wet dry "
            "muddy sandy rocky hungry tired thirsty sick hurt stuck lost "
            "funny strange wonderful magic fast slow"
        )
    )
)

SAY_VERBS = ["said", "said", "said", "said", "whispered"]
REPLY_VERBS = ["said", "said", "replied", "answered"]
EXCLAIM_VERBS = ["said", "shouted", "exclaimed", "called", "said"]

# Places to play: where a lost thing can hide, and what one does there.
PLACE_INFO = {
    "the park": (
        [
            "under a bench",
            "behind a big tree",
            "near the pond",
            "in the tall grass",
            "under a pile of leaves",
            "by the fountain",
        ],
        [
            "swing on the swings",
            "feed the ducks",
            "fly a kite",
            "roll down the hill",
            "kick a ball",
            "chase the pigeons",
        ],
    ),
    "the garden": (
        [
            "under a bush",
            "behind the flower pots",
            "next to the shed",
            "in the vegetable patch",
            "under the big sunflowers",
            "by the fence",
        ],
        ["pick flowers", "water the plants", "hunt for bugs", "make mud pies", "watch the bees", "look for ladybugs"],
    ),
    "the beach": (
        [
            "under a towel",
            "behind a sandcastle",
            "near the rocks",
            "in a hole in the sand",
            "by the lifeguard chair",
            "under a beach umbrella",
        ],
        [
            "build a sandcastle",
            "dig in the sand",
            "splash in the waves",
            "collect shells",
            "fly a kite",
            "look for crabs",
        ],
    ),
    "the playground": (
        [
            "under the slide",
            "near the swings",
            "in the sandbox",
            "behind the fence",
            "under the climbing frame",
            "by the seesaw",
        ],
        [
            "swing on the swings",
            "slide down the slide",
            "climb the climbing frame",
            "play hopscotch",
            "dig in the sandbox",
            "spin on the merry-go-round",
        ],
    ),
    "the backyard": (
        [
            "under the porch",
            "behind the shed",
            "in the doghouse",
            "near the fence",
            "under the old wagon",
            "in the tall grass",
        ],
        [
            "kick a ball",
            "run through the sprinkler",
            "blow bubbles",
            "make mud pies",
            "swing on the tire swing",
            "play with the dog",
        ],
    ),
    "the meadow": (
        [
            "behind a big rock",
            "under a bush",
            "in the tall grass",
            "near a little stream",
            "under a pile of leaves",
            "by a hollow log",
        ],
        [
            "chase butterflies",
            "pick flowers",
            "roll in the grass",
            "hop in the tall grass",
            "look at the clouds",
            "sniff the flowers",
        ],
    ),
    "the field": (
        [
            "behind a hay bale",
            "under a bush",
            "near the old fence",
            "in the tall grass",
            "by the scarecrow",
            "next to a big rock",
        ],
        [
            "run through the grass",
            "chase butterflies",
            "jump over the hay bales",
            "look at the clouds",
            "roll down the little hill",
            "play near the scarecrow",
        ],
    ),
    "the pond": (
        [
            "under a lily pad",
            "behind some reeds",
            "near the big rock",
            "in the mud by the water",
            "under a log",
            "by the little bridge",
        ],
        [
            "splash in the water",
            "watch the frogs",
            "look at the fish",
            "float on a leaf",
            "chase the dragonflies",
            "sit in the sun",
        ],
    ),
}
_IN_PLACES = {"the garden", "the backyard", "the meadow", "the field"}


def at(place: str) -> str:
    """'at the park', 'in the garden'."""
    return ("in " if place in _IN_PLACES else "at ") + place


HUMAN_PLACES = ["the park", "the garden", "the beach", "the playground", "the backyard"]
ANIMAL_PLACES = ["the meadow", "the field", "the pond", "the meadow", "the garden"]

# Trips: destination -> (how they get there, things seen (plural nouns), things done).
TRIPS = {
    "the zoo": (
        ["by bus", "in the car", "by train"],
        [
            "lions",
            "elephants",
            "giraffes",
            "monkeys",
            "zebras",
            "penguins",
            "tigers",
            "hippos",
            "kangaroos",
            "flamingos",
            "gorillas",
            "camels",
        ],
        ["fed the goats", "watched the seals play", "rode on a little train", "laughed at the silly monkeys"],
    ),
    "the beach": (
        ["in the car", "by bus", "by train"],
        ["seagulls", "crabs", "seashells", "big waves", "boats", "starfish"],
        [
            "built a sandcastle",
            "splashed in the waves",
            "collected shells",
            "ate ice cream by the water",
            "dug a deep hole in the sand",
        ],
    ),
    "the farm": (
        ["in the car", "in a truck", "by bus"],
        ["cows", "pigs", "sheep", "horses", "hens", "ducks", "goats", "tractors"],
        ["fed the chickens", "picked apples", "rode a pony", "milked a cow", "jumped in the hay"],
    ),
    "the lake": (
        ["in the car", "on their bikes", "by bus"],
        ["ducks", "swans", "fish", "boats", "frogs", "dragonflies"],
        [
            "rowed a little boat",
            "fed the ducks",
            "had a picnic on the grass",
            "threw stones into the water",
            "went fishing from a little dock",
        ],
    ),
    "the forest": (
        ["on foot", "in the car", "on their bikes"],
        ["squirrels", "tall trees", "mushrooms", "birds", "deer", "pinecones"],
        [
            "followed a little path",
            "built a fort out of sticks",
            "listened to the birds sing",
            "looked for animal tracks",
            "had lunch by a stream",
        ],
    ),
    "the aquarium": (
        ["by bus", "by train", "in the car"],
        ["fish", "sharks", "turtles", "octopuses", "jellyfish", "seals"],
        [
            "touched a starfish",
            "watched the penguins swim",
            "looked through the big glass wall",
            "saw a show with dolphins",
        ],
    ),
    "the mountains": (
        ["in the car", "by train"],
        ["goats", "eagles", "waterfalls", "tall pine trees", "rocks"],
        ["climbed a steep path", "had a picnic at the top", "threw snowballs", "looked down at the tiny houses below"],
    ),
    "the museum": (
        ["by bus", "by train", "in the car"],
        ["dinosaur bones", "old coins", "paintings", "statues", "rockets"],
        [
            "looked at a giant dinosaur",
            "drew a picture of a rocket",
            "learned about the stars",
            "bought a little toy in the shop",
        ],
    ),
    "the fair": (
        ["in the car", "by bus", "on foot"],
        ["clowns", "balloons", "ponies", "jugglers", "bright lights"],
        ["rode the merry-go-round", "ate pink cotton candy", "won a little prize", "went on the big wheel"],
    ),
    "the city": (
        ["by train", "by bus"],
        ["tall buildings", "busy streets", "buses", "pigeons", "shops"],
        [
            "rode in a big red bus",
            "visited a toy shop",
            "fed the pigeons in the square",
            "ate noodles at a little cafe",
        ],
    ),
}


# --------------------------------------------------------------------------------------------
# Characters and the story being written
# --------------------------------------------------------------------------------------------
