"""Issue 11, holes 7 and 8: one client cannot freeze the bot, exhaust its memory, or delay other users.

Over real HTTP to the real bot: unsigned and oversized bodies, floods of slow commands and of forged clicks.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from bot.devslack.client import SlackSender
from bot.devslack.server import FakeSlack
from tests.harness import (
    ALICE,
    BOT_TOKEN,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def limits_world(tmp_path_factory, redis_url):
    tmp = tmp_path_factory.mktemp("limits")
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    (tmp / "none").mkdir()
    prefix = f"test:limits:{time.time_ns()}:"
    config = base_config(migrate={"migrations_dir": str(tmp / "none")})
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
    yield {"bot": bot, "fake": fake, "sender": sender, "tmp": tmp}
    sender.close()
    bot.stop()
    fake.stop()


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmRSS now, VmHWM the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _raw_post(bot: BotProcess, *, headers: dict[str, str], chunks, timeout: float = 30) -> tuple[int, int]:
    """POST over a raw socket, sending `chunks` until the bot answers or closes. Returns (status, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", bot.port), timeout=timeout)
    head = "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((head + "\r\n").encode())
    sent = 0
    answer = b""
    try:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the bot has answered: stop sending, as a well-behaved client would
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the bot closed the connection: it reads no more
            sent += len(chunk)
        deadline = time.monotonic() + timeout
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except OSError:
                break
            if not data:
                break
            answer += data
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1]), sent


def _chunked(total: int, size: int = 64 * 1024):
    piece = b"x" * size
    for _ in range(total // size):
        yield b"%x\r\n" % size + piece + b"\r\n"
    yield b"0\r\n\r\n"


class TestHostileBodies:
    def test_unsigned_300kb_post_is_refused_fast_and_healthz_keeps_answering(self, limits_world):
        """Hole 7: a 300 KB unsigned body (shaped to make a backtracking redaction pattern crawl) gets 401 at
        once, /healthz answers throughout, and the body never reaches the log."""
        bot = limits_world["bot"]
        marker = "zq" + "a" * 300_000 + "://hostile"
        idle = min(_timed(lambda: httpx.get(bot.url + "/healthz", timeout=10)) for _ in range(5))
        health: list[float] = []
        done = threading.Event()

        def poll_health() -> None:
            while not done.is_set():
                health.append(_timed(lambda: httpx.get(bot.url + "/healthz", timeout=30).raise_for_status()))

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            for _ in range(3):
                started = time.monotonic()
                response = httpx.post(bot.url + "/slack/events", content=marker.encode(), timeout=30,
                                      headers={"Content-Type": "application/x-www-form-urlencoded",
                                               "X-Slack-Request-Timestamp": str(int(time.time())),
                                               "X-Slack-Signature": "v0=" + "0" * 64})
                assert response.status_code == 401
                assert time.monotonic() - started < 2.0
            wait_until(lambda: len(health) >= 3, timeout=10)
        finally:
            done.set()
            poller.join()
        assert max(health) < max(1.0, 20 * idle), (idle, health)
        assert "hostile" not in bot.logs() and "aaaaaaaaaaaaaaaa" not in bot.logs()
        assert httpx.get(bot.url + "/healthz", timeout=5).status_code == 200

    def test_declared_oversized_body_is_refused_before_it_is_read(self, limits_world):
        """A 2 MiB Content-Length is answered 413 from the headers alone: not one byte of the body is sent."""
        bot = limits_world["bot"]
        status, sent = _raw_post(bot, headers={"Content-Type": "application/x-www-form-urlencoded",
                                               "Content-Length": str(2 * MIB)}, chunks=[])
        assert status == 413 and sent == 0

    def test_oversized_bodies_do_not_grow_memory(self, limits_world):
        """2 MiB declared, and 16 MiB chunked without a length: each gets 413, the bot stops reading near the
        1 MiB cap, and its peak RSS grows by a few MB at most."""
        bot = limits_world["bot"]
        assert bot.proc is not None
        pid = bot.proc.pid
        peak_before = _status(pid, "VmHWM")
        for _ in range(3):
            status, _ = _raw_post(bot, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                "Content-Length": str(2 * MIB)},
                                  chunks=(b"x" * (64 * 1024) for _ in range(32)))
            assert status == 413
            status, sent = _raw_post(bot, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                   "Transfer-Encoding": "chunked"}, chunks=_chunked(16 * MIB))
            assert status == 413
            assert sent < 8 * MIB, sent  # cut off: the rest of the 16 MiB was never taken in
        growth_kib = _status(pid, "VmHWM") - peak_before
        assert growth_kib < 6 * 1024, f"peak RSS grew by {growth_kib} KiB"
        assert httpx.get(bot.url + "/healthz", timeout=5).status_code == 200
        assert "xxxxxxxxxxxxxxxx" not in bot.logs()

    def test_a_signed_request_under_the_cap_still_works(self, limits_world):
        response = limits_world["sender"].slash(ALICE, "help", channel_id=PROD_CHANNEL)
        assert response.status_code == 200 and "/migrate" in response.json()["text"]


def _timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started
