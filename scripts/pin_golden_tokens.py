"""Re-pin the greedy tokens of shipped models in tests/data/golden_greedy.json (tests/test_golden.py).

Run it only for a model whose *weights* were re-made on purpose (say so in the commit), never to make a
refactor's failing golden test pass: a code change must leave every pinned token where it was.

    .venv/bin/python scripts/pin_golden_tokens.py llama2-lab-tiny [more model folder names]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from llama2_lab import encode_dialog, generate, load_model, load_tokenizer
from llama2_lab.utils.io import atomic_write_text
from llama2_lab.utils.paths import MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden_greedy.json"
sys.path.insert(0, str(ROOT / "tests"))
from test_golden import CHAT  # noqa: E402  (the prompts the test uses)


def main(names: list[str]) -> int:
    if not names:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    golden = json.loads(GOLDEN.read_text())
    for name in names:
        if name not in golden:
            raise SystemExit(f"{name} is not pinned in {GOLDEN}; known: {sorted(golden)}")
        model, tok = load_model(MODELS_DIR / name), load_tokenizer(MODELS_DIR / name)
        ids = tok.encode("Once upon a time", bos=True) if name == "llama2-lab-tiny" else encode_dialog(tok, CHAT)
        golden[name] = list(generate(model, ids, len(golden[name]), temperature=0))
        print(f"{name}: {tok.decode(golden[name])!r}")
    atomic_write_text(GOLDEN, json.dumps(golden) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
