"""R4: a throwaway redis-server (AOF, fsync always) restarted mid-run loses no run; with it down, every entry point
says so clearly and starts nothing. Never touches the machine's shared Redis."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.store.runs import RunStore, connect
from tests.chaos import ThrowawayRedis
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

ITEMS = ["staging_tested", "rollback_plan", "window_scheduled"]


@pytest.fixture
def rig(tmp_path):
    server = ThrowawayRedis(tmp_path / "redis").start()
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    (tmp_path / "none").mkdir()
    config = base_config(migrate={"migrations_dir": str(tmp_path / "none")})
    bot = BotProcess(config_path=write_config(tmp_path / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=server.url, key_prefix="chaos:", log_path=tmp_path / "bot.log").start()
    store = RunStore(connect(server.url), prefix="chaos:")
    sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
    yield {"server": server, "fake": fake, "bot": bot, "store": store, "sender": sender}
    bot.stop()
    fake.stop()
    server.stop()


def start_run(rig):
    store = rig["store"]
    assert rig["sender"].slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
    run = wait_until(lambda: store.active_run("prod"))
    ts = wait_until(lambda: store.get(run.id).message_ts)
    return run.id, ts


class TestRedisRestart:
    def test_restart_mid_run_loses_nothing(self, rig):
        """A SIGKILLed and restarted Redis brings back the run, its lock and its whole audit trail; the run goes on."""
        fake, store, sender, server = rig["fake"], rig["store"], rig["sender"], rig["server"]
        run_id, ts = start_run(rig)
        for item in ITEMS[:2]:
            sender.click(ALICE, channel_id=PROD_CHANNEL, message=fake.message(PROD_CHANNEL, ts),
                         action_id=f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        before, audit = store.get(run_id), [(e.id, e.action) for e in store.audit_entries(run_id)]
        server.kill()
        server.start()
        assert store.get(run_id) == before
        assert [(e.id, e.action) for e in store.audit_entries(run_id)] == audit
        assert store.active_run("prod").id == run_id
        wait_until(lambda: httpx.get(rig["bot"].url + "/healthz").status_code == 200, timeout=10)
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=fake.message(PROD_CHANNEL, ts),
                     action_id=f"checklist:{ITEMS[2]}")
        wait_until(lambda: ITEMS[2] in store.get(run_id).checklist, timeout=10)
        body = sender.slash(BOB, "prod", channel_id=PROD_CHANNEL).json()
        assert "already active in prod" in body["text"]  # the lock survived too


class TestRedisDown:
    def test_every_entry_point_refuses_clearly(self, rig):
        """With Redis down: slash command and button answer 'nothing was changed', /healthz is 503, the CLI exits 1."""
        fake, sender, server, bot = rig["fake"], rig["sender"], rig["server"], rig["bot"]
        run_id, ts = start_run(rig)
        shown = fake.message(PROD_CHANNEL, ts)
        server.kill()
        response = sender.slash(BOB, "staging", channel_id=PROD_CHANNEL)
        assert response.status_code == 200
        assert "state store (Redis) is unavailable — nothing was changed" in response.json()["text"]
        response = sender.slash(ALICE, f"status {run_id}", channel_id=PROD_CHANNEL)
        assert "nothing was changed" in response.json()["text"]
        before = len(fake.ephemerals(user=ALICE))
        assert sender.click(ALICE, channel_id=PROD_CHANNEL, message=shown,
                            action_id=f"checklist:{ITEMS[0]}").status_code == 200
        wait_until(lambda: len(fake.ephemerals(user=ALICE)) > before, timeout=15)
        assert "nothing was changed" in fake.ephemerals(user=ALICE)[-1]["text"]
        health = httpx.get(bot.url + "/healthz")
        assert health.status_code == 503 and health.json()["redis"] == "unreachable"
        for args in (("status",), ("status", "prod"), ("cancel", run_id)):
            cli = bot.cli(*args, "--as", ALICE, timeout=30)
            lines = [line for line in cli.stderr.splitlines() if line.strip()]
            assert cli.returncode != 0, (args, cli.stdout, cli.stderr)
            assert len(lines) == 1 and "unavailable" in lines[0] and "nothing was changed" in lines[0], cli.stderr
            assert "Traceback" not in cli.stderr + cli.stdout
        assert "Traceback" not in bot.logs()
        # Nothing was started or changed while it was down.
        server.start()
        store = rig["store"]
        assert store.active_run("staging") is None
        assert ITEMS[0] not in store.get(run_id).checklist
        assert json.dumps(fake.message(PROD_CHANNEL, ts)["blocks"]).count("checklist:") >= 5
