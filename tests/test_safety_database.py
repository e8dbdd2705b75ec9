"""The safety review weighed against a live database: sizes raise the risk, catalog facts settle rewrites and scans."""

from __future__ import annotations

import psycopg

from bot.integrations.pgcatalog import LiveCatalog, server_version_num, table_size
from bot.safety import review_migrations

SCHEMA = """
CREATE TABLE "Big" ("id" int PRIMARY KEY, "a" int, "note" text);
CREATE TABLE "Empty" ("id" int PRIMARY KEY, "a" int, "note" text);
INSERT INTO "Big" SELECT g, g, 'row ' || g FROM generate_series(1, 200000) g;
ANALYZE "Big";
ANALYZE "Empty";
"""


def _finding(result, rule):
    return next(f for f in result.findings if f.rule == rule)


class TestSizeWeighting:
    def test_same_statement_scores_higher_on_large_table(self, scratch_db):
        """ALTER COLUMN TYPE is low on an empty table and higher on a 200k-row one, with rows and bytes in the why."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA)
            big = review_migrations([("m", 'ALTER TABLE "Big" ALTER COLUMN "a" SET DATA TYPE BIGINT;')], conn=conn)
            empty = review_migrations([("m", 'ALTER TABLE "Empty" ALTER COLUMN "a" SET DATA TYPE BIGINT;')],
                                      conn=conn)
        rank = {"info": 0, "low": 1, "medium": 2, "high": 3}
        big_f, empty_f = _finding(big, "type-change"), _finding(empty, "type-change")
        assert rank[big_f.level] > rank[empty_f.level]
        assert empty_f.level == "low" and big_f.level == "medium"
        assert big_f.rows == 200000 and big_f.bytes and big_f.bytes > 1_000_000
        assert 'ACCESS EXCLUSIVE + rewrite of "Big" (200 k rows,' in big_f.why
        assert "blocks reads and writes for the whole rewrite" in big_f.why

    def test_index_on_large_table_is_higher(self, scratch_db):
        """A non-concurrent index is low on an empty table and medium on the large one."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA)
            levels = {t: _finding(review_migrations([("m", f'CREATE INDEX "i" ON "{t}"("a");')], conn=conn),
                                  "non-concurrent-index").level for t in ("Big", "Empty")}
        assert levels == {"Big": "medium", "Empty": "low"}

    def test_n_live_tup_fallback_when_never_analysed(self, scratch_db):
        """reltuples is -1 before ANALYZE; the row count then comes from pg_stat_user_tables."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute('CREATE TABLE "Fresh" ("id" int)')
            conn.execute('INSERT INTO "Fresh" SELECT generate_series(1, 1234)')
            conn.execute("SELECT pg_stat_force_next_flush()")
            with psycopg.connect(scratch_db, autocommit=True) as reader:
                size = table_size(reader, "Fresh")
        assert size is not None and size.rows == 1234 and size.bytes > 0

    def test_required_column_on_empty_table_is_medium(self, scratch_db):
        """ADD COLUMN NOT NULL without default is medium on an empty table (the migration passes), high otherwise."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA)
            levels = {t: _finding(review_migrations([("m", f'ALTER TABLE "{t}" ADD COLUMN "x" TEXT NOT NULL;')],
                                                    conn=conn), "required-column").level for t in ("Big", "Empty")}
        assert levels == {"Big": "high", "Empty": "medium"}


class TestCatalogFacts:
    def test_validated_check_makes_set_not_null_safe(self, scratch_db):
        """With a validated CHECK (a IS NOT NULL) in the database, SET NOT NULL is an info 'safe' finding."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA + 'ALTER TABLE "Big" ADD CONSTRAINT "a_nn" CHECK ("a" IS NOT NULL);')
            result = review_migrations([("m", 'ALTER TABLE "Big" ALTER COLUMN "a" SET NOT NULL;')], conn=conn)
            without = review_migrations([("m", 'ALTER TABLE "Big" ALTER COLUMN "id" SET NOT NULL;'
                                               'ALTER TABLE "Big" ALTER COLUMN "note" SET NOT NULL;')], conn=conn)
        finding = _finding(result, "set-not-null")
        assert finding.level == "info" and finding.category == "safe" and not finding.scans
        assert "adding-not-nullable-field" in finding.squawk_rules
        assert any(f.rule == "set-not-null" and f.scans and f.level == "medium" for f in without.findings)

    def test_drop_index_resolves_table(self, scratch_db):
        """DROP INDEX is attributed to the index's table via pg_index."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA + 'CREATE INDEX "Big_a_idx" ON "Big"("a");')
            result = review_migrations([("m", 'DROP INDEX "Big_a_idx";')], conn=conn)
        finding = _finding(result, "drop-index")
        assert finding.table == "Big" and finding.lock == "ACCESS EXCLUSIVE"
        assert result.migrations[0].table_locks[0].table == "Big"

    def test_function_volatility_from_pg_proc(self, scratch_db):
        """A user function's volatility decides whether its DEFAULT rewrites the table."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(SCHEMA + "CREATE FUNCTION stable_fn() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';"
                         "CREATE FUNCTION volatile_fn() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';")
            catalog = LiveCatalog(conn)
            assert (catalog.volatility("stable_fn"), catalog.volatility("volatile_fn")) == ("s", "v")
            stable = review_migrations([("m", 'ALTER TABLE "Big" ADD COLUMN "s" int DEFAULT stable_fn();')], conn=conn)
            volatile = review_migrations([("m", 'ALTER TABLE "Big" ADD COLUMN "v" int DEFAULT volatile_fn();')],
                                         conn=conn)
        assert not any(f.rewrites for f in stable.findings)
        assert _finding(volatile, "volatile-default").rewrites

    def test_pg_version_read_from_server(self, scratch_db):
        """Without pg_version, the review reads server_version_num from the connection."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            result = review_migrations([("m", "SELECT 1;")], conn=conn)
            assert result.pg_version == server_version_num(conn) >= 120000
        assert result.with_database

    def test_table_created_by_earlier_pending_migration_is_empty(self, scratch_db):
        """A table not in the database but created by an earlier reviewed migration counts as empty."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            result = review_migrations([("a", 'CREATE TABLE "New" ("id" int, "a" int);'),
                                        ("b", 'CREATE INDEX "New_a" ON "New"("a");')], conn=conn)
        finding = _finding(result, "non-concurrent-index")
        assert finding.level == "low" and finding.rows == 0
