"""Tests of the migration rehearsal: a real pg_dump restored into a scratch database, migrations applied there."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.backup.evidence import LocalTarget, S3Target
from bot.backup.pg_dump import take_pg_dump_backup
from bot.backup.rehearsal import RehearsalError, rehearse, rehearse_from_evidence
from bot.integrations.aws import Aws
from bot.integrations.postgres import Postgres, pg_dump
from bot.integrations.prisma.native import NativeRunner

DATA = Path(__file__).parent / "data" / "prisma" / "blog"
INIT = "20240101000000_init"
ADD_POST = "20240102000000_add_post"
BAD = "20240103000000_bad"
LATER = "20240104000000_later"


def fetch(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def migrations_dir(tmp_path: Path, names: list[str]) -> Path:
    """A migrations directory holding only ``names`` from the blog fixture."""
    target = tmp_path / "migrations"
    target.mkdir(exist_ok=True)
    shutil.copy2(DATA / "migration_lock.toml", target / "migration_lock.toml")
    for name in names:
        if not (target / name).exists():
            shutil.copytree(DATA / name, target / name)
    return target


def add_migration(directory: Path, name: str, sql: str) -> None:
    (directory / name).mkdir()
    (directory / name / "migration.sql").write_text(sql)


def rehearsal_databases(admin_url: str) -> list[str]:
    return [
        r[0]
        for r in fetch(admin_url, "SELECT datname FROM pg_database WHERE datname LIKE '%\\_rehearsal\\_%'")
    ]


@pytest.fixture
def live(scratch_db: str, tmp_path: Path) -> tuple[str, Path]:
    """A 'live' database migrated to init with some users, and a real pg_dump of it."""
    NativeRunner(scratch_db).deploy(migrations_dir(tmp_path, [INIT]))
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "User" (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 500) g"""
        )
    dump = pg_dump(scratch_db, tmp_path / "live.dump")
    return scratch_db, dump


class TestRehearsal:
    def test_restored_copy_gets_the_pending_migrations_timed_and_is_dropped(
        self, live: tuple[str, Path], tmp_path: Path, pg_admin_url: str
    ) -> None:
        """Two pending migrations apply on a restored copy, each with a time, and no scratch database remains."""
        url, dump = live
        directory = migrations_dir(tmp_path, [INIT, ADD_POST, LATER])
        events: list[str] = []
        report = rehearse(dump_path=dump, database_url=url, migrations_dir=directory, on_event=events.append)
        assert report.ok, report.summary()
        assert [m.name for m in report.migrations] == [ADD_POST, LATER]
        assert all(m.ok and m.duration_s > 0 for m in report.migrations)
        assert report.summary().startswith("2/2 applied on a restored copy in ")
        assert "(slowest: " in report.summary()
        assert "_rehearsal_" in report.scratch_database
        assert report.scratch_database not in rehearsal_databases(pg_admin_url)
        assert not [d for d in rehearsal_databases(pg_admin_url) if d.startswith(url.rsplit("/", 1)[1])]
        assert Postgres(url).prisma_migrations_count() == 1
        assert fetch(url, "SELECT to_regclass('public.\"Post\"')")[0][0] is None
        assert any(e.startswith("Applying migration") for e in events)

    def test_failing_migration_is_named_and_the_copy_still_dropped(
        self, live: tuple[str, Path], tmp_path: Path, pg_admin_url: str
    ) -> None:
        """A migration that fails on the copy makes the report not ok, names it, and leaves no scratch database."""
        url, dump = live
        directory = migrations_dir(tmp_path, [INIT, ADD_POST, BAD, LATER])
        report = rehearse(dump_path=dump, database_url=url, migrations_dir=directory)
        assert not report.ok
        assert [(m.name, m.ok) for m in report.migrations] == [(ADD_POST, True), (BAD, False)]
        failed = report.failed
        assert failed is not None and failed.name == BAD
        assert failed.error == "division by zero (SQLSTATE 22012)"
        assert report.summary() == f"{BAD} failed: division by zero (SQLSTATE 22012)"
        assert report.scratch_database not in rehearsal_databases(pg_admin_url)
        assert Postgres(url).prisma_migrations_count() == 1

    def test_locks_and_waits_seen_while_a_migration_runs_are_recorded(
        self, live: tuple[str, Path], tmp_path: Path
    ) -> None:
        """The sampler sees the ACCESS EXCLUSIVE lock an ALTER TABLE holds to the end of its file, and its wait."""
        url, dump = live
        directory = migrations_dir(tmp_path, [INIT])
        add_migration(
            directory,
            "20240105000000_slow_alter",
            'ALTER TABLE "User" ADD COLUMN "nick" TEXT;\nSELECT pg_sleep(0.5);\n',
        )
        report = rehearse(dump_path=dump, database_url=url, migrations_dir=directory)
        assert report.ok, report.summary()
        (migration,) = report.migrations
        assert migration.locks == {"User": "AccessExclusiveLock"}
        assert "Timeout:PgSleep" in migration.waits
        assert migration.duration_s >= 0.5

    def test_pending_limits_the_rehearsal_to_the_named_migrations(
        self, live: tuple[str, Path], tmp_path: Path
    ) -> None:
        """With ``pending`` given, only those migrations run, even when the directory holds a failing one."""
        url, dump = live
        directory = migrations_dir(tmp_path, [INIT, ADD_POST, BAD, LATER])
        report = rehearse(dump_path=dump, database_url=url, migrations_dir=directory, pending=[LATER])
        assert report.ok, report.summary()
        assert [m.name for m in report.migrations] == [LATER]
        assert report.pending == [LATER]

    def test_nothing_pending_is_ok(self, live: tuple[str, Path], tmp_path: Path) -> None:
        """A restored copy that is already up to date passes with nothing applied."""
        url, dump = live
        report = rehearse(dump_path=dump, database_url=url, migrations_dir=migrations_dir(tmp_path, [INIT]))
        assert report.ok and report.migrations == []
        assert report.summary().startswith("nothing pending")

    def test_unrestorable_dump_fails_with_an_error_and_no_scratch_database(
        self, scratch_db: str, tmp_path: Path, pg_admin_url: str
    ) -> None:
        """A file pg_restore cannot read gives ok False with the restore error, and the scratch database is gone."""
        bogus = tmp_path / "bogus.dump"
        bogus.write_bytes(b"not a dump")
        report = rehearse(
            dump_path=bogus, database_url=scratch_db, migrations_dir=migrations_dir(tmp_path, [INIT])
        )
        assert not report.ok
        assert report.error is not None and "pg_restore" in report.error
        assert report.summary().startswith("rehearsal failed: ")
        assert report.scratch_database not in rehearsal_databases(pg_admin_url)

    def test_bad_input_raises_before_anything_is_created(self, scratch_db: str, tmp_path: Path) -> None:
        """A missing dump or an unknown migration name raises RehearsalError."""
        directory = migrations_dir(tmp_path, [INIT])
        with pytest.raises(RehearsalError, match="does not exist"):
            rehearse(dump_path=tmp_path / "missing.dump", database_url=scratch_db, migrations_dir=directory)
        dump = tmp_path / "x.dump"
        dump.write_bytes(b"x")
        with pytest.raises(RehearsalError, match="nope"):
            rehearse(dump_path=dump, database_url=scratch_db, migrations_dir=directory, pending=["nope"])


