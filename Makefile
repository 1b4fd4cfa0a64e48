# cinc-flow: every target uses .venv/bin/python and creates .venv first when it is missing.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=
SCALE ?= full

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow test-gpu bench bench-gpu reproduce clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-11s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch .venv/.installed

install: .venv/.installed ## create .venv and install the pinned dependencies and the package

train: .venv/.installed ## quickstart: train CInC + quad coupling on the offline digits data (CPU, minutes)
	$(PY) src/train.py experiment=quickstart

test: .venv/.installed ## run the default test suite (CPU)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: .venv/.installed ## run only the slow tests
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-gpu: .venv/.installed ## run only the CUDA tests (needs a GPU)
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

bench: .venv/.installed ## sampling vs forward speed benchmark (CPU size); writes results/benchmark_cpu.json
	$(PY) src/benchmark.py size=cpu

bench-gpu: .venv/.installed ## the same at the paper's size on a CUDA GPU; writes results/benchmark_paper.json
	$(PY) src/benchmark.py size=paper device=cuda

reproduce: .venv/.installed ## the paper's tables: SCALE=full (GPUs, days) or SCALE=smoke (CPU, ~20 min); writes results/<scale>/
	$(PY) src/reproduce.py --scale $(SCALE)

clean: ## remove caches and outputs (keeps .venv)
	rm -rf .pytest_cache outputs multirun
