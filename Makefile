# bgem3 monorepo. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which torch `make setup` installs when the venv has none. Any torch >= 2.2 that is
# already in $(VENV) is kept (install a CUDA build there first if you want one).
TORCH ?= torch==2.13.0
TINY := .cache/tiny-bge-m3

.DEFAULT_GOAL := help
.PHONY: help setup lock test test-latest test-lowest test-lowest-core lint docs demo bench dist-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv from the lock: every package, test and lint tool

# The lock (requirements-dev.lock) pins every package except torch and our own three, with
# hashes; it is installed without dependency resolution, so nothing newer can slip in.
LOCK := requirements-dev.lock
PACKAGES := packages/bgem3 packages/langchain-bgem3 packages/llama-index-bgem3
EDITABLES := $(foreach p,$(PACKAGES),-e $(p))

$(VENV)/.installed: $(LOCK) $(wildcard packages/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import torch, sys; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 2))' 2>/dev/null \
		|| $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation $(EDITABLES)
	$(BIN)/python -m pip check
	touch $@

# `make lock` re-resolves requirements-dev.in to the newest versions it allows, for every
# platform and Python >= 3.10, then reinstalls and runs the tests; commit the new lock only if
# they pass (`git checkout $(LOCK)` takes it back). LOCK_ARGS= keeps the current pins where
# they still fit (after adding a package); LOCK_ARGS="--upgrade-package X" moves one.
LOCK_ARGS ?= --upgrade
lock: setup ## re-resolve requirements-dev.in into the lock, reinstall, run the tests
	$(BIN)/uv pip compile requirements-dev.in -o $(LOCK) $(LOCK_ARGS) --quiet \
		--universal --python-version 3.10 --generate-hashes --excludes <(echo torch) \
		$(foreach p,$(notdir $(PACKAGES)),--no-emit-package $(p)) --custom-compile-command "make lock"
	$(MAKE) test

test: setup ## run the whole test suite (offline, CPU)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Drift and range checks: throwaway venvs under .cache/, not part of CI (.ci/run).
LATEST := .cache/venv-latest
LOWEST := .cache/venv-lowest
TORCH_PIN = $$($(BIN)/python -c 'import torch; print("torch==" + torch.__version__)')

test-latest: setup ## the tests on the newest versions requirements-dev.in allows (not the lock)
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST)/bin/python -m pip install -q -c <(echo "$(TORCH_PIN)") --upgrade -r requirements-dev.in
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	HF_HUB_OFFLINE=1 $(LATEST)/bin/python -m pytest -q -p no:cacheprovider

# The packages' own dependencies at their lower bounds (tools/lowest_pins.py), test tools at
# whatever fits them; torch at its lower bound comes from PyPI (a CUDA build, ~3 GB).
# test-lowest runs the whole suite with every test tool. Where a test tool, or a dependency of
# another of our packages, needs more than a bound, LOWEST_FLOORS raises that pin:
#   numpy 1.26.2          langchain-tests 1.0 requires it
#   tqdm 4.66.1           llama-index-core 0.13.0 requires it
#   langchain-core 1.4.9  langchain-milvus 0.4.0 (the milvus extra) requires it
#   transformers 4.56.0   FlagEmbedding 1.4.2 passes from_pretrained(dtype=...), new in 4.56,
#                         while it declares transformers >= 4.44.2; with it the lowest
#   tokenizers 0.22.0, huggingface-hub 0.34.0 that transformers 4.56 allows
# LOWEST_TOOLS constrains test tools that declare too little: pyarrow >= 26 (FlagEmbedding's
# datasets) needs NumPy 2.
# test-lowest-core checks bgem3's bounds themselves, unraised: the bgem3 package alone, its tests
# (tests/core, the public API, its doctests) and no other tools (tools/lowest-core.in).
# Both use a tiny checkpoint built with .venv (its random weights depend on the transformers
# version that initialises them; tests/conftest.py reads BGEM3_TEST_CHECKPOINT).
LOWEST_FLOORS := numpy==1.26.2 tqdm==4.66.1 langchain-core==1.4.9 transformers==4.56.0 \
	tokenizers==0.22.0 huggingface-hub==0.34.0
