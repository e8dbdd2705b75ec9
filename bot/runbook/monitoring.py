"""Post-migration readings (Sentry, CloudWatch, Logs, PostgreSQL) and the seed's thresholds, graded as gauges.

The seed's step 7 and its 24-hour watch, in two parts:

* ``collect_readings`` takes one ``Readings`` from whatever integrations are configured. A missing or failing
  integration never fails the collection: the reading is None and ``unavailable`` says why.
* ``evaluate`` (the ✅/⚠️ table of the monitoring step: one ``Gauge`` per reading), ``alerts`` (the watch's alert
  conditions) and ``rollback_triggers`` are pure functions of one ``Readings`` and the ``MonitoringConfig``.
  The table is shown by bot.runbook.views from the summary that bot.runbook.watch keeps on the run.

Units: rates, CPU, memory and connection use are fractions (0.08 = 8 %); p95 is milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bot.config import MonitoringConfig
from bot.edge import one_line
from bot.errors import BotError
from bot.integrations.aws import Aws, MetricQuery
from bot.integrations.postgres import Postgres
from bot.integrations.sentry import Sentry
from bot.redact import redact

Status = Literal["ok", "warn", "alert", "unknown"]
Severity = Literal["critical", "error", "warning", "info"]

STATUS_EMOJI: dict[str, str] = {"ok": "✅", "warn": "⚠️", "alert": "🚨", "unknown": "❔"}
ALB_NAMESPACE = "AWS/ApplicationELB"
ECS_NAMESPACE = "AWS/ECS"
ERROR_LOG_PATTERN = "ERROR"


# ---------------------------------------------------------------------------------------------------------------
# Readings
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Readings:
    """One set of post-migration readings; None means not taken (see ``unavailable`` for why)."""

    taken_at: datetime
    error_rate: float | None = None
    errors: int | None = None
    total: int | None = None
    error_rate_source: str | None = None  # "sentry" or "alb"
    p95_ms: float | None = None
    p95_statistic: str | None = None  # "p95", or "Maximum" where the backend keeps no percentiles
    alb_5xx: int | None = None
    request_count: int | None = None
    cpu: float | None = None
    memory: float | None = None
    connections: int | None = None
    connection_limit: int | None = None
    connection_limit_source: str | None = None  # "pool_size" or "max_connections"
    failed_migrations: list[str] | None = None
    error_log_lines: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def alb_error_rate(self) -> float | None:
        """ALB target 5XX over requests, or None without requests."""
        if self.alb_5xx is None or not self.request_count:
            return None
        return self.alb_5xx / self.request_count

    @property
    def worst_error_rate(self) -> float | None:
        """The higher of the primary error rate and the ALB 5XX rate (what alerts and the chart use)."""
        rates = [r for r in (self.error_rate, self.alb_error_rate) if r is not None]
        return max(rates) if rates else None

    @property
    def connection_use(self) -> float | None:
        """Connections over the limit (pool size or max_connections), as a fraction."""
        if self.connections is None or not self.connection_limit:
            return None
        return self.connections / self.connection_limit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``taken_at`` as ISO 8601), for keeping watch samples across restarts."""
        data = asdict(self)
        data["taken_at"] = self.taken_at.astimezone(UTC).isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Readings:
        """The inverse of ``to_dict``; unknown keys are ignored."""
        known = {name for name in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        taken = values.get("taken_at")
        values["taken_at"] = datetime.fromisoformat(taken) if isinstance(taken, str) else taken
        return cls(**values)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BotError) else one_line(exc)


