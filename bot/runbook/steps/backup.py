"""Seed step 1, the backup: an RDS snapshot or a pg_dump, verified, kept for the rehearsal."""

from __future__ import annotations

from pathlib import Path

from bot.errors import IntegrationError
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.inspection import rehearsal_enabled
from bot.runbook.rules import BackupResult


def backup(ctx: StepContext) -> StepOutcome:
    """Seed step 1: an RDS snapshot or a pg_dump, verified; a retry reuses this run's backup."""
    # boto3 and psycopg are slow to import: loaded by the steps that use them, not by every bot process
    from bot.backup import pg_dump, rds, sandbox
    from bot.backup.evidence import LocalTarget, S3Target

    cfg = ctx.env.backup
    if cfg is None:
        raise IntegrationError(f"No backup is configured for {ctx.env.name}; add a `backup:` section.")
    run_id = ctx.run.id

    def keep_for_rehearsal(copy: sandbox.RestoredCopy) -> bool:
        sandbox.hold(run_id, copy)  # the rehearsal right after this step applies the migrations to it
        return True

    keep = keep_for_rehearsal if rehearsal_enabled(ctx.env) and ctx.run.pending_migrations else None
    try:
        if cfg.method == "rds_snapshot":
            assert cfg.rds_instance
            aws = ctx.aws(max_wait_s=cfg.timeout_s)
            evidence = rds.take_rds_snapshot_backup(
                run_id=run_id, aws=aws, instance_id=cfg.rds_instance, database_url=ctx.env.database_url,
                on_progress=lambda pct: ctx.progress(_bar(pct)))
            if evidence.verified and ctx.env.rehearsal.target == "rds_restore":
                evidence = rds.verify_snapshot_by_restore(
                    evidence, aws=ctx.aws(max_wait_s=ctx.env.rehearsal.timeout_s), isolation=ctx.env.rehearsal,
                    run_id=run_id, database_url=ctx.env.database_url, keep=keep,
                    on_progress=lambda text: ctx.progress(text))
        else:
            if not ctx.env.database_url:
                raise IntegrationError(f"{ctx.env.name} has no database_url, so pg_dump has nothing to dump.")
            target: LocalTarget | S3Target
            if cfg.s3_bucket:
                target = S3Target(bucket=cfg.s3_bucket, prefix=cfg.s3_prefix)
            else:
                assert cfg.local_dir
                target = LocalTarget(directory=Path(cfg.local_dir))
            evidence = pg_dump.take_pg_dump_backup(
                run_id=run_id, database_url=ctx.env.database_url, target=target,
                aws=ctx.aws(max_wait_s=cfg.timeout_s) if cfg.s3_bucket else None, fmt=cfg.format, jobs=cfg.jobs,
                verify_restore=cfg.verify_restore, timeout_s=cfg.timeout_s, on_progress=lambda text: ctx.progress(text),
                isolation=ctx.env.rehearsal, keep_restored=keep)
    except BaseException:
        sandbox.release(run_id)
        raise
    if not evidence.verified:
        sandbox.release(run_id)
        raise IntegrationError(f"Backup {evidence.identifier} was taken but did not verify: "
                               + "; ".join(evidence.notes or ["counts differ"]))
    return StepOutcome(evidence.describe(), BackupResult.model_validate(evidence.to_dict()))


def _bar(percent: int) -> str:
    filled = max(0, min(10, percent // 10))
    return f"{'▓' * filled}{'░' * (10 - filled)} {percent}%"
