"""Recovering a timeline post left half-done by a dead process, in-process: one replica at a time, retries, hand-over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.calendar.delivery import recover_interrupted
from bot.calendar.rules import Window
from bot.config import BotConfig
from bot.context import Deps
from bot.devtools.slack.server import FakeSlack
from bot.integrations.slack import Slack, make_client
from bot.store.runs import RunStore, connect
from bot.store.windows import InFlight, WindowStore
from tests.harness import ALICE, BOT_TOKEN, COMPRESSED_CALENDAR, PROD_CHANNEL, base_config

DEAD = "host:1:dead00"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    yield slack
    slack.stop()


def make_deps(fake: FakeSlack, redis_url: str, key_prefix: str, instance: str) -> Deps:
    config = base_config(calendar={**COMPRESSED_CALENDAR, "reminder_before_s": 300, "reminder_grace_s": 600})
    return Deps(config=BotConfig.model_validate(config), store=RunStore(connect(redis_url), prefix=key_prefix),
                slack=Slack(make_client(BOT_TOKEN, fake.base_url)), publisher=None, instance_id=instance)


@pytest.fixture
def replicas(fake: FakeSlack, redis_url: str, key_prefix: str) -> tuple[Deps, Deps]:
    return (make_deps(fake, redis_url, key_prefix, "host:2:aaaaaa"),
            make_deps(fake, redis_url, key_prefix, "host:3:bbbbbb"))


def interrupted_reminder(deps: Deps) -> Window:
    """A window whose "24 h" reminder (here: 300 s ahead) a dead process claimed and never finished posting."""
    now = datetime.now(UTC)
    window = Window(id="prod-w-recover", env="prod", channel=PROD_CHANNEL, start=now + timedelta(seconds=290),
                    duration_s=60, timezone="UTC", release_notes="notes", owner=ALICE, created_by=ALICE,
                    created_at=now - timedelta(seconds=20))
    assert WindowStore(deps.store).create(window)
    assert InFlight(deps.store, DEAD).claim(f"window:{window.id}:1:reminder", 3600, window, "reminder", 1, now)
    return window


def reminders(fake: FakeSlack) -> list[dict]:
    return [m for m in fake.channel_messages(PROD_CHANNEL)
            if (m.get("metadata") or {}).get("event_payload", {}).get("kind") == "reminder"]


def test_two_replicas_recover_one_entry_once(fake: FakeSlack, replicas: tuple[Deps, Deps]) -> None:
    first, second = replicas
    window = interrupted_reminder(first)
    alive = lambda instance: instance in (first.instance_id, second.instance_id)  # noqa: E731
    assert recover_interrupted(first, alive) == [(window.id, "reminder", "posted")]
    assert recover_interrupted(second, alive) == []
    assert len(reminders(fake)) == 1 and InFlight(first.store, first.instance_id).entries() == {}


def test_a_slack_outage_is_retried_by_the_replica_that_adopted_the_entry(fake: FakeSlack,
                                                                        replicas: tuple[Deps, Deps]) -> None:
    first, second = replicas
    window = interrupted_reminder(first)
    alive = lambda instance: instance in (first.instance_id, second.instance_id)  # noqa: E731
    fake.inject("conversations.history", status=500, times=10)  # beyond the client's retries
    assert recover_interrupted(first, alive) == []
    (entry,) = InFlight(first.store, first.instance_id).entries().values()
    assert entry["instance"] == first.instance_id and entry["recovering"]
    assert recover_interrupted(second, alive) == []  # adopted by a live replica: not second's to take
    fake.clear_faults()
    assert recover_interrupted(first, alive) == [(window.id, "reminder", "posted")]
    assert len(reminders(fake)) == 1
    audit = [e for e in WindowStore(first.store).audit_entries(window.id) if e.action == "reminder.reminder"]
    assert [e.outcome for e in audit] == ["ok"] and "late: the bot stopped while posting it" in audit[0].detail


def test_an_entry_whose_recoverer_died_is_recovered_by_the_next(fake: FakeSlack,
                                                               replicas: tuple[Deps, Deps]) -> None:
    first, second = replicas
    window = interrupted_reminder(first)
    fake.inject("conversations.history", status=500, times=10)
    assert recover_interrupted(first, lambda i: i == first.instance_id) == []  # adopts it, then "dies"
    fake.clear_faults()
    first.store.redis.delete(first.store.key("once", f"recover:window:{window.id}:1:reminder"))  # its 60 s pass
    assert recover_interrupted(second, lambda i: i == second.instance_id) == [(window.id, "reminder", "posted")]
    assert len(reminders(fake)) == 1
