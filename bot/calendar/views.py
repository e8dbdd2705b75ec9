"""Pure Block Kit for maintenance windows: timeline messages, the scheduling modal, the list and the App Home."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from bot.calendar.rules import Window, format_duration
from bot.config import CalendarConfig
from bot.messages import escape, slack_date
from bot.runbook.rules import Run
from bot.runbook.views import STATUS_LABEL

Block = dict[str, Any]
View = dict[str, Any]

SCHEDULE_CALLBACK = "window_schedule"
RESCHEDULE_CALLBACK = "window_reschedule"
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "UTC",
         "Europe/London", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney")
MAX_LISTED = 15        # windows in a /migrate windows message: 2 blocks each, a message allows 50
MAX_HOME_WINDOWS = 25  # the Home tab allows 100 blocks in all
MAX_HOME_RUNS = 10

# The first words of each timeline message's fallback text (what notifications and tests read).
TITLES = {
    "announce": "🗓️ Maintenance window scheduled",
    "reminder": "⏰ Reminder: maintenance",
    "final": "⚠️ Final warning: maintenance",
    "start": "🔧 Maintenance started",
    "status": "📋 Status update",
    "complete": "✅ Maintenance complete",
    "cancelled": "🚫 Maintenance window cancelled",
    "rescheduled": "🔁 Maintenance window rescheduled",
}


def mention(who: str | None) -> str:
    """A user (U…/W…) or user group (S…) as a Slack mention; anything else as plain text."""
    if not who:
        return "nobody"
    if who.startswith("S"):
        return f"<!subteam^{who}>"
    if who[0] in "UW":
        return f"<@{who}>"
    return escape(who)


def _text(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:3000]}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _section(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": _text(text)}
    if block_id:
        block["block_id"] = block_id[:255]
    return block


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_text(text)]}


def _button(text: str, action_id: str, value: str, style: str | None = None,
            confirm: tuple[str, str, str] | None = None) -> Block:
    button: Block = {"type": "button", "text": _plain(text), "action_id": action_id[:255], "value": value[:2000]}
    if style:
        button["style"] = style
    if confirm:
        title, body, ok = confirm
        button["confirm"] = {"title": _plain(title, 100), "text": _text(body[:300]),
                             "confirm": _plain(ok, 30), "deny": _plain("Keep it", 30), "style": "danger"}
    return button


def when(window: Window) -> str:
    """`<start> – <end> (2 h)` in every reader's local time."""
    return f"{slack_date(window.start)} – {slack_date(window.end, '{time}')} ({format_duration(window.duration_s)})"


def _people(window: Window) -> str:
    line = f"Owner {mention(window.owner)} · on-call {mention(window.oncall)}"
    if window.approver:
        line += f" · approver {mention(window.approver)} ✅"
    return line


def _notes(window: Window, limit: int = 2500) -> str:
    notes = escape(window.release_notes.strip()) or "_none given_"
    return notes if len(notes) <= limit else notes[: limit - 1] + "…"


def _missing(missing: list[str]) -> list[Block]:
    if not missing:
        return [_context("✅ Nothing missing: approver confirmed, checklist complete, backup target verified.")]
    lines = "\n".join(f"• {item}" for item in missing[:10])
    return [_section(f"*Still missing*\n{lines}")]


def _approver_button(window: Window) -> list[Block]:
    if window.approver:
        return []
    return [{"type": "actions", "block_id": f"win:{window.id}:{window.revision}:approver",
             "elements": [_button("I'll approve this window", f"window_approver:{window.id}",
                                  f"{window.id}|{window.revision}", style="primary")]}]


def _message(text: str, blocks: list[Block]) -> dict[str, Any]:
    return {"text": text, "blocks": blocks}


def announcement(window: Window, missing: list[str]) -> dict[str, Any]:
    title = f"{TITLES['announce']}: {window.env}"
    blocks = [
        {"type": "header", "text": _plain(title, 150)},
        _section(f"*When:* {when(window)}\n{_people(window)}"),
        _section(f"*Release notes*\n{_notes(window)}"),
        *_missing(missing),
        *_approver_button(window),
        _context(f"Window `{window.id}` · reminders follow in this channel · `/migrate windows` to change it"),
    ]
    return _message(f"{title} — {slack_date(window.start)}", blocks)


