"""Prometheus metrics of the bot itself, served at /metrics: every label takes a bounded set of values.

Counters and histograms count what this process did (acks, steps, Slack errors and retries, reminders, Redis
errors). What is true of the whole deployment (runs by state and environment) is read from Redis at scrape time
by a collector instead: every replica then reports the same truth, which counters kept per replica could not (each
sees only its own transitions and forgets them on restart). Graph those with ``max without (instance)``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import exposition as _exposition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bot.errors import ConfigError

log = logging.getLogger(__name__)

CONTENT_TYPE = _exposition.CONTENT_TYPE_LATEST
OTHER = "other"
"""The label value for anything outside a label's known set, so no input can grow the number of series."""

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

ACK_SECONDS = Histogram(
    "migrate_bot_ack_seconds",
    "Time from a Slack request reaching the bot to its HTTP answer (Slack gives up after 3 s), by request kind.",
    ["kind"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0))
STEP_SECONDS = Histogram(
    "migrate_bot_step_duration_seconds",
    "How long a runbook step's work took in this process, by step and how it ended.",
    ["step", "outcome"], registry=REGISTRY,
    buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
SLACK_ERRORS = Counter(
    "migrate_bot_slack_api_errors",
    "Slack Web API calls that failed after the client's retries, by method and Slack's error code.",
    ["method", "error"], registry=REGISTRY)
SLACK_RETRIES = Counter(
    "migrate_bot_slack_api_retries",
    "Slack Web API calls retried by the client (rate limit, server error, dropped connection), by method.",
    ["method", "reason"], registry=REGISTRY)
REMINDERS = Counter(
    "migrate_bot_reminders",
    "Maintenance-window timeline messages by kind and outcome: posted, late (posted over a minute after due, or "
    "after a restart), missed (grace period passed), failed (Slack refused), skipped (no longer relevant).",
    ["kind", "outcome"], registry=REGISTRY)
REDIS_ERRORS = Counter(
    "migrate_bot_redis_errors",
    "Redis calls that failed (the state store was unreachable, too slow or refused), by kind.",
    ["kind"], registry=REGISTRY)
INTERNAL_ERRORS = Counter(
    "migrate_bot_internal_errors",
    "Unexpected errors (bugs) the bot contained: one line in the log, a report to Sentry when configured.",
    registry=REGISTRY)

ACK_KINDS = frozenset({"command", "action", "view", "event", "options", "other"})
REMINDER_OUTCOMES = frozenset({"posted", "late", "missed", "failed", "skipped"})
REDIS_ERROR_KINDS = frozenset({"connection", "timeout", "other"})
STEP_OUTCOMES = frozenset({"succeeded", "failed", "held", "voided", "crashed"})
_SLACK_METHOD = re.compile(r"[a-z]+(?:\.[a-zA-Z]+){1,3}")


def _bounded(value: str | None, known: Iterable[str]) -> str:
    return value if value is not None and value in known else OTHER


def slack_method(name: str) -> str:
    """A Web API method name as a label (``chat.postMessage``), or ``other`` for anything not shaped like one."""
    return name if _SLACK_METHOD.fullmatch(name) else OTHER


def observe_ack(kind: str, seconds: float) -> None:
    ACK_SECONDS.labels(_bounded(kind, ACK_KINDS)).observe(seconds)


def observe_step(step: str, outcome: str, seconds: float, *, steps: Iterable[str]) -> None:
    """``steps`` is the runbook's step table: a name outside it is counted as ``other``."""
    STEP_SECONDS.labels(_bounded(step, steps), _bounded(outcome, STEP_OUTCOMES)).observe(seconds)


def slack_error(method: str, error: str) -> None:
    """``error`` is already bounded by the caller (a code the bot knows, ``other`` or ``unreachable``)."""
    SLACK_ERRORS.labels(slack_method(method), error).inc()


def slack_retry(method: str, reason: str) -> None:
    SLACK_RETRIES.labels(slack_method(method), reason).inc()


def reminder(kind: str, outcome: str, *, kinds: Iterable[str]) -> None:
    REMINDERS.labels(_bounded(kind, kinds), _bounded(outcome, REMINDER_OUTCOMES)).inc()


def redis_error(kind: str) -> None:
    REDIS_ERRORS.labels(_bounded(kind, REDIS_ERROR_KINDS)).inc()


def internal_error() -> None:
    INTERNAL_ERRORS.inc()


# ---- read at scrape time -------------------------------------------------------------------------

@dataclass(frozen=True)
class RunsSource:
    """Where the runs gauge reads from: handed over by the composition root (bot.app), which knows the store."""

    states_of_runs: Callable[[], Iterable[tuple[str, str]]]
    """(environment, state) of every run Redis holds; raises when Redis cannot answer."""
    environments: tuple[str, ...]
    """The configured environments: the only env label values (a run of a removed one counts as ``other``)."""
    states: tuple[str, ...]
    """Every run state, so each (environment, state) series exists from the start, at 0."""


class _Sources:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: RunsSource | None = None
        self.leader: Callable[[], bool] | None = None


_sources = _Sources()


def watch_runs(source: RunsSource) -> None:
    """Report ``migrate_bot_runs`` (and whether Redis answered) from ``source`` at every scrape."""
    with _sources.lock:
        _sources.runs = source


def watch_scheduler(is_running: Callable[[], bool]) -> None:
    """Report ``migrate_bot_scheduler_running`` from ``is_running()`` at every scrape (jobs.scheduler hands it)."""
    with _sources.lock:
        _sources.leader = is_running


def count_runs(pairs: Iterable[tuple[str, str]], source: RunsSource) -> Mapping[tuple[str, str], int]:
    """Runs by (environment, state), every configured pair present; unknown values fold into ``other``."""
    counts = {(env, state): 0 for env in source.environments for state in source.states}
    for env, state in pairs:
        key = (_bounded(env, source.environments), _bounded(state, source.states))
        counts[key] = counts.get(key, 0) + 1
    return counts


class _ScrapeTimeCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        with _sources.lock:
            runs, leader = _sources.runs, _sources.leader
        if runs is not None:
            up = GaugeMetricFamily("migrate_bot_state_store_up",
                                   "1 when Redis answered the scrape's read of the runs, else 0.")
            try:
                pairs = list(runs.states_of_runs())
            except Exception as exc:  # Redis down: the scrape still answers, and says so
                log.debug("runs gauge not read: %s", type(exc).__name__)
                up.add_metric([], 0)
                yield up
            else:
                up.add_metric([], 1)
                yield up
                gauge = GaugeMetricFamily("migrate_bot_runs",
                                          "Runs held in Redis (newest 1000) by environment and state.",
                                          labels=["env", "state"])
                for (env, state), count in sorted(count_runs(pairs, runs).items()):
                    gauge.add_metric([env, state], count)
                yield gauge
        if leader is not None:
            gauge = GaugeMetricFamily("migrate_bot_scheduler_running",
                                      "1 while this process's scheduler runs due reminders (every replica's does).")
            try:
                gauge.add_metric([], 1 if leader() else 0)
            except Exception as exc:
                log.debug("scheduler state not read: %s", type(exc).__name__)
                gauge.add_metric([], 0)
            yield gauge


REGISTRY.register(_ScrapeTimeCollector())


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


# ---- where /metrics is served (METRICS_PORT) -----------------------------------------------------

_placement: dict[str, int | str] = {"port": ""}


def place(port: int | str) -> None:
    """"" serves /metrics on the bot's HTTP port, "off" nowhere, a number on a listener of its own."""
    _placement["port"] = port


def on_main_port() -> bool:
    """Whether the bot's own HTTP server answers /metrics (METRICS_PORT unset)."""
    return _placement["port"] == ""


def start_own_listener(host: str) -> int | None:
    """The listener of its own when METRICS_PORT is a number (the only way in Socket Mode); returns its port."""
    port = _placement["port"]
    if not isinstance(port, int):
        return None
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(f"METRICS_PORT {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    log.info("metrics on %s:%s/metrics", host, port)
    return port
