"""Starts and stops the bot's background jobs with the server process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.context import Deps
from jobs.heartbeat import start as start_heartbeat
from jobs.scheduler import start_scheduler, stop_scheduler

log = logging.getLogger(__name__)


@dataclass
class Background:
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    extra_stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        self.stop_event.set()
        for fn in self.extra_stops:
            try:
                fn()
            except Exception as exc:  # stopping must never raise
                log.warning("background stop failed: %s", type(exc).__name__)


def start_background_jobs(deps: Deps) -> Background:
    """Heartbeat + reaper for step ownership (see jobs.heartbeat), and the reminder scheduler (jobs.scheduler)."""
    background = Background()
    background.threads.append(start_heartbeat(deps, background.stop_event))
    if deps.config.scheduler.enabled:
        start_scheduler(deps)
        background.extra_stops.append(stop_scheduler)
    return background
