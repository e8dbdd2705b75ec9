"""Maintenance windows in Redis: window documents, their index and audit, and the claims on timeline messages."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError, WatchError

from bot.calendar.rules import MAX_WINDOW_S, Window, WindowStatus
from bot.errors import NotAllowed, StateStoreUnavailable
from bot.store import keys as names
from bot.store.connection import behind_sentinel
from bot.store.runs import AuditEntry, RunStore, store_errors

log = logging.getLogger(__name__)

RECOVERY_CLAIM_TTL_S = 60
# Behind Sentinel, how long a claim waits for a replica to confirm it before the post goes ahead anyway.
CLAIM_REPLICATED_WAIT_MS = 500
UNREPLICATED_BACKOFF_S = 30
_unreplicated_until = 0.0

HOME_VIEWERS_MAX = 500
"""App Home tabs republished when a window changes: the most recent openers, oldest dropped first."""
HOME_VIEWER_TTL_S = 30 * 86400
"""A tab not opened for this long is not republished (Slack shows the last published view anyway)."""


@dataclass(frozen=True)
class Page:
    """The first windows of a listing, and how many the whole listing holds."""

    windows: list[Window]
    total: int


class WindowStore:
    """Window documents, an index by start time, and one audit stream per window, under the run store's prefix."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    def get(self, window_id: str) -> Window | None:
        with store_errors():
            raw = self.redis.get(self.keys.window(window_id))
        return Window.model_validate_json(raw) if raw else None

    def create(self, window: Window) -> bool:
        """Store a new window; False (and nothing written) if its id is already taken."""
        with store_errors():
            if not self.redis.set(self.keys.window(window.id), window.model_dump_json(), nx=True):
                return False
            with self.redis.pipeline() as pipe:
                pipe.zadd(self.keys.windows, {window.id: window.start.timestamp()})
                pipe.zadd(self.keys.windows_of(window.env), {window.id: window.start.timestamp()})
                pipe.execute()
        return True

    def update(self, window_id: str, change: Callable[[Window], Window]) -> tuple[Window, Window]:
        """Compare-and-set; ``change`` may raise a BotError and then nothing is written. Returns (old, new)."""
        key = self.keys.window(window_id)
        with store_errors(), self.redis.pipeline() as pipe:
            for _ in range(50):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        raise NotAllowed(f"No maintenance window `{window_id}`. `/migrate windows` lists them.")
                    old = Window.model_validate_json(raw)
                    new = change(old)
                    pipe.multi()
                    if new.status is WindowStatus.SCHEDULED:
                        pipe.set(key, new.model_dump_json())
                        pipe.zadd(self.keys.windows, {new.id: new.start.timestamp()})
                        pipe.zadd(self.keys.windows_of(new.env), {new.id: new.start.timestamp()})
                    else:
                        # Closed (completed or cancelled): kept as long as closed runs, its audit a day longer.
                        ttl = max(1, int(self.store.retention_s))
                        pipe.set(key, new.model_dump_json(), ex=ttl)
                        pipe.expire(self.keys.window_audit(new.id), ttl + 86400)
                        pipe.zrem(self.keys.windows, new.id)
                        pipe.zrem(self.keys.windows_of(new.env), new.id)
                    pipe.execute()
                    return old, new
                except WatchError:
                    continue
        raise StateStoreUnavailable("too much contention on this window; nothing was changed — try again")

    def scheduled(self, env: str | None = None, *, after: datetime | None = None,
                  starting_by: datetime | None = None) -> list[Window]:
        """Scheduled windows not yet over (and, with ``starting_by``, starting no later than that), soonest first.

        Every one is read: callers bound the range with ``starting_by`` (or need them all, as the scheduler's
        recovery does). A listing for people pages with ``upcoming``.
        """
        low = (after - timedelta(seconds=MAX_WINDOW_S)).timestamp() if after else "-inf"
        high = starting_by.timestamp() if starting_by else "+inf"
        if env is not None:
            self._index_by_environment()
        index = self.keys.windows if env is None else self.keys.windows_of(env)
        with store_errors():
            ids = [str(i) for i in self.redis.zrangebyscore(index, low, high)]
        windows = self._read(ids)
        return [w for w in windows if (after is None or w.end > after) and (env is None or w.env == env)]

    def upcoming(self, envs: Collection[str] | None, *, after: datetime, limit: int) -> Page:
        """The first ``limit`` scheduled windows of ``envs`` (None: every environment) not over at ``after``, soonest
        first, and how many there are in all — a page read from the sorted sets, never the whole calendar.

        Windows that start after ``after`` are counted by the index alone; the few that started in the day before
        (a window lasts at most ``MAX_WINDOW_S``) are read to see whether they are still going.
        """
        if envs is not None and not envs:
            return Page([], 0)
        if envs is not None:
            self._index_by_environment()
        indexes = [self.keys.windows] if envs is None else [self.keys.windows_of(e) for e in sorted(envs)]
        now = after.timestamp()
        low = (after - timedelta(seconds=MAX_WINDOW_S)).timestamp()
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrangebyscore(index, low, now, withscores=True)
                pipe.zrangebyscore(index, f"({now}", "+inf", start=0, num=limit, withscores=True)
                pipe.zcount(index, f"({now}", "+inf")
            replies = pipe.execute()
        started: list[tuple[float, str]] = []
        later: list[tuple[float, str]] = []
        later_total = 0
        for i in range(0, len(replies), 3):
            started += [(float(score), str(wid)) for wid, score in replies[i]]
            later += [(float(score), str(wid)) for wid, score in replies[i + 1]]
            later_total += int(replies[i + 2])
        going = [w for w in self._read([wid for _, wid in sorted(started)]) if w.end > after]
        first = going + self._read([wid for _, wid in sorted(later)[:max(0, limit - len(going))]])
        if envs is not None:
            first = [w for w in first if w.env in envs]
        return Page(first[:limit], len(going) + later_total)

    def _read(self, ids: list[str]) -> list[Window]:
        """The scheduled windows among ``ids``, in that order (a window closed meanwhile is left out)."""
        if not ids:
            return []
        with store_errors():
            raws = self.redis.mget([self.keys.window(i) for i in ids])
        windows = [Window.model_validate_json(raw) for raw in raws if raw]
        return [w for w in windows if w.status is WindowStatus.SCHEDULED]

    def _index_by_environment(self) -> None:
        """Once per store: add windows written before the per-environment sets existed to their set."""
        with store_errors():
            if self.redis.exists(self.keys.windows_indexed):
                return
            ids = [str(i) for i in self.redis.zrange(self.keys.windows, 0, -1)]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                with self.redis.pipeline(transaction=False) as pipe:
                    for window in self._read(chunk):
                        pipe.zadd(self.keys.windows_of(window.env), {window.id: window.start.timestamp()})
                    pipe.execute()
            self.redis.set(self.keys.windows_indexed, "1")

    # App Home tabs to republish when a window changes ----------------------------------------------
    def remember_home_viewer(self, user: str, at: datetime) -> None:
        """``user`` opened the App Home tab: republish it when a window changes (for a month, the 500 latest)."""
        with store_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.home_viewers, {user: at.timestamp()})
            pipe.zremrangebyscore(self.keys.home_viewers, "-inf", at.timestamp() - HOME_VIEWER_TTL_S)
            pipe.zremrangebyrank(self.keys.home_viewers, 0, -HOME_VIEWERS_MAX - 1)
            pipe.execute()

    def home_viewers(self, now: datetime) -> list[str]:
        """Who opened the App Home tab in the last month, most recent first."""
        with store_errors():
            users = self.redis.zrevrangebyscore(self.keys.home_viewers, "+inf", now.timestamp() - HOME_VIEWER_TTL_S,
                                                start=0, num=HOME_VIEWERS_MAX)
        return [str(u) for u in users]

    def audit(self, window_id: str, actor: str, action: str, outcome: str, at: datetime, detail: str = "",
              data: dict[str, Any] | None = None) -> None:
        with store_errors():
            self.redis.xadd(self.keys.window_audit(window_id), {
                "actor": actor, "action": action, "outcome": outcome, "at": at.isoformat(),
                "detail": detail, "data": json.dumps(data or {}, default=str)})

    def audit_entries(self, window_id: str) -> list[AuditEntry]:
        with store_errors():
            rows: list[tuple[str, dict[str, str]]] = self.redis.xrange(self.keys.window_audit(window_id))  # type: ignore[assignment]
        return [AuditEntry(id=i, actor=f["actor"], action=f["action"], outcome=f["outcome"],
                           at=datetime.fromisoformat(f["at"]), detail=f.get("detail", ""),
                           data=json.loads(f.get("data", "{}"))) for i, f in rows]

    # the "maintenance started" message, whose thread gets the status updates ------------------
    def start_message(self, window: Window) -> str | None:
        """The ts of this revision's "maintenance started" message, once posted."""
        with store_errors():
            ts = self.redis.get(self.keys.window_start_message(window.id, window.revision))
        return str(ts) if ts else None

    def remember_start_message(self, window: Window, ts: str, *, ttl_s: int) -> None:
        with store_errors():
            self.redis.set(self.keys.window_start_message(window.id, window.revision), ts, ex=ttl_s)

    # `/migrate schedule` retried by Slack (same trigger id): the replay gets the first answer ----
    def claim_schedule_request(self, trigger_id: str, *, ttl_s: int) -> bool:
        """True for the first of the request's deliveries: that one books the window."""
        with store_errors():
            return bool(self.redis.set(self.keys.schedule_request(trigger_id), "", nx=True, ex=ttl_s))

    def schedule_answer(self, trigger_id: str) -> str:
        """What the first delivery answered ("" while it is still working)."""
        with store_errors():
            return str(self.redis.get(self.keys.schedule_request(trigger_id)) or "")

    def answer_schedule_request(self, trigger_id: str, text: str, *, ttl_s: int) -> None:
        with store_errors():
            self.redis.set(self.keys.schedule_request(trigger_id), text, ex=ttl_s)

    def release_schedule_request(self, trigger_id: str) -> None:
        """Nothing was booked: a retry may try again."""
        with store_errors():
            self.redis.delete(self.keys.schedule_request(trigger_id))


