#!/usr/bin/env bash
# Reproduce the shipped model, assets/models/llama2-lab-tiny, and its MODEL_CARD.md.
#
#   scripts/make_tiny_model.sh            # about 30 minutes on a 2-core CPU (more if it is busy)
#   scripts/make_tiny_model.sh --resume   # continue an interrupted run from its checkpoint
#
# One torch thread on purpose: on a shared 2-core machine, 2 threads were ~4x SLOWER than 1
# (OpenMP threads wait for each other whenever another process takes a core). On an idle machine
# `--threads 2` is faster and gives the same model up to float rounding.
# Extra arguments go to `python -m llama2_lab.train`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=assets/models/llama2-lab-tiny
CKPT="${CHECKPOINT:-runs/lab-tiny/checkpoint.pt}"   # outside the assets: it holds AdamW's state too

"$PY" -m llama2_lab.train --preset lab-tiny --out "$OUT" --checkpoint "$CKPT" \
    --threads 1 --no-progress --samples 0 "$@"
# The limitations and run notes were written by hand after looking at this run's samples.
"$PY" scripts/write_model_card.py "$OUT" --note-file scripts/lab_tiny_card_note.md
