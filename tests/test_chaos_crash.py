"""R2: `kill -9` the bot in the middle of each mutating step; after a restart the step is *interrupted*.

Nothing re-runs without a human click, no audit entry is lost, and the run can still be brought to a correct end.
Steps are made slow by real means: the bot reaches AWS (moto) over a slow link, and the migration sleeps in
PostgreSQL. The CI subset kills during migrate and deploy; MIGRATE_BOT_FULL=1 adds backup, maintenance and restore.
"""

from __future__ import annotations

import psycopg
import pytest

from bot.runbook.rules import DeployResult, result_of
from tests.aws_world import client
from tests.chaos import FULL, SlowLink, step_starts
from tests.e2e import (
    MANUAL_ITEMS,
    approve,
    blocks_text,
    click,
    finish_way_back,
    migration_rows,
    ready_for_approval,
    run_step,
    settle,
    start,
)
from tests.harness import ALICE, BOB, PROD_CHANNEL, wait_until

SLOW = "20240401000000_slow_backfill"
_LINK: dict[str, SlowLink] = {}


@pytest.fixture(scope="module")
def moto_endpoint(moto_endpoint):
    """This module's bot reaches moto through a link the tests can slow down (and that counts AWS actions)."""
    link = SlowLink(moto_endpoint)
    _LINK["link"] = link
    yield link.url
    link.stop()


@pytest.fixture
def link(world):
    slow = _LINK["link"]
    slow.delay_s = 0.0
    yield slow
    slow.delay_s = 0.0


def add_slow_migration(world):
    directory = world["migrations"] / SLOW
    directory.mkdir()
    (directory / "migration.sql").write_text(
        'ALTER TABLE "User" ADD COLUMN "nickname" TEXT;\nSELECT pg_sleep(4);\n')


def crash_during(world, run_id, ts, name, *, until=lambda: True, user=ALICE):
    """Click Run on `name`, wait until it is running (and `until` holds), SIGKILL the bot, start it again.

    Returns the audit trail as it was at the moment of the kill.
    """
    store, bot = world["store"], world["bot"]
    wait_until(lambda: f"step_run:{name}" in blocks_text(world, ts), timeout=30)
    click(world, ts, user, f"step_run:{name}")
    wait_until(lambda: store.get(run_id).step(name).status.value == "running", timeout=30)
    wait_until(until, timeout=30)
    bot.kill()
    assert store.get(run_id).step(name).status.value == "running"
    before = [(e.id, e.action) for e in store.audit_entries(run_id)]
    bot.start()
    # The new process's reaper notices the dead owner once its heartbeat expires.
    wait_until(lambda: store.get(run_id).step(name).status.value == "interrupted", timeout=40, interval=0.2)
    settle(world, ts)
    text = blocks_text(world, ts)
    assert "⚠️" in text and f"step_run:{name}" in text, text[-1500:]
    if not name == "backup":  # the backup is retried from its checklist line
        assert f"step_done:{name}" in text and "Checked: it completed" in text
    after = [(e.id, e.action) for e in store.audit_entries(run_id)]
    assert after[:len(before)] == before, "an audit entry was lost"
    assert ("step.interrupted" in [a for _, a in after[len(before):]])
    assert len(step_starts(store, run_id, name)) == 1, "the step re-ran without a human click"
    return before


def ecs_service(world):
    return client(world["moto"], "ecs").describe_services(cluster="prod", services=["api"])["services"][0]


def sleeping_in_postgres(world):
    """The migration's script is executing in PostgreSQL right now."""
    with psycopg.connect(world["admin"], autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                            ("%pg_sleep(4)%",)).fetchone()[0] > 0


def migrate_and_mark_done(world, run_id, ts):
    """Kill mid-script; PostgreSQL still commits the script, so a human checks the schema and marks it done."""
    store = world["store"]
    crash_during(world, run_id, ts, "migrate", until=lambda: sleeping_in_postgres(world))
    wait_until(lambda: not sleeping_in_postgres(world), timeout=15)
    with psycopg.connect(world["db_url"]) as conn:  # reality: the column is there
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' "
                            "AND column_name = 'nickname'").fetchone()[0] == 1
    assert [r for r in migration_rows(world) if r[0] == SLOW] == [(SLOW, False, False)]  # started, unfinished
    click(world, ts, BOB, "step_done:migrate")
    wait_until(lambda: store.get(run_id).step("migrate").status.value == "succeeded", timeout=30)
    assert len(step_starts(store, run_id, "migrate")) == 1
    # The bookkeeping agrees with reality, so later deploys are not blocked by a "failed" row (P3009).
    live = [r for r in migration_rows(world) if not r[2]]
    assert [r[0] for r in live].count(SLOW) == 1 and all(finished for _, finished, _ in live)


