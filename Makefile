# Two commands for a fresh clone: `make run` and `make test`. Both create .venv
# and install what they need; only Python 3.11+ and make are assumed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE_URL ?= sqlite:///var/idledger.db
PORT ?= 8000
# Test processes: most tests wait on servers, browsers and PostgreSQL, so two
# processes halve the wall time on two cores (each test has its own store and port).
TEST_JOBS ?= 2

.PHONY: run test test-fast lint fmt clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# The HTTP API on SQLite under ./var/ (prints an organization key if none is set).
run: $(VENV)/.installed
	mkdir -p var
	$(BIN)/idledger serve --store-url $(STORE_URL) --port $(PORT)

test: lint
	$(BIN)/pytest -n $(TEST_JOBS)

test-fast: lint
	$(BIN)/pytest -n $(TEST_JOBS) -m "not slow"

# Benchmarks (not part of `make test`): write BENCHMARKS.md. PostgreSQL must be up;
# wrk (Debian's package) is installed if missing, for the HTTP lookups.
bench-quick: $(VENV)/.installed-dev
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 || true
	$(BIN)/python -m bench --quick

bench: $(VENV)/.installed-dev
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 || true
	$(BIN)/python -m bench

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
