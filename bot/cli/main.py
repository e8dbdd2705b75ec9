"""The `migrate-bot` command line: serve the bot, and the CLI twins of its Slack commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from bot.edge import operator_text
from bot.errors import ConfigError
from bot.observability import settings as observability

# Each module listed here exposes ``register(subparsers)``; its parsers set ``func(args) -> int``.
_COMMAND_MODULES = [
    "bot.cli.serve",
    "bot.cli.runs",
    "bot.cli.demo",
    "bot.cli.migrate",
    "bot.cli.lint",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migrate-bot",
        description="Slack chat-ops bot for production database migrations.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Logging (text, or JSON lines with LOG_FORMAT=json; redacted either way), Sentry, where /metrics goes.
    try:
        observability.apply(os.environ, verbose=args.verbose)
    except ConfigError as exc:
        print(f"migrate-bot: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    for noisy in ("httpx", "httpcore", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Bolt warns that `token` is unused when a client is given: we give it one on purpose (retry handlers).
    logging.getLogger("slack_bolt.App").setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last net: one line, never a traceback with secrets
        print(f"migrate-bot: {operator_text(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
