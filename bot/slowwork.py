"""Slow `/migrate` verbs (check, lint) after the ack: a small pool, one flight per verb and environment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from bot.edge import contained

T = TypeVar("T")

# How long a result computed in a flight answers later requests that joined the same flight.
FRESH_S = 10.0

_local = threading.local()


@contextmanager
def _sharing() -> Iterator[None]:
    _local.memo = {}
    try:
        yield
    finally:
        _local.memo = None


def shared(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, or inside a flight the result it gave for ``key`` less than FRESH_S ago: requests that
    joined one flight share its database connections and checks instead of opening their own."""
    memo: dict[Hashable, tuple[float, Any]] | None = getattr(_local, "memo", None)
    if memo is None:
        return compute()
    hit = memo.get(key)
    if hit is not None and time.monotonic() - hit[0] < FRESH_S:
        return cast(T, hit[1])  # the value compute() gave for this key
    value = compute()
    memo[key] = (time.monotonic(), value)
    return value


class Flights:
    """Work keyed by (verb, environment) runs on ``workers`` threads, never two flights with one key at once.

    A request whose key is already queued or running joins that flight: its own job (the permission decision
    and the reply are still per user) runs in the same thread right after, sharing the slow part via shared().
    """

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check")
        self._waiting: dict[Hashable, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def join(self, key: Hashable, job: Callable[[], None]) -> bool:
        """Queue ``job`` under ``key``; True if it joined a flight already queued or running."""
        with self._lock:
            if key in self._waiting:
                self._waiting[key].append(job)
                return True
            self._waiting[key] = [job]
        self.pool.submit(self._fly, key)
        return False

    def _fly(self, key: Hashable) -> None:
        with _sharing():
            while True:
                with self._lock:
                    jobs = self._waiting[key]
                    if not jobs:
                        del self._waiting[key]
                        return
                    self._waiting[key] = []
                for job in jobs:
                    with contained(f"{key}"):  # one waiter's failure must not strand the others
                        job()
