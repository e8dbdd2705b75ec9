"""The rollback sub-steps of the seed's three options, one function each (the way back)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.errors import BotError, DeployError, MigrationError
from bot.redact import redact
from bot.runbook.engine import Executor, RollbackVoided, StepContext, StepOutcome, migrations_dir
from bot.runbook.rollback import down_fingerprint, down_scripts
from bot.runbook.rules import (
    ApplyDownResult,
    BackupResult,
    DeployResult,
    MaintenanceOnResult,
    PreviousVersionResult,
    RedeployResult,
    ResolveFailedResult,
    RestoreDbResult,
    ScaleDownResult,
    result_of,
)


def _previous_stable(ctx: StepContext) -> str:
    run = ctx.run
    for value in (result_of(run, DeployResult).previous_task_definition,
                  result_of(run, MaintenanceOnResult).previous_task_definition,
                  result_of(run, ScaleDownResult).task_definition_before):
        if value:
            return value
    raise DeployError("This run recorded no previous-stable task definition; deploy it by hand.")


def resolve_failed(ctx: StepContext) -> StepOutcome:
    """Option 1 for a failed migration: exactly `prisma migrate resolve --rolled-back` (failed rows only)."""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    env = ctx.env
    assert env.database_url
    runner = NativeRunner(env.database_url)
    directory = migrations_dir(env, ctx.run)
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
    return StepOutcome(f"marked rolled back: {', '.join(failed)}", ResolveFailedResult(rolled_back=failed))


def apply_down(ctx: StepContext) -> StepOutcome:
    """Option 1 for applied migrations that ship a down.sql: run them newest first, then mark them rolled back.

    Only the down.sql a second approver confirmed: the fingerprint is checked again just before, and each
    script's checksum once more under the advisory lock.
    """
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    env = ctx.env
    assert env.database_url
    try:
        scripts = down_scripts(env, ctx.run)
    except (BotError, OSError) as exc:
        raise RollbackVoided(f"the down.sql scripts could not be read ({redact(str(exc))[:200]}); nothing was "
                             "run") from None
    approved = ctx.run.rollback.fingerprint if ctx.run.rollback else None
    if not approved or down_fingerprint(scripts) != approved:
        raise RollbackVoided("the down.sql scripts changed after they were approved; nothing was run. Request "
                             "Option 1 again to review them as they are now")
    runner = NativeRunner(env.database_url)
    directory = migrations_dir(env, ctx.run)
    reverted = list(result_of(ctx.run, ApplyDownResult).reverted)
    for script in scripts:
        if script.name in reverted:
            continue
        runner.revert_with_down(directory, script.name, expected_down_checksum=script.checksum)
        reverted.append(script.name)
        ctx.log(f"down.sql of {script.name} applied; row marked rolled back")
    return StepOutcome(f"reverted with down.sql: {', '.join(reverted)}", ApplyDownResult(reverted=reverted))


def scale_down(ctx: StepContext) -> StepOutcome:
    """Option 2, first: stop new writes. The desired count is recorded once, so a retry cannot lose it."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    state = aws.service(cfg.cluster, cfg.service)
    recorded = result_of(ctx.run, ScaleDownResult).desired_count_before
    desired = int(recorded if recorded is not None else state.desired_count)
    if desired == 0:
        desired = int(result_of(ctx.run, DeployResult).desired_count or 1)
    scaled = ScaleDownResult(desired_count_before=desired, task_definition_before=state.task_definition)
    ctx.remember(scaled)
    aws.update_service(cfg.cluster, cfg.service, desired_count=0)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} scaled to 0 (was {desired})", scaled)


