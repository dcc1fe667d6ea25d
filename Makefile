# llama2-lab: the two commands of the README, and a few helpers.
#   make lab     open the course in JupyterLab (creates .venv on first use)
#   make test    lint, then the whole test suite, notebooks included (creates .venv on first use): every notebook
#                in fast mode (nbval), and every student copy top to bottom, then with its solutions put back,
#                in the learner's mode (tests/test_student_runs.py)
#   make test-quick   the same without the student-copy runs
# TORCH_SPEC chooses the torch build: your normal torch by default; CI pins the local CPU wheel with
#   TORCH_SPEC=torch==2.13.0 make test
PYTHON ?= python3
TORCH_SPEC ?= torch
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab story family test test-quick lint venv clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# Jupyter refuses to start as root (containers, CI images) unless told; a normal user gets no flag.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_ROOT) --notebook-dir=notebooks notebooks/00_welcome.ipynb

story: $(STAMP)
	$(VENV)/bin/llama2-lab generate --prompt "Once upon a time" --temperature 0.8 --seed 0

family: $(STAMP)
	$(VENV)/bin/llama2-lab family

# The guard rails: lint, the import contract (layers import only downward), types on the lower layers.
lint: $(STAMP)
	$(VENV)/bin/ruff check llama2_lab tests scripts benchmarks
	$(VENV)/bin/ruff format --check llama2_lab tests scripts benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint
	LLAMA2_LAB_FAST=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=300 -p no:cacheprovider -q -ra --durations=15

test-quick: lint
	LLAMA2_LAB_STUDENT_RUNS=0 LLAMA2_LAB_FAST=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=300 -p no:cacheprovider -q -ra

clean-venv:
	rm -rf $(VENV)
