"""R3: Slack misbehaves (429 with Retry-After, 500s, slow answers) while a run proceeds.

The status message still ends up showing the run's latest state, every ephemeral answer arrives, and no step
runs twice. The stand-in's `inject` makes the faults; the bot's real Slack client has to ride them out.
"""

from __future__ import annotations

import json
import time

from bot.runbook.views import render_run
from tests.chaos import FULL, step_starts
from tests.e2e import (
    MANUAL_ITEMS,
    approve,
    blocks_text,
    click,
    message,
    ready_for_approval,
    run_step,
    settle,
    start,
)
from tests.harness import ALICE, PROD_CHANNEL, wait_until

FAULTS = [
    # (method, inject kwargs): each armed `times` times in a row (1 in CI, 2 in the full run)
    ("chat.update", {"status": 429, "retry_after": 1}),
    ("chat.update", {"status": 500}),
    ("chat.update", {"status": 200, "delay_s": 1.5}),
    ("chat.postMessage", {"status": 429, "retry_after": 1}),
    ("chat.postMessage", {"status": 503}),
    ("chat.postMessage", {"status": 200, "delay_s": 1.5}),
    ("chat.postEphemeral", {"status": 429, "retry_after": 1}),
    ("chat.postEphemeral", {"status": 500}),
]


def storm_of_faults(fake, times=1):
    """Arm a fresh set of faults (left-over ones are dropped, so each phase stays within the client's retries
    for ephemerals, which Slack cannot show later; the status message must catch up whatever happens)."""
    fake.clear_faults()
    for method, kwargs in FAULTS:
        fake.inject(method, times=times, **kwargs)


def shows_latest(world, run_id, ts, timeout=40):
    """The message in Slack is exactly what the run's latest version renders to."""
    store = world["store"]
    wait_until(lambda: message(world, ts)["blocks"] == render_run(store.get(run_id))["blocks"], timeout=timeout,
               interval=0.2)


class TestSlackFaults:
    def test_run_proceeds_through_rate_limits_errors_and_slowness(self, fresh):
        """With 429s, 500s and slow answers on every Slack write, the message ends correct and no step runs twice."""
        world = fresh
        fake, store = world["fake"], world["store"]
        rounds = 2 if FULL else 1
        try:
            storm_of_faults(fake, rounds)
            run_id, ts = start(world)
            if FULL:
                storm_of_faults(fake, rounds)
            ready_for_approval(world, run_id, ts)
            # A refused click's ephemeral answer arrives through the faults too.
            storm_of_faults(fake, 1)
            before = len(fake.ephemerals(user=ALICE))
            click(world, ts, ALICE, "approve")  # the requester may not approve
            wait_until(lambda: len(fake.ephemerals(user=ALICE)) > before, timeout=30)
            assert "cannot approve" in fake.ephemerals(user=ALICE)[-1]["text"]
            approve(world, run_id, ts)
            for name in ("maintenance_on", "migrate", "deploy", "smoke", "maintenance_off"):
                if FULL:
                    storm_of_faults(fake, rounds)
                run_step(world, run_id, ts, name)
            wait_until(lambda: store.get(run_id).status.value == "monitoring", timeout=30)
            shows_latest(world, run_id, ts)
        finally:
            fake.clear_faults()
        run = store.get(run_id)
        for step in run.steps:
            assert step.attempt == 1 and len(step_starts(store, run_id, step.name)) == 1, step.name
        assert [m["ts"] for m in fake.channel_messages(PROD_CHANNEL)].count(ts) == 1
        assert sum(1 for c in fake.calls_to("chat.update") if c.injected) >= 3 * rounds
        assert "Traceback" not in world["bot"].logs()

    def test_message_catches_up_after_slack_gives_up(self, fresh):
        """When chat.update fails beyond every retry, the message still catches up by itself, with no further click."""
        world = fresh
        fake, store = world["fake"], world["store"]
        run_id, ts = start(world)
        settle(world, ts)
        fake.inject("chat.update", status=500, times=6)  # more than the client's 3 retries
        click(world, ts, ALICE, f"checklist:{MANUAL_ITEMS[0]}")
        wait_until(lambda: MANUAL_ITEMS[0] in store.get(run_id).checklist)
        wait_until(lambda: len([c for c in fake.calls_to("chat.update") if c.injected]) >= 4, timeout=30)
        assert f"checklist:{MANUAL_ITEMS[0]}" in blocks_text(world, ts)  # Slack still shows the old version
        wait_until(lambda: "give up" in world["bot"].logs() or "incomplete" in world["bot"].logs(), timeout=30)
        time.sleep(0.2)
        fake.clear_faults()
        shows_latest(world, run_id, ts, timeout=20)
        assert f"checklist:{MANUAL_ITEMS[0]}" not in blocks_text(world, ts)
        assert json.dumps(message(world, ts)["blocks"][-1]).count(f"v{store.get(run_id).version} ") == 1
