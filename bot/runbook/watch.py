"""After the deploy: the monitoring step's readings, and the 24-hour watch that alerts once per condition."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from bot.config import EnvironmentConfig
from bot.context import Deps, Reply
from bot.errors import BotError
from bot.integrations.pagerduty import PagerDuty
from bot.runbook.rollback import oncall_mention, recommend_rollback
from bot.runbook.rules import AuditEvent, Monitoring, Reading, Run, RunStatus, record_readings
from bot.store.watch import WatchStore

log = logging.getLogger(__name__)


def _clients(env: EnvironmentConfig) -> tuple[Any, Any, Any]:
    # boto3 and psycopg are loaded only when readings are taken
    from bot.integrations.aws import Aws
    from bot.integrations.postgres import Postgres
    from bot.runbook.monitoring import sentry_client

    config = env.monitoring.resolved(env.deploy)
    wants_aws = bool(config.load_balancer or config.ecs_service or config.log_group)
    aws = Aws(region=env.aws.region, endpoint_url=env.aws.endpoint_url, call_timeout_s=10) if wants_aws else None
    postgres = Postgres(env.database_url, connect_timeout_s=5) if env.database_url else None
    return aws, postgres, sentry_client(config)


def take_readings(env: EnvironmentConfig, now: datetime) -> Any:
    # boto3 and psycopg are loaded only when readings are taken
    from bot.runbook.monitoring import collect_readings

    aws, postgres, sentry = _clients(env)
    return collect_readings(aws=aws, postgres=postgres, sentry=sentry,
                            config=env.monitoring.resolved(env.deploy), now=now)


def monitor_run(deps: Deps, run_id: str) -> None:
    """The seed's step 7: take every reading, show the ✅/⚠️ table, recommend rollback on a trigger."""
    # boto3 and psycopg are loaded only when readings are taken
    from bot.runbook.monitoring import evaluate, rollback_triggers

    run = deps.store.get(run_id)
    env = deps.config.environment(run.env)
    if env is None or run.status is not RunStatus.MONITORING:
        return
    readings = take_readings(env, deps.clock())
    config = env.monitoring.resolved(env.deploy)
    gauges = evaluate(readings, config)
    summary = Monitoring(
        taken_at=deps.clock().isoformat(),
        checks=[Reading(name=g.name, value=g.value_text, threshold=g.threshold_text, status=g.status,
                        icon=g.emoji, message=g.message) for g in gauges],
        log_lines=list(readings.error_log_lines)[:10],
        unavailable=dict(readings.unavailable),
    )
    deps.store.apply(run_id, lambda current: record_readings(current, summary=summary, now=deps.clock()))
    deps.publish(run_id)
    triggers = rollback_triggers(readings, config)
    if triggers:
        recommend_rollback(deps, run_id, "; ".join(triggers))
        deps.publish(run_id)


def refresh_readings(deps: Deps, *, run_id: str, user: str) -> Reply:
    deps.store.audit(run_id, AuditEvent(user, "monitoring.refresh", "ok", deps.clock(), ""))
    monitor_run(deps, run_id)
    return Reply("", publish_run=run_id)


def start_monitoring(deps: Deps, run_id: str) -> None:
    """Entering `monitoring`: readings now, and the 24-hour watch scheduled (once, whoever gets here first)."""
    run = deps.store.find(run_id)
    if run is None or run.status is not RunStatus.MONITORING:
        return
    if not WatchStore(deps.store).claim_start(run_id):
        return
    try:
        monitor_run(deps, run_id)
    except BotError as exc:
        log.warning("monitoring readings for %s failed: %s", run_id, exc)
    env = deps.config.environment(run.env)
    if env is not None:
        schedule_watch(deps, run, env)


# ---- the 24-hour watch ---------------------------------------------------------------------------

def schedule_watch(deps: Deps, run: Run, env: EnvironmentConfig) -> None:
    config = env.monitoring
    now = deps.clock()
    end = now + timedelta(hours=config.watch_hours)
    WatchStore(deps.store).start(run.id, {
        "started_at": now.isoformat(), "ends_at": end.isoformat(), "interval_s": config.watch_interval_s},
        ttl_s=int(config.watch_hours * 3600) + 86400)
    queue = deps.job_queue()
    queue.add_interval(f"watch:{run.id}", "jobs.watch:watch_tick", seconds=config.watch_interval_s,
                       start=now + timedelta(seconds=config.watch_interval_s), end=end, args=(run.id,))
    queue.add_at(f"watch-end:{run.id}", "jobs.watch:watch_end",
                 run_at=end + timedelta(seconds=min(config.watch_interval_s, 30)), args=(run.id,),
                 grace_s=int(max(3600, config.watch_interval_s)))
    deps.store.audit(run.id, AuditEvent("bot", "watch.start", "ok", now,
                                        f"every {config.watch_interval_s:g} s for {config.watch_hours:g} h"))


