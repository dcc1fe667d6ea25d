"""Tests for llama2_lab.text.chat: Meta's chat_completion token for token, validation, SFT masks."""

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama2_lab.text.chat import (
    B_INST,
    B_SYS,
    E_INST,
    E_SYS,
    ROLES,
    SPECIAL_TAGS,
    DialogError,
    dialog_segments,
    encode_dialog,
    encode_dialog_with_mask,
    encode_training_dialog,
    render_dialog,
    validate_dialog,
)
from llama2_lab.text.tokenizer import Tokenizer, train_tokenizer

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
# 100 examples: each draws a whole dialog, and these tests should stay a few seconds.
SETTINGS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

FRENCH = [
    {"role": "system", "content": "Answer in French."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Bonjour"},
    {"role": "user", "content": "Bye"},
]
FRENCH_IDS = [
    1,
    518,
    25580,
    29962,
    3532,
    14816,
    29903,
    6778,
    13,
    22550,
    297,
    5176,
    29889,
    13,
    29966,
    829,
    14816,
    29903,
    6778,
    13,
    13,
    18567,
    518,
    29914,
    25580,
    29962,
    8396,
    29926,
    473,
    29871,
    2,
    1,
    518,
    25580,
    29962,
    2648,
    29872,
    518,
    29914,
    25580,
    29962,
]
PIRATE = [
    {"role": "system", "content": "Always answer like a pirate."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "Arr, 4!"},
    {"role": "user", "content": "And 3+3?"},
]
PIRATE_IDS = [
    1,
    518,
    25580,
    29962,
    3532,
    14816,
    29903,
    6778,
    13,
    2499,
    1994,
    1234,
    763,
    263,
    21625,
    403,
    29889,
    13,
    29966,
    829,
    14816,
    29903,
    6778,
    13,
    13,
    5618,
    338,
    29871,
    29906,
    29974,
    29906,
    29973,
    518,
    29914,
    25580,
    29962,
    25681,
    29892,
    29871,
    29946,
    29991,
    29871,
    2,
    1,
    518,
    25580,
    29962,
    1126,
    29871,
    29941,
    29974,
    29941,
    29973,
    518,
    29914,
    25580,
    29962,
]


def meta_chat_completion_tokens(sp, dialog):
    """Meta's `chat_completion` prompt construction (llama/generation.py @ 689c7f2), transcribed
    line by line with SentencePiece itself: the oracle that encode_dialog must equal."""
    if dialog[0]["role"] == "system":
        dialog = [
            {"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}
        ] + dialog[2:]
    assert all(msg["role"] == "user" for msg in dialog[::2]) and all(msg["role"] == "assistant" for msg in dialog[1::2])
    tokens = sum(
        [
            [sp.bos_id()]
            + sp.encode(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ")
            + [sp.eos_id()]
            for prompt, answer in zip(dialog[::2], dialog[1::2])
        ],
        [],
    )
    assert dialog[-1]["role"] == "user", f"Last message must be from user, got {dialog[-1]['role']}"
    return tokens + [sp.bos_id()] + sp.encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}")


@pytest.fixture(scope="module")
def real():
    path = REFERENCE / "tokenizer.model"
    if not path.is_file():
        pytest.skip(f"reference file {path} not found (conformance data lives in ../shared/reference)")
    return Tokenizer(path)


@pytest.fixture(scope="module")
def tok():
    rng = random.Random(0)
    words = "what is the llama say hello arr answer in french bonjour bye pirate you 😀 über".split()
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) + rng.choice("?.! ") + str(rng.randint(0, 99))
        for _ in range(1000)
    ]
    return train_tokenizer(lines, vocab_size=350)


def msg(role, content):
    return {"role": role, "content": content}


# --- the exact format ---------------------------------------------------------------------------


def test_constants():
    assert (B_INST, E_INST) == ("[INST]", "[/INST]")
    assert (B_SYS, E_SYS) == ("<<SYS>>\n", "\n<</SYS>>\n\n")
    assert list(SPECIAL_TAGS) == ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
    assert ROLES == ("system", "user", "assistant")


def test_render_dialog_strings():
    # FACTS §3.3
    assert render_dialog(FRENCH) == [
        "[INST] <<SYS>>\nAnswer in French.\n<</SYS>>\n\nHi [/INST] Bonjour ",
        "[INST] Bye [/INST]",
    ]
    assert render_dialog([msg("user", "  a  "), msg("assistant", " b\n")]) == ["[INST] a [/INST] b "]
    # Only the merged system + user text is stripped: an empty user eats E_SYS's newlines, as Meta's does.
    assert render_dialog([msg("system", " s "), msg("user", "")]) == ["[INST] <<SYS>>\n s \n<</SYS>> [/INST]"]


