"""Before approval: read what is pending, review it for safety, show names in the message and SQL in the thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bot.config import EnvironmentConfig
from bot.context import Deps, Reply, environment_or_refuse, require
from bot.edge import one_line
from bot.errors import BotError, Refusal, WrongState
from bot.messages import MESSAGE_LIMIT, code_block, escape, split_message
from bot.runbook import engine
from bot.runbook.access import VERBS
from bot.runbook.code_review import review_evidence  # h14b
from bot.runbook.rules import (
    BackupResult,
    Finding,
    FindingDetail,
    PendingMigration,
    Rehearsal,
    Review,
    begin_rehearsal,
    not_tested_in_staging,
    record_inspection,
    record_rehearsal,
    record_staging_evidence,
    result_of,
)
from bot.slowwork import shared

log = logging.getLogger(__name__)

MAX_INLINE_SQL = 2500
MAX_SQL_MESSAGES = 10
"""Up to this many pending migrations, each one's SQL is a message in the thread; beyond, all of it is one file
(a release with hundreds would otherwise post hundreds of messages, at Slack's one per second per channel)."""
MAX_REVIEW_MESSAGES = 3
"""A review longer than this many messages shows its first message and puts the whole review in a file."""
LINT_REPLY_LIMIT = 3700  # one ephemeral answer, with room for the line that says what was left out


def finding_key(migration: str, finding: Any) -> str:
    return f"{migration}#{finding.statement_index}:{finding.rule}"


def review_options(env: EnvironmentConfig | None, directory: Path | None = None) -> dict[str, Any]:
    """How the environment runs migrations, for review_migrations: which timeouts its runner sets (the native
    runner sets migrate.lock_timeout_ms and migrate.statement_timeout_ms; the Prisma CLI runner sets neither) and
    the repository's .squawk.toml next to the migrations or at the repository root (``directory``: the folder
    the migrations are read from, e.g. a run's commit; default ``migrations_dir``)."""
    if env is None:
        return {}
    from bot.integrations.squawk import find_squawk_config, load_squawk_config

    native = env.migrate.runner == "native"
    directory = directory or Path(env.migrate.migrations_dir)
    found = find_squawk_config(directory) if directory.is_dir() else None
    return {"bot_sets_timeouts": native and bool(env.migrate.lock_timeout_ms),
            "statement_timeout_ms": env.migrate.statement_timeout_ms if native else None,
            "squawk_config": load_squawk_config(found, directory) if found is not None else None}


def review_pending(database_url: str, pending: list[Any], env: EnvironmentConfig | None = None,
                   directory: Path | None = None) -> Review:
    """Run the safety review on the pending migrations, weighed against the live database."""
    # psycopg and pglast (the SQL parser) are loaded only when a review runs
    from bot.integrations.postgres import Postgres
    from bot.safety import review_migrations

    options = review_options(env, directory)
    with Postgres(database_url).read_only_connection() as conn:
        review = review_migrations([(m.name, m.sql) for m in pending], conn=conn, **options)
    checksums = {m.name: m.checksum for m in pending}
    high = [
        Finding(key=finding_key(f.migration, f), migration=f.migration, checksum=checksums[f.migration],
                message=f.message, why=f.why, alternative=f.alternative, category=f.category)
        for f in review.findings if f.level == "high"
    ]
    return Review(
        summary=review.summary() + (f" · {review.squawk_config}" if review.squawk_config else ""),
        lines={m.name: m.summary_line.removeprefix(f"{m.name}: ") for m in review.migrations},
        high=high,
        details=[
            FindingDetail(migration=f.migration, level=f.level, message=f.message, why=f.why,
                          alternative=f.alternative, category=f.category)
            for f in review.findings if f.level in ("high", "medium")
        ],
    )


def review_paragraphs(review: Review) -> list[str]:
    """The safety review for the thread: a heading, then each high and medium finding with why and instead."""
    paragraphs = [f"*Safety review* — {review.summary} · {len(review.details)} high and medium finding(s):"]
    for number, finding in enumerate(review.details, 1):
        icon = "🔴" if finding.level == "high" else "🟠"
        paragraphs.append(f"{icon} {number}. *{escape(finding.migration)}*: {escape(finding.message)} "
                          f"({finding.category})\n    _why:_ {escape(finding.why)}\n"
                          f"    _instead:_ {escape(finding.alternative)}")
    return paragraphs


def inspect_run(deps: Deps, run_id: str) -> None:
    """Record pending migrations and their review on the run; post the SQL and findings in its thread."""
    run = deps.store.get(run_id)
    env = deps.config.environment(run.env)
    if env is None:
        return
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    if not env.database_url:
        deps.store.apply(run_id, lambda current: record_inspection(
            current, pending=[], review=Review(summary="no database_url configured", lines={}, high=[]),
            now=deps.clock()))
        deps.publish(run_id)
        return

    try:
        directory = engine.migrations_dir(env, run)
        status = NativeRunner(env.database_url).status(directory)
        pending = [m for m in status.local if m.name in set(status.pending)]
        review = review_pending(env.database_url, pending, env, directory) if pending else Review(
            summary="nothing pending", lines={}, high=[], details=[])
    except BotError as exc:
        log.warning("inspection of %s failed: %s", run_id, exc)
        review = Review(summary=f"could not inspect: {exc}", lines={}, high=[], details=[], error=str(exc))
        pending = []
    deps.store.apply(run_id, lambda current: record_inspection(
        current, pending=[PendingMigration(name=m.name, checksum=m.checksum) for m in pending], review=review,
        now=deps.clock()))
    deps.publish(run_id)
    _post_details(deps, run_id, pending, review)
    staging_evidence(deps, run_id)
    review_evidence(deps, run_id)  # h14b: the pull requests' reviews (review.github), once pending is known


def post_scripts(deps: Deps, run_id: str, scripts: list[Any], review: Review, *, heading: str) -> None:
    """Show SQL that is about to need an approval (name, sha256, text) and its review in the run's thread."""
    run = deps.store.get(run_id)
    if deps.slack is not None and run.message_ts:
        try:
            deps.slack.post_message(run.channel, heading, thread_ts=run.message_ts)
        except BotError as exc:
            log.warning("could not post to the thread of %s: %s", run_id, exc)
    _post_details(deps, run_id, scripts, review)


def _post_details(deps: Deps, run_id: str, pending: list[Any], review: Review) -> None:
    run = deps.store.get(run_id)
    if deps.slack is None or not run.message_ts:
        return
    slack, channel, thread = deps.slack, run.channel, run.message_ts
    try:
        if len(pending) > MAX_SQL_MESSAGES:
            slack.upload_file(channel=channel, thread_ts=thread, filename=f"pending-migrations-{run.id}.sql",
                              content=sql_bundle(pending).encode(),
                              title=f"The {len(pending)} pending migrations, in order, each with its sha256")
        for migration in pending if len(pending) <= MAX_SQL_MESSAGES else []:
            if len(migration.sql) <= MAX_INLINE_SQL:
                slack.post_message(channel, f"*{migration.name}* (sha256 `{migration.checksum[:12]}…`)\n"
                                   f"{code_block(migration.sql)}", thread_ts=thread)
            else:
                slack.upload_file(channel=channel, thread_ts=thread, filename=f"{migration.name}.sql",
                                  content=migration.sql.encode(),
                                  title=f"{migration.name} (sha256 {migration.checksum[:12]}…)")
        if review.details:
            # Every finding, each whole: as many messages as it takes, or the first and a file with them all.
            paragraphs = review_paragraphs(review)
            pieces = split_message(paragraphs, limit=MESSAGE_LIMIT - 100)  # room for the file's note
            if len(pieces) <= MAX_REVIEW_MESSAGES:
                slack.post_long(channel, paragraphs, thread_ts=thread)
            else:
                slack.post_message(channel, pieces[0] + f"\n_…the whole review ({len(review.details)} findings) "
                                   "is in the file below._", thread_ts=thread)
                slack.upload_file(channel=channel, thread_ts=thread, filename=f"safety-review-{run.id}.txt",
                                  content="\n\n".join(paragraphs).encode(),
                                  title=f"Safety review: {len(review.details)} high and medium findings")
    except BotError as exc:
        log.warning("could not post inspection details for %s: %s", run_id, exc)


def sql_bundle(pending: list[Any]) -> str:
    """Every pending migration's SQL in one text, in the order they will run, each under its name and checksum."""
    return "".join(f"-- ==== {m.name} (sha256 {m.checksum}) ====\n{m.sql.rstrip()}\n\n" for m in pending)


def rehearsal_enabled(env: EnvironmentConfig) -> bool:
    restorable = bool(env.backup and (env.backup.method == "pg_dump" or env.rehearsal.target == "rds_restore"))
    if env.safety.rehearsal is not None:
        return env.safety.rehearsal and restorable
    return restorable and bool(env.database_url)


def rehearse_run(deps: Deps, run_id: str, user: str = "bot") -> None:
    """After the backup (or on "Rehearse again"): apply the pending migrations to its restored copy on an isolated
    server, report and record. Claimed first, so two clicks or two replicas rehearse once."""
    # boto3 and psycopg are loaded only by the work that restores a backup
    from bot.backup.sandbox import release

    try:
        run = deps.store.get(run_id)
        env = deps.config.environment(run.env)
        if env is None or not rehearsal_enabled(env) or not env.database_url:
            return
        try:
            deps.store.apply(run_id, lambda current: begin_rehearsal(current, user=user, owner=deps.instance_id,
                                                                     now=deps.clock()))
        except Refusal:
            return  # already running elsewhere, or nothing to rehearse now
        deps.publish(run_id)
        try:
            _rehearse(deps, run_id, env)
        except Exception as exc:  # the claim must not outlive a crash of the work: say it could not run
            failed = Rehearsal(ok=False, summary=f"rehearsal could not run: {one_line(exc)}", migrations=[])
            deps.store.apply(run_id, lambda current: record_rehearsal(current, report=failed, now=deps.clock()))
            deps.publish(run_id)
            raise
    finally:
        release(run_id)  # the backup's restored copy, if nothing took it


def _rehearse(deps: Deps, run_id: str, env: EnvironmentConfig) -> None:
    # boto3 and psycopg are loaded only by the work that restores a backup
    from bot.backup.rehearsal import rehearse_from_evidence

    run = deps.store.get(run_id)
    assert env.database_url
    if not run.pending_migrations:
        report = Rehearsal(ok=True, summary="nothing pending to rehearse", migrations=[])
    else:
        aws = None
        if env.backup and (env.backup.s3_bucket or env.backup.method == "rds_snapshot"):
            # boto3 is slow to import: loaded only by the work that calls AWS
            from bot.integrations.aws import Aws

            aws = Aws(region=env.aws.region, endpoint_url=env.aws.endpoint_url)
        try:
            evidence = result_of(run, BackupResult).model_dump()
            result = rehearse_from_evidence(evidence, database_url=env.database_url,
                                            migrations_dir=engine.migrations_dir(env, run),
                                            aws=aws, pending=run.pending_migrations, run_id=run_id,
                                            isolation=env.rehearsal, timeout_s=env.rehearsal.timeout_s,
                                            lock_timeout_ms=env.migrate.lock_timeout_ms)
            report = Rehearsal.model_validate({**result.to_dict(), "summary": result.summary()})
        except BotError as exc:
            report = Rehearsal(ok=False, summary=f"rehearsal could not run: {exc}", migrations=[])
    deps.store.apply(run_id, lambda current: record_rehearsal(current, report=report, now=deps.clock()))
    deps.publish(run_id)
    _post_rehearsal(deps, run_id, report)


def _post_rehearsal(deps: Deps, run_id: str, report: Rehearsal) -> None:
    run = deps.store.get(run_id)
    if deps.slack is None or not run.message_ts:
        return
    lines = [("✅" if report.ok else "❌") + f" *Rehearsal on a restored copy of this run's backup* — "
             f"{report.summary}"]
    for migration in report.migrations[:20]:
        locks = ", ".join(f"{table}: {mode}" for table, mode in migration.locks.items())
        waits = ", ".join(migration.waits)
        line = f"{'✅' if migration.ok else '❌'} `{migration.name}` {migration.duration_s:.2f} s"
        if locks:
            line += f" · locks {locks}"
        if waits:
            line += f" · waits {waits}"
        if migration.error:
            line += f" · {migration.error}"
        lines.append(line)
    try:
        deps.slack.post_long(run.channel, lines, thread_ts=run.message_ts)
    except BotError as exc:
        log.warning("rehearsal report not posted for %s: %s", run_id, exc)


def staging_evidence(deps: Deps, run_id: str) -> None:
    """If the configured staging environment has finished every pending migration, that is the evidence."""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    run = deps.store.get(run_id)
    env = deps.config.environment(run.env)
    staging = deps.config.environment(env.safety.staging_env) if env and env.safety.staging_env else None
    if staging is None or not staging.database_url or not run.pending_migrations:
        return
    try:
        finished = [(row.migration_name, row.checksum) for row in NativeRunner(staging.database_url).rows()
                    if row.finished_at is not None and row.rolled_back_at is None]
    except BotError as exc:
        log.warning("staging evidence for %s unavailable: %s", run_id, exc)
        return
    untested = not_tested_in_staging(run.facts.pending or [], finished)
    if untested:  # a same-named migration of another version is not evidence
        log.info("staging evidence for %s: %s not finished in %s with the same checksum", run_id,
                 ", ".join(untested[:5]), staging.name)
        return
    try:
        deps.store.apply(run_id, lambda current: record_staging_evidence(
            current, staging_env=staging.name, finished=finished, now=deps.clock()))
    except WrongState as exc:  # the pending set changed in between
        log.info("staging evidence for %s not recorded: %s", run_id, exc)
        return
    deps.publish(run_id)


def lint_reply(deps: Deps, inv: Any, args: list[str]) -> Reply:
    """`/migrate lint <env>`: the safety review of that environment's pending migrations, weighed live."""
    if len(args) != 1:
        return Reply("Which environment? `/migrate lint <env>`")
    env = environment_or_refuse(deps, args[0])
    require(deps, VERBS["lint"], inv.user, env_name=env.name)
    # Requests that joined one flight (bot.slowwork) share one live review instead of each opening connections.
    pending, review, note = shared(("lint", env.name), lambda: _lint(env))
    if review is None:
        return Reply(f"*Safety review for {env.name}*: nothing pending.")
    lines = [f"*Safety review for {env.name}* — {len(pending)} migration(s): {review.summary}{note}"]
    lines += [f"• `{name}` — {line}" for name, line in review.lines.items()]
    for finding in review.details:
        icon = "🔴" if finding.level == "high" else "🟠"
        lines.append(f"{icon} *{escape(finding.migration)}*: {escape(finding.message)}\n"
                     f"    _instead:_ {escape(finding.alternative)}")
    # One ephemeral answer: the entries that fit whole, and how many did not.
    kept, size = 0, -1
    while kept < len(lines) and size + 1 + len(lines[kept]) <= LINT_REPLY_LIMIT:
        size += 1 + len(lines[kept])
        kept += 1
    text = "\n".join(lines[:kept])
    if kept < len(lines):
        text += (f"\n_… and {len(lines) - kept} more (migrations and findings) not shown here: "
                 "`migrate-bot lint` on the migrations directory prints the whole review._")
    return Reply(text)


def _lint(env: Any) -> tuple[list[Any], Review | None, str]:
    """The live review of ``env``'s pending migrations, or a static one when its database is not reachable."""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.migrations import list_local_migrations
    from bot.integrations.prisma.native import NativeRunner

    directory = engine.latest_migrations_dir(env)
    note = ""
    try:
        if not env.database_url:
            raise BotError("no database_url configured")
        status = NativeRunner(env.database_url).status(directory)
        pending = [m for m in status.local if m.name in set(status.pending)]
        review = review_pending(env.database_url, pending, env, directory) if pending else None
    except BotError as exc:
        # pglast (the SQL parser) is loaded only when a review runs
        from bot.safety import review_migrations

        migrations = list_local_migrations(directory)
        pending = migrations
        static = review_migrations([(m.name, m.sql) for m in migrations], **review_options(env, directory))
        review = Review(summary=static.summary() + (f" · {static.squawk_config}" if static.squawk_config else ""), lines={m.name: m.summary_line for m in static.migrations},
                        details=[FindingDetail(migration=f.migration, level=f.level, message=f.message, why=f.why,
                                               alternative=f.alternative, category=f.category)
                                 for f in static.findings if f.level in ("high", "medium")])
        note = f"\n_Live database not reachable ({exc}); every migration reviewed statically._"
    return pending, review, note
