"""The bot's operations as plain functions: Slack handlers, the CLI and tests all call these the same way."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bot import messages
from bot.calendar import operations as calendar_ops
from bot.calendar.rules import format_duration
from bot.config import EnvironmentConfig
from bot.context import Deps, Invocation, Reply, authorize, environment_or_refuse, readable_environments
from bot.errors import AlreadyDone, BotError, Refusal, RunNotFound, StaleMessage
from bot.messages import slack_date
from bot.redact import redact
from bot.runbook import access, engine, inspection, precheck, rollback, steps, timeline, watch
from bot.runbook.rules import (
    CHECKLIST_LABELS,
    AuditEvent,
    Release,
    Run,
    RunFacts,
    RunStatus,
    StepStatus,
    Transition,
    approve,
    cancel,
    confirm_item,
    may_cancel_run,
    may_rehearse,
    new_run,
    waive,
)
from bot.runbook.steps import deploy as deploy_step
from bot.runbook.steps import migrate as migrate_step
from bot.runbook.views import STATUS_LABEL
from bot.store.runs import new_run_id
from bot.store.windows import WindowStore

log = logging.getLogger(__name__)


# ---- /migrate <env> ------------------------------------------------------------------------------

def start_run(deps: Deps, *, env_name: str, user: str, image_tag: str | None = None,
              ref: str | None = None) -> Reply:
    env = environment_or_refuse(deps, env_name)
    if not deps.policy(env).may_start(user, deps.groups_of(user, env)):
        return Reply(messages.not_allowed_to_start(user, env.name))
    source = env.migrate.source.git
    if source is None and ref:
        return Reply(f"{env.name} reads its migrations from a folder on the bot's disk, not from a git repository, "
                     f"so there is no `{messages.escape(ref[:60])}` to pin to: start with `/migrate {env.name}`.")
    release: Release | None = None
    if source is not None:
        active = deps.store.active_run(env.name)
        if active is not None:  # refused before fetching anything: the lock would refuse it anyway
            return Reply(f"A run is already active in {env.name}: `{active.id}`. Finish or cancel it first "
                         f"(`/migrate cancel {active.id}`).")
        release = resolve_release(deps, env, ref or source.ref_default)  # a GitError is the user's one line
    facts = RunFacts(rehearsal_expected=rehearsal_enabled(env), release=release)
    # h14b: the image the deploy would use is checked in ECR now, so the requester learns early (no run).
    refused = deploy_step.image_refusal(env, image_tag=image_tag, release=facts.release)
    if refused:
        return Reply(messages.escape(refused))
    now = deps.clock()
    transition = new_run(
        run_id=new_run_id(env.name, now),
        env=env.name,
        requested_by=user,
        channel=env.channel,
        now=now,
        approvals_required=env.approvals_required,
        steps_enabled=steps_enabled(env),
        image_tag=image_tag,
        facts=facts,
    )
    run = deps.store.create(transition, lock_hours=env.lock_hours, reason=f"/migrate {env.name}")
    if release is not None:
        deps.store.audit(run.id, AuditEvent(user, "release.pinned", "ok", now,
                                            f"{release.ref} → {release.sha}", {"sha": release.sha,
                                                                              "ref": release.ref}))
    calendar_ops.link_started_run(deps, run)  # a run started inside a maintenance window belongs to it

    def inspect() -> None:
        inspection.inspect_run(deps, run.id)

    return Reply(messages.run_started(run.id, env.name, env.channel), publish_run=run.id, after=inspect)


def resolve_release(deps: Deps, env: EnvironmentConfig, ref: str) -> Release:
    """``ref`` resolved once to the commit the run will read everything from, with what prod last ran.

    Fetches the repository and reads the migrations folder at that commit: a ref that is unknown, a remote that
    cannot be reached or refuses the token, or a commit without the folder raises a GitError (one line).
    """
    source, config = engine.git_source(env), env.migrate.source.git
    assert source is not None and config is not None
    commit = source.resolve(ref)
    folder = engine.release_tree(env, commit.sha) / config.path
    last = deps.store.last_release(env.name)
    baseline = last["sha"] if last else None
    return Release(
        sha=commit.sha, ref=ref, subject=commit.subject[:200], author=commit.author[:100],
        url=config.web_url.replace("{sha}", commit.sha) if config.web_url else "",
        baseline_sha=baseline, baseline_ref=str(last.get("ref", ""))[:100] if last else "",
        commits_ahead=source.commits_between(baseline, commit.sha) if baseline else None,
        baseline_migration=_last_applied(env, folder),
    )


def _last_applied(env: EnvironmentConfig, folder: Path) -> str:
    """The newest migration `_prisma_migrations` records as applied (prod's own history), or '' if unknown."""
    if not env.database_url:
        return ""
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    try:
        rows = [row for row in NativeRunner(env.database_url).status(folder).rows if row.applied]
    except BotError as exc:
        log.warning("could not read _prisma_migrations for the baseline: %s", exc)
        return ""
    newest = max(rows, key=lambda row: (row.finished_at is not None, row.finished_at), default=None)
    return newest.migration_name if newest is not None else ""


def rehearsal_enabled(env: EnvironmentConfig) -> bool:
    return inspection.rehearsal_enabled(env)


def steps_enabled(env: EnvironmentConfig) -> dict[str, bool]:
    return {
        "backup": True,
        "maintenance_on": env.maintenance.enabled,
        "migrate": True,
        "seed": env.seed.enabled,
        "deploy": env.deploy.enabled,
        "smoke": bool(env.smoke),
        "maintenance_off": env.maintenance.enabled,
    }


# ---- buttons -------------------------------------------------------------------------------------

def _denial(deps: Deps, run_id: str, user: str, action: str, exc: Refusal) -> None:
    """Authorization refusals are audited; doubled clicks and stale messages are not news."""
    if isinstance(exc, (AlreadyDone, StaleMessage)):
        return
    deps.store.audit(run_id, AuditEvent(user, action, "denied", deps.clock(), str(exc)))


def confirm(deps: Deps, *, run_id: str, item: str, user: str) -> Reply:
    run = deps.store.get(run_id)
    if not engine.may_operate(deps, run, user):  # the checklist gates a prod change: only the people who may run it
        deps.store.audit(run_id, AuditEvent(user, "checklist.confirm", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may tick the checklist."))
    evidence = _window_evidence(deps, run, user) if item == "window_scheduled" else None
    try:
        deps.store.apply(run_id, lambda run: confirm_item(run, item=item, user=user, now=deps.clock(),
                                                          evidence=evidence))
    except Refusal as exc:
        _denial(deps, run_id, user, "checklist.confirm", exc)
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id)


def _window_evidence(deps: Deps, run: Run, user: str) -> str:
    """"Maintenance window scheduled (if required)": the window this run belongs to (or the one open now, or the
    next one), else a record that none was needed and who said so."""
    now = deps.clock()
    windows = WindowStore(deps.store).scheduled(run.env, after=now)
    window = (next((w for w in windows if w.run_id == run.id), None)
              or next((w for w in windows if w.is_open(now)), None) or (windows[0] if windows else None))
    if window is None:
        return f"no window needed: said by {messages.actor(user)}"
    return f"window `{window.id}` from {slack_date(window.start)} for {format_duration(window.duration_s)}"


def approve_run(deps: Deps, *, run_id: str, user: str, version: int | None,
                fingerprint: Callable[[Run], str | None] | None = None) -> Reply:
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    current = run.status.value == "awaiting_approval" and (version is None or run.version == version)
    approved_fingerprint: str | None = None
    if fingerprint and current and policy.may_approve(user, groups) and user != run.requested_by:
        try:  # fails closed: no readable, exact set of migrations, no approval
            approved_fingerprint = fingerprint(run)
        except Refusal as exc:
            _denial(deps, run_id, user, "run.approve", exc)
            return Reply(messages.denied(str(exc)), publish_run=run_id)
    if current and approved_fingerprint and run.facts.pending is not None \
            and approved_fingerprint != _reviewed_fingerprint(run):
        # The files changed since they were reviewed: review again (voiding waivers) before anyone approves.
        inspection.inspect_run(deps, run_id)
        deps.store.audit(run_id, AuditEvent(user, "run.approve", "denied", deps.clock(),
                                            "the migrations changed since they were reviewed"))
        return Reply(messages.denied("The pending migrations changed since they were reviewed, so the review "
                                     "was run again (any waivers are void). Check the thread, then approve."),
                     publish_run=run_id)

    def change(current: Run) -> Transition:
        return approve(current, user=user, policy=policy, groups=groups, now=deps.clock(),
                       fingerprint=approved_fingerprint)

    try:
        deps.store.apply(run_id, change, expected_version=version)
    except StaleMessage:
        return Reply(messages.stale_message(), blocks=deps.publisher.current_view(run_id)["blocks"]
                     if deps.publisher else None, publish_run=run_id)
    except Refusal as exc:
        _denial(deps, run_id, user, "run.approve", exc)
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id)


def waive_findings(deps: Deps, *, run_id: str, user: str, reason: str) -> Reply:
    """An approver accepts the blocking high findings with a reason (audited; voided if a file changes)."""
    run = deps.store.get(run_id)
    env = environment_or_refuse(deps, run.env)
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    try:
        deps.store.apply(run_id, lambda current: waive(current, user=user, policy=policy, groups=groups,
                                                       reason=reason, now=deps.clock()))
    except Refusal as exc:
        _denial(deps, run_id, user, "finding.waive", exc)
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply("", publish_run=run_id)


def _reviewed_fingerprint(run: Run) -> str:
    return engine.fingerprint_of([(p.name, p.checksum) for p in run.facts.pending or []], engine.release_sha(run))


def may_cancel(deps: Deps, run: Run, user: str) -> bool:
    """The run's requester and the environment's requesters and approvers; a CLI operator as its Slack user."""
    env = deps.config.environment(run.env)
    if env is None:
        return False
    who = access.principal(user)
    return bool(who) and may_cancel_run(run, user=who, policy=deps.policy(env), groups=deps.groups_of(user, env))


def cancel_run(deps: Deps, *, run_id: str, user: str, reason: str = "") -> Reply:
    run = deps.store.get(run_id)
    if not may_cancel(deps, run, user):
        deps.store.audit(run_id, AuditEvent(user, "run.cancel", "denied", deps.clock(), "not allowed"))
        if run.status is RunStatus.FAILED:
            return Reply(messages.denied(f"Only the requester of this run or an approver of `{run.env}` may close "
                                         "a failed run."), publish_run=run_id)
        return Reply(messages.denied(messages.not_allowed_to_cancel(run.env)), publish_run=run_id)
    try:
        deps.store.apply(run_id, lambda current: cancel(current, user=user, now=deps.clock(), reason=reason))
    except Refusal as exc:
        _denial(deps, run_id, user, "run.cancel", exc)
        return Reply(messages.denied(str(exc)), publish_run=run_id)
    return Reply(messages.run_cancelled(run_id), publish_run=run_id)


# ---- status --------------------------------------------------------------------------------------

STEP_STATE_WORDS = {
    StepStatus.RUNNING: "running",
    StepStatus.SUCCEEDED: "done",
    StepStatus.FAILED: "failed",
    StepStatus.SKIPPED: "skipped",
    StepStatus.INTERRUPTED: "interrupted: check what it left behind",
}


def describe_run(run: Run, now: datetime, *, for_slack: bool = True) -> str:
    """One run as `/migrate status` shows it: its state in words, people as mentions, steps by their labels.

    ``for_slack=False`` is the terminal's `migrate-bot status`: user IDs and no Slack formatting.
    """
    def who(user: str) -> str:
        return messages.actor(user) if for_slack else user

    minutes = int((now - run.created_at).total_seconds() // 60)
    age = f"{format_duration(minutes * 60)} ago" if minutes > 0 else "less than a minute ago"
    env = f"*{run.env}*" if for_slack else run.env
    approvals = f"{len(run.approvals)}/{run.approvals_required} approvals"
    if run.approvals:
        approvals += f" ({', '.join(who(a.by) for a in run.approvals)})"
    line = (f"{run.id} · {env} · {STATUS_LABEL[run.status]} · requested by {who(run.requested_by)} {age} · "
            f"{len(run.checklist)}/{len(CHECKLIST_LABELS)} checklist · {approvals}")
    if run.facts.release is not None:
        ref = messages.escape(run.facts.release.ref[:60]) if for_slack else run.facts.release.ref[:60]
        line += f" · release {run.facts.release.short} ({ref})"
    steps = [f"{s.label} ({STEP_STATE_WORDS[s.status]})" for s in run.steps if s.status in STEP_STATE_WORDS]
    return line + ("\n    " + " · ".join(steps) if steps else "")


def status(deps: Deps, query: str | None = None, envs: list[str] | None = None, *, for_slack: bool = True) -> str:
    """Status for Slack or (``for_slack=False``) the terminal: one run by id, the runs of an env, or all recent
    ones (of the environments ``envs`` only, when given)."""
    now = deps.clock()
    if query and deps.config.environment(query) is None:
        run = deps.store.get(query)
        return describe_run(run, now, for_slack=for_slack)
    if envs is not None and not query:
        runs = deps.store.recent_runs(limit=10, envs=envs)
    else:
        runs = deps.store.recent_runs(limit=10, env=query)
    if not runs:
        return f"No runs{f' in {query}' if query else ''} yet."
    active = [r for r in runs if r.is_active]
    lines = [describe_run(r, now, for_slack=for_slack) for r in runs]
    head = f"{len(active)} active run(s)" + (f" in {query}" if query else "")
    return head + ":\n" + "\n".join(lines)


# ---- the /migrate dispatcher ---------------------------------------------------------------------

def handle_command(deps: Deps, inv: Invocation) -> Reply:
    """Parse `/migrate ...` text and run the operation. Raises nothing a user shouldn't see."""
    try:
        words = shlex.split(inv.text.strip())
    except ValueError:
        return Reply(f"Could not parse `{messages.escape(inv.text[:100])}` (unbalanced quotes).\n{messages.USAGE}")
    if not words or words[0] in ("help", "-h", "--help"):
        return Reply(messages.USAGE)
    verb, rest = words[0].lower(), words[1:]
    try:
        refused, envs = _guard_command(deps, inv.user, verb, rest)
        if refused:
            return Reply(refused)
        if _verb_key(verb, rest) in ("status", "check", "lint", "timeline", "windows"):  # the viewers' verbs
            return _redacted(_read_command(deps, inv, verb, rest, envs))
        if verb == "cancel":
            if not rest:
                return Reply("Which run? `/migrate cancel <run-id> [reason]`")
            return cancel_run(deps, run_id=rest[0], user=inv.user, reason=" ".join(rest[1:]))
        if verb in deps.config.environments:
            parsed = parse_start(rest)
            if parsed is None:
                return Reply(f"Unexpected `{messages.escape(' '.join(rest)[:200])}`.\n{messages.USAGE}")
            ref, image_tag = parsed
            return start_run(deps, env_name=verb, user=inv.user, image_tag=image_tag, ref=ref)
        target = VERBS.get(verb)
        if target is not None:
            return target(deps, inv, rest)
        if len(words) == 1:
            return Reply(messages.unknown_environment(verb[:40], sorted(deps.config.environments)))
        return Reply(f"Unknown command `{messages.escape(verb[:40])}`.\n{messages.USAGE}")
    except RunNotFound as exc:
        return Reply(str(exc))
    except Refusal as exc:
        return Reply(str(exc))


def parse_start(rest: list[str]) -> tuple[str | None, str | None] | None:
    """`/migrate <env> [<ref>] [--image <tag>]` after the environment: (ref, image tag), or None if malformed."""
    ref: str | None = None
    image_tag: str | None = None
    words = list(rest)
    while words:
        word = words.pop(0)
        if word == "--image" and words and words[0] and image_tag is None:
            image_tag = words.pop(0)
        elif not word.startswith("-") and ref is None:
            ref = word
        else:
            return None
    return ref, image_tag


def _verb_key(verb: str, rest: list[str]) -> str:
    """The verb's entry in bot.runbook.access.VERBS: `windows cancel` and `windows reschedule` change calendar_ops."""
    return f"windows {rest[0]}" if verb == "windows" and rest and rest[0] in ("cancel", "reschedule") else verb


def _guard_command(deps: Deps, user: str, verb: str, rest: list[str]) -> tuple[str | None, list[str] | None]:
    """Check the verb's permission (bot.runbook.access.VERBS) before any of its work: the refusal, and for a listing
    without an environment the environments the user may read. Usage mistakes are left to the verb."""
    run: Run | None = None
    target = rest[0] if rest else None
    env_name: str | None
    if verb in deps.config.environments:
        rule, env_name = access.VERBS[access.ENV_VERB], verb
    elif _verb_key(verb, rest) != verb:
        rule = access.VERBS[_verb_key(verb, rest)]
        window = WindowStore(deps.store).get(rest[1]) if len(rest) > 1 else None
        if window is None:
            return None, None
        refused = authorize(deps, rule, user, env_name=window.env)
        if refused:
            WindowStore(deps.store).audit(window.id, user, rule.audit, "denied", deps.clock(), "not allowed")
        return refused, None
    elif verb in access.VERBS:
        rule, env_name = access.VERBS[verb], target
        if verb in ("status", "timeline", "cancel") and target and deps.config.environment(target) is None:
            run = deps.store.get(target)
            env_name = run.env
    else:
        return None, None
    if rule.permission in (access.ANYONE, access.LOCAL):
        return None, None
    if env_name is None and verb in ("status", "windows"):
        envs = readable_environments(deps, user)
        return (None, envs) if envs else (access.refusal(rule, ""), None)
    if env_name is None or deps.config.environment(env_name) is None:
        return None, None  # the verb answers with its usage or the list of environments
    audited = run if rule.permission != access.VIEWER else None
    return authorize(deps, rule, user, env_name=env_name, run=audited), None


def _read_command(deps: Deps, inv: Invocation, verb: str, rest: list[str], envs: list[str] | None) -> Reply:
    """The read-only verbs (status, check, lint, timeline, windows), shown only to the environment's viewers."""
    if verb == "status":
        if len(rest) > 1:
            return Reply(messages.USAGE)
        return Reply(status(deps, rest[0] if rest else None, envs=envs))
    return VERBS[verb](deps, inv, rest)


def _redacted(reply: Reply) -> Reply:
    """Whatever a read-only verb prints goes through redaction: text and every string in its blocks."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    reply.text = redact(reply.text)
    reply.blocks = clean(reply.blocks)
    return reply


# The other `/migrate` verbs: verb -> function(deps, invocation, args) -> Reply.
VERBS: dict[str, Callable[[Deps, Invocation, list[str]], Reply]] = {
    "check": precheck.precheck_reply,
    "timeline": timeline.timeline_reply,
    "lint": inspection.lint_reply,
    "schedule": calendar_ops.schedule_command,
    "windows": calendar_ops.windows_command,
}


# ---- the steps: the engine (bot.runbook.engine) is handed what to run and what follows each step ---------------

def entered_monitoring(deps: Deps, run_id: str) -> None:
    """If the run has just reached `monitoring`, take the readings and start the 24-hour watch."""
    run = deps.store.find(run_id)
    if run is not None and run.status is RunStatus.MONITORING:
        try:
            watch.start_monitoring(deps, run_id)
        except BotError as exc:
            log.warning("monitoring of %s did not start: %s", run_id, exc)


def _rehearse(deps: Deps, run_id: str) -> None:
    """After the backup: rehearse the pending migrations on its restored copy."""
    try:
        inspection.rehearse_run(deps, run_id)
    except BotError as exc:
        log.warning("rehearsal of %s did not complete: %s", run_id, exc)


def rehearse_again(deps: Deps, *, run_id: str, user: str, version: int | None = None) -> Reply:
    """"Rehearse again": after a rehearsal that did not finish (the bot stopped) or could not run."""
    run = deps.store.get(run_id)
    if not engine.may_operate(deps, run, user):  # as every step click: only the requester or an approver
        deps.store.audit(run_id, AuditEvent(user, "rehearsal.start", "denied", deps.clock(), "not allowed"))
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may rehearse."))
    if version is not None and version != run.version:
        return Reply(messages.stale_message(), publish_run=run_id)
    if not may_rehearse(run):
        return Reply("There is no rehearsal to run for this run now.", publish_run=run_id)
    deps.executor.submit(inspection.rehearse_run, deps, run_id, user)
    return Reply("", publish_run=run_id)


def _inspect_again(deps: Deps, run_id: str) -> None:
    """Review what is pending now, so the next approval binds to it on its first click (and reviewers see it)."""
    try:
        inspection.inspect_run(deps, run_id)
    except BotError as exc:
        log.warning("could not inspect %s again after voiding its approvals: %s", run_id, exc)


def _advise_rollback(why: str) -> Callable[[Deps, str, str], None]:
    def advise(deps: Deps, run_id: str, error: str) -> None:
        rollback.recommend_rollback(deps, run_id, f"{why}: {error[:300]}")
        deps.publish(run_id)

    return advise


ROLLBACK_TRIGGERS = {
    "migrate": "the migration failed",
    "deploy": "the new version did not stabilise (the app fails to start)",
    "smoke": "a smoke test failed (critical functionality broken)",
}

STEPS = engine.StepTable(
    executors=steps.EXECUTORS,
    settled=entered_monitoring,
    after_success={"backup": _rehearse},
    after_failure={name: _advise_rollback(why) for name, why in ROLLBACK_TRIGGERS.items()},
    approval_voided=_inspect_again,
    rollback_voided=rollback.record_rollback_voided,
    resolving={"migrate": migrate_step.migrate_resolved_by_hand},
)


def run_step(deps: Deps, *, run_id: str, name: str, user: str, wait: bool = False,
             version: int | None = None) -> Reply:
    """A step's Run/Retry button: claim the step once and execute it in the worker pool (bot.runbook.engine)."""
    return engine.run_step(deps, STEPS, run_id=run_id, name=name, user=user, wait=wait, version=version)


def skip_step(deps: Deps, *, run_id: str, name: str, user: str, version: int | None = None) -> Reply:
    """A step's Skip button."""
    return engine.skip(deps, STEPS, run_id=run_id, name=name, user=user, version=version)


def mark_done(deps: Deps, *, run_id: str, name: str, user: str, version: int | None = None) -> Reply:
    """An interrupted step's "Mark done" button, after a human checked what it did."""
    return engine.mark_done(deps, STEPS, run_id=run_id, name=name, user=user, version=version)


def proceed_anyway(deps: Deps, *, run_id: str, user: str, version: int | None = None) -> Reply:
    """The "Proceed anyway" button of a step held by the pre-flight."""
    return engine.proceed_anyway(deps, STEPS, run_id=run_id, user=user, version=version)