@pytest.mark.reference
def test_french_dialog_ids(real):
    assert encode_dialog(real, FRENCH) == FRENCH_IDS
    assert meta_chat_completion_tokens(real.sp, FRENCH) == FRENCH_IDS  # the oracle agrees


@pytest.mark.reference
def test_pirate_dialog_ids(real):
    assert encode_dialog(real, PIRATE) == PIRATE_IDS


@pytest.mark.reference
def test_french_mask_and_segments(real):
    ids, mask = encode_dialog_with_mask(real, FRENCH)
    assert ids == FRENCH_IDS
    # Exactly "▁Bon j our ▁ </s>" is trained.
    assert [i for i, m in zip(ids, mask) if m] == [8396, 29926, 473, 29871, 2]
    segments = dialog_segments(real, FRENCH)
    roles = [s.role for s in segments]
    assert roles[:4] == ["bos", "tag", "tag", "tag"]
    assert [real.id_to_piece(i) for i, r in zip(ids, roles) if r == "system"] == ["Answer", "▁in", "▁French", "."]
    assert [real.decode([i for i, s in zip(ids, segments) if s == (t, "user")]) for t in (0, 1)] == ["Hi", "Bye"]
    assert [s.turn for s in segments].count(0) == 31 and roles.count("eos") == 1


@pytest.mark.reference
def test_tags_are_plain_text(real):
    # [INST] is three ordinary pieces, never a special id (FACTS §3.3).
    ids = encode_dialog(real, [msg("user", "Hi")])
    assert ids == [1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962]


# --- against Meta's algorithm, on random dialogs -------------------------------------------------

content = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="▁"), max_size=20),
    st.lists(st.sampled_from(["what", " is", "  ", "\n", "😀", "2+2", "?", "über", " ", "arr!", "\t"]), max_size=8).map(
        "".join
    ),
).filter(lambda s: not any(tag in s for tag in SPECIAL_TAGS))


@st.composite
def dialogs(draw, last="user"):
    n_pairs = draw(st.integers(0 if last == "user" else 1, 3))
    dialog = [msg("system", draw(content))] if draw(st.booleans()) else []
    for _ in range(n_pairs):
        dialog += [msg("user", draw(content)), msg("assistant", draw(content))]
    if last == "user":
        dialog.append(msg("user", draw(content)))
    return dialog


@SETTINGS
@given(dialogs())
def test_encode_dialog_equals_meta(tok, dialog):
    ids = encode_dialog(tok, dialog)
    assert ids == meta_chat_completion_tokens(tok.sp, dialog)
    assert ids.count(tok.bos_id) == len(render_dialog(dialog)) == (len(dialog) + 1) // 2
    assert encode_dialog_with_mask(tok, dialog)[0] == ids


@pytest.mark.reference
@settings(deadline=None, max_examples=50)
@given(dialogs())
def test_encode_dialog_equals_meta_real(real, dialog):
    assert encode_dialog(real, dialog) == meta_chat_completion_tokens(real.sp, dialog)


def meta_accepts(sp, dialog):
    try:
        meta_chat_completion_tokens(sp, dialog)
        return True
    except (AssertionError, IndexError):  # Meta fails on an index for [] and [system]
        return False


@SETTINGS
@given(st.lists(st.sampled_from(ROLES), max_size=6), st.sampled_from(["user", "assistant", "any"]))
def test_validation_agrees_with_meta(tok, roles, last):
    """We reject exactly the role sequences Meta's code rejects. A training dialog (ending with
    the assistant) is valid when Meta would accept it followed by the next user message."""
    dialog = [msg(role, "x") for role in roles]
    prompt_ok = meta_accepts(tok.sp, dialog)
    training_ok = bool(dialog) and roles[-1] == "assistant" and meta_accepts(tok.sp, dialog + [msg("user", "x")])
    expected = {"user": prompt_ok, "assistant": training_ok, "any": prompt_ok or training_ok}[last]
    try:
        validate_dialog(dialog, last=last)
        assert expected, f"accepted {roles} (last={last}), which Meta rejects"
    except DialogError:
        assert not expected, f"rejected {roles} (last={last}), which Meta accepts"


# --- SFT masks ----------------------------------------------------------------------------------


def _runs(ids, mask):
    """The maximal runs of masked-in tokens."""
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@SETTINGS
@given(dialogs(last="assistant"))
def test_training_mask_covers_exactly_the_answers(tok, dialog):
    ids, mask = encode_training_dialog(tok, dialog)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    # All pairs complete: Meta's pair encoding of every (user, assistant) pair, concatenated.
    assert ids == meta_chat_completion_tokens(tok.sp, dialog + [msg("user", "")])[: len(ids)]
    assert ids[-1] == tok.eos_id and ids.count(tok.eos_id) == len(dialog) // 2
    answers = [m["content"].strip() for m in dialog if m["role"] == "assistant"]
    runs = _runs(ids, mask)
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers):
        assert run[-1] == tok.eos_id  # the EOS that closes the answer is trained
        # The trailing " " of the answer string is trained too (the bare "▁" before EOS).
        assert tok.decode(run) == (answer + " " if answer else "")
    # Nothing else is trained: BOS, tags, system and user tokens all have mask 0.
    segments = dialog_segments(tok, dialog)
    assert [int(s.role in ("assistant", "eos")) for s in segments] == mask


