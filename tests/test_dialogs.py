"""Dialogue data and constraint checkers for Ghost Attention (llama2_lab/dialogs.py)."""

import random

import pytest

from llama2_lab.corpora import dialogues as dlg
from llama2_lab.corpora.dialogues import Constraint, check, check_reply, make_question


def q(kind, seed=0):
    return make_question(random.Random(seed), kind)


# ---- checkers, one family at a time, on replies that obey and replies that do not ---------------
@pytest.mark.parametrize(
    "family,value,question,good,bad",
    [
        ("persona", "Lila", "name", "Hello! I am Lila.", "I am a helpful assistant."),
        ("voice", "dog", "color", "Woof! The color of the sky is blue.", "The color of the sky is blue, woof."),
        ("caps", None, "color", "THE COLOR OF THE SKY IS BLUE.", "The color of the sky is blue."),
        ("end", "moon", "math", "3 plus 4 is 7, moon.", "Moon 3 plus 4 is 7."),
        ("start", "Sure", "legs", "Sure! A dog has 4 legs.", "A dog has 4 legs, sure."),
        ("brief", None, "greet", "Hello!", "Hello! How can I help you?"),
    ],
)
def test_each_family_accepts_obeying_and_rejects_plain_replies(family, value, question, good, bad):
    c = Constraint(family, value)
    assert check(c, q(question), good) is True
    assert check(c, q(question), bad) is False
    # the oracle rewrite of the plain answer always obeys, and the plain answer (>= 5 words, no
    # names, no start/end word, lower case) never does
    qq = q(question)
    assert check(c, qq, dlg.apply_constraints([c], qq)) is True
    assert check(c, qq, qq.plain) is False


@pytest.mark.parametrize("family,value", [("persona", "Lila"), ("end", "moon"), ("start", "Sure")])
@pytest.mark.parametrize("kind", ["name", "hobby", "math", "greet"])
@pytest.mark.parametrize("brief", [False, True])
def test_the_oracle_writes_a_value_exactly_as_the_system_message_spells_it(family, value, kind, brief):
    # the reply copies the value token for token (no case change), so learning it is learning a copy
    cs = [Constraint(family, value)] + ([Constraint("brief")] if brief else [])
    qq = q(kind)
    if Constraint(family, value).applies(qq):
        reply = dlg.apply_constraints(cs, qq)
        assert value in Constraint(family, value).text() and value in dlg._words(reply)
        assert all(check_reply(cs, qq, reply).values())


def test_persona_applies_only_to_its_question_and_a_voice_to_every_reply():
    assert check(Constraint("persona", "Lila"), q("math"), "3 plus 4 is 7.") is None
    assert check(Constraint("voice", "cow"), q("name"), "Moo! I am a helpful assistant.") is True
    assert check(Constraint("voice", "cow"), q("hobby"), "I like to help people.") is False
    assert check_reply([Constraint("persona", "Lila"), Constraint("caps")], q("color"), "RED.") == {"caps": True}


def test_checkers_ignore_case_and_punctuation_where_they_should():
    assert check(Constraint("end", "moon"), q("math"), "7. MOON!") is True
    assert check(Constraint("start", "Sure"), q("math"), "SURE, 7.") is True
    assert check(Constraint("caps"), q("math"), "7.") is True  # nothing to raise
    assert check(Constraint("caps"), q("math"), "") is False
    assert check(Constraint("persona", "Ben"), q("name"), "My name is Benjamin.") is False  # whole words


@pytest.mark.parametrize("family", dlg.FAMILIES)
def test_verbose_and_terse_wordings_differ_and_name_the_value(family):
    value = (dlg.VALUES.get(family) or (None,))[0]
    c = Constraint(family, value)
    verbose, terse = c.text(False), c.text(True)
    assert verbose != terse and len(terse) < len(verbose)
    if value is not None:
        assert value in verbose and value in terse


def test_oracle_obeys_every_combination_it_can_be_given():
    rng = random.Random(1)
    for split in ("train", "test", "heldout_combo"):
        for _ in range(300):
            d = dlg.make_dialogue(rng, 4, split)
            for qq, reply in zip(d.questions, d.oracle_replies()):
                assert all(check_reply(d.constraints, qq, reply).values()), (d.system, qq.text, reply)
                assert dlg.content_ok(qq, reply)
                assert dlg.answer_correct(qq, reply, d.constraints), (d.system, qq.text, reply)


def test_unknown_family_and_kind_raise_helpful_errors():
    with pytest.raises(ValueError, match="Unknown constraint family"):
        check(Constraint("rhyme"), q("math"), "x")
    with pytest.raises(ValueError, match="Unknown question kind"):
        make_question(random.Random(0), "weather")
    with pytest.raises(ValueError, match="split must be"):
        dlg.sample_constraints(random.Random(0), "valid")


