"""Maintenance windows as pure rules: the window document, the scheduling policy and the reminder timeline (no I/O)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from bot.config import CalendarConfig

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_WINDOW_S = 24 * 3600
"""A hard limit (invalid input, not a policy warning): a window is a few hours, not a week of reminders."""


class WindowStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class Window(BaseModel):
    """One maintenance window; stored in Redis as JSON. ``revision`` grows with every reschedule."""

    id: str
    env: str
    channel: str
    start: datetime
    duration_s: float
    timezone: str
    release_notes: str
    owner: str
    oncall: str | None = None
    created_by: str
    created_at: datetime
    status: WindowStatus = WindowStatus.SCHEDULED
    revision: int = 1
    job_ids: list[str] = Field(default_factory=list)
    run_id: str | None = None
    approver: str | None = None
    override_reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    announced_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    completed_at: datetime | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(ZoneInfo(self.timezone))

    def is_open(self, now: datetime) -> bool:
        """True between the start and the end of a window that is still scheduled."""
        return self.status is WindowStatus.SCHEDULED and self.start <= now < self.end


@dataclass(frozen=True)
class Violation:
    """One broken rule of the recommended schedule; ``field`` names the modal block it belongs to."""

    field: str
    rule: str
    message: str


@dataclass(frozen=True)
class Reminder:
    """One message of a window's timeline: what, when, and how late it may still be posted."""

    kind: str
    due: datetime
    grace_s: int

    @property
    def base(self) -> str:
        return base_kind(self.kind)


def base_kind(kind: str) -> str:
    """`status:3` -> `status`."""
    return kind.partition(":")[0]


def grace_for(kind: str, cfg: CalendarConfig) -> int:
    return int(getattr(cfg, f"{base_kind(kind)}_grace_s"))


# ---- parsing -------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)(?:m|min))?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """`2h`, `90m`, `1h30m`, `45s` -> seconds. Raises ValueError with a readable message."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _DURATION.match(cleaned)
    if not cleaned or not match or not any(match.groups()):
        raise ValueError(f"`{text[:20]}` is not a duration; write it like 2h, 90m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError("the duration must be longer than zero")
    return total


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone `{name[:40]}`; use a name like America/New_York") from None


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"`{text[:20]}` is not a date; write it like 2026-12-02") from None


