"""Maintenance windows: the Redis store, schedule/reschedule/cancel/list, and posting each timeline message once."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import WatchError

from bot.calendar import views
from bot.calendar.rules import (
    MAX_WINDOW_S,
    Reminder,
    Violation,
    Window,
    WindowStatus,
    base_kind,
    format_duration,
    job_id,
    local_to_utc,
    next_allowed_day,
    parse_date,
    parse_duration,
    parse_time,
    parse_zone,
    policy_violations,
    timeline,
    validate_request,
    why_skip,
)
from bot.config import CalendarConfig, EnvironmentConfig
from bot.context import Deps, Invocation, Reply, environment_or_refuse, readable_environments
from bot.errors import BotError, NotAllowed, StateStoreUnavailable
from bot.integrations.slack import SlackUnavailable
from bot.messages import escape, slack_date
from bot.runbook.access import principal
from bot.runbook.precheck import last_precheck
from bot.runbook.rules import CHECKLIST_LABELS, Run, RunStatus, blocking_findings
from bot.store.runs import AuditEntry, _store_errors

log = logging.getLogger(__name__)

USAGE = ("*Maintenance windows:* `/migrate schedule <env>` opens the form · "
         "`/migrate schedule <env> <YYYY-MM-DD> <HH:MM> [2h] \"release notes\" [--tz Zone] [--owner @user] "
         "[--oncall @user|group] [--override \"reason\"]` · `/migrate windows [env]` · "
         "`/migrate windows cancel <id> [reason]` · "
         "`/migrate windows reschedule <id> <YYYY-MM-DD> <HH:MM> [duration] [--override \"reason\"]`")
_CLAIM_MIN_TTL_S = 86400


# ---- the store -----------------------------------------------------------------------------------

class WindowStore:
    """Window documents, an index by start time, and one audit stream per window, under the run store's prefix."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.redis = deps.store.redis

    def _key(self, window_id: str) -> str:
        return self.store.key("window", window_id)

    @property
    def _index(self) -> str:
        return self.store.key("windows")

    def audit_key(self, window_id: str) -> str:
        return self.store.key("window-audit", window_id)

    def get(self, window_id: str) -> Window | None:
        with _store_errors():
            raw = self.redis.get(self._key(window_id))
        return Window.model_validate_json(raw) if raw else None

    def create(self, window: Window) -> bool:
        """Store a new window; False (and nothing written) if its id is already taken."""
        with _store_errors():
            if not self.redis.set(self._key(window.id), window.model_dump_json(), nx=True):
                return False
            self.redis.zadd(self._index, {window.id: window.start.timestamp()})
        return True

    def update(self, window_id: str, change: Callable[[Window], Window]) -> tuple[Window, Window]:
        """Compare-and-set; ``change`` may raise a BotError and then nothing is written. Returns (old, new)."""
        key = self._key(window_id)
        with _store_errors(), self.redis.pipeline() as pipe:
            for _ in range(50):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        raise NotAllowed(f"No maintenance window `{window_id}`. `/migrate windows` lists them.")
                    old = Window.model_validate_json(raw)
                    new = change(old)
                    pipe.multi()
                    if new.status is WindowStatus.SCHEDULED:
                        pipe.set(key, new.model_dump_json())
                        pipe.zadd(self._index, {new.id: new.start.timestamp()})
                    else:
                        # Closed (completed or cancelled): kept as long as closed runs, its audit a day longer.
                        ttl = max(1, int(self.store.retention_s))
                        pipe.set(key, new.model_dump_json(), ex=ttl)
                        pipe.expire(self.audit_key(new.id), ttl + 86400)
                        pipe.zrem(self._index, new.id)
                    pipe.execute()
                    return old, new
                except WatchError:
                    continue
        raise StateStoreUnavailable("too much contention on this window; nothing was changed — try again")

    def scheduled(self, env: str | None = None, *, after: datetime | None = None,
                  starting_by: datetime | None = None) -> list[Window]:
        """Scheduled windows not yet over (and, with ``starting_by``, starting no later than that), soonest first."""
        low = (after - timedelta(seconds=MAX_WINDOW_S)).timestamp() if after else "-inf"
        high = starting_by.timestamp() if starting_by else "+inf"
        with _store_errors():
            ids = [str(i) for i in self.redis.zrangebyscore(self._index, low, high)]
            raws = self.redis.mget([self._key(i) for i in ids]) if ids else []
        windows = [Window.model_validate_json(raw) for raw in raws if raw]
        return [w for w in windows if w.status is WindowStatus.SCHEDULED
                and (after is None or w.end > after) and (env is None or w.env == env)]

    def audit(self, window_id: str, actor: str, action: str, outcome: str, at: datetime, detail: str = "",
              data: dict[str, Any] | None = None) -> None:
        with _store_errors():
            self.redis.xadd(self.audit_key(window_id), {
                "actor": actor, "action": action, "outcome": outcome, "at": at.isoformat(),
                "detail": detail, "data": json.dumps(data or {}, default=str)})

    def audit_entries(self, window_id: str) -> list[AuditEntry]:
        with _store_errors():
            rows: list[tuple[str, dict[str, str]]] = self.redis.xrange(self.audit_key(window_id))  # type: ignore[assignment]
        return [AuditEntry(id=i, actor=f["actor"], action=f["action"], outcome=f["outcome"],
                           at=datetime.fromisoformat(f["at"]), detail=f.get("detail", ""),
                           data=json.loads(f.get("data", "{}"))) for i, f in rows]


