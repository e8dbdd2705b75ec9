"""The kernel every operation shares: Deps, Reply, Invocation and the permission checks; imports no operation."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bot import messages
from bot.config import BotConfig, EnvironmentConfig
from bot.edge import contained
from bot.errors import BotError, NotAllowed
from bot.integrations.slack import Slack
from bot.observability.logs import carry_context
from bot.runbook import access
from bot.runbook.access import Rule
from bot.runbook.publisher import Publisher
from bot.runbook.rules import AuditEvent, Policy, Run
from bot.store.runs import RunStore


class JobQueue(Protocol):
    """Where scheduled jobs go: jobs.scheduler's shared APScheduler job store (any replica may add).

    Functions are named by module path ("jobs.watch:watch_tick") because the jobs are pickled into Redis.
    """

    def add(self, job_id: str, run_at: datetime, grace_s: int, args: tuple[str, str, int]) -> None:
        """A window's timeline message (jobs.scheduler:fire_reminder) at ``run_at``."""

    def add_interval(self, job_id: str, func: str, *, seconds: float, start: datetime, end: datetime,
                     args: tuple[str, ...]) -> None:
        """``func`` every ``seconds`` from ``start`` to ``end`` (the 24-hour watch)."""

    def add_at(self, job_id: str, func: str, *, run_at: datetime, args: tuple[str, ...], grace_s: int) -> None:
        """``func`` once at ``run_at``."""

    def remove(self, job_ids: list[str]) -> None:
        """Remove these jobs; ids that are gone already are fine."""


@dataclass
class Deps:
    """Everything an operation needs, built once at startup and passed in."""

    config: BotConfig
    store: RunStore
    slack: Slack | None
    publisher: Publisher | None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    instance_id: str = "local"
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=16,
                                                                                     thread_name_prefix="step"))
    followups: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=32,
                                                                                      thread_name_prefix="followup"))
    forms: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=4,
                                                                                  thread_name_prefix="form"))
    """Opening forms (views.open): its own pool, which no queued post ever occupies (see ``promptly``)."""
    jobs: Callable[[Deps], JobQueue] | None = None
    """The job queue for these deps (jobs.scheduler.queue_for, given where the process is composed: the
    server, tests); None where nothing is scheduled (the CLI's status, cancel and timeline)."""

    def background(self, fn: Callable[[], object], *, doing: str = "follow-up") -> None:
        """Run Slack-facing work after the HTTP acknowledgement, off the request thread; never raises (a failure
        is one log line, see bot.errors.contained)."""
        self.followups.submit(_guarded(fn, doing))

    def promptly(self, fn: Callable[[], object], *, doing: str = "form") -> None:
        """Work that must reach Slack within seconds of the click: opening a form, whose trigger_id Slack accepts
        for 3 s. It runs on a small pool of its own, so posts queued behind Slack's rate limits never delay it;
        whatever it has to post afterwards goes to ``background``. Never raises."""
        self.forms.submit(_guarded(fn, doing))

    def job_queue(self) -> JobQueue:
        """Where reminders and the watch are scheduled; a BotError in a process composed without one."""
        if self.jobs is None:
            raise BotError("This process has no job queue, so nothing can be scheduled from it.")
        return self.jobs(self)

    def policy(self, env: EnvironmentConfig) -> Policy:
        return Policy(frozenset(env.requesters), frozenset(env.approvers), env.approvals_required)

    def groups_of(self, user: str, env: EnvironmentConfig) -> frozenset[str]:
        who = access.principal(user)
        if self.slack is None or not who:
            return frozenset()
        return self.slack.groups_of(who, access.candidates(env))

    def publish(self, run_id: str) -> None:
        if self.publisher is not None:
            self.publisher.sync(run_id)


def _guarded(fn: Callable[[], object], doing: str) -> Callable[[], None]:
    """``fn`` with any failure turned into one log line (bot.edge.contained), logging with the run, environment
    and user of the thread that handed it over (bot.observability.logs)."""

    def guarded() -> None:
        with contained(doing):
            fn()

    return carry_context(guarded)


@dataclass
class Reply:
    """What the user who acted sees (ephemeral), plus what to do after the acknowledgement."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    publish_run: str | None = None
    after: Callable[[], None] | None = None
    form: Callable[[], None] | None = None
    """Opens a form (views.open) right after the acknowledgement, on Deps.promptly's pool."""


@dataclass(frozen=True)
class Invocation:
    """A `/migrate` command as typed: who, in which channel, the text after the slash command."""

    user: str
    channel: str
    text: str
    trigger_id: str | None = None


# ---- permissions (the table is bot.runbook.access) -------------------------------------------------------

def authorize(deps: Deps, rule: Rule, user: str, *, env_name: str | None, run: Run | None = None,
              subject: str = "") -> str | None:
    """None when ``user`` holds ``rule``'s permission in the environment; else the refusal, audited on the run.

    ``subject`` (the button clicked) goes into the audit detail, so that refusals of different buttons are told
    apart by the once-a-minute refusal audit while repeats of the same one are folded.
    """
    if rule.permission in (access.ANYONE, access.LOCAL):
        return None
    env = deps.config.environment(env_name) if env_name else None
    who, requested_by = access.principal(user), run.requested_by if run is not None else None
    if access.allows(rule.permission, user=who, groups=(), env=env, requested_by=requested_by):
        return None  # listed by name: no need to ask Slack about user groups
    groups = deps.groups_of(user, env) if env is not None else frozenset()
    if groups and access.allows(rule.permission, user=who, groups=groups, env=env, requested_by=requested_by):
        return None
    if run is not None:
        detail = f"not allowed to {rule.what}" + (f" ({subject[:80]})" if subject else "")
        deps.store.audit(run.id, AuditEvent(user, rule.audit, "denied", deps.clock(), detail))
    return access.refusal(rule, env_name or "")


def require(deps: Deps, rule: Rule, user: str, *, env_name: str | None, run: Run | None = None) -> None:
    """Raise NotAllowed with the refusal unless ``user`` holds ``rule``'s permission."""
    refused = authorize(deps, rule, user, env_name=env_name, run=run)
    if refused:
        raise NotAllowed(refused)


def readable_environments(deps: Deps, user: str) -> list[str]:
    """The environments whose runs, windows and findings ``user`` may see."""
    rule = access.VERBS["status"]
    return [name for name in deps.config.environments if authorize(deps, rule, user, env_name=name) is None]


def environment_or_refuse(deps: Deps, name: str) -> EnvironmentConfig:
    env = deps.config.environment(name)
    if env is None:
        raise NotAllowed(messages.unknown_environment(name, sorted(deps.config.environments)))
    return env
