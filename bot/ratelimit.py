"""Per-user token buckets: one user's flood of slash commands or clicks cannot crowd out everyone else's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """``take(user)`` is True while the user has a token: ``burst`` at once, refilled at ``per_minute``.

    In memory, per process: the limit protects this process's threads and pools, which a flood reaching this
    replica would exhaust whatever the other replicas saw, and it keeps working (and costs no round trip)
    when Redis is slow or down. With N replicas a user gets at most N times the rate, which is still bounded.
    """

    def __init__(self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_users: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_users = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, user: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(user, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[user] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_users:
                self._forget_full(now)
            return allowed

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they carry no state); keeps memory bounded under many users."""
        for user, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[user]
