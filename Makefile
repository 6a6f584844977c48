# One task runner for people and CI. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint format typecheck check demo bench mutate handmade clean

# Tests run in parallel (pytest-xdist) and in random order (pytest-randomly, which
# prints the seed: reproduce an order with `make test PYTEST_ARGS=--randomly-seed=N`).
WORKERS ?= auto
PYTEST_ARGS ?=
# make mutate MODULES="src/exectrack/query.py"   (default: every module in mutation.toml)
# make mutate BASE=main                         (only the core modules changed since main)
# make mutate FRESH=1                           (forget earlier results: after adding tests)
MODULES ?=
BASE ?=
FRESH ?=

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,bench,server,heartbeat]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples scripts
	$(PY) -m ruff format --check src tests bench examples scripts

format: $(STAMP)
	$(PY) -m ruff format src tests bench examples scripts
	$(PY) -m ruff check --fix src tests bench examples scripts

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

# The demo agent host; `make demo DEMO_ARGS="--duration 60"` stops by itself.
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m exectrack.cli demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) bench/write_path.py

# Mutation testing (mutmut + hand-made mutants), one module at a time; slow, not in CI.
# The report lands in .mutmut/report.md.
mutate: $(STAMP)
	$(PY) scripts/mutate.py $(MODULES) $(if $(BASE),--changed $(BASE)) $(if $(FRESH),--fresh)

handmade: $(STAMP)
	$(PY) scripts/handmade_mutants.py $(MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .mutmut mutants
