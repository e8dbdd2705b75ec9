"""Nothing executes against the production server before approval except reads: verify and rehearsal run elsewhere."""

from __future__ import annotations

import contextlib
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

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.pgcluster import DIR_PREFIX
from bot.integrations.prisma.native import NativeRunner
from bot.runbook.rules import BackupResult, result_of
from bot.store.runs import RunStore, connect
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


def forget(redis_url: str, prefix: str) -> None:
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


def stopped(server: ThrowawayPostgres) -> None:
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="module", params=["local", "database_url"])
def production(request, tmp_path_factory, redis_url):
    """A PostgreSQL server of its own playing production (so its pg_database and roles are ours alone to
    watch), the Slack stand-in, and the bot rehearsing on a throwaway local cluster (the default target) or on
    a separate rehearsal server the operator provides (``rehearsal.database_url``)."""
    prefix = f"test:isolation:{time.time_ns()}:"
    with contextlib.ExitStack() as cleanup:  # everything made is undone, even when a later part fails
        cleanup.callback(forget, redis_url, prefix)
        live = throwaway("prod-server-")
        cleanup.callback(stopped, live)
        separate = None
        if request.param == "database_url":
            separate = throwaway("rehearsal-server-")
            cleanup.callback(stopped, separate)
        tmp = tmp_path_factory.mktemp("isolation")
        clusters = Path(tempfile.mkdtemp(prefix="rehearsal-clusters-"))
        cleanup.callback(shutil.rmtree, clusters, ignore_errors=True)
        clusters.chmod(0o755)  # as root the throwaway clusters run as postgres, who must reach their directory
        migrations = tmp / "migrations"
        db_url = live.url.rsplit("/", 1)[0] + "/app"
        execute(live.url, 'CREATE DATABASE "app"')
        fake = FakeSlack(token=BOT_TOKEN).start()
        cleanup.callback(fake.stop)
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        config = {"environments": {"prod": {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [ALICE, BOB], "database_url": db_url,
            "backup": {"method": "pg_dump", "local_dir": str(tmp / "backups")},
            "migrate": {"migrations_dir": str(migrations), "lock_timeout_ms": 2000},
            "rehearsal": ({"target": "local", "local_dir": str(clusters)} if separate is None else
                          {"target": "database_url", "database_url": separate.url}),
        }}}
        bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                         redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log")
        cleanup.callback(bot.stop)
        bot.start()
        yield {"fake": fake, "bot": bot, "store": RunStore(connect(redis_url), prefix=prefix), "live": live,
               "db_url": db_url, "migrations": migrations, "clusters": clusters, "separate": separate,
               "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}


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
        backup = result_of(run, BackupResult)
        assert backup.verified and backup.restored_prisma_migrations == backup.live_prisma_migrations == 1
        report = run.facts.rehearsal
        assert report is not None
        assert "rehearsed on the copy the backup was verified with" in report.notes  # one restore, not two
        if world["separate"] is None:
            # On the throwaway cluster the migrations run as the copy's owner, who is not a superuser.
            assert not report.ok and report.migrations[0].name == "20240501000000_make_role", report
            assert "must be superuser to create superusers" in (report.migrations[0].error or "")
        else:  # the operator's rehearsal server, as the user they gave: the migrations really ran there
            assert report.ok, report
            assert [m.name for m in report.migrations] == run.pending_migrations
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
        from bot.backup.rehearsal import rehearse
        from bot.integrations.postgres import pg_dump

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


class TestRdsRestoreTarget:
    """rehearsal.target rds_restore: a temporary instance from the run's snapshot, verified, rehearsed, deleted.
    moto's instances run no PostgreSQL, so the endpoint is pointed at a local cluster holding the same data."""

    @pytest.fixture
    def rds(self, moto_reset: str, scratch_db: str, tmp_path: Path):  # type: ignore[no-untyped-def]
        from bot.backup.rds import take_rds_snapshot_backup
        from bot.integrations.aws import Aws
        from bot.integrations.pgcluster import LocalCluster, server_binaries
        from bot.integrations.postgres import pg_dump, pg_restore
        from tests.aws_world import make_rds_instance

        make_rds_instance(moto_reset, "prod-db")
        aws = Aws(region="us-east-1", endpoint_url=moto_reset, poll_interval_s=0.05, max_wait_s=5, call_timeout_s=10)
        directory = tmp_path / "migrations"
        directory.mkdir()
        shutil.copy2(EXAMPLES / "migration_lock.toml", directory / "migration_lock.toml")
        shutil.copytree(EXAMPLES / INIT, directory / INIT)
        NativeRunner(scratch_db).deploy(directory)
        shutil.copytree(EXAMPLES / "20240215000000_add_counseling_session",
                        directory / "20240215000000_add_counseling_session")
        run_id = f"rds-{uuid.uuid4().hex[:6]}"
        evidence = take_rds_snapshot_backup(run_id=run_id, aws=aws, instance_id="prod-db", database_url=scratch_db)
        dump = pg_dump(scratch_db, tmp_path / "snapshot-content.dump")
        base = Path(tempfile.mkdtemp(prefix="rds-standin-"))
        base.chmod(0o755)
        standin = LocalCluster(server_binaries(None), base_dir=base).start()
        asked: list[str] = []

        def endpoint(instance_id: str) -> str:
            """What the temporary instance would serve: the snapshot's data, on a local cluster."""
            asked.append(instance_id)
            name = f"copy_{len(asked)}"
            restore_url, url = standin.create_database(name)
            pg_restore(dump, restore_url, no_owner=True)
            standin.hand_over(name)
            return url

        yield {"aws": aws, "evidence": evidence, "run_id": run_id, "live": scratch_db, "migrations": directory,
               "endpoint": endpoint, "asked": asked, "standin": standin}
        standin.stop()
        shutil.rmtree(base, ignore_errors=True)

    @staticmethod
    def instances(aws) -> list[str]:  # type: ignore[no-untyped-def]
        return [i["DBInstanceIdentifier"] for i in aws.rds.describe_db_instances()["DBInstances"]]

    def test_snapshot_verified_and_rehearsed_on_one_temporary_instance_then_deleted(self, rds) -> None:  # type: ignore[no-untyped-def]
        from bot.backup.rds import verify_snapshot_by_restore
        from bot.backup.rehearsal import rehearse_from_evidence
        from bot.backup.sandbox import hold
        from bot.config import RehearsalConfig

        aws, run_id = rds["aws"], rds["run_id"]
        isolation = RehearsalConfig(target="rds_restore", database_url="postgresql://rehearse:pw@replaced/app")

        def keep(copy):  # type: ignore[no-untyped-def]
            hold(run_id, copy)
            return True

        evidence = verify_snapshot_by_restore(rds["evidence"], aws=aws, isolation=isolation, run_id=run_id,
                                              database_url=rds["live"], keep=keep, endpoint=rds["endpoint"])
        assert evidence.verified and evidence.restored_prisma_migrations == evidence.live_prisma_migrations == 1
        assert "restore-verified" in evidence.describe()
        (temporary,) = rds["asked"]
        assert temporary.startswith(f"rehearsal-{run_id}-") and temporary in self.instances(aws)
        report = rehearse_from_evidence(evidence.to_dict(), database_url=rds["live"], migrations_dir=rds["migrations"],
                                        aws=aws, run_id=run_id, isolation=isolation, endpoint=rds["endpoint"])
        assert report.ok and "rehearsed on the copy the backup was verified with" in report.notes, report
        assert [m.name for m in report.migrations] == ["20240215000000_add_counseling_session"]
        assert rds["asked"] == [temporary]  # one instance for both
        assert self.instances(aws) == ["prod-db"]  # the temporary instance is deleted
        assert fetch(rds["live"], "SELECT count(*) FROM _prisma_migrations") == [(1,)]  # live untouched

    def test_unreachable_or_mismatching_instance_is_not_verified_and_is_deleted(self, rds) -> None:  # type: ignore[no-untyped-def]
        from bot.backup.rds import verify_snapshot_by_restore
        from bot.config import RehearsalConfig
        from bot.errors import IntegrationError

        aws = rds["aws"]
        isolation = RehearsalConfig(target="rds_restore", database_url="postgresql://rehearse:pw@replaced/app")

        def unreachable(instance_id: str) -> str:
            raise IntegrationError(f"cannot reach {instance_id}")

        def empty(instance_id: str) -> str:
            return rds["standin"].create_database("empty")[1]

        for endpoint, why in ((unreachable, "cannot reach"), (empty, "_prisma_migrations rows differ")):
            evidence = verify_snapshot_by_restore(
                rds["evidence"], aws=aws, isolation=isolation, run_id=rds["run_id"], database_url=rds["live"],
                endpoint=endpoint)
            assert not evidence.verified and any(why in n for n in evidence.notes), evidence.notes
            assert self.instances(aws) == ["prod-db"]
            rds["evidence"].verified, rds["evidence"].notes = True, []

    def test_without_rehearsal_credentials_the_instance_is_refused_and_deleted(self, rds) -> None:  # type: ignore[no-untyped-def]
        from bot.backup.rds import verify_snapshot_by_restore
        from bot.config import RehearsalConfig

        evidence = verify_snapshot_by_restore(rds["evidence"], aws=rds["aws"],
                                              isolation=RehearsalConfig(target="rds_restore"),
                                              run_id=rds["run_id"], database_url=rds["live"])
        assert not evidence.verified
        assert any("rds_restore needs rehearsal.database_url" in n for n in evidence.notes), evidence.notes
        assert self.instances(rds["aws"]) == ["prod-db"]

    def test_rds_restore_needs_an_rds_snapshot_backup(self, tmp_path: Path) -> None:
        config = {"environments": {"prod": {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
            "database_url": "postgresql://app@127.0.0.1:5432/app",
            "backup": {"method": "pg_dump", "local_dir": str(tmp_path)},
            "rehearsal": {"target": "rds_restore"},
        }}}
        result = check_config(write_config(tmp_path / "env.yml", config))
        assert result.returncode == 2 and "rds_restore needs backup.method rds_snapshot" in result.stderr
