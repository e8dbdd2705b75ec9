"""Post-migration readings from moto's CloudWatch and Logs, real PostgreSQL and the Sentry stand-in; their evaluation."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bot.config import DeployConfig, MonitoringConfig, SentryConfig
from bot.devtools.stubs import SentryStub
from bot.integrations.aws import Aws
from bot.integrations.postgres import Postgres
from bot.integrations.prisma.native import CREATE_MIGRATIONS_TABLE_SQL
from bot.integrations.sentry import Sentry
from bot.runbook.monitoring import (
    Gauge,
    Readings,
    alerts,
    collect_readings,
    evaluate,
    rollback_triggers,
    sentry_client,
)
from tests.aws_world import client

LB = "app/prod-alb/50dc6c495c0c9188"
CLUSTER, SERVICE = "prod", "api"
LOG_GROUP = "/aws/ecs/mychristiancounselor-api"


def closed_port_url() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def aws(moto_reset: str) -> Aws:
    return Aws(region="us-east-1", endpoint_url=moto_reset, call_timeout_s=10)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def config(**overrides: Any) -> MonitoringConfig:
    base: dict[str, Any] = {"load_balancer": LB, "ecs_cluster": CLUSTER, "ecs_service": SERVICE, "log_group": LOG_GROUP}
    return MonitoringConfig(**(base | overrides))


def put_metrics(endpoint: str, now: datetime, *, requests: int, errors: int, response_s: float, cpu: float,
                memory: float) -> None:
    """Three one-minute datapoints per metric inside the last five minutes (requests and errors split over them)."""
    cw = client(endpoint, "cloudwatch")
    alb = [{"Name": "LoadBalancer", "Value": LB}]
    ecs = [{"Name": "ClusterName", "Value": CLUSTER}, {"Name": "ServiceName", "Value": SERVICE}]
    shares = [requests // 3, requests // 3, requests - 2 * (requests // 3)]
    error_shares = [errors // 3, errors // 3, errors - 2 * (errors // 3)]
    for i in range(3):
        at = now - timedelta(minutes=i + 1, seconds=10)
        data = [
            {"MetricName": "RequestCount", "Dimensions": alb, "Value": shares[i], "Unit": "Count", "Timestamp": at},
            {"MetricName": "TargetResponseTime", "Dimensions": alb, "Value": response_s, "Unit": "Seconds",
             "Timestamp": at},
        ]
        if error_shares[i]:
            data.append({"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": alb, "Value": error_shares[i],
                         "Unit": "Count", "Timestamp": at})
        cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)
        cw.put_metric_data(Namespace="AWS/ECS", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": ecs, "Value": cpu * 100, "Unit": "Percent", "Timestamp": at},
            {"MetricName": "MemoryUtilization", "Dimensions": ecs, "Value": memory * 100, "Unit": "Percent",
             "Timestamp": at},
        ])
    # Old data outside the window must not count.
    cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": alb, "Value": 5000, "Unit": "Count",
         "Timestamp": now - timedelta(minutes=30)},
    ])


def put_logs(endpoint: str, now: datetime, messages: list[str]) -> None:
    logs = client(endpoint, "logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="api/api/task1")
    start = int((now - timedelta(minutes=2)).timestamp() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="api/api/task1",
                        logEvents=[{"timestamp": start + i * 100, "message": m} for i, m in enumerate(messages)])


@pytest.fixture
def prisma_db(scratch_db: str) -> Iterator[str]:
    """A scratch database with Prisma's _prisma_migrations table and one applied migration."""
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(CREATE_MIGRATIONS_TABLE_SQL)
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) "
                     "VALUES (%s, 'abc', now(), '20240101000000_init', 1)", (str(uuid.uuid4()),))
    yield scratch_db


def statuses(gauges: list[Gauge]) -> dict[str, str]:
    return {gauge.name: gauge.status for gauge in gauges}


