"""Scheduler entry points for the 24-hour watch (jobs are pickled, so they take only the run id)."""

from __future__ import annotations

import logging

from bot.context import Deps
from bot.runbook import watch
from jobs import scheduler

log = logging.getLogger(__name__)


def _deps() -> Deps:
    current = scheduler._current  # read at call time: the scheduler this process started, if any
    if current is None:
        raise RuntimeError("no scheduler is running in this process")
    return current.deps


def watch_tick(run_id: str) -> str:
    outcome = watch.watch_tick(_deps(), run_id)
    log.info("watch %s: %s", run_id, outcome)
    return outcome


def watch_end(run_id: str) -> str:
    return watch.watch_end(_deps(), run_id)
