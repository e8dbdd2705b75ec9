"""The `migrate-bot lint DIR` command: review a Prisma migrations directory and gate on high findings."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bot.errors import BotError, ConfigError
from bot.integrations.postgres import Postgres
from bot.messages import statements
from bot.redact import redact

EXIT_CLEAN = 0
EXIT_HIGH = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes:
  0  no high findings
  1  at least one high finding (or squawk/the database failed while reviewing)
  2  usage or configuration error: missing directory, bad --database-url, squawk not installed

Without --database-url the risk is static (a rewrite under ACCESS EXCLUSIVE is high); with it, each
finding is weighed against the table's row count and size in that database (read-only queries).
"""


def register(subparsers: Any) -> None:
    """Add ``lint`` to the migrate-bot command line."""
    parser = subparsers.add_parser(
        "lint",
        help="review a Prisma migrations directory for locking and breaking changes",
        description="Review every migration in DIR with squawk and a lock analysis; show safe alternatives.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="prisma/migrations directory")
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL to read table sizes and catalog from")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("--timeouts-unset", action="store_true",
                        help="report squawk's lock/statement timeout rules (default: the bot sets timeouts)")
    parser.set_defaults(func=run_lint)


def _fail(message: str) -> int:
    print(f"migrate-bot lint: {redact(message)}", file=sys.stderr)
    return EXIT_USAGE


def run_lint(args: argparse.Namespace) -> int:
    """Run the review; exit codes as in EPILOG."""
    from bot.integrations.prisma.migrations import list_local_migrations
    from bot.safety.review import review_migrations

    directory = Path(args.directory)
    if not directory.is_dir():
        return _fail(f"{directory} is not a directory")
    try:
        migrations = list_local_migrations(directory)
    except BotError as exc:
        return _fail(str(exc))
    with ExitStack() as stack:
        conn = None
        if args.database_url:
            try:
                conn = stack.enter_context(Postgres(args.database_url).read_only_connection())
            except (BotError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return _fail(f"cannot connect with --database-url: {first}")
        try:
            review = review_migrations([(m.name, m.sql) for m in migrations], conn=conn,
                                       bot_sets_timeouts=not args.timeouts_unset)
        except ConfigError as exc:
            return _fail(str(exc))
    if args.format == "json":
        print(json.dumps(review.to_json(), indent=2))
    else:
        print(render_text(review))
    return EXIT_HIGH if review.has_high else EXIT_CLEAN


def render_text(review: Any) -> str:
    """One line per migration with its summary, then its findings indented."""
    lines: list[str] = []
    for migration in review.migrations:
        lines.append(migration.summary_line)
        for f in migration.findings:
            where = statements(f.statement_index) if f.statement_index is not None else "file"
            rules = f" [squawk: {', '.join(f.squawk_rules)}]" if f.squawk_rules and f.source == "analysis" else ""
            lines.append(f"  {f.level.upper():<6} {where} {f.message} ({f.category}){rules}")
            if f.why:
                lines.append(f"         why: {f.why}")
            if f.alternative:
                lines.append(f"         instead: {f.alternative}")
    lines.append(f"total: {review.summary()}")
    return "\n".join(lines)
