"""CLI verbs `serve`, `status` and `cancel`: the same operations as Slack, for when Slack itself is down."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bot.config import BotConfig, Settings, load_config
from bot.errors import ConfigError
from bot.operations import Deps, cancel_run, status
from bot.runs import RunStore, connect

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the bot (HTTP on /slack/events, or Socket Mode)")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port (default $PORT, else 3000)")
    serve.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode instead")
    serve.set_defaults(func=cmd_serve)

    st = subparsers.add_parser("status", help="show runs from Redis (works without Slack)")
    st.add_argument("query", nargs="?", help="an environment name or a run id")
    st.set_defaults(func=cmd_status)

    cancel = subparsers.add_parser("cancel", help="cancel a run from the command line (audited as cli:<user>)")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="", help="why (shown in the audit trail)")
    cancel.set_defaults(func=cmd_cancel)

    check = subparsers.add_parser("check-config", help="validate the environments file and exit")
    check.set_defaults(func=cmd_check_config)


def _settings_and_config(require_slack: bool) -> tuple[Settings, BotConfig]:
    settings = Settings.from_environ(require_slack=require_slack)
    return settings, load_config(settings.config_path)


def cli_operator() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = os.environ.get("USER", "unknown")
    return f"cli:{name}"


def _offline_deps(settings: Settings, config: BotConfig) -> Deps:
    """Redis only; Slack is updated as well when a token is configured (failures are only logged)."""
    store = RunStore(connect(settings.redis_url), prefix=settings.key_prefix)
    slack = publisher = None
    if settings.slack_bot_token:
        from bot.integrations.slack import Slack, make_client
        from bot.publisher import Publisher

        slack = Slack(make_client(settings.slack_bot_token, settings.slack_api_url, timeout_s=5))
        publisher = Publisher(store, slack)
    return Deps(config=config, store=store, slack=slack, publisher=publisher)


def cmd_status(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(require_slack=False)
    deps = _offline_deps(settings, config)
    print(status(deps, args.query))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(require_slack=False)
    deps = _offline_deps(settings, config)
    reply = cancel_run(deps, run_id=args.run_id, user=cli_operator(), reason=args.reason)
    deps.publish(args.run_id)
    text = reply.text.replace("`", "")
    print(text)
    return 1 if text.startswith("🚫") else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(require_slack=False)
    config = load_config(settings.config_path)
    print(f"{settings.config_path}: ok ({', '.join(config.environments)})")
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(require_slack=True)
    from bot.app import build_bolt_app, build_deps
    from bot.integrations.pgcluster import sweep

    for base in {env.rehearsal.local_dir for env in config.environments.values()}:
        sweep(Path(base) if base else None)  # throwaway clusters a killed bot left behind
    deps = build_deps(settings, config)
    app = build_bolt_app(settings, deps)
    from jobs.runner import start_background_jobs

    background = start_background_jobs(deps)
    try:
        if args.socket_mode:
            if not settings.slack_app_token:
                raise ConfigError("SLACK_APP_TOKEN is not set (an app-level xapp- token with connections:write)")
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("serving over Socket Mode")
            SocketModeHandler(app, settings.slack_app_token).start()
            return 0
        import uvicorn

        from bot.server import build_asgi

        port = args.port if args.port is not None else settings.port
        # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the finally
        # below stop the background jobs (releasing the scheduler's leader lock) instead of dying mid-way.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        log.info("serving on %s:%s", args.host, port)
        sys.stdout.flush()
        uvicorn.run(build_asgi(app, deps.store), host=args.host, port=port, log_config=None,
                    access_log=False, log_level="warning", timeout_graceful_shutdown=5)
        return 0
    finally:
        background.stop()
