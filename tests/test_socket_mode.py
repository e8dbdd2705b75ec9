"""Socket Mode end to end: `serve --socket-mode` against a local apps.connections.open and a WebSocket server here."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.server import ServerConnection, serve

from bot.devtools.slack.server import FakeSlack
from tests.harness import (
    ALICE,
    BOT_TOKEN,
    STAGING_CHANNEL,
    BotProcess,
    base_config,
    load_factor,
    wait_until,
    write_config,
)

APP_TOKEN = "xapp-1-A0DEV-1234-socketmodetesttoken"


class SocketModeEndpoint:
    """Slack's Socket Mode WebSocket, here: says hello to each connection, sends envelopes, collects what comes back."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connections: list[ServerConnection] = []
        self._server = serve(self._handle, "127.0.0.1", 0)
        port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/link/?ticket={uuid.uuid4().hex}&app_id=A0DEV"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        connection.send(json.dumps({"type": "hello", "num_connections": 1,
                                    "debug_info": {"host": "devslack", "approximate_connection_time": 18060},
                                    "connection_info": {"app_id": "A0DEV"}}))
        for message in connection:
            self.received.put(json.loads(message))

    def send(self, envelope: dict[str, Any]) -> None:
        self.connections[-1].send(json.dumps(envelope))

    def reply_to(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """The bot's acknowledgement of one envelope (other frames it sent meanwhile are dropped)."""
        deadline = time.monotonic() + timeout * load_factor()
        while time.monotonic() < deadline:
            try:
                message = self.received.get(timeout=0.2)
            except queue.Empty:
                continue
            if message.get("envelope_id") == envelope_id:
                return message
        raise AssertionError(f"no ack for envelope {envelope_id}")

    def stop(self) -> None:
        self._server.shutdown()


def slash_envelope(fake: FakeSlack, user: str, channel: str, text: str) -> dict[str, Any]:
    """What Slack sends over the socket for `/migrate <text>`: the slash command's fields as the payload."""
    return {
        "envelope_id": str(uuid.uuid4()),
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": {
            "token": "devslack-verification-token", "team_id": fake.team_id, "team_domain": "devslack",
            "channel_id": channel, "channel_name": "staging", "user_id": user, "user_name": "alice",
            "command": "/migrate", "text": text, "api_app_id": "A0DEV", "is_enterprise_install": "false",
            "response_url": fake.response_url(channel, user), "trigger_id": fake.issue_trigger_id(user),
        },
    }


@pytest.fixture
def world(tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[dict[str, Any]]:
    fake = FakeSlack(token=BOT_TOKEN, app_token=APP_TOKEN).start()
    fake.add_user(ALICE, "alice")
    endpoint = SocketModeEndpoint()
    fake.socket_mode_url = endpoint.url
    bot = BotProcess(config_path=write_config(tmp_path / "env.yml", base_config()), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=key_prefix, log_path=tmp_path / "bot.log",
                     extra_env={"SLACK_APP_TOKEN": APP_TOKEN})
    yield {"fake": fake, "endpoint": endpoint, "bot": bot, "redis": redis.Redis.from_url(redis_url),
           "prefix": key_prefix}
    bot.stop()
    endpoint.stop()
    fake.stop()


def start_socket_mode(bot: BotProcess) -> None:
    log = open(bot.log_path, "ab")  # noqa: SIM115 - closed with the process
    bot.proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--socket-mode"], env=bot.env,
                                stdout=log, stderr=subprocess.STDOUT)


class TestSocketMode:
    def test_slash_command_over_the_socket_is_acked_and_answered(self, world: dict[str, Any]) -> None:
        """The bot opens the connection with its app token, acks each envelope by its id with the answer, and a
        run started over the socket posts its message to the channel."""
        fake, endpoint, bot = world["fake"], world["endpoint"], world["bot"]
        start_socket_mode(bot)
        wait_until(lambda: endpoint.connections, timeout=20)
        opened = fake.calls_to("apps.connections.open")
        assert len(opened) == 1 and opened[0].ok
        wait_until(lambda: "serving over Socket Mode" in bot.logs(), timeout=10)

        help_envelope = slash_envelope(fake, ALICE, STAGING_CHANNEL, "help")
        endpoint.send(help_envelope)
        ack = endpoint.reply_to(help_envelope["envelope_id"])
        assert ack["payload"]["response_type"] == "ephemeral"
        assert "*Usage:* `/migrate <env>" in ack["payload"]["text"]

        before = len(fake.channel_messages(STAGING_CHANNEL))
        start_envelope = slash_envelope(fake, ALICE, STAGING_CHANNEL, "staging")
        endpoint.send(start_envelope)
        assert endpoint.reply_to(start_envelope["envelope_id"])["envelope_id"] == start_envelope["envelope_id"]
        wait_until(lambda: len(fake.channel_messages(STAGING_CHANNEL)) > before, timeout=20)
        posted = fake.channel_messages(STAGING_CHANNEL)[-1]
        assert "staging" in json.dumps(posted) and "<@U0ALICE>" in json.dumps(posted)
        assert world["redis"].keys(world["prefix"] + "*"), "the run was stored"
        assert "will be unused" not in bot.logs()

    def test_a_refused_app_token_is_one_line_and_starts_nothing(self, world: dict[str, Any]) -> None:
        """Slack refusing the app token: one line naming SLACK_APP_TOKEN, exit 1, no scheduler, no leader lock."""
        bot = world["bot"]
        bot.env["SLACK_APP_TOKEN"] = "xapp-1-A0DEV-9999-revoked"
        start_socket_mode(bot)
        assert bot.proc is not None
        assert bot.proc.wait(30 * load_factor()) == 1
        lines = [line for line in bot.logs().splitlines() if line.strip()]
        assert lines[-1] == ("migrate-bot: Slack refused the Socket Mode connection (apps.connections.open: "
                             "invalid_auth): check SLACK_APP_TOKEN (an app-level xapp- token with connections:write)")
        assert "Traceback" not in bot.logs() and "Scheduler started" not in bot.logs()
        assert "revoked" not in bot.logs()
        assert world["redis"].keys(world["prefix"] + "*") == []
        assert world["endpoint"].connections == []
