"""After the deploy: the monitoring step's readings and the 24-hour watch (compressed to seconds)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from tests.aws_world import client
from tests.e2e import approve, blocks_text, click, ready_for_approval, run_step, start
from tests.harness import ALICE, PROD_CHANNEL, wait_until


def to_monitoring(world):
    run_id, ts = start(world)
    ready_for_approval(world, run_id, ts)
    approve(world, run_id, ts)
    for name in ("maintenance_on", "migrate", "deploy", "smoke", "maintenance_off"):
        run_step(world, run_id, ts, name)
    wait_until(lambda: world["store"].get(run_id).status.value == "monitoring")
    return run_id, ts


def put_metrics(endpoint, *, errors_5xx, requests, response_s, cpu, memory):
    cw = client(endpoint, "cloudwatch")
    now = datetime.now(UTC)
    alb = [{"Name": "LoadBalancer", "Value": "app/prod-alb/123"}]
    ecs = [{"Name": "ClusterName", "Value": "prod"}, {"Name": "ServiceName", "Value": "api"}]
    cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": alb, "Timestamp": now, "Value": errors_5xx},
        {"MetricName": "RequestCount", "Dimensions": alb, "Timestamp": now, "Value": requests},
        {"MetricName": "TargetResponseTime", "Dimensions": alb, "Timestamp": now, "Value": response_s},
    ])
    cw.put_metric_data(Namespace="AWS/ECS", MetricData=[
        {"MetricName": "CPUUtilization", "Dimensions": ecs, "Timestamp": now, "Value": cpu},
        {"MetricName": "MemoryUtilization", "Dimensions": ecs, "Timestamp": now, "Value": memory},
    ])
    logs = client(endpoint, "logs")
    logs.create_log_group(logGroupName="/aws/ecs/api")
    logs.create_log_stream(logGroupName="/aws/ecs/api", logStreamName="api/1")
    logs.put_log_events(logGroupName="/aws/ecs/api", logStreamName="api/1", logEvents=[
        {"timestamp": int(time.time() * 1000), "message": "ERROR P2002 Unique constraint failed on email"}])


class TestMonitoringStep:
    def test_readings_table_flags_injected_breaches(self, fresh):
        """Entering monitoring shows every reading; injected breaches show as ⚠️/🚨 and recommend rollback."""
        world = fresh
        put_metrics(world["moto"], errors_5xx=8, requests=100, response_s=2.5, cpu=90, memory=50)
        run_id, ts = to_monitoring(world)
        summary = wait_until(lambda: world["store"].get(run_id).facts.monitoring, timeout=30)
        statuses = {check.name: check.status for check in summary.checks}
        assert any(s == "alert" for n, s in statuses.items() if "rror" in n), statuses
        assert any(s in ("warn", "alert") for n, s in statuses.items() if "p95" in n or "esponse" in n), statuses
        assert any(s == "warn" for n, s in statuses.items() if "CPU" in n), statuses
        assert any(s == "ok" for n, s in statuses.items() if "emory" in n), statuses
        text = blocks_text(world, ts)
        assert "Monitoring" in text and "🚨" in text and "Refresh readings" in text
        assert "Unique constraint failed" in text
        wait_until(lambda: "Rollback recommended" in "\n".join(
            m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts)))
        assert "rollback:previous" in blocks_text(world, ts)


class TestWatch:
    def test_pages_once_clears_repages_survives_restart_and_charts(self, fresh):
        """A sustained error rate pages once; it clears; a new breach pages again after a restart; a PNG ends it."""
        world = fresh
        pagerduty = world["pagerduty"]
        run_id, ts = to_monitoring(world)
        world["sentry"].set_counts(8, 100)

        def events(action):  # only this run's pages: an earlier test's watch may still be ticking
            return [e for e in pagerduty.events
                    if e.get("event_action") == action and str(e.get("dedup_key", "")).startswith(run_id)]

        wait_until(lambda: events("trigger"), timeout=20)
        time.sleep(3)  # several more ticks with the error rate still high
        assert len(events("trigger")) == 1, [(e.action, e.detail[:80]) for e in world["store"].audit_entries(run_id)
                                             if e.action.startswith("watch")]
        world["sentry"].set_counts(0, 100)
        wait_until(lambda: events("resolve"), timeout=20)
        world["bot"].stop()
        world["bot"].start()
        world["sentry"].set_counts(9, 100)
        wait_until(lambda: len(events("trigger")) == 2, timeout=30)
        upload = wait_until(lambda: [f for f in world["fake"].files if f.name == f"{run_id}-watch.png"], timeout=60)[0]
        assert upload.content[:8] == b"\x89PNG\r\n\x1a\n"
        actions = [e.action for e in world["store"].audit_entries(run_id)]
        assert actions.count("watch.alert") == 2 and "watch.clear" in actions and "watch.end" in actions
        thread = "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))
        assert "<!subteam^S0ONCALL>" in thread
        assert json.loads(world["store"].redis.get(world["store"].key("once", f"watch-end:{run_id}")) or "1") == 1
        click(world, ts, ALICE, "finish")