class TestCollectFromAws:
    def test_healthy_readings_are_read_back_and_all_ok(self, aws: Aws, moto_reset: str, prisma_db: str,
                                                       now: datetime) -> None:
        """Healthy metrics, logs and database read back through the adapters and every gauge is ✅."""
        put_metrics(moto_reset, now, requests=1500, errors=3, response_s=0.2, cpu=0.35, memory=0.5)
        put_logs(moto_reset, now, ["INFO started", "ERROR payment timeout id=1", "INFO ok"])
        readings = collect_readings(aws=aws, postgres=Postgres(prisma_db), sentry=None,
                                    config=config(pool_size=50), now=now)
        assert readings.unavailable == {}
        assert (readings.request_count, readings.alb_5xx) == (1500, 3)
        assert readings.error_rate == pytest.approx(0.002) and readings.error_rate_source == "alb"
        assert readings.p95_ms == pytest.approx(200)
        assert readings.cpu == pytest.approx(0.35) and readings.memory == pytest.approx(0.5)
        assert readings.connection_limit == 50 and readings.connection_limit_source == "pool_size"
        assert readings.failed_migrations == []
        assert [line.split(" ", 1)[1] for line in readings.error_log_lines] == ["ERROR payment timeout id=1"]
        gauges = evaluate(readings, config(pool_size=50))
        assert set(statuses(gauges).values()) == {"ok"}, gauges
        assert alerts(readings, config()) == [] and rollback_triggers(readings, config()) == []

    def test_injected_breaches_are_flagged(self, aws: Aws, moto_reset: str, now: datetime) -> None:
        """8 of 100 requests failing, p95 2.5 s and CPU 90 % show as 🚨, 🚨 and ⚠️ and raise the watch alerts."""
        put_metrics(moto_reset, now, requests=100, errors=8, response_s=2.5, cpu=0.9, memory=0.88)
        readings = collect_readings(aws=aws, postgres=None, sentry=None, config=config(), now=now)
        assert readings.error_rate == pytest.approx(0.08)
        assert readings.p95_ms == pytest.approx(2500)
        got = statuses(evaluate(readings, config()))
        assert got == {"Error rate": "alert", "Response time p95": "alert", "CPU": "warn", "Memory": "warn",
                       "DB connections": "unknown", "Failed migrations": "unknown"}
        fired = {a.key: a for a in alerts(readings, config())}
        assert set(fired) == {"error_rate", "p95"}
        assert fired["error_rate"].page and "rollback" in fired["error_rate"].text
        assert "investigate immediately" in fired["p95"].text and not fired["p95"].page
        triggers = rollback_triggers(readings, config())
        assert any("error rate" in t for t in triggers) and any("p95" in t for t in triggers)

    def test_newest_error_lines_only(self, aws: Aws, moto_reset: str, now: datetime) -> None:
        """Only ERROR lines come back, the newest ``log_lines`` of them, oldest first."""
        messages = [f"ERROR failure {i}" if i % 2 else f"INFO fine {i}" for i in range(30)]
        put_logs(moto_reset, now, messages)
        readings = collect_readings(aws=aws, postgres=None, sentry=None, config=config(log_lines=5), now=now)
        assert [line.split(" ", 1)[1] for line in readings.error_log_lines] == [
            f"ERROR failure {i}" for i in (21, 23, 25, 27, 29)]

    def test_no_datapoints_make_readings_unavailable(self, aws: Aws, now: datetime) -> None:
        """A load balancer and service without datapoints give reasons, not zeros or an exception."""
        readings = collect_readings(aws=aws, postgres=None, sentry=None, config=config(), now=now)
        assert readings.request_count is None and readings.cpu is None and readings.p95_ms is None
        assert "no RequestCount datapoints" in readings.unavailable["request_count"]
        assert "no CPUUtilization datapoints" in readings.unavailable["cpu"]
        assert "ResourceNotFound" in readings.unavailable["error_log_lines"]
        assert "error_rate" in readings.unavailable

    def test_ecs_names_default_from_deploy_config(self, aws: Aws, moto_reset: str, now: datetime) -> None:
        """resolved() fills the ECS cluster and service from the deploy config."""
        put_metrics(moto_reset, now, requests=10, errors=0, response_s=0.1, cpu=0.2, memory=0.3)
        resolved = MonitoringConfig(load_balancer=LB).resolved(DeployConfig(cluster=CLUSTER, service=SERVICE))
        readings = collect_readings(aws=aws, postgres=None, sentry=None, config=resolved, now=now)
        assert readings.cpu == pytest.approx(0.2) and readings.memory == pytest.approx(0.3)


