"""The way back: the seed's three rollback options as operations and as recorded, resumable sub-steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import messages
from bot.config import EnvironmentConfig
from bot.context import Deps, Reply, environment_or_refuse
from bot.errors import AlreadyDone, BotError, DeployError, MigrationError, Refusal, StaleMessage, WrongState
from bot.redact import redact
from bot.runbook.engine import Executor, RollbackVoided, StepContext, StepOutcome, fingerprint_of, may_operate
from bot.runbook.inspection import post_scripts, review_pending
from bot.runbook.rules import (
    ROLLBACK_LABELS,
    AuditEvent,
    RollbackOption,
    Run,
    StepStatus,
    approve_rollback,
    request_rollback,
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
    from bot.integrations.prisma import down_checksum, list_local_migrations

    applied = list(_forward_result(run, "migrate").get("applied", []))
    if not applied:
        raise MigrationError("This run applied no migrations, so there is no down.sql to run.")
    local = {m.name: m for m in list_local_migrations(Path(env.migrate.migrations_dir))}
    scripts: list[DownScript] = []
    for name in reversed(applied):
        migration = local.get(name)
        if migration is None or migration.down_sql is None:
            raise MigrationError(f"{name} has no down.sql next to its migration.sql.")
        scripts.append(DownScript(name, migration.down_sql, down_checksum(migration.down_sql)))
    return scripts


def down_fingerprint(scripts: list[DownScript]) -> str:
    return fingerprint_of([(script.name, script.checksum) for script in scripts])


def _review_down(env: EnvironmentConfig, scripts: list[DownScript]) -> dict[str, Any]:
    """The safety review of the down.sql scripts, weighed against the live database."""
    shown = [DownScript(f"{s.name}/down.sql", s.sql, s.checksum) for s in scripts]
    try:
        if not env.database_url:
            raise BotError("no database_url configured")
        return review_pending(env.database_url, shown)
    except BotError as exc:
        return {"summary": f"could not review: {redact(str(exc))[:200]}", "lines": {}, "high": [], "details": []}


# ---- operations ----------------------------------------------------------------------------------

def _ecs(deps: Deps, run: Run) -> bool:
    env = deps.config.environment(run.env)
    return bool(env and env.deploy.enabled and env.deploy.cluster and env.deploy.service)


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
    review: dict[str, Any] | None = None
    may_request = user == run.requested_by or policy.may_approve(user, groups)
    if may_request and runs_down_sql(run, chosen) and chosen in rollback_options(run) and not run.rollback:
        try:  # what would run on production is read once, shown, reviewed and fingerprinted
            scripts = down_scripts(env, run)
        except (BotError, OSError) as exc:
            return Reply(messages.denied(f"The down.sql scripts could not be read ({redact(str(exc))[:200]}), "
                                         "so Option 1 cannot be requested."), publish_run=run_id)
        review = _review_down(env, scripts)
    down = [{"name": script.name, "checksum": script.checksum} for script in scripts]
    try:
        deps.store.apply(run_id, lambda current: request_rollback(
            current, option=chosen, user=user, reason=reason, now=deps.clock(), ecs=_ecs(deps, current),
            policy=policy, groups=groups, down=down, down_fingerprint=down_fingerprint(scripts) if scripts else None,
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
        ecs=_ecs(deps, current), policy=policy, groups=groups))
    return Reply("", publish_run=run_id)


def confirm_restore(deps: Deps, *, run_id: str, user: str, version: int | None = None) -> Reply:
    """The second person: confirms a restore, or the down.sql scripts exactly as they were shown."""
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    fingerprint: str | None = None
    if (run.rollback or {}).get("option") == RollbackOption.REVERT.value:
        try:
            fingerprint = down_fingerprint(down_scripts(env, run))
        except (BotError, OSError) as exc:  # unreadable now: the rule refuses (it no longer matches)
            log.warning("down.sql of %s unreadable at confirmation: %s", run_id, redact(str(exc))[:200])
    try:
        deps.store.apply(run_id, lambda current: approve_rollback(
            current, user=user, policy=policy, groups=groups, now=deps.clock(), ecs=_ecs(deps, current),
            down_fingerprint=fingerprint), expected_version=version)
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
    try:
        deps.store.apply(run_id, lambda current: withdraw_rollback(current, user=user, now=deps.clock()),
                         expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except Refusal as exc:
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id)


def restore_modal(run: Run) -> dict:
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

def _forward_result(run: Run, name: str) -> dict:
    return next((s.result for s in run.steps if s.name == name and s.phase == "forward"), {})


def _previous_stable(ctx: StepContext) -> str:
    run = ctx.run
    for source in (_forward_result(run, "deploy"), _forward_result(run, "maintenance_on"),
                   next((s.result for s in run.steps if s.name == "rb_scale_down"), {})):
        value = source.get("previous_task_definition") or source.get("task_definition_before")
        if value:
            return str(value)
    raise DeployError("This run recorded no previous-stable task definition; deploy it by hand.")


def resolve_failed(ctx: StepContext) -> StepOutcome:
    """Option 1 for a failed migration: exactly `prisma migrate resolve --rolled-back` (failed rows only)."""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma import NativeRunner

    env = ctx.env
    assert env.database_url
    runner = NativeRunner(env.database_url)
    directory = Path(env.migrate.migrations_dir)
    failed = sorted({row.migration_name for row in runner.status(directory).failed})
    if not failed:
        raise MigrationError("No failed migration is recorded; nothing to mark rolled back.")
    for name in failed:
        runner.resolve_rolled_back(directory, name)
    ctx.thread(
        "*Next: the corrective migration.* " + ", ".join(f"`{n}`" for n in failed)
        + " is marked rolled back (its transaction left no partial schema). Fix the SQL — or add a new "
        "migration with `npx prisma migrate dev --name fix_previous_migration` — commit it, and start a new "
        f"run with `/migrate {env.name}`: deploy will apply it then.")
    return StepOutcome(f"marked rolled back: {', '.join(failed)}", {"rolled_back": failed})


def apply_down(ctx: StepContext) -> StepOutcome:
    """Option 1 for applied migrations that ship a down.sql: run them newest first, then mark them rolled back.

    Only the down.sql a second approver confirmed: the fingerprint is checked again just before, and each
    script's checksum once more under the advisory lock.
    """
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma import NativeRunner

    env = ctx.env
    assert env.database_url
    try:
        scripts = down_scripts(env, ctx.run)
    except (BotError, OSError) as exc:
        raise RollbackVoided(f"the down.sql scripts could not be read ({redact(str(exc))[:200]}); nothing was "
                             "run") from None
    approved = (ctx.run.rollback or {}).get("fingerprint")
    if not approved or down_fingerprint(scripts) != approved:
        raise RollbackVoided("the down.sql scripts changed after they were approved; nothing was run. Request "
                             "Option 1 again to review them as they are now")
    runner = NativeRunner(env.database_url)
    directory = Path(env.migrate.migrations_dir)
    done: list[str] = next((s.result.get("reverted", []) for s in ctx.run.steps if s.name == "rb_apply_down"), [])
    reverted = list(done)
    for script in scripts:
        if script.name in reverted:
            continue
        runner.revert_with_down(directory, script.name, expected_down_checksum=script.checksum)
        reverted.append(script.name)
        ctx.log(f"down.sql of {script.name} applied; row marked rolled back")
    return StepOutcome(f"reverted with down.sql: {', '.join(reverted)}", {"reverted": reverted})


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


def scale_down(ctx: StepContext) -> StepOutcome:
    """Option 2, first: stop new writes. The desired count is recorded once, so a retry cannot lose it."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    state = aws.service(cfg.cluster, cfg.service)
    recorded = ctx.run.step("rb_scale_down").result
    desired = int(recorded.get("desired_count_before", state.desired_count))
    if desired == 0:
        desired = int(_forward_result(ctx.run, "deploy").get("desired_count") or 1)
    ctx.remember(desired_count_before=desired, task_definition_before=state.task_definition)
    aws.update_service(cfg.cluster, cfg.service, desired_count=0)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} scaled to 0 (was {desired})",
                       {"desired_count_before": desired, "task_definition_before": state.task_definition})


