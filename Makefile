# gridflow developer entry points. `make test` is what CI runs (.ci/run).
# The venv is (re)installed when pyproject.toml changes; the code itself is an editable install.

PYTHON ?= python3
PYTEST_ARGS ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo up down status lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The session fixture in tests/conftest.py starts Kafka, MinIO and PostgreSQL (or reuses a
# running stack) and stops what it started.
test: install
	$(BIN)/python -m pytest tests/ $(PYTEST_ARGS)

demo: install
	$(BIN)/gridflow demo

up: install
	$(BIN)/gridflow up

down: install
	$(BIN)/gridflow down

status: install
	$(BIN)/gridflow status

lint: install
	$(BIN)/ruff check infra tests

clean-venv:
	rm -rf $(VENV)