class TestPostgresReadings:
    def test_connections_and_limit_are_read(self, prisma_db: str) -> None:
        """Open sessions are counted against max_connections, or against the pool size when configured."""
        pg = Postgres(prisma_db)
        limit = int(psycopg.connect(prisma_db, autocommit=True).execute("SHOW max_connections").fetchone()[0])
        held = [psycopg.connect(prisma_db, autocommit=True) for _ in range(4)]
        try:
            readings = collect_readings(aws=None, postgres=pg, sentry=None, config=MonitoringConfig())
            assert readings.connections is not None and readings.connections >= 5
            assert (readings.connection_limit, readings.connection_limit_source) == (limit, "max_connections")
            small = MonitoringConfig(pool_size=5)
            crowded = collect_readings(aws=None, postgres=pg, sentry=None, config=small)
            assert statuses(evaluate(crowded, small))["DB connections"] == "alert"
            assert any("scale up the connection pool" in a.text for a in alerts(crowded, small))
        finally:
            for conn in held:
                conn.close()

    def test_failed_migration_row_means_rollback_immediately(self, prisma_db: str) -> None:
        """An unfinished, not-rolled-back row raises "rollback immediately"; a rolled-back one does not count."""
        with psycopg.connect(prisma_db, autocommit=True) as conn:
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) "
                         "VALUES (%s, 'def', '20240301000000_add_index', now())", (str(uuid.uuid4()),))
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, rolled_back_at) "
                         "VALUES (%s, 'ghi', '20240201000000_old_failure', now())", (str(uuid.uuid4()),))
        readings = collect_readings(aws=None, postgres=Postgres(prisma_db), sentry=None, config=MonitoringConfig())
        assert readings.failed_migrations == ["20240301000000_add_index"]
        fired = {a.key: a for a in alerts(readings, MonitoringConfig())}
        assert "rollback immediately" in fired["failed_migrations"].text
        assert statuses(evaluate(readings, MonitoringConfig()))["Failed migrations"] == "alert"
        assert any("migration failed" in t for t in rollback_triggers(readings, MonitoringConfig()))

    def test_database_without_prisma_table_has_no_failures(self, scratch_db: str) -> None:
        """No _prisma_migrations table reads as no failed migrations."""
        readings = collect_readings(aws=None, postgres=Postgres(scratch_db), sentry=None, config=MonitoringConfig())
        assert readings.failed_migrations == []

    def test_unreachable_database_is_unavailable(self) -> None:
        """A database nobody listens on leaves both database readings unavailable with a redacted reason."""
        url = closed_port_url().replace("http://", "postgresql://app:hunter2secret@") + "/app"
        readings = collect_readings(aws=None, postgres=Postgres(url, connect_timeout_s=2), sentry=None,
                                    config=MonitoringConfig())
        assert readings.connections is None and "Cannot connect" in readings.unavailable["connections"]
        assert "hunter2secret" not in readings.unavailable["connections"]
        assert "failed_migrations" in readings.unavailable


class TestSentryReadings:
    def test_error_rate_comes_from_sentry(self, prisma_db: str) -> None:
        """With Sentry configured, its errors over requests are the error rate."""
        with SentryStub() as stub:
            stub.set_counts(errors=30, total=1000)
            cfg = MonitoringConfig(sentry=SentryConfig(org=stub.org, project=stub.project, token=stub.token,
                                                       base_url=stub.base_url))
            sentry = sentry_client(cfg)
            assert sentry is not None
            readings = collect_readings(aws=None, postgres=Postgres(prisma_db), sentry=sentry, config=cfg)
        assert (readings.errors, readings.total, readings.error_rate_source) == (30, 1000, "sentry")
        assert readings.error_rate == pytest.approx(0.03)
        gauge = next(c for c in evaluate(readings, cfg) if c.name == "Error rate")
        assert gauge.status == "warn" and "Sentry: 30/1000" in gauge.value_text

    def test_dead_sentry_is_unavailable_but_others_remain(self, aws: Aws, moto_reset: str, prisma_db: str,
                                                          now: datetime) -> None:
        """A dead Sentry URL is reported with a reason; the database and ALB readings still arrive."""
        put_metrics(moto_reset, now, requests=200, errors=2, response_s=0.1, cpu=0.2, memory=0.2)
        sentry = Sentry(org="mcc", project="api", token="sntrys-dead-token-123", base_url=closed_port_url(),
                        timeout_s=2)
        readings = collect_readings(aws=aws, postgres=Postgres(prisma_db), sentry=sentry, config=config(), now=now)
        assert "Sentry unreachable" in readings.unavailable["sentry"]
        assert readings.connections is not None and readings.failed_migrations == []
        assert readings.error_rate_source == "alb" and readings.error_rate == pytest.approx(0.01)
        gauge = next(c for c in evaluate(readings, config()) if c.name == "Error rate")
        assert "Sentry unavailable" in gauge.message

    def test_dead_sentry_without_aws_leaves_error_rate_unknown(self, prisma_db: str) -> None:
        """Without AWS to fall back on, the error rate is unknown and says why."""
        sentry = Sentry(org="mcc", project="api", token="sntrys-dead-token-456", base_url=closed_port_url(),
                        timeout_s=2)
        readings = collect_readings(aws=None, postgres=Postgres(prisma_db), sentry=sentry, config=MonitoringConfig())
        assert readings.error_rate is None and "Sentry unreachable" in readings.unavailable["error_rate"]
        assert readings.connections is not None
        gauge = next(c for c in evaluate(readings, MonitoringConfig()) if c.name == "Error rate")
        assert gauge.status == "unknown" and "Sentry" in gauge.message


