#!/usr/bin/env bash
# Reproduce the shipped model, assets/models/llama2-lab-tiny, and its MODEL_CARD.md, in two runs:
#
#   1. `--preset lab-tiny`: pretraining from scratch on 256-token rows (phases 1 and 2 of the card),
#      about 100 minutes on 2 idle CPU cores, into runs/lab-tiny-256;
#   2. `--preset lab-tiny-long --init-from runs/lab-tiny-256`: the context extension to 1,024 positions
#      (phase 3), about 20 minutes, into runs/lab-tiny-long; then copied into the assets, and
#      scripts/context_extension.py measures the loss by position before and after.
#
#   scripts/make_tiny_model.sh            # both runs
#   scripts/make_tiny_model.sh --resume   # continue an interrupted run from its checkpoint
#
# Why so long: the model keeps a character's name only once it has learned to copy names from its
# context, and that circuit formed after ~5M tokens (step ~10,000 of 24,000 at 2 x 256 tokens;
# see the card). The last 900 steps (8 x 256 tokens, floor LR) take ~9 of the minutes.
# THREADS=1 on a machine other jobs share (OpenMP threads wait for each other whenever another
# process takes a core); the result is the same model up to float rounding.
# Extra arguments go to both `python -m llama2_lab.training` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=assets/models/llama2-lab-tiny
SHORT=runs/lab-tiny-256   # phases 1-2: outside the assets, with its own card and loss curve
LONG=runs/lab-tiny-long   # phase 3
THREADS="${THREADS:-2}"

"$PY" -m llama2_lab.training --preset lab-tiny --out "$SHORT" --checkpoint runs/lab-tiny/checkpoint.pt \
    --threads "$THREADS" --no-progress --samples 0 "$@"
"$PY" -m llama2_lab.training --preset lab-tiny-long --init-from "$SHORT" --out "$LONG" \
    --checkpoint runs/lab-tiny-long/checkpoint.pt --threads "$THREADS" --no-progress --samples 0 "$@"

mkdir -p "$OUT"
cp "$LONG/model.safetensors" "$LONG/params.json" "$LONG/tokenizer.model" "$OUT/"
cp "$SHORT/loss_curve.json" "$SHORT/loss_curve.png" "$OUT/"                       # phases 1-2
cp "$LONG/loss_curve.json" "$OUT/loss_curve_extension.json"                       # phase 3
cp "$LONG/loss_curve.png" "$OUT/loss_curve_extension.png"
"$PY" scripts/context_extension.py "$SHORT" "$OUT" --threads "$THREADS"
# The card: phases 1-2 from the 256-position run's numbers; the limitations, run notes and the
# phase-3 section were written by hand from this run's measurements.
"$PY" scripts/write_model_card.py "$OUT" --note-file scripts/lab_tiny_card_note.md
