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
