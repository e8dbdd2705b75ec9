"""Maintenance windows over real HTTP: bot processes, the Slack stand-in and one shared Redis, timeline in seconds."""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from bot.calendar.rules import WindowStatus, next_allowed_day
from bot.calendar.views import TITLES
from bot.config import BotConfig, CalendarConfig
from bot.context import Deps
from bot.devtools.slack.blockkit import validate_blocks, validate_view
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.slack import READABLE_ERRORS
from bot.store import keys as names
from bot.store.runs import RunStore, connect
from bot.store.windows import InFlight, WindowStore
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    COMPRESSED_CALENDAR,
    DAVE,
    MALLORY,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    load_factor,
    wait_until,
    write_config,
)

NEW_YORK = ZoneInfo("America/New_York")
# The seed's timeline compressed: announce 60 s ahead, "24 h" reminder 4 s, "1 h" warning 2 s, status every 1 s.
FAST = COMPRESSED_CALENDAR


def write_env(tmp_path: Path, calendar: dict[str, Any] | None) -> Path:
    config = base_config(**({"calendar": calendar} if calendar is not None else {}))
    config["scheduler"] = {"renew_every_s": 0.3}
    return write_config(tmp_path / "env.yml", config)


def kind_of(message: dict[str, Any]) -> str | None:
    """Which timeline message this is, from the fixed title its fallback text starts with."""
    text = message.get("text") or ""
    for kind, title in TITLES.items():
        if text.startswith(title):
            return kind
    return None


def window_messages(fake: FakeSlack, window_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, message) for every message of the window in the prod channel (thread replies too), oldest first."""
    found = []
    for channel, message in fake.all_messages():
        kind = kind_of(message)
        if channel == PROD_CHANNEL and kind and window_id in json.dumps(message.get("blocks")):
            found.append((kind, message))
    return found


def local_words(start: datetime) -> str:
    local = start.astimezone(NEW_YORK)
    return f"{local:%Y-%m-%d} {local:%H:%M:%S}"


def in_seconds(seconds: int) -> datetime:
    """A window start ``seconds`` ahead, stretched on a loaded machine so that scheduling it cannot eat its lead."""
    return datetime.fromtimestamp(math.ceil(time.time() + seconds * load_factor()), UTC)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    for user, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave"), (MALLORY, "mallory")]:
        slack.add_user(user, name)
    slack.add_usergroup("S0DBA", "dba", [DAVE])
    slack.add_usergroup("S0DEVS", "devs", [])
    yield slack
    slack.stop()


@pytest.fixture
def start_bot(tmp_path: Path, fake: FakeSlack, redis_url: str, key_prefix: str) -> Iterator[Callable[..., BotProcess]]:
    started: list[BotProcess] = []

    def start(config_path: Path, name: str = "a") -> BotProcess:
        bot = BotProcess(config_path=config_path, slack_api_url=fake.base_url, redis_url=redis_url,
                         key_prefix=key_prefix, log_path=tmp_path / f"bot-{name}-{len(started)}.log").start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()


@pytest.fixture
def deps(redis_url: str, key_prefix: str) -> Deps:
    """Read access to the bot's Redis state for assertions (no Slack)."""
    return Deps(config=BotConfig.model_validate(base_config()), store=RunStore(connect(redis_url), prefix=key_prefix),
                slack=None, publisher=None)


def sender_for(bot: BotProcess, fake: FakeSlack) -> SlackSender:
    return SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)


def schedule(sender: SlackSender, words: str, user: str = ALICE) -> tuple[str, str]:
    """`/migrate schedule prod <words>` -> (window id or '', the ephemeral reply)."""
    text = sender.slash(user, f"schedule prod {words}", channel_id=PROD_CHANNEL).json()["text"]
    match = re.search(r"window `([a-z0-9-]+)`", text)
    return (match.group(1) if match else ""), text


def jobs(deps: Deps, window_id: str = "") -> dict[str, float]:
    """The shared APScheduler store's pending jobs of a window: job id -> run time (UTC timestamp)."""
    rows = deps.store.redis.zrange(deps.store.key("scheduler", "run_times"), 0, -1, withscores=True)
    return {job: score for job, score in rows if job.startswith(f"w:{window_id}")}


