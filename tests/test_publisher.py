"""The run's Slack message and thread follow Redis: one post, updates only when behind, repair after a failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.config import BotConfig
from bot.context import Deps
from bot.devtools.slack.server import FakeSlack
from bot.integrations.slack import Slack, make_client
from bot.runbook.operations import confirm, start_run
from bot.runbook.publisher import Publisher
from bot.store.runs import RunStore, connect
from jobs.heartbeat import resync_stale_messages
from tests.harness import ALICE, BOB, BOT_TOKEN, PROD_CHANNEL, base_config

SLACK_WRITES = ("chat.postMessage", "chat.update")


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    slack.add_user(ALICE, "alice")
    slack.add_user(BOB, "bob")
    slack.add_usergroup("S0DBA", "dba", [])
    slack.add_usergroup("S0DEVS", "devs", [])
    yield slack
    slack.stop()


@pytest.fixture
def deps(fake: FakeSlack, redis_url: str, key_prefix: str) -> Deps:
    store = RunStore(connect(redis_url), prefix=key_prefix)
    slack = Slack(make_client(BOT_TOKEN, fake.base_url))
    return Deps(config=BotConfig.model_validate(base_config()), store=store, slack=slack,
                publisher=Publisher(store, slack))


def writes(fake: FakeSlack) -> int:
    return sum(len(fake.calls_to(method)) for method in SLACK_WRITES)


def text_of(fake: FakeSlack, deps: Deps, run_id: str) -> str:
    run = deps.store.get(run_id)
    assert run.message_ts
    message = fake.message(PROD_CHANNEL, run.message_ts)
    assert message is not None
    return str(message["blocks"])


def test_a_sync_with_nothing_new_makes_no_slack_call(fake: FakeSlack, deps: Deps) -> None:
    run_id = start_run(deps, env_name="prod", user=ALICE).publish_run
    assert run_id
    deps.publish(run_id)
    assert deps.store.get(run_id).message_ts and not deps.store.message_behind(run_id)
    before = writes(fake)
    deps.publish(run_id)
    deps.publish(run_id)
    assert writes(fake) == before


def test_a_change_updates_the_message_and_posts_its_audit_line_once(fake: FakeSlack, deps: Deps) -> None:
    run_id = start_run(deps, env_name="prod", user=ALICE).publish_run
    assert run_id
    deps.publish(run_id)
    thread_before = len(fake.thread(PROD_CHANNEL, deps.store.get(run_id).message_ts or ""))
    confirm(deps, run_id=run_id, item="rollback_plan", user=ALICE)
    assert deps.store.message_behind(run_id)
    deps.publish(run_id)
    deps.publish(run_id)
    assert not deps.store.message_behind(run_id)
    assert len(fake.calls_to("chat.update")) == 1
    thread = fake.thread(PROD_CHANNEL, deps.store.get(run_id).message_ts or "")
    assert len(thread) == thread_before + 1 and "checklist" in thread[-1]["text"]


def test_a_message_left_behind_by_slack_failing_is_repaired_by_the_heartbeat(fake: FakeSlack, deps: Deps) -> None:
    run_id = start_run(deps, env_name="prod", user=ALICE).publish_run
    assert run_id
    deps.publish(run_id)
    old = text_of(fake, deps, run_id)
    fake.inject("chat.update", status=500, times=10)  # beyond the client's retries
    confirm(deps, run_id=run_id, item="rollback_plan", user=ALICE)
    deps.publish(run_id)
    assert text_of(fake, deps, run_id) == old and deps.store.message_behind(run_id)
    fake.clear_faults()
    assert resync_stale_messages(deps) == [run_id]
    assert text_of(fake, deps, run_id) != old and not deps.store.message_behind(run_id)
    assert resync_stale_messages(deps) == []
