"""Every Redis key the bot uses, by family, in one place: the names are stored data and must never change."""

from __future__ import annotations

# Existing runs, windows, claims and pickled jobs are found by these names alone: a renamed key silently loses them
# on upgrade. tests/test_upgrade.py writes state with the release before the store moved here and reads it back.


class Keys:
    """The full key names under one prefix (``migbot:`` by default, a unique one per test)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def join(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # ---- runs (bot.store.runs) -----------------------------------------------------------------
    def run(self, run_id: str) -> str:
        """A run's JSON document."""
        return self.join("run", run_id)

    @property
    def run_prefix(self) -> str:
        """``run(id)`` without the id, for the Lua scripts that derive run keys from the index's members."""
        return self.join("run", "")

    @property
    def runs(self) -> str:
        """Sorted set of run ids by creation time."""
        return self.join("runs")

    def lock(self, env: str) -> str:
        """An environment's lock: one active run at a time."""
        return self.join("lock", env)

    def audit(self, run_id: str) -> str:
        """A run's audit stream."""
        return self.join("audit", run_id)

    def denied(self, run_id: str, actor: str, digest: str) -> str:
        """A refusal audited once a minute; the Lua script appends ``:<run version>``."""
        return self.join("denied", run_id, actor, digest)

    def once(self, name: str) -> str:
        """A claim taken exactly once across replicas (SET NX); its names are the functions at the end."""
        return self.join("once", name)

    # ---- a run's Slack message (bot.runbook.publisher) -----------------------------------------
    def message_lock(self, run_id: str) -> str:
        return self.join("msglock", run_id)

    def rendered(self, run_id: str) -> str:
        """The run version the Slack message shows."""
        return self.join("rendered", run_id)

    def thread_cursor(self, run_id: str) -> str:
        """The last audit entry posted in the run's thread."""
        return self.join("threadcursor", run_id)

    # ---- the 24-hour watch (bot.store.watch) ---------------------------------------------------
    def watch(self, run_id: str) -> str:
        return self.join("watch", run_id)

    def watch_samples(self, run_id: str) -> str:
        return self.join("watch-samples", run_id)

    def watch_active(self, run_id: str) -> str:
        return self.join("watch-active", run_id)

    def beside_run(self, run_id: str) -> list[str]:
        """What is kept beside a run and expires a day after it, so an audit trail outlives its run."""
        return [self.audit(run_id), self.rendered(run_id), self.thread_cursor(run_id), self.watch(run_id),
                self.watch_samples(run_id), self.watch_active(run_id)]

    def released(self, env: str) -> str:
        """The release of an environment's last run that succeeded (JSON: sha, ref, run_id, at): the baseline."""
        return self.join("released", env)

    # ---- /migrate check and liveness -----------------------------------------------------------
    def check(self, env: str) -> str:
        """An environment's last pre-migration check."""
        return self.join("check", env)

    def alive(self, instance: str) -> str:
        """A process's heartbeat."""
        return self.join("alive", instance)

    # ---- maintenance windows (bot.store.windows) -----------------------------------------------
    def window(self, window_id: str) -> str:
        return self.join("window", window_id)

    @property
    def windows(self) -> str:
        """Sorted set of scheduled window ids by start time."""
        return self.join("windows")

    def windows_of(self, env: str) -> str:
        """Sorted set of one environment's scheduled window ids by start time (pages `/migrate windows <env>`)."""
        return self.join("windows-env", env)

    @property
    def windows_indexed(self) -> str:
        """Set once every window written before the per-environment sets existed has been added to them."""
        return self.join("windows-env-built")

    @property
    def home_viewers(self) -> str:
        """Sorted set of users by when they last opened the App Home tab (republished when a window changes)."""
        return self.join("home-viewers")

    def window_audit(self, window_id: str) -> str:
        return self.join("window-audit", window_id)

    def window_start_message(self, window_id: str, revision: int) -> str:
        """The ts of a window's "maintenance started" message, whose thread gets the status updates."""
        return self.join("window-msg", window_id, str(revision), "start")

    @property
    def window_inflight(self) -> str:
        """Hash of timeline messages claimed and maybe not yet posted: claim name -> who and what."""
        return self.join("window-msg", "inflight")

    def schedule_request(self, trigger_id: str) -> str:
        """A `/migrate schedule` retried by Slack with the same trigger id: the first answer."""
        return self.join("once", "schedule", trigger_id)

    # ---- the job store (jobs.scheduler: APScheduler's RedisJobStore, wake-ups; the previous release's leader lock
    # keys scheduler:leader and scheduler:leader-instance are no longer written and expire on their own) ---
    @property
    def scheduler_jobs(self) -> str:
        return self.join("scheduler", "jobs")

    @property
    def scheduler_run_times(self) -> str:
        return self.join("scheduler", "run_times")

    @property
    def scheduler_wakeup(self) -> str:
        """Pub/sub channel."""
        return self.join("scheduler", "wakeup")


# ---- names of the claims taken once (Keys.once) ------------------------------------------------

def monitoring_started(run_id: str) -> str:
    return f"monitoring-started:{run_id}"


def watch_tick(run_id: str, slot: int) -> str:
    return f"watch-tick:{run_id}:{slot}"


def watch_end(run_id: str) -> str:
    return f"watch-end:{run_id}"


def window_message(window_id: str, revision: int, kind: str) -> str:
    """One timeline message of a window revision; also its field in ``Keys.window_inflight``."""
    return f"window:{window_id}:{revision}:{kind}"


def recovery(claim: str) -> str:
    """Who is recovering an interrupted timeline message (short-lived)."""
    return f"recover:{claim}"