LOWEST_TOOLS := pyarrow<26
test-lowest: LOWEST_PINS = $(foreach f,$(LOWEST_FLOORS),--floor $(f)) $(wildcard packages/*/pyproject.toml)
test-lowest: LOWEST_IN = requirements-dev.in
test-lowest: LOWEST_EDITABLES = $(EDITABLES)
test-lowest: LOWEST_TESTS =
test-lowest: LOWEST_EXTRA = $(LOWEST_TOOLS)
test-lowest-core: LOWEST = .cache/venv-lowest-core
test-lowest-core: LOWEST_PINS = packages/bgem3/pyproject.toml
test-lowest-core: LOWEST_IN = tools/lowest-core.in
test-lowest-core: LOWEST_EDITABLES = -e packages/bgem3
test-lowest-core: LOWEST_TESTS = tests/core tests/test_public_api.py packages/bgem3/src
test-lowest-core: LOWEST_EXTRA =

test-lowest: setup ## the tests on the lowest versions the packages' pyproject.toml files allow
test-lowest-core: setup ## bgem3's own tests on exactly its lower bounds
test-lowest test-lowest-core:
	rm -rf $(LOWEST) && $(PYTHON) -m venv $(LOWEST)
	$(BIN)/python tools/lowest_pins.py $(LOWEST_PINS) > $(LOWEST)/pins.txt
	printf '%s\n' $(foreach t,$(LOWEST_EXTRA),'$(t)') >> $(LOWEST)/pins.txt
	$(BIN)/uv pip compile $(LOWEST_IN) -c $(LOWEST)/pins.txt -o $(LOWEST)/requirements.txt \
		--quiet --python $(LOWEST)/bin/python $(foreach p,$(notdir $(PACKAGES)),--no-emit-package $(p))
	$(BIN)/uv pip install -q --python $(LOWEST)/bin/python -r $(LOWEST)/requirements.txt
	$(BIN)/uv pip install -q --python $(LOWEST)/bin/python --no-deps $(LOWEST_EDITABLES)
	$(BIN)/uv pip freeze --python $(LOWEST)/bin/python > $(LOWEST)/versions.txt
	$(BIN)/python -m bgem3.testing $(LOWEST)/tiny > /dev/null
	HF_HUB_OFFLINE=1 BGEM3_TEST_CHECKPOINT=$(CURDIR)/$(LOWEST)/tiny BGEM3_MODEL=$(CURDIR)/$(LOWEST)/tiny \
		$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

lint: setup ## ruff and mypy
	$(BIN)/ruff check packages tests benchmarks examples notebooks tools conftest.py docs
	$(BIN)/mypy
	cd packages/llama-index-bgem3/src && $(CURDIR)/$(BIN)/mypy --strict --explicit-package-bases llama_index/*/bgem3/*.py

# The documentation site (docs/, Sphinx + MyST): offline, warnings as errors, every
# cross-reference checked (-n); open docs/_build/html/index.html.
docs: setup ## build the documentation site into docs/_build/html (offline, warnings as errors)
	$(BIN)/python benchmarks/report.py --out docs/explanation/_generated
	HF_HUB_OFFLINE=1 $(BIN)/python -m sphinx -b html -W -n --keep-going -q docs docs/_build/html

dist-check: setup ## build wheels + sdists (dist/), twine check, install them in a clean venv, smoke test
	$(BIN)/python tools/dist_check.py --torch "$(TORCH)"

# The demo runs on BAAI/bge-m3 when it is cached or the hub answers, else at once on a tiny
# random checkpoint (examples/demo_model.py says which); BGEM3_MODEL=... overrides both.
demo: setup ## index the sample corpus, search it, score (BAAI/bge-m3 if reachable; BGEM3_MODEL=...)
	@model="$${BGEM3_MODEL:-$$($(BIN)/python examples/demo_model.py --tiny $(TINY))}" && set -x && \
	$(BIN)/python examples/quickstart.py --model "$$model" && \
	$(BIN)/bgem3 index examples/corpus --out .cache/demo-index --model "$$model" && \
	$(BIN)/bgem3 search .cache/demo-index "Where is the Eiffel Tower?" -k 5 && \
	$(BIN)/bgem3 search .cache/demo-index "混合检索" -k 3 --mode sparse && \
	$(BIN)/bgem3 score "What is hybrid search?" "Hybrid retrieval combines dense and sparse vectors." \
		"La tour Eiffel est à Paris." --model "$$model"

bench: setup ## encoding speed against FlagEmbedding (BENCH_ARGS="--workloads W1 --threads 1")
	$(BIN)/python benchmarks/encode.py $(BENCH_ARGS)

clean: ## remove the venv and caches
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache docs/_build
