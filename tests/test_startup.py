"""`migrate-bot serve` start-up as a subprocess: every setting checked first, one line per refusal, nothing started."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bot.devtools.slack.server import FakeSlack
from tests.harness import BOT_TOKEN, BotProcess, base_config, free_port, load_factor, wait_until, write_config

REDIS_PASSWORD = "startup-redis-pw-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    yield slack
    slack.stop()


def make_bot(tmp_path: Path, fake: FakeSlack, redis_url: str, key_prefix: str, config: dict[str, Any] | None = None,
             **extra_env: str) -> BotProcess:
    return BotProcess(config_path=write_config(tmp_path / "env.yml", config or base_config()),
                      slack_api_url=fake.base_url, redis_url=redis_url, key_prefix=key_prefix,
                      log_path=tmp_path / "bot.log", extra_env=extra_env)


def run_to_exit(bot: BotProcess, *args: str) -> tuple[int, str]:
    """Run `serve ARGS` to its exit; (exit code, everything it printed)."""
    result = subprocess.run([sys.executable, "-m", "bot", "serve", *args], env=bot.env, capture_output=True,
                            text=True, timeout=60 * load_factor())
    return result.returncode, result.stdout + result.stderr


def keys(redis_url: str, prefix: str) -> list[bytes]:
    return redis.Redis.from_url(redis_url).keys(prefix + "*")


class TestRefusals:
    def test_port_in_use_is_one_line_and_starts_nothing(self, tmp_path, fake, redis_url, key_prefix):
        """The port is bound before anything starts: taken, it is one line, exit 1, no scheduler, no Redis key."""
        bot = make_bot(tmp_path, fake, redis_url, key_prefix)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", bot.port))
            holder.listen(1)
            code, output = run_to_exit(bot, "--host", "127.0.0.1", "--port", str(bot.port))
        assert code == 1
        lines = [line for line in output.splitlines() if line.strip() and " WARNING " not in line]
        assert lines == [f"migrate-bot: cannot listen on 127.0.0.1:{bot.port}: address already in use (another "
                         "process holds it: stop it, or pass --port / set PORT)"]
        assert "serving on" not in output and "Scheduler" not in output
        assert keys(redis_url, key_prefix) == []

    def test_socket_mode_without_app_token_refuses_before_the_scheduler(self, tmp_path, fake, redis_url, key_prefix):
        """A missing SLACK_APP_TOKEN is found first: no scheduler, no leader lock, no heartbeat key."""
        bot = make_bot(tmp_path, fake, redis_url, key_prefix)
        code, output = run_to_exit(bot, "--socket-mode")
        assert code == 2
        assert output.strip() == ("migrate-bot: SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token "
                                  "(xapp-…) with connections:write (Basic Information → App-Level Tokens)")
        assert keys(redis_url, key_prefix) == []

    def test_config_errors_refuse_to_serve_listing_each(self, tmp_path, fake, redis_url, key_prefix):
        """`serve` runs check-config's checks: each error one line, then why it does not start; nothing written."""
        config = base_config(requesters=["U0ALICE"], approvers=["U0ALICE"], approvals_required=3)
        config["environments"]["status"] = config["environments"].pop("staging")
        bot = make_bot(tmp_path, fake, redis_url, key_prefix, config)
        code, output = run_to_exit(bot, "--port", str(bot.port))
        assert code == 2
        path = tmp_path / "env.yml"
        errors = [line for line in output.splitlines() if line.startswith("migrate-bot:")]
        assert errors == [
            f"migrate-bot: {path}: error: environments.prod: approvals_required is 3 but only 1 approver(s) are "
            "listed: no run can ever be approved",
            f"migrate-bot: {path}: error: environments.status: the name 'status' is a /migrate verb, so "
            "`/migrate status` could never start a run here (rename the environment)",
            f"migrate-bot: not starting: 2 errors in {path} (`migrate-bot check-config` lists them)",
        ]
        assert "Traceback" not in output and "serving" not in output
        assert keys(redis_url, key_prefix) == []

    def test_a_port_out_of_range_is_one_line(self, tmp_path, fake, redis_url, key_prefix):
        bot = make_bot(tmp_path, fake, redis_url, key_prefix)
        code, output = run_to_exit(bot, "--port", "99999")
        assert (code, output.strip()) == (2, "migrate-bot: --port must be a number from 1 to 65535, got 99999")

    @pytest.mark.parametrize(("env", "line"), [
        ({"SLACK_BOT_TOKEN": "xoxp-user-token-123456"},
         "SLACK_BOT_TOKEN is not a bot token (it starts with xoxb-; OAuth & Permissions → Bot User OAuth Token)"),
        ({"SLACK_APP_TOKEN": "xoxb-not-an-app-token-1"},
         "SLACK_APP_TOKEN is not an app-level token (it starts with xapp-; Basic Information → App-Level Tokens)"),
        ({"REDIS_URL": "http://:hunter2-secret@127.0.0.1:6379/0"},
         "REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel:// (got http://)"),
        ({"REDIS_URL": "redis+sentinel://:hunter2-secret@/0"},
         "REDIS_URL names no sentinels or no service (expected "
         "redis+sentinel://host:port[,host:port…]/service-name[/db])"),
        ({"REDIS_URL": "redis://:hunter2-secret@/0"},
         "REDIS_URL names no host (expected redis://HOST:PORT/DB)"),
        ({"PORT": "70000"}, "PORT must be a number from 1 to 65535, got '70000'"),
        ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL must be an http(s) URL like https://slack.com/api/"),
    ])
    def test_each_bad_setting_is_one_line_without_its_value(self, tmp_path, fake, redis_url, key_prefix, env, line):
        bot = make_bot(tmp_path, fake, redis_url, key_prefix, **env)
        code, output = run_to_exit(bot)
        assert code == 2
        assert output.strip() == f"migrate-bot: {line}"
        assert "hunter2" not in output and "user-token" not in output and "not-an-app" not in output
        assert keys(redis_url, key_prefix) == []


