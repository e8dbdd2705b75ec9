"""Maintenance windows: schedule, reschedule, cancel and list them, the schedule form and the App Home tab."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.calendar import views
from bot.calendar.delivery import post_notice
from bot.calendar.rules import (
    Reminder,
    Violation,
    Window,
    WindowStatus,
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
)
from bot.config import CalendarConfig, EnvironmentConfig
from bot.context import Deps, Invocation, Reply, environment_or_refuse, readable_environments
from bot.edge import contained
from bot.errors import BotError, NotAllowed, StateStoreUnavailable
from bot.messages import escape, slack_date
from bot.runbook.access import principal
from bot.runbook.rules import Run, RunStatus
from bot.store.windows import WindowStore

log = logging.getLogger(__name__)

USAGE = ("*Maintenance windows:* `/migrate schedule <env>` opens the form · "
         "`/migrate schedule <env> <YYYY-MM-DD> <HH:MM> [2h] \"release notes\" [--tz Zone] [--owner @user] "
         "[--oncall @user|group] [--override \"reason\"]` · `/migrate windows [env]` · "
         "`/migrate windows cancel <id> [reason]` · "
         "`/migrate windows reschedule <id> <YYYY-MM-DD> <HH:MM> [duration] [--override \"reason\"]`")


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


def _add_jobs(deps: Deps, window: Window, reminders: list[Reminder]) -> None:
    queue = deps.job_queue()
    for item in reminders:
        queue.add(job_id(window.id, window.revision, item.kind), item.due, item.grace_s,
                  (window.id, item.kind, window.revision))


def _vetted(request: WindowRequest, cfg: CalendarConfig, now: datetime, *,
            need_notes: bool) -> tuple[Outcome | None, list[Violation], str]:
    """Invalid input, or policy violations without an override reason, refuse the request (the Outcome says why);
    otherwise the violations the override accepts, and the reason."""
    errors = validate_request(start=request.start, duration_s=request.duration_s, now=now)
    if need_notes and not request.release_notes.strip():
        errors["notes"] = "Release notes are required: they go into the announcement and the completion notice."
    if errors:
        return Outcome(errors=errors), [], ""
    violations = policy_violations(start=request.start, duration_s=request.duration_s,
                                   zone=parse_zone(request.timezone), cfg=cfg, now=now)
    override = (request.override_reason or "").strip()
    if violations and not override:
        return Outcome(violations=violations), violations, override
    return None, violations, override


def schedule_window(deps: Deps, *, env_name: str, request: WindowRequest, user: str) -> Outcome:
    """Book a window: invalid input and unconfirmed policy violations schedule nothing."""
    env = environment_or_refuse(deps, env_name)
    if not _may_manage(deps, env, user):
        raise _not_allowed(env.name)
    cfg, now = env.calendar, deps.clock()
    refused, violations, override = _vetted(request, cfg, now, need_notes=True)
    if refused is not None:
        return refused
    window = Window(
        id="pending", env=env.name,
        channel=env.channel, start=request.start, duration_s=request.duration_s, timezone=request.timezone,
        release_notes=request.release_notes.strip()[:2500], owner=request.owner or user,
        oncall=request.oncall or env.oncall, created_by=user, created_at=now,
        override_reason=override if violations else None, warnings=[v.message for v in violations])
    windows = WindowStore(deps.store)
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
    deps.background(lambda: republish_homes(deps, window.env), doing="App Home republish")
    return Outcome(window=window)


def reschedule_window(deps: Deps, *, window_id: str, request: WindowRequest, user: str) -> Outcome:
    """Move a window; every pending reminder moves with it (the old jobs are removed)."""
    windows = WindowStore(deps.store)
    current = windows.get(window_id)
    if current is None or current.status is not WindowStatus.SCHEDULED:
        raise NotAllowed(f"No scheduled window `{window_id}`. `/migrate windows` lists them.")
    env = environment_or_refuse(deps, current.env)
    if not _may_manage(deps, env, user, current):
        windows.audit(window_id, user, "window.reschedule", "denied", deps.clock(), "not allowed")
        raise _not_allowed(env.name)
    cfg, now = env.calendar, deps.clock()
    refused, violations, override = _vetted(request, cfg, now, need_notes=False)
    if refused is not None:
        return refused

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
    deps.background(lambda: republish_homes(deps, new.env), doing="App Home republish")
    notice = None
    if old.announced_at is not None:
        def notice() -> None:
            post_notice(deps, new, views.rescheduled(new, old.start, user))
    return Outcome(window=new, after=notice)


def cancel_window(deps: Deps, *, window_id: str, user: str, reason: str = "") -> tuple[Window, Callable[[], None]]:
    """Cancel a window and remove its reminders; returns it and the channel notice to post after the ack."""
    windows = WindowStore(deps.store)
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
    deps.background(lambda: republish_homes(deps, new.env), doing="App Home republish")
    return new, lambda: post_notice(deps, new, views.cancelled(new, user, reason))


def confirm_approver(deps: Deps, *, window_id: str, user: str) -> Window:
    """An approver of the environment says they will approve this window's run."""
    windows = WindowStore(deps.store)
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