def sample(**values: Any) -> Readings:
    return Readings(taken_at=datetime(2026, 1, 6, 3, 0, tzinfo=UTC), **values)


class TestEvaluate:
    @pytest.mark.parametrize(("rate", "status"), [(0.0099, "ok"), (0.01, "warn"), (0.05, "warn"), (0.0501, "alert")])
    def test_error_rate_thresholds(self, rate: float, status: str) -> None:
        """Below 1 % is ✅, from 1 % to 5 % is ⚠️, above 5 % is 🚨 (the seed's "< 1 %" and "> 5 %")."""
        readings = sample(error_rate=rate, errors=1, total=1, error_rate_source="sentry")
        assert statuses(evaluate(readings, MonitoringConfig()))["Error rate"] == status
        assert (status == "alert") == any(a.key == "error_rate" and a.page for a in alerts(readings, MonitoringConfig()))

    def test_alb_breach_counts_even_when_sentry_is_healthy(self) -> None:
        """5XX at the load balancer flags the error rate even if Sentry saw few errors."""
        readings = sample(error_rate=0.001, errors=1, total=1000, error_rate_source="sentry", alb_5xx=8,
                          request_count=100)
        gauge = next(c for c in evaluate(readings, MonitoringConfig()) if c.name == "Error rate")
        assert gauge.status == "alert" and "ALB 5XX: 8/100" in gauge.value_text

    def test_configured_thresholds_apply(self) -> None:
        """Thresholds come from the config, not constants."""
        strict = MonitoringConfig(p95_warn_ms=100, p95_alert_ms=150, cpu_warn=0.3)
        got = statuses(evaluate(sample(p95_ms=160, p95_statistic="p95", cpu=0.31), strict))
        assert got["Response time p95"] == "alert" and got["CPU"] == "warn"

    def test_unavailable_readings_are_unknown_with_reason(self) -> None:
        """A reading that was not taken is ❔ with the reason as its message."""
        readings = sample(unavailable={"cpu": "no CPUUtilization datapoints"})
        gauge = next(c for c in evaluate(readings, MonitoringConfig()) if c.name == "CPU")
        assert gauge.status == "unknown" and gauge.message == "no CPUUtilization datapoints"

    def test_readings_round_trip_through_a_dict(self) -> None:
        """to_dict/from_dict keep every reading, so a watch can store its samples."""
        readings = sample(error_rate=0.02, p95_ms=300.0, failed_migrations=["x"], unavailable={"cpu": "why"},
                          error_log_lines=["03:00:00 ERROR"])
        assert Readings.from_dict(readings.to_dict()) == readings


class TestFailingSources:
    def test_dead_aws_endpoint_leaves_other_readings(self, moto_endpoint: str, prisma_db: str) -> None:
        """With AWS unreachable every AWS reading is unavailable with a reason; the database readings remain."""
        # moto_endpoint is requested only for the test AWS credentials it puts in the environment.
        dead = Aws(region="us-east-1", endpoint_url=closed_port_url(), call_timeout_s=2)
        readings = collect_readings(aws=dead, postgres=Postgres(prisma_db), sentry=None, config=config())
        for key in ("alb_5xx", "request_count", "p95_ms", "cpu", "memory", "error_log_lines", "error_rate"):
            assert key in readings.unavailable, key
        assert "EndpointConnectionError" in readings.unavailable["cpu"]
        assert readings.connections is not None and readings.failed_migrations == []

    def test_alert_names_the_breaching_source(self) -> None:
        """When Sentry is healthy but the ALB is not, the page names the ALB 5XX rate."""
        readings = sample(error_rate=0.001, errors=1, total=1000, error_rate_source="sentry", alb_5xx=8,
                          request_count=100)
        (alert,) = alerts(readings, MonitoringConfig())
        assert alert.page and alert.text.startswith("Error rate 8.0 % (ALB 5XX: 8/100) is above 5 %")
