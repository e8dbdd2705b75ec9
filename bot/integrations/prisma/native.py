"""The native runner: Prisma Migrate's deploy, status and resolve done over psycopg, row for row as Prisma writes them."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Escaping, ExecStatus

from bot.errors import MigrationError
from bot.integrations.prisma.migrations import (
    BASELINE_DOCS,
    MIGRATIONS_TABLE,
    RESOLVE_DOCS,
    AppliedMigration,
    DeployResult,
    LocalMigration,
    MigrationRow,
    MigrationStatus,
    PrismaError,
    compute_status,
    down_checksum,
    format_prisma_timestamp,
    list_local_migrations,
    require_postgresql_provider,
    split_database_url,
)
from bot.redact import redact

ADVISORY_LOCK_KEY = 72707369


# Exactly the text of prisma-engines (flavour/postgres.rs): unqualified, in the connection's schema.
CREATE_MIGRATIONS_TABLE_SQL = """CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);"""


_SELECT_ROWS_SQL = (
    "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count "
    "FROM _prisma_migrations ORDER BY started_at ASC"
)

@dataclass(frozen=True)
class _ScriptKind:
    """What the runner needs to know about a migration file before running it."""

    parsed: bool
    concurrent_only: bool
    has_transaction_control: bool
    sets_lock_timeout: bool
    sets_statement_timeout: bool
    joins_bookkeeping: bool = False  # see "One query per migration" in NativeRunner

    @property
    def retryable(self) -> bool:
        """A lock-timeout failure rolled the whole file back, so running it again is safe."""
        return self.parsed and not self.concurrent_only and not self.has_transaction_control


# Statements that behave the same alone and in a multi-statement query. Anything else alone in a file (VACUUM,
# CONCURRENTLY, ALTER SYSTEM, CREATE DATABASE, CALL or DO that may COMMIT, ...) is sent alone, because inside a
# multi-statement query it would run in an implicit transaction block, which some of them refuse.
_JOINABLE_ALONE = frozenset({
    "AlterDomainStmt", "AlterEnumStmt", "AlterObjectSchemaStmt", "AlterOwnerStmt", "AlterSeqStmt", "AlterTableStmt",
    "CommentStmt", "CompositeTypeStmt", "CreateDomainStmt", "CreateEnumStmt", "CreateExtensionStmt",
    "CreateFunctionStmt", "CreateSchemaStmt", "CreateSeqStmt", "CreateStmt", "CreateTrigStmt", "DefineStmt",
    "DeleteStmt", "DropStmt", "GrantStmt", "IndexStmt", "InsertStmt", "RenameStmt", "UpdateStmt", "ViewStmt",
})


_SET_RE = {
    name: re.compile(rf"\bSET\s+(?:SESSION\s+|LOCAL\s+)?{name}\b", re.IGNORECASE)
    for name in ("lock_timeout", "statement_timeout")
}


def _classify_script(script: str) -> _ScriptKind:
    """Parse the file with PostgreSQL's own parser (pglast); unparseable files are run as-is, never retried.

    Reads libpg_query's JSON parse tree: the same parser as ``pglast.parse_sql`` but ~30x cheaper than
    building pglast's Python AST, which matters for a deploy of hundreds of small files.
    """
    import json

    from pglast.parser import parse_sql_json

    try:
        text = parse_sql_json(script)
        tree = json.loads(text)
    except Exception:  # pglast raises its own ParseError; anything else means we cannot judge the file
        return _ScriptKind(
            parsed=False,
            concurrent_only=False,
            has_transaction_control=False,
            sets_lock_timeout=bool(_SET_RE["lock_timeout"].search(script)),
            sets_statement_timeout=bool(_SET_RE["statement_timeout"].search(script)),
        )
    # Each statement is {"<NodeType>": {fields}}; absent fields are false/empty in libpg_query's JSON.
    statements: list[tuple[str, dict[str, object]]] = []
    for raw in tree.get("stmts") or ():
        node = raw.get("stmt") or {}
        for node_type, fields in node.items():
            statements.append((node_type, fields if isinstance(fields, dict) else {}))

    def concurrent(node_type: str, fields: dict[str, object]) -> bool:
        if node_type in ("IndexStmt", "DropStmt"):
            return bool(fields.get("concurrent"))
        if node_type == "ReindexStmt":
            params = fields.get("params")
            return isinstance(params, list) and any(
                isinstance(p, dict) and (p.get("DefElem") or {}).get("defname") == "concurrently" for p in params
            )
        return False

    sets = {str(f.get("name")) for t, f in statements if t == "VariableSetStmt" and f.get("name")}
    only = statements[0] if len(statements) == 1 else None
    transaction_control = any(t == "TransactionStmt" for t, _ in statements)
    copies = any(t == "CopyStmt" for t, _ in statements)  # COPY ... STDIN/STDOUT needs psycopg's copy protocol
    # A file of two or more statements is one implicit transaction already; a lone statement joins only if it
    # is known to behave the same in one, and no CONCURRENTLY anywhere in it (DETACH PARTITION ... too).
    joins = not transaction_control and not copies and (
        len(statements) >= 2
        or (only is not None and only[0] in _JOINABLE_ALONE and '"concurrent":true' not in text)
    )
    return _ScriptKind(
        parsed=True,
        concurrent_only=only is not None and concurrent(*only),
        has_transaction_control=transaction_control,
        sets_lock_timeout="lock_timeout" in sets,
        sets_statement_timeout="statement_timeout" in sets,
        joins_bookkeeping=joins,
    )


def _host_port(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


@dataclass
class _Blocker:
    pid: int
    query: str
    age_s: float
    relation: str | None


class _BlockerWatch:
    """Polls pg_blocking_pids() from a second connection while a migration runs, keeping the last blocker seen."""

    _QUERY = """
        SELECT b.pid, left(coalesce(b.query, ''), 80),
               coalesce(extract(epoch FROM now() - coalesce(b.xact_start, b.query_start)), 0)::float8,
               (SELECT l.relation::regclass::text FROM pg_locks l
                 WHERE l.pid = %(pid)s AND NOT l.granted AND l.relation IS NOT NULL LIMIT 1)
          FROM pg_stat_activity b
         WHERE b.pid = ANY(pg_blocking_pids(%(pid)s))
         ORDER BY b.xact_start NULLS LAST
         LIMIT 1
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], interval_s: float) -> None:
        self._connect = connect
        self._interval_s = interval_s
        self._conn: psycopg.Connection | None = None
        self.last: _Blocker | None = None
        # One thread per deploy that ticks every interval and polls when the SAME migration was running at
        # two ticks in a row (so it has run for at least one interval). Arming and disarming only set a
        # field: waking a thread twice per migration cost ~0.2 ms of CPU and GIL hand-offs per file, about
        # as much as a small migration's own client work (BENCHMARKS.md, P3).
        self._cond = threading.Condition()
        self._current: tuple[int, int] | None = None  # (generation, pid) of the migration running now
        self._generation = 0
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, pid: int) -> Iterator[None]:
        """Poll for blockers of backend ``pid`` for the duration of the block.

        When the block ends no poll is in flight any more, so ``last`` no longer changes.
        """
        self.last = None
        with self._cond:
            self._generation += 1
            self._current = (self._generation, pid)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="prisma-blocker-watch", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                self._current = None
                self._cond.wait_for(lambda: not self._busy, timeout=5)  # returns at once unless a poll runs

    def _loop(self) -> None:
        seen: tuple[int, int] | None = None  # what was running at the previous tick
        given_up: int | None = None  # a generation whose poll failed: no more polls for it
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, timeout=self._interval_s):
                    return
                current = self._current
                if current is None or current != seen or current[0] == given_up:
                    seen = current
                    continue
                self._busy = True
            generation, pid = current
            failed = False
            try:
                row = self._poll_once(pid)
            except (psycopg.Error, MigrationError):
                failed, row = True, None  # diagnostics only: never let the watcher break a deploy
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                if failed:  # stop polling for this migration, as a failed poll always did
                    given_up = generation
                elif row is not None and self._current == current:
                    self.last = _Blocker(pid=row[0], query=" ".join(row[1].split()), age_s=row[2], relation=row[3])

    def _poll_once(self, pid: int) -> tuple[int, str, float, str | None] | None:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn.execute(self._QUERY, {"pid": pid}).fetchone()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class _Unfinished:
    """A migration whose script committed; its row is marked finished by the next bookkeeping query."""

    row_id: str
    migration: LocalMigration
    duration_s: float


