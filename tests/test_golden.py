"""The shipped models' greedy tokens, pinned (llama2.c's golden-output idea): a refactor of the model,
the loaders or the decode loop that changes one logit enough to flip an argmax fails here.

tests/data/golden_greedy.json was written by the package before it was split into layers; the same
48 tokens must come back from every later version. A model whose weights were re-made on purpose is
re-pinned with scripts/pin_golden_tokens.py, in the commit that ships the new weights (llama2-lab-tiny
after its context extension to 1,024 positions; the chat models after their 20-turn GAtt run).
"""

import json
from pathlib import Path

import pytest
import torch

from llama2_lab import encode_dialog, generate, load_model, load_tokenizer
from llama2_lab.utils.paths import MODELS_DIR

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_greedy.json").read_text())
CHAT = [
    {"role": "system", "content": "Always answer in capital letters."},
    {"role": "user", "content": "What is your name?"},
    {"role": "assistant", "content": "I AM TOM."},
    {"role": "user", "content": "What is 2 plus 3?"},
]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_greedy_tokens_of_the_shipped_models_are_pinned(name):
    torch.set_num_threads(1)
    model, tok = load_model(MODELS_DIR / name), load_tokenizer(MODELS_DIR / name)
    ids = tok.encode("Once upon a time", bos=True, eos=False) if name == "llama2-lab-tiny" else encode_dialog(tok, CHAT)
    got = list(generate(model, ids, len(GOLDEN[name]), temperature=0))
    want = GOLDEN[name]
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    assert got == want, (
        f"greedy tokens differ from token {first} on: got {got[first : first + 5]}, want {want[first : first + 5]}"
    )
