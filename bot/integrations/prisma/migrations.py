"""The Prisma migrations directory and `_prisma_migrations`: files, checksums, rows and the status between them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.errors import MigrationError
from bot.redact import redact

MIGRATIONS_TABLE = "_prisma_migrations"
RESOLVE_DOCS = "https://pris.ly/d/migrate-resolve"
BASELINE_DOCS = "https://pris.ly/d/migrate-baseline"


# Query parameters that Prisma understands in DATABASE_URL but libpq rejects.
_PRISMA_ONLY_URL_PARAMS = {
    "schema",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
    "sslaccept",
    "socket_timeout",
    "statement_cache_size",
    "sslidentity",
    "sslpassword",
}


class PrismaError(MigrationError):
    """A Prisma Migrate failure with Prisma's error code (P3009, P3018, ...) and, if known, the migration."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        migration_name: str | None = None,
        prisma_message: str | None = None,
        database_error_code: str | None = None,
    ) -> None:
        self.code: str = code
        self.migration_name: str | None = migration_name
        self.database_error_code: str | None = database_error_code
        self.reason: str = redact(" ".join(reason.split()))
        # Prisma's own (multi-line) message text, as `prisma migrate` prints it after "Error: <code>".
        self.prisma_message: str = redact(prisma_message if prisma_message is not None else reason)
        super().__init__(f"{code}: {self.reason}")


@dataclass(frozen=True)
class LocalMigration:
    """One directory under prisma/migrations, as Prisma sees it."""

    name: str
    directory: Path
    sql: str
    checksum: str
    down_sql: str | None = None


@dataclass(frozen=True)
class MigrationRow:
    """One row of `_prisma_migrations`, all eight columns."""

    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def failed(self) -> bool:
        """Prisma's error state: started, neither finished nor rolled back."""
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def applied(self) -> bool:
        """Finished and not rolled back."""
        return self.finished_at is not None and self.rolled_back_at is None


@dataclass(frozen=True)
class MigrationStatus:
    """Local migrations against `_prisma_migrations`, classified the way Prisma's engine does."""

    local: list[LocalMigration]
    rows: list[MigrationRow]
    table_exists: bool
    pending: list[str]
    failed: list[MigrationRow]
    missing_locally: list[str]
    edited: list[str]

    @property
    def up_to_date(self) -> bool:
        """What `prisma migrate status` calls up to date: a table, nothing pending, nothing failed.

        Like Prisma, migrations missing locally and edited migrations do not count; check
        ``missing_locally`` and ``edited`` yourself.
        """
        return self.table_exists and not self.pending and not self.failed


@dataclass(frozen=True)
class AppliedMigration:
    """A migration that a deploy applied (checksum is '' when the Prisma CLI applied it)."""

    name: str
    checksum: str
    duration_s: float


@dataclass(frozen=True)
class DeployResult:
    """What a deploy applied, in order; empty when nothing was pending."""

    applied: list[AppliedMigration] = field(default_factory=list)


def migration_checksum(raw: bytes) -> str:
    """Prisma's checksum: sha256 of the file decoded as UTF-8 (bad bytes -> U+FFFD) and re-encoded."""
    return hashlib.sha256(raw.decode("utf-8", "replace").encode("utf-8")).hexdigest()


def down_checksum(down_sql: str) -> str:
    """sha256 of a down.sql as read (what a second approver approves before it runs)."""
    return hashlib.sha256(down_sql.encode("utf-8")).hexdigest()


def checksum_matches(script: str, stored: str) -> bool:
    """Prisma's comparison: the raw text, its CRLF->LF and its LF->CRLF forms all match; legacy hex too."""
    variants = (script, script.replace("\r\n", "\n"), script.replace("\n", "\r\n"))
    for text in variants:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if len(stored) == 64:
            if digest.hex() == stored:
                return True
        elif "".join(f"{byte:x}" for byte in digest) == stored:  # old engines did not zero-pad bytes
            return True
    return False


