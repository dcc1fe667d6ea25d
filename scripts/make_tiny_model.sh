#!/usr/bin/env bash
# Reproduce the shipped model, assets/models/llama2-lab-tiny, and its MODEL_CARD.md.
#
#   scripts/make_tiny_model.sh            # about 100 minutes on 2 idle CPU cores
#   scripts/make_tiny_model.sh --resume   # continue an interrupted run from its checkpoint
#
# Why so long: the model keeps a character's name only once it has learned to copy names from its
# context, and that circuit formed after ~5M tokens (step ~10,000 of 24,000 at 2 x 256 tokens;
# see the card). The last 900 steps (8 x 256 tokens, floor LR) take ~9 of the minutes.
# THREADS=1 on a machine other jobs share (OpenMP threads wait for each other whenever another
# process takes a core); the result is the same model up to float rounding.
# Extra arguments go to `python -m llama2_lab.training`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=assets/models/llama2-lab-tiny
CKPT="${CHECKPOINT:-runs/lab-tiny/checkpoint.pt}"   # outside the assets: it holds AdamW's state too

"$PY" -m llama2_lab.training --preset lab-tiny --out "$OUT" --checkpoint "$CKPT" \
    --threads "${THREADS:-2}" --no-progress --samples 0 "$@"
# The limitations and run notes were written by hand after looking at this run's samples.
"$PY" scripts/write_model_card.py "$OUT" --note-file scripts/lab_tiny_card_note.md
