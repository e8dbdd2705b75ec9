"""The run store in Redis: run documents, per-environment locks, compare-and-set transitions and the audit stream."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.errors import AlreadyDone, RunActive, RunNotFound, StaleMessage, StateStoreUnavailable
from bot.messages import escape
from bot.observability import metrics
from bot.runbook.rules import TERMINAL, AuditEvent, Run, RunStatus, Transition, record_message

# Clients are built in bot.store.connection; re-exported here for the callers that import them from the store.
from bot.store.connection import connect as connect
from bot.store.connection import reachable as reachable
from bot.store.keys import Keys

UNAVAILABLE = "state store unavailable — nothing was changed"

# The newest ARGV[1] runs, of the environments ARGV[4..] only when given, in one round trip. A run id names its
# environment (``prod-261124-a1b2c3``, new_run_id below), so the filter reads ids, never documents, and only
# the runs returned are fetched and parsed: a status of one environment among thousands of retained runs of others
# reads ten documents, not two hundred. At most ARGV[3] ids are looked at (bounds the script's time in Redis).
_RECENT_RUNS = """
local limit, prefix, budget = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local wanted = nil
if #ARGV > 3 then
  wanted = {}
  for i = 4, #ARGV do wanted[ARGV[i]] = true end
end
local keys, seen, page = {}, 0, 256
while #keys < limit and seen < budget do
  local ids = redis.call('ZREVRANGE', KEYS[1], seen, seen + page - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if wanted == nil or wanted[string.match(id, '^(.*)%-[^%-]*%-[^%-]*$') or ''] then
      keys[#keys + 1] = prefix .. id
      if #keys >= limit then break end
    end
  end
  seen = seen + #ids
end
if #keys == 0 then return {} end
return redis.call('MGET', unpack(keys))
"""
# How many of the newest run ids a filtered read looks at, at most (retention keeps days of runs, not years).
RECENT_SCAN_BUDGET = 20_000
# The environment and state of the newest ARGV[1] runs, for the runs gauge of /metrics (bot.observability.metrics):
# decoded here, so a scrape moves a few bytes a run, not whole documents.
_RUN_STATES = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local doc = redis.call('GET', ARGV[2] .. id)
  if doc then
    local ok, run = pcall(cjson.decode, doc)
    if ok and type(run) == 'table' then
      out[#out + 1] = tostring(run['env'])
      out[#out + 1] = tostring(run['status'])
    end
  end
end
return out
"""
# The newest ARGV[1] runs that are not in a terminal state (ARGV[3..]), decoded here so only those documents travel
# and get parsed: the heartbeat asks every few seconds, and almost every retained run is over.
_ACTIVE_RUNS = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local terminal = {}
for i = 3, #ARGV do terminal[ARGV[i]] = true end
local out = {}
for _, id in ipairs(ids) do
  local doc = redis.call('GET', ARGV[2] .. id)
  if doc then
    local ok, run = pcall(cjson.decode, doc)
    if not ok or type(run) ~= 'table' or not terminal[tostring(run['status'])] then out[#out + 1] = doc end
  end
end
return out
"""
# Which of the newest ARGV[1] runs have a Slack message or thread behind Redis (the test of _MESSAGE_BEHIND below,
# for each run with a message or still active), in one round trip instead of one per run.
_RUNS_BEHIND = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local terminal = {}
for i = 6, #ARGV do terminal[ARGV[i]] = true end
local out = {}
for _, id in ipairs(ids) do
  local doc = redis.call('GET', ARGV[2] .. id)
  local ok, run = false, nil
  if doc then ok, run = pcall(cjson.decode, doc) end
  if ok and type(run) == 'table' then
    local posted = type(run['message_ts']) == 'string'
    if posted or not terminal[tostring(run['status'])] then
      local behind = not posted
      if not behind then
        behind = tonumber(run['version']) > tonumber(redis.call('GET', ARGV[3] .. id) or '0')
      end
      if not behind then
        local last = redis.call('XREVRANGE', ARGV[4] .. id, '+', '-', 'COUNT', 1)
        behind = #last > 0 and redis.call('GET', ARGV[5] .. id) ~= last[1][1]
      end
      if behind then out[#out + 1] = id end
    end
  end
end
return out
"""
# Is the run's Slack message or thread behind Redis? (no message yet, version not rendered, or audit entries not
# yet posted in the thread) in one round trip, so a sync with nothing to do costs one call, not a lock and five.
_MESSAGE_BEHIND = """
local doc = redis.call('GET', KEYS[1])
if not doc then return 0 end
local run = cjson.decode(doc)
if type(run['message_ts']) ~= 'string' then return 1 end
if tonumber(run['version']) > tonumber(redis.call('GET', KEYS[2]) or '0') then return 1 end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #last > 0 and redis.call('GET', KEYS[4]) ~= last[1][1] then return 1 end
return 0
"""
# A refusal is audited once per actor, refusal (action and detail) and run version a minute: a storm of forged
# clicks leaves one entry (and so one line in the run's thread), while a different refusal, or one after the run
# moved on, is news again.
_AUDIT_DENIAL = """
local doc = redis.call('GET', KEYS[1])
local version = '0'
if doc then version = tostring(cjson.decode(doc)['version']) end
if not redis.call('SET', KEYS[3] .. ':' .. version, '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"""
DENIAL_AUDIT_EVERY_S = 60
# Retention: once a run is closed (succeeded, rolled back, cancelled) its document expires after the retention
# period, and everything kept beside it (audit stream, message cursors, watch samples) a day later, so an audit
# trail always outlives its run. The index of runs forgets the oldest members whose document has expired.
DEFAULT_RETENTION_S = 90 * 86400
_AUDIT_MARGIN_S = 86400
_PRUNE_INDEX = """
local ids = redis.call('ZRANGE', KEYS[1], 0, 99)
local gone = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then redis.call('ZREM', KEYS[1], id); gone = gone + 1 end
end
return gone
"""
_MAX_CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class EnvLock:
    """Who holds an environment: one active run at a time."""

    env: str
    run_id: str
    owner: str
    reason: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: str
    actor: str
    action: str
    outcome: str
    at: datetime
    detail: str
    data: dict[str, Any]


def ping_problem(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when Redis answers PING at ``url``; else the kind of failure (for one log line, without the URL)."""
    try:
        client = connect(url, timeout_s=timeout_s)
    except Exception as exc:  # a malformed URL is already refused by the settings; say its kind, never the URL
        return type(exc).__name__
    try:
        client.ping()
    except RedisError as exc:
        return type(exc).__name__
    finally:
        client.close()
    return None


@contextmanager
def store_errors() -> Iterator[None]:
    """Redis failures become StateStoreUnavailable (a WatchError stays: the compare-and-set loops retry on it)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        metrics.redis_error("timeout" if isinstance(exc, RedisTimeoutError) else "connection")
        raise StateStoreUnavailable(UNAVAILABLE) from exc
    except WatchError:
        raise
    except RedisError as exc:
        metrics.redis_error("other")
        raise StateStoreUnavailable(f"{UNAVAILABLE} ({type(exc).__name__})") from exc


def new_run_id(env: str, now: datetime) -> str:
    """Short, readable, unique, and valid inside RDS snapshot identifiers: prod-261124-a1b2c3."""
    return f"{env}-{now:%y%m%d}-{secrets.token_hex(3)}"


class RunStore:
    """All run state lives here, so any replica or the CLI can pick a run up."""

    def __init__(self, client: redis.Redis, *, prefix: str = "migbot:",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.redis = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.clock = clock
        self.retention_s = retention_s

    def key(self, *parts: str) -> str:
        """A namespaced key (for tests and tools: the bot's own keys are named in bot.store.keys)."""
        return self.keys.join(*parts)

    # health -----------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except RedisError:
            return False

    # reads ------------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run:
        with store_errors():
            raw = self.redis.get(self.keys.run(run_id))
        if raw is None:
            raise RunNotFound(f"No run with id `{escape(run_id)}`. Try `/migrate status` to list recent runs.")
        return Run.model_validate_json(raw)

    def find(self, run_id: str) -> Run | None:
        try:
            return self.get(run_id)
        except RunNotFound:
            return None

    def lock(self, env: str) -> EnvLock | None:
        with store_errors():
            raw = self.redis.get(self.keys.lock(env))
        if raw is None:
            return None
        data = json.loads(raw)
        return EnvLock(
            env=env,
            run_id=data["run_id"],
            owner=data["owner"],
            reason=data["reason"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )

    def active_run(self, env: str) -> Run | None:
        held = self.lock(env)
        return self.find(held.run_id) if held else None

    def recent_runs(self, limit: int = 10, env: str | None = None, *, envs: Iterable[str] | None = None) -> list[Run]:
        """The newest ``limit`` runs (of environment ``env``, or of the environments ``envs``), in one round trip.

        ``envs`` empty means none: an empty list, not every run."""
        wanted = [env] if env is not None else (list(envs) if envs is not None else None)
        if wanted == []:
            return []
        with store_errors():
            raws = self.redis.eval(_RECENT_RUNS, 1, self.keys.runs, limit, self.keys.run_prefix,
                                   RECENT_SCAN_BUDGET, *(wanted or ()))
        runs = [Run.model_validate_json(str(raw)) for raw in raws or [] if raw]
        # The id names the environment; the document is the truth (a hand-made id could lie).
        return [run for run in runs if wanted is None or run.env in wanted][:limit]

    def message_behind(self, run_id: str) -> bool:
        """True when Slack should be synced: the run has no message yet, a newer version than the one rendered,
        or audit entries its thread has not shown (the cursors below, kept by bot.runbook.publisher)."""
        with store_errors():
            return bool(self.redis.eval(_MESSAGE_BEHIND, 4, self.keys.run(run_id), self.keys.rendered(run_id),
                                        self.keys.audit(run_id), self.keys.thread_cursor(run_id)))

    def states_of_runs(self, limit: int = 1000) -> list[tuple[str, str]]:
        """(environment, state) of the newest ``limit`` runs, in one round trip (the runs gauge of /metrics).

        A Redis error is raised as it is, not counted: the scrape reports it as ``migrate_bot_state_store_up 0``,
        and ``migrate_bot_redis_errors`` keeps counting only what the bot's own work met."""
        flat = self.redis.eval(_RUN_STATES, 1, self.keys.runs, limit, self.keys.run_prefix) or []
        return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]

    def active_runs(self, limit: int = 200) -> list[Run]:
        """The runs not yet over among the newest ``limit``, newest first (filtered in Redis)."""
        with store_errors():
            raws = self.redis.eval(_ACTIVE_RUNS, 1, self.keys.runs, limit, self.keys.run_prefix,
                                   *sorted(status.value for status in TERMINAL))
        return [run for run in (Run.model_validate_json(str(raw)) for raw in raws or [] if raw) if run.is_active]

    def runs_behind(self, limit: int = 50) -> list[str]:
        """Ids of the newest ``limit`` runs whose Slack message or thread is behind Redis (see message_behind);
        runs never posted and over are left out."""
        with store_errors():
            ids = self.redis.eval(_RUNS_BEHIND, 1, self.keys.runs, limit, self.keys.run_prefix,
                                  self.keys.rendered(""), self.keys.audit(""), self.keys.thread_cursor(""),
                                  *sorted(status.value for status in TERMINAL))
        return [str(run_id) for run_id in ids or []]

    def audit_entries(self, run_id: str, after: str = "-") -> list[AuditEntry]:
        start = "-" if after == "-" else f"({after}"
        with store_errors():
            rows = self.redis.xrange(self.keys.audit(run_id), min=start, max="+")
        entries = []
        for entry_id, fields in rows or []:
            row: dict[str, str] = {str(k): str(v) for k, v in (fields or {}).items()}
            entries.append(AuditEntry(
                id=str(entry_id),
                actor=row["actor"],
                action=row["action"],
                outcome=row["outcome"],
                at=datetime.fromisoformat(row["at"]),
                detail=row.get("detail", ""),
                data=json.loads(row.get("data", "{}")),
            ))
        return entries

    # writes -----------------------------------------------------------------------------------
    @staticmethod
    def _audit_fields(event: AuditEvent) -> dict[Any, Any]:
        return {
            "actor": event.actor,
            "action": event.action,
            "outcome": event.outcome,
            "at": event.at.isoformat(),
            "detail": event.detail,
            "data": json.dumps(event.data, default=str),
        }

    def create(self, transition: Transition, *, lock_hours: float, reason: str = "migration run") -> Run:
        """Store a new run and take its environment's lock, atomically. Refuses while another run holds it."""
        run = transition.run
        lock_key = self.keys.lock(run.env)
        now = self.clock()
        expires = now + timedelta(hours=lock_hours)
        lock_doc = json.dumps({
            "run_id": run.id, "owner": run.requested_by, "reason": reason,
            "created_at": now.isoformat(), "expires_at": expires.isoformat(),
        })
        with store_errors(), self.redis.pipeline() as pipe:
            for _ in range(_MAX_CAS_ATTEMPTS):
                try:
                    pipe.watch(lock_key)  # type: ignore[no-untyped-call]  # redis-py: Pipeline.watch is untyped
                    if pipe.exists(lock_key):
                        pipe.unwatch()
                        held = self.lock(run.env)
                        if held is not None:
                            raise RunActive(self._describe_lock(held))
                        continue
                    pipe.multi()
                    pipe.set(self.keys.run(run.id), run.model_dump_json())
                    pipe.set(lock_key, lock_doc, px=int(lock_hours * 3600 * 1000))
                    pipe.zadd(self.keys.runs, {run.id: run.created_at.timestamp()})
                    for event in transition.events:
                        pipe.xadd(self.keys.audit(run.id), self._audit_fields(event))
                    pipe.execute()
                    return run
                except WatchError:
                    continue
        raise RunActive(f"Another run is being started in {run.env} right now; try again in a moment.")

    def _describe_lock(self, held: EnvLock) -> str:
        age = self.clock() - held.created_at
        minutes = int(age.total_seconds() // 60)
        age_text = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
        run = self.find(held.run_id)
        link = f"<https://slack.com/archives/{run.channel}/p{run.message_ts.replace('.', '')}|{held.run_id}>" \
            if run and run.message_ts else f"`{held.run_id}`"
        state = f", {run.status.value.replace('_', ' ')}" if run else ""
        return (f"A run is already active in {held.env}: {link} started by <@{held.owner}> {age_text} ago{state}. "
                f"Finish or cancel it first (`/migrate cancel {held.run_id}`).")

    def apply(self, run_id: str, change: Callable[[Run], Transition],
              expected_version: int | None = None) -> Transition:
        """Compare-and-set: read the run, compute the transition, write it only if nobody wrote in between.

        ``change`` is pure and may raise a Refusal; then nothing is written. Two clicks, two replicas:
        one wins, the other re-reads and is refused by the rules (already approved, already running).
        """
        key = self.keys.run(run_id)
        with store_errors(), self.redis.pipeline() as pipe:
            for _ in range(_MAX_CAS_ATTEMPTS):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py: Pipeline.watch is untyped
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        raise RunNotFound(f"No run with id `{run_id}`.")
                    current = Run.model_validate_json(raw)
                    if expected_version is not None and current.version != expected_version:
                        pipe.unwatch()
                        raise StaleMessage("This message is out of date — here is the current one.")
                    transition = change(current)
                    pipe.multi()
                    pipe.set(key, transition.run.model_dump_json())
                    for event in transition.events:
                        pipe.xadd(self.keys.audit(run_id), self._audit_fields(event))
                    if transition.run.is_terminal and not current.is_terminal:
                        self._queue_release(pipe, transition.run)
                        self._queue_released(pipe, transition.run)
                    if transition.run.is_terminal:
                        self._queue_retention(pipe, run_id)
                    pipe.execute()
                    return transition
                except WatchError:
                    continue
        raise StateStoreUnavailable("too much contention on this run; nothing was changed — try again")

    def _queue_retention(self, pipe: Any, run_id: str) -> None:
        ttl = max(1, int(self.retention_s))
        pipe.expire(self.keys.run(run_id), ttl)
        for key in self.keys.beside_run(run_id):
            pipe.expire(key, ttl + _AUDIT_MARGIN_S)
        pipe.eval(_PRUNE_INDEX, 1, self.keys.runs, self.keys.run_prefix)

    def retain(self, run_id: str) -> None:
        """(Re)apply the retention of a closed run to its keys, e.g. after writing a cursor beside it."""
        with store_errors(), self.redis.pipeline() as pipe:
            self._queue_retention(pipe, run_id)
            pipe.execute()

    def _queue_release(self, pipe: Any, run: Run) -> None:
        # The lock is released only if this run still holds it; checked again by the Lua script.
        pipe.eval(
            "local v = redis.call('GET', KEYS[1]); "
            "if v and cjson.decode(v)['run_id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end; return 0",
            1, self.keys.lock(run.env), run.id,
        )

    def _queue_released(self, pipe: Any, run: Run) -> None:
        """A release-pinned run that succeeded is what its environment now runs: the next run's baseline."""
        release = run.facts.release
        if run.status is RunStatus.SUCCEEDED and release is not None:
            pipe.set(self.keys.released(run.env), json.dumps({
                "sha": release.sha, "ref": release.ref, "run_id": run.id,
                "at": run.updated_at.isoformat()}))

    def last_release(self, env: str) -> dict[str, str] | None:
        """The release of ``env``'s last succeeded run (sha, ref, run_id, at), or None."""
        with store_errors():
            raw = self.redis.get(self.keys.released(env))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("sha"), str) else None

    def set_message(self, run_id: str, channel: str, ts: str) -> bool:
        """Remember the status message; only the first writer wins, so a run never gets two messages."""
        try:
            self.apply(run_id, lambda run: record_message(run, channel=channel, ts=ts))
            return True
        except AlreadyDone:
            return False

    def audit(self, run_id: str, event: AuditEvent) -> bool:
        """Append one entry (a denial, a note) without touching the run document. A denial repeated by the same
        actor with the same action and detail on the same run version within a minute is not written again
        (returns False)."""
        with store_errors():
            if event.outcome != "denied":
                self.redis.xadd(self.keys.audit(run_id), self._audit_fields(event))
                return True
            digest = hashlib.sha1(f"{event.action}\n{event.detail}".encode()).hexdigest()[:16]
            once = self.keys.denied(run_id, event.actor, digest)
            fields = [item for pair in self._audit_fields(event).items() for item in pair]
            return bool(self.redis.eval(_AUDIT_DENIAL, 3, self.keys.run(run_id), self.keys.audit(run_id), once,
                                        DENIAL_AUDIT_EVERY_S, *fields))

    def claim_once(self, name: str, ttl_s: int = 86400, value: str = "1") -> bool:
        """True exactly once per name across all replicas (SET NX); the names are in bot.store.keys."""
        with store_errors():
            return bool(self.redis.set(self.keys.once(name), value, nx=True, ex=ttl_s))

    # the run's Slack message (bot.runbook.publisher) ------------------------------------------
    @contextmanager
    def message_lock(self, run_id: str, timeout_s: float = 30) -> Iterator[bool]:
        """Hold the lock on a run's message (one sync at a time across replicas), waiting for it up to
        ``timeout_s``: yields False if it stayed busy. A lock that cannot be released (it expired, Redis went
        away) simply lapses."""
        with store_errors():
            lock = self.redis.lock(self.keys.message_lock(run_id), timeout=timeout_s, blocking_timeout=timeout_s)
            acquired = lock.acquire()
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except (LockError, RedisError):
                pass

    def rendered_version(self, run_id: str) -> int:
        """The run version its Slack message shows (0: none yet)."""
        with store_errors():
            return int(self.redis.get(self.keys.rendered(run_id)) or 0)

    def mark_rendered(self, run_id: str, version: int) -> None:
        with store_errors():
            self.redis.set(self.keys.rendered(run_id), version)

    def thread_cursor(self, run_id: str) -> str:
        """The id of the last audit entry posted in the run's thread ("-": none yet)."""
        with store_errors():
            return str(self.redis.get(self.keys.thread_cursor(run_id)) or "-")

    def advance_thread_cursor(self, run_id: str, entry_id: str) -> None:
        with store_errors():
            self.redis.set(self.keys.thread_cursor(run_id), entry_id)