def _take(readings: Readings, name: str, fn: Callable[[], None]) -> None:
    """Run one reading; on any failure record it as unavailable instead of raising."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - one failing reading must not fail the others
        readings.unavailable[name] = _reason(exc)


def _alb_dimensions(config: MonitoringConfig) -> dict[str, str]:
    dims = {"LoadBalancer": str(config.load_balancer)}
    if config.target_group:
        dims["TargetGroup"] = config.target_group
    return dims


def _read_cloudwatch(readings: Readings, aws: Aws, config: MonitoringConfig, start: datetime, end: datetime) -> None:
    window = f"in the last {config.window_minutes} min"
    has_alb = bool(config.load_balancer)
    has_ecs = bool(config.ecs_cluster and config.ecs_service)
    queries: list[MetricQuery] = []
    if has_alb:
        dims = _alb_dimensions(config)
        queries += [
            MetricQuery("alb_5xx", ALB_NAMESPACE, "HTTPCode_Target_5XX_Count", dims, "Sum"),
            MetricQuery("request_count", ALB_NAMESPACE, "RequestCount", dims, "Sum"),
        ]
    else:
        for key in ("alb_5xx", "request_count", "p95_ms"):
            readings.unavailable[key] = "no load_balancer configured"
    if has_ecs:
        dims = {"ClusterName": str(config.ecs_cluster), "ServiceName": str(config.ecs_service)}
        queries += [
            MetricQuery("cpu", ECS_NAMESPACE, "CPUUtilization", dims, "Average"),
            MetricQuery("memory", ECS_NAMESPACE, "MemoryUtilization", dims, "Average"),
        ]
    else:
        readings.unavailable["cpu"] = readings.unavailable["memory"] = "no ECS cluster/service configured"
    values: dict[str, list[float]] = {}
    if queries:
        try:
            values = aws.metric_values(queries, start, end)
        except Exception as exc:  # noqa: BLE001 - recorded per reading
            for query in queries:
                readings.unavailable[query.key] = _reason(exc)
            queries = []
    if has_alb and queries:
        requests = values.get("request_count") or []
        if requests:
            readings.request_count = round(sum(requests))
            # The ALB publishes no 5XX datapoint for a minute without 5XX answers: absent means zero.
            readings.alb_5xx = round(sum(values.get("alb_5xx") or []))
        else:
            reason = f"no RequestCount datapoints for LoadBalancer {config.load_balancer} {window}"
            readings.unavailable["request_count"] = readings.unavailable["alb_5xx"] = reason
    if has_ecs and queries:
        for key, metric in (("cpu", "CPUUtilization"), ("memory", "MemoryUtilization")):
            points = values.get(key) or []
            if points:  # ECS reports percent; keep fractions
                setattr(readings, key, sum(points) / len(points) / 100.0)
            else:
                readings.unavailable[key] = f"no {metric} datapoints for {config.ecs_cluster}/{config.ecs_service} {window}"
    if has_alb:

        def p95() -> None:
            value, statistic = aws.metric_percentile(
                ALB_NAMESPACE, "TargetResponseTime", _alb_dimensions(config), start, end, percentile="p95"
            )
            if value is None:
                raise _NoData(f"no TargetResponseTime datapoints for LoadBalancer {config.load_balancer} {window}")
            readings.p95_ms = value * 1000.0  # the ALB reports seconds
            readings.p95_statistic = statistic

        _take(readings, "p95_ms", p95)


class _NoData(BotError):
    """A source answered, but had no datapoints for the window."""


def _read_logs(readings: Readings, aws: Aws, config: MonitoringConfig, start: datetime, end: datetime) -> None:
    if not config.log_group:
        readings.unavailable["error_log_lines"] = "no log_group configured"
        return

    def logs() -> None:
        events = aws.recent_log_events(config.log_group or "", ERROR_LOG_PATTERN, start, end, limit=config.log_lines)
        readings.error_log_lines = [
            f"{e.timestamp.astimezone(UTC):%H:%M:%S} {redact(' '.join(e.message.split()))}" for e in events
        ]

    _take(readings, "error_log_lines", logs)


def _read_postgres(readings: Readings, postgres: Postgres, config: MonitoringConfig) -> None:
    def connections() -> None:
        readings.connections = postgres.connection_count()
        if config.pool_size:
            readings.connection_limit, readings.connection_limit_source = config.pool_size, "pool_size"
        else:
            readings.connection_limit, readings.connection_limit_source = postgres.max_connections(), "max_connections"

    def failed() -> None:
        readings.failed_migrations = postgres.failed_prisma_migrations()

    _take(readings, "connections", connections)
    _take(readings, "failed_migrations", failed)


def _read_sentry(readings: Readings, sentry: Sentry, config: MonitoringConfig) -> None:
    def rate() -> None:
        result = sentry.error_rate(window_minutes=config.window_minutes)
        readings.error_rate, readings.errors, readings.total = result.rate, result.errors, result.total
        readings.error_rate_source = "sentry"

    _take(readings, "sentry", rate)


def collect_readings(
    *,
    aws: Aws | None,
    postgres: Postgres | None,
    sentry: Sentry | None,
    config: MonitoringConfig,
    now: datetime | None = None,
) -> Readings:
    """Take one set of readings over the last ``config.window_minutes``; never raises for a failing source.

    The sources are read in parallel. Error rate: Sentry when given; otherwise (or when Sentry fails, which is
    recorded as ``unavailable["sentry"]``) ALB target 5XX over RequestCount.
    """
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - timedelta(minutes=config.window_minutes)
    readings = Readings(taken_at=end)
    jobs: list[Callable[[], None]] = []
    if aws is not None:
        jobs.append(lambda: _read_cloudwatch(readings, aws, config, start, end))
        jobs.append(lambda: _read_logs(readings, aws, config, start, end))
    else:
        for name in ("alb_5xx", "request_count", "p95_ms", "cpu", "memory", "error_log_lines"):
            readings.unavailable[name] = "AWS is not configured"
    if postgres is not None:
        jobs.append(lambda: _read_postgres(readings, postgres, config))
    else:
        readings.unavailable["connections"] = "no database configured"
        readings.unavailable["failed_migrations"] = "no database configured"
    if sentry is not None:
        jobs.append(lambda: _read_sentry(readings, sentry, config))
    # Each job writes distinct attributes and distinct keys of ``unavailable``.
    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="readings") as pool:
        for future in [pool.submit(job) for job in jobs]:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a bug in one source still leaves the others
                readings.unavailable.setdefault("collection", _reason(exc))
    if readings.error_rate is None:
        alb = readings.alb_error_rate
        if alb is not None:
            readings.error_rate, readings.errors, readings.total = alb, readings.alb_5xx, readings.request_count
            readings.error_rate_source = "alb"
        else:
            reasons = []
            if sentry is None:
                reasons.append("no Sentry configured")
            elif "sentry" in readings.unavailable:
                reasons.append(f"Sentry: {readings.unavailable['sentry']}")
            reasons.append("ALB: " + readings.unavailable.get("request_count", "no requests in the window"))
            readings.unavailable["error_rate"] = "; ".join(reasons)
    return readings


def sentry_client(config: MonitoringConfig) -> Sentry | None:
    """The Sentry client for ``config.sentry``, or None when Sentry is not configured."""
    if config.sentry is None:
        return None
    return Sentry(org=config.sentry.org, project=config.sentry.project, token=config.sentry.token,
                  base_url=config.sentry.base_url)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation (pure)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    """One row of the monitoring table: a reading, its threshold and the status it grades to."""

    name: str
    value_text: str
    threshold_text: str
    status: Status
    message: str

    @property
    def emoji(self) -> str:
        return STATUS_EMOJI[self.status]


@dataclass(frozen=True)
class Alert:
    """One watch alert condition that holds now; ``key`` stays the same while the condition lasts."""

    key: str
    severity: Severity
    text: str
    page: bool = False


def _pct(value: float) -> str:
    percent = value * 100
    if percent == 0:
        return "0 %"
    return f"{percent:.1f} %" if percent >= 0.1 else f"{percent:.2f} %"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def _threshold_pct(value: float) -> str:
    return f"{value * 100:g} %"


def _grade(value: float, warn: float, alert: float | None = None) -> Status:
    """ok below ``warn`` (the seed's "should be < …"); alert strictly above ``alert``; warn in between."""
    if alert is not None and value > alert:
        return "alert"
    if value >= warn:
        return "warn"
    return "ok"


def _error_rates(readings: Readings) -> list[tuple[float, str]]:
    """Each error rate measured, with a label naming its source and counts."""
    rates: list[tuple[float, str]] = []
    if readings.error_rate is not None and (readings.error_rate_source != "alb" or readings.alb_error_rate is None):
        source = {"sentry": "Sentry", "alb": "ALB 5XX"}.get(readings.error_rate_source or "", "errors")
        rates.append((readings.error_rate, f"{_pct(readings.error_rate)} ({source}: {readings.errors}/{readings.total})"))
    alb = readings.alb_error_rate
    if alb is not None:
        rates.append((alb, f"{_pct(alb)} (ALB 5XX: {readings.alb_5xx}/{readings.request_count})"))
    return rates


def _error_rate_detail(readings: Readings) -> tuple[float | None, str, str]:
    """The rate to grade (the worse of Sentry's and the ALB's), every rate's text, and the worst one's text."""
    rates = _error_rates(readings)
    if not rates:
        return None, "", ""
    worst = max(rates, key=lambda r: r[0])
    return worst[0], " · ".join(text for _, text in rates), worst[1]


def evaluate(readings: Readings, config: MonitoringConfig) -> list[Gauge]:
    """The monitoring step's table: each reading against the seed's "should be" thresholds (alerts above the
    watch's alert thresholds), ``unknown`` where a reading is unavailable."""
    gauges: list[Gauge] = []
    gone = readings.unavailable

    rate, text, _ = _error_rate_detail(readings)
    threshold = f"< {_threshold_pct(config.error_rate_warn)} (page > {_threshold_pct(config.error_rate_page)})"
    if rate is None:
        gauges.append(Gauge("Error rate", "n/a", threshold, "unknown", gone.get("error_rate", "not measured")))
    else:
        status = _grade(rate, config.error_rate_warn, config.error_rate_page)
        note = f" Sentry unavailable: {gone['sentry']}" if "sentry" in gone else ""
        message = {
            "ok": "Error rate is normal.",
            "warn": f"Error rate is at or above {_threshold_pct(config.error_rate_warn)}.",
            "alert": f"Error rate is above {_threshold_pct(config.error_rate_page)}: page on-call, consider rollback.",
        }[status]
        gauges.append(Gauge("Error rate", text, threshold, status, message + note))

    threshold = f"< {config.p95_warn_ms:g} ms (alert > {config.p95_alert_ms:g} ms)"
    if readings.p95_ms is None:
        gauges.append(Gauge("Response time p95", "n/a", threshold, "unknown", gone.get("p95_ms", "not measured")))
    else:
        status = _grade(readings.p95_ms, config.p95_warn_ms, config.p95_alert_ms)
        value = _ms(readings.p95_ms)
        if readings.p95_statistic and readings.p95_statistic != "p95":
            value += f" ({readings.p95_statistic}; no percentile data)"
        message = {"ok": "Response time is normal.",
                   "warn": f"p95 is at or above {config.p95_warn_ms:g} ms.",
                   "alert": f"p95 is above {config.p95_alert_ms:g} ms: investigate immediately."}[status]
        gauges.append(Gauge("Response time p95", value, threshold, status, message))

    threshold = f"< {_threshold_pct(config.connections_warn)} (alert > {_threshold_pct(config.connections_alert)})"
    use = readings.connection_use
    if use is None:
        gauges.append(Gauge("DB connections", "n/a", threshold, "unknown", gone.get("connections", "not measured")))
    else:
        status = _grade(use, config.connections_warn, config.connections_alert)
        of = "pool" if readings.connection_limit_source == "pool_size" else "max_connections"
        value = f"{_pct(use)} ({readings.connections}/{readings.connection_limit} {of})"
        message = {"ok": "Connections are normal.",
                   "warn": f"Connections are at or above {_threshold_pct(config.connections_warn)} of the {of}.",
                   "alert": "Connections are above "
                            f"{_threshold_pct(config.connections_alert)}: scale up the connection pool."}[status]
        gauges.append(Gauge("DB connections", value, threshold, status, message))

    for name, attr, warn in (("CPU", "cpu", config.cpu_warn), ("Memory", "memory", config.memory_warn)):
        value_f: float | None = getattr(readings, attr)
        threshold = f"< {_threshold_pct(warn)}"
        if value_f is None:
            gauges.append(Gauge(name, "n/a", threshold, "unknown", gone.get(attr, "not measured")))
        else:
            status = _grade(value_f, warn)
            message = f"{name} is normal." if status == "ok" else f"{name} is at or above {_threshold_pct(warn)}."
            gauges.append(Gauge(name, _pct(value_f), threshold, status, message))

    threshold = "none"
    if readings.failed_migrations is None:
        gauges.append(Gauge("Failed migrations", "n/a", threshold, "unknown",
                            gone.get("failed_migrations", "not measured")))
    elif readings.failed_migrations:
        names = ", ".join(readings.failed_migrations[:5]) + (" …" if len(readings.failed_migrations) > 5 else "")
        gauges.append(Gauge("Failed migrations", names, threshold, "alert",
                            "A migration is marked failed in _prisma_migrations: rollback immediately."))
    else:
        gauges.append(Gauge("Failed migrations", "none", threshold, "ok", "No failed migration rows."))
    return gauges


def alerts(readings: Readings, config: MonitoringConfig) -> list[Alert]:
    """The watch's alert conditions that hold in these readings (the seed's "Alert Thresholds")."""
    found: list[Alert] = []
    rate, _, text = _error_rate_detail(readings)
    if rate is not None and rate > config.error_rate_page:
        found.append(Alert("error_rate", "critical",
                           f"Error rate {text} is above {_threshold_pct(config.error_rate_page)}: "
                           "paging on-call; rollback recommended.", page=True))
    if readings.p95_ms is not None and readings.p95_ms > config.p95_alert_ms:
        found.append(Alert("p95", "error",
                           f"Response time p95 {_ms(readings.p95_ms)} is above {config.p95_alert_ms:g} ms: "
                           "investigate immediately."))
    use = readings.connection_use
    if use is not None and use > config.connections_alert:
        found.append(Alert("connections", "error",
                           f"Database connections at {_pct(use)} ({readings.connections}/{readings.connection_limit}) "
                           f"are above {_threshold_pct(config.connections_alert)}: scale up the connection pool."))
    if readings.failed_migrations:
        found.append(Alert("failed_migrations", "critical",
                           "Migration marked failed in _prisma_migrations: "
                           f"{', '.join(readings.failed_migrations[:5])}: rollback immediately."))
    return found


def measured(readings: Readings, key: str) -> bool:
    """Whether the reading behind the alert ``key`` was taken: an alert whose reading is missing has not cleared."""
    values = {"error_rate": readings.worst_error_rate, "p95": readings.p95_ms,
              "connections": readings.connection_use, "failed_migrations": readings.failed_migrations}
    return values.get(key) is not None


def rollback_triggers(readings: Readings, config: MonitoringConfig) -> list[str]:
    """The seed's rollback triggers these readings show, as reasons for "Rollback recommended: …"."""
    reasons: list[str] = []
    if readings.failed_migrations:
        reasons.append(f"migration failed ({', '.join(readings.failed_migrations[:5])})")
    rate, _, text = _error_rate_detail(readings)
    if rate is not None and rate > config.error_rate_page:
        reasons.append(f"error rate {text} is above {_threshold_pct(config.error_rate_page)}")
    if readings.p95_ms is not None and readings.p95_ms > config.p95_alert_ms:
        reasons.append(f"database performance degraded: p95 {_ms(readings.p95_ms)} "
                       f"is above {config.p95_alert_ms:g} ms")
    use = readings.connection_use
    if use is not None and use > config.connections_alert:
        reasons.append(f"database performance degraded: connections at {_pct(use)} "
                       f"are above {_threshold_pct(config.connections_alert)}")
    return reasons
