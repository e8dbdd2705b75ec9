"""The way back: the seed's three rollback options as operations and as recorded, resumable sub-steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import messages
from bot.config import EnvironmentConfig
from bot.context import Deps, Reply, environment_or_refuse
from bot.errors import AlreadyDone, BotError, MigrationError, Refusal, StaleMessage, WrongState
from bot.redact import redact
from bot.runbook.engine import apply_click, fingerprint_of, may_operate, migrations_dir
from bot.runbook.inspection import post_scripts, review_pending
from bot.runbook.rules import (
    ROLLBACK_LABELS,
    AuditEvent,
    DownSql,
    MigrateResult,
    Review,
    RollbackOption,
    Run,
    StepStatus,
    approve_rollback,
    request_rollback,
    result_of,
    rollback_options,
    runs_down_sql,
    void_rollback,
    withdraw_rollback,
)
from bot.runbook.views import button_value

log = logging.getLogger(__name__)


# ---- recommendation ------------------------------------------------------------------------------

def oncall_mention(oncall: str | None) -> str:
    if not oncall:
        return ""
    return f"<!subteam^{oncall}> " if oncall.startswith("S") else f"<@{oncall}> "


def recommend_rollback(deps: Deps, run_id: str, reason: str) -> None:
    """Post "Rollback recommended" in the run's thread (broadcast to the channel), mentioning on-call."""
    run = deps.store.find(run_id)
    if run is None:
        return
    env = deps.config.environment(run.env)
    options = rollback_options(run)
    deps.store.audit(run_id, AuditEvent("bot", "rollback.recommended", "ok", deps.clock(), reason))
    if deps.slack is None or not run.message_ts:
        return
    offered = ", ".join(ROLLBACK_LABELS[o] for o in options) or "none offered by the bot: act by hand"
    text = (f"{oncall_mention(env.oncall if env else None)}🚨 *Rollback recommended:* {reason}\n"
            f"Options for this run: {offered}. Choose in the status message.")
    try:
        deps.slack.client.chat_postMessage(channel=run.channel, thread_ts=run.message_ts, text=text,
                                           reply_broadcast=True)
    except Exception as exc:  # the recommendation is also in the audit trail and the message
        log.warning("rollback recommendation not posted: %s", type(exc).__name__)


# ---- down.sql: shown, reviewed, fingerprinted, confirmed by a second person -----------------------

@dataclass(frozen=True)
class DownScript:
    """One down.sql that Option 1 would run, newest migration first."""

    name: str
    sql: str
    checksum: str


def down_scripts(env: EnvironmentConfig, run: Run) -> list[DownScript]:
    """The down.sql of every migration this run applied, newest first; MigrationError if one is missing."""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.migrations import down_checksum, list_local_migrations

    applied = list(result_of(run, MigrateResult).applied)
    if not applied:
        raise MigrationError("This run applied no migrations, so there is no down.sql to run.")
    local = {m.name: m for m in list_local_migrations(migrations_dir(env, run))}
    scripts: list[DownScript] = []
    for name in reversed(applied):
        migration = local.get(name)
        if migration is None or migration.down_sql is None:
            raise MigrationError(f"{name} has no down.sql next to its migration.sql.")
        scripts.append(DownScript(name, migration.down_sql, down_checksum(migration.down_sql)))
    return scripts


def down_fingerprint(scripts: list[DownScript]) -> str:
    return fingerprint_of([(script.name, script.checksum) for script in scripts])


def _review_down(env: EnvironmentConfig, scripts: list[DownScript], directory: Path | None = None) -> Review:
    """The safety review of the down.sql scripts, weighed against the live database."""
    shown = [DownScript(f"{s.name}/down.sql", s.sql, s.checksum) for s in scripts]
    try:
        if not env.database_url:
            raise BotError("no database_url configured")
        return review_pending(env.database_url, shown, env, directory)
    except BotError as exc:
        return Review(summary=f"could not review: {redact(str(exc))[:200]}", lines={}, high=[], details=[])


# ---- operations ----------------------------------------------------------------------------------

def _ecs(deps: Deps, run: Run) -> bool:
    env = deps.config.environment(run.env)
    return bool(env and env.deploy.enabled and env.deploy.cluster and env.deploy.service)


def _smoke(deps: Deps, run: Run) -> bool:
    """Whether the way back ends with the smoke tests: whenever the environment has any configured."""
    env = deps.config.environment(run.env)
    return bool(env and env.smoke)


