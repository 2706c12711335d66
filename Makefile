# Two commands for a newcomer: `make demo` and `make test`. Everything else sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
TOOLS := tools/node_modules/.installed
NODE_CLIENT := clients/node/node_modules/.installed
ARGS ?=

.PHONY: setup demo test lint gen check-gen pytest bench chaos soak clean

# The demo needs the service's own packages only (43, not the 83 with the dev tools).
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): $(RUNTIME) pyproject.toml clients/python/pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -e clients/python
	touch $@

$(TOOLS): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(TOOLS) $(NODE_CLIENT)

demo: $(RUNTIME)
	$(BIN)/amperity-signal demo $(ARGS)

gen: setup
	scripts/gen.sh generated

check-gen: setup
	scripts/check-gen.sh

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy server generated/datafly tests clients/python/amperity_signal_client
	tools/node_modules/.bin/buf lint

# Bytecode is written for the run even where the environment says not to (some CI images
# set PYTHONDONTWRITEBYTECODE): every process a test starts would compile the project's
# modules again (~0.15 s of CPU each), and collecting the tests took 12-14 s instead of 6.
pytest: setup
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q

test: lint check-gen pytest

bench: setup
	$(BIN)/python -m tests.benchmarks.run $(ARGS)

chaos: setup
	CHAOS_PROFILE=long $(BIN)/pytest -q tests/reliability $(ARGS)

soak: setup
	$(BIN)/python -m tests.reliability.soak $(ARGS)

clean:
	rm -rf $(VENV) tools/node_modules .mypy_cache .ruff_cache .pytest_cache artifacts
