"""The shipped chat models, assets/models/llama2-lab-tiny-chat (baseline SFT) and -chat-gatt (GAtt).

What their cards claim, checked on 20-turn dialogues the cards' evaluation never used (a fresh seed),
with held-out values: both follow an instruction they can see; GAtt keeps following it turns later, to
turn 20, when the baseline has dropped it; names are read out of the system message, not recalled; and
both still answer the questions (content accuracy: the level the cards report, not the 0.90 issue #20
asks for, which arithmetic keeps out of reach — see the cards); GAtt gets more sums right than the baseline.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from llama2_lab.corpora import dialogues as dlg
from llama2_lab.experiments import gatt

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
DIRS = {"baseline": MODELS / "llama2-lab-tiny-chat", "gatt": MODELS / "llama2-lab-tiny-chat-gatt"}
FRESH_SEED = 515_151  # not one of gatt.evaluate_arms' seeds (30_000 + s, 40_000 + s)
N_DIALOGUES, N_TURNS = 48, 20
NAME_FAMILIES = ("persona", "start", "end")

pytestmark = pytest.mark.skipif(
    not all((d / "model.safetensors").is_file() for d in DIRS.values()),
    reason="the shipped chat models are not there yet; make them with scripts/make_gatt_models.sh",
)


@pytest.fixture(scope="module")
def chats():
    """Per arm: (turn, family, obeyed) and (turn, kind, answered right) records on the same fresh
    held-out dialogues, free-running, greedy. A chat that talks long may pass the 1,024 trained
    positions by turn 20: it goes on with a longer RoPE table, as the cards' evaluation does."""
    from llama2_lab.formats import load_model, load_tokenizer

    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    tok = load_tokenizer(DIRS["gatt"], required=True)
    ds = dlg.dialogues(FRESH_SEED, N_DIALOGUES, N_TURNS, "test", min_turns=N_TURNS)
    out = {}
    for arm, folder in DIRS.items():
        model = gatt.with_context(load_model(folder), 3 * 1024)
        replies = gatt.run_chats(model, tok, ds, N_TURNS, max_new=gatt.GattConfig().max_new)
        out[arm] = (gatt.adherence_records(ds, replies), gatt.content_records(ds, replies))
    torch.set_num_threads(n)
    return out


@pytest.fixture(scope="module")
def records(chats):
    return {arm: adherence for arm, (adherence, _) in chats.items()}


def rate(recs, turns, families=None) -> tuple[float, int]:
    oks = [ok for k, f, ok in recs if k in turns and (families is None or f in families)]
    return sum(oks) / max(1, len(oks)), len(oks)


def test_both_models_follow_an_instruction_they_can_see(records):
    for arm in DIRS:
        p, n = rate(records[arm], {1})
        assert n >= 60 and p >= 0.7, (arm, p, n)


@pytest.mark.parametrize("turns", [range(5, 9), range(13, 21)], ids=["turns 5-8", "turns 13-20"])
def test_gatt_keeps_the_instruction_when_the_baseline_has_dropped_it(records, turns):
    base, n = rate(records["baseline"], set(turns))
    with_gatt, _ = rate(records["gatt"], set(turns))
    assert n >= 200
    assert base <= 0.1 and with_gatt >= 0.5 and with_gatt >= base + 0.45, (base, with_gatt)


def test_both_models_still_answer_the_questions(chats):
    # pooled over the 20 turns, every kind but arithmetic (which neither model learned: the cards say why)
    kinds = [k for k in dlg.KINDS if k != "math"]
    floors = {"baseline": 0.7, "gatt": 0.7}  # the cards' levels, with a margin for a fresh seed
    for arm, (_, content) in chats.items():
        p, n = rate(content, set(range(1, N_TURNS + 1)), kinds)
        assert n >= 600 and p >= floors[arm], (arm, p, n)


def test_gatt_answers_more_sums_right_than_the_baseline(chats):
    # the digits are trained tokens since the base's context extension (corpora/numbers.py); neither
    # model is good at sums (the cards: about 0.1 and 0.35), but GAtt's turns train more of them
    base, n = rate(chats["baseline"][1], set(range(1, N_TURNS + 1)), ["math"])
    with_gatt, _ = rate(chats["gatt"][1], set(range(1, N_TURNS + 1)), ["math"])
    assert n >= 80 and with_gatt >= base + 0.1, (base, with_gatt, n)


def test_held_out_names_are_read_out_of_the_system_message(records):
    # persona, start and end values are names never seen in training: only copying can get them right
    for arm in DIRS:
        p, n = rate(records[arm], {1}, NAME_FAMILIES)
        assert n >= 20 and p >= 0.5, (arm, p, n)


@pytest.mark.parametrize("arm", sorted(DIRS))
def test_llama2_lab_chat_talks_with_both_models(arm, capsys, monkeypatch):
    from llama2_lab.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("What is your name?\nWhat is 2 plus 3?\n"))
    code = main(
        [
            "chat",
            "--checkpoint",
            str(DIRS[arm]),
            "--system",
            "Always answer in capital letters.",
            "--greedy",
            "--max-new-tokens",
            "24",
        ]
    )
    out = capsys.readouterr().out.strip().split("\n")
    assert code == 0 and len(out) == 2
    assert out[0] == out[0].upper() and any(ch.isalpha() for ch in out[0]), out