def start_rollback(deps: Deps, *, run_id: str, option: str, user: str, reason: str = "",
                   version: int | None = None) -> Reply:
    """Option 1 or 3 start at once; Option 2 goes through `request_restore` (typed confirmation + second person)."""
    try:
        chosen = RollbackOption(option)
    except ValueError:
        return Reply(f"Unknown rollback option `{option[:20]}`. Nothing was changed.")
    if chosen is RollbackOption.RESTORE:
        return Reply("A restore from backup needs the typed confirmation form; use the button in the message.")
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    scripts: list[DownScript] = []
    review: Review | None = None
    may_request = user == run.requested_by or policy.may_approve(user, groups)
    if may_request and runs_down_sql(run, chosen) and chosen in rollback_options(run) and not run.rollback:
        try:  # what would run on production is read once, shown, reviewed and fingerprinted
            scripts = down_scripts(env, run)
        except (BotError, OSError) as exc:
            return Reply(messages.denied(f"The down.sql scripts could not be read ({redact(str(exc))[:200]}), "
                                         "so Option 1 cannot be requested."), publish_run=run_id)
        review = _review_down(env, scripts, migrations_dir(env, run))
    down = [DownSql(name=script.name, checksum=script.checksum) for script in scripts]
    try:
        deps.store.apply(run_id, lambda current: request_rollback(
            current, option=chosen, user=user, reason=reason, now=deps.clock(), ecs=_ecs(deps, current),
            smoke=_smoke(deps, current), policy=policy, groups=groups, down=down, down_fingerprint=down_fingerprint(scripts) if scripts else None,
            down_review=review), expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except Refusal as exc:
        if not isinstance(exc, AlreadyDone):  # a doubled click is not news; a refusal by the rules is
            deps.store.audit(run_id, AuditEvent(user, "rollback.request", "denied", deps.clock(), str(exc)))
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    if scripts and review is not None:
        post_scripts(deps, run_id, [DownScript(f"{s.name}/down.sql", s.sql, s.checksum) for s in scripts], review,
                     heading="*Option 1 would run these down.sql scripts on production, newest first.* "
                             "A second approver must confirm them.")
    return Reply("", publish_run=run_id)


def request_restore(deps: Deps, *, run_id: str, user: str, typed_env: str, reason: str) -> Reply:
    """Option 2, first person: they must type the environment's name and give a reason."""
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    if env.rollback.typed_confirmation and typed_env.strip() != run.env:
        raise WrongState(f"Type the environment name `{run.env}` exactly to confirm a restore.")
    if len(reason.strip()) < 10:
        raise WrongState("Give a reason (a sentence) for restoring from backup.")
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    deps.store.apply(run_id, lambda current: request_rollback(
        current, option=RollbackOption.RESTORE, user=user, reason=reason.strip(), now=deps.clock(),
        ecs=_ecs(deps, current), smoke=_smoke(deps, current), policy=policy, groups=groups))
    return Reply("", publish_run=run_id)


def confirm_restore(deps: Deps, *, run_id: str, user: str, version: int | None = None) -> Reply:
    """The second person: confirms a restore, or the down.sql scripts exactly as they were shown."""
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    fingerprint: str | None = None
    if run.rollback is not None and run.rollback.option is RollbackOption.REVERT:
        try:
            fingerprint = down_fingerprint(down_scripts(env, run))
        except (BotError, OSError) as exc:  # unreadable now: the rule refuses (it no longer matches)
            log.warning("down.sql of %s unreadable at confirmation: %s", run_id, redact(str(exc))[:200])
    try:
        deps.store.apply(run_id, lambda current: approve_rollback(
            current, user=user, policy=policy, groups=groups, now=deps.clock(), ecs=_ecs(deps, current),
            smoke=_smoke(deps, current), down_fingerprint=fingerprint), expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except Refusal as exc:
        if not isinstance(exc, AlreadyDone):
            deps.store.audit(run_id, AuditEvent(user, "rollback.approve", "denied", deps.clock(), str(exc)))
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id)


def withdraw_restore(deps: Deps, *, run_id: str, user: str, version: int | None = None) -> Reply:
    run = deps.store.get(run_id)
    if not may_operate(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "rollback.withdraw", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may withdraw a restore."))
    return apply_click(deps, run_id, lambda current: withdraw_rollback(current, user=user, now=deps.clock()),
                       version=version)


def restore_modal(run: Run) -> dict[str, Any]:
    """Typed confirmation for Option 2: the environment name and a reason."""
    return {
        "type": "modal",
        "callback_id": "restore_request",
        "private_metadata": button_value(run),
        "title": {"type": "plain_text", "text": "Restore from backup"},
        "submit": {"type": "plain_text", "text": "Request restore"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "block_id": "warning", "text": {"type": "mrkdwn", "text": (
                f"⚠️ *This will lose all data written to {run.env} after the backup was taken.* "
                "The app is scaled to 0, the database is restored, and the previous version is redeployed. "
                "A second approver must confirm before anything happens.")}},
            {"type": "input", "block_id": "env", "label": {"type": "plain_text",
             "text": f"Type the environment name ({run.env}) to confirm"},
             "element": {"type": "plain_text_input", "action_id": "typed_env", "max_length": 40}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": "reason_text", "multiline": True,
                         "max_length": 500}},
        ],
    }


# ---- sub-step executors --------------------------------------------------------------------------


def record_rollback_voided(deps: Deps, run_id: str, reason: str) -> None:
    """The approved down.sql is not what would run: back to choosing a rollback, and say why in the thread."""
    try:
        deps.store.apply(run_id, lambda current: void_rollback(current, reason=reason, now=deps.clock()))
    except BotError as exc:
        log.error("could not void the rollback of %s: %s", run_id, exc)
    deps.publish(run_id)
    run = deps.store.find(run_id)
    if run is not None and run.message_ts and deps.slack is not None:
        try:
            deps.slack.post_message(run.channel, f"⚠️ *Option 1 stopped:* {reason}.", thread_ts=run.message_ts)
        except BotError as exc:
            log.warning("thread post failed: %s", exc)


def steps_in_rollback(run: Run) -> list[str]:
    return [s.name for s in run.steps if s.phase == "rollback" and s.status is not StepStatus.SUCCEEDED]


__all__ = ["BotError", "recommend_rollback", "start_rollback", "request_restore", "confirm_restore",
           "withdraw_restore", "restore_modal", "steps_in_rollback"]
