"""R1: a storm of concurrent clicks on every mutating button gives exactly one execution and one audit entry.

Real parts: the bot as a subprocess, signed clicks over HTTP from 100 threads, Redis, PostgreSQL, moto.
"""

from __future__ import annotations

import concurrent.futures
import time

from tests.aws_world import client
from tests.chaos import size, step_starts
from tests.e2e import (
    MANUAL_ITEMS,
    blocks_text,
    click,
    finish_way_back,
    message,
    migration_rows,
    run_step,
    settle,
    start,
)
from tests.harness import ALICE, BOB, CAROL, PROD_CHANNEL, wait_until

CLICKS = size(100, 100)


def storm(world, ts, users, action_id, n=CLICKS):
    """`n` clicks at once on the message exactly as it is shown now, spread over `users`."""
    settle(world, ts)
    shown = message(world, ts)
    sender = world["sender"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        codes = list(pool.map(lambda i: sender.click(users[i % len(users)], channel_id=PROD_CHANNEL, message=shown,
                                                     action_id=action_id).status_code, range(n)))
    assert codes == [200] * n


def quiet(world, run_id, seconds=1.0, timeout=30):
    """Wait until the run's version has not moved for `seconds` (every queued click has been handled)."""
    store = world["store"]
    deadline = time.monotonic() + timeout
    last, since = store.get(run_id).version, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = store.get(run_id).version
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
    raise AssertionError("the run kept changing")


def entries(store, run_id, action, outcome=None):
    return [e for e in store.audit_entries(run_id) if e.action == action and (outcome is None or e.outcome == outcome)]


class TestClickStorms:
    def test_every_mutating_button_executes_once(self, fresh):
        """100 simultaneous clicks on Take backup, Approve, Run migrate, a rollback option and its step each act once."""
        world = fresh
        store = world["store"]
        world["app"].state.fail_path = "/counsel"  # the smoke test fails, so a rollback is offered
        run_id, ts = start(world, "prod --image v2")
        for item in MANUAL_ITEMS:
            click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)

        # Take backup: one snapshot, one step.start.
        storm(world, ts, [ALICE, BOB], "step_run:backup")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
        quiet(world, run_id)
        snapshots = client(world["moto"], "rds").describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
        assert len([s for s in snapshots if run_id in s["DBSnapshotIdentifier"]]) == 1
        assert len(step_starts(store, run_id, "backup")) == 1
        assert store.get(run_id).step("backup").attempt == 1

        # Approve: one approval from two eligible people clicking 100 times.
        wait_until(lambda: '"approve"' in blocks_text(world, ts), timeout=30)
        storm(world, ts, [BOB, CAROL], "approve")
        wait_until(lambda: store.get(run_id).status.value == "running")
        quiet(world, run_id)
        assert len(store.get(run_id).approvals) == 1
        assert len(entries(store, run_id, "run.approve")) == 1

        run_step(world, run_id, ts, "maintenance_on")

        # Run migrate: one step.start, one _prisma_migrations row per migration.
        wait_until(lambda: "step_run:migrate" in blocks_text(world, ts))
        storm(world, ts, [ALICE, BOB], "step_run:migrate")
        wait_until(lambda: store.get(run_id).step("migrate").status.value == "succeeded", timeout=60)
        quiet(world, run_id)
        names = [r[0] for r in migration_rows(world)]
        assert len(names) == len(set(names)) == 3
        assert len(step_starts(store, run_id, "migrate")) == 1

        run_step(world, run_id, ts, "deploy")
        run_step(world, run_id, ts, "smoke", expect="failed")

        # A rollback option: one rollback.request, one rollback step appended.
        wait_until(lambda: "rollback:previous" in blocks_text(world, ts))
        storm(world, ts, [ALICE, BOB], "rollback:previous")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        quiet(world, run_id)
        assert len(entries(store, run_id, "rollback.request")) == 1
        assert [s.name for s in store.get(run_id).steps if s.phase == "rollback"] == [
            "rb_previous_version", "rb_maintenance_off", "rb_smoke"]

        # ...and its Run button: one execution, one task-definition switch.
        wait_until(lambda: "step_run:rb_previous_version" in blocks_text(world, ts))
        registered = len(client(world["moto"], "ecs").list_task_definitions(familyPrefix="api")["taskDefinitionArns"])
        storm(world, ts, [ALICE, BOB], "step_run:rb_previous_version")
        wait_until(lambda: store.get(run_id).step("rb_previous_version").status.value == "succeeded", timeout=60)
        quiet(world, run_id)
        assert len(step_starts(store, run_id, "rb_previous_version")) == 1
        assert len(client(world["moto"], "ecs").list_task_definitions(familyPrefix="api")["taskDefinitionArns"]) \
            == registered
        service = client(world["moto"], "ecs").describe_services(cluster="prod", services=["api"])["services"][0]
        assert service["taskDefinition"].endswith("api:1")
        finish_way_back(world, run_id, ts)  # maintenance off (the previous version already replaced it), smoke

        # The thread is not flooded: no line per losing click.
        denied = [e for e in store.audit_entries(run_id) if e.outcome == "denied"]
        assert denied == [], [(e.actor, e.action, e.detail) for e in denied[:5]]
        settle(world, ts)
        assert "Traceback" not in world["bot"].logs()
