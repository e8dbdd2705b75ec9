"""The `migrate-bot` command line: serve the bot, and the CLI twins of its Slack commands."""

from __future__ import annotations

import argparse
import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads this name the same way)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Only argparse is loaded before the arguments are parsed: `migrate-bot --help` costs little more than Python's
# own start-up. logging, the redaction filter and each command's module come after.

# Each module listed here exposes ``register(subparsers)``; its parsers set ``func(args) -> int``.
_COMMAND_MODULES = [
    "bot.cli.serve",
    "bot.cli.runs",
    "bot.cli.demo",
    "bot.cli.migrate",
    "bot.cli.lint",
]
# Every command: the module that registers it and its one-line help as that module words it (tests/test_safety_cli
# keeps the two equal). `migrate-bot --help` prints this table and `migrate-bot CMD` imports CMD's module only, so
# neither pays for the bot's other imports (Slack, Redis, pydantic, psycopg: ~1 CPU-second at start-up).
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("bot.cli.serve", "run the bot (HTTP on /slack/events, or Socket Mode)"),
    "check-config": ("bot.cli.serve", "check an environments file: one line per problem; exit 0 clean, 1 warnings only, "
                                      "2 errors (serve refuses to start on errors)"),
    "status": ("bot.cli.runs", "show runs from Redis (works without Slack)"),
    "cancel": ("bot.cli.runs", "cancel a run from the command line (audited as cli:<os user> as <@U…>)"),
    "timeline": ("bot.cli.runs", "print a run's post-mortem timeline (Markdown) from Redis"),
    "demo": ("bot.cli.demo", "run the whole runbook locally in a terminal (no Slack account)"),
    "migrate": ("bot.cli.migrate", "Prisma migrations: status, deploy, resolve"),
    "lint": ("bot.cli.lint", "review a Prisma migrations directory for locking and breaking changes"),
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _top_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="migrate-bot",
        description="Slack chat-ops bot for production database migrations.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def overview_parser() -> argparse.ArgumentParser:
    """The top-level parser for ``--help`` (or no command): every command's name and help, nothing imported."""
    parser, subparsers = _top_parser()
    for command, (_module, text) in COMMANDS.items():
        subparsers.add_parser(command, help=text)
    return parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only`` (a command name), just the commands of the module that registers it."""
    parser, subparsers = _top_parser()
    for name in [COMMANDS[only][0]] if only in COMMANDS else _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    if command is None:
        parser = overview_parser()
    else:
        parser = build_parser(only=command)  # an unknown command gets the full parser's usage error
    args = parser.parse_args(arguments)
    import logging
    import os

    from bot.errors import ConfigError
    from bot.observability import settings as observability

    # Logging (text, or JSON lines with LOG_FORMAT=json; redacted either way), Sentry, where /metrics goes.
    try:
        observability.apply(os.environ, verbose=args.verbose)
    except ConfigError as exc:
        print(f"migrate-bot: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    for noisy in ("httpx", "httpcore", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last net: one line, never a traceback with secrets
        from bot.edge import operator_text  # loaded only when needed: start-up stays light

        print(f"migrate-bot: {operator_text(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