def deploy_and_retry(world, run_id, ts, link):
    """Kill during the deploy after UpdateService reached AWS; a human retries and it finishes once more."""
    store = world["store"]
    updates = link.count("UpdateService")
    link.delay_s = 1.0
    crash_during(world, run_id, ts, "deploy", until=lambda: link.count("UpdateService") > updates)
    link.delay_s = 0.0
    assert link.count("UpdateService") == updates + 1, "nothing may reach AWS again before a human clicks"
    click(world, ts, ALICE, "step_run:deploy")
    wait_until(lambda: store.get(run_id).step("deploy").status.value in ("succeeded", "failed"), timeout=60)
    step = store.get(run_id).step("deploy")
    assert step.status.value == "succeeded" and step.attempt == 2, step
    assert [e.action for e in step_starts(store, run_id, "deploy")] == ["step.start", "step.retry"]
    assert ecs_service(world)["taskDefinition"] == result_of(store.get(run_id), DeployResult).task_definition


class TestKillMidStep:
    def test_migrate_and_deploy_survive_a_kill(self, fresh, link):
        """Killed during migrate (marked done after checking the schema) and deploy (retried), the run still ends well."""
        world = fresh
        store = world["store"]
        add_slow_migration(world)
        run_id, ts = start(world, "prod --image v2")
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        migrate_and_mark_done(world, run_id, ts)
        deploy_and_retry(world, run_id, ts, link)
        run_step(world, run_id, ts, "smoke")
        run_step(world, run_id, ts, "maintenance_off")
        wait_until(lambda: store.get(run_id).status.value == "monitoring", timeout=30)
        assert "Traceback" not in world["bot"].logs()

    @pytest.mark.slow
    @pytest.mark.skipif(not FULL, reason="full chaos size: MIGRATE_BOT_FULL=1")
    def test_every_mutating_step_survives_a_kill(self, fresh, link):
        """Killed during backup, maintenance, migrate, deploy and restore, each is interrupted and resolved by a human."""
        world = fresh
        store, rds = world["store"], client(world["moto"], "rds")
        add_slow_migration(world)
        world["app"].state.fail_path = "/counsel"  # the smoke test fails, so the run rolls back with a restore
        run_id, ts = start(world, "prod --image v2")
        for item in MANUAL_ITEMS:
            click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)

        # Backup: killed after the snapshot was requested; the retry reuses it (one snapshot, not two).
        link.delay_s = 1.0
        snaps = link.count("CreateDBSnapshot")
        crash_during(world, run_id, ts, "backup", until=lambda: link.count("CreateDBSnapshot") > snaps)
        link.delay_s = 0.0
        click(world, ts, ALICE, "step_run:backup")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
        snapshots = rds.describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
        assert len([s for s in snapshots if run_id in s["DBSnapshotIdentifier"]]) == 1
        wait_until(lambda: '"approve"' in blocks_text(world, ts), timeout=60)
        approve(world, run_id, ts)

        # Maintenance: killed after ECS was switched; a human sees the maintenance task definition and marks done.
        link.delay_s = 1.0
        updates = link.count("UpdateService")
        crash_during(world, run_id, ts, "maintenance_on", until=lambda: link.count("UpdateService") > updates)
        link.delay_s = 0.0
        wait_until(lambda: "api-maintenance" in ecs_service(world)["taskDefinition"])
        click(world, ts, BOB, "step_done:maintenance_on")
        wait_until(lambda: store.get(run_id).step("maintenance_on").status.value == "succeeded")

        migrate_and_mark_done(world, run_id, ts)
        deploy_and_retry(world, run_id, ts, link)
        run_step(world, run_id, ts, "smoke", expect="failed")

        # Restore (Option 2 from the RDS snapshot): killed mid-restore, retried, the run ends rolled back.
        from tests.test_rollback_e2e import submit_restore

        submit_restore(world, ts, ALICE, "prod", "checkout is broken and the migration cannot be reverted")
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_scale_down")
        link.delay_s = 1.0
        restores = link.count("RestoreDBInstanceFromDBSnapshot")
        crash_during(world, run_id, ts, "rb_restore_db",
                     until=lambda: link.count("RestoreDBInstanceFromDBSnapshot") > restores)
        link.delay_s = 0.0
        click(world, ts, ALICE, "step_run:rb_restore_db")
        wait_until(lambda: store.get(run_id).step("rb_restore_db").status.value in ("succeeded", "failed"),
                   timeout=60)
        assert store.get(run_id).step("rb_restore_db").status.value == "succeeded", store.get(run_id).step(
            "rb_restore_db")
        run_step(world, run_id, ts, "rb_redeploy")
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back", timeout=30)
        assert store.active_run("prod") is None
        assert "Traceback" not in world["bot"].logs()


LATER = "20240402000000_later_column"


