# migrate-bot — two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-full lint bench clean services install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

services:
	@bash scripts/ensure-services.sh

## The whole runbook locally: a terminal Slack, the bot, PostgreSQL, a demo app. No Slack account needed.
demo: $(STAMP) services
	$(BIN)/migrate-bot demo

## The test suite against real PostgreSQL, Redis, moto server and the Slack stand-in.
test: $(STAMP) services
	$(BIN)/pytest -q

## The chaos / fuzz suite at full size (slow).
test-full: $(STAMP) services
	MIGRATE_BOT_FULL=1 $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bot handlers jobs tests
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache .demo