def parse_time(text: str) -> time:
    match = re.match(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$", text.strip())
    if not match:
        raise ValueError(f"`{text[:20]}` is not a time of day; write it like 02:00")
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def format_duration(seconds: float) -> str:
    """7200 -> `2 h`, 5400 -> `1 h 30 min`, 4 -> `4 s`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs:
        parts.append(f"{secs} s")
    return " ".join(parts)


# ---- validation and policy -----------------------------------------------------------------------

def validate_request(*, start: datetime, duration_s: float, now: datetime) -> dict[str, str]:
    """Input that cannot be scheduled at all (not overridable): field -> message."""
    errors: dict[str, str] = {}
    if start <= now:
        errors["date"] = "That time has already passed; pick a time in the future."
    if duration_s <= 0:
        errors["duration"] = "The duration must be longer than zero."
    elif duration_s > MAX_WINDOW_S:
        errors["duration"] = f"A window lasts at most {format_duration(MAX_WINDOW_S)}."
    return errors


def _clock(text: str) -> float:
    hours, minutes = (int(p) for p in text.split(":"))
    return hours * 3600 + minutes * 60


@lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> dict[date, str]:
    import holidays

    return dict(holidays.country_holidays(country, years=year).items())


def holiday_name(day: date, country: str | None) -> str | None:
    """The holiday on `day` in `country` (holidays library), or None."""
    if not country:
        return None
    return _holidays(country, day.year).get(day)


def policy_violations(*, start: datetime, duration_s: float, zone: ZoneInfo, cfg: CalendarConfig,
                      now: datetime) -> list[Violation]:
    """Every rule of the recommended schedule the window breaks, as warnings (empty when it fits)."""
    violations: list[Violation] = []
    local_start = start.astimezone(zone)
    local_end = (start + timedelta(seconds=duration_s)).astimezone(zone)
    day = local_start.date()
    weekday = WEEKDAYS[local_start.weekday()]
    if weekday not in cfg.allowed_weekdays:
        allowed = " or ".join(WEEKDAY_NAMES[WEEKDAYS.index(d)] for d in cfg.allowed_weekdays)
        violations.append(Violation("date", "weekday",
                                    f"{day:%Y-%m-%d} is a {WEEKDAY_NAMES[local_start.weekday()]}; "
                                    f"windows go on {allowed}."))
    for when in sorted({day, local_end.date()}):
        name = holiday_name(when, cfg.holiday_country)
        if name:
            violations.append(Violation("date", "holiday",
                                        f"{when:%Y-%m-%d} is a holiday in {cfg.holiday_country} ({name})."))
    if not (cfg.earliest_start == "00:00" and cfg.latest_end == "24:00"):
        start_s = local_start.hour * 3600 + local_start.minute * 60 + local_start.second
        end_s = start_s + duration_s
        if start_s < _clock(cfg.earliest_start) or end_s > _clock(cfg.latest_end):
            violations.append(Violation("time", "hours",
                                        f"{local_start:%H:%M}–{local_end:%H:%M} {zone.key} is outside "
                                        f"{cfg.earliest_start}–{cfg.latest_end} {zone.key}."))
    if duration_s > cfg.max_duration_s:
        violations.append(Violation("duration", "duration",
                                    f"{format_duration(duration_s)} is longer than the maximum of "
                                    f"{format_duration(cfg.max_duration_s)}."))
    notice = (start - now).total_seconds()
    if notice < cfg.min_notice_s:
        violations.append(Violation("date", "notice",
                                    f"only {format_duration(max(notice, 0))} of notice; windows are announced "
                                    f"at least {format_duration(cfg.min_notice_s)} ahead."))
    return violations


def next_allowed_day(now: datetime, zone: ZoneInfo, cfg: CalendarConfig) -> date:
    """The first allowed, non-holiday weekday after the minimum notice: the modal's default date."""
    day = (now + timedelta(seconds=cfg.min_notice_s)).astimezone(zone).date() + timedelta(days=1)
    for _ in range(60):
        if WEEKDAYS[day.weekday()] in cfg.allowed_weekdays and not holiday_name(day, cfg.holiday_country):
            return day
        day += timedelta(days=1)
    return day


# ---- the timeline --------------------------------------------------------------------------------

MAX_STATUS_UPDATES = 96
"""24 h at the default 15 minutes; a very short interval in a test config cannot flood the job store."""


def status_count(duration_s: float, every_s: float) -> int:
    """How many status updates fall strictly inside the window (after the start, before the end)."""
    return min(max(math.ceil(duration_s / every_s) - 1, 0), MAX_STATUS_UPDATES)


def timeline(window: Window, cfg: CalendarConfig, now: datetime, *, announce: bool = True) -> list[Reminder]:
    """Every message still to come for the window, in order; reminders already past are left out."""
    start, end = window.start, window.end
    items: list[Reminder] = []
    if announce:
        items.append(Reminder("announce", max(now, start - timedelta(seconds=cfg.announce_before_s)),
                              grace_for("announce", cfg)))
    for kind, before in (("reminder", cfg.reminder_before_s), ("final", cfg.final_before_s)):
        due = start - timedelta(seconds=before)
        if due > now:
            items.append(Reminder(kind, due, grace_for(kind, cfg)))
    items.append(Reminder("start", start, grace_for("start", cfg)))
    for n in range(1, status_count(window.duration_s, cfg.status_every_s) + 1):
        items.append(Reminder(f"status:{n}", start + timedelta(seconds=n * cfg.status_every_s),
                              grace_for("status", cfg)))
    items.append(Reminder("complete", end, grace_for("complete", cfg)))
    return [item for item in items if item.due >= now or item.kind == "announce"]


def why_skip(kind: str, window: Window, cfg: CalendarConfig, now: datetime) -> str | None:
    """Why a reminder firing now no longer makes sense (it is then audited, not posted), or None."""
    base = base_kind(kind)
    if base == "announce" and now >= window.start:
        return "the window has already started"
    if base == "reminder" and now >= window.start - timedelta(seconds=cfg.final_before_s):
        return "the final warning is already due"
    if base == "final" and now >= window.start:
        return "no final warning after the start"
    if base in ("start", "status") and now >= window.end:
        return "the window has already ended"
    return None


def job_id(window_id: str, revision: int, kind: str) -> str:
    """The scheduler job id of one reminder: `w:<window>:<revision>:<kind>`."""
    return f"w:{window_id}:{revision}:{kind}"


def parse_job_id(value: str) -> tuple[str, int, str] | None:
    prefix, _, rest = value.partition(":")
    window_id, _, rest = rest.partition(":")
    revision, _, kind = rest.partition(":")
    if prefix != "w" or not window_id or not revision.isdigit() or not kind:
        return None
    return window_id, int(revision), kind
