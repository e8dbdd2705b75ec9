"""Test harness: run the real bot as a subprocess against the Slack stand-in and a test Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-0000-bot-token"

# Users of the test workspace.
ALICE, BOB, CAROL, DAVE, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0MALLORY"
PROD_CHANNEL, STAGING_CHANNEL = "C0PROD", "C0STAGING"


# The seed's maintenance timeline compressed to seconds, and the schedule policy relaxed, for tests and P4:
# announce 60 s ahead, "24 h" reminder 4 s before, "1 h" warning 2 s before, status every 1 s.
COMPRESSED_CALENDAR: dict[str, Any] = {
    "allowed_weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "earliest_start": "00:00",
    "latest_end": "24:00",
    "min_notice_s": 0,
    "holiday_country": None,
    "announce_before_s": 60,
    "reminder_before_s": 4,
    "final_before_s": 2,
    "status_every_s": 1,
    "reminder_grace_s": 5,
    "final_grace_s": 5,
    "start_grace_s": 5,
    "status_grace_s": 5,
    "complete_grace_s": 30,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_config(**prod_overrides: Any) -> dict[str, Any]:
    """Two environments: alice and bob may start prod runs; bob, carol, dave (and group S0DBA) may approve."""
    prod: dict[str, Any] = {
        "channel": PROD_CHANNEL,
        "requesters": [ALICE, BOB, "S0DEVS"],
        "approvers": [BOB, CAROL, DAVE, "S0DBA"],
        "approvals_required": 1,
    }
    prod.update(prod_overrides)
    return {
        "environments": {
            "prod": prod,
            "staging": {"channel": STAGING_CHANNEL, "requesters": [ALICE, BOB], "approvers": [BOB, CAROL]},
        }
    }


# A scripted client clicks far faster than a person, for minutes on one bot: module-scoped worlds lift the
# per-user rate limit (tests/test_chaos_limits.py tests the limit itself, at its defaults).
SCRIPTED_LIMITS: dict[str, Any] = {"burst": 10_000, "per_minute": 100_000}


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class BotProcess:
    """`migrate-bot serve` in a subprocess; logs go to a file the test can read."""

    def __init__(self, *, config_path: Path, slack_api_url: str, redis_url: str, key_prefix: str,
                 log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRATE_BOT_"))},
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack_api_url,
            "REDIS_URL": redis_url,
            "MIGRATE_BOT_CONFIG": str(config_path),
            "MIGRATE_BOT_KEY_PREFIX": key_prefix,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20) -> BotProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bot exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"bot did not start: {self.logs()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)


def load_factor() -> float:
    """How much slower than an idle machine this one is now: the 1-minute load per core, between 1 and 4.

    Deadlines in the tests are derived from the bot's configured timeouts; on a machine running a second suite
    they stretch by this factor instead of failing (``MIGRATE_BOT_TEST_SLOWDOWN`` pins it).
    """
    pinned = os.environ.get("MIGRATE_BOT_TEST_SLOWDOWN")
    if pinned:
        return max(1.0, float(pinned))
    try:
        per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 1.0
    return min(4.0, max(1.0, per_core))


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; the deadline stretches with ``load_factor()``."""
    deadline = time.monotonic() + timeout * load_factor()
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
