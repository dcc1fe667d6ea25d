#!/usr/bin/env bash
# Rebuild the RLHF miniature's shipped models (llama2-lab-tiny-sft, llama2-lab-tiny-rm-helpful,
# llama2-lab-tiny-rm-safety) and results.json into assets/models, with progress bars.
# Pass --fast for CI's size, --out DIR to write elsewhere, --threads N for torch threads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m llama2_lab.cli rlhf "$@"