def restore_db(ctx: StepContext) -> StepOutcome:
    """Option 2: the database back to the pre-migration backup (pg_restore, or an RDS snapshot restore)."""
    env = ctx.env
    backup = _forward_result(ctx.run, "backup")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if backup.get("method") == "rds_snapshot":
        aws = ctx.aws()
        instance = str(env.backup.rds_instance if env.backup else "")
        restored = f"{instance}-restored-{stamp}"
        aws.restore_instance_from_snapshot(str(backup["identifier"]), restored)
        ctx.progress(f"restoring {restored} from {backup['identifier']}", force=True)
        aws.wait_instance_available(restored)
        if env.rollback.rds_swap:
            aside = f"{instance}-pre-restore-{stamp}"
            aws.rename_instance(instance, aside)
            aws.wait_instance_available(aside)
            aws.rename_instance(restored, instance)
            aws.wait_instance_available(instance)
            return StepOutcome(f"RDS {instance} is now the restored copy (old one kept as {aside})",
                               {"restored_instance": instance, "previous_instance": aside})
        ctx.thread(f"*Action needed:* the snapshot is restored as RDS instance `{restored}`. Point the app's "
                   f"DATABASE_URL at its endpoint (or rename `{instance}` aside and `{restored}` to `{instance}`), "
                   "then click *Run: Redeploy previous-stable*.")
        return StepOutcome(f"restored to new instance {restored}; switch the app to it (see thread)",
                           {"restored_instance": restored, "manual_switch": True})
    # boto3 and psycopg are loaded only by the work that takes or restores a backup
    from bot.backup.pg_dump import fetched_backup
    from bot.integrations.postgres import Postgres, pg_restore

    assert env.database_url
    aws = ctx.aws() if str(backup.get("location", "")).startswith("s3://") else None
    jobs = env.backup.jobs if env.backup else 1
    mode = env.rollback.pg_restore_mode
    with fetched_backup(backup, aws) as path:
        if mode in ("swap", "new_database"):
            live = Postgres(env.database_url)
            suffix = stamp.replace("-", "_")
            name = f"{live.database_name()}_restored_{suffix}"
            live.drop_database(name)
            live.create_database(name)
            pg_restore(path, live.url_for_database(name), jobs=jobs)
            if mode == "new_database":
                ctx.thread(f"*Action needed:* the backup is restored into database `{name}` on the same server. "
                           "Point the app at it (or rename the databases), then redeploy.")
                return StepOutcome(f"restored into new database {name}", {"restored_database": name})
            aside = f"{live.database_name()}_pre_restore_{suffix}"
            live.swap_in_database(name, aside)
            ctx.thread(f"The database as it was before the restore is kept as `{aside}` (nothing is dropped).")
            count = Postgres(env.database_url).prisma_migrations_count()
            return StepOutcome(f"restored from {Path(str(backup.get('identifier'))).name} and swapped in; "
                               f"old database kept as {aside}; {count} rows in _prisma_migrations",
                               {"kept_aside": aside, "prisma_migrations": count})
        pg_restore(path, env.database_url, clean=True, jobs=jobs)
    count = Postgres(env.database_url).prisma_migrations_count()
    return StepOutcome(f"pg_restore --clean --if-exists from {Path(str(backup.get('identifier'))).name}; "
                       f"{count} rows in _prisma_migrations", {"prisma_migrations": count})


