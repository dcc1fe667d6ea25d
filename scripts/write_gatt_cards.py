"""Rewrite the two chat models' MODEL_CARD.md from their results.json, with a hand-written Limits section.

`llama2-lab gatt` writes the cards from the run's own numbers; what the numbers mean against the issue's
targets is written afterwards, by a person, into a Markdown file, and this script puts it into both cards
(and into results.json's card_info, so the record and the cards agree). The tables are not touched.

    .venv/bin/python scripts/write_gatt_cards.py assets/models --limits-file runs/gatt_limits.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama2_lab.experiments.gatt.config import ARM_FOLDERS, GattConfig
from llama2_lab.experiments.gatt.report import write_card
from llama2_lab.utils.io import atomic_write_text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", type=Path, help="the folder that holds both chat model folders")
    p.add_argument("--limits-file", type=Path, required=True, help="Markdown text for the cards' Limits section")
    args = p.parse_args()
    limits = args.limits_file.read_text(encoding="utf-8").strip()
    for arm, name in ARM_FOLDERS.items():
        folder = args.models / name
        results = json.loads((folder / "results.json").read_text())
        c = results["config"]
        # a record from before `gatt_loss` existed trained the last reply only
        c = {
            **c,
            "seeds": tuple(c["seeds"]),
            "probe_turns": tuple(c["probe_turns"]),
            "gatt_loss": c.get("gatt_loss", "last"),
        }
        cfg = GattConfig(**c)
        results["card_info"]["limits"] = limits
        info = {**results["card_info"], "kept": {int(s): v for s, v in results["card_info"]["kept"].items()}}
        atomic_write_text(folder / "results.json", json.dumps(results, indent=1, default=float) + "\n")
        write_card(folder, arm, cfg, results["summary"], info)
        print(f"wrote {folder / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
