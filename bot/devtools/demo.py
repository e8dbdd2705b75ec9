"""`migrate-bot demo`: the whole runbook on this machine, with a terminal standing in for Slack."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

import httpx
import psycopg
import redis
import yaml
from psycopg import sql

from bot.config import DEFAULT_CONFIG_PATH
from bot.store.runs import reachable

if TYPE_CHECKING:
    from bot.devtools.demoapp import DemoApp

DEMO_USERS = [("U0ALICE", "alice"), ("U0BOB", "bob")]
DEMO_CHANNEL = "C0LOCAL"
DEMO_SECRET = "demo-signing-secret"
DEMO_TOKEN = "xoxb-demo-token"
DEMO_DB = "migrate_bot_demo"  # the default of `migrate-bot demo --database` (bot.cli.demo)
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]  # the repository (examples/ lives there)

# Every demo keeps its Redis keys under a prefix of its own, `demo:<unix time>-<6 hex>:`, so two demos at once
# (two clones, two terminals) never share a run lock, and a demo can remove exactly its own keys.
NAMESPACE = "demo:"
ALIVE_KEY = "demo:alive"  # under the prefix, with an expiry the running demo keeps renewing
DATABASE_KEY = "demo:database"  # under the prefix: the demo database's name, for `make clean` after a crash
ALIVE_TTL_S = 60


def new_prefix(namespace: str = NAMESPACE) -> str:
    return f"{namespace}{int(time.time())}-{secrets.token_hex(3)}:"


def _prefix_pattern(namespace: str) -> re.Pattern[str]:
    return re.compile(re.escape(namespace) + r"\d+-[0-9a-f]{6}:")


def made_by_demo(name: str, database: str) -> bool:
    """Whether ``name`` is the demo database or one the bot makes beside it from its name.

    The rollback's restore makes ``<db>_restored_<stamp>`` and keeps ``<db>_pre_restore_<stamp>`` aside
    (bot.runbook.steps.rollback); a restore on a separate server names its copy ``<db[:40]>_rehearsal_<6 hex>``
    (bot.backup.sandbox.scratch_name).
    """
    if name == database:
        return True
    if re.fullmatch(re.escape(database) + r"_(?:restored|pre_restore)_\d{8}_\d{6}", name):
        return True
    return re.fullmatch(re.escape(database[:40]) + r"_rehearsal_[0-9a-f]{6}", name) is not None


def _glob(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _delete_prefix(client: redis.Redis, prefix: str) -> int:
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=_glob(prefix) + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.delete(*batch))
            batch = []
    if batch:
        removed += int(client.delete(*batch))
    return removed


def drop_databases(admin_url: str, databases: Iterable[str], *, keep: Iterable[str] = ()) -> list[str]:
    """Drop every database made by a demo whose database is in ``databases`` (except ``keep``); their names."""
    bases = {d for d in databases if d}
    spared = set(keep)
    dropped: list[str] = []
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        names = [str(row[0]) for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")]
        for name in sorted(names):
            if name in spared or not any(made_by_demo(name, base) for base in bases):
                continue
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped


def remove_demo(redis_url: str | None, prefix: str, admin_url: str, database: str) -> list[str]:
    """Remove what one demo made: its databases, then its Redis keys (``redis_url`` None: nothing to remove)."""
    notes: list[str] = []
    try:
        dropped = drop_databases(admin_url, [database])
        notes.append(f"dropped database(s) {', '.join(dropped)}" if dropped else "no database to drop")
    except psycopg.Error as exc:
        notes.append(f"could not drop the demo databases ({str(exc).strip().splitlines()[0]}); "
                     "`make clean` tries again")
    if redis_url is not None:
        try:
            removed = _delete_prefix(redis.Redis.from_url(redis_url, socket_connect_timeout=2), prefix)
            notes.append(f"removed {removed} Redis key(s) under {prefix}")
        except redis.RedisError as exc:
            notes.append(f"could not remove the Redis keys under {prefix} ({exc}); `make clean` tries again")
    return notes


def clean_leftovers(redis_url: str, admin_url: str, *, databases: Iterable[str | None] = (DEMO_DB,),
                    namespace: str = NAMESPACE, out: TextIO = sys.stdout) -> None:
    """What earlier demos left behind: keys under a demo prefix, their databases and those of ``databases``.

    A demo still running (its alive key has not expired) is left alone, keys and database.
    """
    drop = {d for d in databases if d}
    keep: set[str] = set()
    pattern = _prefix_pattern(namespace)
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        prefixes = set()
        for key in client.scan_iter(match=_glob(namespace) + "*", count=1000):
            match = pattern.match(key.decode("utf-8", "replace"))
            if match:
                prefixes.add(match.group(0))
        removed = demos = 0
        for prefix in sorted(prefixes):
            recorded = client.get(prefix + DATABASE_KEY)
            name = recorded.decode("utf-8", "replace") if isinstance(recorded, bytes) else None
            if client.exists(prefix + ALIVE_KEY):
                keep.update([name] if name else [])
                print(f"  {prefix}* belongs to a demo that is still running: left alone", file=out)
                continue
            drop.update([name] if name else [])
            removed += _delete_prefix(client, prefix)
            demos += 1
        print(f"  removed {removed} Redis key(s) of {demos} earlier demo(s)", file=out)
    except redis.RedisError as exc:
        print(f"  Redis at {redis_url} is not reachable ({exc}): no keys removed", file=out)
    try:
        dropped = drop_databases(admin_url, drop, keep=keep)
        print(f"  dropped database(s) {', '.join(dropped)}" if dropped else "  no demo database to drop", file=out)
    except psycopg.Error as exc:
        print(f"  PostgreSQL is not reachable ({str(exc).strip().splitlines()[0]}): no database dropped", file=out)


class Heartbeat:
    """Marks a running demo in Redis (its database's name, and an alive key it renews) so `make clean` spares it."""

    def __init__(self, redis_url: str, prefix: str, database: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        self._prefix = prefix
        self._database = database
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="demo-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._client.set(self._prefix + ALIVE_KEY, str(os.getpid()), ex=ALIVE_TTL_S)
        self._client.set(self._prefix + DATABASE_KEY, self._database)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(ALIVE_TTL_S / 3):
            try:
                self._client.set(self._prefix + ALIVE_KEY, str(os.getpid()), ex=ALIVE_TTL_S)
            except redis.RedisError:
                pass  # the demo's own Redis went away; the console reports what that breaks

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextmanager
def _exit_on_hangup() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) leave through the normal exit, so the demo cleans up."""
    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def _slash_commands() -> list[str]:
    """The slash commands the app's manifest declares: any other is "not a valid command", as in Slack."""
    try:
        manifest = yaml.safe_load((ROOT / "manifest.yml").read_text("utf-8"))
        commands = [str(c["command"]) for c in manifest["features"]["slash_commands"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        commands = []
    return commands or ["/migrate"]


def prepare_database(admin_url: str, name: str = DEMO_DB, workdir: Path = Path(".demo")) -> str:
    """A fresh demo database with the first migration applied and a few users, so two are pending."""
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


RELEASE_COMMITS = [("Initial schema", 1, "v1.0.0"), ("Add counseling sessions", 2, None),
                   ("Add email verification", 3, "v1.1.0")]
"""The demo's release repository: (subject, how many example migrations the commit holds, its tag)."""


def _git(cwd: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Dana Dev", "GIT_AUTHOR_EMAIL": "dana@example.com",
           "GIT_COMMITTER_NAME": "Dana Dev", "GIT_COMMITTER_EMAIL": "dana@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def make_release_repo(workdir: Path) -> Path | None:
    """A bare git repository of the example migrations, one commit per migration (tags v1.0.0 and v1.1.0): what
    a team's repository looks like to the bot. None when git is not installed (the demo reads the folder then)."""
    if shutil.which("git") is None:
        return None
    bare, work = workdir / "release.git", workdir / "release-work"
    for old in (bare, work, workdir / "git-cache"):
        shutil.rmtree(old, ignore_errors=True)
    work.mkdir(parents=True)
    _git(workdir, "init", "--quiet", "--bare", "-b", "main", str(bare))
    _git(workdir, "init", "--quiet", "-b", "main", str(work))
    examples = ROOT / "examples" / "prisma" / "migrations"
    target = work / "prisma" / "migrations"
    target.mkdir(parents=True)
    shutil.copy(examples / "migration_lock.toml", target / "migration_lock.toml")
    migrations = sorted(examples.glob("2*"))
    for subject, count, tag in RELEASE_COMMITS:
        for folder in migrations[:count]:
            if not (target / folder.name).exists():
                shutil.copytree(folder, target / folder.name)
        _git(work, "add", "-A")
        _git(work, "commit", "--quiet", "-m", subject)
        if tag:
            _git(work, "tag", tag)
    _git(work, "push", "--quiet", str(bare), "main", "--tags")
    shutil.rmtree(work, ignore_errors=True)
    return bare


def demo_config(workdir: Path, release: Path | None) -> Path:
    """The embedded defaults, with the `local` environment reading its migrations from the demo's repository."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text("utf-8"))
    if release is not None:
        config["environments"]["local"]["migrate"]["source"] = {"git": {
            "url": release.resolve().as_uri(), "path": "prisma/migrations", "ref_default": "main",
            "cache_dir": str(workdir / "git-cache")}}
    path = workdir / "environments.yml"
    path.write_text("# Written by `migrate-bot demo` from bot/defaults/environments.yml.\n"
                    + yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo until `quit`, end of input, Ctrl-C or SIGTERM; then remove its keys and databases."""
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.database):
        raise SystemExit(f"migrate-bot demo: --database must be a plain lowercase name, not {args.database!r}")
    out = sys.stdout
    prefix = new_prefix()
    with _exit_on_hangup(), ExitStack() as stack:
        throwaway = not reachable(args.redis_url)
        redis_url = _throwaway_redis(stack, workdir) if throwaway else args.redis_url

        def clean_up() -> None:
            # A throwaway redis-server keeps nothing: its keys go with it.
            for note in remove_demo(None if throwaway else redis_url, prefix, args.admin_url, args.database):
                print(f"migrate-bot demo: {note}", file=out)

        stack.callback(clean_up)  # runs last: after the bot, the app and the Slack stand-in have stopped
        stack.callback(Heartbeat(redis_url, prefix, args.database).start().stop)
        return _run(args, stack, workdir, redis_url, prefix, out)


def _run(args: argparse.Namespace, stack: ExitStack, workdir: Path, redis_url: str, prefix: str,
         out: TextIO) -> int:
    from bot.devtools.demoapp import DemoApp
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.console import Console
    from bot.devtools.slack.server import FakeSlack

    database_url = prepare_database(args.admin_url, args.database, workdir)
    release = make_release_repo(workdir)
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
        "MIGRATE_BOT_CONFIG": str(demo_config(workdir, release)),
        "MIGRATE_BOT_KEY_PREFIX": prefix,
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
        try:
            bot.wait(10)
        except subprocess.TimeoutExpired:
            bot.kill()
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
    print(f"  Redis key prefix {prefix} — the demo removes its keys and databases when it ends "
          "(`make clean` removes leftovers).", file=out)
    if release is not None:
        print(f"  release repository {release} (tags v1.0.0, v1.1.0; main): `/migrate local v1.1.0` pins a run "
              "to a tag, `/migrate local` to main", file=out)
    else:
        print("  git is not installed: runs read examples/prisma/migrations instead of a release repository",
              file=out)
    print("  Type `/migrate local` to start, a number to click a button, `user bob` to switch person, "
          "`help`, `quit`.", file=out)
    sender = SlackSender(bot_url + "/slack/events", DEMO_SECRET, fake=fake)
    stack.callback(sender.close)
    console = Console(fake, sender, channel_id=DEMO_CHANNEL, users=DEMO_USERS, input=sys.stdin, output=out,
                      commands=_slash_commands(), files_dir=workdir / "files",
                      extra={"app": (APP_HELP, lambda rest: _app_command(app, rest))})
    try:
        return console.run()
    except KeyboardInterrupt:
        print("\nmigrate-bot demo: interrupted", file=out)
        return 130


APP_HELP = ("app [break <path> | fix]  the demo app: its state (maintenance mode, a broken path), or make one "
            "path answer 500 / all paths work again")


def _app_command(app: DemoApp, rest: str) -> str:
    """`app`: what the demo app is doing; `app break /counsel` makes that path fail (a bad release), `app fix`."""
    word, _, path = rest.partition(" ")
    if word == "break":
        if not path.startswith("/"):
            raise ValueError("app break needs a path, e.g. `app break /counsel`")
        app.state.fail_path = path.strip()
    elif word == "fix":
        app.state.fail_path = None
    elif word:
        raise ValueError(f"unknown app command {rest!r}: `app`, `app break <path>` or `app fix`")
    state = app.state
    return (f"demo app: maintenance mode {'ON (503 to users)' if state.maintenance else 'off'}; "
            + (f"{state.fail_path} answers 500" if state.fail_path else "every path works"))


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.devtools.demo clean`: remove what earlier demos left in Redis and PostgreSQL."""
    parser = argparse.ArgumentParser(prog="python -m bot.devtools.demo", description=main.__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    clean = verbs.add_parser("clean", help="remove the keys and databases of demos that are no longer running")
    clean.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    clean.add_argument("--admin-url", default=os.environ.get("DEMO_ADMIN_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args(argv)
    clean_leftovers(args.redis_url, args.admin_url, databases=[DEMO_DB, os.environ.get("DEMO_DATABASE")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