def list_local_migrations(migrations_dir: Path | str) -> list[LocalMigration]:
    """Every subdirectory of ``migrations_dir`` in Prisma's order, with its SQL and checksum.

    Raises MigrationError (P3015) for a directory that has no migration.sql.
    """
    root = Path(migrations_dir)
    if not root.is_dir():
        raise MigrationError(f"Migrations directory {root} does not exist.")
    # os.scandir and plain opens: a deploy reads every file of the history before it starts, and pathlib's
    # is_dir / is_file / read_bytes cost a stat and Python overhead each (~0.1 ms a directory of 434).
    with os.scandir(root) as entries:
        directories = sorted((e.name for e in entries if e.is_dir()), key=str.encode)
    migrations: list[LocalMigration] = []
    for name in directories:
        directory = root / name
        script = os.path.join(root, name, "migration.sql")
        try:
            with open(script, "rb") as handle:
                raw = handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PrismaError(
                "P3015",
                f"Could not find the migration file at {script}. "
                "Please delete the directory or restore the migration file.",
                migration_name=name,
            ) from None
        try:
            with open(os.path.join(root, name, "down.sql"), "rb") as handle:
                down: str | None = handle.read().decode("utf-8", "replace")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            down = None
        migrations.append(
            LocalMigration(
                name=name,
                directory=directory,
                sql=raw.decode("utf-8", "replace"),
                checksum=migration_checksum(raw),
                down_sql=down,
            )
        )
    return migrations


def require_postgresql_provider(migrations_dir: Path | str) -> None:
    """Raise P3019 when migration_lock.toml names a provider other than postgresql (no file: nothing to compare)."""
    lock_file = Path(migrations_dir) / "migration_lock.toml"
    if not lock_file.is_file():
        return
    for line in lock_file.read_text("utf-8", "replace").splitlines():
        if line.startswith("provider"):
            provider = line.removeprefix("provider").strip().removeprefix("=").strip().strip('"')
            if provider != "postgresql":
                raise PrismaError(
                    "P3019",
                    f"The datasource provider `postgresql` specified in your schema does not match the one "
                    f"specified in the migration_lock.toml, `{provider}`. Please remove your current migration "
                    "directory and start a new migration history with prisma migrate dev. "
                    "Read more: https://pris.ly/d/migrate-provider-switch",
                )
            return


def compute_status(local: list[LocalMigration], rows: list[MigrationRow], table_exists: bool) -> MigrationStatus:
    """Classify local migrations and table rows as Prisma's diagnoseMigrationHistory does (after PR #5817)."""
    live = [r for r in rows if r.rolled_back_at is None]
    live_names = {r.migration_name for r in live}
    local_by_name = {m.name: m for m in local}
    missing: list[str] = []
    for row in live:
        if row.migration_name not in local_by_name and row.migration_name not in missing:
            missing.append(row.migration_name)
    edited: list[str] = []
    for row in live:
        migration = local_by_name.get(row.migration_name)
        if (
            row.finished_at is not None
            and migration is not None
            and not checksum_matches(migration.sql, row.checksum)
            and row.migration_name not in edited
        ):
            edited.append(row.migration_name)
    return MigrationStatus(
        local=local,
        rows=rows,
        table_exists=table_exists,
        pending=[m.name for m in local if m.name not in live_names],
        failed=[r for r in rows if r.failed],
        missing_locally=missing,
        edited=edited,
    )


def format_prisma_timestamp(value: datetime) -> str:
    """chrono's Display of a UTC timestamp: `2025-10-10 13:48:23.538445 UTC` (0, 3 or 6 fraction digits)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond % 1000:
        text += f".{value.microsecond:06d}"
    elif value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + " UTC"


# ---------------------------------------------------------------------------------------------------
# Native runner


def split_database_url(url: str) -> tuple[str, str | None]:
    """A libpq conninfo without Prisma-only parameters, and the `?schema=` value (None = server default)."""
    # psycopg is loaded here, not at import: reading the migrations folder (migrate-bot lint) needs no driver.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
        schema = None
    except psycopg.ProgrammingError:
        # libpq refuses unknown URI parameters such as ?schema=; strip them and retry.
        base, _, query = url.partition("?")
        kept: list[str] = []
        schema = None
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "schema":
                from urllib.parse import unquote

                schema = unquote(value) or None
            elif key and key not in _PRISMA_ONLY_URL_PARAMS:
                kept.append(part)
        try:
            params = conninfo_to_dict(base + ("?" + "&".join(kept) if kept else ""))
        except psycopg.ProgrammingError as exc:
            raise PrismaError("P1013", f"The provided database string is invalid. {exc}") from None
    return make_conninfo("", **params), schema


# ---------------------------------------------------------------------------------------------------
# Prisma CLI runner