def link_started_run(deps: Deps, run: Run) -> None:
    """A run started inside a window (or after its final warning) becomes that window's linked run."""
    try:
        env = deps.config.environment(run.env)
        if env is None:
            return
        now = deps.clock()
        lead = timedelta(seconds=env.calendar.final_before_s)
        windows = WindowStore(deps.store)
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
                failure = str(exc).replace("click again", f"run `/migrate schedule {env.name}` again")
                deps.background(lambda: slack.post_ephemeral(inv.channel, inv.user, failure),
                                doing="schedule form failure")

        return Reply(f"Opening the maintenance-window form for *{env.name}*…", form=open_form)
    positional, options, problem = _split_options(args[1:])
    if problem:
        return Reply(f"{problem}\n{USAGE}")
    try:
        request = _request_from_words(env.calendar, positional, options, need_notes=True)
    except ValueError as exc:
        return Reply(f"{exc}\n{USAGE}")
    # Slack retries a slow command with the same body (and trigger_id): a replay gets the first answer again
    # instead of booking a second window.
    windows, trigger_id = WindowStore(deps.store), inv.trigger_id
    if trigger_id and not windows.claim_schedule_request(trigger_id, ttl_s=SCHEDULE_REPLAY_TTL_S):
        earlier = windows.schedule_answer(trigger_id)
        return Reply(earlier or "This request is already being handled; its answer follows.")
    try:
        outcome = schedule_window(deps, env_name=env.name, request=request, user=inv.user)
    except BaseException:
        if trigger_id:
            windows.release_schedule_request(trigger_id)  # nothing was booked: a retry may try again
        raise
    text = outcome_text(outcome) + ("" if outcome.window else f"\n{USAGE}" if outcome.errors else "")
    if trigger_id:
        windows.answer_schedule_request(trigger_id, text, ttl_s=SCHEDULE_REPLAY_TTL_S)
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
        current = WindowStore(deps.store).get(args[1])
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
    now = deps.clock()
    page = WindowStore(deps.store).upcoming(_listed(deps, inv.user, args[0] if args else None), after=now,
                                            limit=views.MAX_LISTED)
    blocks = views.windows_list(page.windows, now, page.total)
    return Reply(f"{page.total} upcoming maintenance window(s).", blocks=blocks)


def _listed(deps: Deps, user: str, env: str | None = None) -> list[str] | None:
    """The environments whose windows ``user`` sees (narrowed to ``env``); None when that is every one."""
    visible = readable_environments(deps, user)
    if env is not None:
        return [env] if env in visible else []
    return None if len(visible) == len(deps.config.environments) else visible


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
    window = WindowStore(deps.store).get(window_id)
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
    page = WindowStore(deps.store).upcoming(_listed(deps, user), after=now, limit=views.MAX_HOME_WINDOWS)
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
    return views.home_view(page.windows, runs, waiting, now, page.total)


def home_opened(deps: Deps, user: str) -> dict[str, Any]:
    """``user`` opened the App Home tab: their view, republished from now on whenever a window changes."""
    WindowStore(deps.store).remember_home_viewer(user, deps.clock())
    return home_for(deps, user)


def republish_homes(deps: Deps, env: str) -> None:
    """A window of ``env`` changed: republish the App Home tab of each recent viewer who may see ``env``, so an
    open tab shows the change without being reopened."""
    if deps.slack is None:
        return
    slack = deps.slack
    for user in WindowStore(deps.store).home_viewers(deps.clock()):
        with contained(f"App Home of {user}"):
            if env in readable_environments(deps, user):
                slack.publish_home(user, home_for(deps, user))


def describe(window: Window) -> str:
    """One line for logs and the CLI."""
    return f"{window.id} [{window.env}] {window.status.value} {window.start.isoformat()} " \
           f"{format_duration(window.duration_s)} rev {window.revision} — {slack_date(window.start)}"