def restore_db(ctx: StepContext) -> StepOutcome:
    """Option 2: the database back to the pre-migration backup (pg_restore, or an RDS snapshot restore)."""
    env = ctx.env
    backup = result_of(ctx.run, BackupResult)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if backup.method == "rds_snapshot":
        aws = ctx.aws()
        instance = str(env.backup.rds_instance if env.backup else "")
        restored = f"{instance}-restored-{stamp}"
        aws.restore_instance_from_snapshot(backup.identifier, restored)
        ctx.progress(f"restoring {restored} from {backup.identifier}", force=True)
        aws.wait_instance_available(restored)
        if env.rollback.rds_swap:
            aside = f"{instance}-pre-restore-{stamp}"
            aws.rename_instance(instance, aside)
            aws.wait_instance_available(aside)
            aws.rename_instance(restored, instance)
            aws.wait_instance_available(instance)
            return StepOutcome(f"RDS {instance} is now the restored copy (old one kept as {aside})",
                               RestoreDbResult(restored_instance=instance, previous_instance=aside))
        ctx.thread(f"*Action needed:* the snapshot is restored as RDS instance `{restored}`. Point the app's "
                   f"DATABASE_URL at its endpoint (or rename `{instance}` aside and `{restored}` to `{instance}`), "
                   "then click *Run: Redeploy previous-stable*.")
        return StepOutcome(f"restored to new instance {restored}; switch the app to it (see thread)",
                           RestoreDbResult(restored_instance=restored, manual_switch=True))
    # boto3 and psycopg are loaded only by the work that takes or restores a backup
    from bot.backup.pg_dump import fetched_backup
    from bot.integrations.postgres import Postgres, pg_restore

    assert env.database_url
    s3 = ctx.aws() if backup.location.startswith("s3://") else None
    jobs = env.backup.jobs if env.backup else 1
    mode = env.rollback.pg_restore_mode
    with fetched_backup(backup.model_dump(), s3) as path:
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
                return StepOutcome(f"restored into new database {name}", RestoreDbResult(restored_database=name))
            aside = f"{live.database_name()}_pre_restore_{suffix}"
            live.swap_in_database(name, aside)
            ctx.thread(f"The database as it was before the restore is kept as `{aside}` (nothing is dropped).")
            count = Postgres(env.database_url).prisma_migrations_count()
            return StepOutcome(f"restored from {Path(backup.identifier).name} and swapped in; "
                               f"old database kept as {aside}; {count} rows in _prisma_migrations",
                               RestoreDbResult(kept_aside=aside, prisma_migrations=count))
        pg_restore(path, env.database_url, clean=True, jobs=jobs)
    count = Postgres(env.database_url).prisma_migrations_count()
    return StepOutcome(f"pg_restore --clean --if-exists from {Path(backup.identifier).name}; "
                       f"{count} rows in _prisma_migrations", RestoreDbResult(prisma_migrations=count))


def redeploy(ctx: StepContext) -> StepOutcome:
    """Option 2, last: previous-stable at the desired count recorded before scaling down (the seed's 2)."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    desired = int(result_of(ctx.run, ScaleDownResult).desired_count_before or 2)
    target = _previous_stable(ctx)
    aws.update_service(cfg.cluster, cfg.service, task_definition=target, desired_count=desired,
                       force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} on {target.rsplit('/', 1)[-1]} at {desired} tasks",
                       RedeployResult(task_definition=target, desired_count=desired))


def previous_version(ctx: StepContext) -> StepOutcome:
    """Option 3: the migration is fine but the code is not; go back to previous-stable."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    target = _previous_stable(ctx)
    aws.update_service(cfg.cluster, cfg.service, task_definition=target, force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda s: ctx.progress(str(s)))
    return StepOutcome(f"{cfg.service} back on {target.rsplit('/', 1)[-1]}",
                       PreviousVersionResult(task_definition=target))


# The rollback sub-steps (in bot.runbook.rules.STEP_SPECS), handed to the engine with the forward ones by bot.runbook.operations.
EXECUTORS: dict[str, Executor] = {
    "rb_resolve_failed": resolve_failed,
    "rb_apply_down": apply_down,
    "rb_scale_down": scale_down,
    "rb_restore_db": restore_db,
    "rb_redeploy": redeploy,
    "rb_previous_version": previous_version,
}
