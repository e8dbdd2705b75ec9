"""Scheduler entry points for the 24-hour watch (jobs are pickled, so they take only the run id)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _deps():  # type: ignore[no-untyped-def]
    from jobs.scheduler import _current

    if _current is None:
        raise RuntimeError("no scheduler is running in this process")
    return _current.deps


def watch_tick(run_id: str) -> str:
    from bot.watch import watch_tick as tick

    outcome = tick(_deps(), run_id)
    log.info("watch %s: %s", run_id, outcome)
    return outcome


def watch_end(run_id: str) -> str:
    from bot.watch import watch_end as end

    return end(_deps(), run_id)