def reminder(kind: str, window: Window, cfg: CalendarConfig, missing: list[str]) -> dict[str, Any]:
    """The 24-hour reminder (`reminder`) or the 1-hour final warning (`final`)."""
    before = cfg.reminder_before_s if kind == "reminder" else cfg.final_before_s
    title = f"{TITLES[kind]} of {window.env} in {format_duration(before)}"
    blocks = [
        _section(f"*{title}*\n*When:* {when(window)}\n{_people(window)}"),
        *_missing(missing),
        *_approver_button(window),
        _context(f"Window `{window.id}`"),
    ]
    return _message(f"{title} — {slack_date(window.start)}", blocks)


def started(window: Window, run: Run | None) -> dict[str, Any]:
    title = f"{TITLES['start']}: {window.env}"
    nudge = (f"Run `{run.id}` is linked: {STATUS_LABEL[run.status]}." if run else
             f"{mention(window.owner)}, no run has started yet: `/migrate {window.env}` starts one "
             "and links it to this window.")
    blocks = [_section(f"*{title}* — until {slack_date(window.end, '{time}')}\n{nudge}\n{_people(window)}"),
              _context(f"Window `{window.id}` · status updates follow in this thread")]
    return _message(f"{title} (window {window.id})", blocks)


def _run_line(run: Run) -> str:
    current = next((s for s in run.steps if s.status.value in ("running", "failed", "interrupted")), None)
    done = sum(1 for s in run.steps if s.status.value in ("succeeded", "skipped"))
    line = f"Run `{run.id}`: {STATUS_LABEL[run.status]} · steps {done}/{len(run.steps)} done"
    if current is not None:
        line += f" · {current.label}: {current.status.value}"
        if current.progress:
            line += f" ({current.progress[:200]})"
    if run.missing_items():
        line += f" · {len(run.missing_items())} checklist item(s) open"
    return line


def status_update(kind: str, window: Window, run: Run | None, now: datetime) -> dict[str, Any]:
    number = kind.partition(":")[2] or "1"
    title = f"{TITLES['status']} {number} for {window.env}"
    body = _run_line(run) if run else (f"{mention(window.owner)}, no run has started yet — the window ends "
                                       f"{slack_date(window.end, '{time}')}. `/migrate {window.env}` starts one.")
    blocks = [_section(f"*{title}* · {slack_date(now, '{time}')}\n{body}"), _context(f"Window `{window.id}`")]
    return _message(f"{title}: {body[:200]}", blocks)


def completion(window: Window, run: Run | None, *, run_done: bool) -> dict[str, Any]:
    title = f"{TITLES['complete']}: {window.env}"
    outcome = (f"Run `{run.id}` {STATUS_LABEL[run.status]}." if run and run_done else
               f"The window ended. {'Run `' + run.id + '`: ' + STATUS_LABEL[run.status] + '.' if run else 'No run was linked to it.'}")
    blocks = [
        {"type": "header", "text": _plain(title, 150)},
        _section(f"{outcome}\n*Window:* {when(window)}\n{_people(window)}"),
        _section(f"*Release notes*\n{_notes(window)}"),
        _context(f"Window `{window.id}`"),
    ]
    return _message(f"{title} — release notes: {_notes(window, 300)}", blocks)


def cancelled(window: Window, user: str, reason: str) -> dict[str, Any]:
    title = f"{TITLES['cancelled']}: {window.env}"
    why = f" — {escape(reason[:500])}" if reason else ""
    blocks = [_section(f"*{title}*\nThe window {when(window)} is off; its reminders are removed.\n"
                       f"Cancelled by {mention(user)}{why}"), _context(f"Window `{window.id}`")]
    return _message(f"{title} ({slack_date(window.start)})", blocks)


