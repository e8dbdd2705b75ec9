"""Tests of NativeRunner against real PostgreSQL: Prisma-compatible bookkeeping, locks, failures, resolve."""

from __future__ import annotations

import hashlib
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.integrations.prisma.migrations import (
    PrismaError,
    checksum_matches,
    list_local_migrations,
    migration_checksum,
)
from bot.integrations.prisma.native import ADVISORY_LOCK_KEY, NativeRunner

DATA = Path(__file__).parent / "data" / "prisma"
BAD = "20240103000000_bad"


def copy_migrations(tmp_path: Path, fixture: str, only: list[str] | None = None) -> Path:
    """Copy a fixture migrations directory (optionally only some migrations) to tmp_path."""
    target = tmp_path / "migrations"
    shutil.copytree(DATA / fixture, target)
    if only is not None:
        for child in target.iterdir():
            if child.is_dir() and child.name not in only:
                shutil.rmtree(child)
    return target


def add_migration(directory: Path, name: str, sql: str | bytes) -> None:
    (directory / name).mkdir()
    data = sql if isinstance(sql, bytes) else sql.encode()
    (directory / name / "migration.sql").write_bytes(data)


def fetch(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def table_exists(url: str, name: str) -> bool:
    return fetch(url, "SELECT to_regclass(%s) IS NOT NULL", (f'public."{name}"',))[0][0]


def column_exists(url: str, table: str, column: str) -> bool:
    rows = fetch(
        url, "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", (table, column)
    )
    return bool(rows)


def fast_runner(url: str, **kwargs: Any) -> NativeRunner:
    """A runner with test-sized timeouts."""
    options: dict[str, Any] = {"advisory_lock_timeout_s": 2, "lock_timeout_ms": 2000, "lock_retry_backoff_s": 0.1}
    options.update(kwargs)
    return NativeRunner(url, **options)


class TestMigrationsTable:
    def test_ddl_matches_prisma(self, scratch_db: str, tmp_path: Path) -> None:
        """The created _prisma_migrations has Prisma's exact columns, types, defaults and only its primary key."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        fast_runner(scratch_db).deploy(migrations)
        columns = fetch(
            scratch_db,
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position",
        )
        assert columns == [
            ("id", "character varying", 36, "NO", None),
            ("checksum", "character varying", 64, "NO", None),
            ("finished_at", "timestamp with time zone", None, "YES", None),
            ("migration_name", "character varying", 255, "NO", None),
            ("logs", "text", None, "YES", None),
            ("rolled_back_at", "timestamp with time zone", None, "YES", None),
            ("started_at", "timestamp with time zone", None, "NO", "now()"),
            ("applied_steps_count", "integer", None, "NO", "0"),
        ]
        indexes = fetch(
            scratch_db, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = '_prisma_migrations'"
        )
        assert indexes == [
            (
                "_prisma_migrations_pkey",
                "CREATE UNIQUE INDEX _prisma_migrations_pkey ON public._prisma_migrations USING btree (id)",
            )
        ]

    def test_schema_parameter_places_the_table(self, scratch_db: str, tmp_path: Path) -> None:
        """Prisma's ?schema= parameter is honoured: table and migrations land in that schema."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        fast_runner(scratch_db + "?schema=app").deploy(migrations)
        tables = fetch(
            scratch_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' ORDER BY 1"
        )
        assert tables == [("User",), ("_prisma_migrations",)]


class TestChecksum:
    def test_crlf_file_hashes_raw_and_matches_lf(self, scratch_db: str, tmp_path: Path) -> None:
        """A CRLF file is stored with the raw-bytes checksum and still matches after conversion to LF."""
        migrations = tmp_path / "migrations"
        migrations.mkdir()
        raw = b'CREATE TABLE "Crlf" (\r\n    "id" INTEGER NOT NULL\r\n);\r\n'
        add_migration(migrations, "20240101000000_crlf", raw)
        fast_runner(scratch_db).deploy(migrations)
        stored = fetch(scratch_db, "SELECT checksum FROM _prisma_migrations")[0][0]
        assert stored == hashlib.sha256(raw).hexdigest()
        (migrations / "20240101000000_crlf" / "migration.sql").write_bytes(raw.replace(b"\r\n", b"\n"))
        status = fast_runner(scratch_db).status(migrations)
        assert status.edited == [] and status.up_to_date

    def test_bom_is_part_of_the_checksum(self) -> None:
        """A UTF-8 BOM is kept in the hashed text, and invalid bytes hash as U+FFFD like Node."""
        body = b"SELECT 1;\n"
        assert migration_checksum(b"\xef\xbb\xbf" + body) == hashlib.sha256(b"\xef\xbb\xbf" + body).hexdigest()
        assert migration_checksum(b"\xef\xbb\xbf" + body) != migration_checksum(body)
        assert migration_checksum(b"SELECT '\xff';") == hashlib.sha256("SELECT '\ufffd';".encode()).hexdigest()

    def test_legacy_unpadded_checksum_matches(self) -> None:
        """A checksum written by old engines (hex bytes without zero padding) is accepted when comparing."""
        script = "SELECT 1;\n"
        legacy = "".join(f"{b:x}" for b in hashlib.sha256(script.encode()).digest())
        assert len(legacy) == 58  # six digest bytes of this script are below 0x10
        assert checksum_matches(script, legacy)
        assert not checksum_matches("SELECT 2;\n", legacy)

    def test_edited_migration_is_reported(self, scratch_db: str, tmp_path: Path) -> None:
        """Changing an applied file shows up in status.edited, but status stays up to date like Prisma's."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        fast_runner(scratch_db).deploy(migrations)
        script = migrations / "20240101000000_init" / "migration.sql"
        script.write_text(script.read_text() + "-- edited\n")
        status = fast_runner(scratch_db).status(migrations)
        assert status.edited == ["20240101000000_init"]
        assert status.up_to_date


class TestDeploy:
    def test_applies_in_order_with_prisma_rows(self, scratch_db: str, tmp_path: Path) -> None:
        """Each migration gets one finished row (uuid4 id, file checksum, 1 step, logs NULL), ordered by start."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init", "20240102000000_add_post"])
        events: list[str] = []
        result = fast_runner(scratch_db).deploy(migrations, on_event=events.append)
        assert [a.name for a in result.applied] == ["20240101000000_init", "20240102000000_add_post"]
        assert events[0] == "Applying migration `20240101000000_init`"
        assert events[1].startswith("Applied `20240101000000_init` in ")
        rows = fast_runner(scratch_db).rows()
        local = list_local_migrations(migrations)
        assert [r.migration_name for r in rows] == [m.name for m in local]
        for row, migration in zip(rows, local, strict=True):
            assert uuid.UUID(row.id).version == 4 and row.id == str(uuid.UUID(row.id))
            assert row.checksum == migration.checksum
            assert row.finished_at is not None and row.finished_at >= row.started_at
            assert (row.logs, row.rolled_back_at, row.applied_steps_count) == (None, None, 1)
        assert rows[0].started_at < rows[1].started_at
        assert table_exists(scratch_db, "Post")
        assert fast_runner(scratch_db).deploy(migrations).applied == []

    def test_failed_migration_blocks_until_resolved_and_fixed(self, scratch_db: str, tmp_path: Path) -> None:
        """A file failing part-way leaves no partial schema, a failed row, P3009 until resolved, then re-applies."""
        migrations = copy_migrations(tmp_path, "blog")
        runner = fast_runner(scratch_db)
        with pytest.raises(PrismaError) as failure:
            runner.deploy(migrations)
        assert failure.value.code == "P3018" and failure.value.migration_name == BAD
        assert "Migration name: 20240103000000_bad" in str(failure.value)
        assert "Database error code: 22012" in str(failure.value)
        assert not table_exists(scratch_db, "Audit")
        assert not column_exists(scratch_db, "User", "name")
        (bad_row,) = [r for r in runner.rows() if r.migration_name == BAD]
        assert bad_row.finished_at is None and bad_row.rolled_back_at is None
        assert bad_row.logs and "division by zero" in bad_row.logs

        with pytest.raises(PrismaError) as blocked:
            runner.deploy(migrations)
        assert blocked.value.code == "P3009"
        assert f"The `{BAD}` migration started at {bad_row.started_at.strftime('%Y-%m-%d %H:%M:%S')}" in str(
            blocked.value
        )
        assert "UTC failed" in str(blocked.value)

        runner.resolve_rolled_back(migrations, BAD)
        script = migrations / BAD / "migration.sql"
        script.write_text(script.read_text().replace("SELECT 1 / 0;", ""))
        result = runner.deploy(migrations)
        assert [a.name for a in result.applied] == [BAD, "20240104000000_later"]
        assert table_exists(scratch_db, "Audit") and column_exists(scratch_db, "User", "name")
        old, new = [r for r in runner.rows() if r.migration_name == BAD]
        assert old.id == bad_row.id and old.rolled_back_at is not None and old.finished_at is None
        assert old.checksum == bad_row.checksum != new.checksum
        assert new.finished_at is not None and new.rolled_back_at is None
        assert runner.status(migrations).up_to_date

    def test_non_empty_schema_without_table_is_p3005(self, scratch_db: str, tmp_path: Path) -> None:
        """An existing unmanaged table makes deploy refuse with P3005 and create nothing."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute("CREATE TABLE legacy (id int)")
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        with pytest.raises(PrismaError) as refused:
            fast_runner(scratch_db).deploy(migrations)
        assert refused.value.code == "P3005"
        assert not table_exists(scratch_db, "_prisma_migrations")

    def test_concurrent_index_alone_in_file_applies(self, scratch_db: str, tmp_path: Path) -> None:
        """A file holding only CREATE INDEX CONCURRENTLY runs outside a transaction and leaves a valid index."""
        migrations = copy_migrations(tmp_path, "concurrent")
        result = fast_runner(scratch_db).deploy(migrations)
        assert len(result.applied) == 2
        assert fetch(
            scratch_db,
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'Item_sku_idx'",
        ) == [(True,)]

    def test_failed_concurrent_index_names_the_invalid_index(self, scratch_db: str, tmp_path: Path) -> None:
        """A failed concurrent build is P3018 and the message names the invalid index it left behind."""
        migrations = copy_migrations(tmp_path, "concurrent", only=["20240101000000_init"])
        add_migration(migrations, "20240103000000_unique_sku", 'CREATE UNIQUE INDEX CONCURRENTLY "Item_sku_key" ON "Item"("sku");\n')
        with pytest.raises(PrismaError) as failure:
            fast_runner(scratch_db).deploy(migrations)
        assert failure.value.code == "P3018" and failure.value.database_error_code == "23505"
        assert 'invalid index "Item_sku_key"' in str(failure.value)


class TestResolve:
    def test_applied_row_shape(self, scratch_db: str, tmp_path: Path) -> None:
        """resolve --applied on a fresh database creates the table and a row with logs='' and 0 steps."""
        migrations = copy_migrations(tmp_path, "blog")
        fast_runner(scratch_db).resolve_applied(migrations, "20240101000000_init")
        (row,) = fast_runner(scratch_db).rows()
        assert (row.migration_name, row.logs, row.applied_steps_count, row.rolled_back_at) == (
            "20240101000000_init",
            "",
            0,
            None,
        )
        assert row.started_at == row.finished_at
        assert not table_exists(scratch_db, "User")

    def test_applied_after_failure_rolls_back_old_row(self, scratch_db: str, tmp_path: Path) -> None:
        """resolve --applied on a failed migration marks the old row rolled back and adds a finished one."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init", BAD])
        runner = fast_runner(scratch_db)
        with pytest.raises(PrismaError):
            runner.deploy(migrations)
        runner.resolve_applied(migrations, BAD)
        old, new = [r for r in runner.rows() if r.migration_name == BAD]
        assert old.rolled_back_at is not None and old.finished_at is None
        assert new.finished_at == new.started_at and new.logs == ""
        with pytest.raises(PrismaError) as again:
            runner.resolve_applied(migrations, BAD)
        assert again.value.code == "P3008"

    def test_applied_unknown_migration_is_p3017(self, scratch_db: str, tmp_path: Path) -> None:
        """resolve --applied with a name that is not a local directory fails with P3017."""
        migrations = copy_migrations(tmp_path, "blog")
        with pytest.raises(PrismaError) as missing:
            fast_runner(scratch_db).resolve_applied(migrations, "20240101000000_nope")
        assert missing.value.code == "P3017"

    def test_rolled_back_only_touches_failed_rows(self, scratch_db: str, tmp_path: Path) -> None:
        """resolve --rolled-back refuses finished migrations (P3012) and unknown ones (P3011)."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        runner = fast_runner(scratch_db)
        runner.deploy(migrations)
        with pytest.raises(PrismaError) as finished:
            runner.resolve_rolled_back(migrations, "20240101000000_init")
        assert finished.value.code == "P3012"
        with pytest.raises(PrismaError) as unknown:
            runner.resolve_rolled_back(migrations, "init")
        assert unknown.value.code == "P3011"
        assert [r.rolled_back_at for r in runner.rows()] == [None]

    def test_rolled_back_migration_is_pending_again(self, scratch_db: str, tmp_path: Path) -> None:
        """Rows with rolled_back_at are ignored: the migration is pending and no longer failed."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init", BAD])
        runner = fast_runner(scratch_db)
        with pytest.raises(PrismaError):
            runner.deploy(migrations)
        assert [r.migration_name for r in runner.status(migrations).failed] == [BAD]
        runner.resolve_rolled_back(migrations, BAD)
        status = runner.status(migrations)
        assert status.pending == [BAD] and status.failed == [] and not status.up_to_date


