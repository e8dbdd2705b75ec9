"""Shared e2e world: the bot as a subprocess with the Slack stand-in, Redis, PostgreSQL, moto server and the demo app."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from bot.devtools.demoapp import DemoApp
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.devtools.stubs import PagerDutyStub, SentryStub
from bot.integrations.prisma.native import NativeRunner
from bot.runbook.rules import RollbackStatus, Run
from tests.aws_world import make_ecs_service, make_rds_instance
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    PROD_CHANNEL,
    SCRIPTED_LIMITS,
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
SENTRY_TOKEN = "sntrys-e2e-token"
IMAGE_TEMPLATE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:{sha}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_url, moto_endpoint, redis_url):
    """Everything the bot talks to, plus the bot itself; reset per test by `fresh`."""
    tmp = tmp_path_factory.mktemp("e2e")
    migrations = tmp / "migrations"
    db_url = pg_admin_url.rsplit("/", 1)[0] + "/" + DB_NAME
    app = DemoApp(database_url=db_url, maintenance_token=MAINT_TOKEN).start()
    sentry = SentryStub(token=SENTRY_TOKEN).start()
    pagerduty = PagerDutyStub().start()
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    smoke = [
        {"name": "health", "url": f"{app.base_url.rstrip('/')}/health"},
        {"name": "register", "method": "POST", "url": f"{app.base_url.rstrip('/')}/auth/register",
         "json": {"email": "smoke+$${smoke_id}@example.com", "password": "Test123!"}, "expect_status": [200, 201]},
        {"name": "login", "method": "POST", "url": f"{app.base_url.rstrip('/')}/auth/login",
         "json": {"email": "smoke+$${smoke_id}@example.com", "password": "Test123!"}, "capture": {"token": "token"}},
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
        deploy={"cluster": "prod", "service": "api", "poll_interval_s": 0.2, "wait_timeout_s": 30,
                "image_template": IMAGE_TEMPLATE},  # used by runs pinned to a commit (facts.release)
        smoke=smoke,
        oncall="S0ONCALL",
        monitoring={
            "sentry": {"org": "mcc", "project": "api", "token": SENTRY_TOKEN, "base_url": sentry.base_url},
            "load_balancer": "app/prod-alb/123", "log_group": "/aws/ecs/api",
            "pagerduty_routing_key": "R0UTINGKEY0000000000000000000000", "pagerduty_url": pagerduty.base_url,
            "watch_interval_s": 1, "watch_hours": 0.006,
        },
    )
    config["environments"]["pgprod"] = {
        "channel": PROD_CHANNEL, "requesters": [ALICE, BOB], "approvers": [BOB, CAROL], "database_url": db_url,
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        "backup": {"method": "pg_dump", "local_dir": str(tmp / "pg-backups")},
        "migrate": {"migrations_dir": str(migrations), "lock_timeout_ms": 2000},
        "deploy": {"cluster": "prod", "service": "api", "poll_interval_s": 0.2, "wait_timeout_s": 30},
        "smoke": [{"name": "health", "url": f"{app.base_url.rstrip('/')}/health"}],
    }
    config["environments"]["local"] = {
        "channel": "C0LOCAL", "requesters": [ALICE], "approvers": [BOB], "database_url": db_url,
        "backup": {"method": "pg_dump", "local_dir": str(tmp / "local-backups")},
        "migrate": {"migrations_dir": str(migrations)},
    }
    config["limits"] = SCRIPTED_LIMITS
    prefix = f"test:e2e:{time.time_ns()}:"
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log",
                     extra_env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": "us-east-1"}).start()
    from bot.store.runs import RunStore, connect

    state = {"sentry": sentry, "pagerduty": pagerduty, "tmp": tmp, "migrations": migrations, "db_url": db_url, "app": app, "fake": fake, "bot": bot,
             "store": RunStore(connect(redis_url), prefix=prefix), "moto": moto_endpoint, "admin": pg_admin_url,
             "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}
    yield state
    bot.stop()
    fake.stop()
    app.stop()
    sentry.stop()
    pagerduty.stop()
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)
    drop_test_databases(pg_admin_url)


def drop_test_databases(admin_url: str) -> None:
    """The e2e database and any copies a restore kept aside."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                            (DB_NAME + "%",))]
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh(world):
    """Reset AWS, the database (first migration applied, two pending) and the demo app for one test."""
    import httpx

    httpx.post(world["moto"] + "/moto-api/reset", timeout=10)
    make_rds_instance(world["moto"])
    make_ecs_service(world["moto"])
    drop_test_databases(world["admin"])
    with psycopg.connect(world["admin"], autocommit=True) as conn:
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
    world["sentry"].set_counts(0, 100)
    world["pagerduty"].events.clear()
    # A run left mid-way by the previous test may refuse a plain cancel (it changed things): drop its lock.
    for env in ("prod", "pgprod"):
        world["store"].redis.delete(world["store"].key("lock", env))
    return world


def message(world, ts):
    return world["fake"].message(PROD_CHANNEL, ts)


def blocks_text(world, ts) -> str:
    return json.dumps(message(world, ts)["blocks"], ensure_ascii=False)


def start(world, text="prod", env="prod"):
    fake, sender, store = world["fake"], world["sender"], world["store"]
    before = len(fake.channel_messages(PROD_CHANNEL))
    assert sender.slash(ALICE, text, channel_id=PROD_CHANNEL).status_code == 200
    wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
    run = store.active_run(env)
    ts = fake.channel_messages(PROD_CHANNEL)[-1]["ts"]
    wait_until(lambda: store.get(run.id).facts.pending is not None, timeout=20)
    settle(world, ts)  # the message shows what the inspection found, not only that it ran
    return run.id, ts


def click(world, ts, user, action_id):
    """Click on the message as Slack shows it once the bot has rendered the run's latest version."""
    settle(world, ts)
    return world["sender"].click(user, channel_id=PROD_CHANNEL, message=message(world, ts), action_id=action_id)


def settle(world, ts, timeout=20):
    """Wait until the message shows the run's current version (its footer reads `v<version>`)."""
    footer = json.dumps(message(world, ts)["blocks"][-1])
    run_id = footer.split("run `", 1)[1].split("`", 1)[0] if "run `" in footer else None
    if run_id is None:
        return
    wait_until(lambda: f" v{world['store'].get(run_id).version} " in json.dumps(message(world, ts)["blocks"][-1]),
               timeout=timeout)


def ready_for_approval(world, run_id, ts):
    store = world["store"]
    for item in MANUAL_ITEMS:
        click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
        wait_until(lambda: item in store.get(run_id).checklist)
    wait_until(lambda: "step_run:backup" in blocks_text(world, ts))
    click(world, ts, ALICE, "step_run:backup")
    wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
    if store.get(run_id).facts.rehearsal_expected:
        wait_until(lambda: store.get(run_id).facts.rehearsal is not None, timeout=60)
    wait_until(lambda: '"approve"' in blocks_text(world, ts))


def awaiting_second_approval(run: Run) -> bool:
    """A rollback (a restore, or a revert with down.sql) is waiting for its second person."""
    return run.rollback is not None and run.rollback.status is RollbackStatus.AWAITING_SECOND_APPROVAL


def approve(world, run_id, ts):
    click(world, ts, BOB, "approve")
    wait_until(lambda: world["store"].get(run_id).status.value == "running")
    wait_until(lambda: '"step_run:' in blocks_text(world, ts))


def run_step(world, run_id, ts, name, *, expect="succeeded"):
    store = world["store"]
    wait_until(lambda: f"step_run:{name}" in blocks_text(world, ts))
    click(world, ts, ALICE, f"step_run:{name}")
    wait_until(lambda: store.get(run_id).step(name).status.value in ("succeeded", "failed"), timeout=60)
    assert store.get(run_id).step(name).status.value == expect, store.get(run_id).step(name)


def maintenance_on(world) -> bool:
    """Whether users see the maintenance page: the app's webhook flag, or the ECS maintenance task definition."""
    if world["app"].state.maintenance:
        return True
    from tests.aws_world import client

    service = client(world["moto"], "ecs").describe_services(cluster="prod", services=["api"])["services"][0]
    return "api-maintenance" in service["taskDefinition"]


def finish_way_back(world, run_id, ts, *, fixed=True):
    """The end of every way back: maintenance mode off, then the smoke tests; the site serves users again.

    ``fixed``: the rollback put a working version back, so the stand-in app stops failing its broken path.
    """
    store, app = world["store"], world["app"]
    if fixed:
        app.state.fail_path = None
    names = [s.name for s in store.get(run_id).steps if s.phase == "rollback"]
    assert names[-1:] == ["rb_smoke"], names  # every way back ends with the smoke tests
    if "rb_maintenance_off" in names:
        run_step(world, run_id, ts, "rb_maintenance_off")
    assert not maintenance_on(world)
    run_step(world, run_id, ts, "rb_smoke")
    wait_until(lambda: "Smoke-test the site after the rollback" in blocks_text(world, ts)
               and store.get(run_id).status.value in ("rolled_back", "cancelled"))


def migration_rows(world):
    with psycopg.connect(world["db_url"]) as conn:
        return conn.execute("SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL "
                            "FROM _prisma_migrations ORDER BY started_at").fetchall()


