"""Who may do what: one table naming the permission of every button, form, `/migrate` verb and CLI command."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.config import EnvironmentConfig

# The permissions, from the widest to the narrowest.
ANYONE = "anyone"
"""Harmless and tied to no environment: help, usage, the bot's own host commands (serve, check-config, demo)."""
LOCAL = "local"
"""Acts only on what the caller hands over (a migrations directory, a database URL); touches no run or window."""
VIEWER = "viewer"
"""Reads an environment: its requesters and approvers, plus its `viewers` (by default its on-call)."""
MANAGER = "manager"
"""The environment's requesters and approvers (cancel a run, schedule or change a window)."""
REQUESTER = "requester"
APPROVER = "approver"
OPERATOR = "operator"
"""The run's requester or an approver of its environment: everything that moves a run forward."""

PERMISSIONS = (ANYONE, LOCAL, VIEWER, MANAGER, REQUESTER, APPROVER, OPERATOR)


@dataclass(frozen=True)
class Rule:
    """The permission an entry point needs, the audit action a refusal is recorded as, and what it does."""

    permission: str
    audit: str
    what: str


# Buttons (block_actions), by action_id; the first pattern that matches the whole id decides.
ACTIONS: list[tuple[re.Pattern[str], Rule]] = [(re.compile(pattern), rule) for pattern, rule in [
    (r"checklist:.+", Rule(OPERATOR, "checklist.confirm", "tick the checklist")),
    (r"approve", Rule(APPROVER, "run.approve", "approve a run")),
    (r"cancel", Rule(MANAGER, "run.cancel", "cancel this run")),
    (r"step_run:.+", Rule(OPERATOR, "step.start", "run steps")),
    (r"step_skip:.+", Rule(OPERATOR, "step.skip", "skip steps")),
    (r"step_done:.+", Rule(OPERATOR, "step.mark_done", "mark steps done")),
    (r"waive", Rule(APPROVER, "finding.waive", "waive findings")),
    (r"rollback:restore", Rule(OPERATOR, "rollback.request", "request a restore")),
    (r"rollback:.+", Rule(OPERATOR, "rollback.request", "roll back")),
    (r"rollback_confirm", Rule(APPROVER, "rollback.approve", "confirm a restore as its second approver")),
    (r"rollback_withdraw", Rule(OPERATOR, "rollback.withdraw", "withdraw a restore request")),
    (r"monitor_refresh", Rule(OPERATOR, "monitoring.refresh", "refresh the readings")),
    (r"proceed_anyway", Rule(OPERATOR, "step.proceed_anyway", "override the pre-flight hold")),
    (r"finish", Rule(OPERATOR, "run.finish", "close the run")),
    (r"rehearse", Rule(OPERATOR, "rehearsal.start", "rehearse the migrations again")),
    (r"window_reschedule:.+", Rule(MANAGER, "window.reschedule", "schedule or change its maintenance windows")),
    (r"window_cancel:.+", Rule(MANAGER, "window.cancel", "schedule or change its maintenance windows")),
    (r"window_approver:.+", Rule(APPROVER, "window.approver", "confirm a window")),
]]

# Modal submissions (view_submission), by callback_id.
VIEWS: dict[str, Rule] = {
    "waive_findings": Rule(APPROVER, "finding.waive", "waive findings"),
    "restore_request": Rule(OPERATOR, "rollback.request", "request a restore"),
    "window_schedule": Rule(MANAGER, "window.schedule", "schedule or change its maintenance windows"),
    "window_reschedule": Rule(MANAGER, "window.reschedule", "schedule or change its maintenance windows"),
}

# Events the bot subscribes to. App Home is anyone's tab; what it shows is filtered by VIEWER per environment.
EVENTS: dict[str, Rule] = {
    "app_home_opened": Rule(ANYONE, "home.open", "open the App Home"),
}

# `/migrate <verb>`; ENV_VERB stands for `/migrate <env>` (start a run).
ENV_VERB = "<env>"
VERBS: dict[str, Rule] = {
    "help": Rule(ANYONE, "help", "read the usage"),
    ENV_VERB: Rule(REQUESTER, "run.start", "start a run"),
    "status": Rule(VIEWER, "run.status", "see its runs"),
    "cancel": Rule(MANAGER, "run.cancel", "cancel this run"),
    "check": Rule(VIEWER, "env.check", "run its pre-migration check"),
    "lint": Rule(VIEWER, "env.lint", "review its pending migrations"),
    "timeline": Rule(VIEWER, "run.timeline", "read a run's timeline"),
    "schedule": Rule(MANAGER, "window.schedule", "schedule or change its maintenance windows"),
    "windows": Rule(VIEWER, "window.list", "see its maintenance windows"),
    "windows cancel": Rule(MANAGER, "window.cancel", "schedule or change its maintenance windows"),
    "windows reschedule": Rule(MANAGER, "window.reschedule", "schedule or change its maintenance windows"),
}

# `migrate-bot <command>`: the CLI acts as the Slack user its operator is mapped to (see cli_actor).
CLI: dict[str, Rule] = {
    "serve": Rule(ANYONE, "serve", "serve the bot"),
    "check-config": Rule(ANYONE, "check-config", "validate the configuration"),
    "demo": Rule(ANYONE, "demo", "run the local demo"),
    "lint": Rule(LOCAL, "lint", "review a migrations directory"),
    "migrate": Rule(LOCAL, "migrate", "show Prisma usage"),
    "migrate status": Rule(LOCAL, "migrate.status", "read a database's migration status"),
    "migrate deploy": Rule(LOCAL, "migrate.deploy", "apply migrations to a database URL"),
    "migrate resolve": Rule(LOCAL, "migrate.resolve", "mark a migration in a database URL"),
    "status": Rule(VIEWER, "run.status", "see its runs"),
    "timeline": Rule(VIEWER, "run.timeline", "read a run's timeline"),
    "cancel": Rule(MANAGER, "run.cancel", "cancel this run"),
}