class TestRehearseFromEvidence:
    def test_local_backup_evidence(self, scratch_db: str, tmp_path: Path) -> None:
        """The backup step's evidence for a local directory-format dump is rehearsed from its packed .tar."""
        NativeRunner(scratch_db).deploy(migrations_dir(tmp_path, [INIT]))
        evidence = take_pg_dump_backup(
            run_id="r1",
            database_url=scratch_db,
            target=LocalTarget(tmp_path / "backups"),
            aws=None,
            fmt="directory",
            verify_restore=False,
        )
        directory = migrations_dir(tmp_path, [INIT, LATER])
        report = rehearse_from_evidence(evidence.to_dict(), database_url=scratch_db, migrations_dir=directory)
        assert report.ok, report.summary()
        assert [m.name for m in report.migrations] == [LATER]

    def test_s3_backup_evidence(self, scratch_db: str, tmp_path: Path, moto_reset: str) -> None:
        """An S3 dump is downloaded through Aws and rehearsed; without an Aws client it is refused."""
        aws = Aws(endpoint_url=moto_reset)
        aws.s3.create_bucket(Bucket="dumps")
        aws.s3.put_bucket_versioning(Bucket="dumps", VersioningConfiguration={"Status": "Enabled"})
        NativeRunner(scratch_db).deploy(migrations_dir(tmp_path, [INIT]))
        evidence = take_pg_dump_backup(
            run_id="r2",
            database_url=scratch_db,
            target=S3Target("dumps", "prod"),
            aws=aws,
            verify_restore=False,
        ).to_dict()
        assert evidence["location"].startswith("s3://dumps/prod/")
        directory = migrations_dir(tmp_path, [INIT, LATER])
        with pytest.raises(RehearsalError, match="no AWS client"):
            rehearse_from_evidence(evidence, database_url=scratch_db, migrations_dir=directory)
        report = rehearse_from_evidence(evidence, database_url=scratch_db, migrations_dir=directory, aws=aws)
        assert report.ok, report.summary()
        assert [m.name for m in report.migrations] == [LATER]

    def test_dump_not_matching_its_checksum_is_refused(self, scratch_db: str, tmp_path: Path) -> None:
        """A local dump whose sha256 differs from the evidence is not rehearsed."""
        NativeRunner(scratch_db).deploy(migrations_dir(tmp_path, [INIT]))
        evidence = take_pg_dump_backup(
            run_id="r3",
            database_url=scratch_db,
            target=LocalTarget(tmp_path / "backups"),
            aws=None,
            verify_restore=False,
        ).to_dict()
        with Path(evidence["location"]).open("ab") as handle:
            handle.write(b"tampered")
        with pytest.raises(RehearsalError, match="sha256"):
            rehearse_from_evidence(
                evidence, database_url=scratch_db, migrations_dir=migrations_dir(tmp_path, [INIT])
            )
