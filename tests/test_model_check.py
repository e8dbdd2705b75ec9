"""No dead ends, by model checking: every run state the rules allow can still reach a safe end.

An exhaustive walk over the pure rules (bot.runbook.rules). From a new run it applies every action a permitted
person can take (checklist ticks, approvals, step clicks, skips, checks by hand, rollbacks and their second
approvals, withdrawals, aborts, cancels, closes) and every way a step can end (success, failure, a hold, a crash
that leaves it interrupted), in any order. The rules refuse what is not allowed; what they allow is a state.

Checked on every state reached:
- some sequence of allowed actions from it reaches a terminal state (no dead end);
- every terminal state has maintenance mode off, and its environment lock released (terminal = released);
- no allowed action reaches "succeeded" while a migration is not applied or a step failed or was interrupted.

`make test` walks a set of environments that explores more than 10,000 states; MIGRATE_BOT_FULL=1 walks every
combination of enabled steps, approvals and down.sql.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from bot.errors import Refusal
from bot.runbook.rules import (
    CHECKLIST_KEYS,
    STEP_CONFIRMS_ITEM,
    TERMINAL,
    BackupResult,
    DeployResult,
    DownSql,
    MigrateResult,
    Policy,
    RollbackOption,
    Run,
    RunStatus,
    StepResult,
    StepStatus,
    Transition,
    approve,
    approve_rollback,
    begin_step,
    cancel,
    close_monitored,
    confirm_item,
    fail_step,
    finish_step,
    hold_step,
    interrupt_step,
    maintenance_may_be_on,
    new_run,
    override_hold,
    request_rollback,
    resolve_interrupted,
    skip_step,
    withdraw_rollback,
)

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
REQUESTER, APPROVER, APPROVER2 = "UREQ", "UAPP", "UAPP2"
PEOPLE = (REQUESTER, APPROVER, APPROVER2)
POLICY = Policy(frozenset({REQUESTER}), frozenset({APPROVER, APPROVER2}), 1)
FINGERPRINT = "f" * 64
MANUAL_ITEMS = [key for key in CHECKLIST_KEYS if key not in STEP_CONFIRMS_ITEM.values()]
FULL = bool(os.environ.get("MIGRATE_BOT_FULL"))

Action = tuple[str, Callable[[], Transition]]


def key(run: Run) -> tuple[object, ...]:
    """What tells two states apart for the rules (not clocks, versions or attempt counts)."""
    rollback = run.rollback
    return (
        run.status, tuple(sorted(run.checklist)), tuple(sorted(a.by for a in run.approvals)),
        tuple((s.name, s.phase, s.status) for s in run.steps),
        (rollback.option, rollback.status, rollback.requested_by) if rollback else None,
        run.facts.hold.step if run.facts.hold else None, run.facts.hold_override is not None,
    )


def result_for(name: str, with_down: bool) -> StepResult:
    if name == "migrate":
        return MigrateResult(applied=["20261201000000_add_col"], with_down=with_down)
    if name == "deploy":
        return DeployResult(previous_task_definition="api:1", task_definition="api:2")
    if name == "backup":
        return BackupResult(method="pg_dump", identifier="b", location="/b", verified=True)
    return StepResult()


def actions(run: Run, *, with_down: bool, ecs: bool, smoke: bool) -> Iterator[Action]:
    """Every action anyone could try now; the rules decide which are allowed."""
    for item in MANUAL_ITEMS:
        if item not in run.checklist:
            for who in PEOPLE:
                yield f"{who} ticks {item}", lambda i=item, w=who: confirm_item(run, item=i, user=w, now=NOW)
    for who in PEOPLE:
        yield f"{who} approves", lambda w=who: approve(run, user=w, policy=POLICY, groups=(), now=NOW,
                                                        fingerprint=FINGERPRINT)
    for step in run.steps:
        name = step.name
        if step.status is StepStatus.RUNNING:  # how a running step can end, including a crash of its process
            yield f"{name} succeeds", lambda n=name: finish_step(run, name=n, result=result_for(n, with_down),
                                                                  now=NOW)
            yield f"{name} fails", lambda n=name: fail_step(run, name=n, error="boom", now=NOW)
            yield f"{name} interrupted", lambda n=name: interrupt_step(run, name=n, now=NOW, why="kill -9")
            if name == "migrate":
                yield "migrate held", lambda: hold_step(run, name="migrate", now=NOW, reason="lock",
                                                        blockers=["pid 1"])
            continue
        yield f"run {name}", lambda n=name: begin_step(run, name=n, user=REQUESTER, owner="p1", now=NOW)
        yield f"skip {name}", lambda n=name: skip_step(run, name=n, user=REQUESTER, now=NOW)
        yield f"checked {name}", lambda n=name: resolve_interrupted(run, name=n, user=REQUESTER, now=NOW, done=True)
        yield f"reset {name}", lambda n=name: resolve_interrupted(run, name=n, user=REQUESTER, now=NOW, done=False)
    yield "proceed anyway", lambda: override_hold(run, user=APPROVER, policy=POLICY, groups=(), now=NOW)
    down = [DownSql(name="20261201000000_add_col", checksum="d" * 64)]
    for option in RollbackOption:
        yield f"request {option.value}", lambda o=option: request_rollback(
            run, option=o, user=REQUESTER, reason="smoke failed", now=NOW, ecs=ecs, smoke=smoke, policy=POLICY,
            groups=(), down=down, down_fingerprint=FINGERPRINT)
    yield "second approver confirms", lambda: approve_rollback(run, user=APPROVER, policy=POLICY, groups=(), now=NOW,
                                                               ecs=ecs, smoke=smoke, down_fingerprint=FINGERPRINT)
    yield "withdraw rollback", lambda: withdraw_rollback(run, user=REQUESTER, now=NOW)
    yield "cancel", lambda: cancel(run, user=REQUESTER, now=NOW, reason="not today")
    yield "looks good", lambda: close_monitored(run, user=REQUESTER, now=NOW)


def safe_success(run: Run) -> bool:
    """Succeeded only with the migrations applied, every forward step done or skipped, maintenance off."""
    forward = [s for s in run.steps if s.phase == "forward"]
    migrate = next(s for s in forward if s.name == "migrate")
    return (migrate.status is StepStatus.SUCCEEDED
            and all(s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in forward)
            and not maintenance_may_be_on(run))


def explore(steps: dict[str, bool], *, approvals: int, with_down: bool,
            without: tuple[str, ...] = ()) -> tuple[int, int]:
    """Walk every state reachable from a new run in one environment; returns (states, transitions).

    ``without``: actions whose label starts with one of these are not tried (to show the check can fail)."""
    ecs, smoke = steps["deploy"], steps["smoke"]
    start = new_run(run_id="prod-1", env="prod", requested_by=REQUESTER, channel="C1", now=NOW,
                    approvals_required=approvals, steps_enabled=steps).run
    states: dict[tuple[object, ...], Run] = {key(start): start}
    edges: dict[tuple[object, ...], set[tuple[object, ...]]] = {}
    queue = deque([start])
    transitions = 0
    while queue:
        run = queue.popleft()
        here = key(run)
        edges[here] = set()
        if run.is_terminal:
            assert not maintenance_may_be_on(run), f"ended {run.status.value} with maintenance mode on: {here}"
            assert run.status in TERMINAL
        for label, act in actions(run, with_down=with_down, ecs=ecs, smoke=smoke):
            if label.startswith(without):
                continue
            try:
                new = act().run
            except Refusal:
                continue
            transitions += 1
            if new.status is RunStatus.SUCCEEDED:
                assert safe_success(new), f"{label} from {here} succeeded unsafely"
            there = key(new)
            edges[here].add(there)
            if there not in states:
                states[there] = new
                queue.append(new)
    # No dead ends: walk back from the terminal states; every state must be among those that reach one.
    back: dict[tuple[object, ...], set[tuple[object, ...]]] = {k: set() for k in states}
    for source, targets in edges.items():
        for target in targets:
            back[target].add(source)
    good = {k for k, run in states.items() if run.is_terminal}
    frontier = deque(good)
    while frontier:
        for source in back[frontier.popleft()]:
            if source not in good:
                good.add(source)
                frontier.append(source)
    stuck = [k for k in states if k not in good]
    assert not stuck, f"{len(stuck)} state(s) cannot reach a safe end, e.g. {stuck[0]}"
    return len(states), transitions


def environments() -> Iterator[tuple[dict[str, bool], int, bool]]:
    """The environments walked: every step enabled (the largest space, ~12,000 states) for `make test`; every
    combination of enabled steps, approvals and down.sql at full size."""
    flags = ("maintenance_on", "seed", "deploy", "smoke")
    for values in itertools.product((True, False), repeat=len(flags)):
        steps = dict(zip(flags, values, strict=True))
        steps["maintenance_off"] = steps["maintenance_on"]
        for approvals, with_down in itertools.product((1, 2), (True, False)):
            if FULL or (all(values) and approvals == 1 and with_down):
                yield steps, approvals, with_down


class TestNoDeadEnds:
    # Full size walks 64 environments (about 5 s each on this 2-vCPU host, more under load): the suite's 300 s per
    # test would cut it short on a slow day, so it gets its own budget; `make test` walks one and keeps the default.
    @pytest.mark.timeout(3600 if FULL else 300)
    def test_every_reachable_state_has_a_way_to_a_safe_end(self):
        """Exhaustive walk of the rules: no dead end, no unsafe success, maintenance off at every end."""
        started = time.perf_counter()
        total_states = total_transitions = 0
        for steps, approvals, with_down in environments():
            states, transitions = explore(steps, approvals=approvals, with_down=with_down)
            total_states += states
            total_transitions += transitions
        elapsed = time.perf_counter() - started
        print(f"\nmodel check: {total_states} states, {total_transitions} transitions in {elapsed:.1f} s")
        assert total_states >= (100_000 if FULL else 10_000)

    def test_the_walk_finds_a_dead_end_when_one_exists(self):
        """The check can fail: with every rollback taken away, a failed migration under maintenance is stuck."""
        steps = {"maintenance_on": True, "maintenance_off": True, "seed": False, "deploy": True, "smoke": True}
        with pytest.raises(AssertionError, match="cannot reach a safe end"):
            explore(steps, approvals=1, with_down=False, without=("request ", "second approver"))
