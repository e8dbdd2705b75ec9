"""Heartbeats in Redis: a key per bot process that expires unless the process keeps renewing it."""

from __future__ import annotations

from bot.store.runs import RunStore, store_errors


class Liveness:
    """Which processes still beat, so that work left by a dead one can be told from work under way."""

    def __init__(self, store: RunStore) -> None:
        self.redis = store.redis
        self.keys = store.keys

    def beat(self, instance: str, *, ttl_s: int) -> None:
        with store_errors():
            self.redis.set(self.keys.alive(instance), "1", ex=ttl_s)

    def is_alive(self, instance: str) -> bool:
        with store_errors():
            return bool(self.redis.exists(self.keys.alive(instance)))
