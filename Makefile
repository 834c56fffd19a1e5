# The two commands the README promises on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing (torch pinned to the CPU wheel, installed first) and are idempotent after.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mappa-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[coach,dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m mappa_envs.cli play math-chat --team scripted --episodes 3 --tasks embedded:eval

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check mappa_envs mappa_train tests bench
	$(VENV)/bin/ruff format --check mappa_envs mappa_train tests bench

bench: setup
	$(PY) bench/workspace.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
