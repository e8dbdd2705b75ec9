"""Three bot replicas behind Sentinel: Redis fails over mid-run and mid-timeline, a replica dies before a reminder.

Everything is real and started here: a Redis primary and replica, three sentinels, three `migrate-bot serve`
processes, the Slack stand-in and a scratch PostgreSQL database; the timeline is compressed to seconds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.prisma.native import NativeRunner
from bot.store import keys as names
from bot.store.runs import RunStore, connect
from bot.store.windows import WindowStore
from tests.e2e import EXAMPLES, approve, click, ready_for_approval
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    COMPRESSED_CALENDAR,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    load_factor,
    wait_until,
    write_config,
)
from tests.sentinel_world import SentinelWorld
from tests.test_calendar_slack import (
    assert_once_each,
    complete_timeline,
    in_seconds,
    local_words,
    schedule,
    window_messages,
)

PREFIX = "failover:"


@pytest.fixture
def rig(tmp_path: Path, scratch_db: str) -> Iterator[dict[str, Any]]:
    sentinels = SentinelWorld(tmp_path / "redis").start()
    fake = FakeSlack(token=BOT_TOKEN).start()
    for user, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")]:
        fake.add_user(user, name)
    migrations = tmp_path / "migrations"
    shutil.copytree(EXAMPLES, migrations)
    first = tmp_path / "first"  # the first migration is applied; the run applies the others
    shutil.copytree(EXAMPLES / "20240101000000_init", first / "20240101000000_init")
    NativeRunner(scratch_db).deploy(first)
    config = base_config(calendar=COMPRESSED_CALENDAR, database_url=scratch_db,
                         backup={"method": "pg_dump", "local_dir": str(tmp_path / "backups")},
                         migrate={"migrations_dir": str(migrations), "runner": "native"})
    config["scheduler"] = {"renew_every_s": 1}
    path = write_config(tmp_path / "env.yml", config)
    bots = [BotProcess(config_path=path, slack_api_url=fake.base_url, redis_url=sentinels.url, key_prefix=PREFIX,
                       log_path=tmp_path / f"bot-{n}.log") for n in range(3)]
    try:
        for bot in bots:
            bot.start()
        store = RunStore(connect(sentinels.url), prefix=PREFIX)
        yield {"sentinels": sentinels, "fake": fake, "bots": bots, "store": store,
               "senders": [SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake) for bot in bots]}
    finally:
        for bot in bots:
            bot.stop()
        fake.stop()
        sentinels.stop()


def posted_at(fake: FakeSlack, window_id: str, kind: str) -> list[float]:
    return [float(message["ts"]) for k, message in window_messages(fake, window_id) if k == kind]


def due(start: datetime, before_s: float) -> float:
    return (start - timedelta(seconds=before_s)).timestamp()


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


class TestPosterDies:
    def test_replica_killed_a_second_before_due_the_reminder_is_still_on_time_and_once(self, rig):
        """Kill the replica that posted the announcement (it held the last claim) 1 s before the reminder: one of
        the other two posts it within 2 s of its due time, and every message of the timeline arrives once."""
        fake, store, bots = rig["fake"], rig["store"], rig["bots"]
        start = in_seconds(8)
        window_id, reply = schedule(rig["senders"][0], f'{local_words(start)} 2s "notes F1"')
        assert window_id, reply
        wait_until(lambda: posted_at(fake, window_id, "announce"), timeout=5)
        window = WindowStore(store).get(window_id)
        holder = store.redis.get(store.keys.once(names.window_message(window_id, window.revision, "announce")))
        poster = next(bot for bot in bots if f":{bot.proc.pid}:" in f":{holder}")
        reminder_due = due(start, COMPRESSED_CALENDAR["reminder_before_s"])
        assert time.time() < reminder_due - 1, "the machine is too slow to kill the poster before the reminder"
        sleep_until(reminder_due - 1)
        poster.kill()
        arrived = wait_until(lambda: posted_at(fake, window_id, "reminder"), timeout=10)
        assert arrived[0] - reminder_due <= 2.0 * load_factor(), f"{arrived[0] - reminder_due:.2f} s late"
        assert_once_each(complete_timeline(fake, window_id), ["announce", "reminder", "final", "start", "complete"])


class TestRedisFailover:
    def test_primary_killed_mid_run_and_mid_timeline_run_finishes_and_reminders_post_once(self, rig):
        """The Redis primary is SIGKILLed a second before a reminder is due, right as the approved run's migrate
        step is clicked: Sentinel promotes the replica, the run finishes, and each timeline message is posted
        exactly once (the Slack stand-in's record)."""
        fake, store, sentinels = rig["fake"], rig["store"], rig["sentinels"]
        sender = rig["senders"][0]
        rig_view = {"fake": fake, "sender": sender, "store": store}
        assert sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
        run = wait_until(lambda: store.active_run("prod"), timeout=10)
        ts = wait_until(lambda: store.get(run.id).message_ts, timeout=10)
        wait_until(lambda: store.get(run.id).facts.pending is not None, timeout=20)
        ready_for_approval(rig_view, run.id, ts)
        approve(rig_view, run.id, ts)

        start = in_seconds(7)
        window_id, reply = schedule(rig["senders"][1], f'{local_words(start)} 3s "notes F2"')
        assert window_id, reply
        wait_until(lambda: posted_at(fake, window_id, "announce"), timeout=5)
        sleep_until(due(start, COMPRESSED_CALENDAR["reminder_before_s"]) - 1)
        old_primary = sentinels.kill_primary()
        rig_view["sender"] = rig["senders"][2]  # the click arrives at another replica, through the failover
        assert click(rig_view, ts, ALICE, "step_run:migrate").status_code == 200

        wait_until(lambda: sentinels.failed_over_from(old_primary), timeout=20)
        # Every step done: the run goes on to its watch (monitoring), with both pending migrations applied.
        wait_until(lambda: store.get(run.id).status.value in ("monitoring", "succeeded"), timeout=30)
        assert [(step.name, step.status.value) for step in store.get(run.id).steps] == [
            ("backup", "succeeded"), ("migrate", "succeeded")]
        assert "applied 2" in next(e.detail for e in store.audit_entries(run.id) if e.action == "step.succeeded"
                                   and e.data.get("step") == "migrate")
        assert_once_each(complete_timeline(fake, window_id, timeout=30),
                         ["announce", "reminder", "final", "start", "complete"])
        outcomes = [(e.action, e.outcome) for e in WindowStore(store).audit_entries(window_id)
                    if e.action.startswith("reminder.")]
        assert ("reminder.reminder", "ok") in outcomes and all(outcome == "ok" for _, outcome in outcomes), outcomes
        assert datetime.now(UTC) > start
