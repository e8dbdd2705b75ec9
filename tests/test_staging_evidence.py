""""All migrations tested in staging" from a staging database: only the same migrations, by checksum, count.

Real parts: the bot as a subprocess, the Slack stand-in, Redis, and PostgreSQL holding a production and two
staging databases (one ran exactly these migrations, one ran an older version of a same-named one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.prisma.native import NativeRunner
from tests import harness
from tests.harness import ALICE, BOB, PROD_CHANNEL, wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prisma" / "migrations"
SESSION = "20240215000000_add_counseling_session"


def copy_migrations(target: Path, names: list[str]) -> Path:
    target.mkdir()
    for name in names:
        shutil.copytree(EXAMPLES / name, target / name)
    return target


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_url, redis_url):
    import uuid

    import psycopg

    tmp = tmp_path_factory.mktemp("staging")
    names = [f"stg_{uuid.uuid4().hex[:8]}_{part}" for part in ("prod", "same", "older")]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    prod, same, older = (pg_admin_url.rsplit("/", 1)[0] + "/" + name for name in names)
    migrations = copy_migrations(tmp / "migrations", ["20240101000000_init", SESSION])
    NativeRunner(prod).deploy(copy_migrations(tmp / "first", ["20240101000000_init"]))
    NativeRunner(same).deploy(migrations)
    edited = copy_migrations(tmp / "older", ["20240101000000_init", SESSION])
    script = edited / SESSION / "migration.sql"
    script.write_text(script.read_text().replace("CREATE TABLE", "-- an older draft\nCREATE TABLE", 1))
    NativeRunner(older).deploy(edited)
    env = {"channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB], "database_url": prod,
           "migrate": {"migrations_dir": str(migrations)}}
    config = {"environments": {
        "prod": {**env, "safety": {"staging_env": "stage-older"}},
        "prod2": {**env, "safety": {"staging_env": "stage-same"}},
        "stage-older": {"channel": "C0STAGE1", "requesters": [ALICE], "approvers": [BOB], "database_url": older,
                        "migrate": {"migrations_dir": str(edited)}},
        "stage-same": {"channel": "C0STAGE2", "requesters": [ALICE], "approvers": [BOB], "database_url": same,
                       "migrate": {"migrations_dir": str(migrations)}},
    }}
    fake = FakeSlack(token=harness.BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    prefix = f"test:staging:{uuid.uuid4().hex[:8]}:"
    bot = harness.BotProcess(config_path=harness.write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    from bot.store.runs import RunStore, connect

    yield {"fake": fake, "bot": bot, "store": RunStore(connect(redis_url), prefix=prefix),
           "sender": SlackSender(bot.url + "/slack/events", harness.SIGNING_SECRET, fake=fake)}
    bot.stop()
    fake.stop()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def started(world, env):
    """Start a run in `env` and wait until its pending migrations were read and compared with staging."""
    store = world["store"]
    assert world["sender"].slash(ALICE, env, channel_id=PROD_CHANNEL).status_code == 200
    run = wait_until(lambda: store.active_run(env), timeout=20)
    wait_until(lambda: store.get(run.id).facts.pending is not None, timeout=20)
    return run.id


class TestStagingEvidence:
    def test_same_name_other_version_is_not_evidence(self, world):
        """Staging finished an older draft of the pending migration: "tested in staging" stays open."""
        store = world["store"]
        run_id = started(world, "prod")
        assert [p.name for p in store.get(run_id).facts.pending or []] == [SESSION]
        wait_until(lambda: f"staging evidence for {run_id}: {SESSION} not finished in stage-older with the same "
                   "checksum" in world["bot"].logs(), timeout=20)
        assert "staging_tested" not in store.get(run_id).checklist
        other = started(world, "prod2")  # same migrations, staging that ran exactly them
        wait_until(lambda: "staging_tested" in store.get(other).checklist, timeout=20)
        evidence = store.get(other).checklist["staging_tested"]
        assert evidence.by == "bot" and "same checksums" in (evidence.evidence or "")
        assert "staging_tested" not in store.get(run_id).checklist
        assert not [e for e in store.audit_entries(run_id) if e.action == "checklist.evidence"]
