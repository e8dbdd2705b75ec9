"""The `migrate-bot migrate status|deploy|resolve` commands: Prisma Migrate through the native runner."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bot.errors import ConfigError
from bot.integrations.prisma.migrations import MigrationStatus, PrismaError
from bot.integrations.prisma.native import NativeRunner

EXIT_OK = 0
EXIT_FAILED = 1


def register(subparsers: Any) -> None:
    """Add `migrate` and its verbs to the `migrate-bot` parser."""
    migrate = subparsers.add_parser("migrate", help="Prisma migrations: status, deploy, resolve")
    verbs = migrate.add_subparsers(dest="migrate_verb", metavar="VERB")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dir", required=True, help="the prisma/migrations directory")
        parser.add_argument(
            "--database-url",
            default=os.environ.get("DATABASE_URL"),
            help="PostgreSQL URL (default: $DATABASE_URL); Prisma's ?schema= is honoured",
        )

    status = verbs.add_parser("status", help="compare the migrations directory with _prisma_migrations")
    common(status)
    status.set_defaults(func=cmd_status)

    deploy = verbs.add_parser("deploy", help="apply pending migrations, like `prisma migrate deploy`")
    common(deploy)
    deploy.add_argument("--lock-timeout-ms", type=int, default=5000, help="per-migration lock_timeout (0: none)")
    deploy.add_argument("--lock-retries", type=int, default=3, help="retries after a lock timeout")
    deploy.add_argument("--statement-timeout-ms", type=int, default=None, help="per-migration statement_timeout")
    deploy.set_defaults(func=cmd_deploy)

    resolve = verbs.add_parser("resolve", help="mark a failed migration rolled back, or a migration applied")
    common(resolve)
    which = resolve.add_mutually_exclusive_group(required=True)
    which.add_argument("--rolled-back", dest="rolled_back", metavar="NAME")
    which.add_argument("--applied", metavar="NAME")
    resolve.set_defaults(func=cmd_resolve)

    migrate.set_defaults(func=lambda _args: _usage(migrate))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _url(args: argparse.Namespace) -> str:
    if not args.database_url:
        raise ConfigError("no database URL: pass --database-url or set DATABASE_URL")
    return str(args.database_url)


def _error(exc: PrismaError) -> int:
    """Prisma's shape, on one reason line: `Error: P3009` then what went wrong."""
    print(f"Error: {exc.code}", file=sys.stderr)
    print(exc.reason, file=sys.stderr)
    return EXIT_FAILED


def _found(count: int, directory: str) -> str:
    if count == 0:
        return f"No migration found in {directory}"
    return f"{count} migration{'s' if count != 1 else ''} found in {directory}"


def cmd_status(args: argparse.Namespace) -> int:
    """Print pending / failed / edited migrations; exit 0 only when the database is up to date."""
    url = _url(args)
    try:
        status = NativeRunner(url).status(args.dir)
    except PrismaError as exc:
        return _error(exc)
    print(_found(len(status.local), args.dir))
    print()
    _print_status(status)
    return EXIT_OK if status.up_to_date else EXIT_FAILED


def _print_status(status: MigrationStatus) -> None:
    if status.pending:
        print(f"Following migration{'s' if len(status.pending) != 1 else ''} have not yet been applied:")
        for name in status.pending:
            print(name)
        print()
    if status.failed:
        names = list(dict.fromkeys(r.migration_name for r in status.failed))
        print(f"Following migration{'s' if len(names) != 1 else ''} have failed:")
        for row in status.failed:
            print(f"{row.migration_name} (started {row.started_at.isoformat(timespec='seconds')})")
        print()
        print("Once the database is fixed by hand, mark it with:")
        print(f"  migrate-bot migrate resolve --rolled-back {names[0]}   (the changes were rolled back)")
        print(f"  migrate-bot migrate resolve --applied {names[0]}       (the changes were completed)")
        print()
    if not status.table_exists and not status.local:
        print("The current database is not managed by Prisma Migrate.")
        return
    for name in status.missing_locally:
        print(f"Warning: migration `{name}` is applied in the database but missing locally.")
    for name in status.edited:
        print(f"Warning: migration `{name}` was modified after it was applied.")
    if status.up_to_date:
        print("Database schema is up to date!")


def cmd_deploy(args: argparse.Namespace) -> int:
    """Apply pending migrations, streaming progress lines; exit 1 with the Prisma error code on failure."""
    url = _url(args)
    try:
        runner = NativeRunner(
            url,
            lock_timeout_ms=args.lock_timeout_ms or None,
            lock_retries=args.lock_retries,
            statement_timeout_ms=args.statement_timeout_ms,
        )
        result = runner.deploy(args.dir, on_event=lambda line: print(line, flush=True))
    except PrismaError as exc:
        return _error(exc)
    print()
    if not result.applied:
        print("No pending migrations to apply.")
        return EXIT_OK
    print("The following migration(s) have been applied:")
    print()
    for applied in result.applied:
        print(f"  └─ {applied.name}/ ({applied.duration_s:.2f} s)")
    print()
    print("All migrations have been successfully applied.")
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    """Mark a migration rolled back or applied, exactly as `prisma migrate resolve` does."""
    url = _url(args)
    try:
        runner = NativeRunner(url)
        if args.applied:
            runner.resolve_applied(args.dir, args.applied)
            print(f"Migration {args.applied} marked as applied.")
        else:
            runner.resolve_rolled_back(args.dir, args.rolled_back)
            print(f"Migration {args.rolled_back} marked as rolled back.")
    except PrismaError as exc:
        return _error(exc)
    return EXIT_OK
