"""CLI verbs `status`, `cancel` and `timeline`: the same operations as Slack, for when Slack itself is down."""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from typing import Any

from bot.config import BotConfig, Settings, load_config
from bot.context import Deps, authorize, readable_environments
from bot.errors import NotAllowed
from bot.integrations.slack import Slack, make_client
from bot.redact import redact
from bot.runbook.access import CLI, cli_actor, cli_identity
from bot.runbook.operations import cancel_run, status
from bot.runbook.publisher import Publisher
from bot.runbook.rules import Run
from bot.runbook.timeline import timeline_for
from bot.store.runs import RunStore, connect


def register(subparsers: Any) -> None:
    st = subparsers.add_parser("status", help="show runs from Redis (works without Slack)")
    st.add_argument("query", nargs="?", help="an environment name or a run id")
    add_identity(st)
    st.set_defaults(func=cmd_status)

    cancel = subparsers.add_parser("cancel", help="cancel a run from the command line "
                                   "(audited as cli:<os user> as <@U…>)")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="", help="why (shown in the audit trail)")
    add_identity(cancel)
    cancel.set_defaults(func=cmd_cancel)

    timeline = subparsers.add_parser("timeline", help="print a run's post-mortem timeline (Markdown) from Redis")
    timeline.add_argument("run_id")
    timeline.add_argument("--output", help="write to this file instead of stdout")
    add_identity(timeline)
    timeline.set_defaults(func=cmd_timeline)


def _settings_and_config(require_slack: bool) -> tuple[Settings, BotConfig]:
    settings = Settings.from_environ(require_slack=require_slack)
    return settings, load_config(settings.require_config())


def add_identity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="as_user", metavar="U…", default=None,
                        help="the Slack user to act as, checked against the environment's allow-list "
                             "(default: this OS user's entry in cli_operators)")


def os_user() -> str:
    """The account running the command, from the process's user id (not $LOGNAME/$USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, OSError):
        return f"uid{os.geteuid()}"


def cli_operator(config: BotConfig, claimed: str | None) -> str:
    """The actor the command line acts as, `cli:<os user> as <@U…>`; NotAllowed when it has no Slack identity."""
    name = os_user()
    who, problem = cli_identity(name, config.cli_operators, claimed)
    if who is None:
        raise NotAllowed(f"refused: {problem} Nothing was changed.")
    return cli_actor(name, who)


def refused(deps: Deps, command: str, actor: str, *, env_name: str | None, run: Run | None = None) -> bool:
    """Check the command's permission (bot.runbook.access.CLI); print the refusal and say so when it is not held."""
    text = authorize(deps, CLI[command], actor, env_name=env_name, run=run)
    if text:
        print(f"migrate-bot: {text.removeprefix('🚫 ').replace('`', '')}", file=sys.stderr)
    return text is not None


def _offline_deps(settings: Settings, config: BotConfig) -> Deps:
    """Redis only; Slack is updated as well when a token is configured (failures are only logged)."""
    store = RunStore(connect(settings.redis_url), prefix=settings.key_prefix,
                     retention_s=config.retention_days * 86400)
    slack = publisher = None
    if settings.slack_bot_token:
        slack = Slack(make_client(settings.slack_bot_token, settings.slack_api_url, timeout_s=5))
        publisher = Publisher(store, slack)
    return Deps(config=config, store=store, slack=slack, publisher=publisher)


def cmd_status(args: argparse.Namespace) -> int:
    """The runs the operator's Slack identity may read, as `/migrate status` shows them to that user."""
    settings, config = _settings_and_config(require_slack=False)
    actor = cli_operator(config, args.as_user)
    deps = _offline_deps(settings, config)
    envs = None
    if args.query and config.environment(args.query) is None:
        if refused(deps, "status", actor, env_name=deps.store.get(args.query).env):
            return 1
    elif args.query:
        if refused(deps, "status", actor, env_name=args.query):
            return 1
    else:
        envs = readable_environments(deps, actor)
        if not envs and refused(deps, "status", actor, env_name=None):
            return 1
    print(redact(status(deps, args.query, envs=envs, for_slack=False)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(require_slack=False)
    actor = cli_operator(config, args.as_user)
    deps = _offline_deps(settings, config)
    run = deps.store.get(args.run_id)
    if refused(deps, "cancel", actor, env_name=run.env, run=run):
        return 1
    reply = cancel_run(deps, run_id=args.run_id, user=actor, reason=args.reason)
    deps.publish(args.run_id)
    text = reply.text.replace("`", "")
    print(text)
    return 1 if text.startswith("🚫") else 0


def cmd_timeline(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(require_slack=False)
    actor = cli_operator(config, args.as_user)
    deps = _offline_deps(settings, config)
    if refused(deps, "timeline", actor, env_name=deps.store.get(args.run_id).env):
        return 1
    text = timeline_for(deps, args.run_id)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(text, end="")
    return 0
