"""PostgreSQL: a small psycopg client, and pg_dump / pg_restore run with the password kept off the command line."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bot.config import server_address
from bot.errors import BackupError, IntegrationError
from bot.redact import redact

MAINTENANCE_DB = "postgres"

# Query parameters Prisma understands in DATABASE_URL that libpq would reject ("invalid URI query parameter").
_PRISMA_ONLY_PARAMS = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "pgbouncer",
        "statement_cache_size",
        "socket_timeout",
        "sslaccept",
        "sslidentity",
        "sslpassword",
        "application_name_prefix",
    }
)


# ---------------------------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------------------------


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in the userinfo and in a ``password=`` parameter)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if not parts.scheme or not parts.netloc:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"{user}@{hostport}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """Split a (possibly Prisma-style) URL into a libpq URL without password, the password, and Prisma's schema."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, raw_password = userinfo.partition(":")
        if sep:
            password = unquote(raw_password)
        netloc = f"{user}@{hostport}"
    kept: list[tuple[str, str]] = []
    schema: str | None = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password":
            password = value
        elif key == "schema":
            schema = value or None
        elif key not in _PRISMA_ONLY_PARAMS:
            kept.append((key, value))
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), password, schema


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), parts.query, parts.fragment))


def database_of(url: str) -> str:
    """The database a PostgreSQL URL names ("" when it names none)."""
    return unquote(urlsplit(url).path.lstrip("/"))


def describe_database(url: str) -> str:
    """The database a URL names, as a person may read it (``database app on db.internal:5432``): never the URL
    itself, whose user and password are secrets."""
    host, port = server_address(url)
    return f"database {database_of(url) or '(default)'} on {host}:{port}"


def schema_of(url: str) -> str:
    """The schema a Prisma database URL names with ``?schema=``, else ``public``."""
    for key, value in parse_qsl(urlsplit(url).query):
        if key == "schema" and value:
            return value
    return "public"


def _reason(exc: BaseException) -> str:
    """The first non-empty line of an exception, redacted."""
    for line in str(exc).splitlines():
        if line.strip():
            return redact(line.strip())
    return type(exc).__name__


# ---------------------------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------------------------


