"""What each runbook step does, one function per step, each calling one integration; EXECUTORS lists them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot import messages
from bot.context import Deps, Reply
from bot.errors import BotError, DeployError, IntegrationError, MigrationError
from bot.integrations.http import set_maintenance_webhook
from bot.integrations.smoke import SmokeCheck, run_smoke_checks
from bot.redact import redact
from bot.runbook.engine import (
    ApprovalVoided,
    Executor,
    StepContext,
    StepHeld,
    StepOutcome,
    migrations_dir,
    pending_of,
    unapproved_migrations,
)
from bot.runbook.inspection import rehearsal_enabled
from bot.runbook.rules import STEP_SPECS, AuditEvent, Run


def backup(ctx: StepContext) -> StepOutcome:
    """Seed step 1: an RDS snapshot or a pg_dump, verified; a retry reuses this run's backup."""
    # boto3 and psycopg are slow to import: loaded by the steps that use them, not by every bot process
    from bot.backup import pg_dump as backups
    from bot.backup import sandbox

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
            evidence = backups.take_rds_snapshot_backup(
                run_id=run_id, aws=aws, instance_id=cfg.rds_instance, database_url=ctx.env.database_url,
                on_progress=lambda pct: ctx.progress(_bar(pct)))
            if evidence.verified and ctx.env.rehearsal.target == "rds_restore":
                evidence = backups.verify_snapshot_by_restore(
                    evidence, aws=ctx.aws(max_wait_s=ctx.env.rehearsal.timeout_s), isolation=ctx.env.rehearsal,
                    run_id=run_id, database_url=ctx.env.database_url, keep=keep,
                    on_progress=lambda text: ctx.progress(text))
        else:
            if not ctx.env.database_url:
                raise IntegrationError(f"{ctx.env.name} has no database_url, so pg_dump has nothing to dump.")
            target: backups.LocalTarget | backups.S3Target
            if cfg.s3_bucket:
                target = backups.S3Target(bucket=cfg.s3_bucket, prefix=cfg.s3_prefix)
            else:
                assert cfg.local_dir
                target = backups.LocalTarget(directory=Path(cfg.local_dir))
            evidence = backups.take_pg_dump_backup(
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
    result = {k: v for k, v in vars(evidence).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    return StepOutcome(evidence.summary(), result)


def _bar(percent: int) -> str:
    filled = max(0, min(10, percent // 10))
    return f"{'▓' * filled}{'░' * (10 - filled)} {percent}%"


def maintenance_on(ctx: StepContext) -> StepOutcome:
    """Seed step 2: switch the app to its 503 page (ECS task definition or the app's webhook)."""
    cfg = ctx.env.maintenance
    if cfg.method == "ecs_task_definition":
        aws, deploy = ctx.aws(), ctx.env.deploy
        assert deploy.cluster and deploy.service and cfg.task_definition
        before = aws.service(deploy.cluster, deploy.service)
        aws.update_service(deploy.cluster, deploy.service, task_definition=cfg.task_definition)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} on {cfg.task_definition}",
                           {"previous_task_definition": before.task_definition, "method": cfg.method})
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=True, token=cfg.webhook_token)
    return StepOutcome("maintenance page on (webhook)", {"method": cfg.method})


def maintenance_off(ctx: StepContext) -> StepOutcome:
    """Seed step 8: undo exactly what maintenance_on changed."""
    cfg = ctx.env.maintenance
    on = ctx.run.step("maintenance_on")
    if on.status.value == "skipped":
        return StepOutcome("maintenance mode was not on", {})
    if cfg.method == "ecs_task_definition":
        aws, deploy = ctx.aws(), ctx.env.deploy
        assert deploy.cluster and deploy.service
        deployed = ctx.run.step("deploy").result.get("task_definition") if any(
            s.name == "deploy" for s in ctx.run.steps) else None
        target = deployed or on.result.get("previous_task_definition")
        if not target:
            raise DeployError("Cannot tell which task definition to restore; set it by hand and mark the step done.")
        aws.update_service(deploy.cluster, deploy.service, task_definition=target)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} back on {target.rsplit('/', 1)[-1]}", {"task_definition": target})
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=False, token=cfg.webhook_token)
    return StepOutcome("maintenance page off (webhook)", {})