def claim_holder(deps: Deps, bots: list[BotProcess], window_id: str, kind: str) -> BotProcess:
    """The process that won the claim of one timeline message (the claim's value is its instance id)."""
    window = WindowStore(deps.store).get(window_id)
    holder = deps.store.redis.get(deps.store.keys.once(names.window_message(window_id, window.revision, kind)))
    return next(b for b in bots if b.proc and f":{b.proc.pid}:" in f":{holder}")


def complete_timeline(fake: FakeSlack, window_id: str, timeout: float = 20) -> list[str]:
    wait_until(lambda: any(kind == "complete" for kind, _ in window_messages(fake, window_id)), timeout=timeout)
    time.sleep(0.5)  # anything doubled would arrive now
    return [kind for kind, _ in window_messages(fake, window_id)]


def assert_once_each(kinds: list[str], expected: list[str]) -> None:
    counts = Counter(kinds)
    assert counts["status"] >= 1
    assert {k: counts[k] for k in expected} == dict.fromkeys(expected, 1)


class TestTimeline:
    def test_every_message_arrives_in_order_with_release_notes(self, tmp_path, fake, start_bot, deps):
        """Announcement, reminder, final warning, start, status updates and completion arrive once each, in order."""
        bot = start_bot(write_env(tmp_path, FAST))
        sender = sender_for(bot, fake)
        start = in_seconds(6)
        window_id, reply = schedule(sender, f'{local_words(start)} 3s "Adds the Invoice table; drops legacy"')
        assert window_id, reply
        assert "Scheduled window" in reply and "<!date^" in reply
        wait_until(lambda: any(k == "start" for k, _ in window_messages(fake, window_id)), timeout=10)
        sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL)  # a run started inside the window links to it
        run = wait_until(lambda: deps.store.active_run("prod"), timeout=5)
        kinds = complete_timeline(fake, window_id)
        assert [k for k in kinds if k != "status"] == ["announce", "reminder", "final", "start", "complete"]
        assert kinds.index("status") > kinds.index("start") and kinds[-1] == "complete"
        assert Counter(kinds)["status"] == 2
        messages = dict((k, m) for k, m in window_messages(fake, window_id))
        assert "Adds the Invoice table; drops legacy" in json.dumps(messages["complete"]["blocks"])
        assert "<!date^" in json.dumps(messages["announce"]["blocks"])
        assert "No approver has confirmed" in json.dumps(messages["reminder"]["blocks"])
        assert "Backup target not verified" in json.dumps(messages["final"]["blocks"], ensure_ascii=False)
        last_status = [m for k, m in window_messages(fake, window_id) if k == "status"][-1]
        assert run.id in last_status["text"] and last_status.get("thread_ts") == messages["start"]["ts"]
        window = WindowStore(deps.store).get(window_id)
        assert window.run_id == run.id and window.status is WindowStatus.COMPLETED
        assert jobs(deps, window_id) == {}


class TestReplicas:
    def test_two_processes_post_each_reminder_once(self, tmp_path, fake, start_bot, deps):
        """Two bot processes on one Redis both run the jobs: every message is posted exactly once."""
        config = write_env(tmp_path, FAST)
        bots = [start_bot(config, "a"), start_bot(config, "b")]
        window_id, reply = schedule(sender_for(bots[1], fake), f'{local_words(in_seconds(5))} 2s "notes A"')
        assert window_id, reply
        kinds = complete_timeline(fake, window_id)
        assert_once_each(kinds, ["announce", "reminder", "final", "start", "complete"])
        assert len(fake.calls_to("chat.postMessage")) == len(kinds)

    def test_killed_poster_is_not_waited_for_and_reminders_post_once(self, tmp_path, fake, start_bot, deps):
        """Killing the process that posted the announcement before the reminder is due: the other one posts the
        rest of the timeline, each message once, with no leader lock to wait for."""
        config = write_env(tmp_path, FAST)
        bots = [start_bot(config, "a"), start_bot(config, "b")]
        window_id, reply = schedule(sender_for(bots[0], fake), f'{local_words(in_seconds(8))} 2s "notes B"')
        assert window_id, reply
        wait_until(lambda: window_messages(fake, window_id), timeout=5)  # the announcement is out
        poster = claim_holder(deps, bots, window_id, "announce")
        poster.kill()
        assert not any(k == "reminder" for k, _ in window_messages(fake, window_id))
        kinds = complete_timeline(fake, window_id)
        assert_once_each(kinds, ["announce", "reminder", "final", "start", "complete"])
        survivor = next(b for b in bots if b is not poster)
        assert claim_holder(deps, bots, window_id, "reminder") is survivor