class Postgres:
    """A short-lived-connection client for one database; every failure is an IntegrationError."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10, statement_timeout_s: float = 60) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self._libpq_url, self._password, self.schema = _split_url(url)

    def __repr__(self) -> str:
        return f"Postgres({redacted_url(self.url)!r})"

    # -- connections ------------------------------------------------------------------------------------------

    def _connect(self, libpq_url: str | None = None) -> psycopg.Connection[Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq takes whole seconds and treats 1 as 2; never pass 0 (that means "wait forever").
            "connect_timeout": max(2, math.ceil(self.connect_timeout_s)),
        }
        if self._password is not None:
            kwargs["password"] = self._password
        target = libpq_url or self._libpq_url
        try:
            conn = psycopg.connect(target, **kwargs)
            # A SET after connecting rather than a startup "options" parameter: PgBouncer rejects the latter.
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{int(self.statement_timeout_s * 1000)}ms",))
            return conn
        except psycopg.Error as exc:
            raise IntegrationError(f"Cannot connect to {redacted_url(self.url if libpq_url is None else target)}: "
                                   f"{_reason(exc)}") from exc

    def _fetch(self, query: str | sql.Composed, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.Error as exc:
                raise IntegrationError(f"Query on {redacted_url(self.url)} failed: {_reason(exc)}") from exc

    def _admin(self, statement: sql.Composed) -> None:
        """Run one statement on the server's maintenance database (outside any transaction)."""
        admin_url = _with_database(self._libpq_url, MAINTENANCE_DB)
        with self._connect(admin_url) as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                rendered = statement.as_string(conn)
                raise IntegrationError(f"{rendered} failed on {redacted_url(admin_url)}: {_reason(exc)}") from exc

    def read_only_connection(self) -> psycopg.Connection[Any]:
        """A connection for catalog lookups that can change nothing (the safety review uses it)."""
        conn = self._connect()
        conn.execute("SET default_transaction_read_only = on")
        return conn

    # -- reads ------------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Connect and run SELECT 1; raise IntegrationError naming the (redacted) URL when that fails."""
        self._fetch("SELECT 1")

    def server_version_num(self) -> int:
        """The server's version as an integer, e.g. 150020 for 15.20."""
        return int(self._fetch("SHOW server_version_num")[0][0])

    def database_name(self) -> str:
        """The name of the database this client is connected to."""
        return str(self._fetch("SELECT current_database()")[0][0])

    def prisma_migrations_count(self) -> int | None:
        """Rows in ``_prisma_migrations`` (in Prisma's schema, or the current schema); None when it is missing."""
        rows = self._fetch(
            "SELECT to_regclass(quote_ident(coalesce(%s, current_schema())) || '._prisma_migrations')::text",
            (self.schema,),
        )
        table = rows[0][0]
        if table is None:
            return None
        return int(self._fetch(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))[0][0])

    def table_names(self) -> list[str]:
        """Every user table (ordinary and partitioned) as ``schema.table``, sorted."""
        rows = self._fetch(
            """
            SELECT n.nspname || '.' || c.relname
            FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%'
              AND n.nspname NOT LIKE 'pg\\_temp\\_%'
            """
        )
        return sorted(str(row[0]) for row in rows)

    # -- monitoring readings ----------------------------------------------------------------------------------

    def connection_count(self) -> int:
        """Sessions connected to this database (``pg_stat_activity``), this one included."""
        rows = self._fetch("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database()")
        return int(rows[0][0])

    def max_connections(self) -> int:
        """The server's ``max_connections`` setting."""
        return int(self._fetch("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_connections'")[0][0])

    def failed_prisma_migrations(self) -> list[str]:
        """Names of failed migrations (``finished_at IS NULL AND rolled_back_at IS NULL``), oldest first;
        [] when there is no ``_prisma_migrations`` table."""
        rows = self._fetch(
            "SELECT to_regclass(quote_ident(coalesce(%s, current_schema())) || '._prisma_migrations')::text",
            (self.schema,),
        )
        table = rows[0][0]
        if table is None:
            return []
        found = self._fetch(
            sql.SQL(
                "SELECT migration_name FROM {} WHERE finished_at IS NULL AND rolled_back_at IS NULL "
                "ORDER BY started_at, migration_name"
            ).format(sql.SQL(table))
        )
        return [str(row[0]) for row in found]

    # -- databases on the same server -------------------------------------------------------------------------

    def url_for_database(self, name: str) -> str:
        """This client's URL (credentials and parameters kept) pointing at database ``name`` instead."""
        return _with_database(self.url, name)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE ``name`` on this server."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name`` WITH (FORCE), disconnecting anyone still in it."""
        if name == database_of(self._libpq_url) or name == MAINTENANCE_DB:
            raise IntegrationError(f"Refusing to drop database {name}: it is the live or maintenance database.")
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def swap_in_database(self, restored: str, aside: str, *, attempts: int = 5) -> None:
        """Make ``restored`` the live database by renaming: live -> ``aside``, ``restored`` -> live.

        Sessions in either database are terminated first (the app is scaled to 0 by then); nothing is
        dropped, so the pre-restore data stays available under ``aside``.
        """
        live = database_of(self._libpq_url)
        terminate = sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname IN ({}, {}) AND pid <> pg_backend_pid()"
        ).format(sql.Literal(live), sql.Literal(restored))
        for attempt in range(attempts):
            self._admin(terminate)
            try:
                self._admin(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live),
                                                                             sql.Identifier(aside)))
                break
            except IntegrationError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self._admin(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(restored), sql.Identifier(live)))

    # -- sessions and their locks (the rehearsal sampler and the go-time pre-flight) --------------------------

    def session_locks(self) -> list[SessionLock]:
        """Every other session in this database, one row per table lock it holds or awaits (one lockless row)."""
        rows = self._fetch(_SESSION_LOCKS_SQL)
        return [SessionLock(*row) for row in rows]

    def session_lock_snapshots(self) -> Generator[list[SessionLock], None, None]:
        """Like ``session_locks``, but one connection kept open: each ``next()`` is a fresh snapshot.

        Close the generator (``.close()``) to close its connection. A failing query raises IntegrationError.
        """
        with self._connect() as conn:
            while True:
                try:
                    rows = conn.execute(_SESSION_LOCKS_SQL).fetchall()
                except psycopg.Error as exc:
                    raise IntegrationError(f"Query on {redacted_url(self.url)} failed: {_reason(exc)}") from exc
                yield [SessionLock(*row) for row in rows]


class SessionLock(NamedTuple):
    """One session of ``pg_stat_activity`` and one table lock from ``pg_locks`` (lock fields None: no lock)."""

    pid: int
    state: str | None
    backend_type: str | None
    state_age_s: float | None
    xact_age_s: float | None
    query_age_s: float | None
    wait_event_type: str | None
    wait_event: str | None
    query: str
    schema: str | None
    table: str | None
    mode: str | None
    granted: bool | None


# Table locks (ordinary, partitioned, materialized) only: index, catalog and TOAST locks are left out.
_SESSION_LOCKS_SQL = """
SELECT a.pid, a.state, a.backend_type,
       extract(epoch FROM clock_timestamp() - a.state_change)::float8,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       extract(epoch FROM clock_timestamp() - a.query_start)::float8,
       a.wait_event_type, a.wait_event, left(coalesce(a.query, ''), 1000),
       t.nspname, t.relname, t.mode, t.granted
  FROM pg_catalog.pg_stat_activity a
  LEFT JOIN LATERAL (
        SELECT n.nspname::text, c.relname::text, l.mode, l.granted
          FROM pg_catalog.pg_locks l
          JOIN pg_catalog.pg_class c ON c.oid = l.relation AND c.relkind IN ('r', 'p', 'm')
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE l.pid = a.pid
           AND l.locktype = 'relation'
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
       ) t ON true
 WHERE a.datname = current_database()
   AND a.pid <> pg_backend_pid()
 ORDER BY a.pid
"""


