"""CLI verbs `serve` (the composition root: the Bolt app, its listeners and the background jobs) and `check-config`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bot.config import BotConfig, Settings, load_config
from bot.configcheck import EXIT_ERRORS, check, exit_code
from bot.edge import one_line
from bot.errors import ConfigError
from bot.redact import safe_url

log = logging.getLogger(__name__)

EXIT_NOT_STARTED = 1  # the port is taken, or Slack refused the Socket Mode connection: nothing was started
REDIS_BACKOFF_MAX_S = 30.0


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the bot (HTTP on /slack/events, or Socket Mode)")
    serve.add_argument("--config", metavar="PATH", default=None,
                       help="the environments file (default: $MIGRATE_BOT_CONFIG; one of them is required)")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port (default $PORT, else 3000)")
    serve.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode instead")
    serve.set_defaults(func=cmd_serve)

    check_parser = subparsers.add_parser(
        "check-config", help="check an environments file: one line per problem; exit 0 clean, 1 warnings only, "
                             "2 errors (serve refuses to start on errors)")
    check_parser.add_argument("path", nargs="?", default=None, metavar="PATH",
                              help="the environments file (default: $MIGRATE_BOT_CONFIG)")
    check_parser.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else Settings.from_environ(require_slack=False).require_config()
    config = load_config(path)  # a file that does not parse: one ConfigError line, exit 2 (bot.cli.main)
    findings = check(config, os.environ)
    for finding in findings:
        print(f"{path}: {finding.line()}")
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    if not findings:
        print(f"{path}: ok ({', '.join(config.environments)})")
    else:
        print(f"{path}: {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return exit_code(findings)


def _checked_config(path: Path) -> BotConfig | None:
    """The config, its warnings logged; None after printing each error (serve must not start on any)."""
    config = load_config(path)
    findings = check(config, os.environ)
    errors = [f for f in findings if f.level == "error"]
    if not errors:
        for finding in findings:
            log.warning("%s: %s", path, finding.line())
        return config
    for finding in errors:
        print(f"migrate-bot: {path}: {finding.line()}", file=sys.stderr)
    print(f"migrate-bot: not starting: {len(errors)} error{'s' * (len(errors) != 1)} in {path} "
          "(`migrate-bot check-config` lists them)", file=sys.stderr)
    return None


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _bind(host: str, port: int) -> socket.socket | str:
    """The listening socket, bound before anything else starts; or the one line saying why it cannot be."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot listen on {host}:{port}: the address does not resolve ({getattr(exc, 'strerror', None) or exc})"
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (another process holds it: stop it, or pass --port / set PORT)" if exc.errno == 98 else ""
        return f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}{hint}"
    sock.set_inheritable(True)
    return sock


def wait_for_redis(url: str, stop: threading.Event | None = None) -> None:
    """Block until Redis answers, naming its (redacted) URL once, retrying with exponential backoff."""
    from bot.store.runs import ping_problem

    problem = _fatal(url, ping_problem(url))
    if problem is None:
        return
    started, delay = time.monotonic(), 0.5
    log.warning("Redis at %s is not answering (%s); nothing is started until it does (retrying with backoff "
                "up to %.0f s)", safe_url(url), problem, REDIS_BACKOFF_MAX_S)
    stop = stop or threading.Event()
    while problem is not None:
        if stop.wait(delay):
            return
        delay = min(delay * 2, REDIS_BACKOFF_MAX_S)
        problem = _fatal(url, ping_problem(url))
    log.info("Redis at %s answers after %.0f s; starting", safe_url(url), time.monotonic() - started)


# Answers no wait will change: Redis refused the credentials (AUTH / ACL) or the URL's database number. An outage,
# a timeout or a server still loading its data (BusyLoadingError) is waited out instead.
_REFUSALS = {"AuthenticationError": "refused the credentials: fix the password (or user) in REDIS_URL",
             "AuthenticationWrongNumberOfArgsError": "refused the credentials: fix the password (or user) in REDIS_URL",
             "ResponseError": "refused the connection's set-up (e.g. a database number it does not have): fix "
                              "REDIS_URL"}