class TestStatus:
    def test_classifies_pending_and_missing_locally(self, scratch_db: str, tmp_path: Path) -> None:
        """Status takes no lock and reports pending local migrations and applied ones missing locally."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init", "20240102000000_add_post"])
        runner = fast_runner(scratch_db)
        assert not runner.status(migrations).table_exists
        runner.deploy(migrations)
        shutil.rmtree(migrations / "20240101000000_init")
        add_migration(migrations, "20240105000000_new", "SELECT 1;\n")
        with psycopg.connect(scratch_db, autocommit=True) as holder:
            holder.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
            status = runner.status(migrations)
        assert status.pending == ["20240105000000_new"]
        assert status.missing_locally == ["20240101000000_init"]
        assert not status.up_to_date


class TestAdvisoryLock:
    def test_held_lock_fails_with_p1002(self, scratch_db: str, tmp_path: Path) -> None:
        """Another session holding Prisma's advisory lock makes deploy fail with P1002; nothing is applied."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        with psycopg.connect(scratch_db, autocommit=True) as holder:
            holder.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
            with pytest.raises(PrismaError) as timed_out:
                fast_runner(scratch_db, advisory_lock_timeout_s=1).deploy(migrations)
            assert timed_out.value.code == "P1002"
            assert "pg_advisory_lock(72707369)" in str(timed_out.value) and "Timeout: 1000ms" in str(timed_out.value)
            assert not table_exists(scratch_db, "_prisma_migrations")
            assert not table_exists(scratch_db, "User")
            fast_runner(scratch_db, disable_advisory_lock=True).deploy(migrations)
        assert table_exists(scratch_db, "User")


