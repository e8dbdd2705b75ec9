"""The PostgreSQL client and the real pg_dump / pg_restore: reads, scratch databases, errors without secrets."""

from __future__ import annotations

import os
import stat
import uuid

import psycopg
import pytest

from bot.errors import BackupError, IntegrationError
from bot.integrations.postgres import Postgres, pg_dump, pg_restore, pg_restore_list, redacted_url
from tests.prisma_db import seed


class TestRedactedUrl:
    def test_password_hidden(self):
        """The password in the userinfo and in a password= parameter become ***."""
        assert redacted_url("postgresql://app:s3cret@db:5432/app?schema=public") == (
            "postgresql://app:***@db:5432/app?schema=public"
        )
        assert "hunter2" not in redacted_url("postgresql://app@db/app?password=hunter2&sslmode=require")
        assert redacted_url("postgresql://app@db/app") == "postgresql://app@db/app"


class TestPostgresClient:
    def test_reads_a_prisma_database(self, scratch_db):
        """Migration count, sorted schema-qualified tables, name and version come from the server."""
        seed(scratch_db, migrations=4)
        db = Postgres(scratch_db)
        db.ping()
        assert db.prisma_migrations_count() == 4
        assert db.table_names() == ["public.Post", "public.User", "public._prisma_migrations"]
        assert db.database_name() == scratch_db.rsplit("/", 1)[1]
        assert db.server_version_num() >= 150000

    def test_missing_migrations_table_is_none(self, scratch_db):
        """A database Prisma never touched has no migrations count."""
        assert Postgres(scratch_db).prisma_migrations_count() is None
        assert Postgres(scratch_db).table_names() == []

    def test_prisma_url_parameters_are_accepted(self, scratch_db):
        """A Prisma URL with ?schema= and connection_limit= connects, and the schema picks the table."""
        seed(scratch_db, migrations=2)
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA other")
        assert Postgres(scratch_db + "?schema=public&connection_limit=5").prisma_migrations_count() == 2
        assert Postgres(scratch_db + "?schema=other").prisma_migrations_count() is None

    def test_create_and_drop_database(self, scratch_db, pg_admin_url):
        """A database created next to this one is reachable by url_for_database and dropped again."""
        db = Postgres(scratch_db)
        name = f"t_{uuid.uuid4().hex[:10]}_x"
        db.create_database(name)
        try:
            Postgres(db.url_for_database(name)).ping()
        finally:
            db.drop_database(name)
        with psycopg.connect(pg_admin_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 0

    def test_refuses_to_drop_itself(self, scratch_db):
        """drop_database will not drop the database the client points at."""
        db = Postgres(scratch_db)
        with pytest.raises(IntegrationError, match="Refusing to drop"):
            db.drop_database(db.database_name())

    def test_unreachable_database_hides_password(self):
        """A refused connection is an IntegrationError naming the redacted URL, never the password."""
        with pytest.raises(IntegrationError) as info:
            Postgres("postgresql://postgres:s3cret@127.0.0.1:1/x", connect_timeout_s=2).ping()
        text = str(info.value)
        assert text.startswith("Cannot connect to postgresql://postgres:***@127.0.0.1:1/x: ")
        assert "s3cret" not in text and "\n" not in text


class TestDumpAndRestore:
    def test_round_trip(self, scratch_db_factory, tmp_path):
        """A custom-format dump lists its TOC and restores every row into another database."""
        source, target = scratch_db_factory(), scratch_db_factory()
        seed(source)
        out = pg_dump(source, tmp_path / "x.dump", timeout_s=60)
        toc = pg_restore_list(out, timeout_s=30)
        assert any(" TABLE public User " in line for line in toc)
        assert any(" TABLE DATA public _prisma_migrations " in line for line in toc)
        assert not any(line.startswith(";") for line in toc)
        pg_restore(out, target, jobs=2, timeout_s=60)
        with psycopg.connect(target) as conn:
            assert conn.execute('SELECT count(*) FROM "Post"').fetchone()[0] == 200
            assert conn.execute("SELECT count(*) FROM _prisma_migrations").fetchone()[0] == 3

    def test_password_travels_in_the_environment(self, scratch_db, tmp_path, monkeypatch):
        """pg_dump gets the password through PGPASSWORD, never on its command line."""
        bindir = tmp_path / "bin"
        bindir.mkdir()
        log = tmp_path / "calls.log"
        wrapper = bindir / "pg_dump"
        wrapper.write_text(
            f'#!/bin/sh\necho "ARGS: $*" >> {log}\necho "PGPASSWORD=$PGPASSWORD" >> {log}\nexec /usr/bin/pg_dump "$@"\n'
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        url = scratch_db.replace("postgres@", "postgres:pw-in-env@")
        pg_dump(url, tmp_path / "y.dump", timeout_s=60)
        args_line, env_line = log.read_text().splitlines()
        assert "pw-in-env" not in args_line and "--dbname=postgresql://postgres@" in args_line
        assert env_line == "PGPASSWORD=pw-in-env"

    def test_tool_error_is_last_stderr_line(self, tmp_path):
        """A failing pg_dump is a BackupError with its last stderr line and no password."""
        with pytest.raises(BackupError) as info:
            pg_dump("postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db_xyz", tmp_path / "z.dump", timeout_s=30)
        text = str(info.value)
        assert 'database "no_such_db_xyz" does not exist' in text
        assert "s3cret" not in text and "\n" not in text
        assert not (tmp_path / "z.dump").exists() or (tmp_path / "z.dump").stat().st_size == 0

    def test_not_a_dump(self, tmp_path):
        """Listing a file that is not a dump is a BackupError."""
        junk = tmp_path / "junk.dump"
        junk.write_text("hello")
        with pytest.raises(BackupError, match="pg_restore"):
            pg_restore_list(junk, timeout_s=10)
