# The two commands of the README. Both create ./.venv from the project's own files: the
# quickstart installs the service and its dependencies; test and lint add the test tools.
PYTHON ?= python3
VENV := .venv
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# pip's output, one short line per package (a failed install still fails the target).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PIP_LINES := sed -u -n -e 's/^Collecting \([^ ]*\).*/  collecting \1/p' \
	-e 's/^Processing .*\/\([^/]*\)\.whl.*/  collecting \1/p' \
	-e 's/^Installing collected packages:.*/  installing them (the longest step).../p' \
	-e 's/^Successfully installed.*/  done/p'
# pip's warning for each package about a configured index folder that does not exist (a
# machine's pip.conf) says nothing about tuner; its other messages pass through.
PIP_WARNINGS := grep -v --line-buffered "^WARNING: Location '.*' is ignored" >&2 || true

.PHONY: quickstart test install install-test lint

$(VENV)/bin/python:
	@echo "[1/3] creating ./$(VENV) with $(PYTHON)..."
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv \
	(apt-get install python3-venv) or set PYTHON=python3.11 or newer"; exit 1; }

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	@echo "[2/3] upgrading pip in ./$(VENV)..."
	@$(VENV)/bin/pip install --quiet --upgrade pip 2> >($(PIP_WARNINGS))
	@echo "[3/3] installing tuner and its dependencies into ./$(VENV) (about a minute, more while pip downloads)..."
	@PYTHONWARNINGS='ignore:Editable installation' $(VENV)/bin/pip install -e . 2> >($(PIP_WARNINGS)) | $(PIP_LINES)
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "installing the test tools into ./$(VENV) (pytest, Playwright, mypy, ruff...)..."
	@PYTHONWARNINGS='ignore:Editable installation' $(VENV)/bin/pip install -e '.[test]' 2> >($(PIP_WARNINGS)) | $(PIP_LINES)
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

quickstart: install
	$(VENV)/bin/tuner quickstart

test: install-test
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE-ci} TUNER_TEST_POSTGRES_URL=$${TUNER_TEST_POSTGRES_URL-$(PG_URL)} $(VENV)/bin/pytest

lint: install-test
	$(VENV)/bin/ruff check tuner api tests bench
	$(VENV)/bin/mypy tuner api
