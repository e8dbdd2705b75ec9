"""The forward runbook over real HTTP: checklist -> backup -> approve -> every step -> monitoring.

Real parts: the bot as a subprocess, the Slack stand-in, Redis, PostgreSQL with real pg_dump, moto in
server mode for RDS/ECS/S3, and the demo app for smoke tests and the maintenance webhook.
"""

from __future__ import annotations

import concurrent.futures

from bot.runbook.rules import DeployResult, result_of
from tests.aws_world import client
from tests.e2e import (
    MANUAL_ITEMS,
    approve,
    blocks_text,
    click,
    message,
    migration_rows,
    ready_for_approval,
    run_step,
    settle,
    start,
)
from tests.harness import ALICE, BOB, PROD_CHANNEL, wait_until


class TestHappyPath:
    def test_whole_forward_path(self, fresh):
        """`/migrate prod --image v2` -> checklist -> backup -> approve -> every step -> monitoring, for real."""
        world = fresh
        fake, store = world["fake"], world["store"]
        run_id, ts = start(world, "prod --image v2")
        assert "20240215000000_add_counseling_session" in blocks_text(world, ts)
        ready_for_approval(world, run_id, ts)
        snapshots = client(world["moto"], "rds").describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
        assert [s["DBSnapshotIdentifier"] for s in snapshots if s["DBSnapshotIdentifier"].startswith(
            f"pre-migration-{run_id}-")]
        assert "pre-migration-" in store.get(run_id).checklist["backup_verified"].evidence
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        ecs = client(world["moto"], "ecs")
        assert "api-maintenance" in ecs.describe_services(cluster="prod", services=["api"])["services"][0][
            "taskDefinition"]
        assert world["app"].state is not None
        run_step(world, run_id, ts, "migrate")
        assert [r[0] for r in migration_rows(world)] == [
            "20240101000000_init", "20240215000000_add_counseling_session", "20240301000000_add_email_verified"]
        assert all(finished for _, finished, _ in migration_rows(world))
        run_step(world, run_id, ts, "deploy")
        service = ecs.describe_services(cluster="prod", services=["api"])["services"][0]
        new_td = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        assert new_td["containerDefinitions"][0]["image"].endswith(":v2") and new_td["revision"] >= 2
        assert (result_of(store.get(run_id), DeployResult).previous_task_definition or "").endswith("api:1")
        run_step(world, run_id, ts, "smoke")
        run_step(world, run_id, ts, "maintenance_off")
        wait_until(lambda: store.get(run_id).status.value == "monitoring")
        wait_until(lambda: "Looks good" in blocks_text(world, ts))
        thread = "\n".join(m.get("text", "") for m in fake.thread(PROD_CHANNEL, ts))
        assert "✅ counsel: 201 in" in thread and " ms" in thread
        assert "CREATE TABLE" in thread  # the pending SQL was posted before approval
        top = [m for m in fake.channel_messages(PROD_CHANNEL) if m["ts"] == ts]
        assert len(top) == 1
        assert len([c for c in fake.calls_to("chat.update") if c.args.get("ts") == ts]) >= 10
        click(world, ts, ALICE, "finish")
        wait_until(lambda: store.get(run_id).status.value == "succeeded")
        assert store.active_run("prod") is None


class TestGuards:
    def test_migration_edited_after_approval_voids_it(self, fresh):
        """Editing a pending migration after approval sends the run back to awaiting approval; nothing applied."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        sql = world["migrations"] / "20240301000000_add_email_verified" / "migration.sql"
        sql.write_text(sql.read_text() + "\n-- edited after approval\n")
        click(world, ts, ALICE, "step_run:migrate")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=30)
        run = store.get(run_id)
        assert run.approvals == [] and run.step("migrate").status.value == "pending"
        assert [r[0] for r in migration_rows(world)] == ["20240101000000_init"]
        assert any(e.action == "run.approval_voided" for e in store.audit_entries(run_id))
        wait_until(lambda: '"approve"' in blocks_text(world, ts))
        # The edited SQL was reviewed again when the approval was voided, so one click re-approves it.
        wait_until(lambda: "edited after approval" in "\n".join(
            m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts)), timeout=30)
        click(world, ts, BOB, "approve")
        wait_until(lambda: store.get(run_id).status.value == "running", timeout=30)
        assert len(store.get(run_id).approvals) == 1
        run_step(world, run_id, ts, "migrate")

    def test_double_clicks_give_one_snapshot_and_one_row(self, fresh):
        """Two simultaneous Run clicks on backup and on migrate give one snapshot and one row per migration."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        for item in MANUAL_ITEMS:
            click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        settle(world, ts)  # buttons carry the run version: click the message as it is shown now
        snapshot_msg = message(world, ts)

        def double(action_id, msg):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda u: world["sender"].click(u, channel_id=PROD_CHANNEL, message=msg,
                                                              action_id=action_id), [ALICE, BOB]))

        double("step_run:backup", snapshot_msg)
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
        snapshots = client(world["moto"], "rds").describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
        assert len([s for s in snapshots if run_id in s["DBSnapshotIdentifier"]]) == 1
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        wait_until(lambda: "step_run:migrate" in blocks_text(world, ts))
        settle(world, ts)
        double("step_run:migrate", message(world, ts))
        wait_until(lambda: store.get(run_id).step("migrate").status.value == "succeeded", timeout=60)
        names = [r[0] for r in migration_rows(world)]
        assert len(names) == len(set(names)) == 3
        starts = [e for e in store.audit_entries(run_id) if e.action == "step.start" and e.data.get("step") == "migrate"]
        assert len(starts) == 1

    def test_smoke_failure_fails_run_and_stops(self, fresh):
        """A failing smoke check fails the run; maintenance off is not executed."""
        world = fresh
        store = world["store"]
        world["app"].state.fail_path = "/counsel"
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        for name in ("maintenance_on", "migrate", "deploy"):
            run_step(world, run_id, ts, name)
        run_step(world, run_id, ts, "smoke", expect="failed")
        run = store.get(run_id)
        assert run.status.value == "failed" and "counsel" in (run.failure or "")
        assert run.step("maintenance_off").status.value == "pending"
        assert "step_run:maintenance_off" not in blocks_text(world, ts)
        wait_until(lambda: "Smoke-test critical paths failed" in blocks_text(world, ts))


