"""A stand-in for the `prisma` CLI (migrate status/deploy/resolve) built on NativeRunner, printing Prisma 7's texts."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from psycopg.conninfo import conninfo_to_dict  # noqa: E402

from bot.errors import MigrationError  # noqa: E402
from bot.integrations.prisma.migrations import (  # noqa: E402
    MigrationStatus,
    PrismaError,
    list_local_migrations,
    split_database_url,
)
from bot.integrations.prisma.native import NativeRunner  # noqa: E402

# Knobs for tests only (the real CLI has none of these).
#   PRISMA_MIGRATIONS_DIR            where the migrations are (default ./prisma/migrations, or next to --schema)
#   FAKE_PRISMA_SLEEP_S              sleep this long before doing anything (to test timeouts)
#   FAKE_PRISMA_ADVISORY_LOCK_TIMEOUT_S  shorten Prisma's 10 s advisory-lock wait
#   FAKE_PRISMA_ECHO_URL             print DATABASE_URL (to test that the wrapper redacts output)

SHOWN_DIR = "prisma/migrations"  # Prisma hard-codes this text whatever the real path is


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str = "") -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def migrations_dir(schema: str | None) -> Path:
    if os.environ.get("PRISMA_MIGRATIONS_DIR"):
        return Path(os.environ["PRISMA_MIGRATIONS_DIR"])
    if schema:
        return Path(schema).parent / "migrations"
    return Path("prisma/migrations")


def datasource_line(url: str) -> str:
    conninfo, schema = split_database_url(url)
    params = conninfo_to_dict(conninfo)
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    return f'Datasource "db": PostgreSQL database "{params.get("dbname", "")}", schema "{schema or "public"}" at "{where}"'


def found_line(count: int) -> str:
    if count == 0:
        return f"No migration found in {SHOWN_DIR}"
    return f"{count} {plural(count, 'migration', 'migrations')} found in {SHOWN_DIR}"


def fail(exc: MigrationError) -> int:
    if isinstance(exc, PrismaError):
        if exc.code in {"P1000", "P1001", "P1003", "P1013"}:
            err(f"Error: {exc.code}: {exc.prisma_message}")
        else:
            err(f"Error: {exc.code}\n\n{exc.prisma_message}\n")
    else:
        err(f"Error: {exc}")
    return 1


def last_common(status: MigrationStatus) -> str | None:
    live: list[str] = []
    for row in status.rows:
        if row.rolled_back_at is None and row.migration_name not in live:
            live.append(row.migration_name)
    common: str | None = None
    for local, db in zip((m.name for m in status.local), live, strict=False):
        if local != db:
            break
        common = local
    return common


def cmd_status(runner: NativeRunner, directory: Path) -> int:
    status = runner.status(directory)
    out()
    out(found_line(len(status.local)))
    if status.pending and not status.missing_locally:
        out(f"{plural(len(status.pending), 'Following migration have', 'Following migrations have')} not yet been applied:")
        for name in status.pending:
            out(name)
        out()
        out("To apply migrations in development run prisma migrate dev.")
        out("To apply migrations in production run prisma migrate deploy.")
        return 1
    if status.pending and status.missing_locally:
        err("Your local migration history and the migrations table from your database are different:")
        err()
        err(f"The last common migration is: {last_common(status) or 'null'}")
        err()
        err(f"{plural(len(status.pending), 'The migration have', 'The migrations have')} not yet been applied:")
        for name in status.pending:
            err(name)
        err()
        err(
            f"{plural(len(status.missing_locally), 'The migration from the database are', 'The migrations from the database are')}"
            f" not found locally in {SHOWN_DIR}:"
        )
        for name in status.missing_locally:
            err(name)
        return 1
    if not status.table_exists:
        err("The current database is not managed by Prisma Migrate.")
        err()
        err("Read more about how to baseline an existing production database:")
        err("https://pris.ly/d/migrate-baseline")
        return 1
    if status.failed:
        names = list(dict.fromkeys(r.migration_name for r in status.failed))
        err(f"{plural(len(names), 'Following migration have', 'Following migrations have')} failed:")
        for name in names:
            err(name)
        err()
        err(
            "During development if the failed migration(s) have not been deployed to a production database you "
            "can then fix the migration(s) and run prisma migrate dev."
        )
        err()
        err("The failed migration(s) can be marked as rolled back or applied:")
        err()
        err("- If you rolled back the migration(s) manually:")
        err(f'prisma migrate resolve --rolled-back "{names[0]}"')
        err()
        err("- If you fixed the database manually (hotfix):")
        err(f'prisma migrate resolve --applied "{names[0]}"')
        err()
        err("Read more about how to resolve migration issues in a production database:")
        err("https://pris.ly/d/migrate-resolve")
        return 1
    out()
    out("Database schema is up to date!")
    return 0


def cmd_deploy(runner: NativeRunner, directory: Path) -> int:
    count = len(list_local_migrations(directory)) if directory.is_dir() else 0
    out()
    out(found_line(count))
    out()
    if count == 0:
        out("No pending migrations to apply.")
        return 0

    def on_event(line: str) -> None:
        if line.startswith("Applying migration "):
            out(line + "\n")

    result = runner.deploy(directory, on_event=on_event)
    out()
    if not result.applied:
        out("No pending migrations to apply.")
        return 0
    out("The following migration(s) have been applied:")
    out()
    out("migrations/")
    for applied in result.applied:
        out(f"  └─ {applied.name}/")
        out("    └─ migration.sql")
    out()
    out("All migrations have been successfully applied.")
    return 0


def cmd_resolve(runner: NativeRunner, directory: Path, applied: str | None, rolled_back: str | None) -> int:
    if applied and rolled_back:
        err("Error: Pass either --applied or --rolled-back, not both.")
        return 1
    if not applied and not rolled_back:
        err(
            "Error: --applied or --rolled-back must be part of the command like:\n"
            "prisma migrate resolve --applied 20201231000000_example\n"
            "prisma migrate resolve --rolled-back 20201231000000_example"
        )
        return 1
    if applied:
        runner.resolve_applied(directory, applied)
        out()
        out(f"Migration {applied} marked as applied.")
    else:
        assert rolled_back is not None
        runner.resolve_rolled_back(directory, rolled_back)
        out()
        out(f"Migration {rolled_back} marked as rolled back.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prisma")
    parser.add_argument("group", choices=["migrate"])
    parser.add_argument("verb", choices=["status", "deploy", "resolve"])
    parser.add_argument("--schema")
    parser.add_argument("--applied")
    parser.add_argument("--rolled-back", dest="rolled_back")
    args = parser.parse_args(argv)
    if os.environ.get("FAKE_PRISMA_SLEEP_S"):
        time.sleep(float(os.environ["FAKE_PRISMA_SLEEP_S"]))
    url = os.environ.get("DATABASE_URL")
    if not url:
        err(f"Error: The datasource.url property is required in your Prisma config file when using prisma migrate {args.verb}.")
        return 1
    err("Prisma schema loaded from prisma/schema.prisma.")
    if os.environ.get("FAKE_PRISMA_ECHO_URL"):
        out(f"DATABASE_URL={url}")
    try:
        out(datasource_line(url))
        runner = NativeRunner(
            url,
            advisory_lock_timeout_s=float(os.environ.get("FAKE_PRISMA_ADVISORY_LOCK_TIMEOUT_S", "10")),
            lock_timeout_ms=None,  # the real CLI sets no lock_timeout and never retries
            lock_retries=0,
        )
        directory = migrations_dir(args.schema)
        if args.verb == "status":
            return cmd_status(runner, directory)
        if args.verb == "deploy":
            return cmd_deploy(runner, directory)
        return cmd_resolve(runner, directory, args.applied, args.rolled_back)
    except MigrationError as exc:
        return fail(exc)


if __name__ == "__main__":
    sys.exit(main())