def rescheduled(window: Window, old_start: datetime, user: str) -> dict[str, Any]:
    title = f"{TITLES['rescheduled']}: {window.env}"
    blocks = [_section(f"*{title}*\n~{slack_date(old_start)}~ → *{when(window)}*\nMoved by {mention(user)}; "
                       "every pending reminder moved with it."), _context(f"Window `{window.id}`")]
    return _message(f"{title} to {slack_date(window.start)}", blocks)


# ---- the scheduling modal ------------------------------------------------------------------------

@dataclass(frozen=True)
class ModalDefaults:
    day: date
    clock: str
    zone: str
    duration: str
    notes: str
    owner: str
    oncall: str | None


def _input(block_id: str, label: str, element: Block, *, optional: bool = False, hint: str | None = None) -> Block:
    block: Block = {"type": "input", "block_id": block_id, "label": _plain(label, 2000), "element": element,
                    "optional": optional}
    if hint:
        block["hint"] = _plain(hint, 2000)
    return block


def _option(value: str) -> Block:
    return {"text": _plain(value), "value": value[:150]}


def schedule_modal(env: str, defaults: ModalDefaults, *, metadata: dict[str, str], reschedule: bool = False,
                   warning: str | None = None) -> View:
    """The form of `/migrate schedule <env>` (and of Reschedule, prefilled)."""
    zones = list(dict.fromkeys([defaults.zone, *ZONES]))
    blocks: list[Block] = []
    if warning:
        blocks.append(_section(warning[:3000]))
    blocks += [
        _input("date", "Date", {"type": "datepicker", "action_id": "date",
                                "initial_date": defaults.day.isoformat()},
               hint="The seed's schedule: Tuesday or Wednesday, not a holiday, at least 7 days ahead."),
        _input("time", "Start time", {"type": "timepicker", "action_id": "time", "initial_time": defaults.clock}),
        _input("tz", "Time zone", {"type": "static_select", "action_id": "tz",
                                   "initial_option": _option(defaults.zone),
                                   "options": [_option(z) for z in zones[:100]]}),
        _input("duration", "Duration", {"type": "plain_text_input", "action_id": "duration",
                                        "initial_value": defaults.duration},
               hint="Like 2h or 90m; at most 2 h by policy."),
    ]
    if not reschedule:
        blocks += [
            _input("notes", "Release notes", {"type": "plain_text_input", "action_id": "notes", "multiline": True,
                                              **({"initial_value": defaults.notes} if defaults.notes else {})}),
            _input("owner", "Owner", {"type": "users_select", "action_id": "owner",
                                      **({"initial_user": defaults.owner} if defaults.owner else {})}),
            _input("oncall", "On-call (user or group)", {"type": "plain_text_input", "action_id": "oncall",
                                                        **({"initial_value": defaults.oncall}
                                                           if defaults.oncall else {})},
                   optional=True, hint="A user or user-group ID (U… or S…) or a mention."),
        ]
    blocks.append(_input("override", "Policy override reason", {"type": "plain_text_input",
                                                                 "action_id": "override"},
                         optional=True, hint="Needed only when the window breaks the policy; it is audited."))
    title = "Reschedule window" if reschedule else f"Schedule {env}"[:24]
    return {
        "type": "modal",
        "callback_id": RESCHEDULE_CALLBACK if reschedule else SCHEDULE_CALLBACK,
        "private_metadata": json.dumps(metadata)[:3000],
        "title": _plain(title, 24),
        "submit": _plain("Reschedule" if reschedule else "Schedule", 24),
        "close": _plain("Cancel", 24),
        "blocks": blocks,
    }


def read_modal(values: dict[str, Any]) -> dict[str, str]:
    """The submitted values of the modal as plain strings by block id ('' when empty)."""
    out: dict[str, str] = {}
    for block_id, actions in (values or {}).items():
        if not isinstance(actions, dict):
            continue
        for state in actions.values():
            if not isinstance(state, dict):
                continue
            value = (state.get("selected_date") or state.get("selected_time") or state.get("selected_user")
                     or (state.get("selected_option") or {}).get("value") or state.get("value") or "")
            out[str(block_id)] = str(value)
    return out


