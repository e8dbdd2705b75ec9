"""Reminder jobs in APScheduler 3 with a shared Redis job store, run by every replica: no leader to wait for.

Why every replica runs the jobs (issue 17, P4: a reminder must survive the death of the replica that would post
it, within 2 s of its due time, exactly once):

- With one leader, a leader that dies is replaced only when its lock expires (30 s), so a reminder due in that
  gap is late by up to the lock's TTL. Shortening the TTL trades lateness for false failovers under load.
- Here every replica's scheduler is running. At a job's due time each of them (they all read the same store and
  wake at the same run time) picks it up and calls the job function; every job function is idempotent across
  replicas: a timeline message is posted only by the replica that wins its claim (``bot.calendar.delivery``:
  claim -> post -> end, one Lua step for the claim and its in-flight entry), and a watch tick claims its slot.
  A replica killed before the due time simply is not among those that try; the others post on time.
- A replica killed after winning a claim but before posting leaves an in-flight entry; its heartbeat expires
  (``jobs.heartbeat``, 10 s) and another replica recovers the entry, looking in Slack first so that a message
  that did reach the channel is not posted twice. Only that narrow case waits for the heartbeat.
- Behind Sentinel a claim is also confirmed by a replica (``WAIT``) before the post, so a failover of Redis
  itself cannot forget a claim whose message went out (``bot.store.windows.InFlight.claim``).

Why not each replica's own in-memory schedule rebuilt from the windows: it would be correct too, but it would
drop the job store that the previous release wrote (``tests/test_upgrade.py`` loads its pickled jobs), and it
would cost every replica a full read of the calendar on start and on each change; the shared store is already
the single source of the schedule, and APScheduler's one weakness here (no locking between runners) is covered
by the claims. ``SharedRedisJobStore`` tolerates the races that remain: a job removed or updated by another
replica between its read and its write is not an error.

A replica that changes jobs publishes a wake-up so the others re-read the store at once; each replica also
re-reads it every ``renew_every_s`` and after any Redis error (a failover), so a lost wake-up delays nothing
for longer than that. Job functions are referenced by module path and take only ids, because jobs are pickled.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from redis.exceptions import RedisError

from bot.calendar.delivery import deliver, record_missed
from bot.calendar.rules import parse_job_id
from bot.context import Deps
from bot.edge import report
from bot.observability import metrics
from bot.store.connection import with_bytes

log = logging.getLogger(__name__)

JOB_FUNCTION = "jobs.scheduler:fire_reminder"
DRAIN_S = 10.0
"""How long a stopping process waits for the jobs already running to finish."""

_lock = threading.Lock()
_current: WindowScheduler | None = None


class SharedRedisJobStore(RedisJobStore):  # type: ignore[misc]  # APScheduler 3 is untyped: its classes are Any
    """RedisJobStore for a store other processes change too: a job removed meanwhile is not an error.

    The scheduler loop removes or updates a job right after submitting it; if another replica removed it in
    between (a reschedule or a cancel), the stock store raises JobLookupError and the loop thread dies.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.failed = threading.Event()  # set on a Redis error, so the scheduler re-reads the store soon

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed by another replica; not re-adding it", job.id)
        except RedisError as exc:
            self.failed.set()
            log.warning("could not update job %s: %s", job.id, type(exc).__name__)

    def remove_job(self, job_id: str) -> None:
        try:
            with self.redis.pipeline() as pipe:
                pipe.hdel(self.jobs_key, job_id)
                pipe.zrem(self.run_times_key, job_id)
                pipe.execute()
        except RedisError as exc:
            self.failed.set()
            log.warning("could not remove job %s: %s", job_id, type(exc).__name__)

    def get_next_run_time(self) -> datetime | None:
        try:
            return super().get_next_run_time()  # type: ignore[no-any-return]  # APScheduler 3 is untyped
        except RedisError as exc:
            self.failed.set()
            log.warning("could not read the next run time: %s", type(exc).__name__)
            return None