class TestCheckCommand:
    def test_check_local_reports_each_item(self, fresh):
        """`/migrate check local` answers with a ✅/❌ line per check and offers the backup button."""
        world = fresh
        before = len(world["fake"].ephemerals(user=ALICE))
        ack = world["sender"].slash(ALICE, "check local", channel_id=PROD_CHANNEL).json()
        assert "Checking local" in ack["text"]  # acked at once; the result follows through response_url
        text = wait_until(lambda: next((e["text"] for e in world["fake"].ephemerals(user=ALICE)[before:]
                                        if "Pre-migration check for local" in e["text"]), None), timeout=30)
        for line in ("Configuration", "Database connection", "Failed migrations", "Pending migrations",
                     "Backup target"):
            assert line in text
        assert "✅ *Database connection*" in text and "2: 20240215000000_add_counseling_session" in text
        assert "local directory" in text


def _ephemerals(world, user):
    return [e.get("text") or "" for e in world["fake"].ephemerals(user=user)]


def _refused_approval(world, run_id, ts, needle):
    """Bob clicks Approve: the answer names `needle`, and the run (its version too) is unchanged."""
    store = world["store"]
    before = store.get(run_id)
    seen = len(_ephemerals(world, BOB))
    click(world, ts, BOB, "approve")
    wait_until(lambda: any(needle in t for t in _ephemerals(world, BOB)[seen:]), timeout=30)
    after = store.get(run_id)
    assert after.version == before.version and after.approvals == [] and after.fingerprint is None
    assert after.status.value == "awaiting_approval"