class TestLockTimeoutRetry:
    @staticmethod
    def _prepare(scratch_db: str, tmp_path: Path) -> Path:
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        fast_runner(scratch_db).deploy(migrations)
        add_migration(migrations, "20240105000000_nickname", 'ALTER TABLE "User" ADD COLUMN "nickname" TEXT;\n')
        return migrations

    def test_gives_up_naming_the_blocker(self, scratch_db: str, tmp_path: Path) -> None:
        """With ACCESS EXCLUSIVE held elsewhere, deploy retries, then fails naming the blocking pid; nothing applied."""
        migrations = self._prepare(scratch_db, tmp_path)
        events: list[str] = []
        with psycopg.connect(scratch_db) as blocker:
            blocker.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
            runner = fast_runner(scratch_db, lock_timeout_ms=300, lock_retries=2, lock_retry_backoff_s=0.05)
            with pytest.raises(PrismaError) as failure:
                runner.deploy(migrations, on_event=events.append)
            pid = blocker.info.backend_pid
            blocker.rollback()
        message = str(failure.value)
        assert failure.value.code == "P3018" and failure.value.database_error_code == "55P03"
        assert f'could not get lock on "User" — blocked by pid {pid} (LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE, ' in message
        assert "gave up after 3 attempts" in message
        assert sum("retrying" in e for e in events) == 2
        assert not column_exists(scratch_db, "User", "nickname")
        rows = [r for r in fast_runner(scratch_db).rows() if r.migration_name == "20240105000000_nickname"]
        assert len(rows) == 1 and rows[0].failed and rows[0].logs and "55P03" in rows[0].logs

    def test_succeeds_when_blocker_commits(self, scratch_db: str, tmp_path: Path) -> None:
        """When the blocking transaction ends during the retries, the deploy succeeds with one clean row."""
        migrations = self._prepare(scratch_db, tmp_path)
        with psycopg.connect(scratch_db) as blocker:
            blocker.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
            release = threading.Timer(1.0, blocker.commit)
            release.start()
            try:
                runner = fast_runner(scratch_db, lock_timeout_ms=300, lock_retries=6, lock_retry_backoff_s=0.1)
                result = runner.deploy(migrations)
            finally:
                release.join()
        assert [a.name for a in result.applied] == ["20240105000000_nickname"]
        assert column_exists(scratch_db, "User", "nickname")
        rows = [r for r in fast_runner(scratch_db).rows() if r.migration_name == "20240105000000_nickname"]
        assert len(rows) == 1 and rows[0].applied