_CLAIM_AND_TRACK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


class InFlight:
    """Timeline messages claimed but not yet known to be posted: one Redis hash, claim name -> who and what.

    A claim (``bot.store.keys.window_message``) is taken before posting so no replica posts twice; the entry says
    the post may be under way. It is removed once the message is posted and audited (or the post failed and that
    is audited). An entry whose process no longer beats was interrupted mid-post: the recovery in
    ``bot.calendar.delivery`` looks for the message in Slack before deciding to post it, so a crash neither loses
    nor doubles it.
    """

    def __init__(self, store: RunStore, instance_id: str) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.instance_id = instance_id

    def claim(self, claim: str, ttl_s: int, window: Window, kind: str, revision: int, now: datetime,
              thread_ts: str | None = None) -> bool:
        """The claim and the in-flight entry in one step: True exactly once per claim across replicas."""
        entry = json.dumps({"instance": self.instance_id, "window_id": window.id, "kind": kind,
                            "revision": revision, "at": now.timestamp(), "thread_ts": thread_ts})
        with store_errors():
            won = bool(self.redis.eval(_CLAIM_AND_TRACK, 2, self.keys.once(claim), self.keys.window_inflight,
                                       self.instance_id, ttl_s, claim, entry))
        if won and behind_sentinel(self.redis):
            self._replicated(claim)
        return won

    def _replicated(self, claim: str) -> None:
        """Wait (briefly) until a replica has the claim: a failover right after it then cannot forget it and let
        a second replica post the same message. A replica that does not answer in time only delays the post."""
        global _unreplicated_until
        if time.monotonic() < _unreplicated_until:
            return  # no replica answered a moment ago (the primary is alone after a failover): do not wait again
        try:
            acked = int(self.redis.wait(1, CLAIM_REPLICATED_WAIT_MS))
        except RedisError as exc:
            acked = 0
            log.warning("claim %s: could not confirm it on a replica: %s", claim, type(exc).__name__)
        if acked < 1:
            _unreplicated_until = time.monotonic() + UNREPLICATED_BACKOFF_S
            log.warning("claim %s: no replica confirmed it within %d ms; posting anyway (and not waiting for one "
                        "for %d s)", claim, CLAIM_REPLICATED_WAIT_MS, UNREPLICATED_BACKOFF_S)

    def claim_missed(self, claim: str, ttl_s: int) -> bool:
        """The claim alone, for a message that will not be posted (it was missed): no in-flight entry."""
        return self.store.claim_once(claim, ttl_s, value=self.instance_id)

    def adopt(self, claim: str, entry: dict[str, Any]) -> None:
        """Take over a dead process's entry: same post, this process now answers for it."""
        with store_errors():
            self.redis.hset(self.keys.window_inflight, claim, json.dumps({**entry, "instance": self.instance_id,
                                                                          "recovering": True}))

    def end(self, claim: str) -> None:
        with store_errors():
            self.redis.hdel(self.keys.window_inflight, claim)

    def entries(self) -> dict[str, dict[str, Any]]:
        with store_errors():
            raw = self.redis.hgetall(self.keys.window_inflight) or {}
        return {str(claim): json.loads(value) for claim, value in raw.items()}

    # recovering an entry left by a dead process: one replica at a time -------------------------
    def claim_recovery(self, claim: str) -> bool:
        """Short-lived, so that two replicas do not recover one entry at the same moment."""
        return self.store.claim_once(names.recovery(claim), ttl_s=RECOVERY_CLAIM_TTL_S, value=self.instance_id)

    def release_recovery(self, claim: str) -> None:
        """Let the next round (of any replica) try again at once."""
        with store_errors():
            self.redis.delete(self.keys.once(names.recovery(claim)))
