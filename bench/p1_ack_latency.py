"""P1: ack latency of signed slash commands and button clicks, our bot (A) vs a bare ack-only Bolt app (B)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REDIS_URL,
    ROOT,
    create_db,
    drop_db,
    median,
    percentile,
    print_table,
    ratio,
    say,
    size_args,
    write_results,
)

CONCURRENCY = 50


# ------------------------------------------------------------------------------ FakeSlack in its own process
# (in the driver's process its threads would take the GIL from the load generator, and only A calls it)

def _fake_slack_process(conn: Any, token: str) -> None:
    from bot.devtools.slack.server import FakeSlack
    from tests.harness import ALICE, BOB, CAROL, DAVE, MALLORY, PROD_CHANNEL

    fake = FakeSlack(token=token).start()
    for uid, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave"), (MALLORY, "mallory")):
        fake.add_user(uid, name)
    fake.add_usergroup("S0DBA", "dba", [DAVE])
    fake.add_usergroup("S0DEVS", "devs", [])
    conn.send(fake.base_url)
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            fake.stop()
            conn.send("ok")
            return
        if cmd == "last_message":
            msgs = fake.channel_messages(PROD_CHANNEL)
            conn.send(fake.message(PROD_CHANNEL, msgs[-1]["ts"]) if msgs else None)
        elif cmd == "calls":
            conn.send(len(fake.calls))
        elif cmd == "reset_calls":  # keep memory flat over thousands of clicks
            fake.reset_calls()
            conn.send("ok")


class FakeSlackProcess:
    def __init__(self, token: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_fake_slack_process, args=(child, token), daemon=True)
        self.proc.start()
        self.base_url: str = self.conn.recv()

    def ask(self, cmd: str) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 60) -> None:
        """Wait until A's background work (chat.update / postEphemeral after clicks) has stopped."""
        deadline = time.monotonic() + timeout_s
        last, since = self.ask("calls"), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.ask("calls")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
        self.ask("reset_calls")

    def stop(self) -> None:
        try:
            self.ask("stop")
        except (OSError, EOFError):
            pass
        self.proc.join(5)


# ------------------------------------------------------------------------------ request bodies


def capture_bodies(kind: str, n: int, message: dict[str, Any] | None) -> list[tuple[bytes, str]]:
    """n Slack-shaped request bodies (unsigned; signed at send time), built by the project's SlackSender."""
    from bot.devtools.slack.client import SlackSender
    from tests.harness import ALICE, PROD_CHANNEL, SIGNING_SECRET

    captured: list[tuple[bytes, str]] = []

    class Capture(SlackSender):
        def post_raw(self, body: str, content_type: str, **_: Any) -> Any:  # type: ignore[override]
            captured.append((body.encode(), content_type))
            return None

    sender = Capture("http://unused", SIGNING_SECRET)
    items = ["staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"]
    for i in range(n):
        if kind == "slash status":
            sender.slash(ALICE, "status", channel_id=PROD_CHANNEL)
        elif kind == "slash unknown env":
            sender.slash(ALICE, "prdo", channel_id=PROD_CHANNEL)
        else:
            assert message is not None
            sender.click(ALICE, channel_id=PROD_CHANNEL, message=message, action_id=f"checklist:{items[i % 5]}")
    sender.close()
    return captured


# ------------------------------------------------------------------------------ load generator (raw HTTP/1.1)


async def load(port: int, bodies: list[tuple[bytes, str]], secret: str) -> tuple[list[float], int]:
    """Send all bodies over CONCURRENCY keep-alive connections; returns (latencies in ms, non-200 count)."""
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(secret)
    queue = list(reversed(bodies))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                body, ctype = queue.pop()
                ts = str(int(time.time()))
                sig = verifier.generate_signature(timestamp=ts, body=body.decode())
                head = (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nX-Slack-Request-Timestamp: {ts}\r\n"
                        f"X-Slack-Signature: {sig}\r\n\r\n").encode()
                started = time.perf_counter()
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
                if b" 200 " not in status_line:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, errors