def redeploy(ctx: StepContext) -> StepOutcome:
    """Option 2, last: previous-stable at the desired count recorded before scaling down (the seed's 2)."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    desired = int(ctx.run.step("rb_scale_down").result.get("desired_count_before") or 2)
    target = _previous_stable(ctx)
    aws.update_service(cfg.cluster, cfg.service, task_definition=target, desired_count=desired,
                       force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} on {target.rsplit('/', 1)[-1]} at {desired} tasks",
                       {"task_definition": target, "desired_count": desired})


def previous_version(ctx: StepContext) -> StepOutcome:
    """Option 3: the migration is fine but the code is not; go back to previous-stable."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    target = _previous_stable(ctx)
    aws.update_service(cfg.cluster, cfg.service, task_definition=target, force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} back on {target.rsplit('/', 1)[-1]}", {"task_definition": target})


def steps_in_rollback(run: Run) -> list[str]:
    return [s.name for s in run.steps if s.phase == "rollback" and s.status is not StepStatus.SUCCEEDED]


# The rollback sub-steps (in bot.runbook.rules.STEP_SPECS), handed to the engine with the forward ones by bot.runbook.operations.
EXECUTORS: dict[str, Executor] = {
    "rb_resolve_failed": resolve_failed,
    "rb_apply_down": apply_down,
    "rb_scale_down": scale_down,
    "rb_restore_db": restore_db,
    "rb_redeploy": redeploy,
    "rb_previous_version": previous_version,
}


__all__ = ["BotError", "recommend_rollback", "start_rollback", "request_restore", "confirm_restore",
           "withdraw_restore", "restore_modal", "steps_in_rollback"]