def _fatal(url: str, problem: str | None) -> str | None:
    """``problem`` unless it is one no wait will change: then one ConfigError line (exit 2), nothing started."""
    if problem in _REFUSALS:
        raise ConfigError(f"Redis at {safe_url(url)} {_REFUSALS[problem]} ({problem})")
    return problem


def cmd_serve(args: argparse.Namespace) -> int:
    # 1. Every setting, before anything starts: environment variables, then the environments file and its checks.
    settings = Settings.from_environ(require_slack=True, socket_mode=args.socket_mode)
    port = args.port if args.port is not None else settings.port
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be a number from 1 to 65535, got {port}")
    path = settings.require_config(args.config)
    config = _checked_config(path)
    if config is None:
        return EXIT_ERRORS
    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the finally below
    # stop the background jobs (releasing the scheduler's leader lock) instead of dying mid-way.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # 2. The port, so a taken one is one line and nothing else has started.
    sock: socket.socket | None = None
    if not args.socket_mode:
        bound = _bind(args.host, port)
        if isinstance(bound, str):
            print(f"migrate-bot: {bound}", file=sys.stderr)
            return EXIT_NOT_STARTED
        sock = bound
    try:
        # 3. Redis: the bot keeps everything there, so nothing starts (no scheduler, no leader lock) until it answers.
        wait_for_redis(settings.redis_url)
        return _serve(args, settings, config, sock)
    finally:
        if sock is not None:
            sock.close()


def _serve(args: argparse.Namespace, settings: Settings, config: BotConfig, sock: socket.socket | None) -> int:
    # slack_bolt: only `serve` builds the Bolt app and its listeners, so the other verbs start fast
    import handlers
    from bot.app import build_bolt_app, build_deps
    from bot.integrations.pgcluster import sweep

    for base in {env.rehearsal.local_dir for env in config.environments.values()}:
        sweep(Path(base) if base else None)  # throwaway clusters a killed bot left behind
    # The composition root: the one place in bot/ that imports jobs/ (the job queue, the background jobs).
    from bot.store.connection import ServerWatch
    from jobs.runner import start_background_jobs
    from jobs.scheduler import queue_for

    deps = build_deps(settings, config, jobs=queue_for)
    redis_watch = ServerWatch(deps.store.redis, settings.redis_url)
    redis_watch.check()  # a Cluster node is refused here, before anything starts; AOF off is logged
    app = build_bolt_app(settings, deps, handlers.register)
    from bot.observability import metrics  # h15d: /metrics on a port of its own when METRICS_PORT says so

    metrics.start_own_listener(args.host)
    if sock is None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        assert settings.slack_app_token  # Settings.from_environ(socket_mode=True) refused without it
        handler = SocketModeHandler(app, settings.slack_app_token)
        try:
            handler.connect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # slack_sdk's SlackApiError (bot.cli does not import slack_sdk): its error code
            response = getattr(exc, "response", None)
            code = response.get("error") if response is not None and hasattr(response, "get") else None
            reason = f"apps.connections.open: {code}" if code else one_line(exc)
            print(f"migrate-bot: Slack refused the Socket Mode connection ({reason}): check SLACK_APP_TOKEN "
                  "(an app-level xapp- token with connections:write)", file=sys.stderr)
            return EXIT_NOT_STARTED
        background = start_background_jobs(deps)
        try:
            log.info("serving over Socket Mode")
            threading.Event().wait()
        finally:
            background.stop()
            handler.close()  # type: ignore[no-untyped-call]
        return 0
    import uvicorn

    # starlette and uvicorn: only HTTP serving needs them (not Socket Mode)
    from bot.server import build_asgi

    background = start_background_jobs(deps)
    try:
        host, port = sock.getsockname()[:2]
        log.info("serving on %s:%s", args.host if args.host in ("0.0.0.0", "::") else host, port)
        sys.stdout.flush()
        asgi = build_asgi(app, deps.store, max_body_bytes=config.limits.max_body_bytes,
                          redis_details=redis_watch.details)
        server = uvicorn.Server(uvicorn.Config(asgi, log_config=None, access_log=False, log_level="warning",
                                               timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
        return 0
    finally:
        background.stop()