class TestRestart:
    def test_restart_keeps_jobs_and_audits_a_missed_reminder(self, tmp_path, fake, start_bot, deps):
        """After a restart a due reminder is still posted, and one past its grace period is skipped and audited."""
        config = write_env(tmp_path, {**FAST, "reminder_grace_s": 1})
        first = start_bot(config, "first")
        start = in_seconds(8)
        window_id, reply = schedule(sender_for(first, fake), f'{local_words(start)} 2s "notes C"')
        assert window_id, reply
        wait_until(lambda: window_messages(fake, window_id), timeout=5)
        first.stop()
        reminder_due = start - timedelta(seconds=FAST["reminder_before_s"])
        time.sleep(max((reminder_due - datetime.now(UTC)).total_seconds() + 1.5, 0))
        second = start_bot(config, "second")
        kinds = complete_timeline(fake, window_id)
        assert "reminder" not in kinds
        assert_once_each(kinds, ["announce", "final", "start", "complete"])
        skipped = [e for e in WindowStore(deps.store).audit_entries(window_id) if e.outcome == "skipped"]
        assert [e.action for e in skipped] == ["reminder.reminder"]
        assert "grace period passed" in skipped[0].detail and skipped[0].data["late_s"] > 1
        # The /metrics of the process that took over says the same (README "Connect a real workspace", step 6).
        scraped = httpx.get(second.url + "/metrics", timeout=5).text
        for kind, outcome in [("reminder", "missed"), ("final", "posted"), ("start", "posted")]:
            assert f'migrate_bot_reminders_total{{kind="{kind}",outcome="{outcome}"}} 1.0' in scraped, scraped


    def inflight(self, deps: Deps, kind: str) -> dict[str, Any] | None:
        return next((e for e in InFlight(deps.store, deps.instance_id).entries().values() if e["kind"] == kind), None)

    def test_killed_while_posting_a_reminder_that_reached_slack_it_is_confirmed_not_reposted(
            self, tmp_path, fake, start_bot, deps):
        """kill -9 while chat.postMessage is under way, and Slack does post it: the next process finds it there."""
        config = write_env(tmp_path, FAST)
        first = start_bot(config, "first")
        window_id, reply = schedule(sender_for(first, fake), f'{local_words(in_seconds(8))} 2s "notes D"')
        assert window_id, reply
        wait_until(lambda: window_messages(fake, window_id), timeout=5)  # the announcement is out
        fake.inject("chat.postMessage", status=200, delay_s=2)  # the reminder's post: slow, then served
        wait_until(lambda: self.inflight(deps, "reminder"), timeout=10)
        first.kill()
        wait_until(lambda: any(k == "reminder" for k, _ in window_messages(fake, window_id)), timeout=5)
        start_bot(config, "second")
        entries = wait_until(lambda: [e for e in WindowStore(deps.store).audit_entries(window_id)
                                      if e.action == "reminder.reminder"], timeout=40)
        assert [(e.outcome, e.detail) for e in entries] == [
            ("ok", "posted before the bot stopped; confirmed in the channel")]
        kinds = complete_timeline(fake, window_id, timeout=30)
        assert_once_each(kinds, ["announce", "reminder", "final", "start", "complete"])
        assert InFlight(deps.store, deps.instance_id).entries() == {}

    @pytest.mark.parametrize("history", ["readable", "not_in_channel"])
    def test_killed_while_posting_a_reminder_that_never_arrived_it_is_posted_late(
            self, tmp_path, fake, start_bot, deps, history):
        """kill -9 mid-post and the post never reached Slack: the next process posts it, late, within its grace.

        When the channel's history cannot be read, it is posted all the same, saying it may show twice.
        Recovery waits for the dead process's heartbeat to expire (10 s) and a heartbeat round (6 s), so the
        reminder is due 40 s before the start: still relevant, and within its grace, when the recovery comes.
        """
        config = write_env(tmp_path, {**FAST, "reminder_before_s": 40, "reminder_grace_s": 60})
        first = start_bot(config, "first")
        window_id, reply = schedule(sender_for(first, fake), f'{local_words(in_seconds(45))} 2s "notes E"')
        assert window_id, reply
        wait_until(lambda: window_messages(fake, window_id), timeout=5)
        fake.inject("chat.postMessage", status=200, delay_s=2, disconnect=True)  # lost on the way
        if history != "readable":
            fake.inject("conversations.history", error=history)
        # Due 40 s before a start that in_seconds(45) moved later on a loaded machine: 5 s from now when idle.
        wait_until(lambda: self.inflight(deps, "reminder"), timeout=45)
        first.kill()
        time.sleep(2.5)
        assert not any(k == "reminder" for k, _ in window_messages(fake, window_id))
        start_bot(config, "second")
        wait_until(lambda: any(k == "reminder" for k, _ in window_messages(fake, window_id)), timeout=40)
        entries = wait_until(lambda: [e for e in WindowStore(deps.store).audit_entries(window_id)
                                      if e.action == "reminder.reminder"])  # audited just after the post
        assert [e.outcome for e in entries] == ["ok"]
        assert "late: the bot stopped while posting it" in entries[0].detail
        assert ("it may show twice" in entries[0].detail) is (history != "readable")
        kinds = complete_timeline(fake, window_id, timeout=60)
        assert_once_each(kinds, ["announce", "reminder", "final", "start", "complete"])
        assert InFlight(deps.store, deps.instance_id).entries() == {}

    def test_a_post_slack_refuses_is_audited_as_failed_and_the_timeline_goes_on(self, tmp_path, fake, start_bot,
                                                                               deps):
        bot = start_bot(write_env(tmp_path, FAST))
        window_id, reply = schedule(sender_for(bot, fake), f'{local_words(in_seconds(7))} 2s "notes F"')
        assert window_id, reply
        wait_until(lambda: window_messages(fake, window_id), timeout=5)
        fake.inject("chat.postMessage", error="not_in_channel")
        kinds = complete_timeline(fake, window_id)
        assert "reminder" not in kinds
        assert_once_each(kinds, ["announce", "final", "start", "complete"])
        failed = [e for e in WindowStore(deps.store).audit_entries(window_id) if e.outcome == "failed"]
        assert [(e.action, e.detail) for e in failed] == [
            ("reminder.reminder", f"not posted: {READABLE_ERRORS['not_in_channel']}")]
        assert InFlight(deps.store, deps.instance_id).entries() == {}


