# Thresher — `make demo` runs it, `make test` tests it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo serve test lint pytest bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[ml,dev]'
	touch $(STAMP)

install: $(STAMP)

## Build the demo dataset, create an admin account and serve on http://127.0.0.1:8000 (SQLite).
demo: install
	$(BIN)/thresher demo

serve: install
	$(BIN)/thresher serve

## Lint, type-check and run the whole test suite (SQLite and PostgreSQL, browser tests included).
test: install lint pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

## Benchmarks: print measured numbers, write bench/results/*.json (`make bench BENCH=import` runs one).
bench: install
	$(BIN)/python bench/run.py $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
