# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean-cache lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# reinstall only when the dependencies change; constraints.txt holds the exact versions (scripts/lock.sh writes it)
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# re-resolve pyproject.toml into constraints.txt (a fresh venv; a few minutes)
lock:
	bash scripts/lock.sh

demo: $(VENV)/.installed
	$(BIN)/fruitlens demo

# the browser tests (report, Prefect UI) need Debian's chromium; without root they skip and say why
test: $(VENV)/.installed
	-bash scripts/install-chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check fruitlens tasks flows tests benchmarks scripts

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_index.py