# ---- the list and the App Home -------------------------------------------------------------------

def _window_line(window: Window, now: datetime) -> str:
    state = "🟢 *in progress*" if window.is_open(now) else "🗓️"
    run = f" · run `{window.run_id}`" if window.run_id else ""
    notes = escape(window.release_notes.strip().splitlines()[0][:120]) if window.release_notes.strip() else ""
    return (f"{state} *{window.env}* {when(window)}{run}\n{_people(window)} · `{window.id}`"
            + (f"\n_{notes}_" if notes else ""))


def windows_list(windows: list[Window], now: datetime, total: int | None = None) -> list[Block]:
    """`/migrate windows`: the upcoming windows with Reschedule and Cancel buttons (at most 50 blocks).

    ``windows`` may be only the first page of a longer listing of ``total`` windows.
    """
    total = len(windows) if total is None else total
    if not windows:
        return [_section("No maintenance windows are scheduled. `/migrate schedule <env>` books one.")]
    blocks: list[Block] = [_section(f"*Upcoming maintenance windows* ({total:,})")]
    for window in windows[:MAX_LISTED]:
        value = f"{window.id}|{window.revision}"
        blocks.append(_section(_window_line(window, now), block_id=f"win:{window.id}:{window.revision}"))
        blocks.append({"type": "actions", "block_id": f"win:{window.id}:{window.revision}:actions", "elements": [
            _button("Reschedule", f"window_reschedule:{window.id}", value),
            _button("Cancel window", f"window_cancel:{window.id}", value, style="danger",
                    confirm=("Cancel this window?", f"The window {window.id} in {window.env} and all its "
                             "reminders are removed, and a cancellation notice is posted.", "Cancel window")),
        ]})
    shown = min(len(windows), MAX_LISTED)
    if total > shown:
        blocks.append(_context(f"…and {total - shown:,} more. `/migrate windows <env>` narrows the list."))
    return blocks


def home_view(windows: list[Window], runs: list[Run], approvals: list[Run], now: datetime,
              total_windows: int | None = None) -> View:
    """The App Home tab: upcoming windows, active runs, and the approvals waiting for the viewer (≤ 100 blocks).

    ``windows`` may be only the first page of ``total_windows``.
    """
    total = len(windows) if total_windows is None else total_windows
    blocks: list[Block] = [{"type": "header", "text": _plain("Maintenance windows", 150)}]
    if windows:
        shown = min(len(windows), MAX_HOME_WINDOWS)
        blocks += [_section(_window_line(w, now)) for w in windows[:shown]]
        if total > shown:
            blocks.append(_context(f"…and {total - shown:,} more: `/migrate windows`."))
    else:
        blocks.append(_context("None scheduled. `/migrate schedule <env>` books one."))
    blocks += [{"type": "divider"}, {"type": "header", "text": _plain("Active runs", 150)}]
    if runs:
        blocks += [_section(f"*{r.env}* · {_run_line(r)} · by {mention(r.requested_by)}") for r in runs[:MAX_HOME_RUNS]]
        if len(runs) > MAX_HOME_RUNS:
            blocks.append(_context(f"…and {len(runs) - MAX_HOME_RUNS} more: `/migrate status`."))
    else:
        blocks.append(_context("No run is active."))
    blocks += [{"type": "divider"}, {"type": "header", "text": _plain("Waiting for your approval", 150)}]
    if approvals:
        for run in approvals[:MAX_HOME_RUNS]:
            link = (f"<https://slack.com/archives/{run.channel}/p{run.message_ts.replace('.', '')}|open the run>"
                    if run.message_ts else f"in <#{run.channel}>")
            blocks.append(_section(f"*{run.env}* · run `{run.id}` by {mention(run.requested_by)} · "
                                   f"{len(run.approvals)}/{run.approvals_required} approvals · {link}"))
    else:
        blocks.append(_context("Nothing is waiting for you."))
    blocks.append(_context(f"Updated {slack_date(now)}"))
    return {"type": "home", "blocks": blocks[:100]}
