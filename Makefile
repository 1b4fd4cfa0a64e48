# cinc-flow: every target uses .venv/bin/python and creates .venv first when it is missing.
# With an environment of your own (conda, a GPU cluster's modules): make <target> PY=python (no .venv).
SHELL := /bin/bash
PY := .venv/bin/python
VENV := $(if $(filter .venv/bin/python,$(PY)),.venv/.installed)
PYTEST_ARGS ?=
# make test runs the test files on TEST_WORKERS processes (pytest-xdist; default: the cores, at most 4; 0: one process)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
SCALE ?= full

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow test-gpu bench bench-gpu reproduce notebooks clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-11s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/python -m pip install --upgrade pip
	.venv/bin/python -m pip install -e ".[dev]"
	touch .venv/.installed

install: .venv/.installed ## create .venv and install the pinned dependencies and the package

train: $(VENV) ## quickstart: train CInC + quad coupling on the offline digits data (CPU, minutes)
	$(PY) src/train.py experiment=quickstart

test: $(VENV) ## run the default test suite (CPU; one test file per core, TEST_WORKERS=0 for one process)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(VENV) ## run only the slow tests
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-gpu: $(VENV) ## run only the CUDA tests (needs a GPU)
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

bench: $(VENV) ## sampling vs forward speed benchmark (CPU size); writes results/benchmark_cpu.json
	$(PY) src/benchmark.py size=cpu

bench-gpu: $(VENV) ## the same at the paper's size on a CUDA GPU; writes results/benchmark_paper.json
	$(PY) src/benchmark.py size=paper device=cuda

reproduce: $(VENV) ## the paper's 18 rows: SCALE=full (GPUs, weeks) or SCALE=smoke (CPU, ~15 min); writes outputs/reproduce/<scale>/
	$(PY) src/reproduce.py --scale $(SCALE)

notebooks: $(VENV) ## execute notebooks/*.ipynb and store them with their outputs (about 5 minutes)
	$(PY) notebooks/execute.py

clean: ## remove caches and outputs (keeps .venv)
	rm -rf .pytest_cache outputs multirun