class NativeRunner:
    """Applies Prisma migrations from Python, writing `_prisma_migrations` exactly as Prisma's engine does."""

    def __init__(
        self,
        database_url: str,
        *,
        connect_timeout_s: float = 10,
        advisory_lock_timeout_s: float = 10,
        lock_timeout_ms: int | None = 5000,
        statement_timeout_ms: int | None = None,
        lock_retries: int = 3,
        lock_retry_backoff_s: float = 1.0,
        disable_advisory_lock: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._conninfo, self._schema = split_database_url(database_url)
        self.connect_timeout_s = connect_timeout_s
        self.advisory_lock_timeout_s = advisory_lock_timeout_s
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.lock_retries = lock_retries
        self.lock_retry_backoff_s = lock_retry_backoff_s
        self.disable_advisory_lock = disable_advisory_lock  # PRISMA_SCHEMA_DISABLE_ADVISORY_LOCK, read by config
        self._sleep = sleep

    # -- public API -------------------------------------------------------------------------------

    def rows(self) -> list[MigrationRow]:
        """All rows of `_prisma_migrations` ordered by started_at ([] when the table does not exist)."""
        with self._session() as conn:
            return self._rows(conn) if self._table_exists(conn) else []

    def status(self, migrations_dir: Path | str) -> MigrationStatus:
        """Compare the directory with the table, without taking the advisory lock (as Prisma's status)."""
        local = list_local_migrations(migrations_dir)
        with self._session() as conn:
            exists = self._table_exists(conn)
            rows = self._rows(conn) if exists else []
        return compute_status(local, rows, exists)

    def deploy(
        self, migrations_dir: Path | str, *, on_event: Callable[[str], None] | None = None
    ) -> DeployResult:
        """Apply every pending migration in order, like `prisma migrate deploy`; raise PrismaError on failure."""
        emit = on_event or (lambda _line: None)
        require_postgresql_provider(migrations_dir)
        local = list_local_migrations(migrations_dir)
        with self._session() as conn:
            self._acquire_advisory_lock(conn)
            self._ensure_table(conn, baseline=False)
            rows = self._rows(conn)
            failed = [r for r in rows if r.failed]
            if failed:
                raise self._p3009(failed)
            live = {r.migration_name for r in rows if r.rolled_back_at is None}
            pending = [m for m in local if m.name not in live]
            watch = _BlockerWatch(self._connect, self._watch_interval_s())
            applied: list[AppliedMigration] = []
            unfinished: _Unfinished | None = None
            # Each file is parsed one step ahead, on a thread of its own, while the server runs the file before
            # it: the deploy is strictly sequential, so client work done in line adds to the wall time.
            ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prisma-classify")
            try:
                kinds = [ahead.submit(_classify_script, pending[0].sql)] if pending else []
                for index, migration in enumerate(pending):
                    if index + 1 < len(pending):
                        kinds.append(ahead.submit(_classify_script, pending[index + 1].sql))
                    kind = kinds[index].result()
                    unfinished = self._apply(conn, migration, kind, emit, watch, unfinished, applied)
                if unfinished is not None:
                    self._bookkeeping(conn, finish=unfinished)
                    self._finished(unfinished, emit, applied)
            finally:
                ahead.shutdown(wait=True, cancel_futures=True)
                watch.close()
            return DeployResult(applied=applied)

    def resolve_rolled_back(self, migrations_dir: Path | str, name: str) -> None:
        """`migrate resolve --rolled-back NAME`: mark NAME's failed rows rolled back (P3011 / P3012 otherwise)."""
        with self._session() as conn:
            self._acquire_advisory_lock(conn)
            if not self._table_exists(conn):
                raise PrismaError(
                    "P3011",
                    f"Migration `{name}` cannot be rolled back because it was never applied to the database "
                    "(there is no _prisma_migrations table).",
                    migration_name=name,
                )
            rows = [r for r in self._rows(conn) if r.migration_name == name]
            if not rows:
                raise PrismaError(
                    "P3011",
                    f"Migration `{name}` cannot be rolled back because it was never applied to the database. "
                    'Hint: did you pass in the whole migration name? (example: "20201207184859_initial_migration")',
                    migration_name=name,
                )
            targets = [r for r in rows if r.failed]
            if not targets:
                raise PrismaError(
                    "P3012",
                    f"Migration `{name}` cannot be rolled back because it is not in a failed state.",
                    migration_name=name,
                )
            for row in targets:
                conn.execute(
                    "UPDATE _prisma_migrations SET rolled_back_at = %s WHERE id = %s", (_now(), row.id)
                )

    def resolve_applied(self, migrations_dir: Path | str, name: str) -> None:
        """`migrate resolve --applied NAME`: roll back NAME's failed rows and record a new applied row."""
        require_postgresql_provider(migrations_dir)
        migration = next((m for m in list_local_migrations(migrations_dir) if m.name == name), None)
        with self._session() as conn:
            self._acquire_advisory_lock(conn)
            if migration is None:
                raise PrismaError(
                    "P3017",
                    f"The migration {name} could not be found. Please make sure that the migration exists, and "
                    'that you included the whole name of the directory. (example: "20201207184859_initial_migration")',
                    migration_name=name,
                )
            self._ensure_table(conn, baseline=True)
            rows = [r for r in self._rows(conn) if r.migration_name == name]
            if any(r.finished_at is not None for r in rows):
                raise PrismaError(
                    "P3008",
                    f"The migration `{name}` is already recorded as applied in the database.",
                    migration_name=name,
                )
            now = _now()
            for row in rows:
                if row.failed:
                    conn.execute("UPDATE _prisma_migrations SET rolled_back_at = %s WHERE id = %s", (now, row.id))
            conn.execute(
                "INSERT INTO _prisma_migrations (id, checksum, logs, started_at, finished_at, migration_name) "
                "VALUES (%s, %s, '', %s, %s, %s)",
                (str(uuid.uuid4()), migration.checksum, now, now, name),
            )

    def revert_with_down(self, migrations_dir: Path | str, name: str, *,
                         expected_down_checksum: str | None = None) -> None:
        """Run NAME's down.sql (one transaction), then mark its finished row rolled back so deploy re-applies it.

        This is the one case where rolling back a *finished* row is right: down.sql has just undone its
        schema. Both happen under the advisory lock; if down.sql fails, nothing is marked. With
        ``expected_down_checksum`` (sha256 of the approved down.sql), a different file is refused unrun.
        """
        migration = next((m for m in list_local_migrations(migrations_dir) if m.name == name), None)
        if migration is None or migration.down_sql is None:
            raise PrismaError("P3017", f"Migration {name} has no down.sql next to its migration.sql.",
                              migration_name=name)
        if expected_down_checksum is not None and down_checksum(migration.down_sql) != expected_down_checksum:
            raise PrismaError("P3017", f"The down.sql of {name} is not the one that was approved; nothing was run.",
                              migration_name=name)
        with self._session() as conn:
            self._acquire_advisory_lock(conn)
            rows = [r for r in self._rows(conn) if r.migration_name == name and r.rolled_back_at is None]
            finished = [r for r in rows if r.finished_at is not None]
            if not finished:
                raise PrismaError("P3011", f"Migration `{name}` is not applied, so there is nothing to revert.",
                                  migration_name=name)
            # One simple query is one implicit transaction, exactly as for the forward migration.
            _run_script(conn, migration.down_sql)
            now = _now()
            for row in finished:
                conn.execute("UPDATE _prisma_migrations SET rolled_back_at = %s WHERE id = %s", (now, row.id))

    # -- connection and bookkeeping ------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s))
            )
        except psycopg.OperationalError as exc:
            raise _connection_error(exc, self._conninfo) from None
        try:
            if self._schema:
                conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(self._schema)))
        except psycopg.Error as exc:
            conn.close()
            raise _database_error(exc) from None
        return conn

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """One dedicated connection; closing it releases the session-scoped advisory lock."""
        conn = self._connect()
        try:
            yield conn
        except psycopg.Error as exc:
            raise _database_error(exc) from None
        finally:
            conn.close()

    def _acquire_advisory_lock(self, conn: psycopg.Connection) -> None:
        if self.disable_advisory_lock:
            return
        timeout_ms = int(self.advisory_lock_timeout_s * 1000)
        conn.execute(f"SET lock_timeout = '{timeout_ms}ms'")
        try:
            conn.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
        except psycopg.errors.LockNotAvailable:
            context = (
                f"Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})). "
                f"Timeout: {timeout_ms}ms. See https://pris.ly/d/migrate-advisory-locking for details."
            )
            host, _, port = _host_port(self._conninfo).rpartition(":")
            raise PrismaError(
                "P1002",
                f"The database server was reached but timed out. {context}",
                prisma_message=(
                    "The database server was reached but timed out.\n\nPlease try again.\n\n"
                    f"Please make sure your database server is running at `{host}`:`{port}`.\n\n"
                    f"Context: {context}"
                ),
            ) from None
        finally:
            conn.execute("RESET lock_timeout")

    def _table_exists(self, conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = %s AND c.relkind IN ('r', 'p'))",
            (MIGRATIONS_TABLE,),
        ).fetchone()
        return bool(row and row[0])

    def _ensure_table(self, conn: psycopg.Connection, *, baseline: bool) -> None:
        """Create the table if missing; for deploy (not baseline) a non-empty schema is P3005."""
        if self._table_exists(conn):
            return
        schema = conn.execute("SELECT current_schema()").fetchone()
        if (schema is None or schema[0] is None) and self._schema:
            conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(self._schema)))
        if not baseline:
            other = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            ).fetchone()
            if other and other[0]:
                raise PrismaError(
                    "P3005",
                    "The database schema is not empty. Read more about how to baseline an existing "
                    f"production database: {BASELINE_DOCS}",
                )
        conn.execute(CREATE_MIGRATIONS_TABLE_SQL)

    def _rows(self, conn: psycopg.Connection) -> list[MigrationRow]:
        return [MigrationRow(*row) for row in conn.execute(_SELECT_ROWS_SQL).fetchall()]

    def _p3009(self, failed: list[MigrationRow]) -> PrismaError:
        details = "\n".join(
            f"The `{r.migration_name}` migration started at {format_prisma_timestamp(r.started_at)} failed"
            for r in failed
        )
        head = (
            "migrate found failed migrations in the target database, new migrations will not be applied. "
            f"Read more about how to resolve migration issues in a production database: {RESOLVE_DOCS}"
        )
        return PrismaError(
            "P3009",
            "migrate found failed migrations in the target database, new migrations will not be applied. "
            + " ".join(details.splitlines()),
            migration_name=failed[0].migration_name,
            prisma_message=f"{head}\n{details}",
        )

    def _watch_interval_s(self) -> float:
        if self.lock_timeout_ms:
            return min(0.1, max(0.02, self.lock_timeout_ms / 5000))
        return 0.1

    # -- applying one migration ------------------------------------------------------------------------

    # Lock timeouts (SQLSTATE 55P03). The file runs as one implicit transaction, so a lock timeout
    # rolls all of it back. Prisma would leave the row it inserted before running as a failed row
    # (finished_at NULL), which blocks every later deploy with P3009. We insert the row first, exactly
    # like Prisma, but when the attempt fails with 55P03 and a retry is left, we DELETE that row (ours:
    # same id, unfinished, inserted moments ago) and try again after lock_retry_backoff_s * 2**attempt.
    # Only the final failed attempt stays behind, in Prisma's failed state (logs set, finished_at
    # NULL), so the history reads exactly as if Prisma had tried once. Files with their own
    # BEGIN/COMMIT, CONCURRENTLY files and files pglast cannot parse are never retried: a partial
    # effect is possible there, so a second run could not be trusted.
    def _apply(
        self,
        conn: psycopg.Connection,
        migration: LocalMigration,
        kind: _ScriptKind,
        emit: Callable[[str], None],
        watch: _BlockerWatch,
        previous: _Unfinished | None,
        applied: list[AppliedMigration],
    ) -> _Unfinished:
        """Run one migration; its finish is left to the caller (see ``_bookkeeping``).

        ``previous`` is the migration applied just before, whose script has committed but whose row is not
        yet marked finished: its two UPDATEs are committed together with this migration's INSERT.
        """
        attempts = 1 + (max(0, self.lock_retries) if kind.retryable else 0)
        timeouts = self._timeout_settings(kind)
        joined = kind.joins_bookkeeping  # see "One query per migration" below
        attempt = 0
        announced = False
        while True:
            row_id = str(uuid.uuid4())
            start = (row_id, migration, timeouts)
            if joined:
                text = self._bookkeeping_block(conn, finish=previous, start=start) + migration.sql
            else:
                self._bookkeeping(conn, finish=previous, start=start)
                text = migration.sql
            if previous is not None and not announced:
                self._finished(previous, emit, applied)
            if not announced:
                emit(f"Applying migration `{migration.name}`")
                announced = True
            invalid_before = self._invalid_indexes(conn) if kind.concurrent_only else set()
            started = time.monotonic()
            try:
                with watch.watching(conn.info.backend_pid):
                    if joined:
                        _exec_plain(conn, text)
                    else:
                        _run_script(conn, text)
            except psycopg.Error as exc:
                if joined and not self._row_committed(conn, row_id):
                    # Nothing of that query committed: its bookkeeping failed, or the server refused the whole
                    # text before running any of it (a syntax this server does not know). Send the two queries
                    # separately, which says which of them fails and records the failure as Prisma would.
                    joined = False
                    continue
                previous = None  # its finish was committed with this migration's INSERT
                self._reset_timeouts(conn)
                sqlstate = getattr(exc, "sqlstate", None)
                if sqlstate == "55P03" and attempt + 1 < attempts:
                    conn.execute(
                        "DELETE FROM _prisma_migrations WHERE id = %s AND finished_at IS NULL", (row_id,)
                    )
                    delay = self.lock_retry_backoff_s * 2**attempt
                    emit(
                        f"Lock timeout on `{migration.name}`: {_describe_blocker(watch.last)}; "
                        f"retrying in {delay:g} s (attempt {attempt + 2} of {attempts})"
                    )
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise self._failed(conn, row_id, migration, exc, kind, watch, attempt + 1, invalid_before) from None
            return _Unfinished(row_id=row_id, migration=migration, duration_s=time.monotonic() - started)

    # A deploy of many small files pays for round trips and commits (WAL flushes), not for statements:
    # a runner doing one round trip per bookkeeping statement lands near 1.3-1.6x `psql -f ...` (see
    # BENCHMARKS.md, P3). So the bookkeeping between two scripts is ONE multi-statement simple query
    # (parameters bound client-side), which PostgreSQL runs as one implicit transaction: one round trip,
    # one commit. They are exactly Prisma's statements in Prisma's order:
    #   [UPDATE applied_steps_count+1, UPDATE finished_at, RESETs of migration k; INSERT, SETs of k+1]
    #   -> script k+1 (one simple query, its own transaction) -> ...
    # The INSERT of a migration is committed before its script is sent (a crash mid-script leaves a
    # started, unfinished row, as with Prisma). Marking k finished shares a commit with k+1's INSERT,
    # microseconds after k's script committed; the last migration's finish is a query of its own.
    # (psycopg's pipeline mode gives the same round trip but costs ~3x the client CPU per statement.)
    #
    # Durability. That shared commit is made with synchronous_commit off: it returns without waiting for its
    # WAL flush (here 0.17 instead of 0.33 ms per commit, ~3 % of a 400-file deploy; more wherever a commit
    # waits for a slower disk or a synchronous standby). Nothing is weakened, because the
    # script that follows commits synchronously and PostgreSQL flushes WAL in order, so k+1's script can only
    # become durable together with the bookkeeping before it. A database crash can lose at most the last
    # bookkeeping commit, which leaves exactly the state a crash just after k's script already leaves: k applied,
    # its row unfinished, nothing of k+1. The final finish (no script after it) and the failure path stay
    # synchronous, so a deploy that returned is durable. tests/test_prisma_crash.py crashes a real server
    # (`pg_ctl stop -m immediate`) mid-deploy and right after it to hold both claims.
    #
    # One query per migration. A file of two or more statements without transaction control already runs as
    # one implicit transaction, so its bookkeeping travels in front of it in the SAME simple query, as an
    # explicit transaction: "BEGIN; <bookkeeping>; COMMIT; <script>". PostgreSQL commits the block at its
    # COMMIT and runs the rest as the next implicit transaction (protocol docs, "Multiple Statements in a
    # Simple Query"), so the INSERT is still committed before any of the script runs and every claim above
    # holds; the deploy saves one round trip per file (~5 % of a local 400-file deploy, more over a network).
    # When that query fails and its INSERT did not commit, none of it ran (the server parses the whole text
    # first, and the block precedes the script), so the runner sends the two queries separately instead,
    # which attributes the failure to the right one. Files with transaction control, and lone statements not
    # known to behave the same inside a transaction block, always go separately (see _JOINABLE_ALONE).
    def _bookkeeping(
        self,
        conn: psycopg.Connection,
        *,
        finish: _Unfinished | None = None,
        start: tuple[str, LocalMigration, list[str]] | None = None,
    ) -> None:
        """Send the bookkeeping as a query of its own (one implicit transaction)."""
        _exec_plain(conn, ";\n".join(self._bookkeeping_statements(conn, finish=finish, start=start)))

    def _bookkeeping_block(
        self, conn: psycopg.Connection, *, finish: _Unfinished | None, start: tuple[str, LocalMigration, list[str]]
    ) -> str:
        """The bookkeeping as an explicit transaction to put in front of the script."""
        return ";\n".join(["BEGIN", *self._bookkeeping_statements(conn, finish=finish, start=start), "COMMIT;\n"])

    @staticmethod
    def _bookkeeping_statements(
        conn: psycopg.Connection, *, finish: _Unfinished | None, start: tuple[str, LocalMigration, list[str]] | None
    ) -> list[str]:
        """Prisma's statements with their values as literals, escaped by libpq for this connection.

        (PQescapeLiteral through psycopg's ``pq.Escaping``: ~5 us against ~33 us for a ClientCursor's mogrify,
        per file of a deploy.)
        """
        escape = Escaping(conn.pgconn).escape_literal
        encoding = conn.info.encoding

        def text(value: str) -> str:
            return escape(value.encode(encoding)).decode(encoding)

        def timestamp(value: datetime) -> str:
            return f"'{value.isoformat()}'"  # digits, '-', ':', '.', '+' and 'T' only

        statements: list[str] = []
        if finish is not None:
            row = text(finish.row_id)
            statements += [
                f"UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1 WHERE id = {row}",
                f"UPDATE _prisma_migrations SET finished_at = {timestamp(_now())} WHERE id = {row}",
                *_RESETS,  # always: a SET inside the file must not leak into the next one
            ]
        if start is not None:
            # A script follows, and its commit flushes the WAL up to and including this transaction, so this
            # commit need not wait for its own flush. See "Durability" above.
            statements.insert(0, "SET LOCAL synchronous_commit = off")
            row_id, migration, timeouts = start
            statements.append(
                "INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES "
                f"({text(row_id)}, {text(migration.checksum)}, {timestamp(_now())}, {text(migration.name)})"
            )
            statements += timeouts  # SET lock_timeout / statement_timeout, built from ints
        return statements

    @staticmethod
    def _row_committed(conn: psycopg.Connection, row_id: str) -> bool:
        """Whether this attempt's INSERT committed; True when that cannot be told (then nothing is re-sent)."""
        if conn.closed or conn.broken:
            return True
        try:
            return conn.execute("SELECT 1 FROM _prisma_migrations WHERE id = %s", (row_id,)).fetchone() is not None
        except psycopg.Error:
            return True

    @staticmethod
    def _finished(done: _Unfinished, emit: Callable[[str], None], applied: list[AppliedMigration]) -> None:
        emit(f"Applied `{done.migration.name}` in {done.duration_s:.2f} s")
        applied.append(
            AppliedMigration(name=done.migration.name, checksum=done.migration.checksum, duration_s=done.duration_s)
        )

    def _timeout_settings(self, kind: _ScriptKind) -> list[str]:
        """SET lock_timeout / statement_timeout for the session around the script, unless the file sets them.

        Files that are a lone CONCURRENTLY statement get no lock_timeout: they take only SHARE UPDATE
        EXCLUSIVE (no queue of blocked readers/writers behind them) but must wait for old transactions.
        Both settings are RESET afterwards, so a SET inside one file does not leak into the next.
        """
        statements: list[str] = []
        if self.lock_timeout_ms is not None and not kind.sets_lock_timeout and not kind.concurrent_only:
            statements.append(f"SET lock_timeout = '{int(self.lock_timeout_ms)}ms'")
        if self.statement_timeout_ms is not None and not kind.sets_statement_timeout:
            statements.append(f"SET statement_timeout = '{int(self.statement_timeout_ms)}ms'")
        return statements

    @staticmethod
    def _reset_timeouts(conn: psycopg.Connection) -> None:
        """After a failed script: RESET both settings if the connection is still usable (best effort)."""
        if not conn.closed and not conn.broken:
            try:
                for statement in _RESETS:
                    conn.execute(statement)
            except psycopg.Error:
                pass

    def _invalid_indexes(self, conn: psycopg.Connection) -> set[str]:
        rows = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid AND n.nspname = current_schema()"
        ).fetchall()
        return {r[0] for r in rows}

    def _failed(
        self,
        conn: psycopg.Connection,
        row_id: str,
        migration: LocalMigration,
        exc: psycopg.Error,
        kind: _ScriptKind,
        watch: _BlockerWatch,
        attempts: int,
        invalid_before: set[str],
    ) -> PrismaError:
        """Record the failure in `logs` like Prisma and build the P3018 error."""
        sqlstate = getattr(exc, "sqlstate", None) or "none"
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag is not None else None) or str(exc).strip() or type(exc).__name__
        detail = f"ERROR: {primary}"
        if sqlstate == "55P03":
            relation = watch.last.relation if watch.last and watch.last.relation else "unknown relation"
            shown = relation if relation.startswith('"') else f'"{relation}"'
            detail = (
                f"could not get lock on {shown} — {_describe_blocker(watch.last)}"
                + (f"; gave up after {attempts} attempts" if attempts > 1 else "")
            )
        if kind.concurrent_only and not conn.closed and not conn.broken:
            try:
                new_invalid = sorted(self._invalid_indexes(conn) - invalid_before)
            except psycopg.Error:
                new_invalid = []
            if new_invalid:
                names = ", ".join(f'"{n}"' for n in new_invalid)
                detail += (
                    f"; the failed concurrent build left invalid index {names} (pg_index.indisvalid = false): "
                    "drop it with DROP INDEX CONCURRENTLY before retrying"
                )
        message = (
            "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
            f"Read more about how to resolve migration issues in a production database: {RESOLVE_DOCS}\n\n"
            f"Migration name: {migration.name}\n\nDatabase error code: {sqlstate}\n\nDatabase error:\n{detail}\n"
        )
        if not conn.closed and not conn.broken:
            try:
                conn.execute("UPDATE _prisma_migrations SET logs = %s WHERE id = %s", (redact(message), row_id))
            except psycopg.Error:
                pass  # the row stays failed (finished_at NULL) either way
        return PrismaError(
            "P3018",
            f"A migration failed to apply. Migration name: {migration.name}. "
            f"Database error code: {sqlstate}. Database error: {detail}",
            migration_name=migration.name,
            prisma_message=message.rstrip("\n"),
            database_error_code=None if sqlstate == "none" else sqlstate,
        )