class WindowScheduler:
    """One process's APScheduler on the shared store: running in every server process, paused in a writer."""

    def __init__(self, deps: Deps, *, run_jobs: bool = True) -> None:
        self.deps = deps
        self.run_jobs = run_jobs
        self.settings = deps.config.scheduler
        store = deps.store
        self.wakeup_channel = store.keys.scheduler_wakeup
        self.jobstore = SharedRedisJobStore(jobs_key=store.keys.scheduler_jobs,
                                            run_times_key=store.keys.scheduler_run_times)
        self.jobstore.redis = with_bytes(store.redis)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": self.jobstore},
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
            daemon=True,
            # After a failed read of the store (Redis failing over) look again soon, not after APScheduler's 10 s.
            jobstore_retry_interval=1,
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether this process runs due jobs (every server process does; a writer-only queue does not)."""
        return self.run_jobs and self._thread is not None and not self._stop.is_set()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> WindowScheduler:
        self.scheduler.start(paused=not self.run_jobs)
        if self.run_jobs:
            self._thread = threading.Thread(target=self._wake_loop, name="scheduler-wakeup", daemon=True)
            self._thread.start()
            log.info("scheduler running in %s (every replica runs due jobs; claims pick one poster)",
                     self.deps.instance_id)
        return self

    def stop(self) -> None:
        """Stop waking and shut down; jobs stay in Redis for the other replicas (and this one's next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        # A job already handed to the executor has been taken out of the shared store: let it finish (a reminder
        # or a watch tick takes seconds), but never hold a stopping process for long.
        drain = threading.Thread(target=self._shutdown, name="scheduler-drain", daemon=True)
        drain.start()
        drain.join(DRAIN_S)

    def _shutdown(self) -> None:
        try:
            self.scheduler.shutdown(wait=True)
        except Exception as exc:  # stopping must not raise
            log.warning("scheduler shutdown: %s", type(exc).__name__)

    # ---- wake-ups ----------------------------------------------------------------------------

    def _wake_loop(self) -> None:
        """Re-read the store on every wake-up message, every ``renew_every_s``, and after any Redis error."""
        pubsub = None
        last_read = time.monotonic()
        while not self._stop.is_set():
            wake = False
            try:
                if pubsub is None:
                    # redis-py's Redis.pubsub is untyped
                    pubsub = self.deps.store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.wakeup_channel)
                    wake = True  # (re)subscribed: a wake-up sent meanwhile may have been lost
                # Wait at most a second at a time, so a shutdown is prompt.
                message = pubsub.get_message(timeout=min(1.0, self.settings.renew_every_s))
                wake = wake or message is not None
            except (RedisError, OSError, ValueError) as exc:
                log.warning("scheduler wake-up channel: %s", type(exc).__name__)
                pubsub = None
                self._stop.wait(0.2)
                wake = True
            if self.jobstore.failed.is_set() or time.monotonic() - last_read >= self.settings.renew_every_s:
                wake = True
            if wake and not self._stop.is_set():
                self.jobstore.failed.clear()
                last_read = time.monotonic()
                self.scheduler.wakeup()
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
    """Start this process's scheduler (it runs due jobs, as every replica's does); jobs.runner calls this at startup."""
    global _current
    with _lock:
        if _current is None:
            # Known before it starts: a job already due runs at once, and its function looks this scheduler up.
            _current = WindowScheduler(deps)
            _current.start()
            metrics.watch_scheduler(is_running)  # h15d: migrate_bot_scheduler_running, read at each scrape
            _current.scheduler.add_listener(_report_job_error, EVENT_JOB_ERROR)  # h15d: a job's bug to Sentry
        return _current


def _report_job_error(event: JobExecutionEvent) -> None:
    """A job raised (APScheduler logs it): count it and report it like any contained bug (bot.edge.report)."""
    if event.exception is not None:
        report(event.exception)


def is_running() -> bool:
    """Whether this process's scheduler runs due reminder jobs just now (every server's does: no leader)."""
    return bool(status()["running"])


def stop_scheduler() -> None:
    """Stop this process's scheduler. It stays the current one until its running jobs are done, because they look
    it up (fire_reminder, jobs.watch)."""
    global _current
    with _lock:
        scheduler = _current
    if scheduler is not None:
        scheduler.stop()
    with _lock:
        if _current is scheduler:
            _current = None


_writers: dict[int, WindowScheduler] = {}


def queue_for(deps: Deps) -> WindowScheduler:
    """The job queue for operations (Deps.jobs): the running scheduler, or a paused writer-only one (tests)."""
    with _lock:
        if _current is not None:
            return _current
        writer = _writers.get(id(deps.store))
        if writer is None:
            writer = _writers[id(deps.store)] = WindowScheduler(deps, run_jobs=False).start()
        return writer


def status() -> dict[str, Any]:
    """This process's scheduler for health and metrics: whether it runs due jobs (no leader: every server does)."""
    with _lock:
        current = _current
    return {"running": bool(current is not None and current.running),
            "instance": current.deps.instance_id if current is not None else None}