class TestApprovalFailsClosed:
    def test_unreadable_migrations_refuse_the_approval(self, fresh):
        """A missing folder, an emptied folder or a database refusing connections at approval: refused, unchanged."""
        import psycopg

        from tests.e2e import DB_NAME

        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        migrations = world["migrations"]
        aside = migrations.with_name("migrations-aside")
        migrations.rename(aside)  # the folder is gone (a bad checkout, an unmounted volume)
        try:
            _refused_approval(world, run_id, ts, "could not be read just now")
            migrations.mkdir()  # an empty folder
            _refused_approval(world, run_id, ts, "can be found pending now")
        finally:
            if migrations.exists():
                migrations.rmdir()
            aside.rename(migrations)
        with psycopg.connect(world["admin"], autocommit=True) as conn:  # a database blip
            conn.execute(f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS false')
        try:
            _refused_approval(world, run_id, ts, "could not be read just now")
        finally:
            with psycopg.connect(world["admin"], autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{DB_NAME}" ALLOW_CONNECTIONS true')
        denied = [e for e in store.audit_entries(run_id) if e.action == "run.approve" and e.outcome == "denied"]
        assert len(denied) == 3
        # Today's fail-open sequence: the SQL is edited after the refused approvals; nothing can run it.
        sql = migrations / "20240301000000_add_email_verified" / "migration.sql"
        sql.write_text(sql.read_text() + '\nDROP TABLE "User" CASCADE;\n')
        assert "step_run:migrate" not in blocks_text(world, ts)
        from tests.test_chaos_authz import forged

        world["sender"].click(ALICE, channel_id=PROD_CHANNEL, message=forged(world, run_id, "step_run:migrate"),
                              action_id="step_run:migrate")  # a forged click on a button that is not shown
        wait_until(lambda: any("Cannot run step migrate" in t for t in _ephemerals(world, ALICE)), timeout=30)
        assert [r[0] for r in migration_rows(world)] == ["20240101000000_init"]

    def test_migrate_refuses_a_run_approved_without_a_fingerprint(self, fresh):
        """A run whose approval recorded no checksums (an older bot's) goes back to approval; edited SQL never runs."""
        from bot.runbook.rules import Transition

        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")

        def forget(run):  # the state an approval left when it read nothing
            new = run.model_copy(deep=True)
            new.fingerprint = None
            for approval in new.approvals:
                approval.fingerprint = None
            new.version += 1
            return Transition(new, [])

        store.apply(run_id, forget)
        sql = world["migrations"] / "20240301000000_add_email_verified" / "migration.sql"
        sql.write_text(sql.read_text() + '\nCREATE TABLE "Edited"(id int);\n')
        click(world, ts, ALICE, "step_run:migrate")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=30)
        run = store.get(run_id)
        assert run.approvals == [] and run.step("migrate").status.value == "pending"
        assert [r[0] for r in migration_rows(world)] == ["20240101000000_init"]
        voided = [e for e in store.audit_entries(run_id) if e.action == "run.approval_voided"]
        assert voided and "no fingerprint" in voided[-1].detail


class TestStaleClicks:
    def test_replayed_click_does_not_rerun_a_failed_backup(self, fresh):
        """A replay of the Take backup click after the backup failed is out of date; only the Retry button retries."""
        from tests.chaos import step_starts

        world = fresh
        store, sender = world["store"], world["sender"]
        client(world["moto"], "rds").delete_db_instance(DBInstanceIdentifier="prod-db", SkipFinalSnapshot=True)
        run_id, ts = start(world)
        for item in MANUAL_ITEMS:
            click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        settle(world, ts)
        shown = message(world, ts)  # the message as it was when Take backup was clicked
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=shown, action_id="step_run:backup")
        wait_until(lambda: store.get(run_id).step("backup").status.value == "failed", timeout=60)
        settle(world, ts)
        version = store.get(run_id).version
        seen = len(_ephemerals(world, ALICE))
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=shown, action_id="step_run:backup")  # the replay
        wait_until(lambda: any("out of date" in t for t in _ephemerals(world, ALICE)[seen:]), timeout=30)
        # A forged button whose value carries no version at all is out of date too.
        sender.click(ALICE, channel_id=PROD_CHANNEL, action_id="step_run:backup", message={
            "ts": ts, "blocks": [{"type": "actions", "block_id": "forged", "elements": [
                {"type": "button", "action_id": "step_run:backup", "value": run_id,
                 "text": {"type": "plain_text", "text": "x"}}]}]})
        wait_until(lambda: len([t for t in _ephemerals(world, ALICE)[seen:] if "out of date" in t]) == 2, timeout=30)
        run = store.get(run_id)
        assert run.version == version and run.step("backup").attempt == 1
        assert len(step_starts(store, run_id, "backup")) == 1
        click(world, ts, ALICE, "step_run:backup")  # the Retry button of the current message does retry
        wait_until(lambda: store.get(run_id).step("backup").attempt == 2, timeout=30)


class TestClosingAFailedRun:
    def test_another_requester_cannot_close_a_failed_run(self, fresh):
        """Bob's pgprod run failed its smoke test: Alice (a requester, not an approver) cannot close it; Bob can."""
        from tests.harness import CAROL

        world = fresh
        store, fake = world["store"], world["fake"]
        world["app"].state.fail_path = "/health"
        before = len(fake.channel_messages(PROD_CHANNEL))
        assert world["sender"].slash(BOB, "pgprod", channel_id=PROD_CHANNEL).status_code == 200
        wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
        run_id, ts = store.active_run("pgprod").id, fake.channel_messages(PROD_CHANNEL)[-1]["ts"]
        wait_until(lambda: store.get(run_id).facts.pending is not None, timeout=20)
        for item in MANUAL_ITEMS:
            click(world, ts, CAROL if item == "script_reviewed" else BOB, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        click(world, ts, BOB, "step_run:backup")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval"
                   and store.get(run_id).facts.rehearsal is not None, timeout=60)
        wait_until(lambda: '"approve"' in blocks_text(world, ts))
        click(world, ts, CAROL, "approve")
        wait_until(lambda: store.get(run_id).status.value == "running")
        for name in ("migrate", "deploy", "smoke"):
            wait_until(lambda: f"step_run:{name}" in blocks_text(world, ts), timeout=30)
            click(world, ts, BOB, f"step_run:{name}")
            wait_until(lambda: store.get(run_id).step(name).status.value in ("succeeded", "failed"), timeout=60)
        assert store.get(run_id).status.value == "failed"
        wait_until(lambda: "Close failed run" in blocks_text(world, ts))
        version = store.get(run_id).version
        click(world, ts, ALICE, "cancel")
        wait_until(lambda: any("may close a failed run" in t for t in _ephemerals(world, ALICE)), timeout=30)
        assert store.get(run_id).status.value == "failed" and store.get(run_id).version == version
        assert [e.actor for e in store.audit_entries(run_id) if e.action == "run.cancel"
                and e.outcome == "denied"] == [ALICE]
        click(world, ts, BOB, "cancel")
        wait_until(lambda: store.get(run_id).status.value == "cancelled", timeout=30)
        assert store.active_run("pgprod") is None
