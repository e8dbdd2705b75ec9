"""Seed step 3: apply the reviewed Prisma migrations (native runner or the Prisma CLI), after a lock pre-flight."""

from __future__ import annotations

from pathlib import Path

from bot import messages
from bot.context import Deps, Reply
from bot.errors import BotError, MigrationError
from bot.redact import redact
from bot.runbook.engine import (
    ApprovalVoided,
    StepContext,
    StepHeld,
    StepOutcome,
    migrations_dir,
    pending_of,
    prisma_cwd,
    unapproved_migrations,
)
from bot.runbook.rules import STEP_SPECS, AuditEvent, MigrateResult, Run


def migrate(ctx: StepContext) -> StepOutcome:
    """Seed step 3: re-check what was approved, apply the migrations, verify the schema is up to date."""
    env = ctx.env
    if not env.database_url:
        raise MigrationError(f"{env.name} has no database_url configured.")
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.cli import CliRunner
    from bot.integrations.prisma.migrations import PrismaError
    from bot.integrations.prisma.native import NativeRunner

    directory = migrations_dir(env, ctx.run)
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
        cli = CliRunner(env.migrate.prisma_command, cwd=prisma_cwd(env, ctx.run),
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
                       MigrateResult(applied=names, with_down=bool(names) and all(n in downs for n in names),
                                     durations_s={m.name: round(m.duration_s, 3) for m in result.applied}))


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
    from bot.integrations.prisma.migrations import PrismaError  # psycopg: loaded when a migration runs
    from bot.integrations.prisma.native import NativeRunner

    runner = NativeRunner(env.database_url)
    directory = migrations_dir(env, run)
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
    from bot.integrations.prisma.native import NativeRunner  # psycopg: loaded when a migration runs

    status = NativeRunner(env.database_url).status(migrations_dir(env, run))
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
    override = ctx.run.facts.hold_override
    overridden = override is not None and override.step == "migrate"
    if not safety.preflight or not pending or overridden or not ctx.env.database_url:
        return
    # psycopg and pglast are loaded only when a migration runs
    from bot.integrations.prisma.migrations import list_local_migrations
    from bot.safety.preflight import lock_preflight, target_tables

    files = [(m.name, m.sql) for m in list_local_migrations(directory) if m.name in set(pending)]
    report = lock_preflight(ctx.env.database_url, target_tables(files, ctx.env.database_url),
                            long_running_s=safety.preflight_long_running_s,
                            idle_in_tx_s=safety.preflight_idle_in_tx_s)
    if not report.ok:
        raise StepHeld(report.summary(), [b.describe() for b in report.blockers[:10]])
