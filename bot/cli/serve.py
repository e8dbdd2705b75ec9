"""CLI verbs `serve` (the composition root: the Bolt app, its listeners and the background jobs) and `check-config`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from bot.config import Settings, load_config
from bot.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the bot (HTTP on /slack/events, or Socket Mode)")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port (default $PORT, else 3000)")
    serve.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode instead")
    serve.set_defaults(func=cmd_serve)

    check = subparsers.add_parser("check-config", help="validate the environments file and exit")
    check.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(require_slack=False)
    config = load_config(settings.config_path)
    print(f"{settings.config_path}: ok ({', '.join(config.environments)})")
    return 0


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(require_slack=True)
    config = load_config(settings.config_path)
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
    background = start_background_jobs(deps)
    try:
        if args.socket_mode:
            if not settings.slack_app_token:
                raise ConfigError("SLACK_APP_TOKEN is not set (an app-level xapp- token with connections:write)")
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("serving over Socket Mode")
            SocketModeHandler(app, settings.slack_app_token).start()  # type: ignore[no-untyped-call]  # slack_bolt: untyped
            return 0
        import uvicorn

        # starlette and uvicorn: only HTTP serving needs them (not Socket Mode)
        from bot.server import build_asgi

        port = args.port if args.port is not None else settings.port
        # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the finally
        # below stop the background jobs instead of dying mid-way.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        log.info("serving on %s:%s", args.host, port)
        sys.stdout.flush()
        asgi = build_asgi(app, deps.store, max_body_bytes=config.limits.max_body_bytes,
                          redis_details=redis_watch.details)
        uvicorn.run(asgi, host=args.host, port=port, log_config=None, access_log=False, log_level="warning",
                    timeout_graceful_shutdown=5)
        return 0
    finally:
        background.stop()