# ---- requests and outcomes -----------------------------------------------------------------------

@dataclass
class WindowRequest:
    """What a person asked for, already parsed; ``None`` fields keep the window's current value."""

    start: datetime
    duration_s: float
    timezone: str
    release_notes: str = ""
    owner: str = ""
    oncall: str | None = None
    override_reason: str | None = None


@dataclass
class Outcome:
    """Scheduled (``window``), invalid (``errors`` by field), or held back by the policy (``violations``)."""

    window: Window | None = None
    errors: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    after: Callable[[], None] | None = None
    """Slack posts to make after the acknowledgement (a reschedule notice)."""


def _may_manage(deps: Deps, env: EnvironmentConfig, user: str, window: Window | None = None) -> bool:
    who = principal(user)  # a command-line operator counts as the Slack user it is mapped to, or as nobody
    if who and window is not None and who in (window.owner, window.created_by):
        return True
    policy, groups = deps.policy(env), deps.groups_of(user, env)
    return policy.may_start(who, groups) or policy.may_approve(who, groups)


def _not_allowed(env: str) -> NotAllowed:
    return NotAllowed(f"Only requesters and approvers of `{env}` may schedule or change its maintenance "
                      "windows. Nothing was changed.")


def _new_id(env: str, start: datetime) -> str:
    return f"{env}-w{start:%y%m%d}-{secrets.token_hex(3)}"


def _claim_ttl(window: Window, now: datetime) -> int:
    return max(int((window.end - now).total_seconds()) + 7 * 86400, _CLAIM_MIN_TTL_S)


def _add_jobs(deps: Deps, window: Window, reminders: list[Reminder]) -> None:
    queue = deps.job_queue()
    for item in reminders:
        queue.add(job_id(window.id, window.revision, item.kind), item.due, item.grace_s,
                  (window.id, item.kind, window.revision))


def schedule_window(deps: Deps, *, env_name: str, request: WindowRequest, user: str) -> Outcome:
    """Book a window: invalid input and unconfirmed policy violations schedule nothing."""
    env = environment_or_refuse(deps, env_name)
    if not _may_manage(deps, env, user):
        raise _not_allowed(env.name)
    cfg, now = env.calendar, deps.clock()
    errors = validate_request(start=request.start, duration_s=request.duration_s, now=now)
    if not request.release_notes.strip():
        errors["notes"] = "Release notes are required: they go into the announcement and the completion notice."
    if errors:
        return Outcome(errors=errors)
    violations = policy_violations(start=request.start, duration_s=request.duration_s,
                                   zone=parse_zone(request.timezone), cfg=cfg, now=now)
    override = (request.override_reason or "").strip()
    if violations and not override:
        return Outcome(violations=violations)
    window = Window(
        id="pending", env=env.name,
        channel=env.channel, start=request.start, duration_s=request.duration_s, timezone=request.timezone,
        release_notes=request.release_notes.strip()[:2500], owner=request.owner or user,
        oncall=request.oncall or env.oncall, created_by=user, created_at=now,
        override_reason=override if violations else None, warnings=[v.message for v in violations])
    windows = WindowStore(deps)
    local_start = request.start.astimezone(parse_zone(request.timezone))
    for _ in range(20):  # ids are short for humans, so a collision is possible: never overwrite, pick again
        window = window.model_copy(update={"id": _new_id(env.name, local_start)})
        reminders = timeline(window, cfg, now)
        window = window.model_copy(update={"job_ids": [job_id(window.id, 1, r.kind) for r in reminders]})
        if windows.create(window):
            break
    else:
        raise StateStoreUnavailable("could not find a free window id; nothing was scheduled — try again")
    windows.audit(window.id, user, "window.schedule", "ok", now,
                  f"{window.env} {window.start.isoformat()} for {format_duration(window.duration_s)}",
                  {"start": window.start, "duration_s": window.duration_s, "timezone": window.timezone})
    if violations:
        windows.audit(window.id, user, "window.policy_override", "override", now, override,
                      {"violations": [v.message for v in violations], "rules": [v.rule for v in violations]})
    _add_jobs(deps, window, reminders)
    return Outcome(window=window)


def reschedule_window(deps: Deps, *, window_id: str, request: WindowRequest, user: str) -> Outcome:
    """Move a window; every pending reminder moves with it (the old jobs are removed)."""
    windows = WindowStore(deps)
    current = windows.get(window_id)
    if current is None or current.status is not WindowStatus.SCHEDULED:
        raise NotAllowed(f"No scheduled window `{window_id}`. `/migrate windows` lists them.")
    env = environment_or_refuse(deps, current.env)
    if not _may_manage(deps, env, user, current):
        windows.audit(window_id, user, "window.reschedule", "denied", deps.clock(), "not allowed")
        raise _not_allowed(env.name)
    cfg, now = env.calendar, deps.clock()
    errors = validate_request(start=request.start, duration_s=request.duration_s, now=now)
    if errors:
        return Outcome(errors=errors)
    violations = policy_violations(start=request.start, duration_s=request.duration_s,
                                   zone=parse_zone(request.timezone), cfg=cfg, now=now)
    override = (request.override_reason or "").strip()
    if violations and not override:
        return Outcome(violations=violations)

    def change(window: Window) -> Window:
        if window.status is not WindowStatus.SCHEDULED:
            raise NotAllowed(f"Window `{window.id}` is {window.status.value}; nothing was changed.")
        moved = window.model_copy(update={
            "start": request.start, "duration_s": request.duration_s, "timezone": request.timezone,
            "revision": window.revision + 1, "warnings": [v.message for v in violations],
            "override_reason": override if violations else None})
        pending = timeline(moved, cfg, now, announce=window.announced_at is None)
        return moved.model_copy(update={"job_ids": [job_id(moved.id, moved.revision, r.kind) for r in pending]})

    old, new = windows.update(window_id, change)
    deps.job_queue().remove(old.job_ids)
    _add_jobs(deps, new, timeline(new, cfg, now, announce=old.announced_at is None))
    windows.audit(new.id, user, "window.reschedule", "ok", now,
                  f"{old.start.isoformat()} -> {new.start.isoformat()}",
                  {"from": old.start, "to": new.start, "duration_s": new.duration_s, "revision": new.revision})
    if violations:
        windows.audit(new.id, user, "window.policy_override", "override", now, override,
                      {"violations": [v.message for v in violations], "rules": [v.rule for v in violations]})
    notice = None
    if old.announced_at is not None:
        def notice() -> None:
            _post_safely(deps, new, views.rescheduled(new, old.start, user))
    return Outcome(window=new, after=notice)


def cancel_window(deps: Deps, *, window_id: str, user: str, reason: str = "") -> tuple[Window, Callable[[], None]]:
    """Cancel a window and remove its reminders; returns it and the channel notice to post after the ack."""
    windows = WindowStore(deps)
    current = windows.get(window_id)
    if current is None:
        raise NotAllowed(f"No maintenance window `{window_id}`. `/migrate windows` lists them.")
    env = environment_or_refuse(deps, current.env)
    if not _may_manage(deps, env, user, current):
        windows.audit(window_id, user, "window.cancel", "denied", deps.clock(), "not allowed")
        raise _not_allowed(env.name)
    now = deps.clock()

    def change(window: Window) -> Window:
        if window.status is not WindowStatus.SCHEDULED:
            raise NotAllowed(f"Window `{window.id}` is already {window.status.value}.")
        return window.model_copy(update={"status": WindowStatus.CANCELLED, "cancelled_by": user,
                                         "cancel_reason": reason or None, "job_ids": []})

    old, new = windows.update(window_id, change)
    deps.job_queue().remove(old.job_ids)
    windows.audit(new.id, user, "window.cancel", "ok", now, reason, {"removed_jobs": old.job_ids})
    return new, lambda: _post_safely(deps, new, views.cancelled(new, user, reason))


def confirm_approver(deps: Deps, *, window_id: str, user: str) -> Window:
    """An approver of the environment says they will approve this window's run."""
    windows = WindowStore(deps)
    current = windows.get(window_id)
    if current is None:
        raise NotAllowed(f"No maintenance window `{window_id}`.")
    env = environment_or_refuse(deps, current.env)
    if not deps.policy(env).may_approve(user, deps.groups_of(user, env)):
        windows.audit(window_id, user, "window.approver", "denied", deps.clock(), "not an approver")
        raise NotAllowed(f"Only approvers of `{env.name}` can confirm a window. Nothing was changed.")

    def change(window: Window) -> Window:
        return window.model_copy(update={"approver": user})

    _, new = windows.update(window_id, change)
    windows.audit(window_id, user, "window.approver", "ok", deps.clock())
    return new


# ---- the timeline, delivered once ----------------------------------------------------------------

def linked_run(deps: Deps, window: Window) -> Run | None:
    if window.run_id:
        return deps.store.find(window.run_id)
    return None


def missing_for(deps: Deps, window: Window) -> list[str]:
    """What the window still lacks: an approver, checklist items, a verified backup target, safety findings."""
    missing: list[str] = []
    if not window.approver:
        missing.append("No approver has confirmed (an approver clicks *I'll approve this window*).")
    run = linked_run(deps, window) or deps.store.active_run(window.env)
    if run is None:
        missing.append(f"Checklist: no run yet, all {len(CHECKLIST_LABELS)} items open "
                       f"(`/migrate {window.env}` inside the window starts one).")
    elif run.missing_items():
        labels = ", ".join(CHECKLIST_LABELS[k] for k in run.missing_items()[:6])
        missing.append(f"Checklist of run `{run.id}`: {len(run.missing_items())} open — {labels}.")
    precheck = last_precheck(deps, window.env)
    backup_ok = bool(precheck) and any(item.get("name") == "Backup target" and item.get("ok")
                                       for item in (precheck or {}).get("items", []))
    if not backup_ok:
        missing.append(f"Backup target not verified: run `/migrate check {window.env}`.")
    findings = _open_findings(run)
    if findings:
        missing.append(f"{findings} open safety finding(s) on run `{run.id if run else ''}`.")
    return missing


def _open_findings(run: Run | None) -> int:
    """High safety findings that still gate the run's approval (unwaived, no maintenance mode)."""
    if run is None:
        return 0
    return len(blocking_findings(run))


MESSAGE_EVENT = "migrate_bot_window_message"
"""Slack metadata event type of timeline messages; its payload names the window, revision and kind."""


def _post(deps: Deps, window: Window, message: dict[str, Any], thread_ts: str | None = None,
          kind: str | None = None, revision: int | None = None) -> str | None:
    if deps.slack is None:
        return None
    metadata = None
    if kind is not None:
        metadata = {"event_type": MESSAGE_EVENT, "event_payload": {
            "window_id": window.id, "revision": window.revision if revision is None else revision, "kind": kind}}
    return deps.slack.post_message(window.channel, message["text"], message["blocks"], thread_ts=thread_ts,
                                   metadata=metadata)


def _reminder(window: Window, kind: str, cfg: CalendarConfig) -> Reminder | None:
    """The timeline entry of this kind, as planned when the window was booked."""
    return next((item for item in timeline(window, cfg, window.created_at) if item.kind == kind), None)


def _due(window: Window, kind: str, cfg: CalendarConfig) -> datetime:
    """When a reminder of this revision was due (for the audit of a late one)."""
    item = _reminder(window, kind, cfg)
    return item.due if item is not None else window.start


def _post_safely(deps: Deps, window: Window, message: dict[str, Any]) -> None:
    try:
        _post(deps, window, message)
    except BotError as exc:
        log.warning("window %s: notice not posted: %s", window.id, exc)


def _start_ts_key(deps: Deps, window: Window) -> str:
    return deps.store.key("window-msg", window.id, str(window.revision), "start")


_CLAIM_AND_TRACK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


class InFlight:
    """Timeline messages claimed but not yet known to be posted: one Redis hash, claim key -> who and what.

    A claim is taken before posting so no replica posts twice; the entry says the post may be under way. It is
    removed once the message is posted and audited (or the post failed and that is audited). An entry whose
    process no longer beats was interrupted mid-post: ``recover_interrupted`` looks for the message in Slack
    before deciding to post it, so a crash neither loses nor doubles it.
    """

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.key = deps.store.key("window-msg", "inflight")

    def claim(self, claim: str, ttl_s: int, window: Window, kind: str, revision: int, now: datetime,
              thread_ts: str | None = None) -> bool:
        """claim_once and the in-flight entry in one step: True exactly once per claim across replicas."""
        entry = json.dumps({"instance": self.deps.instance_id, "window_id": window.id, "kind": kind,
                            "revision": revision, "at": now.timestamp(), "thread_ts": thread_ts})
        with _store_errors():
            return bool(self.deps.store.redis.eval(
                _CLAIM_AND_TRACK, 2, self.deps.store.key("once", claim), self.key, self.deps.instance_id,
                ttl_s, claim, entry))

    def adopt(self, claim: str, entry: dict[str, Any]) -> None:
        """Take over a dead process's entry: same post, this process now answers for it."""
        with _store_errors():
            self.deps.store.redis.hset(self.key, claim, json.dumps({**entry, "instance": self.deps.instance_id,
                                                                    "recovering": True}))

    def end(self, claim: str) -> None:
        with _store_errors():
            self.deps.store.redis.hdel(self.key, claim)

    def entries(self) -> dict[str, dict[str, Any]]:
        with _store_errors():
            raw = self.deps.store.redis.hgetall(self.key) or {}
        return {str(claim): json.loads(value) for claim, value in raw.items()}


def _claim_key(window: Window, kind: str, revision: int) -> str:
    base = base_kind(kind)
    return f"window:{window.id}:{revision}:{'complete' if base == 'complete' else kind}"


def deliver(deps: Deps, window_id: str, kind: str, revision: int) -> str:
    """Post one timeline message unless it is stale, already posted by a replica, or no longer relevant.

    Returns what happened: posted, skipped (audited), failed (audited), duplicate, stale or gone.
    """
    windows = WindowStore(deps)
    window = windows.get(window_id)
    if window is None:
        return "gone"
    if window.status is not WindowStatus.SCHEDULED or window.revision != revision:
        return "stale"
    env = deps.config.environment(window.env)
    if env is None:
        return "gone"
    now = deps.clock()
    base = base_kind(kind)
    claim = _claim_key(window, kind, revision)
    thread = _start_ts(deps, window) if base == "status" else None
    if not InFlight(deps).claim(claim, _claim_ttl(window, now), window, kind, revision, now, thread_ts=thread):
        return "duplicate"
    reason = why_skip(kind, window, env.calendar, now)
    if reason:
        windows.audit(window.id, "bot", f"reminder.{base}", "skipped", now, reason,
                      {"kind": kind, "revision": revision, "late_s": round((now - _due(window, kind, env.calendar))
                                                                           .total_seconds(), 1)})
        InFlight(deps).end(claim)
        return "skipped"
    return _deliver_claimed(deps, window, kind, revision, now, claim, thread=thread)


def _start_ts(deps: Deps, window: Window) -> str | None:
    """The ts of the window's "maintenance started" message: its status updates go in that thread."""
    ts = deps.store.redis.get(_start_ts_key(deps, window))
    return str(ts) if ts else None


def _deliver_claimed(deps: Deps, window: Window, kind: str, revision: int, now: datetime, claim: str, *,
                     thread: str | None = None, posted_ts: str | None = None, note: str = "") -> str:
    """Post (or, with ``posted_ts``, only record) one claimed timeline message and what follows from it."""
    windows = WindowStore(deps)
    inflight = InFlight(deps)
    env = deps.config.environment(window.env)
    base = base_kind(kind)
    run = linked_run(deps, window)

    def post(message: dict[str, Any], thread_ts: str | None = None) -> str | None:
        return posted_ts or _post(deps, window, message, thread_ts=thread_ts, kind=kind, revision=revision)

    try:
        if base == "announce":
            post(views.announcement(window, missing_for(deps, window)))
            windows.update(window.id, lambda w: w.model_copy(update={"announced_at": now}))
        elif base in ("reminder", "final"):
            assert env is not None
            post(views.reminder(base, window, env.calendar, missing_for(deps, window)))
        elif base == "start":
            ts = post(views.started(window, run))
            if ts:
                deps.store.redis.set(_start_ts_key(deps, window), ts, ex=_claim_ttl(window, now))
        elif base == "status":
            if run is not None and run.status is RunStatus.SUCCEEDED and posted_ts is None:
                inflight.end(claim)  # the completion below is its own claim
                _complete(deps, window, run, run_done=True, now=now)
                return "posted"
            post(views.status_update(kind, window, run, now), thread_ts=thread)
        elif base == "complete":
            _complete(deps, window, run, run_done=run is not None and run.status is RunStatus.SUCCEEDED, now=now,
                      claimed=True, posted_ts=posted_ts, note=note)
            return "posted"
    except BotError as exc:
        windows.audit(window.id, "bot", f"reminder.{base}", "failed", now, f"not posted: {exc}",
                      {"kind": kind, "revision": revision})
        inflight.end(claim)
        return "failed"
    windows.audit(window.id, "bot", f"reminder.{base}", "ok", now, note, {"kind": kind, "revision": revision})
    inflight.end(claim)
    return "posted"


def _complete(deps: Deps, window: Window, run: Run | None, *, run_done: bool, now: datetime,
              claimed: bool = False, posted_ts: str | None = None, note: str = "") -> None:
    claim = _claim_key(window, "complete", window.revision)
    inflight = InFlight(deps)
    if not claimed and not inflight.claim(claim, _claim_ttl(window, now), window, "complete", window.revision, now):
        return
    windows = WindowStore(deps)
    outcome, detail = "ok", "run succeeded" if run_done else "window ended"
    if posted_ts is None:
        try:
            _post(deps, window, views.completion(window, run, run_done=run_done), kind="complete")
        except BotError as exc:  # the window is over all the same
            outcome, detail = "failed", f"not posted: {exc}"

    try:
        old, _ = windows.update(window.id, _completed_at(now))
        deps.job_queue().remove(old.job_ids)
    except BotError as exc:
        log.warning("window %s: could not mark completed: %s", window.id, exc)
    windows.audit(window.id, "bot", "reminder.complete", outcome, now, f"{detail}{'; ' + note if note else ''}",
                  {"run_id": run.id if run else None})
    inflight.end(claim)


def _completed_at(now: datetime) -> Callable[[Window], Window]:
    """The change that closes a window: completed, no jobs left."""
    def change(current: Window) -> Window:
        return current.model_copy(update={"status": WindowStatus.COMPLETED, "completed_at": now, "job_ids": []})

    return change


def recover_interrupted(deps: Deps, alive: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """Timeline messages whose process died mid-post: find each in Slack first, then record or post it.

    ``alive(instance)`` says whether a process still beats. Returns (window id, kind, what happened) for each
    entry handled: "confirmed" (it was in the channel), "posted" (late, within its grace time) or "missed".
    """
    handled: list[tuple[str, str, str]] = []
    inflight = InFlight(deps)
    windows = WindowStore(deps)
    for claim, entry in inflight.entries().items():
        mine = entry.get("instance") == deps.instance_id
        if (mine and not entry.get("recovering")) or (not mine and alive(str(entry.get("instance")))):
            continue  # a post under way in a live process (an entry this process adopted is retried here)
        # The short claim keeps two replicas from recovering one entry at the same moment; adopting the entry
        # keeps them apart after it expires, and lets a third recover it if this process dies midway.
        if not deps.store.claim_once(f"recover:{claim}", ttl_s=60, value=deps.instance_id):
            continue  # another replica is on it
        window = windows.get(str(entry.get("window_id")))
        env = deps.config.environment(window.env) if window is not None else None
        kind, revision = str(entry.get("kind")), int(entry.get("revision", 0))
        if window is None or env is None or deps.slack is None:
            inflight.end(claim)
            continue
        inflight.adopt(claim, entry)
        now = deps.clock()
        reminder = _reminder(window, kind, env.calendar)
        late = (now - reminder.due).total_seconds() if reminder else 0.0
        in_time = (reminder is not None and late <= reminder.grace_s and window.revision == revision
                   and window.status is WindowStatus.SCHEDULED and why_skip(kind, window, env.calendar, now) is None)
        unchecked = ""
        try:
            found = deps.slack.find_posted(
                window.channel, event_type=MESSAGE_EVENT, oldest=float(entry.get("at", 0)) - 5,
                payload={"window_id": window.id, "revision": revision, "kind": kind},
                thread_ts=entry.get("thread_ts"))
        except SlackUnavailable as exc:
            if exc.lasting:
                found, unchecked = None, exc.error or str(exc)
            elif in_time:  # rate limited, Slack down: ask again next round
                log.warning("window %s %s: cannot check Slack for an interrupted post yet: %s", window.id, kind, exc)
                deps.store.redis.delete(deps.store.key("once", f"recover:{claim}"))
                continue
            else:
                found, unchecked = None, exc.error or "Slack unreachable"
        if found:
            _deliver_claimed(deps, window, kind, revision, now, claim, thread=entry.get("thread_ts"), posted_ts=found,
                             note="posted before the bot stopped; confirmed in the channel")
            handled.append((window.id, kind, "confirmed"))
            continue
        if in_time:
            # Not in the channel, or the channel cannot be read: a message that may show twice (and says so)
            # is better than a maintenance reminder nobody sees.
            note = f"posted {format_duration(late)} late: the bot stopped while posting it"
            if unchecked:
                note += f" (could not check the channel: {unchecked}; it may show twice)"
            _deliver_claimed(deps, window, kind, revision, now, claim, thread=entry.get("thread_ts"), note=note)
            handled.append((window.id, kind, "posted"))
            continue
        detail = "missed: the bot stopped while posting it, and its grace period has passed"
        if unchecked:
            detail = f"may be missing: the bot stopped while posting it, and the channel could not be checked " \
                     f"({unchecked})"
        windows.audit(window.id, "bot", f"reminder.{base_kind(kind)}", "skipped", now, detail,
                      {"kind": kind, "revision": revision, "late_s": round(late, 1)})
        if base_kind(kind) == "complete" and window.status is WindowStatus.SCHEDULED:
            windows.update(window.id, _completed_at(now))
        inflight.end(claim)
        handled.append((window.id, kind, "missed"))
    return handled


def record_missed(deps: Deps, window_id: str, kind: str, revision: int, due: datetime) -> None:
    """The scheduler fired a reminder past its grace time: audit it (once), do not post it."""
    windows = WindowStore(deps)
    window = windows.get(window_id)
    if window is None or window.revision != revision or window.status is not WindowStatus.SCHEDULED:
        return
    now = deps.clock()
    if not deps.store.claim_once(f"window:{window_id}:{revision}:{kind}", _claim_ttl(window, now),
                                 value=deps.instance_id):
        return
    late = (now - due).total_seconds()
    windows.audit(window_id, "bot", f"reminder.{base_kind(kind)}", "skipped", now,
                  f"missed by {format_duration(late)} (grace period passed)",
                  {"kind": kind, "revision": revision, "due": due, "late_s": round(late, 1)})
    if base_kind(kind) == "complete":
        windows.update(window_id, _completed_at(now))


def link_started_run(deps: Deps, run: Run) -> None:
    """A run started inside a window (or after its final warning) becomes that window's linked run."""
    try:
        env = deps.config.environment(run.env)
        if env is None:
            return
        now = deps.clock()
        lead = timedelta(seconds=env.calendar.final_before_s)
        windows = WindowStore(deps)
        for window in windows.scheduled(run.env, after=now, starting_by=now + lead):  # not all future windows
            if window.start - lead <= now < window.end and not window.run_id:
                windows.update(window.id, lambda w: w.model_copy(update={"run_id": w.run_id or run.id}))
                windows.audit(window.id, run.requested_by, "window.link_run", "ok", now, run.id)
                return
    except BotError as exc:
        log.warning("could not link run %s to a window: %s", run.id, exc)


# ---- Slack-facing operations ---------------------------------------------------------------------

def _split_options(args: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    positional: list[str] = []
    options: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word.startswith("--"):
            name = word[2:]
            if name not in ("tz", "owner", "oncall", "override"):
                return [], {}, f"Unknown option `{word[:30]}`."
            value = next(words, None)
            if value is None:
                return [], {}, f"`{word}` needs a value."
            options[name] = value
        else:
            positional.append(word)
    return positional, options, None


_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


def slack_id(text: str) -> str | None:
    """`<@U123|alice>`, `<!subteam^S1|dba>`, `@U123`, `U123` -> the ID; None if it is none of those."""
    cleaned = text.strip().removeprefix("<").removesuffix(">").lstrip("@!")
    cleaned = cleaned.removeprefix("subteam^").split("|")[0]
    return cleaned if _ID.match(cleaned) else None


def _request_from_words(cfg: CalendarConfig, positional: list[str], options: dict[str, str],
                        *, need_notes: bool) -> WindowRequest:
    if len(positional) < 2:
        raise ValueError("Give a date and a start time.")
    zone_name = options.get("tz", cfg.timezone)
    zone = parse_zone(zone_name)
    start = local_to_utc(parse_date(positional[0]), parse_time(positional[1]), zone)
    rest = positional[2:]
    duration = cfg.max_duration_s
    if rest:
        try:
            duration = parse_duration(rest[0])
            rest = rest[1:]
        except ValueError:
            if not need_notes:
                raise
    notes = " ".join(rest)
    if need_notes and not notes.strip():
        raise ValueError("Add the release notes in quotes.")
    owner = slack_id(options["owner"]) if "owner" in options else None
    if "owner" in options and not owner:
        raise ValueError(f"`{options['owner'][:40]}` is not a user.")
    oncall = slack_id(options["oncall"]) if "oncall" in options else None
    if "oncall" in options and not oncall:
        raise ValueError(f"`{options['oncall'][:40]}` is not a user or user group.")
    return WindowRequest(start=start, duration_s=duration, timezone=zone.key, release_notes=notes,
                         owner=owner or "", oncall=oncall, override_reason=options.get("override"))


def outcome_text(outcome: Outcome, *, verb: str = "schedule") -> str:
    if outcome.errors:
        return "Nothing was scheduled: " + " ".join(outcome.errors.values())
    if outcome.violations:
        lines = "\n".join(f"• {v.message}" for v in outcome.violations)
        return (f"⚠️ This window breaks the maintenance policy:\n{lines}\nNothing was scheduled. To {verb} it "
                "anyway, repeat the command with `--override \"reason\"` (the override is audited).")
    window = outcome.window
    assert window is not None
    warned = f"\n⚠️ Policy overridden ({escape(str(window.override_reason))}): " + " ".join(window.warnings) \
        if window.warnings else ""
    return (f"{'Rescheduled' if verb == 'reschedule' else 'Scheduled'} window `{window.id}` in *{window.env}*: "
            f"{views.when(window)}. The timeline goes to <#{window.channel}>.{warned}")


def modal_defaults(deps: Deps, env: EnvironmentConfig, user: str, window: Window | None = None) -> views.ModalDefaults:
    cfg = env.calendar
    if window is not None:
        local = window.local_start
        return views.ModalDefaults(local.date(), f"{local:%H:%M}", window.timezone,
                                   format_duration(window.duration_s).replace(" ", ""), window.release_notes,
                                   window.owner, window.oncall)
    zone = parse_zone(cfg.timezone)
    return views.ModalDefaults(next_allowed_day(deps.clock(), zone, cfg), cfg.earliest_start[:5]
                               if cfg.earliest_start != "24:00" else "02:00", cfg.timezone,
                               format_duration(cfg.max_duration_s).replace(" ", ""), "", user, env.oncall)


SCHEDULE_REPLAY_TTL_S = 3600  # Slack retries within seconds; a day-old trigger_id is never replayed


def schedule_command(deps: Deps, inv: Invocation, args: list[str]) -> Reply:
    """`/migrate schedule <env>` opens the form; with a date and time it schedules from the text."""
    if not args:
        return Reply(f"Which environment? {USAGE}")
    env = environment_or_refuse(deps, args[0])
    if not _may_manage(deps, env, inv.user):
        return Reply(str(_not_allowed(env.name)))
    if len(args) == 1:
        if not inv.trigger_id or deps.slack is None:
            return Reply(f"The form needs Slack. {USAGE}")
        view = views.schedule_modal(env.name, modal_defaults(deps, env, inv.user),
                                    metadata={"env": env.name, "channel": inv.channel})
        slack, trigger = deps.slack, inv.trigger_id

        def open_form() -> None:
            try:
                slack.open_view(trigger, view)
            except BotError as exc:
                log.warning("schedule form not opened: %s", exc)

        return Reply(f"Opening the maintenance-window form for *{env.name}*…", after=open_form)
    positional, options, problem = _split_options(args[1:])
    if problem:
        return Reply(f"{problem}\n{USAGE}")
    try:
        request = _request_from_words(env.calendar, positional, options, need_notes=True)
    except ValueError as exc:
        return Reply(f"{exc}\n{USAGE}")
    # Slack retries a slow command with the same body (and trigger_id): a replay gets the first answer again
    # instead of booking a second window.
    replay_key = deps.store.key("once", "schedule", inv.trigger_id) if inv.trigger_id else None
    if replay_key and not deps.store.redis.set(replay_key, "", nx=True, ex=SCHEDULE_REPLAY_TTL_S):
        earlier = deps.store.redis.get(replay_key)
        return Reply(str(earlier) if earlier else "This request is already being handled; its answer follows.")
    try:
        outcome = schedule_window(deps, env_name=env.name, request=request, user=inv.user)
    except BaseException:
        if replay_key:
            deps.store.redis.delete(replay_key)  # nothing was booked: a retry may try again
        raise
    text = outcome_text(outcome) + ("" if outcome.window else f"\n{USAGE}" if outcome.errors else "")
    if replay_key:
        deps.store.redis.set(replay_key, text, ex=SCHEDULE_REPLAY_TTL_S)
    return Reply(text)


def windows_command(deps: Deps, inv: Invocation, args: list[str]) -> Reply:
    """`/migrate windows [env]`, `... cancel <id> [reason]`, `... reschedule <id> <date> <time> [duration]`."""
    if args and args[0] == "cancel":
        if len(args) < 2:
            return Reply(f"Which window? {USAGE}")
        window, notice = cancel_window(deps, window_id=args[1], user=inv.user, reason=" ".join(args[2:]))
        return Reply(f"Cancelled window `{window.id}`; the notice is in <#{window.channel}>.", after=notice)
    if args and args[0] == "reschedule":
        if len(args) < 2:
            return Reply(f"Which window? {USAGE}")
        current = WindowStore(deps).get(args[1])
        if current is None:
            return Reply(f"No maintenance window `{args[1][:40]}`. `/migrate windows` lists them.")
        env = environment_or_refuse(deps, current.env)
        positional, options, problem = _split_options(args[2:])
        if problem:
            return Reply(f"{problem}\n{USAGE}")
        options.setdefault("tz", current.timezone)
        try:
            request = _request_from_words(env.calendar, positional, options, need_notes=False)
        except ValueError as exc:
            return Reply(f"{exc}\n{USAGE}")
        if not (len(positional) > 2):
            request.duration_s = current.duration_s
        outcome = reschedule_window(deps, window_id=current.id, request=request, user=inv.user)
        return Reply(outcome_text(outcome, verb="reschedule"), after=outcome.after)
    if len(args) > 1 or (args and deps.config.environment(args[0]) is None):
        return Reply(USAGE)
    visible = readable_environments(deps, inv.user)
    windows = [w for w in WindowStore(deps).scheduled(args[0] if args else None, after=deps.clock())
               if w.env in visible]
    blocks = views.windows_list(windows, deps.clock())
    return Reply(f"{len(windows)} upcoming maintenance window(s).", blocks=blocks)


@dataclass
class Submission:
    """What a submitted form leads to: field errors (the modal stays open) or a confirmation and follow-ups."""

    errors: dict[str, str] = field(default_factory=dict)
    text: str = ""
    channel: str | None = None
    after: Callable[[], None] | None = None


def submit_modal(deps: Deps, *, user: str, callback_id: str, metadata: str, values: dict[str, Any]) -> Submission:
    """A submitted schedule or reschedule form, validated and (when valid) applied."""
    fields = views.read_modal(values)
    try:
        meta = json.loads(metadata or "{}")
    except ValueError:
        meta = {}
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, parse in (("date", parse_date), ("time", parse_time), ("tz", parse_zone),
                        ("duration", parse_duration)):
        try:
            parsed[name] = parse(fields.get(name, ""))
        except ValueError as exc:
            errors[name] = str(exc).replace("`", "")
    owner = fields.get("owner", "")
    oncall_text = fields.get("oncall", "").strip()
    oncall = slack_id(oncall_text) if oncall_text else None
    if oncall_text and not oncall:
        errors["oncall"] = "Give a user or user-group ID (U… or S…) or a mention."
    reschedule = callback_id == views.RESCHEDULE_CALLBACK
    if not reschedule and not owner:
        errors["owner"] = "Pick the owner of the window."
    if errors:
        return Submission(errors=errors)
    request = WindowRequest(start=local_to_utc(parsed["date"], parsed["time"], parsed["tz"]),
                            duration_s=parsed["duration"], timezone=parsed["tz"].key,
                            release_notes=fields.get("notes", ""), owner=owner, oncall=oncall,
                            override_reason=fields.get("override") or None)
    if reschedule:
        outcome = reschedule_window(deps, window_id=str(meta.get("window_id", "")), request=request, user=user)
    else:
        outcome = schedule_window(deps, env_name=str(meta.get("env", "")), request=request, user=user)
    if outcome.errors:
        return Submission(errors={k: v.replace("`", "") for k, v in outcome.errors.items()})
    if outcome.violations:
        found: dict[str, list[str]] = {}
        for violation in outcome.violations:
            found.setdefault(violation.field, []).append(violation.message)
        errors = {name: "⚠️ Policy: " + " ".join(messages) for name, messages in found.items()}
        errors["override"] = "This window breaks the policy. Give a reason here to schedule it anyway (audited)."
        return Submission(errors=errors)
    assert outcome.window is not None
    return Submission(text=outcome_text(outcome, verb="reschedule" if reschedule else "schedule"),
                      channel=str(meta.get("channel") or outcome.window.channel), after=outcome.after)


def reschedule_form(deps: Deps, *, window_id: str, user: str) -> dict[str, Any]:
    """The prefilled Reschedule modal for a window (raises NotAllowed when it cannot be changed)."""
    window = WindowStore(deps).get(window_id)
    if window is None or window.status is not WindowStatus.SCHEDULED:
        raise NotAllowed(f"Window `{window_id}` is not scheduled any more. `/migrate windows` lists the current ones.")
    env = environment_or_refuse(deps, window.env)
    if not _may_manage(deps, env, user, window):
        raise _not_allowed(env.name)
    return views.schedule_modal(env.name, modal_defaults(deps, env, user, window), reschedule=True,
                                metadata={"window_id": window.id},
                                warning=f"*{window.env}* window `{window.id}`, now {views.when(window)}")


def home_for(deps: Deps, user: str) -> dict[str, Any]:
    """The App Home view for one user."""
    now = deps.clock()
    visible = readable_environments(deps, user)  # an outsider's App Home shows nothing of any environment
    windows = [w for w in WindowStore(deps).scheduled(after=now) if w.env in visible]
    runs = [run for run in deps.store.active_runs() if run.env in visible]
    waiting: list[Run] = []
    for run in runs:
        env = deps.config.environment(run.env)
        if env is None or run.status is not RunStatus.AWAITING_APPROVAL or run.requested_by == user:
            continue
        if user in run.approved_by():
            continue
        if deps.policy(env).may_approve(user, deps.groups_of(user, env)):
            waiting.append(run)
    return views.home_view(windows, runs, waiting, now)


def describe(window: Window) -> str:
    """One line for logs and the CLI."""
    return f"{window.id} [{window.env}] {window.status.value} {window.start.isoformat()} " \
           f"{format_duration(window.duration_s)} rev {window.revision} — {slack_date(window.start)}"
