"""`migrate-bot demo`: the whole runbook on this machine, with a terminal standing in for Slack."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bot.config import DEFAULT_CONFIG_PATH
from bot.store.runs import reachable

DEMO_USERS = [("U0ALICE", "alice"), ("U0BOB", "bob")]
DEMO_CHANNEL = "C0LOCAL"
DEMO_SECRET = "demo-signing-secret"
DEMO_TOKEN = "xoxb-demo-token"
DEMO_DB = "migrate_bot_demo"  # the default of `migrate-bot demo --database` (bot.cli.demo)
ROOT = Path(__file__).resolve().parents[2]  # the repository (examples/ lives there)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _throwaway_redis(stack: ExitStack, workdir: Path) -> str:
    """Start a private redis-server when none is reachable (the demo must work on a bare machine)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("migrate-bot demo: Redis is not reachable and redis-server is not installed "
                         "(run `make demo`, which installs it, or `apt-get install redis-server`).")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(proc.terminate)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if reachable(url):
            return url
        time.sleep(0.1)
    raise SystemExit("migrate-bot demo: the throwaway redis-server did not start")


def prepare_database(admin_url: str, name: str = DEMO_DB, workdir: Path = Path(".demo")) -> str:
    """A fresh demo database with the first migration applied and a few users, so two are pending."""
    import psycopg

    from bot.integrations.prisma.native import NativeRunner

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    staging = workdir / "first-migration"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    first = sorted((ROOT / "examples" / "prisma" / "migrations").glob("2*"))[0]
    shutil.copytree(first, staging / first.name)
    NativeRunner(url).deploy(staging)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(3):
            conn.execute('INSERT INTO "User"(id, email, "passwordHash") VALUES (%s, %s, %s)',
                         (f"u{i}", f"user{i}@example.com", "x"))
    return url


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.devtools.demoapp import DemoApp
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.console import Console
    from bot.devtools.slack.server import FakeSlack

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    with ExitStack() as stack:
        redis_url = args.redis_url if reachable(args.redis_url) else _throwaway_redis(stack, workdir)
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.database):
            raise SystemExit(f"migrate-bot demo: --database must be a plain lowercase name, not {args.database!r}")
        database_url = prepare_database(args.admin_url, args.database, workdir)
        maintenance_token = "demo-maintenance-token"
        app = DemoApp(database_url=database_url, maintenance_token=maintenance_token).start()
        stack.callback(app.stop)
        fake = FakeSlack(token=DEMO_TOKEN).start()
        stack.callback(fake.stop)
        for user_id, name in DEMO_USERS:
            fake.add_user(user_id, name)
        fake.add_channel(DEMO_CHANNEL, "db-migrations")
        port = _free_port()
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": DEMO_TOKEN,
            "SLACK_SIGNING_SECRET": DEMO_SECRET,
            "SLACK_API_URL": fake.base_url,
            "REDIS_URL": redis_url,
            "MIGRATE_BOT_CONFIG": str(DEFAULT_CONFIG_PATH),
            # Two demos at once (two clones, two terminals) must not share a run lock: a random prefix each.
            "MIGRATE_BOT_KEY_PREFIX": f"demo:{int(time.time())}-{secrets.token_hex(3)}:",
            "DEMO_DATABASE_URL": database_url,
            "DEMO_BACKUP_DIR": str(workdir / "backups"),
            "DEMO_APP_URL": app.base_url.rstrip("/"),
            "DEMO_MAINTENANCE_TOKEN": maintenance_token,
            "DEMO_MIGRATIONS_DIR": str(ROOT / "examples" / "prisma" / "migrations"),
            "PYTHONUNBUFFERED": "1",
        }
        log_file = open(workdir / "bot.log", "ab")  # noqa: SIM115 - closed by the stack
        stack.callback(log_file.close)
        bot = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log_file, stderr=subprocess.STDOUT)
        def stop_bot() -> None:
            bot.terminate()
            bot.wait(10)

        stack.callback(stop_bot)
        bot_url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if bot.poll() is not None:
                raise SystemExit(f"migrate-bot demo: the bot exited early; see {workdir / 'bot.log'}")
            try:
                httpx.get(bot_url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print("migrate-bot demo — a terminal stands in for Slack; every action is a signed HTTP request.", file=out)
        print(f"  database {args.database} (2 migrations pending), demo app {app.base_url}, bot {bot_url}", file=out)
        print("  Type `/migrate local` to start, a number to click a button, `user bob` to switch person, "
              "`help`, `quit`.", file=out)
        sender = SlackSender(bot_url + "/slack/events", DEMO_SECRET, fake=fake)
        Console(fake, sender, channel_id=DEMO_CHANNEL, users=DEMO_USERS, input=sys.stdin, output=out).run()
    return 0
