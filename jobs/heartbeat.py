"""Liveness: this process says it is alive; steps and timeline posts left by a dead process are resolved."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bot.calendar.delivery import recover_interrupted
from bot.context import Deps
from bot.edge import contained
from bot.errors import AlreadyDone, BotError
from bot.runbook.rules import Run, StepStatus, Transition, abandon_rehearsal, interrupt_abandoned
from bot.store.liveness import Liveness

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 3.0
ALIVE_TTL_S = 10


def is_alive(deps: Deps, instance: str) -> bool:
    return instance == deps.instance_id or Liveness(deps.store).is_alive(instance)


def beat(deps: Deps) -> None:
    Liveness(deps.store).beat(deps.instance_id, ttl_s=ALIVE_TTL_S)


WHY_INTERRUPTED = "the bot process running it stopped; check what it did, then retry or mark it done"


def reap_interrupted(deps: Deps) -> list[tuple[str, str]]:
    """Mark RUNNING steps whose owner no longer beats as INTERRUPTED, and give up its rehearsals; a human decides
    what happens next."""
    reaped: list[tuple[str, str]] = []
    for run in deps.store.active_runs():
        rehearsing = run.facts.rehearsing
        if rehearsing is not None and not is_alive(deps, rehearsing.owner):
            try:
                deps.store.apply(run.id, _abandon_if_still_owned(deps, rehearsing.owner))
                reaped.append((run.id, "rehearsal"))
                deps.publish(run.id)
            except AlreadyDone:
                pass
            except BotError as exc:
                log.warning("could not give up the rehearsal of %s: %s", run.id, exc)
        for step in run.steps:
            if step.status is not StepStatus.RUNNING or not step.owner:
                continue
            if is_alive(deps, step.owner):
                continue
            try:
                deps.store.apply(run.id, _interrupt_if_still_owned(deps, step.name, step.owner))
            except AlreadyDone:
                continue
            except BotError as exc:
                log.warning("could not mark %s/%s interrupted: %s", run.id, step.name, exc)
                continue
            reaped.append((run.id, step.name))
            deps.publish(run.id)
    return reaped


def _abandon_if_still_owned(deps: Deps, owner: str) -> Callable[[Run], Transition]:
    def change(current: Run) -> Transition:
        return abandon_rehearsal(current, owner=owner, now=deps.clock())

    return change


def _interrupt_if_still_owned(deps: Deps, name: str, owner: str) -> Callable[[Run], Transition]:
    def change(current: Run) -> Transition:
        return interrupt_abandoned(current, name=name, owner=owner, now=deps.clock(), why=WHY_INTERRUPTED)

    return change


def resync_stale_messages(deps: Deps, limit: int = 50) -> list[str]:
    """Re-publish recent runs whose Slack message or thread is behind Redis.

    A sync can fail beyond the Slack client's retries (a burst of 429s/5xx), or the process can die between
    a state change and its publish; without this the message would show an old state until the next click.
    """
    synced: list[str] = []
    # One round trip picks them (runs never posted and over are left out; an active run whose first
    # chat.postMessage never got through is behind), so a quiet tick parses no run at all.
    for run_id in deps.store.runs_behind(limit=limit):
        deps.publish(run_id)
        synced.append(run_id)
    return synced


def start(deps: Deps, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        ticks = 0
        while not stop.is_set():
            with contained("heartbeat"):
                beat(deps)
                if ticks % 2 == 0:
                    reap_interrupted(deps)
                    recover_interrupted(deps, alive=lambda instance: is_alive(deps, instance))
                if ticks > 0:
                    resync_stale_messages(deps)
            ticks += 1
            stop.wait(HEARTBEAT_EVERY_S)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread
