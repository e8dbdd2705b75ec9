"""Posting each maintenance-window timeline message once: delivery, recovery of interrupted posts, missed ones."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.calendar import views
from bot.calendar.rules import Reminder, Window, WindowStatus, base_kind, format_duration, timeline, why_skip
from bot.config import CalendarConfig
from bot.context import Deps
from bot.errors import BotError
from bot.integrations.slack import SlackUnavailable
from bot.observability import metrics
from bot.runbook.rules import CHECKLIST_LABELS, Run, RunStatus, blocking_findings
from bot.store import keys as names
from bot.store.prechecks import PrecheckResults
from bot.store.windows import InFlight, WindowStore

log = logging.getLogger(__name__)

_CLAIM_MIN_TTL_S = 86400
_KINDS = ("announce", "reminder", "final", "start", "status", "complete")
LATE_AFTER_S = 60.0
"""A timeline message posted this long after it was due counts as late in /metrics (a healthy leader posts within
a second or two; a minute means a failover, a restart or a Redis outage came between)."""


def _count(kind: str, outcome: str) -> None:
    """migrate_bot_reminders{kind, outcome}: posted, late, missed, failed or skipped."""
    metrics.reminder(base_kind(kind), outcome, kinds=_KINDS)


def _claim_ttl(window: Window, now: datetime) -> int:
    return max(int((window.end - now).total_seconds()) + 7 * 86400, _CLAIM_MIN_TTL_S)


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
    precheck = PrecheckResults(deps.store).last(window.env)  # the last `/migrate check` of the environment
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


def post_notice(deps: Deps, window: Window, message: dict[str, Any]) -> None:
    """A notice about the window (rescheduled, cancelled) in its channel; a failure is only logged."""
    try:
        _post(deps, window, message)
    except BotError as exc:
        log.warning("window %s: notice not posted: %s", window.id, exc)


def _claim_key(window: Window, kind: str, revision: int) -> str:
    return names.window_message(window.id, revision, "complete" if base_kind(kind) == "complete" else kind)


def deliver(deps: Deps, window_id: str, kind: str, revision: int) -> str:
    """Post one timeline message unless it is stale, already posted by a replica, or no longer relevant.

    Returns what happened: posted, skipped (audited), failed (audited), duplicate, stale or gone.
    """
    windows = WindowStore(deps.store)
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
    thread = windows.start_message(window) if base == "status" else None
    inflight = InFlight(deps.store, deps.instance_id)
    if not inflight.claim(claim, _claim_ttl(window, now), window, kind, revision, now, thread_ts=thread):
        return "duplicate"
    reason = why_skip(kind, window, env.calendar, now)
    if reason:
        windows.audit(window.id, "bot", f"reminder.{base}", "skipped", now, reason,
                      {"kind": kind, "revision": revision, "late_s": round((now - _due(window, kind, env.calendar))
                                                                           .total_seconds(), 1)})
        inflight.end(claim)
        _count(kind, "skipped")
        return "skipped"
    outcome = _deliver_claimed(deps, window, kind, revision, now, claim, thread=thread)
    late = outcome == "posted" and (now - _due(window, kind, env.calendar)).total_seconds() > LATE_AFTER_S
    _count(kind, "late" if late else outcome)
    return outcome


def _deliver_claimed(deps: Deps, window: Window, kind: str, revision: int, now: datetime, claim: str, *,
                     thread: str | None = None, posted_ts: str | None = None, note: str = "") -> str:
    """Post (or, with ``posted_ts``, only record) one claimed timeline message and what follows from it."""
    windows = WindowStore(deps.store)
    inflight = InFlight(deps.store, deps.instance_id)
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
                windows.remember_start_message(window, ts, ttl_s=_claim_ttl(window, now))
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
    inflight = InFlight(deps.store, deps.instance_id)
    if not claimed and not inflight.claim(claim, _claim_ttl(window, now), window, "complete", window.revision, now):
        return
    windows = WindowStore(deps.store)
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
    inflight = InFlight(deps.store, deps.instance_id)
    windows = WindowStore(deps.store)
    for claim, entry in inflight.entries().items():
        mine = entry.get("instance") == deps.instance_id
        if (mine and not entry.get("recovering")) or (not mine and alive(str(entry.get("instance")))):
            continue  # a post under way in a live process (an entry this process adopted is retried here)
        # The short claim keeps two replicas from recovering one entry at the same moment; adopting the entry
        # keeps them apart after it expires, and lets a third recover it if this process dies midway.
        if not inflight.claim_recovery(claim):
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
                found, unchecked = None, str(exc).rstrip(".")
            elif in_time:  # rate limited, Slack down: ask again next round
                log.warning("window %s %s: cannot check Slack for an interrupted post yet: %s", window.id, kind, exc)
                inflight.release_recovery(claim)
                continue
            else:
                found, unchecked = None, str(exc).rstrip(".")
        if found:
            _deliver_claimed(deps, window, kind, revision, now, claim, thread=entry.get("thread_ts"), posted_ts=found,
                             note="posted before the bot stopped; confirmed in the channel")
            handled.append((window.id, kind, "confirmed"))
            _count(kind, "posted")  # by the process that died: this one only recorded it
            continue
        if in_time:
            # Not in the channel, or the channel cannot be read: a message that may show twice (and says so)
            # is better than a maintenance reminder nobody sees.
            note = f"posted {format_duration(late)} late: the bot stopped while posting it"
            if unchecked:
                note += f" (could not check the channel: {unchecked}; it may show twice)"
            result = _deliver_claimed(deps, window, kind, revision, now, claim, thread=entry.get("thread_ts"),
                                      note=note)
            handled.append((window.id, kind, "posted"))
            _count(kind, "late" if result == "posted" else result)
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
        _count(kind, "missed")
    return handled


def record_missed(deps: Deps, window_id: str, kind: str, revision: int, due: datetime) -> None:
    """The scheduler fired a reminder past its grace time: audit it (once), do not post it."""
    windows = WindowStore(deps.store)
    window = windows.get(window_id)
    if window is None or window.revision != revision or window.status is not WindowStatus.SCHEDULED:
        return
    now = deps.clock()
    if not InFlight(deps.store, deps.instance_id).claim_missed(names.window_message(window_id, revision, kind),
                                                               _claim_ttl(window, now)):
        return
    late = (now - due).total_seconds()
    windows.audit(window_id, "bot", f"reminder.{base_kind(kind)}", "skipped", now,
                  f"missed by {format_duration(late)} (grace period passed)",
                  {"kind": kind, "revision": revision, "due": due, "late_s": round(late, 1)})
    _count(kind, "missed")
    if base_kind(kind) == "complete":
        windows.update(window_id, _completed_at(now))


