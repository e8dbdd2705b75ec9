"""The last `/migrate check` of each environment in Redis: the reminders tell from it whether a backup target works."""

from __future__ import annotations

import json
from typing import Any

from bot.store.runs import RunStore, store_errors


class PrecheckResults:
    """One JSON document per environment, replaced by each check."""

    def __init__(self, store: RunStore) -> None:
        self.redis = store.redis
        self.keys = store.keys

    def save(self, env_name: str, result: dict[str, Any]) -> None:
        with store_errors():
            self.redis.set(self.keys.check(env_name), json.dumps(result))

    def last(self, env_name: str) -> dict[str, Any] | None:
        with store_errors():
            raw = self.redis.get(self.keys.check(env_name))
        return json.loads(raw) if raw else None