class TestManage:
    def test_reschedule_moves_pending_reminders_and_cancel_removes_them(self, tmp_path, fake, start_bot, deps):
        """Reschedule (button + modal) moves every pending job; Cancel removes them all and posts the notice."""
        bot = start_bot(write_env(tmp_path, FAST))
        sender = sender_for(bot, fake)
        start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
        window_id, reply = schedule(sender, f'{local_words(start)} 3s "notes D"')
        before = jobs(deps, window_id)
        assert window_id and len(before) == 7, reply  # announce, reminder, final, start, 2 status, complete
        listing = sender.slash(ALICE, "windows", channel_id=PROD_CHANNEL).json()
        assert validate_blocks(listing["blocks"]) == []
        message = fake.ephemerals(user=ALICE)[-1]
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=message, action_id=f"window_reschedule:{window_id}")
        modal = wait_until(lambda: fake.top_modal(ALICE), timeout=5)
        moved = start + timedelta(days=1, hours=1)
        local = moved.astimezone(NEW_YORK)
        values = {"date": {"date": {"type": "datepicker", "selected_date": f"{local:%Y-%m-%d}"}},
                  "time": {"time": {"type": "timepicker", "selected_time": f"{local:%H:%M}"}},
                  "tz": {"tz": {"type": "static_select", "selected_option": {"value": "America/New_York"}}},
                  "duration": {"duration": {"type": "plain_text_input", "value": "3s"}},
                  "override": {"override": {"type": "plain_text_input", "value": None}}}
        response = sender.submit_view(ALICE, modal, values)
        assert response.status_code == 200 and not response.content.strip(b"{} ")
        after = wait_until(lambda: jobs(deps, window_id) if WindowStore(deps.store).get(window_id).revision == 2 else None)
        shift = (moved - start).total_seconds()
        assert sorted(after) == sorted(j.replace(":1:", ":2:") for j in before)
        assert all(after[j.replace(":1:", ":2:")] - before[j] == pytest.approx(shift) for j in before)
        listing = sender.slash(ALICE, "windows", channel_id=PROD_CHANNEL)
        message = fake.ephemerals(user=ALICE)[-1]
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=message, action_id=f"window_cancel:{window_id}")
        notice = wait_until(lambda: [m for k, m in window_messages(fake, window_id) if k == "cancelled"], timeout=5)
        assert f"<@{ALICE}>" in json.dumps(notice[0]["blocks"])
        assert jobs(deps, window_id) == {}
        assert WindowStore(deps.store).get(window_id).status is WindowStatus.CANCELLED
        assert [e.action for e in WindowStore(deps.store).audit_entries(window_id)] == [
            "window.schedule", "window.reschedule", "window.cancel"]


    def test_text_reschedule_of_an_announced_window_posts_a_notice(self, tmp_path, fake, start_bot, deps):
        """Moving an announced window by text posts a rescheduled notice and does not announce it again."""
        sender = sender_for(start_bot(write_env(tmp_path, FAST)), fake)
        # Inside the announce lead (60 s) however loaded the machine is, so the announcement goes out at once.
        soon = datetime.fromtimestamp(math.ceil(time.time() + FAST["announce_before_s"] / 2), UTC)
        window_id, reply = schedule(sender, f'{local_words(soon)} 3s "notes E"')
        wait_until(lambda: window_messages(fake, window_id), timeout=5)
        moved = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
        reply = sender.slash(ALICE, f"windows reschedule {window_id} {local_words(moved)}",
                             channel_id=PROD_CHANNEL).json()["text"]
        assert f"Rescheduled window `{window_id}`" in reply
        notice = wait_until(lambda: [m for k, m in window_messages(fake, window_id) if k == "rescheduled"], timeout=5)
        assert "every pending reminder moved" in json.dumps(notice[0]["blocks"])
        pending = jobs(deps, window_id)
        assert all(":2:" in job for job in pending) and not any(job.endswith(":announce") for job in pending)
        assert min(pending.values()) == (moved - timedelta(seconds=FAST["reminder_before_s"])).timestamp()
        denied = sender.slash(MALLORY, f"windows cancel {window_id}", channel_id=PROD_CHANNEL).json()["text"]
        assert "Only requesters and approvers" in denied and jobs(deps, window_id) == pending