def action_rule(action_id: str) -> Rule | None:
    for pattern, rule in ACTIONS:
        if pattern.fullmatch(action_id):
            return rule
    return None


# ---- identities ----------------------------------------------------------------------------------

_CLI_ACTOR = re.compile(r"^cli:(?P<name>[^\s]{1,64}) as <@(?P<user>[UW][A-Z0-9]{2,})>$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


def cli_actor(os_user: str, slack_user: str) -> str:
    """How the audit and the run record a command-line operator: `cli:<os user> as <@U…>`."""
    name = re.sub(r"\s+", "_", os_user.strip())[:64] or "unknown"
    return f"cli:{name} as <@{slack_user}>"


def principal(user: str) -> str:
    """The Slack user an actor is checked as; a command-line actor without a Slack identity is nobody ("")."""
    match = _CLI_ACTOR.match(user)
    if match:
        return match.group("user")
    return "" if user.startswith("cli:") else user


def cli_identity(os_user: str, operators: dict[str, str], claimed: str | None) -> tuple[str | None, str]:
    """The Slack user the command line acts as, or None with the one-line reason it may not act."""
    mapped = operators.get(os_user)
    if claimed is not None and not _SLACK_USER.match(claimed):
        return None, f"--as expects a Slack user ID like U0123ABCD, got {claimed[:40]!r}."
    if mapped and claimed and claimed != mapped:
        return None, f"OS user {os_user!r} is mapped to {mapped} in cli_operators; --as {claimed} is not allowed."
    who = mapped or claimed
    if not who:
        return None, (f"OS user {os_user!r} has no Slack identity: add it to cli_operators in the environments "
                      "file, or pass --as U… (checked against the environment's allow-list).")
    return who, ""


# ---- the check -----------------------------------------------------------------------------------

def _member(user: str, groups: Iterable[str], allowed: Iterable[str]) -> bool:
    allowed = frozenset(allowed)
    return bool(user) and (user in allowed or any(group in allowed for group in groups))


def viewers(env: EnvironmentConfig) -> frozenset[str]:
    """Who may read ``env``: whoever may act on it, plus its `viewers` (by default its on-call)."""
    readers = env.viewers if env.viewers is not None else ([env.oncall] if env.oncall else [])
    return frozenset([*env.requesters, *env.approvers, *readers])


def candidates(env: EnvironmentConfig) -> list[str]:
    """Every id that may grant a permission in ``env`` (the user groups among them are resolved by Slack)."""
    return sorted({*env.requesters, *env.approvers, *viewers(env)})


def allows(permission: str, *, user: str, groups: Iterable[str], env: EnvironmentConfig | None,
           requested_by: str | None = None) -> bool:
    """Whether ``user`` (already resolved by ``principal``, groups resolved) holds ``permission`` in ``env``."""
    if permission in (ANYONE, LOCAL):
        return True
    if env is None or not user:
        return False
    groups = frozenset(groups)
    if permission == VIEWER:
        return _member(user, groups, viewers(env))
    if permission == MANAGER:
        return _member(user, groups, [*env.requesters, *env.approvers]) or user == requested_by
    if permission == REQUESTER:
        return _member(user, groups, env.requesters)
    if permission == APPROVER:
        return _member(user, groups, env.approvers)
    if permission == OPERATOR:
        return user == requested_by or _member(user, groups, env.approvers)
    raise ValueError(f"unknown permission {permission!r}")


def refusal(rule: Rule, env: str) -> str:
    """The one line a refused user reads (``env`` empty: the user may read no environment at all)."""
    if not env:
        return f"🚫 You are on no environment's lists, so you may not {rule.what}. Nothing was changed."
    who = {
        VIEWER: f"Only the requesters, approvers and on-call of `{env}`",
        MANAGER: f"Only requesters and approvers of `{env}`",
        OPERATOR: f"Only the requester or an approver of `{env}`",
    }.get(rule.permission)
    if rule.permission == APPROVER:
        return f"🚫 You cannot {rule.what}: only approvers of `{env}` may. Nothing was changed."
    if rule.permission == REQUESTER:
        return f"🚫 You are not on the requester list for `{env}`, so you may not {rule.what}. Nothing was changed."
    return f"🚫 {who or 'Nobody'} may {rule.what}. Nothing was changed."


def listener(kind: str, *keys: str) -> Any:
    """Tag a Bolt listener with the table entries it serves; the authorization test fails on an untagged one."""

    def tag(fn: Any) -> Any:
        fn.__access__ = (kind, keys)
        return fn

    return tag


def rule_for(kind: str, key: str) -> Rule | None:
    """The table entry of one listener key: an action pattern, a view callback, an event, a verb or a CLI command."""
    if kind == "action":
        return next((rule for pattern, rule in ACTIONS if pattern.pattern == key), None)
    table = {"view": VIEWS, "event": EVENTS, "command": VERBS, "cli": CLI}.get(kind, {})
    return table.get(key)