def migrate(ctx: StepContext) -> StepOutcome:
    """Seed step 3: re-check what was approved, apply the migrations, verify the schema is up to date."""
    env = ctx.env
    if not env.database_url:
        raise MigrationError(f"{env.name} has no database_url configured.")
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma import CliRunner, NativeRunner, PrismaError

    directory = Path(env.migrate.migrations_dir)
    before = NativeRunner(env.database_url).status(directory)
    unapproved = unapproved_migrations(ctx.run, before)
    if unapproved:
        raise ApprovalVoided(unapproved)
    pending = pending_of(before)
    _lock_preflight(ctx, directory, [name for name, _ in pending])
    native = NativeRunner(env.database_url, lock_timeout_ms=env.migrate.lock_timeout_ms,
                          statement_timeout_ms=env.migrate.statement_timeout_ms,
                          lock_retries=env.migrate.lock_retries)
    if env.migrate.runner == "prisma_cli":
        cli = CliRunner(env.migrate.prisma_command, cwd=Path(env.migrate.prisma_cwd or "."),
                        database_url=env.database_url, timeout_s=env.migrate.timeout_s, on_line=ctx.log)
        result = cli.deploy()
    else:
        def on_event(line: str) -> None:
            ctx.log(line)
            ctx.progress(line)

        try:
            result = native.deploy(directory, on_event=on_event)
        except PrismaError as exc:
            if exc.code == "P3009" and ctx.run.step("migrate").attempt > 1:
                name = exc.migration_name or "the migration"
                raise MigrationError(
                    f"{exc} An earlier attempt of this step was interrupted and left {name} unfinished. Check "
                    f"whether its changes are in the database: if they are, record it with `migrate-bot migrate "
                    f"resolve --applied {name}`; if not, roll back with Option 1 (mark it rolled back).") from exc
            raise
    after = native.status(directory)
    if not after.up_to_date:
        raise MigrationError(f"After deploy the database is not up to date: pending {after.pending}, "
                             f"failed {[r.migration_name for r in after.failed]}")
    names = [m.name for m in result.applied]
    summary = f"applied {len(names)}: {', '.join(names)}" if names else "no pending migrations"
    downs = {m.name for m in after.local if m.down_sql is not None}
    return StepOutcome(summary + " · Database schema is up to date!",
                       {"applied": names, "with_down": bool(names) and all(n in downs for n in names),
                        "durations_s": {m.name: round(m.duration_s, 3) for m in result.applied}})


def migrate_resolved_by_hand(deps: Deps, run: Run, user: str) -> Reply | None:
    """Before an interrupted migrate is marked done: record what completed, refuse while anything is still open."""
    try:
        _record_interrupted_migrations_applied(deps, run)
        still_open = _migrations_still_open(deps, run)
    except (BotError, OSError) as exc:
        return Reply(messages.denied(f"Could not record the migrations as applied: {redact(str(exc))[:300]}"),
                     publish_run=run.id)
    if still_open:
        deps.store.audit(run.id, AuditEvent(user, "step.mark_done", "denied", deps.clock(), still_open,
                                            {"step": "migrate"}))
        return Reply(messages.denied(f"“{STEP_SPECS['migrate'].label}” is not complete: {still_open}. The step "
                                     "stays open: click Retry to apply what is pending."), publish_run=run.id)
    return None


def _record_interrupted_migrations_applied(deps: Deps, run: Run) -> None:
    """The human checked that an interrupted migrate completed: make `_prisma_migrations` say so.

    A process killed mid-script leaves the migration's row started but unfinished, which Prisma (and the
    native runner) treat as failed (P3009) and which would block every later deploy. Exactly as
    `prisma migrate resolve --applied`, for this run's migrations only.
    """
    env = deps.config.environment(run.env)
    if env is None or not env.database_url or env.migrate.runner != "native":
        return
    from bot.integrations.prisma import NativeRunner, PrismaError  # psycopg: loaded when a migration runs

    runner = NativeRunner(env.database_url)
    directory = migrations_dir(env)
    names = set(run.pending_migrations)
    for row in runner.status(directory).failed:
        if row.migration_name not in names:
            continue
        try:
            runner.resolve_applied(directory, row.migration_name)
        except PrismaError as exc:
            if getattr(exc, "code", None) != "P3008":  # already recorded applied (a doubled click): fine
                raise
        deps.store.audit(run.id, AuditEvent("bot", "migration.resolved_applied", "ok", deps.clock(),
                                            f"{row.migration_name} recorded as applied (checked by hand)",
                                            {"migration": row.migration_name}))


def _migrations_still_open(deps: Deps, run: Run) -> str:
    """What `migrate status` would still complain about (pending or failed migrations), or ''."""
    env = deps.config.environment(run.env)
    if env is None or not env.database_url:
        return ""
    from bot.integrations.prisma import NativeRunner  # psycopg: loaded when a migration runs

    status = NativeRunner(env.database_url).status(migrations_dir(env))
    problems = []
    if status.pending:
        problems.append("still pending: " + ", ".join(status.pending))
    failed = sorted({row.migration_name for row in status.failed})
    if failed:
        problems.append("failed (started, never finished): " + ", ".join(failed))
    return "; ".join(problems)