def killed_before_the_last_migration(world):
    """Approved run whose migrate is killed inside SLOW, with LATER still pending (no row) after the restart."""
    store = world["store"]
    add_slow_migration(world)
    directory = world["migrations"] / LATER
    directory.mkdir()
    (directory / "migration.sql").write_text('ALTER TABLE "User" ADD COLUMN "later" TEXT;\n')
    run_id, ts = start(world)
    ready_for_approval(world, run_id, ts)
    approve(world, run_id, ts)
    run_step(world, run_id, ts, "maintenance_on")
    crash_during(world, run_id, ts, "migrate", until=lambda: sleeping_in_postgres(world))
    wait_until(lambda: not sleeping_in_postgres(world), timeout=15)
    assert [r for r in migration_rows(world) if r[0] in (SLOW, LATER)] == [(SLOW, False, False)]
    assert store.get(run_id).approvals
    return run_id, ts


def retry_applies_the_rest(world, run_id, ts):
    """Retry on the interrupted migrate applies LATER under the same approval; nothing is voided."""
    store = world["store"]
    click(world, ts, ALICE, "step_run:migrate")
    wait_until(lambda: store.get(run_id).step("migrate").status.value in ("succeeded", "failed", "pending"),
               timeout=60)
    run = store.get(run_id)
    assert run.step("migrate").status.value == "succeeded", (run.step("migrate"), run.status)
    assert run.approvals and not [e for e in store.audit_entries(run_id) if e.action == "run.approval_voided"]
    live = [r for r in migration_rows(world) if not r[2]]
    assert [r[0] for r in live][-2:] == [SLOW, LATER] and all(finished for _, finished, _ in live)


class TestInterruptedMigrateIsChecked:
    def test_checked_it_completed_is_refused_while_a_migration_is_pending(self, fresh, link):
        """"Checked: it completed" after a kill: refused while LATER is pending; Retry applies it, run goes on."""
        world = fresh
        store, fake = world["store"], world["fake"]
        run_id, ts = killed_before_the_last_migration(world)
        seen = len(fake.ephemerals(user=BOB))
        click(world, ts, BOB, "step_done:migrate")
        wait_until(lambda: any(LATER in (e.get("text") or "") for e in fake.ephemerals(user=BOB)[seen:]),
                   timeout=30)
        text = next(e["text"] for e in fake.ephemerals(user=BOB)[seen:] if LATER in (e.get("text") or ""))
        assert "still pending" in text and "Retry" in text
        run = store.get(run_id)
        assert run.step("migrate").status.value == "interrupted" and run.status.value == "running"
        assert run.step("deploy").status.value == "pending"
        retry_applies_the_rest(world, run_id, ts)
        run_step(world, run_id, ts, "deploy")

    def test_resolve_applied_then_retry_keeps_the_approval(self, fresh, link):
        """The bot's own advice (`migrate resolve --applied SLOW`, then Retry) works without re-approval."""
        world = fresh
        run_id, ts = killed_before_the_last_migration(world)
        done = world["bot"].cli("migrate", "resolve", "--applied", SLOW, "--dir", str(world["migrations"]),
                                "--database-url", world["db_url"])
        assert done.returncode == 0, done.stderr
        retry_applies_the_rest(world, run_id, ts)


class TestInterruptedRehearsal:
    def test_a_rehearsal_cut_short_by_a_kill_can_be_run_again(self, fresh, link):
        """kill -9 while the backup's copy is rehearsed: after the restart the rehearsal is given up (not left
        "running" for ever), the message offers Rehearse again, and that rehearsal passes."""
        world = fresh
        store, fake, bot = world["store"], world["fake"], world["bot"]
        add_slow_migration(world)  # pg_sleep(4) in the copy keeps the rehearsal busy long enough to kill it
        before = len(fake.channel_messages(PROD_CHANNEL))
        assert world["sender"].slash(BOB, "pgprod", channel_id=PROD_CHANNEL).status_code == 200
        wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
        run_id, ts = store.active_run("pgprod").id, fake.channel_messages(PROD_CHANNEL)[-1]["ts"]
        wait_until(lambda: store.get(run_id).facts.pending is not None, timeout=20)
        assert store.get(run_id).facts.rehearsal_expected
        wait_until(lambda: "step_run:backup" in blocks_text(world, ts), timeout=30)
        click(world, ts, BOB, "step_run:backup")
        wait_until(lambda: store.get(run_id).facts.rehearsing is not None, timeout=60, interval=0.1)
        bot.kill()
        assert store.get(run_id).facts.rehearsal is None
        bot.start()
        wait_until(lambda: '"rehearse"' in blocks_text(world, ts), timeout=60, interval=0.2)
        assert "did not finish" in blocks_text(world, ts)
        assert "rehearsal.interrupted" in [e.action for e in store.audit_entries(run_id)]
        click(world, ts, BOB, "rehearse")
        wait_until(lambda: store.get(run_id).facts.rehearsal is not None, timeout=120)
        run = store.get(run_id)
        assert run.facts.rehearsal is not None and run.facts.rehearsal.ok, run.facts.rehearsal
        settle(world, ts)
        assert '"rehearse"' not in blocks_text(world, ts)
        click(world, ts, BOB, "cancel")
        wait_until(lambda: store.get(run_id).status.value == "cancelled", timeout=30)
