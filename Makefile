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

## Benchmarks against their baselines (full size: see BENCHMARKS.md; BENCH_ARGS=--quick for a smoke run).
bench: $(STAMP) services
	@for b in p1_ack_latency p2_backup p3_native_migrate p4_reminders p5_safety_review; do \
		$(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check bot handlers jobs tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture
	$(BIN)/hadolint Dockerfile

## What earlier demos left behind (Redis keys under a demo prefix whose demo is not running, the demo databases),
## then the virtualenv, caches and .demo/. Nothing else in Redis or PostgreSQL is touched.
clean:
	-@if [ -x $(BIN)/python ]; then $(BIN)/python -m bot.devtools.demo clean; \
	else echo "no $(VENV): demo leftovers in Redis and PostgreSQL were not looked for"; fi
	rm -rf $(VENV) .pytest_cache .demo
