# migrate-bot — two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What is installed, from which hash-checked lock (requirements/, written by `make lock`): the demo needs the
# runtime only; tests and linters need the test/dev lock, a superset with the same runtime versions.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet $(LOCK_ARGS)

.PHONY: demo test test-full lint bench clean services install install-dev lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The project itself goes in without dependencies and without build isolation: setuptools comes from the lock too.
# --no-compile: Python compiles each module on its first import instead, which halves the demo's install time.
$(RUNTIME_STAMP): pyproject.toml requirements/runtime.txt | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile --require-hashes -r requirements/runtime.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): pyproject.toml requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@ $(RUNTIME_STAMP)

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

## Rewrite both locks from pyproject.toml after adding a dependency there (pins already locked stay; LOCK_ARGS=--upgrade
## moves everything to the newest allowed versions); commit the result.
lock: $(DEV_STAMP)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) -o requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra test --extra dev \
		-c requirements/runtime.txt $(LOCK_FLAGS) -o requirements/dev.txt

services:
	@bash scripts/ensure-services.sh

## The whole runbook locally: a terminal Slack, the bot, PostgreSQL, a demo app. No Slack account needed.
demo: $(RUNTIME_STAMP) services
	$(BIN)/migrate-bot demo

## The test suite against real PostgreSQL, Redis, moto server and the Slack stand-in.
test: $(DEV_STAMP) services
	$(BIN)/pytest -q

## The chaos / fuzz suite at full size (slow).
test-full: $(DEV_STAMP) services
	MIGRATE_BOT_FULL=1 $(BIN)/pytest -q

## Benchmarks against their baselines (full size: see BENCHMARKS.md; BENCH_ARGS=--quick for a smoke run).
bench: $(DEV_STAMP) services
	@for b in p1_ack_latency p1_click_to_update p2_backup p3_native_migrate p4_reminders p5_safety_review p6_big_calendar p7_big_history; do \
		$(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; done

lint: $(DEV_STAMP)
	$(BIN)/ruff check bot handlers jobs tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile

## What earlier demos left behind (Redis keys under a demo prefix whose demo is not running, the demo databases),
## then the virtualenv, caches and .demo/. Nothing else in Redis or PostgreSQL is touched.
clean:
	-@if [ -x $(BIN)/python ]; then $(BIN)/python -m bot.devtools.demo clean; \
	else echo "no $(VENV): demo leftovers in Redis and PostgreSQL were not looked for"; fi
	rm -rf $(VENV) .pytest_cache .demo
