"""The calendar's pure rules and views: policy warnings, the timeline, late reminders, parsing and Block Kit limits."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.calendar.delivery import missing_for
from bot.calendar.operations import slack_id
from bot.calendar.rules import (
    Window,
    job_id,
    local_to_utc,
    parse_duration,
    parse_job_id,
    parse_time,
    policy_violations,
    timeline,
    validate_request,
    why_skip,
)
from bot.calendar.views import ModalDefaults, home_view, read_modal, schedule_modal, windows_list
from bot.config import BotConfig, CalendarConfig
from bot.context import Deps
from bot.devtools.slack.blockkit import validate_blocks, validate_view
from bot.runbook.rules import Approval, Confirmation, Finding, Review, Run, RunFacts, RunStatus, Transition
from bot.store.runs import RunStore, connect
from tests.harness import base_config

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # a Tuesday
CFG = CalendarConfig()


def at(day: str, clock: str = "02:00") -> datetime:
    return local_to_utc(date.fromisoformat(day), parse_time(clock), NY)


def rules(day: str, clock: str = "02:00", hours: float = 2, now: datetime = NOW) -> list[str]:
    return [v.rule for v in policy_violations(start=at(day, clock), duration_s=hours * 3600, zone=NY, cfg=CFG, now=now)]


def window(start: datetime, duration_s: float = 7200, **extra: object) -> Window:
    fields: dict[str, object] = {
        "id": "prod-w261208-abcd", "env": "prod", "channel": "C0PROD", "start": start, "duration_s": duration_s,
        "timezone": "America/New_York", "release_notes": "Release 42\nAdds invoices", "owner": "U0ALICE",
        "created_by": "U0ALICE", "created_at": NOW}
    return Window.model_validate({**fields, **extra})


class TestPolicy:
    def test_recommended_window_has_no_warnings(self):
        """Tuesday 02:00-04:00 New York time, two weeks ahead, is within every rule."""
        assert rules("2026-12-08") == []

    def test_each_rule_warns(self):
        """Weekend, holiday, hours, length and short notice each produce their own warning."""
        assert rules("2026-12-05") == ["weekday"]
        assert rules("2028-07-04") == ["holiday"]  # Independence Day on a Tuesday
        assert rules("2026-12-08", "03:00") == ["hours"]
        assert rules("2026-12-09", "01:30") == ["hours"]
        assert rules("2026-12-08", hours=2.5) == ["hours", "duration"]
        assert rules("2026-11-25") == ["notice"]

    def test_warnings_name_the_day_and_holiday(self):
        """The warning text says which weekday and which holiday, in the seed's words."""
        messages = [v.message for v in policy_violations(start=at("2026-11-26"), duration_s=3600, zone=NY, cfg=CFG,
                                                         now=NOW - timedelta(days=30))]
        assert messages[0] == "2026-11-26 is a Thursday; windows go on Tuesday or Wednesday."
        assert "holiday in US (Thanksgiving" in messages[1]

    def test_policy_is_configurable(self):
        """An environment may allow other days and hours, or switch the holiday calendar off."""
        relaxed = CalendarConfig(allowed_weekdays=["sat"], earliest_start="00:00", latest_end="24:00",
                                 holiday_country=None, min_notice_s=0)
        assert policy_violations(start=at("2026-12-05", "23:00"), duration_s=7200, zone=NY, cfg=relaxed, now=NOW) == []

    def test_bad_policy_settings_are_refused(self):
        """An unknown zone or holiday country, or hours in the wrong order, fail at config load."""
        for bad in ({"timezone": "Mars/Olympus"}, {"holiday_country": "XX"},
                    {"earliest_start": "05:00", "latest_end": "04:00"}, {"earliest_start": "2am"}):
            with pytest.raises(ValidationError):
                CalendarConfig(**bad)

    def test_past_or_endless_windows_are_invalid(self):
        """A start in the past or a duration over 24 h is an error, not an overridable warning."""
        assert set(validate_request(start=NOW - timedelta(minutes=1), duration_s=7200, now=NOW)) == {"date"}
        assert set(validate_request(start=NOW + timedelta(days=1), duration_s=25 * 3600, now=NOW)) == {"duration"}


class TestTimeline:
    def test_seed_offsets_in_order(self):
        """7 days, 24 h and 1 h before, the start, every 15 minutes, then the end."""
        items = timeline(window(at("2026-12-08")), CFG, NOW)
        start = at("2026-12-08")
        assert [i.kind for i in items] == ["announce", "reminder", "final", "start",
                                           *[f"status:{n}" for n in range(1, 8)], "complete"]
        assert [start - i.due for i in items[:4]] == [timedelta(days=7), timedelta(days=1), timedelta(hours=1),
                                                      timedelta(0)]
        assert items[4].due - start == timedelta(minutes=15) and items[-1].due - start == timedelta(hours=2)
        assert [i.grace_s for i in items[:3]] == [12 * 3600, 2 * 3600, 15 * 60]

    def test_short_notice_announces_now_and_drops_past_reminders(self):
        """A window 3 hours ahead is announced at once and gets no 24-hour reminder."""
        items = timeline(window(NOW + timedelta(hours=3)), CFG, NOW)
        assert items[0].kind == "announce" and items[0].due == NOW
        assert "reminder" not in [i.kind for i in items] and "final" in [i.kind for i in items]

    def test_late_reminders_are_skipped_when_pointless(self):
        """No final warning after the start, no 24-hour reminder once the final warning is due."""
        w = window(at("2026-12-08"))
        assert why_skip("final", w, CFG, w.start + timedelta(seconds=1)) == "no final warning after the start"
        assert why_skip("final", w, CFG, w.start - timedelta(minutes=50)) is None
        assert why_skip("reminder", w, CFG, w.start - timedelta(minutes=30)) == "the final warning is already due"
        assert why_skip("status:3", w, CFG, w.end) == "the window has already ended"

    def test_job_ids_round_trip(self):
        """A job id carries the window, its revision and the reminder kind, and nothing else."""
        assert parse_job_id(job_id("prod-w261208-abcd", 3, "status:2")) == ("prod-w261208-abcd", 3, "status:2")
        assert parse_job_id("something-else") is None


