"""P6 (issue 17, goal 5): `/migrate windows` and App Home with 10,000 scheduled windows, against the same bot with none.

Two bot processes on the same Redis under different key prefixes: side A holds N scheduled windows, side B (the floor:
the same request when the calendar is empty) holds none. Requests alternate A, B, B, A, … Each `/migrate windows` is
timed from the signed request leaving the client to the ephemeral reply (the HTTP answer, as the slash command acks
with its blocks); each App Home from the signed `app_home_opened` event to the `views.publish` reaching the Slack
stand-in. RSS (VmRSS) of side A is read before the first request and after the last; VmHWM is its peak.

    .venv/bin/python bench/p6_big_calendar.py            # 10,000 windows, 5 rounds of 20 requests per kind
    .venv/bin/python bench/p6_big_calendar.py --quick    # 1,000 windows, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REDIS_URL, median, percentile, print_table, ratio, say, size_args, write_results  # noqa: E402


def vm(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_args(parser, quick_help="1,000 windows, 2 rounds", full_help="10,000 windows, 5 rounds")
    parser.add_argument("--windows", type=int, help="scheduled windows on side A (default 10,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    parser.add_argument("--per-round", type=int, default=20, help="requests of each kind per side per round")
    args = parser.parse_args()
    n = args.windows or (1_000 if args.quick else 10_000)
    rounds = args.rounds or (2 if args.quick else 5)

    from bot.calendar.rules import Window
    from bot.config import BotConfig
    from bot.context import Deps
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.server import FakeSlack
    from bot.store.runs import RunStore, connect
    from bot.store.windows import WindowStore
    from tests.harness import (
        ALICE,
        BOT_TOKEN,
        PROD_CHANNEL,
        SIGNING_SECRET,
        BotProcess,
        base_config,
        write_config,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-p6-"))
    config = base_config()
    config["limits"] = {"burst": 1_000_000, "per_minute": 60_000_000}  # one scripted user: not what P6 measures
    config_path = write_config(work / "env.yml", config)
    prefixes = {side: f"benchp6-{side}-{uuid.uuid4().hex[:8]}:" for side in "AB"}
    redis_client = connect(REDIS_URL)
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")

    deps = Deps(config=BotConfig.model_validate(config), store=RunStore(redis_client, prefix=prefixes["A"]),
                slack=None, publisher=None)
    store = WindowStore(deps.store)
    say(f"P6: writing {n:,} windows (prod and staging, an hour apart) under {prefixes['A']}")
    start = datetime.now(UTC) + timedelta(days=2)
    t = time.monotonic()
    for i in range(n):
        env = "prod" if i % 10 == 0 else "staging"
        store.create(Window(id=f"{env}-p6-{i:05d}", env=env, channel=PROD_CHANNEL, start=start + timedelta(hours=i),
                            duration_s=3600, timezone="America/New_York", release_notes=f"Release {i}\n" + "x" * 400,
                            owner=ALICE, created_by=ALICE, created_at=datetime.now(UTC)))
    say(f"  {n:,} windows in {time.monotonic() - t:.1f} s")

    bots = {side: BotProcess(config_path=config_path, slack_api_url=fake.base_url, redis_url=REDIS_URL,
                             key_prefix=prefixes[side], log_path=work / f"bot-{side}.log") for side in "AB"}
    samples: dict[str, dict[str, list[float]]] = {kind: {"A": [], "B": []} for kind in ("windows", "home")}
    result: dict[str, Any] = {"windows": n, "rounds": rounds, "per_round": args.per_round}
    try:
        for bot in bots.values():
            bot.start()
        senders = {side: SlackSender(bots[side].url + "/slack/events", SIGNING_SECRET, fake=fake) for side in "AB"}
        pids = {side: bots[side].proc.pid if bots[side].proc else 0 for side in "AB"}

        def listing(side: str) -> float:
            began = time.perf_counter()
            reply = senders[side].slash(ALICE, "windows", channel_id=PROD_CHANNEL)
            took = time.perf_counter() - began
            expected = f"({n:,})" if side == "A" else "No maintenance windows"
            assert reply.status_code == 200 and expected in json.dumps(reply.json()), reply.text[:300]
            return took

        def home(side: str) -> float:
            user = f"U0P6{side}{uuid.uuid4().hex[:6].upper()}"
            fake.add_user(user, user.lower())
            began = time.perf_counter()
            senders[side].home_opened(user)
            while fake.home(user) is None:
                if time.perf_counter() - began > 30:
                    raise RuntimeError(f"side {side}: App Home was not published in 30 s")
                time.sleep(0.001)
            return time.perf_counter() - began

        before = {side: vm(pids[side]) for side in "AB"}  # idle: nothing listed yet
        for side in "AB":  # warm both: the first request of a process loads code paths
            listing(side)
            home(side)
        for r in range(rounds):
            order = "AB" if r % 2 == 0 else "BA"
            for _ in range(args.per_round):
                for side in order:
                    samples["windows"][side].append(listing(side))
                for side in order:
                    samples["home"][side].append(home(side))
            say(f"  round {r + 1}/{rounds}: /migrate windows A {median(samples['windows']['A']) * 1000:.1f} ms, "
                f"B {median(samples['windows']['B']) * 1000:.1f} ms")
        after = {side: vm(pids[side]) for side in "AB"}
        rows = []
        for kind, label in (("windows", "/migrate windows (reply)"), ("home", "App Home (views.publish)")):
            a, b = samples[kind]["A"], samples[kind]["B"]
            rows.append([label, median(a) * 1000, percentile(a, 95) * 1000, median(b) * 1000,
                         percentile(b, 95) * 1000, ratio(median(a), median(b))])
            result[kind] = {"a_ms": [x * 1000 for x in a], "b_ms": [x * 1000 for x in b],
                            "a_median_ms": median(a) * 1000, "a_p95_ms": percentile(a, 95) * 1000,
                            "b_median_ms": median(b) * 1000, "b_p95_ms": percentile(b, 95) * 1000,
                            "ratio_median": ratio(median(a), median(b))}
        print_table(f"P6: {n:,} windows (A) vs an empty calendar (B), {rounds} rounds × {args.per_round}; goal A ≤ 50 ms",
                    ["request", "A p50 ms", "A p95 ms", "B p50 ms", "B p95 ms", "A/B p50"], rows)
        growth = {side: round(after[side]["VmRSS"] - before[side]["VmRSS"], 1) for side in "AB"}
        print_table("P6: RSS from idle to after every request (MiB); goal: A's extra over B's ≤ 5 MiB",
                    ["", "idle", "after", "growth", "peak (VmHWM)"],
                    [[f"side {side}", before[side]["VmRSS"], after[side]["VmRSS"], growth[side],
                      after[side]["VmHWM"]] for side in "AB"])
        result["rss_mib"] = {"before": before, "after": after, "growth": growth,
                             "a_extra_over_b": round(growth["A"] - growth["B"], 1)}
    finally:
        for bot in bots.values():
            bot.stop()
        fake.stop()
        for prefix in prefixes.values():
            for key in redis_client.scan_iter(match=prefix + "*", count=1000):
                redis_client.delete(key)
    path = write_results("p6_big_calendar", result)
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
