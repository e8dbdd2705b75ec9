"""The forward runbook over real HTTP: checklist -> backup -> approve -> every step -> monitoring.

Real parts: the bot as a subprocess, the Slack stand-in, Redis, PostgreSQL with real pg_dump, moto in
server mode for RDS/ECS/S3, and the demo app for smoke tests and the maintenance webhook.
"""

from __future__ import annotations

import concurrent.futures

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
        assert store.get(run_id).step("deploy").result["previous_task_definition"].endswith("api:1")
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

    def test_double_clicks_give_one_snapshot_and_one_row(self, fresh):
        """Two simultaneous Run clicks on backup and on migrate give one snapshot and one row per migration."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        for item in MANUAL_ITEMS:
            click(world, ts, ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
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