def wait_http(url: str, timeout_s: float = 20) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="2 rounds x 100 requests per kind and side (seconds)",
              full_help="4 rounds x 500 = 2,000 requests per kind and side")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--per-round", type=int)
    parser.add_argument("--bare-process-before-response", action="store_true",
                        help="run B with the bot's App option process_before_response=True (default: Bolt's default)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 4)
    per_round = args.per_round or (100 if args.quick else 500)

    import psycopg
    import redis

    from bot.store.runs import RunStore, connect
    from tests.harness import (
        ALICE,
        BOT_TOKEN,
        PROD_CHANNEL,
        SIGNING_SECRET,
        BotProcess,
        base_config,
        free_port,
        write_config,
    )

    tmp = Path(tempfile.mkdtemp(prefix="bench-p1-"))
    prefix = f"bench:p1:{uuid.uuid4().hex[:8]}:"
    dbname = f"bench_p1_{uuid.uuid4().hex[:8]}"
    db_url = create_db(dbname)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE "User" (id serial primary key, email text)')
    fake = FakeSlackProcess(BOT_TOKEN)
    bare: subprocess.Popen[bytes] | None = None
    bot: BotProcess | None = None
    try:
        (tmp / "migrations").mkdir()
        config = base_config(database_url=db_url,
                             backup={"method": "pg_dump", "local_dir": str(tmp / "backups"), "verify_restore": False},
                             migrate={"migrations_dir": str(tmp / "migrations")})
        # P1 measures the listeners' ack path: one simulated user sends every request, so lift the per-user limit.
        config["limits"] = {"burst": 1_000_000, "per_minute": 60_000_000}
        bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                         redis_url=REDIS_URL, key_prefix=prefix, log_path=tmp / "bot.log").start()
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "p1_bare_bolt.py"), "--port", str(bare_port),
                                 "--signing-secret", SIGNING_SECRET, "--token", BOT_TOKEN,
                                 "--slack-api-url", fake.base_url,
                                 *(["--process-before-response"] if args.bare_process_before_response else [])],
                                cwd=ROOT,
                                stdout=open(tmp / "bare.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_http(f"http://127.0.0.1:{bare_port}")

        # A real run in prod, so clicks hit a real run's checklist (first click per item confirms, later ones
        # are refused as already done: still the realistic ack path, plus the ephemeral reply and re-render).
        from bot.devtools.slack.client import SlackSender

        with SlackSender(bot.url + "/slack/events", SIGNING_SECRET) as sender:
            assert sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
        store = RunStore(connect(REDIS_URL), prefix=prefix)
        deadline = time.monotonic() + 30
        message = None
        while time.monotonic() < deadline and (message is None or store.active_run("prod") is None):
            time.sleep(0.2)
            message = fake.ask("last_message")
        assert message is not None, "the bot posted no run message"
        run = store.active_run("prod")
        say(f"P1: A = migrate-bot serve on {bot.url} (run {run.id if run else '?'}), "
            f"B = bare Bolt on :{bare_port}; {CONCURRENCY} concurrent clients, {rounds} rounds x {per_round}")
        fake.settle()

        kinds = ["slash status", "slash unknown env", "click checklist"]
        ports = {"A": bot.port, "B": bare_port}
        lat: dict[str, dict[str, list[float]]] = {k: {"A": [], "B": []} for k in kinds}
        errors: dict[str, dict[str, int]] = {k: {"A": 0, "B": 0} for k in kinds}
        round_p50: dict[str, dict[str, list[float]]] = {k: {"A": [], "B": []} for k in kinds}
        for kind in kinds:  # warm-up, not recorded
            for side in ("A", "B"):
                asyncio.run(load(ports[side], capture_bodies(kind, 100, message), SIGNING_SECRET))
            fake.settle()
        for r in range(rounds):
            for kind in kinds:
                for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    bodies = capture_bodies(kind, per_round, message)
                    values, errs = asyncio.run(load(ports[side], bodies, SIGNING_SECRET))
                    lat[kind][side] += values
                    errors[kind][side] += errs
                    round_p50[kind][side].append(median(values))
                    if side == "A":
                        fake.settle()  # A's post-ack work must not spill into B's round
            say(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{k} A {round_p50[k]['A'][-1]:.1f} / B {round_p50[k]['B'][-1]:.1f} ms" for k in kinds))

        rows = []
        summary: dict[str, Any] = {}
        for kind in kinds:
            a, b = lat[kind]["A"], lat[kind]["B"]
            s = {
                "n": {"A": len(a), "B": len(b)}, "non_200": errors[kind],
                "p50_ms": {"A": percentile(a, 50), "B": percentile(b, 50)},
                "p99_ms": {"A": percentile(a, 99), "B": percentile(b, 99)},
                "max_ms": {"A": max(a), "B": max(b)},
            }
            s["ratio_p50"] = ratio(s["p50_ms"]["A"], s["p50_ms"]["B"])
            s["ratio_p99"] = ratio(s["p99_ms"]["A"], s["p99_ms"]["B"])
            summary[kind] = s
            rows.append([kind, len(a), s["p50_ms"]["A"], s["p50_ms"]["B"], s["ratio_p50"],
                         s["p99_ms"]["A"], s["p99_ms"]["B"], s["ratio_p99"], f"{errors[kind]['A']}/{errors[kind]['B']}"])
        print_table(f"P1 ack latency, {CONCURRENCY} concurrent clients (goal A/B ≤ 1.5, p99 ≤ 100 ms)",
                    ["kind", "n per side", "A p50 ms", "B p50 ms", "p50 A/B", "A p99 ms", "B p99 ms", "p99 A/B",
                     "non-200 A/B"], rows)
        out = write_results("p1_ack_latency", {"concurrency": CONCURRENCY, "rounds": rounds, "per_round": per_round,
                                               "summary": summary, "round_p50_ms": round_p50,
                                               "b_process_before_response": args.bare_process_before_response,
                                               "goal": {"ratio": 1.5, "p99_ms": 100}})
        say(f"results in {out}")
        return 0
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        if bot is not None:
            bot.stop()
        fake.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=prefix + "*", count=500):
            client.delete(key)
        drop_db(dbname)


if __name__ == "__main__":
    raise SystemExit(main())