_RESETS = ("RESET lock_timeout", "RESET statement_timeout")


def _exec_plain(conn: psycopg.Connection, text: str) -> None:
    """Run TEXT as ONE simple query through libpq's PQexec, raising psycopg's own exception for an error.

    For our bookkeeping and for files whose statements are all known (_ScriptKind.joins_bookkeeping: no COPY, no
    transaction control). psycopg's ``execute`` costs ~0.25 ms of client CPU per query here against ~0.03 ms for
    PQexec, and a deploy of 400 files makes 400-800 queries in a strict sequence (BENCHMARKS.md, P3). PQexec
    releases the GIL while it waits (the blocker watch keeps polling) and blocks even on psycopg's non-blocking
    connection, as libpq documents.
    """
    if "\x00" in text:  # a C string would end there; let psycopg refuse it
        _run_script(conn, text)
        return
    encoding = conn.info.encoding
    result = conn.pgconn.exec_(text.encode(encoding))
    if result.status in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK, ExecStatus.EMPTY_QUERY):
        return
    if result.status == ExecStatus.FATAL_ERROR:
        raise psycopg.errors.error_from_result(result, encoding=encoding)
    raise psycopg.OperationalError(f"unexpected result from the server: {ExecStatus(result.status).name}")


def _run_script(conn: psycopg.Connection, script: str) -> None:
    """Send the whole file as ONE simple-protocol query (psycopg does so for a str without parameters)."""
    conn.execute(script)  # a runtime str, not a LiteralString