def _post(deps: Deps, run: Run, text: str, *, broadcast: bool = False) -> None:
    if deps.slack is None or not run.message_ts:
        return
    try:
        deps.slack.client.chat_postMessage(channel=run.channel, thread_ts=run.message_ts, text=text[:3900],
                                           reply_broadcast=broadcast)
    except Exception as exc:  # the alert is also in the audit trail
        log.warning("watch post failed for %s: %s", run.id, type(exc).__name__)


def watch_tick(deps: Deps, run_id: str) -> str:
    """One reading of the watch: alert once per condition until it clears (deduplicated across replicas)."""
    # boto3 and psycopg are loaded only when readings are taken
    from bot.runbook.monitoring import alerts, measured

    watches = WatchStore(deps.store)
    watch = watches.get(run_id)
    run = deps.store.find(run_id)
    if watch is None or run is None:
        return "no watch"
    slot = int(time.time() // max(1.0, float(watch["interval_s"]) / 2))
    if not watches.claim_tick(run_id, slot):
        return "duplicate"
    env = deps.config.environment(run.env)
    if env is None:
        return "no environment"
    readings = take_readings(env, deps.clock())
    watches.add_sample(run_id, readings.to_dict())
    config = env.monitoring.resolved(env.deploy)
    active = watches.active_alerts(run_id)
    current = {alert.key: alert for alert in alerts(readings, config)}
    for key, alert in current.items():
        if not watches.raise_alert(run_id, key):  # atomic: only the tick that adds it alerts
            continue
        deps.store.audit(run_id, AuditEvent("bot", "watch.alert", "alert", deps.clock(), alert.text, {"key": key}))
        _post(deps, run, f"{oncall_mention(env.oncall) if alert.page else ''}🚨 *Watch:* {alert.text}",
              broadcast=alert.page)
        if alert.page:
            _page(deps, env, run, key, alert.text, trigger=True)
        if key in ("error_rate", "failed_migrations"):
            recommend_rollback(deps, run_id, alert.text)
    for gone in active - set(current):
        key = gone
        if not measured(readings, key):
            continue  # not read this time: unknown is not "back within its threshold", the alert stays raised
        if not watches.clear_alert(run_id, key):
            continue
        deps.store.audit(run_id, AuditEvent("bot", "watch.clear", "ok", deps.clock(), f"{key} back within threshold",
                                            {"key": key}))
        _post(deps, run, f"✅ *Watch:* {key.replace('_', ' ')} is back within its threshold.")
        _page(deps, env, run, key, "", trigger=False)
    return f"{len(current)} alert(s)"


def _page(deps: Deps, env: EnvironmentConfig, run: Run, key: str, text: str, *, trigger: bool) -> None:
    config = env.monitoring
    if not config.pagerduty_routing_key:
        return
    client = PagerDuty(config.pagerduty_routing_key, base_url=config.pagerduty_url)
    try:
        if trigger:
            client.trigger(f"{run.id}:{key}", f"{run.env} after migration {run.id}: {text}", source="migrate-bot")
        else:
            client.resolve(f"{run.id}:{key}")
    except BotError as exc:
        log.warning("PagerDuty %s failed for %s: %s", "trigger" if trigger else "resolve", run.id, exc)


def watch_end(deps: Deps, run_id: str) -> str:
    """The end of the watch: a summary and a chart of error rate, p95 and connections."""
    # matplotlib is slow to import: loaded only to draw the end-of-watch chart
    from bot.runbook.charts import watch_chart
    from bot.runbook.monitoring import Readings

    watches = WatchStore(deps.store)
    if not watches.claim_end(run_id):
        return "duplicate"
    run = deps.store.find(run_id)
    if run is None:
        return "no run"
    env = deps.config.environment(run.env)
    samples = [Readings.from_dict(sample) for sample in watches.samples(run_id)]
    alerts_fired = [e for e in deps.store.audit_entries(run_id) if e.action == "watch.alert"]
    text = (f"*Watch finished* for `{run_id}`: {len(samples)} readings, {len(alerts_fired)} alert(s) fired"
            + (f" ({', '.join(sorted({e.data.get('key', '?') for e in alerts_fired}))})" if alerts_fired else "")
            + ".")
    deps.store.audit(run_id, AuditEvent("bot", "watch.end", "ok", deps.clock(), text))
    _post(deps, run, text)
    if deps.slack is not None and run.message_ts:
        png = watch_chart(samples, config=env.monitoring if env else None, title=f"{run.id} — 24-hour watch")
        try:
            deps.slack.upload_file(channel=run.channel, thread_ts=run.message_ts, filename=f"{run_id}-watch.png",
                                   content=png, title=f"Watch {run_id}: error rate, p95, connections")
        except BotError as exc:
            log.warning("watch chart upload failed for %s: %s", run_id, exc)
    watches.end(run_id)
    return "ended"
