"""The 24-hour watch of a run in Redis: its schedule, every reading taken, the alerts firing and its claims."""

from __future__ import annotations

import json
from typing import Any

from bot.store import keys as names
from bot.store.runs import RunStore, store_errors

CLAIM_TTL_S = 8 * 86400


class WatchStore:
    """Kept beside the run (and expiring with it): the watch document, a list of readings, a set of alert keys."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    # claims: one replica does each of these ---------------------------------------------------
    def claim_start(self, run_id: str) -> bool:
        """The first to enter monitoring takes the readings and schedules the watch."""
        return self.store.claim_once(names.monitoring_started(run_id), ttl_s=CLAIM_TTL_S)

    def claim_tick(self, run_id: str, slot: int) -> bool:
        return self.store.claim_once(names.watch_tick(run_id, slot), ttl_s=3600)

    def claim_end(self, run_id: str) -> bool:
        return self.store.claim_once(names.watch_end(run_id), ttl_s=CLAIM_TTL_S)

    # the watch --------------------------------------------------------------------------------
    def start(self, run_id: str, watch: dict[str, Any], *, ttl_s: int) -> None:
        with store_errors():
            self.redis.set(self.keys.watch(run_id), json.dumps(watch), ex=ttl_s)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The watch document, or None once it ended (or never started)."""
        with store_errors():
            raw = self.redis.get(self.keys.watch(run_id))
        return json.loads(raw) if raw is not None else None

    def end(self, run_id: str) -> None:
        with store_errors():
            self.redis.delete(self.keys.watch(run_id))

    def add_sample(self, run_id: str, sample: dict[str, Any]) -> None:
        with store_errors():
            self.redis.rpush(self.keys.watch_samples(run_id), json.dumps(sample, default=str))

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """Every reading of the watch, oldest first."""
        with store_errors():
            raws = self.redis.lrange(self.keys.watch_samples(run_id), 0, -1)
        return [json.loads(raw) for raw in raws]

    # alerts firing ----------------------------------------------------------------------------
    def active_alerts(self, run_id: str) -> set[str]:
        with store_errors():
            return {str(member) for member in self.redis.smembers(self.keys.watch_active(run_id))}

    def raise_alert(self, run_id: str, key: str) -> bool:
        """True only for the tick that adds it (atomic), so an alert is announced once."""
        with store_errors():
            return bool(self.redis.sadd(self.keys.watch_active(run_id), key))

    def clear_alert(self, run_id: str, key: str) -> bool:
        """True only for the tick that removes it."""
        with store_errors():
            return bool(self.redis.srem(self.keys.watch_active(run_id), key))