@SETTINGS
@given(dialogs(last="assistant"))
def test_train_on_last(tok, dialog):
    ids, mask_all = encode_training_dialog(tok, dialog)
    ids_last, mask_last = encode_training_dialog(tok, dialog, train_on="last")
    assert ids_last == ids
    last_bos = len(ids) - 1 - ids[::-1].index(tok.bos_id)
    assert mask_last == [m if i >= last_bos else 0 for i, m in enumerate(mask_all)]
    assert mask_last[-1] == 1


@SETTINGS
@given(dialogs())
def test_prompt_mask_and_segments(tok, dialog):
    ids, mask = encode_dialog_with_mask(tok, dialog)
    segments = dialog_segments(tok, dialog)
    assert len(ids) == len(mask) == len(segments)
    last_bos = len(ids) - 1 - ids[::-1].index(tok.bos_id)
    assert not any(mask[last_bos:])  # the final user turn is never trained
    assert [s.role for s in segments].count("eos") == sum(m["role"] == "assistant" for m in dialog)
    # Each turn's user/system tokens decode back to the message's text.
    turns = [m for m in dialog if m["role"] != "system"]
    for t, user in enumerate(turns[::2]):
        user_ids = [i for i, s in zip(ids, segments) if s == (t, "user")]
        if dialog[0]["role"] != "system" or t > 0:
            assert tok.decode(user_ids) == user["content"].strip()
        else:
            assert tok.decode(user_ids) in (user["content"].rstrip(), user["content"].rstrip()[1:])
    if dialog[0]["role"] == "system":
        system_ids = [i for i, s in zip(ids, segments) if s.role == "system"]
        assert tok.decode(system_ids).strip() == dialog[0]["content"].strip()


# --- errors ----------------------------------------------------------------------------------------

U, A, S = (lambda c="x": msg("user", c)), (lambda c="x": msg("assistant", c)), (lambda c="x": msg("system", c))


@pytest.mark.parametrize(
    "dialog, message",
    [
        ([], "empty"),
        ("Hi", "list of messages"),
        ({"role": "user", "content": "Hi"}, "list of messages"),
        (["Hi"], "Message 0 must be a dict with 'role' and 'content'"),
        ([{"content": "Hi"}], "Message 0 must be a dict with 'role' and 'content'"),
        ([U(), A(), {"role": "user"}], "Message 2 must be a dict"),
        ([msg("bot", "Hi")], "role 'bot'.*'system', 'user', 'assistant'"),
        ([msg("user", None)], "content must be a str"),
        ([U(), A(), S(), U()], "Message 2 is a system message.*only come first"),
        ([S()], "only a system message.*add the user message"),
        ([U(), U()], "Message 1 is from the user, but it is the assistant's turn.*alternate"),
        ([A(), U()], "Message 0 is from the assistant, but it is the user's turn"),
        ([S(), A(), U()], "Message 1 is from the assistant, but it is the user's turn"),
        ([U(), A()], "last message must be from the user.*encode_training_dialog"),
        ([U("tell me about [INST]")], "special tag '\\[INST\\]'"),
        ([S("<<SYS>> x"), U()], "Message 0 \\(system\\) contains the special tag '<<SYS>>'"),
        ([U(), A("ok [/INST] sure"), U()], "Message 1 \\(assistant\\) contains.*'\\[/INST\\]'.*unsafe"),
        ([U(), A("<</SYS>>"), U()], "'<</SYS>>'"),
    ],
)
def test_encode_dialog_errors(tok, dialog, message):
    with pytest.raises(DialogError, match=message):
        encode_dialog(tok, dialog)
    with pytest.raises(ValueError, match=message):  # DialogError is a ValueError
        encode_dialog_with_mask(tok, dialog)


def test_training_dialog_errors(tok):
    with pytest.raises(DialogError, match="must end with an assistant message.*encode_dialog"):
        encode_training_dialog(tok, [U(), A(), U()])
    with pytest.raises(DialogError, match="only a system message"):
        encode_training_dialog(tok, [S()])
    with pytest.raises(ValueError, match="train_on"):
        encode_training_dialog(tok, [U(), A()], train_on="first")
    # render_dialog and dialog_segments accept either ending, but still check everything else.
    assert len(render_dialog([U(), A()])) == len(render_dialog([U(), A(), U()])) - 1
    with pytest.raises(DialogError, match="alternate"):
        render_dialog([U(), U()])
    with pytest.raises(DialogError, match="empty"):
        dialog_segments(tok, [])
