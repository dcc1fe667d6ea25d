"""Tests for llama2_lab.corpora.stories: the story generator, text files, and token packing."""

import itertools
import random
import re

import pytest
import torch

from llama2_lab.corpora import stories as data

N_CHECK = 300  # stories checked for grammar; generating them takes ~0.1 s


@pytest.fixture(scope="module")
def sample():
    return list(data.stories(123, N_CHECK, return_meta=True))


# ---- determinism and disjoint streams --------------------------------------------------------


def test_same_seed_same_stories():
    assert list(data.stories(5, 50)) == list(data.stories(5, 50))
    assert data.generate_story(random.Random(9)) == data.generate_story(random.Random(9))


def test_global_rng_untouched():
    random.seed(0)
    expected = random.random()
    random.seed(0)
    list(data.stories(1, 20))
    assert random.random() == expected


def test_stories_infinite_and_prefix():
    assert list(itertools.islice(data.stories(3), 10)) == list(data.stories(3, 10))


def test_train_and_valid_streams_disjoint():
    train = set(data.train_stories(2000))
    valid = list(data.valid_stories(500))
    assert data.TRAIN_SEED != data.VALID_SEED
    assert sum(v in train for v in valid) == 0
    assert len(train) == 2000  # no exact duplicates inside a stream either


@pytest.mark.slow
def test_valid_not_in_first_20k_train():
    # ~10 s: 0 of 5,000 validation stories are among the first 20,000 training stories
    train = set(data.train_stories(20_000))
    assert len(train) == 20_000
    assert sum(v in train for v in data.valid_stories(5000)) == 0


# ---- vocabulary --------------------------------------------------------------------------


def test_vocabulary_sizes():
    names = set(data.GIRL_NAMES) | set(data.BOY_NAMES)
    assert len(names) == len(data.GIRL_NAMES) + len(data.BOY_NAMES)  # no name in both lists
    assert len(data.GIRL_NAMES) >= 100 and len(data.BOY_NAMES) >= 100
    assert len(data.NOUNS) >= 350
    assert len(data.VERBS) >= 200
    assert len(data.ADJECTIVES) >= 150
    assert len(data.PLOTS) >= 10


def test_plurals_and_articles():
    assert data.plural("box") == "boxes" and data.plural("cherry") == "cherries"
    assert data.plural("toy car") == "toy cars" and data.plural("mouse") == "mice"
    assert data.plural("day") == "days" and data.plural("leaf") == "leaves"
    assert data.a("orange ball") == "an orange ball" and data.a("red ball") == "a red ball"
    assert data.a("unicorn") == "a unicorn" and data.a("umbrella") == "an umbrella"
    assert data.past("ride my bike") == "rode my bike" and data.ing("swim") == "swimming"
    assert data.ing("make a cake") == "making a cake" and data.past("hop") == "hopped"
    assert [data.ing(v) for v in ("swing", "hum", "picnic", "see")] == ["swinging", "humming", "picnicking", "seeing"]


def test_every_verb_phrase_conjugates():
    phrases = data.SOLO_ACTIVITIES + data.GROUP_ACTIVITIES
    phrases += [act for _, acts in data.PLACE_INFO.values() for act in acts]
    for phrase in phrases:
        assert phrase.split()[0] in data.VERBS, phrase


# ---- grammar, checked mechanically on a few hundred stories -------------------------------------


def _an_is_right(word):
    """Independent of data.a(): first letter, plus the few words that sound otherwise."""
    w = word.lower()
    if w.startswith(("uni", "use", "usu", "one", "eu")):
        return False
    if w.startswith(("hour", "honest")):
        return True
    return w[0] in "aeiou"


def test_a_an_agreement(sample):
    for text, _ in sample:
        for article, word in re.findall(r"\b(a|an|A|An) ([A-Za-z-]+)", text):
            assert (article.lower() == "an") == _an_is_right(word), (article, word, text)


def test_surface_form(sample):
    for text, _ in sample:
        assert text.isascii(), text
        assert "  " not in text and " ," not in text and " ." not in text, text
        assert "\n\n" not in text and text == text.strip()
        assert text[-1] in '.!?"', text
        assert 80 <= len(text.split()) <= 250, len(text.split())
        assert not re.search(r"\b(\w+) \1\b", text.lower()), re.search(r"\b(\w+) \1\b", text)
        assert text.count('"') % 2 == 0, text
        # every sentence starts with a capital letter (after ". ", "! ", "? ")
        assert not re.search(r"[.!?] [a-z]", text), re.search(r"[.!?] [a-z].{20}", text)
        assert "{" not in text and "}" not in text