def _describe_blocker(blocker: _Blocker | None) -> str:
    if blocker is None:
        return "blocker not identified"
    return f"blocked by pid {blocker.pid} ({blocker.query[:80]}, {blocker.age_s:.1f}s)"


def _now() -> datetime:
    return datetime.now(UTC)


def _connection_error(exc: psycopg.OperationalError, conninfo: str) -> PrismaError:
    text = " ".join(str(exc).split())
    params = conninfo_to_dict(conninfo)
    where = _host_port(conninfo)
    if "password authentication failed" in text or "no password supplied" in text:
        user = params.get("user") or ""
        return PrismaError(
            "P1000",
            f"Authentication failed against database server at `{where}`, the provided database credentials "
            f"for `{user}` are not valid.",
        )
    if re.search(r"database \".*\" does not exist", text):
        return PrismaError("P1003", f"Database `{params.get('dbname', '')}` does not exist on the database server at `{where}`.")
    return PrismaError(
        "P1001", f"Can't reach database server at `{where}`. Please make sure your database server is running at `{where}`."
    )


def _database_error(exc: psycopg.Error) -> PrismaError:
    """An unexpected database error outside a migration script (bookkeeping, lock, connection loss)."""
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        return PrismaError("P1017", f"Server has closed the connection: {' '.join(str(exc).split())}")
    sqlstate = getattr(exc, "sqlstate", None) or "none"
    # Not a Prisma error code: Prisma has none for a failing bookkeeping query.
    return PrismaError("DB_ERROR", f"Database error {sqlstate}: {' '.join(str(exc).split())}", database_error_code=sqlstate)