class TestOneQueryPerMigration:
    """A multi-statement file shares its query with its own bookkeeping; every failure still reads as Prisma's."""

    TWO_STATEMENTS = 'ALTER TABLE "User" ADD COLUMN "nickname" TEXT;\nCREATE INDEX "User_nickname_idx" ON "User"("nickname");\n'

    def test_blocked_two_statement_file_retries_and_leaves_one_failed_row(self, scratch_db: str, tmp_path: Path) -> None:
        """The retry path deletes the attempt's row even though it was committed inside the script's query."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        fast_runner(scratch_db).deploy(migrations)
        add_migration(migrations, "20240105000000_nickname", self.TWO_STATEMENTS)
        with psycopg.connect(scratch_db) as blocker:
            blocker.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
            runner = fast_runner(scratch_db, lock_timeout_ms=300, lock_retries=1, lock_retry_backoff_s=0.05)
            with pytest.raises(PrismaError) as failure:
                runner.deploy(migrations)
            pid = blocker.info.backend_pid
            blocker.rollback()
        assert failure.value.database_error_code == "55P03" and f"blocked by pid {pid}" in str(failure.value)
        rows = [r for r in fast_runner(scratch_db).rows() if r.migration_name == "20240105000000_nickname"]
        assert len(rows) == 1 and rows[0].failed and rows[0].logs and "55P03" in rows[0].logs
        assert not column_exists(scratch_db, "User", "nickname")

    def test_text_the_server_cannot_parse_is_recorded_as_prisma_would(self, scratch_db: str, tmp_path: Path) -> None:
        """Syntax our parser knows but this server does not: the file fails alone, with its row, after the previous
        migration was marked finished; nothing of the file ran."""
        if fetch(scratch_db, "SHOW server_version_num")[0][0] >= "170000":
            pytest.skip("needs a server older than PostgreSQL 17 (SET EXPRESSION is 17's syntax)")
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init", "20240102000000_add_post"])
        add_migration(
            migrations,
            "20240106000000_generated",
            'CREATE TABLE "Gen" ("a" INTEGER, "b" INTEGER GENERATED ALWAYS AS ("a" + 1) STORED);\n'
            'ALTER TABLE "Gen" ALTER COLUMN "b" SET EXPRESSION AS ("a" + 2);\n',
        )
        events: list[str] = []
        with pytest.raises(PrismaError) as failure:
            fast_runner(scratch_db).deploy(migrations, on_event=events.append)
        assert failure.value.code == "P3018" and failure.value.database_error_code == "42601"
        rows = {r.migration_name: r for r in fast_runner(scratch_db).rows()}
        assert rows["20240102000000_add_post"].applied and rows["20240102000000_add_post"].applied_steps_count == 1
        failed = rows["20240106000000_generated"]
        assert failed.failed and failed.logs and "syntax error" in failed.logs
        assert not table_exists(scratch_db, "Gen")
        assert [e for e in events if e.startswith("Applied `20240102000000_add_post`")] != []
        assert sum(e == "Applying migration `20240106000000_generated`" for e in events) == 1

    def test_files_that_must_run_alone_still_do(self, scratch_db: str, tmp_path: Path) -> None:
        """A lone VACUUM or DETACH ... CONCURRENTLY refuses a transaction block; each is sent on its own and applies."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        add_migration(migrations, "20240107000000_vacuum", 'VACUUM "User";\n')
        add_migration(
            migrations,
            "20240108000000_partitions",
            'CREATE TABLE "Event" ("at" DATE NOT NULL) PARTITION BY RANGE ("at");\n'
            'CREATE TABLE "Event_2024" PARTITION OF "Event" FOR VALUES FROM (\'2024-01-01\') TO (\'2025-01-01\');\n',
        )
        add_migration(
            migrations, "20240109000000_detach", 'ALTER TABLE "Event" DETACH PARTITION "Event_2024" CONCURRENTLY;\n'
        )
        result = fast_runner(scratch_db).deploy(migrations)
        assert [a.name for a in result.applied] == [
            "20240101000000_init", "20240107000000_vacuum", "20240108000000_partitions", "20240109000000_detach",
        ]
        assert all(r.applied for r in fast_runner(scratch_db).rows())
        assert fetch(scratch_db, "SELECT count(*) FROM pg_inherits")[0][0] == 0

    def test_a_name_with_quotes_and_backslashes_is_recorded_verbatim(self, scratch_db: str, tmp_path: Path) -> None:
        """The bookkeeping's literals are escaped for the connection: the row names the directory exactly."""
        migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
        name = "20240110000000_o'neil\\é; DROP TABLE \"User\"; --"
        add_migration(migrations, name, 'ALTER TABLE "User" ADD COLUMN "x" TEXT;\nALTER TABLE "User" ADD COLUMN "y" TEXT;\n')
        fast_runner(scratch_db).deploy(migrations)
        rows = {r.migration_name: r for r in fast_runner(scratch_db).rows()}
        assert rows[name].applied and rows[name].checksum == list_local_migrations(migrations)[1].checksum
        assert table_exists(scratch_db, "User") and column_exists(scratch_db, "User", "y")


def test_a_directory_without_its_migration_file_is_p3015(scratch_db: str, tmp_path: Path) -> None:
    """Like Prisma: a migration directory with no migration.sql (or a directory in its place) stops the deploy
    before anything runs, naming the file."""
    migrations = copy_migrations(tmp_path, "blog", only=["20240101000000_init"])
    (migrations / "20240111000000_empty").mkdir()
    with pytest.raises(PrismaError) as missing:
        fast_runner(scratch_db).deploy(migrations)
    assert missing.value.code == "P3015" and missing.value.migration_name == "20240111000000_empty"
    assert str(migrations / "20240111000000_empty" / "migration.sql") in str(missing.value)
    (migrations / "20240111000000_empty" / "migration.sql").mkdir()
    with pytest.raises(PrismaError) as still:
        fast_runner(scratch_db).deploy(migrations)
    assert still.value.code == "P3015"
    assert not table_exists(scratch_db, "User")