def test_agreement(sample):
    bad = re.compile(
        r"\b(he|she|it) (are|were|have)\b|\b(they|we|you) (is|was|has)\b"
        r"|\bI (is|are)\b",
        re.IGNORECASE,
    )
    for text, _ in sample:
        assert not bad.search(text), bad.search(text)


def test_openings(sample):
    texts = [t for t, _ in sample]
    once = sum(t.startswith("Once upon a time") for t in texts)
    assert once / len(texts) > 0.3  # the most common opening; the demo prompt uses it
    assert once < len(texts) * 0.7
    firsts = {" ".join(t.split()[:2]) for t in texts}
    assert len(firsts) >= 8
    assert len({m["plot"] for _, m in sample}) == len(data.PLOTS)


_MALE = {"he", "him", "his", "himself"}
_FEMALE = {"she", "her", "hers", "herself"}


def _referents(sentence, genders):
    """Genders of the characters named in a sentence, in order."""
    words = re.findall(r"[A-Za-z]+", sentence)
    return [genders[w] for w in words if w in genders]


def test_pronouns_agree_with_characters(sample):
    """Outside dialogue, a he/she word needs a character of that gender in its own or the
    previous sentence; and in a sentence that names one character only, every pronoun is
    that character's."""
    checked = 0
    for text, meta in sample:
        genders = {c["name"]: c["gender"] for c in meta["characters"]}
        genders.update(data.GROWNUPS)
        narration = re.sub(r'"[^"]*"', " ", text)  # drop what characters say
        sentences = re.split(r"(?<=[.!?])\s+", narration)
        prev = set()
        for sentence in sentences:
            refs = _referents(sentence, genders)
            words = {w.lower() for w in re.findall(r"[A-Za-z]+", sentence)}
            allowed = set(refs) | prev
            for pronouns, gender in ((_MALE, "m"), (_FEMALE, "f")):
                if words & pronouns:
                    assert gender in allowed, (sentence, text)
                    checked += 1
            if len(set(refs)) == 1:  # one gender named: a "he"/"she" after the name is theirs
                tokens = re.findall(r"[A-Za-z]+", sentence)
                first = next(i for i, w in enumerate(tokens) if w in genders)
                wrong = "she" if refs[0] == "m" else "he"
                assert wrong not in tokens[first:], (sentence, text)
            prev = set(refs) or prev
    assert checked > 2 * N_CHECK  # about three checked sentences a story


def test_hero_pronoun_right_after_name(sample):
    """'Lily ... she', the mechanical check: the first pronoun after the hero's name in a
    sentence that names nobody else is the hero's."""
    for text, meta in sample:
        hero = meta["characters"][0]
        others = {c["name"] for c in meta["characters"][1:]} | set(data.GROWNUPS)
        wrong = "he|him|his|himself" if hero["gender"] == "f" else "she|her|herself"
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r'"[^"]*"', " ", text)):
            if hero["name"] in sentence and not any(o in sentence for o in others):
                assert not re.search(rf"\b{hero['name']}\b.*\b({wrong})\b", sentence), sentence


def test_names_consistent(sample):
    """Only the story's own characters (and the grown-ups) are named in it."""
    all_names = set(data.GIRL_NAMES) | set(data.BOY_NAMES)
    for text, meta in sample:
        named = {w for w in re.findall(r"[A-Z][a-z]+", text) if w in all_names}
        assert named <= {c["name"] for c in meta["characters"]}, (named, meta)
        assert meta["characters"][0]["name"] in text


def test_corpus_stats_small():
    stats = data.corpus_stats(200)
    assert stats["stories"] == 200 and stats["unique_stories"] == 200
    assert 100 <= stats["avg_words"] <= 220
    assert stats["est_tokens"] > stats["words"]
    assert stats["stories_for_10M_tokens"] > 10_000


# ---- user text files ---------------------------------------------------------------------


def test_read_text_file_blank_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("First doc,\nline two.\n\n\n  Second doc.  \n \nThird.\r\n", encoding="utf-8")
    assert data.text_documents(f) == ["First doc,\nline two.", "Second doc.", "Third."]
    assert list(data.read_text_file(f)) == data.text_documents(f)


