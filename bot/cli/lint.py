"""The `migrate-bot lint DIR` command: review a Prisma migrations directory and gate on high findings."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bot.errors import BotError, ConfigError
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

A .squawk.toml next to the migrations (or in a folder above, up to the repository root) is honoured:
excluded_rules, included_rules, excluded_paths and pg_version apply to squawk; the review names the file.
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
                        help="report squawk's lock/statement timeout rules (default: the bot sets lock_timeout)")
    parser.add_argument("--statement-timeout-ms", type=int, default=None, metavar="MS",
                        help="the statement_timeout the runner sets (migrate.statement_timeout_ms); without it "
                             "squawk's require-statement-timeout rule is reported")
    parser.set_defaults(func=run_lint)


def _fail(message: str) -> int:
    print(f"migrate-bot lint: {redact(message)}", file=sys.stderr)
    return EXIT_USAGE


def run_lint(args: argparse.Namespace) -> int:
    """Run the review; exit codes as in EPILOG."""
    # Loaded here, not at import: `migrate-bot --help` must not pay for psycopg, pglast and the review.
    from bot.integrations.prisma.migrations import list_local_migrations
    from bot.integrations.squawk import find_squawk_config, load_squawk_config
    from bot.safety.review import review_migrations

    directory = Path(args.directory)
    if not directory.is_dir():
        return _fail(f"{directory} is not a directory")
    if args.statement_timeout_ms is not None and args.statement_timeout_ms < 0:
        return _fail("--statement-timeout-ms must be 0 or more")
    try:
        migrations = list_local_migrations(directory)
        found = find_squawk_config(directory)
        squawk_config = load_squawk_config(found, directory) if found is not None else None
    except BotError as exc:
        return _fail(str(exc))
    with ExitStack() as stack:
        conn = None
        if args.database_url:
            from bot.integrations.postgres import Postgres  # psycopg: only with a database

            try:
                conn = stack.enter_context(Postgres(args.database_url).read_only_connection())
            except (BotError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return _fail(f"cannot connect with --database-url: {first}")
        try:
            review = review_migrations([(m.name, m.sql) for m in migrations], conn=conn,
                                       bot_sets_timeouts=not args.timeouts_unset,
                                       statement_timeout_ms=args.statement_timeout_ms or None,
                                       squawk_config=squawk_config)
        except ConfigError as exc:
            return _fail(str(exc))
    if args.format == "json":
        # Compact: with indent= json falls back to its pure-Python encoder (0.1 s for 400 migrations).
        print(json.dumps(review.to_json(), separators=(",", ":")))
    else:
        print(render_text(review))
    return EXIT_HIGH if review.has_high else EXIT_CLEAN


def render_text(review: Any) -> str:
    """One line per migration with its summary, then its findings indented; the squawk config and timeouts last."""
    from bot.messages import statements

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
    if review.squawk_config:
        lines.append(review.squawk_config)
    if review.timeouts:
        lines.append(f"timeouts: {review.timeouts}")
    lines.append(f"total: {review.summary()}")
    return "\n".join(lines)