# ---------------------------------------------------------------------------------------------------------------
# pg_dump / pg_restore
# ---------------------------------------------------------------------------------------------------------------


def _tool_env(url: str | None, connect_timeout_s: float = 10) -> tuple[str | None, dict[str, str]]:
    """The libpq URL to put on the command line (no password) and the environment carrying the password."""
    env = dict(os.environ)
    env["PGCONNECT_TIMEOUT"] = str(max(2, math.ceil(connect_timeout_s)))
    env["LC_MESSAGES"] = "C"
    if url is None:
        return None, env
    libpq_url, password, _schema = _split_url(url)
    if password is not None:
        env["PGPASSWORD"] = password
    return libpq_url, env


def _tool(name: str, tool_dir: Path | None = None) -> str:
    if tool_dir is not None and (tool_dir / name).is_file():
        return str(tool_dir / name)
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not found:
        raise BackupError(f"{name} is not installed (not on PATH).")
    return found


def _last_stderr_line(tool: str, stderr: str) -> str:
    """The tool's last own message (``pg_restore: error: …``), not the DETAIL/CONTEXT lines after it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(f"{tool}: ")]
    chosen = (own or lines or ["no error output"])[-1]
    return redact(" ".join(chosen.split()))


def _run(name: str, args: list[str], env: dict[str, str], timeout_s: float, what: str,
         tool_dir: Path | None = None) -> str:
    """Run a PostgreSQL client tool; return its stdout or raise BackupError with its last stderr line."""
    try:
        done = subprocess.run(
            [_tool(name, tool_dir), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{name} {what} did not finish within {timeout_s:g} s and was stopped.") from exc
    except OSError as exc:
        raise BackupError(f"{name} {what} could not start: {_reason(exc)}") from exc
    if done.returncode != 0:
        raise BackupError(f"{name} {what} failed (exit {done.returncode}): {_last_stderr_line(name, done.stderr)}")
    return done.stdout


def pg_dump(
    url: str,
    out_path: Path | str,
    *,
    fmt: Literal["custom", "directory"] = "custom",
    jobs: int = 1,
    timeout_s: float = 3600,
) -> Path:
    """Dump the database at ``url`` to ``out_path`` (a file for custom, a new directory for directory format)."""
    out = Path(out_path)
    if fmt not in ("custom", "directory"):
        raise BackupError(f"pg_dump format must be custom or directory, not {fmt!r}.")
    if jobs > 1 and fmt != "directory":
        raise BackupError("pg_dump --jobs needs the directory format.")
    libpq_url, env = _tool_env(url)
    args = [f"--dbname={libpq_url}", f"--file={out}", "--format=" + ("c" if fmt == "custom" else "d")]
    if fmt == "directory":
        args.append(f"--jobs={max(1, jobs)}")
    _run("pg_dump", args, env, timeout_s, f"of {redacted_url(url)}")
    return out


def pg_restore_list(path: Path | str, *, timeout_s: float = 300) -> list[str]:
    """The table of contents of a custom- or directory-format dump, without its ``;`` comment lines."""
    _, env = _tool_env(None)
    stdout = _run("pg_restore", ["--list", str(path)], env, timeout_s, f"--list {Path(path).name}")
    return [line for line in stdout.splitlines() if line.strip() and not line.lstrip().startswith(";")]


def pg_restore_header(path: Path | str, *, timeout_s: float = 300) -> str:
    """The ``;`` comment header of ``pg_restore --list`` (it names the server version the dump came from)."""
    _, env = _tool_env(None)
    stdout = _run("pg_restore", ["--list", str(path)], env, timeout_s, f"--list {Path(path).name}")
    return "\n".join(line for line in stdout.splitlines() if line.lstrip().startswith(";"))


def pg_restore(
    path: Path | str,
    target_url: str,
    *,
    jobs: int = 1,
    clean: bool = False,
    no_owner: bool = False,
    timeout_s: float = 3600,
    tool_dir: Path | None = None,
) -> None:
    """Restore a custom- or directory-format dump into ``target_url``, stopping at the first error."""
    libpq_url, env = _tool_env(target_url)
    args = [f"--dbname={libpq_url}", "--exit-on-error", f"--jobs={max(1, jobs)}"]
    if clean:
        args += ["--clean", "--if-exists"]
    if no_owner:
        args += ["--no-owner", "--no-privileges"]
    args.append(str(path))
    _run("pg_restore", args, env, timeout_s, f"into {redacted_url(target_url)}", tool_dir)
