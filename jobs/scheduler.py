"""Reminder jobs in APScheduler 3 with a shared Redis job store: one leader replica runs them, any replica adds them.

APScheduler 3 has no interprocess locking ("you can't" share a job store, says its FAQ), so:

- every replica starts its scheduler paused: it can add and remove jobs in Redis, but never runs them;
- a leader lock in Redis (redis-py ``Lock``: a random token, renewed every ``renew_every_s``) picks the one
  replica whose scheduler is resumed; losing the lock pauses it again at once;
- a replica that changes jobs publishes a wake-up, so the leader re-reads the store without waiting;
- each job posts only after claiming an idempotency key per (window, revision, reminder), which covers the
  split-brain gap between a lock expiring and its old holder noticing.

Job functions are referenced by module path and take only ids, because jobs are pickled into Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from redis.exceptions import LockError, RedisError

from bot.calendar.delivery import deliver, record_missed
from bot.calendar.rules import parse_job_id
from bot.context import Deps
from bot.edge import report
from bot.observability import metrics

log = logging.getLogger(__name__)

JOB_FUNCTION = "jobs.scheduler:fire_reminder"

_lock = threading.Lock()
_current: WindowScheduler | None = None


class SharedRedisJobStore(RedisJobStore):  # type: ignore[misc]  # APScheduler 3 is untyped: its classes are Any
    """RedisJobStore for a store other processes change too: a job removed meanwhile is not an error.

    The scheduler loop removes or updates a job right after submitting it; if another replica removed it in
    between (a reschedule or a cancel), the stock store raises JobLookupError and the loop thread dies.
    """

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed by another replica; not re-adding it", job.id)
        except RedisError as exc:
            log.warning("could not update job %s: %s", job.id, type(exc).__name__)

    def remove_job(self, job_id: str) -> None:
        try:
            with self.redis.pipeline() as pipe:
                pipe.hdel(self.jobs_key, job_id)
                pipe.zrem(self.run_times_key, job_id)
                pipe.execute()
        except RedisError as exc:
            log.warning("could not remove job %s: %s", job_id, type(exc).__name__)

    def get_next_run_time(self) -> datetime | None:
        try:
            return super().get_next_run_time()  # type: ignore[no-any-return]  # APScheduler 3 is untyped
        except RedisError as exc:
            log.warning("could not read the next run time: %s", type(exc).__name__)
            return None


def _binary_client(client: redis.Redis) -> redis.Redis:
    """A client on the same server as ``client`` but returning bytes (the job store pickles)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = False
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class WindowScheduler:
    """One process's APScheduler, paused unless this process holds the leader lock."""

    def __init__(self, deps: Deps, *, elect: bool = True) -> None:
        self.deps = deps
        self.elect = elect
        self.settings = deps.config.scheduler
        store = deps.store
        self.wakeup_channel = store.keys.scheduler_wakeup
        self.leader_key = store.keys.scheduler_leader
        self.leader_info_key = store.keys.scheduler_leader_instance
        jobstore = SharedRedisJobStore(jobs_key=store.keys.scheduler_jobs,
                                       run_times_key=store.keys.scheduler_run_times)
        jobstore.redis = _binary_client(store.redis)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": jobstore},
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
            daemon=True,
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self.is_leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = store.redis.lock(self.leader_key, timeout=self.settings.leader_ttl_s, thread_local=False)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> WindowScheduler:
        self.scheduler.start(paused=True)
        if self.elect:
            self._thread = threading.Thread(target=self._elect_loop, name="scheduler-leader", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop electing, pause and shut down; a leader releases its lock so another replica takes over now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.renew_every_s + 2)
        if self.is_leader:
            self._step_down("shutting down")
            try:
                self._lock.release()
                self.deps.store.redis.delete(self.leader_info_key)
            except (LockError, RedisError):
                pass
        try:
            self.scheduler.shutdown(wait=False)
        except Exception as exc:  # stopping must not raise
            log.warning("scheduler shutdown: %s", type(exc).__name__)

    # ---- leader election ---------------------------------------------------------------------

    def _become_leader(self) -> None:
        self.is_leader = True
        self.scheduler.resume()
        log.info("scheduler leader: %s", self.deps.instance_id)

    def _step_down(self, why: str) -> None:
        if self.is_leader:
            self.is_leader = False
            try:
                self.scheduler.pause()
            except Exception as exc:  # the scheduler may already be shut down
                log.debug("pause failed: %s", type(exc).__name__)
            log.warning("scheduler leadership lost (%s): paused", why)

    def _tick(self) -> None:
        """Renew the lock if we hold it, else try to take it; then let the leader look at due jobs."""
        redis_client = self.deps.store.redis
        try:
            if self.is_leader:
                self._lock.reacquire()
            elif self._lock.acquire(blocking=False):
                self._become_leader()
            if self.is_leader:
                redis_client.set(self.leader_info_key, self.deps.instance_id,
                                 px=int(self.settings.leader_ttl_s * 1000))
                self.scheduler.wakeup()
        except LockError:
            self._step_down("lock expired or taken")
        except RedisError as exc:
            self._step_down(f"Redis: {type(exc).__name__}")

    def _elect_loop(self) -> None:
        pubsub = None
        last_tick = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_tick >= self.settings.renew_every_s:
                self._tick()
                last_tick = time.monotonic()
            try:
                if pubsub is None:
                    # redis-py's Redis.pubsub is untyped
                    pubsub = self.deps.store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.wakeup_channel)
                # Wait at most a second at a time, so a shutdown releases the lock promptly.
                message = pubsub.get_message(timeout=min(1.0, self.settings.renew_every_s))
                if message is not None and self.is_leader:
                    self.scheduler.wakeup()
            except (RedisError, OSError, ValueError) as exc:
                log.warning("scheduler wake-up channel: %s", type(exc).__name__)
                pubsub = None
                self._stop.wait(self.settings.renew_every_s)
        # Only stop() reaches here.

    # ---- the job queue used by bot.calendar.operations and bot.runbook.watch ------------------------------

    def add(self, job_id: str, run_at: datetime, grace_s: int, args: tuple[str, str, int]) -> None:
        self.scheduler.add_job(JOB_FUNCTION, trigger="date", run_date=run_at, id=job_id, name=job_id,
                               args=list(args), misfire_grace_time=int(grace_s), replace_existing=True)
        self._poke()

    def add_interval(self, job_id: str, func: str, *, seconds: float, start: datetime, end: datetime,
                     args: tuple[str, ...]) -> None:
        """A repeating job (the 24-hour watch): coalesced, one at a time, late runs skipped after one interval."""
        self.scheduler.add_job(func, trigger="interval", seconds=seconds, start_date=start, end_date=end, id=job_id,
                               name=job_id, args=list(args), coalesce=True, max_instances=1,
                               misfire_grace_time=max(1, int(seconds)), replace_existing=True)
        self._poke()

    def add_at(self, job_id: str, func: str, *, run_at: datetime, args: tuple[str, ...], grace_s: int) -> None:
        self.scheduler.add_job(func, trigger="date", run_date=run_at, id=job_id, name=job_id, args=list(args),
                               misfire_grace_time=grace_s, replace_existing=True)
        self._poke()

    def remove(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                self.scheduler.remove_job(job_id)
            except JobLookupError:
                pass
        self._poke()

    def pending(self) -> dict[str, datetime]:
        """Job id -> next run time, for every job in the shared store."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs() if job.next_run_time}

    def _poke(self) -> None:
        try:
            self.deps.store.redis.publish(self.wakeup_channel, "1")
        except RedisError as exc:
            log.warning("scheduler wake-up not sent: %s", type(exc).__name__)

    # ---- missed jobs -------------------------------------------------------------------------

    def _on_missed(self, event: JobExecutionEvent) -> None:
        parsed = parse_job_id(str(event.job_id))
        if parsed is None:
            return
        window_id, revision, kind = parsed
        try:
            record_missed(self.deps, window_id, kind, revision, event.scheduled_run_time)
        except Exception as exc:  # a listener must not break the scheduler
            log.warning("could not audit missed job %s: %s: %s", event.job_id, type(exc).__name__, exc)


def fire_reminder(window_id: str, kind: str, revision: int) -> str:
    """The job function: post one timeline message of a window (see bot.calendar.delivery.deliver)."""
    scheduler = _current
    if scheduler is None:
        raise RuntimeError("no scheduler is running in this process")
    outcome = deliver(scheduler.deps, window_id, kind, int(revision))
    log.info("window %s %s r%s: %s", window_id, kind, revision, outcome)
    return outcome


def start_scheduler(deps: Deps) -> WindowScheduler:
    """Start this process's scheduler (paused) and its leader election; jobs.runner calls this at startup."""
    global _current
    with _lock:
        if _current is None:
            _current = WindowScheduler(deps).start()
            metrics.watch_leadership(is_leader)  # h15d: migrate_bot_scheduler_leader, read at each scrape
            _current.scheduler.add_listener(_report_job_error, EVENT_JOB_ERROR)  # h15d: a job's bug to Sentry
        return _current


def _report_job_error(event: JobExecutionEvent) -> None:
    """A job raised (APScheduler logs it): count it and report it like any contained bug (bot.edge.report)."""
    if event.exception is not None:
        report(event.exception)


def is_leader() -> bool:
    """Whether this process's scheduler holds the leader lock just now (it posts the reminders)."""
    current = _current
    return current is not None and current.is_leader


def stop_scheduler() -> None:
    global _current
    with _lock:
        scheduler, _current = _current, None
    if scheduler is not None:
        scheduler.stop()


_writers: dict[int, WindowScheduler] = {}


def queue_for(deps: Deps) -> WindowScheduler:
    """The job queue for operations (Deps.jobs): the running scheduler, or a paused writer-only one (tests)."""
    with _lock:
        if _current is not None:
            return _current
        writer = _writers.get(id(deps.store))
        if writer is None:
            writer = _writers[id(deps.store)] = WindowScheduler(deps, elect=False).start()
        return writer