def _lock_preflight(ctx: StepContext, directory: Path, pending: list[str]) -> None:
    """Just before deploy: hold if other sessions sit on the tables the migrations lock (unless overridden)."""
    safety = ctx.env.safety
    override = ctx.run.facts.get("hold_override") or {}
    if not safety.preflight or not pending or override.get("step") == "migrate" or not ctx.env.database_url:
        return
    # psycopg and pglast are loaded only when a migration runs
    from bot.integrations.prisma import list_local_migrations
    from bot.safety.preflight import lock_preflight, target_tables

    files = [(m.name, m.sql) for m in list_local_migrations(directory) if m.name in set(pending)]
    report = lock_preflight(ctx.env.database_url, target_tables(files),
                            long_running_s=safety.preflight_long_running_s,
                            idle_in_tx_s=safety.preflight_idle_in_tx_s)
    if not report.ok:
        raise StepHeld(report.summary(), {"blockers": [b.describe() for b in report.blockers[:10]]})


def seed(ctx: StepContext) -> StepOutcome:
    """Seed step 4 (optional): the configured seed command, output to the thread."""
    cfg = ctx.env.seed
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DATABASE_URL": ctx.env.database_url or ""}
    try:
        proc = subprocess.run(cfg.command, cwd=cfg.cwd or None, env=env, capture_output=True, text=True,
                              timeout=cfg.timeout_s, check=False)
    except FileNotFoundError:
        raise IntegrationError(f"Seed command not found: {cfg.command[0]}") from None
    except subprocess.TimeoutExpired:
        raise IntegrationError(f"Seed command timed out after {cfg.timeout_s:.0f} s") from None
    for line in (proc.stdout + proc.stderr).splitlines()[-60:]:
        ctx.log(line)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise IntegrationError(f"Seed command exited {proc.returncode}: {last[0][:200]}")
    return StepOutcome(f"`{' '.join(cfg.command)}` exited 0", {})


def deploy(ctx: StepContext) -> StepOutcome:
    """Seed step 5: force a new deployment (or a new revision for --image), remember previous-stable."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    before = aws.service(cfg.cluster, cfg.service)
    maint = ctx.run.step("maintenance_on") if any(s.name == "maintenance_on" for s in ctx.run.steps) else None
    previous = (maint.result.get("previous_task_definition") if maint and maint.result else None) \
        or before.task_definition
    target = previous
    if ctx.run.image_tag:
        target = aws.register_revision_with_image(previous, ctx.run.image_tag)
        aws.update_service(cfg.cluster, cfg.service, task_definition=target, force_new_deployment=True)
    elif maint and maint.status.value == "succeeded":
        aws.update_service(cfg.cluster, cfg.service, task_definition=previous, force_new_deployment=True)
    else:
        aws.update_service(cfg.cluster, cfg.service, force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda text: ctx.progress(str(text)))
    after = aws.service(cfg.cluster, cfg.service)
    return StepOutcome(f"{cfg.service} stable on {str(target).rsplit('/', 1)[-1]} "
                       f"({after.running_count}/{after.desired_count} running)",
                       {"previous_task_definition": previous, "task_definition": target,
                        "desired_count": after.desired_count})


def smoke(ctx: StepContext) -> StepOutcome:
    """Seed step 6: the configured chain of HTTP checks; any failure fails the run."""
    checks: list[SmokeCheck] = list(ctx.env.smoke)
    lines: list[str] = []

    def on_result(result) -> None:  # type: ignore[no-untyped-def]
        if getattr(result, "skipped", False):
            lines.append(f"⏭️ {result.name}: skipped (an earlier check failed)")
            return
        mark = "✅" if result.ok else "❌"
        lines.append(f"{mark} {result.name}: {result.status or '-'} in {result.latency_ms:.0f} ms"
                     + (f" — {result.error}" if result.error else ""))

    # During a webhook maintenance window the app answers 503 to everyone but operators holding the token.
    extra_headers: dict[str, str] = {}
    maint = ctx.env.maintenance
    if (maint.enabled and maint.method == "webhook" and maint.webhook_token
            and any(s.name == "maintenance_on" and s.status.value == "succeeded" for s in ctx.run.steps)):
        extra_headers["X-Maintenance-Token"] = maint.webhook_token
    report = run_smoke_checks(checks, variables={"run_id": ctx.run.id}, on_result=on_result,
                              extra_headers=extra_headers)
    ctx.thread("*Smoke tests*\n" + "\n".join(lines))
    results = [{"name": r.name, "ok": r.ok, "status": r.status, "latency_ms": round(r.latency_ms, 1),
                "error": r.error} for r in report.results]
    if not report.ok:
        raise IntegrationError(f"Smoke tests failed: {report.summary()}")
    return StepOutcome(report.summary(), {"checks": results})


# The forward steps of the runbook (bot.runbook.rules.STEP_SPECS), handed to the engine by bot.runbook.operations.
EXECUTORS: dict[str, Executor] = {
    "backup": backup,
    "maintenance_on": maintenance_on,
    "migrate": migrate,
    "seed": seed,
    "deploy": deploy,
    "smoke": smoke,
    "maintenance_off": maintenance_off,
}
