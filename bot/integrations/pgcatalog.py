"""PostgreSQL catalog and size queries for the safety review: live table sizes, column types, function volatility."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.safety.analysis import TypeKey, canonical_type

if TYPE_CHECKING:  # only for annotations: a review without a database (migrate-bot lint) never loads psycopg
    import psycopg

    Connection = psycopg.Connection
    """The connection type the safety review is given (so bot.safety needs no import of psycopg)."""


def _regclass_arg(name: str) -> str:
    """A to_regclass() argument for a key from analysis.table_name (bare or schema.name, case preserved)."""
    if "." in name:
        schema, _, rel = name.partition(".")
        return f'"{schema.replace(chr(34), chr(34) * 2)}"."{rel.replace(chr(34), chr(34) * 2)}"'
    return '"' + name.replace('"', '""') + '"'


def server_version_num(conn: psycopg.Connection) -> int:
    """``server_version_num`` of the connected server, e.g. 150020."""
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class TableSize:
    """Rows (estimate) and total bytes (heap + indexes + TOAST) of one table."""

    rows: int
    bytes: int


def table_size(conn: psycopg.Connection, table: str) -> TableSize | None:
    """reltuples (or n_live_tup when never analysed) and pg_total_relation_size; None if the table is missing."""
    row = conn.execute(
        """SELECT c.reltuples::bigint, s.n_live_tup, pg_total_relation_size(c.oid)
           FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE c.oid = to_regclass(%s)""",
        (_regclass_arg(table),),
    ).fetchone()
    if row is None:
        return None
    reltuples, live, total = row
    rows = int(reltuples) if reltuples is not None and reltuples >= 0 else int(live or 0)
    return TableSize(rows=rows, bytes=int(total or 0))


class LiveCatalog:
    """The locks.Catalog protocol answered from an open connection; read-only, cached per instance."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._cache: dict[tuple[str, ...], object] = {}
        self._fk_parents: dict[str, list[str]] = {}
        self._sizes: dict[str, TableSize | None] = {}

    def _one(self, key: tuple[str, ...], sql: str, params: tuple[object, ...]) -> object:
        if key not in self._cache:
            row = self.conn.execute(sql, params).fetchone()
            self._cache[key] = row[0] if row else None
        return self._cache[key]

    def volatility(self, function: str) -> str | None:
        """Worst pg_proc.provolatile over functions of that name ('v' > 's' > 'i'), None if none exist."""
        value = self._one(("vol", function),
                          "SELECT max(CASE provolatile WHEN 'v' THEN 3 WHEN 's' THEN 2 ELSE 1 END) "
                          "FROM pg_proc WHERE proname = %s", (function,))
        return {3: "v", 2: "s", 1: "i"}.get(value) if isinstance(value, int) else None

    def column_type(self, table: str, column: str) -> TypeKey | None:
        """The column's current type from pg_attribute/format_type."""
        value = self._one(("type", table, column),
                          "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
                          (_regclass_arg(table), column))
        return canonical_type(str(value)) if value else None

    def has_validated_not_null_check(self, table: str, column: str) -> bool:
        """True when a validated CHECK (column IS NOT NULL) exists, so SET NOT NULL skips its scan (PG 12+)."""
        value = self._one(("nncheck", table, column),
                          """SELECT count(*) FROM pg_constraint con
                             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey)
                             WHERE con.conrelid = to_regclass(%s) AND con.contype = 'c' AND con.convalidated
                               AND a.attname = %s AND cardinality(con.conkey) = 1
                               AND pg_get_constraintdef(con.oid) ILIKE '%%IS NOT NULL%%'""",
                          (_regclass_arg(table), column))
        return bool(value)

    def index_table(self, index: str) -> str | None:
        """The table an index belongs to (pg_index.indrelid)."""
        value = self._one(("idx", index),
                          """SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END
                             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE i.indexrelid = to_regclass(%s)""", (_regclass_arg(index),))
        return str(value) if value else None

    def fk_parents(self, table: str) -> list[str]:
        """Tables referenced by the table's foreign keys (DROP TABLE locks them too)."""
        if table not in self._fk_parents:
            rows = self.conn.execute(
                """SELECT DISTINCT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END
                   FROM pg_constraint con JOIN pg_class c ON c.oid = con.confrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE con.contype = 'f' AND con.conrelid = to_regclass(%s)""", (_regclass_arg(table),)).fetchall()
            self._fk_parents[table] = sorted(str(r[0]) for r in rows)
        return list(self._fk_parents[table])

    def constraint_parent(self, table: str, constraint: str) -> str | None:
        """The table a foreign key of ``table`` references (dropping or validating it locks that table too)."""
        value = self._one(("fkparent", table, constraint),
                          """SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END
                             FROM pg_constraint con JOIN pg_class c ON c.oid = con.confrelid
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE con.contype = 'f' AND con.conrelid = to_regclass(%s) AND con.conname = %s""",
                          (_regclass_arg(table), constraint))
        return str(value) if value else None

    def column_indexes(self, table: str, column: str) -> list[tuple[str, bool]] | None:
        """(index name, unique) of every index that uses the column; None when the table is missing."""
        key = ("colidx", table, column)
        if key not in self._cache:
            if not self.table_exists(table):
                self._cache[key] = None
            else:
                rows = self.conn.execute(
                    """SELECT ic.relname, i.indisunique FROM pg_index i
                       JOIN pg_class ic ON ic.oid = i.indexrelid
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                       WHERE i.indrelid = to_regclass(%s) AND a.attname = %s ORDER BY 1""",
                    (_regclass_arg(table), column)).fetchall()
                self._cache[key] = [(str(r[0]), bool(r[1])) for r in rows]
        found = self._cache[key]
        return list(found) if isinstance(found, list) else None

    def column_collation(self, table: str, column: str) -> str | None:
        """The column's collation name (``default`` for the database's), None when it has none or is missing."""
        value = self._one(("coll", table, column),
                          """SELECT co.collname FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
                             WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped""",
                          (_regclass_arg(table), column))
        return str(value) if value else None

    def table_exists(self, table: str) -> bool:
        """True when the relation exists."""
        return bool(self._one(("exists", table), "SELECT to_regclass(%s) IS NOT NULL", (_regclass_arg(table),)))

    def timezone_is_utc(self) -> bool | None:
        """Whether this session's TimeZone is UTC (decides timestamp <-> timestamptz rewrites)."""
        value = self._one(("tz",), "SELECT current_setting('TimeZone')", ())
        return str(value).upper() in {"UTC", "ETC/UTC", "UCT", "ZULU", "ETC/UCT", "GMT", "ETC/GMT"}

    def table_size(self, table: str) -> TableSize | None:
        """Cached ``table_size``."""
        if table not in self._sizes:
            self._sizes[table] = table_size(self.conn, table)
        return self._sizes[table]
