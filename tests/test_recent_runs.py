"""The recent-runs read behind `/migrate status`: filtered by environment in Redis, whatever else is retained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.runbook.rules import new_run
from bot.store.runs import RunStore, connect

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def put(store: RunStore, run_id: str, env: str, at: datetime) -> None:
    """A stored run as create() leaves it (document + index entry), without taking the environment's lock."""
    run = new_run(run_id=run_id, env=env, requested_by="UREQ", channel="C1", now=at, approvals_required=1,
                  steps_enabled={}).run
    store.redis.set(store.keys.run(run_id), run.model_dump_json())
    store.redis.zadd(store.keys.runs, {run_id: at.timestamp()})


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> RunStore:
    return RunStore(connect(redis_url), prefix=key_prefix)


def test_an_environment_s_last_run_is_found_behind_hundreds_of_newer_runs_of_others(store: RunStore) -> None:
    """Before, a filtered read looked at the newest 50 ids only: an environment that had not run for a while showed
    "No runs" (and an unfiltered status parsed 200 documents to keep 10)."""
    put(store, "eu-prod-261101-aaaaaa", "eu-prod", NOW - timedelta(days=30))  # an environment name with dashes
    for i in range(300):
        put(store, f"staging-261202-{i:06x}", "staging", NOW - timedelta(minutes=300 - i))
    assert [r.id for r in store.recent_runs(limit=10, env="eu-prod")] == ["eu-prod-261101-aaaaaa"]
    assert [r.id for r in store.recent_runs(limit=10, envs=["eu-prod", "nowhere"])] == ["eu-prod-261101-aaaaaa"]
    newest = store.recent_runs(limit=10)
    assert [r.id for r in newest] == [f"staging-261202-{i:06x}" for i in range(299, 289, -1)]
    both = store.recent_runs(limit=3, envs=["staging", "eu-prod"])
    assert [r.env for r in both] == ["staging"] * 3
    assert store.recent_runs(limit=10, envs=[]) == []
    assert store.recent_runs(limit=10, env="prod") == []


def test_a_document_that_disagrees_with_its_id_is_not_shown_for_the_id_s_environment(store: RunStore) -> None:
    """The id only narrows the read; the document decides (a hand-made id cannot show a run to another env's viewers)."""
    put(store, "prod-261202-bbbbbb", "staging", NOW)
    assert store.recent_runs(limit=10, env="prod") == []
    assert store.recent_runs(limit=10, env="staging") == []
    assert [r.id for r in store.recent_runs(limit=10)] == ["prod-261202-bbbbbb"]


def test_the_heartbeat_s_one_round_trip_picks_exactly_the_runs_message_behind_would(store: RunStore) -> None:
    """runs_behind (one script over the newest runs) agrees with message_behind run by run, and leaves out runs that
    were never posted and are over; active_runs returns the runs not over, and only those."""
    from bot.runbook.rules import RunStatus

    cases = {  # id -> (status, message_ts, rendered version, thread cursor matches the last audit entry)
        "prod-261202-000001": (RunStatus.COLLECTING, None, None, True),  # active, never posted: behind
        "prod-261202-000002": (RunStatus.CANCELLED, None, None, True),  # over, never posted: left out
        "prod-261202-000003": (RunStatus.RUNNING, "111.1", 1, True),  # up to date
        "prod-261202-000004": (RunStatus.RUNNING, "111.2", 0, True),  # a newer version than rendered
        "prod-261202-000005": (RunStatus.SUCCEEDED, "111.3", 1, False),  # thread behind its audit stream
        "prod-261202-000006": (RunStatus.SUCCEEDED, "111.4", 1, True),  # over and up to date
    }
    for i, (run_id, (status, ts, rendered, cursor_ok)) in enumerate(cases.items()):
        put(store, run_id, "prod", NOW - timedelta(minutes=i))
        run = store.get(run_id).model_copy(update={"status": status, "message_ts": ts})
        store.redis.set(store.keys.run(run_id), run.model_dump_json())
        if rendered is not None:
            store.redis.set(store.keys.rendered(run_id), str(rendered))
        entry = store.redis.xadd(store.keys.audit(run_id), {"actor": "U", "action": "x", "outcome": "ok"})
        store.redis.set(store.keys.thread_cursor(run_id), entry if cursor_ok else "0-1")
    expected = [run_id for run_id, (status, ts, _, _) in cases.items()
                if (ts is not None or status not in (RunStatus.CANCELLED, RunStatus.SUCCEEDED))
                and store.message_behind(run_id)]
    assert expected == ["prod-261202-000001", "prod-261202-000004", "prod-261202-000005"]
    assert store.runs_behind(limit=50) == expected
    assert [r.id for r in store.active_runs()] == ["prod-261202-000001", "prod-261202-000003", "prod-261202-000004"]