def policy_days() -> tuple[date, date]:
    """A Saturday and a compliant Tuesday/Wednesday, both well past the 7-day notice."""
    today = datetime.now(NEW_YORK).date()
    saturday = today + timedelta(days=14 + (5 - today.weekday()) % 7)
    good = next_allowed_day(datetime.now(UTC), NEW_YORK, CalendarConfig())
    return saturday, good


def modal_values(day: date, clock: str, *, duration: str = "2h", zone: str = "America/New_York",
                 notes: str = "Release 42", owner: str = ALICE, override: str | None = None) -> dict[str, Any]:
    def text(value: str | None) -> dict[str, Any]:
        return {"type": "plain_text_input", "value": value}

    return {"date": {"date": {"type": "datepicker", "selected_date": day.isoformat()}},
            "time": {"time": {"type": "timepicker", "selected_time": clock}},
            "tz": {"tz": {"type": "static_select", "selected_option": {"value": zone}}},
            "duration": {"duration": text(duration)}, "notes": {"notes": text(notes)},
            "owner": {"owner": {"type": "users_select", "selected_user": owner}},
            "oncall": {"oncall": text("S0DBA")}, "override": {"override": text(override)}}


class TestPolicy:
    def test_violations_warn_and_the_override_is_audited(self, tmp_path, fake, start_bot, deps):
        """A Saturday window is held back with a warning; with --override it is scheduled and the reason audited."""
        sender = sender_for(start_bot(write_env(tmp_path, None)), fake)
        saturday, _ = policy_days()
        window_id, reply = schedule(sender, f'{saturday} 02:00 2h "Release 41"')
        assert not window_id and "Saturday" in reply and "Nothing was scheduled" in reply and "--override" in reply
        assert WindowStore(deps.store).scheduled() == [] and jobs(deps) == {}
        window_id, reply = schedule(sender, f'{saturday} 02:00 2h "Release 41" --override "vendor is only free then"')
        assert window_id and "Policy overridden" in reply
        entry = [e for e in WindowStore(deps.store).audit_entries(window_id) if e.action == "window.policy_override"][0]
        assert (entry.actor, entry.outcome, entry.detail) == (ALICE, "override", "vendor is only free then")
        assert entry.data["rules"] == ["weekday"]

    def test_modal_policy_warning_needs_a_reason(self, tmp_path, fake, start_bot, deps):
        """In the form, a violation comes back as field errors; a reason in the override field schedules it."""
        sender = sender_for(start_bot(write_env(tmp_path, None)), fake)
        saturday, good = policy_days()
        sender.slash(ALICE, "schedule prod", channel_id=PROD_CHANNEL)
        modal = wait_until(lambda: fake.top_modal(ALICE), timeout=5)
        assert validate_view(modal) == []
        assert modal["blocks"][0]["element"]["initial_date"] == good.isoformat()
        errors = sender.submit_view(ALICE, modal, modal_values(saturday, "03:00")).json()
        assert errors["response_action"] == "errors"
        assert set(errors["errors"]) == {"date", "time", "override"} and "Saturday" in errors["errors"]["date"]
        assert WindowStore(deps.store).scheduled() == []
        response = sender.submit_view(ALICE, modal, modal_values(saturday, "03:00", override="board meeting"))
        assert response.status_code == 200 and fake.top_modal(ALICE) is None
        window = wait_until(lambda: WindowStore(deps.store).scheduled())[0]
        assert window.oncall == "S0DBA" and window.override_reason == "board meeting"
        assert any(e.outcome == "override" for e in WindowStore(deps.store).audit_entries(window.id))


