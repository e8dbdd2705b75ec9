"""Issue 11, holes 7 and 8: one client cannot freeze the bot, exhaust its memory, or delay other users.

Over real HTTP to the real bot: unsigned and oversized bodies, floods of slow commands and of forged clicks.
"""

from __future__ import annotations

import concurrent.futures
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.prisma.native import NativeRunner
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    MALLORY,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

MIB = 1 << 20


LIVE_CHANNEL = "C0LIVE"


@pytest.fixture(scope="module")
def limits_world(tmp_path_factory, redis_url, pg_admin_url):
    tmp = tmp_path_factory.mktemp("limits")
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    (tmp / "none").mkdir()
    db_name = f"limits_{time.time_ns()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    live_url = pg_admin_url.rsplit("/", 1)[0] + "/" + db_name
    NativeRunner(live_url).deploy(tmp / "none")  # creates _prisma_migrations, which the check reads
    prefix = f"test:limits:{time.time_ns()}:"
    config = base_config(migrate={"migrations_dir": str(tmp / "none")})
    config["environments"]["live"] = {
        "channel": LIVE_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
        "database_url": live_url,
        "migrate": {"migrations_dir": str(tmp / "none")}}
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    from bot.store.runs import RunStore, connect

    sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
    yield {"bot": bot, "fake": fake, "sender": sender, "tmp": tmp, "db_name": db_name, "admin": pg_admin_url,
           "live_url": live_url,
           "store": RunStore(connect(redis_url), prefix=prefix)}
    sender.close()
    bot.stop()
    fake.stop()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    store = RunStore(connect(redis_url), prefix=prefix)
    for key in store.redis.scan_iter(match=prefix + "*"):
        store.redis.delete(key)


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


def _backends(world) -> int:
    with psycopg.connect(world["admin"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (world["db_name"],)).fetchone()
    return int(row[0]) if row else 0


def _ack_time(sender: SlackSender, user: str, text: str) -> float:
    started = time.monotonic()
    response = sender.slash(user, text, channel_id=PROD_CHANNEL)
    assert response.status_code == 200
    return time.monotonic() - started


class TestSlowCommandsAfterAck:
    def test_a_check_storm_delays_no_one_and_opens_few_connections(self, limits_world):
        """Hole 8: 40 simultaneous `/migrate check live` from one user while the live database is slow (a lock
        held on _prisma_migrations) are each acked at once; another user's `/migrate status` is acked within
        Slack's budget; the live database sees a bounded number of backends; every checker gets the result
        afterwards, ephemerally."""
        world = limits_world
        sender, fake = world["sender"], world["fake"]
        idle = min(_ack_time(sender, BOB, "status") for _ in range(5))
        before = len([e for e in fake.ephemerals(user=ALICE) if "Pre-migration check for live" in e["text"]])
        blocker = psycopg.connect(world["live_url"])
        blocker.execute("LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE")  # held until rollback
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=40)
        try:
            storm = [pool.submit(_ack_time, SlackSender(sender.bot_url, SIGNING_SECRET, fake=fake), ALICE,
                                 "check live") for _ in range(40)]
            storm_acks = [f.result(timeout=10) for f in storm]
            wait_until(lambda: _backends(world) >= 2, timeout=10)  # the blocker, and the check waiting on it
            peak = _backends(world)
            during = []
            for _ in range(5):
                during.append(_ack_time(sender, BOB, "status"))
                peak = max(peak, _backends(world))
        finally:
            blocker.rollback()
            blocker.close()
            pool.shutdown(wait=True)
        assert max(storm_acks) < 3.0, storm_acks
        assert max(during) < 3.0 and max(during) <= 2 * idle + 0.5, (idle, during)
        # The blocker plus one flight for the environment (Postgres.check's connection is already closed).
        assert peak - 1 <= 2, f"{peak - 1} check connections on the live database during the storm"
        # Every check is answered through its response_url once the (shared) check has run.
        wait_until(lambda: len([e for e in fake.ephemerals(user=ALICE)
                                if "Pre-migration check for live" in e["text"]]) >= before + 40, timeout=30)
        assert len([e for e in fake.ephemerals(user=ALICE) if "Checking live" in e["text"]]) >= 40

    def test_a_flood_of_commands_is_rate_limited_per_user(self, limits_world):
        """A user past their budget is told to slow down at once; others are unaffected."""
        world = limits_world
        sender = world["sender"]
        texts = [sender.slash(MALLORY, "help", channel_id=PROD_CHANNEL).json()["text"] for _ in range(200)]
        assert any("faster than the bot accepts" in t for t in texts)
        assert "/migrate" in sender.slash(BOB, "help", channel_id=PROD_CHANNEL).json()["text"]


def _forged(run, action_id: str) -> dict:
    return {"ts": run.message_ts, "blocks": [{"type": "actions", "block_id": "forged", "elements": [
        {"type": "button", "action_id": action_id, "value": f"{run.id}|{run.version}",
         "text": {"type": "plain_text", "text": "x"}}]}]}


class TestForgedClickFlood:
    def test_400_forged_clicks_leave_one_audit_entry_and_do_not_delay_the_requester(self, limits_world):
        """Hole 8: 400 forged Approve clicks by an outsider give at most a handful of `denied` audit entries and
        thread lines, the outsider is answered ephemerally, and the requester's next click is handled promptly."""
        world = limits_world
        sender, fake, store = world["sender"], world["fake"], world["store"]
        assert sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
        run = wait_until(lambda: (r := store.active_run("prod")) and r.message_ts and r)
        thread_ts = run.message_ts

        def tick(item: str) -> float:
            current = store.get(run.id)
            started = time.monotonic()
            sender.click(BOB if item == "script_reviewed" else ALICE, channel_id=PROD_CHANNEL,
                         message=_forged(current, f"checklist:{item}"),
                         action_id=f"checklist:{item}")
            wait_until(lambda: item in store.get(run.id).checklist, timeout=30)
            return time.monotonic() - started

        idle = tick("staging_tested")
        shown = _forged(store.get(run.id), "approve")
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(lambda _: SlackSender(sender.bot_url, SIGNING_SECRET, fake=fake).click(
                MALLORY, channel_id=PROD_CHANNEL, message=shown, action_id="approve").status_code, range(400)))
        assert codes == [200] * 400
        after_storm = tick("rollback_plan")
        assert after_storm < 3.0 and after_storm <= 2 * idle + 1.0, (idle, after_storm)
        wait_until(lambda: any("🚫" in e["text"] for e in fake.ephemerals(user=MALLORY)), timeout=30)
        fake.wait_idle(quiet_s=1.0, timeout=30)
        denied = [e for e in store.audit_entries(run.id) if e.outcome == "denied"]
        assert 1 <= len(denied) <= 3 and all(e.actor == MALLORY and e.action == "run.approve" for e in denied)
        refusals_in_thread = [m for m in fake.thread(PROD_CHANNEL, thread_ts) if "🚫" in m.get("text", "")]
        assert 1 <= len(refusals_in_thread) <= 3, len(refusals_in_thread)
        assert store.get(run.id).approvals == []
