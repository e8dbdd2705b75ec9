"""Before approval: read what is pending, review it for safety, show names in the message and SQL in the thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bot.errors import BotError
from bot.operations import Deps
from bot.runbook import record_inspection

log = logging.getLogger(__name__)

MAX_INLINE_SQL = 2500


def finding_key(migration: str, finding: Any) -> str:
    return f"{migration}#{finding.statement_index}:{finding.rule}"


def review_pending(database_url: str, pending: list[Any]) -> dict[str, Any]:
    """Run the safety review on the pending migrations, weighed against the live database."""
    from bot.integrations.postgres import Postgres
    from bot.safety import review_migrations

    with Postgres(database_url).read_only_connection() as conn:
        review = review_migrations([(m.name, m.sql) for m in pending], conn=conn)
    checksums = {m.name: m.checksum for m in pending}
    high = [
        {"key": finding_key(f.migration, f), "migration": f.migration, "checksum": checksums[f.migration],
         "message": f.message, "why": f.why, "alternative": f.alternative, "category": f.category}
        for f in review.findings if f.level == "high"
    ]
    return {
        "summary": review.summary(),
        "lines": {m.name: m.summary_line.removeprefix(f"{m.name}: ") for m in review.migrations},
        "high": high,
        "details": [
            {"migration": f.migration, "level": f.level, "message": f.message, "why": f.why,
             "alternative": f.alternative, "category": f.category}
            for f in review.findings if f.level in ("high", "medium")
        ],
    }


def inspect_run(deps: Deps, run_id: str) -> None:
    """Record pending migrations and their review on the run; post the SQL and findings in its thread."""
    run = deps.store.get(run_id)
    env = deps.config.environment(run.env)
    if env is None:
        return
    from bot.integrations.prisma import NativeRunner

    if not env.database_url:
        deps.store.apply(run_id, lambda current: record_inspection(
            current, pending=[], review={"summary": "no database_url configured", "lines": {}, "high": []},
            now=deps.clock()))
        deps.publish(run_id)
        return

    try:
        status = NativeRunner(env.database_url).status(Path(env.migrate.migrations_dir))
        pending = [m for m in status.local if m.name in set(status.pending)]
        review = review_pending(env.database_url, pending) if pending else {"summary": "nothing pending",
                                                                             "lines": {}, "high": [], "details": []}
    except BotError as exc:
        log.warning("inspection of %s failed: %s", run_id, exc)
        review = {"summary": f"could not inspect: {exc}", "lines": {}, "high": [], "details": [], "error": str(exc)}
        pending = []
    deps.store.apply(run_id, lambda current: record_inspection(
        current, pending=[{"name": m.name, "checksum": m.checksum} for m in pending], review=review,
        now=deps.clock()))
    deps.publish(run_id)
    _post_details(deps, run_id, pending, review)


def _post_details(deps: Deps, run_id: str, pending: list[Any], review: dict[str, Any]) -> None:
    run = deps.store.get(run_id)
    if deps.slack is None or not run.message_ts:
        return
    try:
        for migration in pending:
            if len(migration.sql) <= MAX_INLINE_SQL:
                deps.slack.post_message(run.channel, f"*{migration.name}* (sha256 `{migration.checksum[:12]}…`)\n"
                                        f"```{migration.sql.strip()}```", thread_ts=run.message_ts)
            else:
                deps.slack.upload_file(channel=run.channel, thread_ts=run.message_ts,
                                       filename=f"{migration.name}.sql", content=migration.sql.encode(),
                                       title=f"{migration.name} (sha256 {migration.checksum[:12]}…)")
        details = review.get("details", [])
        if details:
            lines = [f"*Safety review* — {review['summary']}"]
            for finding in details[:20]:
                icon = "🔴" if finding["level"] == "high" else "🟠"
                lines.append(f"{icon} *{finding['migration']}*: {finding['message']} ({finding['category']})\n"
                             f"    _why:_ {finding['why']}\n    _instead:_ {finding['alternative']}")
            deps.slack.post_message(run.channel, "\n".join(lines)[:3900], thread_ts=run.message_ts)
    except BotError as exc:
        log.warning("could not post inspection details for %s: %s", run_id, exc)