class TestStartup:
    def test_serving_is_logged_after_the_bind_and_without_bolt_noise(self, tmp_path, fake, redis_url, key_prefix):
        """Once "serving on" is in the log the port answers; stderr carries no Bolt "token will be unused"."""
        bot = make_bot(tmp_path, fake, redis_url, key_prefix)
        bot.proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port",
                                     str(bot.port)], env=bot.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        try:
            assert bot.proc.stderr is not None
            stderr: list[str] = []
            deadline = time.monotonic() + 30 * load_factor()
            while time.monotonic() < deadline:
                line = bot.proc.stderr.readline()
                if not line:
                    break
                stderr.append(line)
                if "serving on" in line:
                    with socket.create_connection(("127.0.0.1", bot.port), timeout=2):
                        pass  # the port accepts the moment the line is written
                    break
            assert any(f"serving on 127.0.0.1:{bot.port}" in line for line in stderr), "".join(stderr)
            assert httpx.get(bot.url + "/healthz", timeout=5).json()["redis"] == "ok"
        finally:
            bot.stop()
        assert bot.proc.stderr is not None
        rest = bot.proc.stderr.read()
        everything = "".join(stderr) + rest
        assert "will be unused" not in everything
        assert "Traceback" not in everything

    def test_redis_down_then_up_is_named_once_and_waits(self, tmp_path, fake, key_prefix):
        """Redis not answering at start: one line naming its URL (password hidden), no scheduler until it answers,
        then the bot starts by itself; no line every few seconds meanwhile."""
        server_bin = shutil.which("redis-server")
        if server_bin is None:
            pytest.skip("redis-server is not installed")
        port = free_port()
        url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
        bot = make_bot(tmp_path, fake, url, key_prefix)
        bot.proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port",
                                     str(bot.port)], env=bot.env, stdout=open(bot.log_path, "ab"),  # noqa: SIM115
                                    stderr=subprocess.STDOUT)
        server: subprocess.Popen[bytes] | None = None
        try:
            named = f"Redis at redis://:***@127.0.0.1:{port}/0 is not answering (ConnectionError)"
            wait_until(lambda: named in bot.logs(), timeout=20)
            for _ in range(3):  # the outage lasts these three refused probes (the port is bound, nothing serves)
                with pytest.raises(httpx.HTTPError):
                    httpx.get(bot.url + "/healthz", timeout=1)
            assert bot.proc.poll() is None and "Scheduler" not in bot.logs()
            server = subprocess.Popen([server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: _healthy(bot), timeout=60)
            logs = bot.logs()
            assert logs.count(named) == 1
            assert f"Redis at redis://:***@127.0.0.1:{port}/0 answers after" in logs
            assert logs.index("answers after") < logs.index("Scheduler started") < logs.index("serving on")
            assert REDIS_PASSWORD not in logs
            assert "heartbeat failed" not in logs and "wake-up channel" not in logs
        finally:
            bot.stop()
            if server is not None:
                server.terminate()
                server.wait(10)


    @pytest.mark.parametrize("given", ["wrong-password-value-42", None])
    def test_redis_refusing_the_credentials_is_one_line_not_a_wait(self, tmp_path, fake, key_prefix, given):
        """A wrong or missing password never fixes itself: one line naming the URL (password hidden), exit 2, nothing
        started, instead of waiting for an outage to end."""
        server_bin = shutil.which("redis-server")
        if server_bin is None:
            pytest.skip("redis-server is not installed")
        port = free_port()
        server = subprocess.Popen([server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: redis.Redis(port=port, password=REDIS_PASSWORD, socket_timeout=1).ping(), timeout=20)
            url = f"redis://:{given}@127.0.0.1:{port}/0" if given else f"redis://127.0.0.1:{port}/0"
            code, printed = run_to_exit(make_bot(tmp_path, fake, url, key_prefix),
                                        "--host", "127.0.0.1", "--port", str(free_port()))
            assert code == 2, printed
            shown = f"redis://:***@127.0.0.1:{port}/0" if given else f"redis://127.0.0.1:{port}/0"
            assert f"Redis at {shown} refused the credentials: fix the password (or user) in REDIS_URL" in printed
            assert "Traceback" not in printed and "Scheduler" not in printed and "not answering" not in printed
            assert given is None or given not in printed
            assert redis.Redis(port=port, password=REDIS_PASSWORD).keys(key_prefix + "*") == []
        finally:
            server.terminate()
            server.wait(10)


def _healthy(bot: BotProcess) -> bool:
    try:
        return httpx.get(bot.url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
