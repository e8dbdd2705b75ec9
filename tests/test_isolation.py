"""Nothing executes against the production server before approval except reads: verify and rehearsal run elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from bot.devslack.client import SlackSender
from bot.devslack.server import FakeSlack
from bot.integrations.pgcluster import DIR_PREFIX
from bot.integrations.prisma import NativeRunner
from bot.runs import RunStore, connect
from tests.chaos import ThrowawayPostgres
from tests.e2e import EXAMPLES, ready_for_approval, start
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    wait_until,
    write_config,
)

INIT = "20240101000000_init"


def fetch(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def throwaway(prefix: str) -> ThrowawayPostgres:
    # Not under pytest's tmp dir: that is private to root, and as root the cluster runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return ThrowawayPostgres(directory).init().start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"no throwaway PostgreSQL cluster here: {exc}")


@pytest.fixture(scope="module", params=["local", "database_url"])
def production(request, tmp_path_factory, redis_url):
    """A PostgreSQL server of its own playing production (so its pg_database and roles are ours alone to
    watch), the Slack stand-in, and the bot rehearsing on a throwaway local cluster (the default target) or on
    a separate rehearsal server the operator provides (``rehearsal.database_url``)."""
    live = throwaway("prod-server-")
    separate = throwaway("rehearsal-server-") if request.param == "database_url" else None
    tmp = tmp_path_factory.mktemp("isolation")
    clusters = Path(tempfile.mkdtemp(prefix="rehearsal-clusters-"))
    clusters.chmod(0o755)  # as root the throwaway clusters run as postgres, who must reach their directory
    migrations = tmp / "migrations"
    db_url = live.url.rsplit("/", 1)[0] + "/app"
    execute(live.url, 'CREATE DATABASE "app"')
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    config = {"environments": {"prod": {
        "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [ALICE, BOB], "database_url": db_url,
        "backup": {"method": "pg_dump", "local_dir": str(tmp / "backups")},
        "migrate": {"migrations_dir": str(migrations), "lock_timeout_ms": 2000},
        "rehearsal": ({"target": "local", "local_dir": str(clusters)} if separate is None else
                      {"target": "database_url", "database_url": separate.url}),
    }}}
    prefix = f"test:isolation:{time.time_ns()}:"
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    world = {"fake": fake, "bot": bot, "store": RunStore(connect(redis_url), prefix=prefix), "live": live,
             "db_url": db_url, "migrations": migrations, "clusters": clusters, "separate": separate,
             "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}
    yield world
    bot.stop()
    fake.stop()
    for server in (live, separate):
        if server is not None:
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
    shutil.rmtree(clusters, ignore_errors=True)
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


class TestNothingTouchesProduction:
    def test_pending_sql_never_reaches_the_live_server(self, production):
        """Pending migrations that create a superuser and drop a database on the server go through backup,
        verification, rehearsal and a refused approval, and the production server is exactly as before."""
        world = production
        store, live = world["store"], world["live"]
        role = f"intruder_{uuid.uuid4().hex[:8]}"
        sentinel = f"sentinel_{uuid.uuid4().hex[:8]}"
        execute(live.url, f'CREATE DATABASE "{sentinel}"')
        migrations: Path = world["migrations"]
        shutil.rmtree(migrations, ignore_errors=True)
        migrations.mkdir()
        shutil.copy2(EXAMPLES / "migration_lock.toml", migrations / "migration_lock.toml")
        shutil.copytree(EXAMPLES / INIT, migrations / INIT)
        NativeRunner(world["db_url"]).deploy(migrations)
        for name, sql in (("20240501000000_make_role", f'CREATE ROLE "{role}" SUPERUSER LOGIN;\n'),
                          ("20240502000000_drop_db", f'DROP DATABASE IF EXISTS "{sentinel}" WITH (FORCE);\n')):
            (migrations / name).mkdir()
            (migrations / name / "migration.sql").write_text(sql)
        databases_before = sorted(r[0] for r in fetch(live.url, "SELECT datname FROM pg_database"))
        rows_before = fetch(world["db_url"], "SELECT id, migration_name, checksum, finished_at, rolled_back_at "
                                             "FROM _prisma_migrations ORDER BY id")

        run_id, ts = start(world, "prod", env="prod")
        assert store.get(run_id).pending_migrations == ["20240501000000_make_role", "20240502000000_drop_db"]
        ready_for_approval(world, run_id, ts)  # the requester alone: checklist, then "Take backup"
        run = store.get(run_id)
        backup = run.step("backup").result
        assert backup["verified"] and backup["restored_prisma_migrations"] == backup["live_prisma_migrations"] == 1
        report = run.facts["rehearsal"]
        assert "rehearsed on the copy the backup was verified with" in report["notes"]  # one restore, not two
        if world["separate"] is None:
            # On the throwaway cluster the migrations run as the copy's owner, who is not a superuser.
            assert not report["ok"] and report["migrations"][0]["name"] == "20240501000000_make_role", report
            assert "must be superuser to create superusers" in report["migrations"][0]["error"]
        else:  # the operator's rehearsal server, as the user they gave: the migrations really ran there
            assert report["ok"], report
            assert [m["name"] for m in report["migrations"]] == run.pending_migrations
        wait_until(lambda: any("Rehearsal on a restored copy" in m.get("text", "")
                               for m in world["fake"].thread(PROD_CHANNEL, ts)))

        world["sender"].click(ALICE, channel_id=PROD_CHANNEL, message=world["fake"].message(PROD_CHANNEL, ts),
                              action_id="approve")  # the requester approving her own run: refused
        wait_until(lambda: world["fake"].ephemerals(user=ALICE))
        assert store.get(run_id).approvals == [] and store.get(run_id).status.value == "awaiting_approval"

        assert fetch(live.url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)) == []
        assert fetch(live.url, "SELECT 1 FROM pg_database WHERE datname = %s", (sentinel,)) == [(1,)]
        assert sorted(r[0] for r in fetch(live.url, "SELECT datname FROM pg_database")) == databases_before
        assert fetch(world["db_url"], "SELECT id, migration_name, checksum, finished_at, rolled_back_at "
                                      "FROM _prisma_migrations ORDER BY id") == rows_before
        separate = world["separate"]
        if separate is None:  # the throwaway cluster the copy lived in is gone, server and directory
            wait_until(lambda: not [p for p in world["clusters"].iterdir() if p.name.startswith(DIR_PREFIX)])
        else:  # the migrations ran on the operator's rehearsal server, whose scratch database was dropped
            assert fetch(separate.url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)) == [(1,)]
            assert fetch(separate.url, "SELECT datname FROM pg_database WHERE datname LIKE '%%rehearsal%%'") == []


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRATE_BOT_"))}
    return subprocess.run([sys.executable, "-m", "bot", "check-config"], env={**env, "MIGRATE_BOT_CONFIG": str(path)},
                          capture_output=True, text=True, timeout=60)


class TestRehearsalServerConfig:
    @pytest.mark.parametrize("rehearsal_url", [
        "postgresql://rehearse:other@127.0.0.1:5432/scratch",
        "postgresql://rehearse@localhost/scratch",  # same server by another name, default port
        "postgresql://rehearse@/scratch?host=/var/run/postgresql",  # its unix socket
    ])
    def test_rehearsal_server_that_is_the_live_one_is_refused(self, tmp_path: Path, rehearsal_url: str) -> None:
        """`check-config` refuses a rehearsal.database_url on the environment's own host and port: one line, exit 2."""
        config = {"environments": {"prod": {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
            "database_url": "postgresql://app:s3cret-pw@127.0.0.1:5432/app",
            "backup": {"method": "pg_dump", "local_dir": str(tmp_path)},
            "rehearsal": {"target": "database_url", "database_url": rehearsal_url},
        }}}
        result = check_config(write_config(tmp_path / "env.yml", config))
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "rehearsal.database_url points at the environment's own server (localhost:5432)" in lines[0]
        assert "s3cret-pw" not in result.stderr

    def test_a_separate_rehearsal_server_is_accepted(self, tmp_path: Path) -> None:
        config = {"environments": {"prod": {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
            "database_url": "postgresql://app@127.0.0.1:5432/app",
            "backup": {"method": "pg_dump", "local_dir": str(tmp_path)},
            "rehearsal": {"target": "database_url", "database_url": "postgresql://r@127.0.0.1:6543/scratch"},
        }}}
        result = check_config(write_config(tmp_path / "env.yml", config))
        assert result.returncode == 0, (result.stdout, result.stderr)


