# gridflow developer entry points. `make test` is what CI runs (.ci/run): the lint, then the tests.
# The venv is (re)installed when pyproject.toml changes; the code itself is an editable install.

PYTHON ?= python3
PYTEST_ARGS ?=
# the packages mypy checks (configured in pyproject.toml, [tool.mypy])
TYPED  := gridflow producers processors sinks infra audit dashboard bench accounts workbench mobile demo bootstrap objectstore
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo up down status lint clean-venv browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The lint first: a tree that does not lint does not get tested.
# The session fixture in tests/conftest.py starts Kafka, MinIO and PostgreSQL (or reuses a
# running stack) and stops what it started.
test: lint browser
	$(BIN)/python -m pytest tests/ $(PYTEST_ARGS)

# Debian's Chromium and a CJK font for tests/browser/ (apt, once; instant when present)
browser:
	tests/browser/install_chromium.sh

demo: install
	$(BIN)/gridflow demo

up: install
	$(BIN)/gridflow up

down: install
	$(BIN)/gridflow down

status: install
	$(BIN)/gridflow status

# ruff over the whole tree, mypy over the packages, the layering contracts (pyproject.toml,
# [tool.importlinter]: the core imports no adapter, the adapters not each other)
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy $(TYPED)
	$(BIN)/lint-imports --no-cache
	@# pytest imports test modules by basename: two test files of one name stop collection
	@dup=$$(find tests -name 'test_*.py' -printf '%f\n' | sort | uniq -d); \
	  if [ -n "$$dup" ]; then echo "test files with the same name: $$dup" >&2; exit 1; fi

clean-venv:
	rm -rf $(VENV)
