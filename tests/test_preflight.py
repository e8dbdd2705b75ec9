"""Tests of the go-time lock pre-flight against real PostgreSQL sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from bot.safety.preflight import lock_preflight, target_tables


@pytest.fixture
def shop(scratch_db: str) -> str:
    """A database with a target table "User" and an unrelated table "Audit"."""
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute('CREATE TABLE "User" (id serial PRIMARY KEY, email text)')
        conn.execute('CREATE TABLE "Audit" (id serial PRIMARY KEY, note text)')
        conn.execute("""INSERT INTO "User" (email) VALUES ('a@example.com')""")
    return scratch_db


@pytest.fixture
def idle_session(shop: str) -> Iterator[psycopg.Connection]:
    """A second connection, left for the test to open a transaction in; closed afterwards."""
    conn = psycopg.connect(shop)
    try:
        yield conn
    finally:
        conn.close()


class TestLockPreflight:
    def test_idle_in_transaction_session_on_a_target_table_is_a_blocker(
        self, shop: str, idle_session: psycopg.Connection
    ) -> None:
        """A session idle in transaction after reading the target table is reported with its pid and lock."""
        idle_session.execute('SELECT * FROM "User"')  # psycopg opens a transaction: BEGIN + ACCESS SHARE
        pid = idle_session.info.backend_pid
        time.sleep(0.6)
        report = lock_preflight(shop, ["User"], idle_in_tx_s=0.5)
        assert not report.ok
        (blocker,) = report.blockers
        assert blocker.pid == pid
        assert blocker.state == "idle in transaction"
        assert blocker.age_s >= 0.5
        assert blocker.tables == ["User"]
        assert blocker.locks == ['AccessShareLock on "User"']
        assert blocker.query == 'SELECT * FROM "User"'
        assert f"pid {pid} idle in transaction" in report.summary()

    def test_no_session_is_ok(self, shop: str) -> None:
        """With nobody else in the database the pre-flight is clear."""
        report = lock_preflight(shop, ["User"], idle_in_tx_s=0)
        assert report.ok and report.blockers == []
        assert report.summary() == 'clear: no long-running or idle-in-transaction sessions on "User"'

    def test_session_on_an_unrelated_table_is_not_reported(
        self, shop: str, idle_session: psycopg.Connection
    ) -> None:
        """An idle transaction that only touched another table does not hold up the migration."""
        idle_session.execute('SELECT * FROM "Audit"')
        time.sleep(0.3)
        assert lock_preflight(shop, ["User"], idle_in_tx_s=0.1).ok

    def test_short_idle_transaction_is_below_the_threshold(
        self, shop: str, idle_session: psycopg.Connection
    ) -> None:
        """A transaction idle for less than idle_in_tx_s is not a blocker yet."""
        idle_session.execute('SELECT * FROM "User"')
        assert lock_preflight(shop, ["User"], idle_in_tx_s=30).ok

    def test_long_running_query_on_a_target_table_is_a_blocker(self, shop: str) -> None:
        """An active query on the target table running longer than long_running_s is reported."""
        with psycopg.connect(shop, autocommit=True) as conn:
            pid = conn.info.backend_pid
            worker = threading.Thread(
                target=lambda: conn.execute('SELECT pg_sleep(2) FROM "User"'), daemon=True
            )
            worker.start()
            time.sleep(0.7)
            report = lock_preflight(shop, ["User"], long_running_s=0.5)
            short = lock_preflight(shop, ["User"], long_running_s=60)
            worker.join()
        assert [b.pid for b in report.blockers] == [pid]
        assert report.blockers[0].state == "active"
        assert short.ok

    def test_no_target_tables_is_clear_without_a_query(self) -> None:
        """Migrations that lock no existing table need no check (and no database)."""
        report = lock_preflight("postgresql://nobody@127.0.0.1:1/none", [])
        assert report.ok
        assert report.summary() == "clear: the pending migrations touch no existing tables"


class TestTargetTables:
    def test_existing_tables_locked_by_the_migrations(self) -> None:
        """Tables the migrations lock are listed in order, referenced FK parents included, new tables left out."""
        migrations = [
            (
                "1_post",
                'CREATE TABLE "Post" (id int, "authorId" int);\n'
                'ALTER TABLE "Post" ADD CONSTRAINT fk FOREIGN KEY ("authorId") REFERENCES "User"(id);',
            ),
            (
                "2_idx",
                'CREATE INDEX "Post_idx" ON "Post"(id);\nALTER TABLE billing."Invoice" ADD COLUMN x text;',
            ),
        ]
        assert target_tables(migrations) == ["User", "billing.Invoice"]

    def test_dropping_an_fk_by_name_locks_the_parent_found_in_the_live_catalog(self, shop: str) -> None:
        """Prisma's "drop FK, re-add with a new onDelete": the FK was made long ago, so only the live catalog
        names its parent ("User"); with the database URL it is a target, without it only "Post" is."""
        with psycopg.connect(shop, autocommit=True) as conn:
            conn.execute('CREATE TABLE "Post" (id serial PRIMARY KEY, "authorId" int)')
            conn.execute('ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") '
                         'REFERENCES "User"(id) ON DELETE SET NULL ON UPDATE CASCADE')
        pending = [("20240301000000_cascade",
                    '-- DropForeignKey\nALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";\n\n'
                    '-- AddForeignKey\nALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY '
                    '("authorId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n')]
        drop_only = [("20240301000000_drop", 'ALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";\n')]
        assert sorted(target_tables(pending, shop)) == ["Post", "User"]
        assert sorted(target_tables(drop_only, shop)) == ["Post", "User"]
        assert target_tables(drop_only) == ["Post"]

    def test_idle_session_on_the_parent_of_a_dropped_fk_holds_the_migration(
        self, shop: str, idle_session: psycopg.Connection
    ) -> None:
        """A session idle in transaction on "User" blocks dropping "Post"'s FK to it: the pre-flight says so."""
        with psycopg.connect(shop, autocommit=True) as conn:
            conn.execute('CREATE TABLE "Post" (id serial PRIMARY KEY, "authorId" int '
                         'CONSTRAINT "Post_authorId_fkey" REFERENCES "User"(id))')
        idle_session.execute('SELECT * FROM "User"')
        time.sleep(0.3)
        tables = target_tables([("m", 'ALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";\n')], shop)
        report = lock_preflight(shop, tables, idle_in_tx_s=0.1)
        assert not report.ok
        assert report.blockers[0].tables == ["User"]
        assert '"User"' in report.summary()