class TestModal:
    def test_invalid_input_gets_field_errors_and_schedules_nothing(self, tmp_path, fake, start_bot, deps):
        """Unparseable duration, unknown zone and a past date come back as field errors; nothing is stored."""
        sender = sender_for(start_bot(write_env(tmp_path, FAST)), fake)
        sender.slash(ALICE, "schedule prod", channel_id=PROD_CHANNEL)
        modal = wait_until(lambda: fake.top_modal(ALICE), timeout=5)
        tomorrow = datetime.now(NEW_YORK).date() + timedelta(days=1)
        first = sender.submit_view(ALICE, modal, modal_values(tomorrow, "02:00", duration="forever",
                                                              zone="Mars/Olympus")).json()
        assert first["response_action"] == "errors" and set(first["errors"]) == {"duration", "tz"}
        second = sender.submit_view(ALICE, modal, modal_values(date(2020, 1, 7), "02:00")).json()
        assert second["errors"] == {"date": "That time has already passed; pick a time in the future."}
        third = sender.submit_view(ALICE, modal, modal_values(tomorrow, "02:00", notes="")).json()
        assert set(third["errors"]) == {"notes"}
        assert WindowStore(deps.store).scheduled() == [] and jobs(deps) == {}
        assert fake.top_modal(ALICE) is not None
        usage = sender.slash(ALICE, "schedule prod 2026-13-45 02:00", channel_id=PROD_CHANNEL).json()
        assert usage["response_type"] == "ephemeral" and "is not a date" in usage["text"]
        outsider = sender.slash(MALLORY, f'schedule prod {tomorrow} 02:00 1h "x"', channel_id=PROD_CHANNEL).json()
        assert "Only requesters and approvers" in outsider["text"]
        assert WindowStore(deps.store).scheduled() == [] and jobs(deps) == {}


class TestHome:
    def test_home_respects_block_kit_limits_with_fifty_windows(self, tmp_path, fake, start_bot, deps):
        """With 50 windows scheduled the App Home view stays within Block Kit limits and says how many are left."""
        bot = start_bot(write_env(tmp_path, FAST))
        sender = sender_for(bot, fake)
        base = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
        for i in range(50):
            notes = f"release {i} " + "x" * 200
            window_id, reply = schedule(sender, f'{local_words(base + timedelta(hours=i))} 3s "{notes}"')
            assert window_id, reply
        sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL)
        sender.home_opened(ALICE)
        home = wait_until(lambda: fake.home(ALICE), timeout=5)
        assert validate_view(home) == [] and len(home["blocks"]) <= 100
        text = json.dumps(home["blocks"])
        assert "and 25 more" in text and "Active runs" in text and deps.store.active_run("prod").id in text
        listing = sender.slash(ALICE, "windows", channel_id=PROD_CHANNEL).json()
        assert validate_blocks(listing["blocks"]) == [] and "and 35 more" in json.dumps(listing["blocks"])