# ---- held-out values and combination never reach training data -----------------------------------
def test_heldout_values_never_appear_in_training_dialogues():
    held = {v for vs in dlg.HELDOUT.values() for v in vs}
    assert not held & dlg.training_values()
    for d in dlg.dialogues(0, 500, 6):
        text = " ".join([d.system] + [q.text for q in d.questions] + d.oracle_replies()).lower()
        words = set(text.replace(".", " ").replace("!", " ").replace(",", " ").replace("?", " ").split())
        assert not {h.lower() for h in held} & words, d.system


def test_many_training_values_so_that_only_copying_pays():
    # With 20 names a chat model learned one favourite name for every persona; a value family the
    # model must copy needs far more values than it can memorise, and none may equal a held-out value
    # in any case. (The voice family is a small table learned as such, with no held-out values.)
    copied = {f: v for f, v in dlg.VALUES.items() if f in dlg.HELDOUT}
    assert set(copied) == {"persona", "start", "end"}
    assert all(len(v) >= 25 for v in copied.values())
    assert len(dlg.VALUES["persona"]) >= 200
    held = {v.lower() for vs in dlg.HELDOUT.values() for v in vs}
    assert not held & {v.lower() for v in dlg.training_values()}
    assert all(len(set(vs)) == len(vs) for vs in dlg.VALUES.values())


def test_heldout_combination_is_kept_out_of_training_and_always_in_its_split():
    train = dlg.dialogues(0, 2000, 2)
    assert not any(dlg.HELDOUT_COMBO <= {c.family for c in d.constraints} for d in train)
    # but every family and every other pair does occur
    fams = {c.family for d in train for c in d.constraints}
    assert fams == set(dlg.FAMILIES)
    combo = dlg.dialogues(0, 50, 2, "heldout_combo")
    assert all(dlg.HELDOUT_COMBO <= {c.family for c in d.constraints} for d in combo)
    test = dlg.dialogues(0, 200, 2, "test")
    assert all(
        c.value is None or c.value in dlg.HELDOUT.get(c.family, dlg.VALUES["voice"])
        for d in test
        for c in d.constraints
    )
    # voice and start word both decide the first word: never given together
    assert not any(dlg.EXCLUSIVE <= {c.family for c in d.constraints} for d in train + test + combo)


def test_dialogues_are_seeded_and_vary_in_length_and_wording():
    a, b = dlg.dialogues(3, 50, 12), dlg.dialogues(3, 50, 12)
    assert [(d.system, [q.text for q in d.questions]) for d in a] == [
        (d.system, [q.text for q in d.questions]) for d in b
    ]
    assert {len(d.questions) for d in a} > {1, 12} or len({len(d.questions) for d in a}) > 6
    assert {d.terse for d in a} == {True, False}
    assert {len(d.constraints) for d in a} == {1, 2, 3}


def test_attribute_questions_are_boosted_when_persona_is_active():
    rng = random.Random(0)
    qs = dlg.sample_questions(rng, 400, [Constraint("persona", "Tom")], attribute_boost=0.4)
    share = sum(q.kind == "name" for q in qs) / len(qs)
    assert 0.4 < share < 0.6  # 0.4 boosted + 0.6 / 7 by chance


def test_messages_render_prompt_or_training_dialog():
    d = dlg.make_dialogue(random.Random(0), 3)
    msgs = d.messages(d.oracle_replies())
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"] * 1 + ["user", "assistant"] * 2
    assert d.messages(d.oracle_replies()[:2], system=False)[-1]["role"] == "user"
    with pytest.raises(ValueError, match="need 2 replies"):
        d.messages([])


def test_answer_correct_judges_content_and_rejects_an_invented_name():
    name = q("name")
    assert dlg.answer_correct(name, "I am a helpful assistant.")
    assert not dlg.answer_correct(name, "Hello! I am Felix.")  # no persona was given: a reward hack
    assert dlg.answer_correct(name, "Hello! I am Felix.", [Constraint("persona", "Felix")])
    assert not dlg.answer_correct(name, "I am a helpful assistant.", [Constraint("persona", "Felix")])
    math = make_question(random.Random(0), "math")  # "What is a plus b?"
    right = math.plain
    a_, b = (int(w) for w in math.text.rstrip("?").split()[2::2])
    assert dlg.answer_correct(math, right) and dlg.answer_correct(math, right.upper())
    assert not dlg.answer_correct(math, f"{a_} plus {b} is {a_ + b + 1}.")
    assert not dlg.answer_correct(math, "The color of the sky is blue.")
    color = q("color")
    assert dlg.answer_correct(color, color.short) and not dlg.answer_correct(color, color.short + " Or red, green.")
    assert dlg.answer_correct(q("greet"), "HI THERE!") and not dlg.answer_correct(q("greet"), "Yes.")
