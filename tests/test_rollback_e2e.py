"""The way back over real HTTP: the seed's three rollback options, each a recorded, resumable step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from bot.runbook.rules import RestoreDbResult, result_of
from tests.aws_world import client
from tests.e2e import (
    approve,
    awaiting_second_approval,
    blocks_text,
    click,
    finish_way_back,
    maintenance_on,
    migration_rows,
    ready_for_approval,
    run_step,
    start,
)
from tests.harness import ALICE, BOB, CAROL, PROD_CHANNEL, wait_until

BAD = "20240401000000_bad_backfill"


def add_migration(world, name, sql, down=None):
    directory = world["migrations"] / name
    directory.mkdir()
    (directory / "migration.sql").write_text(sql)
    if down is not None:
        (directory / "down.sql").write_text(down)


def rows_named(world, name):
    with psycopg.connect(world["db_url"]) as conn:
        return conn.execute("SELECT id, finished_at, rolled_back_at FROM _prisma_migrations "
                            "WHERE migration_name = %s ORDER BY started_at", (name,)).fetchall()


def submit_restore(world, ts, user, typed, reason):
    fake, sender = world["fake"], world["sender"]
    click(world, ts, user, "rollback:restore")
    try:
        view = wait_until(lambda: fake.top_modal(user))
    except AssertionError:
        raise AssertionError(f"no modal: views.open={[c.response for c in fake.calls_to('views.open')]} "
                             f"ephemerals={fake.ephemerals(user=user)[-2:]}") from None
    response = sender.submit_view(user, view, {
        "env": {"typed_env": {"type": "plain_text_input", "value": typed}},
        "reason": {"reason_text": {"type": "plain_text_input", "value": reason}},
    })
    assert response.status_code == 200
    return response


def thread_text(world, ts):
    return "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))


def counseling_table_exists(world):
    with psycopg.connect(world["db_url"]) as conn:
        return conn.execute("SELECT to_regclass('\"CounselingSession\"')").fetchone()[0] is not None


def failed_run_with_down_sql(world):
    """A run whose migrations (each with a down.sql) applied, then whose smoke test failed."""
    world["app"].state.fail_path = "/counsel"
    (world["migrations"] / "20240215000000_add_counseling_session" / "down.sql").write_text(
        'DROP TABLE "CounselingSession";')
    (world["migrations"] / "20240301000000_add_email_verified" / "down.sql").write_text(
        'ALTER TABLE "User" DROP COLUMN "emailVerified";')
    run_id, ts = start(world)
    ready_for_approval(world, run_id, ts)
    approve(world, run_id, ts)
    for name in ("maintenance_on", "migrate", "deploy"):
        run_step(world, run_id, ts, name)
    run_step(world, run_id, ts, "smoke", expect="failed")
    wait_until(lambda: "rollback:revert" in blocks_text(world, ts))
    assert counseling_table_exists(world)
    return run_id, ts


class TestOptionOneRevert:
    def test_failed_migration_marks_only_the_failed_row(self, fresh):
        """Option 1 sets rolled_back_at on the failed row only; an earlier successful row of the name is untouched."""
        world = fresh
        store = world["store"]
        add_migration(world, BAD, 'CREATE TABLE "Tmp"(id int);\nSELECT 1/0;\n')
        earlier = datetime(2024, 1, 5, tzinfo=UTC)
        with psycopg.connect(world["db_url"], autocommit=True) as conn:
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, "
                         "applied_steps_count, rolled_back_at) VALUES ('00000000-0000-4000-8000-000000000001', "
                         "'x', %s, %s, %s, 1, %s)", (earlier, BAD, earlier, earlier + timedelta(hours=1)))
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        run_step(world, run_id, ts, "migrate", expect="failed")
        wait_until(lambda: "rollback:revert" in blocks_text(world, ts))
        wait_until(lambda: "Rollback recommended:* the migration failed" in "\n".join(
            m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts)))
        click(world, ts, BOB, "rollback:revert")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_resolve_failed")
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back")
        rows = rows_named(world, BAD)
        assert len(rows) == 2
        assert rows[0][2] == earlier + timedelta(hours=1)  # the earlier, successful row: untouched
        assert rows[1][1] is None and rows[1][2] is not None  # the failed row: rolled back
        thread = "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))
        assert "corrective migration" in thread
        # A later deploy (a new run) re-applies the fixed migration.
        (world["migrations"] / BAD / "migration.sql").write_text('CREATE TABLE "Tmp"(id int);\n')
        run2, ts2 = start(world)
        assert BAD in store.get(run2).pending_migrations
        ready_for_approval(world, run2, ts2)
        approve(world, run2, ts2)
        run_step(world, run2, ts2, "maintenance_on")
        run_step(world, run2, ts2, "migrate")
        assert rows_named(world, BAD)[-1][1] is not None

    def test_down_sql_reverts_applied_migrations(self, fresh):
        """After a smoke failure, Option 1 applies down.sql newest first and the schema loses the new column."""
        world = fresh
        store = world["store"]
        run_id, ts = failed_run_with_down_sql(world)
        click(world, ts, ALICE, "rollback:revert")
        wait_until(lambda: awaiting_second_approval(store.get(run_id)))
        # The down.sql is shown in the thread with its review before anyone can confirm it.
        wait_until(lambda: 'DROP TABLE "CounselingSession"' in thread_text(world, ts)
                   and "Safety review" in thread_text(world, ts))  # the review is posted after the script
        assert "down.sql" in thread_text(world, ts)
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        before = len(world["fake"].ephemerals(user=ALICE))
        click(world, ts, ALICE, "rollback_confirm")  # the requester alone: refused, nothing runs
        wait_until(lambda: any((e.get("text") or "").startswith("🚫")
                               for e in world["fake"].ephemerals(user=ALICE)[before:]))
        assert store.get(run_id).status.value == "failed" and counseling_table_exists(world)
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_apply_down")
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back")
        with psycopg.connect(world["db_url"]) as conn:
            columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                                  "WHERE table_name = 'User'")}
            assert "emailVerified" not in columns
            assert conn.execute("SELECT to_regclass('\"CounselingSession\"')").fetchone()[0] is None
        assert [r[0] for r in migration_rows(world) if not r[2]] == ["20240101000000_init"]


    def test_requester_alone_cannot_run_down_sql(self, fresh):
        """Every path one person has (request, confirm, forged Run) leaves the table the migration created in place."""
        from tests.test_chaos_authz import forged

        world = fresh
        store = world["store"]
        run_id, ts = failed_run_with_down_sql(world)
        click(world, ts, ALICE, "rollback:revert")
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        for action in ("rollback_confirm", "step_run:rb_apply_down", "rollback:revert"):
            seen = len(world["fake"].ephemerals(user=ALICE))
            world["sender"].click(ALICE, channel_id=PROD_CHANNEL, message=forged(world, run_id, action),
                                  action_id=action)
            wait_until(lambda: len(world["fake"].ephemerals(user=ALICE)) > seen, timeout=15)
        run = store.get(run_id)
        assert run.status.value == "failed" and not [s for s in run.steps if s.phase == "rollback"]
        assert counseling_table_exists(world)
        assert [e.actor for e in store.audit_entries(run_id) if e.action == "rollback.approve"
                and e.outcome == "denied"] == [ALICE]

    def test_down_sql_edited_after_approval_is_refused(self, fresh):
        """down.sql edited after it was shown, or after the second approval: nothing runs; the new one needs review."""
        world = fresh
        store = world["store"]
        run_id, ts = failed_run_with_down_sql(world)
        down = world["migrations"] / "20240215000000_add_counseling_session" / "down.sql"
        click(world, ts, ALICE, "rollback:revert")
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        down.write_text('DROP TABLE "User" CASCADE;')  # edited between the request and the confirmation
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: any("changed since they were shown" in (e.get("text") or "")
                               for e in world["fake"].ephemerals(user=BOB)))
        assert store.get(run_id).status.value == "failed"
        down.write_text('DROP TABLE "CounselingSession";')
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        down.write_text('DROP TABLE "User" CASCADE;')  # edited between the confirmation and the run
        wait_until(lambda: "step_run:rb_apply_down" in blocks_text(world, ts))
        click(world, ts, ALICE, "step_run:rb_apply_down")
        wait_until(lambda: store.get(run_id).status.value == "failed" and not store.get(run_id).rollback, timeout=30)
        assert counseling_table_exists(world)
        with psycopg.connect(world["db_url"]) as conn:
            assert conn.execute("SELECT to_regclass('\"User\"')").fetchone()[0] is not None
        assert any(e.action == "rollback.voided" for e in store.audit_entries(run_id))
        wait_until(lambda: "changed after they were approved" in thread_text(world, ts))
        wait_until(lambda: "rollback:revert" in blocks_text(world, ts))  # choose again, and review what is there now


class TestOptionTwoRestore:
    def test_restore_from_pg_dump_with_two_people(self, fresh):
        """Option 2: typed confirmation + a second person; rows after the backup are gone, ECS 0 then back."""
        world = fresh
        store, ecs = world["store"], client(world["moto"], "ecs")
        with psycopg.connect(world["db_url"], autocommit=True) as conn:
            conn.execute('INSERT INTO "User"(id, email, "passwordHash") VALUES (\'before\', \'b@x\', \'h\')')
        run_id, ts = start(world, "pgprod", env="pgprod")
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "migrate")
        run_step(world, run_id, ts, "deploy")
        with psycopg.connect(world["db_url"], autocommit=True) as conn:
            conn.execute('INSERT INTO "User"(id, email, "passwordHash") VALUES (\'after\', \'a@x\', \'h\')')
        world["app"].state.fail_path = "/health"
        run_step(world, run_id, ts, "smoke", expect="failed")
        wait_until(lambda: "rollback:restore" in blocks_text(world, ts))
        # Refused without the typed confirmation: nothing changes.
        response = submit_restore(world, ts, ALICE, "prod", "the app is broken after the migration")
        assert response.json()["response_action"] == "errors" and "pgprod" in str(response.json()["errors"])
        assert store.get(run_id).rollback is None
        world["fake"].dismiss_modals(ALICE)
        submit_restore(world, ts, ALICE, "pgprod", "the app is broken after the migration")
        wait_until(lambda: awaiting_second_approval(store.get(run_id)))
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        # One person is not enough.
        click(world, ts, ALICE, "rollback_confirm")
        wait_until(lambda: any("second approver" in (e.get("text") or "") for e in world["fake"].ephemerals(user=ALICE)))
        assert store.get(run_id).status.value == "failed"
        click(world, ts, CAROL, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_scale_down")
        assert ecs.describe_services(cluster="prod", services=["api"])["services"][0]["desiredCount"] == 0
        run_step(world, run_id, ts, "rb_restore_db")
        with psycopg.connect(world["db_url"]) as conn:
            ids = {r[0] for r in conn.execute('SELECT id FROM "User"')}
            names = [r[0] for r in conn.execute("SELECT migration_name FROM _prisma_migrations")]
        assert "before" in ids and "after" not in ids
        assert names == ["20240101000000_init"]
        aside = result_of(store.get(run_id), RestoreDbResult).kept_aside
        with psycopg.connect(world["admin"].rsplit("/", 1)[0] + "/" + aside) as conn:
            assert conn.execute('SELECT count(*) FROM "User" WHERE id = \'after\'').fetchone()[0] == 1
        run_step(world, run_id, ts, "rb_redeploy")
        service = ecs.describe_services(cluster="prod", services=["api"])["services"][0]
        assert service["desiredCount"] == 2
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back")
        assert store.active_run("pgprod") is None


class TestOptionThreePrevious:
    def test_previous_version_restores_task_definition(self, fresh):
        """Option 3 puts the service back on the task definition that ran before the deploy."""
        world = fresh
        store, ecs = world["store"], client(world["moto"], "ecs")
        world["app"].state.fail_path = "/counsel"
        run_id, ts = start(world, "prod --image v2")
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        for name in ("maintenance_on", "migrate", "deploy"):
            run_step(world, run_id, ts, name)
        assert ecs.describe_services(cluster="prod", services=["api"])["services"][0]["taskDefinition"] != "api:1"
        run_step(world, run_id, ts, "smoke", expect="failed")
        wait_until(lambda: "rollback:previous" in blocks_text(world, ts))
        click(world, ts, BOB, "rollback:previous")
        run_step(world, run_id, ts, "rb_previous_version")
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back")
        service = ecs.describe_services(cluster="prod", services=["api"])["services"][0]
        assert service["taskDefinition"].endswith("api:1")


class TestOptionTwoRds:
    def test_restore_from_rds_snapshot_hands_the_switch_to_a_human(self, fresh):
        """Option 2 with an RDS snapshot restores a new instance from it and says exactly what to switch."""
        world = fresh
        store, rds = world["store"], client(world["moto"], "rds")
        world["app"].state.fail_path = "/counsel"
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        for name in ("maintenance_on", "migrate", "deploy"):
            run_step(world, run_id, ts, name)
        run_step(world, run_id, ts, "smoke", expect="failed")
        submit_restore(world, ts, ALICE, "prod", "checkout is broken and the migration cannot be reverted")
        wait_until(lambda: "rollback_confirm" in blocks_text(world, ts))
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_scale_down")
        run_step(world, run_id, ts, "rb_restore_db")
        restored = result_of(store.get(run_id), RestoreDbResult).restored_instance
        assert restored.startswith("prod-db-restored-")
        instances = {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
        assert {"prod-db", restored} <= instances
        thread = "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))
        assert f"restored as RDS instance `{restored}`" in thread
        run_step(world, run_id, ts, "rb_redeploy")
        finish_way_back(world, run_id, ts)
        wait_until(lambda: store.get(run_id).status.value == "rolled_back")


def action_ids(world, ts) -> set[str]:
    """The buttons the status message offers now."""
    found: set[str] = set()
    for block in world["fake"].message(PROD_CHANNEL, ts)["blocks"]:
        for element in block.get("elements", []) + ([block["accessory"]] if "accessory" in block else []):
            if element.get("type") == "button":
                found.add(element["action_id"])
    return found


class TestNoDeadEnds:
    """Every failure offers what a senior engineer would, and every way out leaves the site up (issue 13)."""

    def test_abort_after_maintenance_on_turns_it_off_and_cancels(self, fresh):
        """Maintenance on, nothing migrated: Abort turns it off, checks the site and cancels; no plain cancel."""
        world = fresh
        store, fake = world["store"], world["fake"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        assert maintenance_on(world)
        wait_until(lambda: "rollback:abort" in action_ids(world, ts))
        assert "cancel" not in action_ids(world, ts)
        before = len(fake.ephemerals(user=ALICE))
        assert world["sender"].slash(ALICE, f"cancel {run_id}", channel_id=PROD_CHANNEL).status_code == 200
        wait_until(lambda: any("Abort: maintenance off and cancel" in (e.get("text") or "")
                               for e in fake.ephemerals(user=ALICE)[before:]))
        assert store.get(run_id).status.value == "running"
        click(world, ts, ALICE, "rollback:abort")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        finish_way_back(world, run_id, ts, fixed=False)
        assert store.get(run_id).status.value == "cancelled" and not maintenance_on(world)
        assert store.active_run("prod") is None
        assert [r[0] for r in migration_rows(world) if r[1]] == ["20240101000000_init"]  # nothing migrated

    def test_a_failed_smoke_test_is_retried_and_passes_the_second_time(self, fresh):
        """A flaky smoke test offers Retry with the rollbacks that fit; the second try passes and the run goes on."""
        world = fresh
        store, app = world["store"], world["app"]
        app.state.fail_path = "/counsel"
        run_id, ts = start(world, "prod --image v2")
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        for name in ("maintenance_on", "migrate", "deploy"):
            run_step(world, run_id, ts, name)
        run_step(world, run_id, ts, "smoke", expect="failed")
        wait_until(lambda: "rollback:previous" in action_ids(world, ts))
        offered = action_ids(world, ts)
        assert {"step_run:smoke", "rollback:restore", "rollback:previous"} <= offered
        assert not offered & {"cancel", "rollback:abort", "rollback:revert"}  # no down.sql: no Option 1
        assert "Option 1" not in blocks_text(world, ts).split("Roll back?")[-1].split('"}')[0]
        app.state.fail_path = None  # the flake is gone
        click(world, ts, ALICE, "step_run:smoke")
        wait_until(lambda: store.get(run_id).step("smoke").attempt == 2
                   and store.get(run_id).step("smoke").status.value == "succeeded", timeout=60)
        assert store.get(run_id).status.value == "running"
        run_step(world, run_id, ts, "maintenance_off")
        wait_until(lambda: store.get(run_id).status.value == "monitoring")
        assert not maintenance_on(world)

    def test_a_failed_migration_offers_option_one_or_two_never_retry(self, fresh):
        """A failed migration: Option 1 (mark it rolled back) or 2, never Retry or a plain close; Option 1 ends
        with maintenance off and a passing smoke test."""
        world = fresh
        store = world["store"]
        add_migration(world, BAD, 'CREATE TABLE "Tmp"(id int);\nSELECT 1/0;\n')
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        run_step(world, run_id, ts, "migrate", expect="failed")
        wait_until(lambda: "rollback:revert" in action_ids(world, ts))
        offered = action_ids(world, ts)
        assert {"rollback:revert", "rollback:restore"} <= offered
        assert not offered & {"step_run:migrate", "cancel", "rollback:abort", "rollback:previous"}
        assert "Option 1 is preferred" in blocks_text(world, ts) and "Option 3" not in blocks_text(world, ts)
        click(world, ts, ALICE, "rollback:revert")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        run_step(world, run_id, ts, "rb_resolve_failed")
        finish_way_back(world, run_id, ts, fixed=False)
        assert store.get(run_id).status.value == "rolled_back" and not maintenance_on(world)
