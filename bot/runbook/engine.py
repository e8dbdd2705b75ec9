"""The step engine: claim a step in Redis, run its executor, record the outcome; it knows no step by name.

The runbook's operations (bot.runbook.operations) hand it a StepTable: the executor of each step and what follows.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bot import messages
from bot.config import EnvironmentConfig
from bot.context import Deps, Reply, environment_or_refuse
from bot.edge import report
from bot.errors import AlreadyDone, BotError, Refusal, StaleMessage, WrongState
from bot.observability import metrics
from bot.observability.logs import log_context
from bot.redact import redact
from bot.runbook import access
from bot.runbook.rules import (
    STEP_SPECS,
    AuditEvent,
    Run,
    StepResult,
    StepStatus,
    Transition,
    begin_step,
    close_monitored,
    fail_step,
    finish_step,
    hold_step,
    override_hold,
    remember_on_step,
    report_progress,
    resolve_interrupted,
    skip_step,
    void_approvals_for_step,
)

if TYPE_CHECKING:
    from bot.integrations.aws import Aws
    from bot.integrations.git import GitSource

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
MAX_LOG_MESSAGES = 4
"""A step's output longer than this many thread messages is uploaded as a file instead."""


def _first_words(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, shortened between words and marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit // 2, limit - 1)
    return text[:cut if cut > 0 else limit - 1].rstrip() + "…"


class ApprovalVoided(BotError):
    """The migrations changed after approval; the run went back to awaiting approval."""


class RollbackVoided(BotError):
    """The down.sql to run is not the one a second person approved; nothing ran, the rollback is withdrawn."""


class StepHeld(BotError):
    """A go-time check found something a human must look at; the step went back to pending, unchanged."""

    def __init__(self, message: str, blockers: list[str]) -> None:
        super().__init__(message)
        self.blockers = blockers


@dataclass
class StepOutcome:
    summary: str
    result: StepResult = field(default_factory=StepResult)
    """What the step records, of its own kind (bot.runbook.rules.STEP_SPECS)."""


@dataclass
class StepContext:
    """What a step executor gets: the run as claimed, its environment, and ways to report progress."""

    deps: Deps
    run: Run
    env: EnvironmentConfig
    _last_progress: float = 0.0
    _log_lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    step_name: str = ""

    def progress(self, text: str, *, force: bool = False) -> None:
        """Show progress in the message, at most every ~10 s (Slack's chat.update is rate limited)."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        if redact(text) != text:
            # Stars in place of a secret tell nobody anything: the line is left out (steps describe a database
            # by its name and server, never by its URL), and the previous one stays.
            log.warning("progress of %s withheld: it contained a secret", self.step_name)
            return
        try:
            self.deps.store.apply(self.run.id, lambda run: report_progress(
                run, name=self.step_name, progress=_first_words(text, 120), now=self.deps.clock()))
            self.deps.publish(self.run.id)
        except BotError as exc:
            log.warning("progress update failed: %s", exc)

    def remember(self, values: StepResult) -> None:
        """Record facts on the running step at once (before acting), so a retry after a crash still has them."""
        self.deps.store.apply(self.run.id, lambda run: remember_on_step(run, name=self.step_name,
                                                                        values=values))
        self.run = self.deps.store.get(self.run.id)

    def aws(self, *, max_wait_s: float | None = None) -> Aws:
        """An AWS client for this environment; waits up to the deploy timeout unless told otherwise."""
        from bot.integrations.aws import Aws  # boto3 is slow to import: loaded by the steps that use AWS

        return Aws(region=self.env.aws.region, endpoint_url=self.env.aws.endpoint_url,
                   poll_interval_s=self.env.deploy.poll_interval_s,
                   max_wait_s=max_wait_s if max_wait_s is not None else self.env.deploy.wait_timeout_s)

    def log(self, line: str) -> None:
        """Collect output for the thread (posted as one block when the step ends)."""
        with self._lock:
            self._log_lines.append(redact(line.rstrip()))

    def thread(self, text: str | list[str]) -> None:
        """Post in the run's thread, as several messages when it is long (nothing is cut off)."""
        run = self.deps.store.find(self.run.id)
        if run and run.message_ts and self.deps.slack is not None:
            try:
                self.deps.slack.post_long(run.channel, text, thread_ts=run.message_ts)
            except BotError as exc:
                log.warning("thread post failed: %s", exc)

    def flush_log(self, title: str) -> None:
        """The step's output in the thread, whole: in a code block over a few messages, or as a file when longer."""
        with self._lock:
            lines, self._log_lines = self._log_lines, []
        if not lines:
            return
        body = "\n".join(lines)
        text = f"*{title}* output:\n{messages.code_block(body)}"
        if len(messages.split_message(text)) <= MAX_LOG_MESSAGES:
            self.thread(text)
            return
        run = self.deps.store.find(self.run.id)
        if run is None or not run.message_ts or self.deps.slack is None:
            return
        try:
            self.deps.slack.upload_file(channel=run.channel, thread_ts=run.message_ts,
                                        filename=f"{run.id}-{self.step_name or 'step'}-output.txt",
                                        content=body.encode(), title=f"{title} output ({len(lines)} lines)")
        except BotError as exc:
            log.warning("step output not uploaded (%s); posting it in pieces", exc)
            self.thread(text)


Executor = Callable[[StepContext], StepOutcome]
FollowUp = Callable[[Deps, str], None]
"""(deps, run_id): runs after the engine recorded a step; handles its own errors."""


@dataclass(frozen=True)
class StepTable:
    """What the runbook hands the engine: how to do each step, and what follows each step (bot.runbook.operations)."""

    executors: Mapping[str, Executor]
    settled: FollowUp
    """After a step succeeded, was skipped or was resolved by hand (the run may have reached monitoring)."""
    after_success: Mapping[str, FollowUp] = field(default_factory=dict)
    """Step -> what follows its success (after ``settled``)."""
    after_failure: Mapping[str, Callable[[Deps, str, str], None]] = field(default_factory=dict)
    """Step -> what follows its failure, given the error (after the failure is recorded and shown)."""
    approval_voided: FollowUp | None = None
    """After an executor found the approved migrations changed and the approvals were voided."""
    rollback_voided: Callable[[Deps, str, str], None] | None = None
    """(deps, run_id, reason): an executor found the approved rollback is not what would run."""
    resolving: Mapping[str, Callable[[Deps, Run, str], Reply | None]] = field(default_factory=dict)
    """Step -> a guard before an interrupted step is marked done by ``user``: a refusal, or None to go on."""


# ---- permissions ---------------------------------------------------------------------------------

def may_operate(deps: Deps, run: Run, user: str) -> bool:
    """The requester and the approvers run the steps; nobody else touches a run."""
    who = access.principal(user)  # a command-line operator counts as the Slack user it is mapped to, or as nobody
    if who and who == run.requested_by:
        return True
    env = deps.config.environment(run.env)
    if env is None:
        return False
    return deps.policy(env).may_approve(who, deps.groups_of(user, env))


# ---- the engine: bot.runbook.operations calls these with its StepTable -----------------------------------

def run_step(deps: Deps, steps: StepTable, *, run_id: str, name: str, user: str, wait: bool = False,
             version: int | None = None) -> Reply:
    """Claim the step (exactly once across clicks and replicas) and execute it in the worker pool.

    ``version`` is the run version the clicked button was rendered at: a stale or replayed click changes nothing.
    """
    if name not in STEP_SPECS:
        return Reply(f"Unknown step `{name[:40]}`. Nothing was changed.")
    run = deps.store.get(run_id)
    if not may_operate(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "step.start", "denied", deps.clock(), f"{name}: not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may run steps."),
                     publish_run=run_id)
    try:
        claimed = deps.store.apply(run_id, lambda current: begin_step(
            current, name=name, user=user, owner=deps.instance_id, now=deps.clock()), expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except AlreadyDone as exc:
        return Reply(str(exc))
    except Refusal as exc:
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    future = deps.executor.submit(execute_claimed, deps, steps, claimed.run, name)
    if wait:
        future.result()
    return Reply("", publish_run=run_id)


def execute_claimed(deps: Deps, steps: StepTable, run: Run, name: str) -> None:
    """Run one claimed step and record how it ended. Never raises."""
    state = next((step for step in run.steps if step.name == name), None)
    with log_context(run_id=run.id, env=run.env, step=name, user=state.by if state else None):
        _execute(deps, steps, run, name)


def _execute(deps: Deps, steps: StepTable, run: Run, name: str) -> None:
    started = time.monotonic()

    def took(outcome: str) -> None:
        """How long the executor worked, by how it ended: one log line, and migrate_bot_step_duration_seconds."""
        elapsed = time.monotonic() - started
        log.info("step %s of %s %s after %.1f s", name, run.id, outcome, elapsed)
        metrics.observe_step(name, outcome, elapsed, steps=STEP_SPECS)

    env = deps.config.environment(run.env)
    deps.publish(run.id)
    if env is None:
        _record_failure(deps, steps, run.id, name, f"environment {run.env} is no longer configured")
        return
    ctx = StepContext(deps=deps, run=run, env=env, step_name=name)
    try:
        outcome = steps.executors[name](ctx)
    except ApprovalVoided as exc:
        took("voided")
        ctx.flush_log(STEP_SPECS[name].label)
        _record_voided(deps, steps, run.id, name, str(exc))
        return
    except RollbackVoided as exc:
        took("voided")
        ctx.flush_log(STEP_SPECS[name].label)
        if steps.rollback_voided is not None:
            steps.rollback_voided(deps, run.id, str(exc))
        return
    except StepHeld as held:
        took("held")
        reason, blockers = str(held), held.blockers
        try:
            deps.store.apply(run.id, lambda current: hold_step(current, name=name, now=deps.clock(),
                                                               reason=reason, blockers=blockers))
        except BotError as error:
            log.error("could not record the hold of %s/%s: %s", run.id, name, error)
        deps.publish(run.id)
        return
    except BotError as exc:
        took("failed")
        ctx.flush_log(STEP_SPECS[name].label)
        _record_failure(deps, steps, run.id, name, str(exc))
        return
    except Exception as exc:  # a bug must still end the step visibly, without a traceback in Slack
        took("crashed")
        log.error("step %s of %s crashed: %s: %s", name, run.id, type(exc).__name__, redact(str(exc))[:300])
        report(exc)
        ctx.flush_log(STEP_SPECS[name].label)
        _record_failure(deps, steps, run.id, name, f"unexpected error ({type(exc).__name__}); see the bot's logs")
        return
    took("succeeded")
    ctx.flush_log(STEP_SPECS[name].label)
    try:
        deps.store.apply(run.id, lambda current: finish_step(
            current, name=name, result=outcome.result, now=deps.clock(), summary=outcome.summary))
    except BotError as exc:
        log.error("could not record success of %s/%s: %s", run.id, name, exc)
    deps.publish(run.id)
    steps.settled(deps, run.id)
    follow_up = steps.after_success.get(name)
    if follow_up is not None:
        follow_up(deps, run.id)


def _record_failure(deps: Deps, steps: StepTable, run_id: str, name: str, error: str) -> None:
    try:
        deps.store.apply(run_id, lambda current: fail_step(current, name=name, error=error[:500], now=deps.clock()))
    except BotError as exc:
        log.error("could not record failure of %s/%s: %s", run_id, name, exc)
    deps.publish(run_id)
    follow_up = steps.after_failure.get(name)
    if follow_up is not None:
        follow_up(deps, run_id, error)


def _record_voided(deps: Deps, steps: StepTable, run_id: str, name: str, reason: str) -> None:
    try:
        deps.store.apply(run_id, lambda current: void_approvals_for_step(current, name=name, reason=reason,
                                                                         now=deps.clock()))
    except BotError as exc:
        log.error("could not void approvals of %s: %s", run_id, exc)
    deps.publish(run_id)
    if steps.approval_voided is not None:
        steps.approval_voided(deps, run_id)


def skip(deps: Deps, steps: StepTable, *, run_id: str, name: str, user: str, version: int | None = None) -> Reply:
    run = deps.store.get(run_id)
    if not may_operate(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "step.skip", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may skip steps."))
    return apply_click(deps, run_id, lambda current: skip_step(current, name=name, user=user, now=deps.clock()),
                       version=version, after=lambda: steps.settled(deps, run_id))


def mark_done(deps: Deps, steps: StepTable, *, run_id: str, name: str, user: str,
              version: int | None = None) -> Reply:
    run = deps.store.get(run_id)
    if not may_operate(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "step.mark_done", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may resolve steps."))
    if version is not None and version != run.version:
        return Reply(messages.stale_message(), publish_run=run_id)
    guard = steps.resolving.get(name)
    if guard is not None and run.step(name).status is StepStatus.INTERRUPTED:
        refused = guard(deps, run, user)
        if refused is not None:
            return refused

    def resolve(current: Run) -> Transition:
        return resolve_interrupted(current, name=name, user=user, now=deps.clock(), done=True)

    return apply_click(deps, run_id, resolve, version=version, after=lambda: steps.settled(deps, run_id))


def proceed_anyway(deps: Deps, steps: StepTable, *, run_id: str, user: str, version: int | None = None) -> Reply:
    """The human saw the pre-flight's blockers and chose to go on: audited, then the held step runs."""
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    try:
        overridden = deps.store.apply(run_id, lambda current: override_hold(
            current, user=user, policy=deps.policy(env), groups=deps.groups_of(user, env), now=deps.clock()),
            expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except Refusal as exc:
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    override = overridden.run.facts.hold_override
    assert override is not None  # override_hold recorded it
    return run_step(deps, steps, run_id=run_id, name=override.step, user=user)


def close_run(deps: Deps, *, run_id: str, user: str, version: int | None) -> Reply:
    run = deps.store.get(run_id)
    if not may_operate(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "run.finish", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may close the run."))

    return apply_click(deps, run_id, lambda current: close_monitored(current, user=user, now=deps.clock()),
                       version=version)


def apply_click(deps: Deps, run_id: str, change: Callable[[Run], Transition], *, version: int | None,
                after: Callable[[], None] | None = None) -> Reply:
    """Apply a button's change to the run as its clicker saw it (``version``): a stale click gets the current
    message, a refusal by the rules its one line; success re-renders the run, then ``after`` runs."""
    try:
        deps.store.apply(run_id, change, expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), publish_run=run_id)
    except Refusal as exc:
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id, after=after)


# ---- where a run's migrations are, and the fingerprint of what was approved ------------------------

def git_source(env: EnvironmentConfig) -> GitSource | None:
    """The client of the environment's release repository (``migrate.source.git``), or None."""
    config = env.migrate.source.git
    if config is None:
        return None
    from bot.integrations.git import GitSource  # loaded only where a release is read

    cache = Path(config.cache_dir) if config.cache_dir else Path(tempfile.gettempdir()) / "migrate-bot-git"
    return GitSource(config.url, path=config.path, cache_dir=cache, token=config.token(),
                     timeout_s=config.timeout_s)


def release_tree(env: EnvironmentConfig, sha: str) -> Path:
    """The repository's files at ``sha`` that a run reads: ``path``, every ``.squawk.toml`` from it up to the root
    (the safety review honours the repository's), and for the Prisma CLI the parent of ``path`` (the schema)."""
    source = git_source(env)
    if source is None:
        raise WrongState(f"{env.name} has no migrate.source.git to read commit {sha[:7]} from.")
    folder = PurePosixPath(source.path)
    squawk = tuple(str(p / ".squawk.toml").removeprefix("./") for p in (folder, *folder.parents))
    parent = str(folder.parent)
    schema = (parent,) if env.migrate.runner == "prisma_cli" and parent not in (".", "") else ()
    return source.tree(sha, extra=schema + squawk)


def _pinned(env: EnvironmentConfig, run: Run | None) -> str | None:
    """The commit ``run`` reads its files from: its release's SHA when the environment has a git source.

    Without one (a release recorded on a run of a local folder, or the source removed from the file mid-run) the
    run reads ``migrations_dir`` as any local run does; the approval still binds the SHA and the checksums of
    exactly those files, so different files void it.
    """
    release = run.facts.release if run is not None else None
    return release.sha if release is not None and env.migrate.source.git is not None else None


def migrations_dir(env: EnvironmentConfig, run: Run | None = None) -> Path:
    """The folder of migrations ``run`` reads: its release's commit when pinned to one, else ``migrations_dir``."""
    sha, config = _pinned(env, run), env.migrate.source.git
    if sha is None or config is None:
        return Path(env.migrate.migrations_dir)
    return release_tree(env, sha) / config.path


def latest_migrations_dir(env: EnvironmentConfig) -> Path:
    """For `/migrate check` and `lint` (no run): the folder at ``ref_default`` now, or ``migrations_dir``."""
    source, config = git_source(env), env.migrate.source.git
    if source is None or config is None:
        return Path(env.migrate.migrations_dir)
    return release_tree(env, source.resolve(config.ref_default).sha) / config.path


def prisma_cwd(env: EnvironmentConfig, run: Run | None = None) -> Path:
    """Where the Prisma CLI runs: the checkout of the run's commit (schema found under it), else ``prisma_cwd``."""
    sha = _pinned(env, run)
    if sha is None:
        return Path(env.migrate.prisma_cwd or ".")
    return release_tree(env, sha) / (env.migrate.prisma_cwd or "")


def pending_migrations(env: EnvironmentConfig, run: Run | None = None) -> list[tuple[str, str]]:
    """(name, checksum) of the migrations not yet applied in this environment's database."""
    if not env.database_url:
        return []
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    return pending_of(NativeRunner(env.database_url).status(migrations_dir(env, run)))


def pending_of(status: Any) -> list[tuple[str, str]]:
    """(name, checksum) of the pending migrations of one `NativeRunner.status` reading."""
    by_name = {m.name: m.checksum for m in status.local}
    return [(name, by_name[name]) for name in status.pending if name in by_name]


def fingerprint_of(pending: list[tuple[str, str]], sha: str | None = None) -> str:
    """The checksums of ``pending``, and for a release-pinned run its commit: an approval binds all of them."""
    lines = [f"release:{sha}"] if sha else []
    return hashlib.sha256("\n".join(lines + [f"{n}:{c}" for n, c in pending]).encode()).hexdigest()


def release_sha(run: Run) -> str | None:
    return run.facts.release.sha if run.facts.release is not None else None


def approval_fingerprint(deps: Deps, run: Run) -> str:
    """What an approval approves: the checksums of exactly the pending migrations at that moment.

    Fails closed: when they cannot be read (a database blip, a missing or unreadable folder), or the folder
    shows none of the migrations that were reviewed, this raises a refusal and nothing is approved.
    """
    env = deps.config.environment(run.env)
    if env is None:
        raise WrongState(f"Environment {run.env} is no longer configured, so there is nothing to approve.")
    if not env.database_url:  # nothing can be migrated here: the migrate step refuses without a database
        return fingerprint_of([], release_sha(run))
    try:
        pending = pending_migrations(env, run)
    except (BotError, OSError, UnicodeError) as exc:
        log.warning("could not read pending migrations for the approval fingerprint: %s", redact(str(exc))[:300])
        raise WrongState("The pending migrations could not be read just now "
                         f"({redact(str(exc))[:200]}), so there is nothing exact to approve. Try again once the "
                         "database and the migrations folder are readable.") from None
    reviewed = run.facts.pending or []
    if not pending and reviewed:
        raise WrongState(f"None of the {len(reviewed)} reviewed migration(s) can be found pending now: the "
                         "migrations folder looks empty or unreadable, or they were applied elsewhere. "
                         "Nothing can be approved until the pending migrations can be read.")
    return fingerprint_of(pending, release_sha(run))


def unapproved_migrations(run: Run, status: Any) -> str | None:
    """Why the migrations about to run are not the ones approved, or None when they are.

    The approval binds the checksums of the migrations pending at approval (the reviewed list). A retry after
    part of them was applied (an interrupted deploy, `migrate resolve --applied`) still runs only approved
    SQL: every migration pending now must be approved with its checksum, and every approved one no longer
    pending must be recorded in `_prisma_migrations` with the approved checksum.
    """
    if not run.fingerprint:
        return "this run's approval recorded no fingerprint of the migrations it approved; approve again"
    pending = pending_of(status)
    sha = release_sha(run)
    if fingerprint_of(pending, sha) == run.fingerprint:
        return None
    changed = ("the pending migrations changed after approval "
               f"(now: {', '.join(n for n, _ in pending) or 'none'}); approve again")
    reviewed = [(p.name, p.checksum) for p in run.facts.pending or []]
    if not reviewed or fingerprint_of(reviewed, sha) != run.fingerprint:
        return changed
    approved = dict(reviewed)
    if any(approved.get(name) != checksum for name, checksum in pending):
        return changed
    pending_names = {name for name, _ in pending}
    recorded = {(row.migration_name, row.checksum) for row in status.rows if row.rolled_back_at is None}
    if any(name not in pending_names and (name, checksum) not in recorded for name, checksum in reviewed):
        return changed
    return None
