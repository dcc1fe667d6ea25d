#!/usr/bin/env bash
# Rebuild assets/models/llama2-lab-tiny-chat (baseline SFT) and assets/models/llama2-lab-tiny-chat-gatt
# (Ghost Attention) from the shipped pretrained model assets/models/llama2-lab-tiny, with their model
# cards, results.json and figures. Same as `llama2-lab gatt`; pass its options, e.g.
#   scripts/make_gatt_models.sh                  # full: 3 seeds, sampled GAtt replies (see the cards for times)
#   scripts/make_gatt_models.sh --preset ship    # what made the shipped models: 1 seed
#   scripts/make_gatt_models.sh --fast           # CI size, a few minutes
#   scripts/make_gatt_models.sh --mode oracle    # deterministic oracle replies instead of sampling
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m llama2_lab.experiments.gatt "$@"