class TestThrowawayCopyIsNotSuperuser:
    def test_copy_to_program_and_alter_system_are_refused_on_the_copy(self, scratch_db: str, tmp_path: Path) -> None:
        """The unreviewed SQL runs on the throwaway copy as its non-superuser owner: it cannot run programs on the
        bot's host (whose environment holds production's credentials) nor change the server."""
        from bot.integrations.postgres import pg_dump
        from bot.rehearsal import rehearse

        marker = Path(tempfile.gettempdir()) / f"rehearsal-ran-{uuid.uuid4().hex[:8]}"
        directory = tmp_path / "migrations"
        directory.mkdir()
        shutil.copy2(EXAMPLES / "migration_lock.toml", directory / "migration_lock.toml")
        shutil.copytree(EXAMPLES / INIT, directory / INIT)
        NativeRunner(scratch_db).deploy(directory)
        dump = pg_dump(scratch_db, tmp_path / "live.dump")
        for name, sql in (("20240501000000_program", f"COPY (SELECT 1) TO PROGRAM 'touch {marker}';\n"),
                          ("20240502000000_system", "ALTER SYSTEM SET fsync = off;\n")):
            (directory / name).mkdir()
            (directory / name / "migration.sql").write_text(sql)
            report = rehearse(dump_path=dump, database_url=scratch_db, migrations_dir=directory, pending=[name])
            assert not report.ok and report.failed is not None and report.failed.name == name, report
            assert "permission denied" in (report.failed.error or "") or "superuser" in (report.failed.error or "")
            shutil.rmtree(directory / name)
        assert not marker.exists()
