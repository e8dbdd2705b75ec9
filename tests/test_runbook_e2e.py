"""The forward runbook over real HTTP: checklist -> backup -> approve -> every step -> monitoring.

Real parts: the bot as a subprocess, the Slack stand-in, Redis, PostgreSQL with real pg_dump, moto in
server mode for RDS/ECS/S3, and the demo app for smoke tests and the maintenance webhook.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from bot.demoapp import DemoApp
from bot.devslack.client import SlackSender
from bot.devslack.server import FakeSlack
from bot.integrations.prisma import NativeRunner
from tests.aws_world import client, make_ecs_service, make_rds_instance
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "prisma" / "migrations"
MANUAL_ITEMS = ["staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"]
DB_NAME = f"e2e_{uuid.uuid4().hex[:8]}"
MAINT_TOKEN = "e2e-maintenance-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_url, moto_endpoint, redis_url):
    """Everything the bot talks to, plus the bot itself; reset per test by `fresh`."""
    tmp = tmp_path_factory.mktemp("e2e")
    migrations = tmp / "migrations"
    db_url = pg_admin_url.rsplit("/", 1)[0] + "/" + DB_NAME
    app = DemoApp(database_url=db_url, maintenance_token=MAINT_TOKEN).start()
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    smoke = [
        {"name": "health", "url": f"{app.base_url.rstrip('/')}/health"},
        {"name": "register", "method": "POST", "url": f"{app.base_url.rstrip('/')}/auth/register",
         "json": {"email": "smoke+$${run_id}@example.com", "password": "Test123!"}, "expect_status": [200, 201]},
        {"name": "login", "method": "POST", "url": f"{app.base_url.rstrip('/')}/auth/login",
         "json": {"email": "smoke+$${run_id}@example.com", "password": "Test123!"}, "capture": {"token": "token"}},
        {"name": "counsel", "method": "POST", "url": f"{app.base_url.rstrip('/')}/counsel",
         "headers": {"Authorization": "Bearer $${token}"}, "json": {"message": "Test message"},
         "expect_status": [200, 201]},
    ]
    config = base_config(
        database_url=db_url,
        aws={"region": "us-east-1", "endpoint_url": moto_endpoint},
        backup={"method": "rds_snapshot", "rds_instance": "prod-db"},
        maintenance={"enabled": True, "method": "ecs_task_definition", "task_definition": "api-maintenance:1"},
        migrate={"migrations_dir": str(migrations), "runner": "native", "lock_timeout_ms": 2000},
        deploy={"cluster": "prod", "service": "api", "poll_interval_s": 0.2, "wait_timeout_s": 30},
        smoke=smoke,
    )
    config["environments"]["local"] = {
        "channel": "C0LOCAL", "requesters": [ALICE], "approvers": [BOB], "database_url": db_url,
        "backup": {"method": "pg_dump", "local_dir": str(tmp / "local-backups")},
        "migrate": {"migrations_dir": str(migrations)},
    }
    prefix = f"test:e2e:{time.time_ns()}:"
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log",
                     extra_env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": "us-east-1"}).start()
    from bot.runs import RunStore, connect

    state = {"tmp": tmp, "migrations": migrations, "db_url": db_url, "app": app, "fake": fake, "bot": bot,
             "store": RunStore(connect(redis_url), prefix=prefix), "moto": moto_endpoint, "admin": pg_admin_url,
             "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}
    yield state
    bot.stop()
    fake.stop()
    app.stop()
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


@pytest.fixture
def fresh(world):
    """Reset AWS, the database (first migration applied, two pending) and the demo app for one test."""
    import httpx

    httpx.post(world["moto"] + "/moto-api/reset", timeout=10)
    make_rds_instance(world["moto"])
    make_ecs_service(world["moto"])
    with psycopg.connect(world["admin"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    if world["migrations"].exists():
        shutil.rmtree(world["migrations"])
    shutil.copytree(EXAMPLES, world["migrations"])
    first = world["tmp"] / "first"
    shutil.rmtree(first, ignore_errors=True)
    first.mkdir()
    shutil.copytree(EXAMPLES / "20240101000000_init", first / "20240101000000_init")
    NativeRunner(world["db_url"]).deploy(first)
    world["app"].state.fail_path = None
    # A run left mid-way by the previous test may refuse a plain cancel (it changed things): drop its lock.
    world["store"].redis.delete(world["store"].key("lock", "prod"))
    return world


def message(world, ts):
    return world["fake"].message(PROD_CHANNEL, ts)


def blocks_text(world, ts) -> str:
    return json.dumps(message(world, ts)["blocks"], ensure_ascii=False)


def start(world, text="prod"):
    fake, sender, store = world["fake"], world["sender"], world["store"]
    before = len(fake.channel_messages(PROD_CHANNEL))
    assert sender.slash(ALICE, text, channel_id=PROD_CHANNEL).status_code == 200
    wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
    run = store.active_run("prod")
    ts = fake.channel_messages(PROD_CHANNEL)[-1]["ts"]
    wait_until(lambda: "pending" in store.get(run.id).facts, timeout=20)
    return run.id, ts


def click(world, ts, user, action_id):
    return world["sender"].click(user, channel_id=PROD_CHANNEL, message=message(world, ts), action_id=action_id)


def ready_for_approval(world, run_id, ts):
    store = world["store"]
    for item in MANUAL_ITEMS:
        click(world, ts, ALICE, f"checklist:{item}")
        wait_until(lambda: item in store.get(run_id).checklist)
    wait_until(lambda: "step_run:backup" in blocks_text(world, ts))
    click(world, ts, ALICE, "step_run:backup")
    wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
    wait_until(lambda: '"approve"' in blocks_text(world, ts))


def approve(world, run_id, ts):
    click(world, ts, BOB, "approve")
    wait_until(lambda: world["store"].get(run_id).status.value == "running")
    wait_until(lambda: "step_run:maintenance_on" in blocks_text(world, ts))


def run_step(world, run_id, ts, name, *, expect="succeeded"):
    store = world["store"]
    wait_until(lambda: f"step_run:{name}" in blocks_text(world, ts))
    click(world, ts, ALICE, f"step_run:{name}")
    wait_until(lambda: store.get(run_id).step(name).status.value in ("succeeded", "failed"), timeout=60)
    assert store.get(run_id).step(name).status.value == expect, store.get(run_id).step(name)


def migration_rows(world):
    with psycopg.connect(world["db_url"]) as conn:
        return conn.execute("SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL "
                            "FROM _prisma_migrations ORDER BY started_at").fetchall()


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
        body = world["sender"].slash(ALICE, "check local", channel_id=PROD_CHANNEL).json()
        text = body["text"]
        for line in ("Configuration", "Database connection", "Failed migrations", "Pending migrations",
                     "Backup target"):
            assert line in text
        assert "✅ *Database connection*" in text and "2: 20240215000000_add_counseling_session" in text
        assert "local directory" in text
