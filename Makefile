# The two commands of the README. Both create ./.venv from the project's own files.
PYTHON ?= python3
VENV := .venv
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: quickstart test install lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/tuner quickstart

test: install
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE-ci} TUNER_TEST_POSTGRES_URL=$${TUNER_TEST_POSTGRES_URL-$(PG_URL)} $(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check tuner api tests bench
	$(VENV)/bin/mypy tuner api