def test_read_text_file_delimiter(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\ufeffOne.\n\nStill one.<|endoftext|>Two.<|endoftext|>\n", encoding="utf-8")
    assert data.text_documents(f) == ["One.\n\nStill one.", "Two."]
    assert data.text_documents(f, delimiter="\n\n") == ["One.", "Still one.<|endoftext|>Two.<|endoftext|>"]


def test_read_text_file_errors(tmp_path):
    with pytest.raises(data.TextFileError, match="not found"):
        data.read_text_file(tmp_path / "missing.txt")  # raised at the call, not on next()
    with pytest.raises(data.TextFileError, match="directory"):
        data.read_text_file(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n \n")
    with pytest.raises(data.TextFileError, match="empty"):
        data.read_text_file(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(data.TextFileError, match=r"0xe9 at offset 3 .*Re-encode"):
        data.read_text_file(latin)


def test_write_stories_round_trip(tmp_path):
    path = data.write_stories(tmp_path / "stories.txt", 20, seed=4)
    assert data.text_documents(path) == list(data.stories(4, 20))


def test_split_train_valid():
    docs = [f"doc {i}" for i in range(100)]
    train, valid = data.split_train_valid(docs, 0.1, seed=1)
    assert len(valid) == 10 and len(train) == 90
    assert sorted(train + valid, key=docs.index) == docs
    assert train == sorted(train, key=docs.index)  # original order kept
    assert data.split_train_valid(docs, 0.1, seed=1) == (train, valid)
    assert data.split_train_valid(docs, 0.1, seed=2) != (train, valid)
    assert len(data.split_train_valid(docs[:3], 0.05)[1]) == 1  # at least one held out
    one = ["word " * 100]
    t, v = data.split_train_valid(one, 0.2)
    assert len(t[0].split()) + len(v[0].split()) == 100 and len(v[0].split()) == 20
    with pytest.raises(ValueError):
        data.split_train_valid(docs, 1.5)


# ---- packing -----------------------------------------------------------------------------


def test_pack_documents():
    docs = [[10, 11, 12], [20], [30, 31, 32, 33, 34], [40, 41]]
    stream = [t for d in docs for t in [1, *d, 2]]  # 19 tokens
    chunks = list(data.pack_documents(docs, seq_len=4))
    assert all(len(c) == 5 for c in chunks)
    assert chunks[0] == [1, 10, 11, 12, 2] and chunks[1] == [2, 1, 20, 2, 1]
    # consecutive chunks share one token, so the inputs laid end to end are the stream
    assert [t for c in chunks for t in c[:-1]] == stream[: 4 * len(chunks)]
    assert len(chunks) == (len(stream) - 1) // 4
    tail = list(data.pack_documents(docs, seq_len=4, drop_last=False))
    assert tail[:-1] == chunks and [t for c in tail for t in c[:-1]] + tail[-1][-1:] == stream
    no_markers = list(data.pack_documents(docs, seq_len=2, bos_id=None, eos_id=None))
    assert no_markers[0] == [10, 11, 12]


def test_pack_long_stream_matches_reference():
    rng = random.Random(0)
    docs = [[rng.randrange(3, 100) for _ in range(rng.randrange(0, 300))] for _ in range(200)]
    stream = [t for d in docs for t in [1, *d, 2]]
    chunks = list(data.pack_documents(docs, seq_len=64))
    expected = [stream[i : i + 65] for i in range(0, len(stream) - 64, 64)]
    assert chunks == expected


def test_chunk_tensor_and_batches():
    docs = [list(range(100 * n, 100 * n + n)) for n in range(1, 40)]  # all tokens differ
    chunks = data.chunk_tensor(docs, seq_len=8)
    assert chunks.dtype == torch.long and chunks.shape[1] == 9
    it = data.batches(chunks, batch_size=4, seed=0)
    b1 = [next(it) for _ in range(5)]
    it2 = data.batches(chunks, batch_size=4, seed=0)
    assert all(torch.equal(x, next(it2)) for x in b1)  # deterministic
    assert all(b.shape == (4, 9) for b in b1)
    one_epoch = list(data.batches(chunks, batch_size=4, seed=3, epochs=1))
    assert len(one_epoch) == chunks.shape[0] // 4
    rows = torch.cat(one_epoch)
    assert len({tuple(r.tolist()) for r in rows}) == len(rows)  # no row twice in an epoch
    x, y = data.split_batch(b1[0])
    assert x.shape == y.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])