def bulk_windows(deps: Deps, count: int, start: datetime, *, tag: str = "bulk", env_every: int = 10,
                 duration_s: float = 3600) -> list[str]:
    """``count`` scheduled windows an hour apart from ``start``: every ``env_every``-th in prod, the rest in
    staging. Written through the store (scheduling 10,000 by slash command would take minutes)."""
    from bot.calendar.rules import Window

    windows = WindowStore(deps.store)
    ids = []
    for i in range(count):
        env = "prod" if i % env_every == 0 else "staging"
        window = Window(id=f"{env}-{tag}-{i:05d}", env=env, channel=PROD_CHANNEL if env == "prod" else "C0STAGING",
                        start=start + timedelta(hours=i), duration_s=duration_s, timezone="UTC",
                        release_notes=f"r{i}", owner=ALICE, created_by=ALICE, created_at=datetime.now(UTC))
        assert windows.create(window)
        ids.append(window.id)
    return ids


class TestBigCalendar:
    def test_ten_thousand_windows_are_listed_a_page_at_a_time(self, tmp_path, fake, start_bot, deps):
        """With 10,000 windows, `/migrate windows` and App Home show the soonest first and the true count, read as a
        page from the sorted sets; a window already going is listed, one already over is not."""
        now = datetime.now(UTC)
        bulk_windows(deps, 10_000, now + timedelta(days=1))
        bulk_windows(deps, 1, now - timedelta(minutes=30), tag="going")  # ends in 30 minutes
        bulk_windows(deps, 1, now - timedelta(hours=3), tag="over")  # ended two hours ago
        bot = start_bot(write_env(tmp_path, FAST))
        sender = sender_for(bot, fake)
        listing = sender.slash(ALICE, "windows", channel_id=PROD_CHANNEL).json()
        text = json.dumps(listing["blocks"])
        assert validate_blocks(listing["blocks"]) == []
        assert "(10,001)" in text and "and 9,986 more" in text and "prod-over-00000" not in text
        assert text.index("prod-going-00000") < text.index("prod-bulk-00000") < text.index("staging-bulk-00001")
        prod = json.dumps(sender.slash(ALICE, "windows prod", channel_id=PROD_CHANNEL).json()["blocks"])
        assert "(1,001)" in prod and "staging-bulk" not in prod and "prod-bulk-00010" in prod
        sender.home_opened(ALICE)
        home = wait_until(lambda: fake.home(ALICE), timeout=5)
        assert validate_view(home) == [] and "and 9,976 more" in json.dumps(home["blocks"])

    def test_windows_written_before_the_environment_index_are_found(self, tmp_path, fake, start_bot, deps):
        """Windows stored by a release that kept only the one index still show in `/migrate windows prod`."""
        bulk_windows(deps, 30, datetime.now(UTC) + timedelta(days=1))
        keys = deps.store.keys
        deps.store.redis.delete(keys.windows_of("prod"), keys.windows_of("staging"), keys.windows_indexed)
        bot = start_bot(write_env(tmp_path, FAST))
        prod = json.dumps(sender_for(bot, fake).slash(ALICE, "windows prod", channel_id=PROD_CHANNEL).json()["blocks"])
        assert "(3)" in prod and "prod-bulk-00020" in prod and "staging" not in prod

    def test_an_open_home_tab_is_republished_when_a_window_changes(self, tmp_path, fake, start_bot, deps):
        """Carol looks at App Home; Alice schedules, then cancels a window: Carol's tab shows each change without
        being reopened. Mallory, who may not see prod, is not republished."""
        bot = start_bot(write_env(tmp_path, FAST))
        sender = sender_for(bot, fake)
        for user in (CAROL, MALLORY):
            sender.home_opened(user)
        wait_until(lambda: fake.home(CAROL) and fake.home(MALLORY), timeout=5)
        before = fake.home(MALLORY)
        window_id, reply = schedule(sender, f'{local_words(in_seconds(3 * 86400))} 1h "Release 7"')
        assert window_id, reply
        wait_until(lambda: window_id in json.dumps(fake.home(CAROL)["blocks"]), timeout=10)
        sender.slash(ALICE, f"windows cancel {window_id}", channel_id=PROD_CHANNEL)
        wait_until(lambda: window_id not in json.dumps(fake.home(CAROL)["blocks"]), timeout=10)
        assert fake.home(MALLORY) == before and window_id not in json.dumps(fake.home(MALLORY))
