"""The `migrate-bot demo` verb: the only product module that reaches into bot.devtools (absent from the image)."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from bot.errors import ConfigError

DEMO_DB = "migrate_bot_demo"


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run the whole runbook locally in a terminal (no Slack account)")
    demo.add_argument("--admin-url", default=os.environ.get("DEMO_ADMIN_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"),
                      help="a PostgreSQL URL with CREATE DATABASE rights (the demo database is made next to it)")
    demo.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    demo.add_argument("--workdir", default=".demo", help="where backups and logs go (default .demo)")
    demo.add_argument("--database", default=os.environ.get("DEMO_DATABASE", DEMO_DB),
                      help=f"name of the demo database, dropped and made afresh (default {DEMO_DB})")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        # Loaded by name: the development tools are left out of the production image on purpose.
        demo = importlib.import_module("bot.devtools.demo")
    except ModuleNotFoundError:
        raise ConfigError("the demo is not part of this installation (the image leaves out development tools); "
                          "run `make demo` from a clone of the repository") from None
    return int(demo.cmd_demo(args))
