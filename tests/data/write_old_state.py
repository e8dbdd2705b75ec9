"""Run with an OLD release of the bot on PYTHONPATH (tests/test_upgrade.py): write real state into Redis with its code.

Argument: JSON with root (the old release's tree), redis_url, prefix, instance, config. Prints one JSON line with
what was written (ids and what the old code reads back), then waits for stdin to close: the old process is a
replica still beating while the new code looks at its state, as in a rolling deploy.
"""

from __future__ import annotations

# ruff: noqa: I001 - these are the old release's module paths (bot.runs, bot.windows …): ruff cannot place them

import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bot
import jobs
from bot import checks, operations, watch, windows
from bot.config import BotConfig
from bot.context import Deps
from bot.devslack.server import FakeSlack
from bot.integrations.slack import Slack, make_client
from bot.publisher import Publisher
from bot.runs import RunStore, connect
from jobs import heartbeat, scheduler

params = json.loads(sys.argv[1])
for package in (bot, jobs):  # the old release's code, not the checkout running the test
    assert Path(str(package.__file__)).resolve().is_relative_to(Path(params["root"]).resolve()), package.__file__

ALICE, BOB, MALLORY = "U0ALICE", "U0BOB", "U0MALLORY"
TOKEN = "xoxb-upgrade-test"

config = BotConfig.model_validate(params["config"])
store = RunStore(connect(params["redis_url"]), prefix=params["prefix"])
fake = FakeSlack(token=TOKEN).start()
slack = Slack(make_client(TOKEN, fake.base_url))
deps = Deps(config=config, store=store, slack=None, publisher=Publisher(store, slack),
            instance_id=params["instance"], jobs=scheduler.queue_for)
env = config.environments["prod"]
now = datetime.now(UTC)

# A run: started, one checklist item ticked, a refused click audited, the 24-hour watch with one reading, and its
# Slack message and thread in step (rendered version and thread cursor).
operations.start_run(deps, env_name="prod", user=ALICE)
run = store.active_run("prod")
assert run is not None
operations.confirm(deps, run_id=run.id, item="staging_tested", user=ALICE)
operations.confirm(deps, run_id=run.id, item="rollback_plan", user=MALLORY)
watch.schedule_watch(deps, store.get(run.id), env)
watch.watch_tick(deps, run.id)
watch_slot = int(time.time() // (env.monitoring.watch_interval_s / 2))  # the tick's claim, as watch_tick names it
deps.publish(run.id)
assert not store.message_behind(run.id)

# A maintenance window three days ahead, its reminders in the APScheduler job store, an approver confirmed.
start = (now + timedelta(days=3)).replace(second=0, microsecond=0)
outcome = windows.schedule_window(deps, env_name="prod", user=ALICE, request=windows.WindowRequest(
    start=start, duration_s=3600, timezone="UTC", release_notes="Adds the invoice table", owner=ALICE))
window = outcome.window
assert window is not None and window.job_ids, outcome
windows.confirm_approver(deps, window_id=window.id, user=BOB)
# A timeline message a process claimed and died posting: the recovery of the new code must find it.
claim = f"window:{window.id}:{window.revision}:reminder"
dead = Deps(config=config, store=store, slack=None, publisher=None, instance_id="host:1:dead00")
assert windows.InFlight(dead).claim(claim, 3600, window, "reminder", window.revision, now)

# /migrate check prod: the database is not configured, the backup directory is writable.
checks.check_environment(deps, "prod")

written = {
    "run_id": run.id,
    "run": json.loads(store.get(run.id).model_dump_json()),
    "audit": [asdict(entry) for entry in store.audit_entries(run.id)],
    "window": json.loads(windows.WindowStore(deps).get(window.id).model_dump_json()),
    "window_audit": [asdict(entry) for entry in windows.WindowStore(deps).audit_entries(window.id)],
    "jobs": sorted(scheduler.queue_for(deps).pending()),
    "inflight_claim": claim,
    "check": checks.last_check(deps, "prod"),
    "watch_samples": len(store.redis.lrange(store.key("watch-samples", run.id), 0, -1)),
    "watch_slot": watch_slot,
}
scheduler.queue_for(deps).stop()
fake.stop()
heartbeat.beat(deps)
print(json.dumps(written, default=str), flush=True)
sys.stdin.read()
