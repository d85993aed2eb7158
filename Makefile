# bgem3 monorepo. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which torch `make setup` installs when the venv has none. Any torch >= 2.1 that is
# already in $(VENV) is kept (install a CUDA build there first if you want one).
TORCH ?= torch==2.13.0
# Checkpoint for `make demo`: empty builds the tiny random test checkpoint (offline).
BGEM3_MODEL ?=
TINY := .cache/tiny-bge-m3

.DEFAULT_GOAL := help
.PHONY: help setup test lint demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv with every package, test and lint tool

$(VENV)/.installed: requirements-dev.txt $(wildcard packages/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c 'import torch, sys; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 1))' 2>/dev/null \
		|| $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -c 'import torch; print("torch==" + torch.__version__)' > $(VENV)/constraints.txt
	PIP_CONSTRAINT=$(VENV)/constraints.txt $(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

test: setup ## run the whole test suite (offline, CPU)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup ## ruff and mypy
	$(BIN)/ruff check packages tests benchmarks examples notebooks conftest.py
	$(BIN)/mypy
	cd packages/llama-index-bgem3/src && $(CURDIR)/$(BIN)/mypy --strict --explicit-package-bases llama_index/*/bgem3/*.py

$(TINY)/config.json: | setup
	$(BIN)/python -m bgem3.testing $(TINY) > /dev/null

DEMO_MODEL = $(or $(BGEM3_MODEL),$(TINY))

demo: setup $(if $(BGEM3_MODEL),,$(TINY)/config.json) ## index the sample corpus, search it, score (BGEM3_MODEL=... for a real model)
	$(BIN)/python examples/quickstart.py --model "$(DEMO_MODEL)"
	$(BIN)/bgem3 index examples/corpus --out .cache/demo-index --model "$(DEMO_MODEL)"
	$(BIN)/bgem3 search .cache/demo-index "Where is the Eiffel Tower?" -k 5
	$(BIN)/bgem3 search .cache/demo-index "混合检索" -k 3 --mode sparse
	$(BIN)/bgem3 score "What is hybrid search?" "Hybrid retrieval combines dense and sparse vectors." \
		"La tour Eiffel est à Paris." --model "$(DEMO_MODEL)"

bench: setup ## encoding speed against FlagEmbedding (BENCH_ARGS="--workloads W1 --threads 1")
	$(BIN)/python benchmarks/encode.py $(BENCH_ARGS)

clean: ## remove the venv and caches
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