class TestParsing:
    def test_durations(self):
        """Hours, minutes, seconds and combinations; anything else is refused with an example."""
        assert [parse_duration(t) for t in ("2h", "90m", "1h30m", "45s", "1.5h")] == [7200, 5400, 5400, 45, 5400]
        for bad in ("", "2 hours", "forever", "0h"):
            with pytest.raises(ValueError):
                parse_duration(bad)

    def test_slack_ids(self):
        """Mentions and raw IDs of users and groups become IDs; names do not."""
        assert [slack_id(t) for t in ("<@U0ALICE|alice>", "<!subteam^S0DBA|dba>", "U0BOB", "@S0DBA")] == [
            "U0ALICE", "S0DBA", "U0BOB", "S0DBA"]
        assert slack_id("alice") is None

    def test_modal_values(self):
        """Every element type of the form reads back as a plain string by block id."""
        values = {"date": {"date": {"selected_date": "2026-12-08"}}, "time": {"time": {"selected_time": "02:00"}},
                  "tz": {"tz": {"selected_option": {"value": "UTC"}}}, "owner": {"owner": {"selected_user": "U1"}},
                  "notes": {"notes": {"value": None}}}
        assert read_modal(values) == {"date": "2026-12-08", "time": "02:00", "tz": "UTC", "owner": "U1", "notes": ""}


def run(n: int, status: RunStatus = RunStatus.AWAITING_APPROVAL) -> Run:
    return Run(id=f"prod-261124-{n:06x}", env="prod", status=status, requested_by="U0ALICE", channel="C0PROD",
               message_ts=f"1700000000.{n:06d}", created_at=NOW, updated_at=NOW,
               approvals=[Approval(by="U0BOB", at=NOW)] if n % 2 else [])


class TestViews:
    def test_modal_is_valid_block_kit(self):
        """The schedule and reschedule forms pass Slack's view limits."""
        defaults = ModalDefaults(date(2026, 12, 8), "02:00", "Europe/Paris", "2h", "notes", "U0ALICE", "S0DBA")
        for reschedule in (False, True):
            view = schedule_modal("prod", defaults, metadata={"env": "prod"}, reschedule=reschedule, warning="x")
            assert validate_view(view) == []

    def test_home_and_list_stay_within_limits_with_fifty_windows(self):
        """50 windows, 30 active runs and 30 waiting approvals fit the Home tab; the list fits a message."""
        windows = [window(at("2026-12-08") + timedelta(hours=i), id=f"prod-w261208-{i:04x}", release_notes="y" * 2500)
               for i in range(50)]
        runs = [run(i) for i in range(30)]
        home = home_view(windows, runs, runs, NOW)
        assert validate_view(home) == [] and len(home["blocks"]) <= 100
        assert "and 25 more" in str(home["blocks"]) and "and 20 more" in str(home["blocks"])
        listing = windows_list(windows, NOW)
        assert validate_blocks(listing) == [] and len(listing) <= 50


class TestMissing:
    def test_reminders_list_what_the_window_still_lacks(self, redis_url, key_prefix):
        """Approver, open checklist items, an unverified backup target and unwaived high findings are listed."""
        store = RunStore(connect(redis_url), prefix=key_prefix)
        deps = Deps(config=BotConfig.model_validate(base_config()), store=store, slack=None, publisher=None)
        linked = run(1, RunStatus.COLLECTING).model_copy(update={
            "checklist": {"staging_tested": Confirmation(by="U0ALICE", at=NOW)},
            "facts": RunFacts(review=Review(high=[Finding(key="k1", migration="m1", message="SET NOT NULL")]))})
        store.create(Transition(linked, []), lock_hours=1)
        lacking = missing_for(deps, window(at("2026-12-08"), run_id=linked.id))
        assert [line.split(" ")[0] for line in lacking] == ["No", "Checklist", "Backup", "1"]
        assert "5 open" in lacking[1] and "Rollback plan prepared and tested" in lacking[1]
        store.redis.set(store.key("check", "prod"), json.dumps({"ok": True, "items": [
            {"name": "Backup target", "ok": True}]}))
        approved = window(at("2026-12-08"), run_id=linked.id, approver="U0BOB")
        assert [line.split(" ")[0] for line in missing_for(deps, approved)] == ["Checklist", "1"]
