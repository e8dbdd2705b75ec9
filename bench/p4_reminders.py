"""P4: reminder delays, duplicates and misses with two bot replicas on a compressed timeline, RSS with 10,000 windows,
and (``--failover``) the delay of a reminder whose poster is killed 1 s before it is due, with 3 replicas."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REDIS_URL, percentile, print_table, say, size_args, write_results  # noqa: E402

NEW_YORK = ZoneInfo("America/New_York")


def vm(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def kind_of(text: str) -> str | None:
    """announce / reminder / final / start / status:<n> / complete, from the fixed title the text starts with."""
    from bot.calendar.views import TITLES

    for kind, title in TITLES.items():
        if text.startswith(title):
            if kind == "status":
                number = text[len(title):].strip().split(" ", 1)[0]
                return f"status:{number}" if number.isdigit() else "status:?"
            return kind
    return None


_WINDOW = re.compile(r"Window `([a-z0-9-]+)`")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="20 windows, RSS with 500 windows (~1 min)",
              full_help="200 windows, RSS with 10,000 windows")
    parser.add_argument("--windows", type=int, help="windows on the compressed timeline (default 200)")
    parser.add_argument("--rss-windows", type=int, help="windows scheduled for the RSS reading (default 10,000)")
    parser.add_argument("--spread", type=int, help="seconds over which the window starts are spread (default 30)")
    parser.add_argument("--duration", type=int, default=3, help="window length, s (status every 1 s; default 3)")
    parser.add_argument("--renew-every", type=float, default=10, help="scheduler.renew_every_s (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent /migrate schedule senders (default 8)")
    parser.add_argument("--failover", action="store_true",
                        help="measure only the failover: 3 replicas, kill -9 the replica that posted the last "
                             "message 1 s before the next reminder is due, --rounds times")
    parser.add_argument("--rounds", type=int, default=5, help="failover rounds (default 5)")
    args = parser.parse_args()
    if args.failover:
        return failover(args)
    n = args.windows or (20 if args.quick else 200)
    n_rss = args.rss_windows if args.rss_windows is not None else (500 if args.quick else 10_000)
    spread = args.spread or (8 if args.quick else 30)

    from bot.calendar.operations import WindowRequest, schedule_window
    from bot.calendar.rules import Window, timeline
    from bot.config import BotConfig, CalendarConfig
    from bot.context import Deps
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.server import FakeSlack
    from bot.store.runs import RunStore, connect
    from bot.store.windows import WindowStore
    from jobs.scheduler import queue_for
    from tests.harness import (
        ALICE,
        BOB,
        BOT_TOKEN,
        PROD_CHANNEL,
        SIGNING_SECRET,
        BotProcess,
        base_config,
        write_config,
    )
    from tests.harness import (
        COMPRESSED_CALENDAR as FAST,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-p4-"))
    prefix = f"benchp4-{uuid.uuid4().hex[:8]}:"
    config = base_config(calendar=FAST)
    config["scheduler"] = {"renew_every_s": args.renew_every}
    # One simulated user books every window: lift the per-user rate limit, which is not what P4 measures.
    config["limits"] = {"burst": 1_000_000, "per_minute": 60_000_000}
    config_path = write_config(work / "env.yml", config)
    cfg = CalendarConfig.model_validate(FAST)
    redis_client = connect(REDIS_URL)
    deps = Deps(config=BotConfig.model_validate(config), store=RunStore(redis_client, prefix=prefix), slack=None,
                publisher=None, instance_id="bench-driver", jobs=queue_for)
    store = WindowStore(deps.store)
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    bots = [BotProcess(config_path=config_path, slack_api_url=fake.base_url, redis_url=REDIS_URL, key_prefix=prefix,
                       log_path=work / f"bot-{name}.log") for name in ("a", "b")]
    say(f"P4: {n} windows over {spread} s on two replicas, then {n_rss:,} windows for RSS; Redis prefix {prefix}; "
        f"logs in {work}")
    result: dict[str, Any] = {"windows": n, "rss_windows": n_rss, "spread_s": spread, "duration_s": args.duration,
                              "calendar": FAST, "scheduler": config["scheduler"]}
    try:
        for bot in bots:
            bot.start()
        pids = [bot.proc.pid for bot in bots if bot.proc]
        result["rss_idle_mib"] = [vm(p) for p in pids]

        # ---- phase 1: n windows through signed /migrate schedule requests, alternating replicas -------------
        senders = [SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake) for bot in bots]
        lead = 8 + math.ceil(n * 0.04)  # seconds to schedule them all before the first "24 h" reminder is due
        first = math.ceil(time.time()) + lead + int(cfg.reminder_before_s)
        starts = [datetime.fromtimestamp(first + (i * spread) // n, UTC) for i in range(n)]

        def book(i: int) -> tuple[str, str, float]:
            local = starts[i].astimezone(NEW_YORK)
            sent = time.time()
            text = senders[i % 2].slash(
                ALICE, f"schedule prod {local:%Y-%m-%d} {local:%H:%M:%S} {args.duration}s \"bench window {i}\"",
                channel_id=PROD_CHANNEL).json()["text"]
            match = re.search(r"window `([a-z0-9-]+)`", text)
            return (match.group(1) if match else ""), text, time.time() - sent

        t = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            booked = list(pool.map(book, range(n)))
        scheduling_s = time.monotonic() - t
        failed = [text for wid, text, _ in booked if not wid]
        ids = [wid for wid, _, _ in booked if wid]
        collisions = len(ids) - len(set(ids))
        say(f"  scheduled {len(ids)}/{n} windows in {scheduling_s:.1f} s ({len(failed)} refused, {collisions} "
            f"id collisions); first start in {first - time.time():.1f} s")
        if failed:
            say(f"  first refusal: {failed[0][:300]}")
        windows = {wid: store.get(wid) for wid in set(ids)}
        expected: dict[tuple[str, str], float] = {}
        for wid, window in windows.items():
            assert isinstance(window, Window)
            for item in timeline(window, cfg, window.created_at):
                expected[(wid, item.kind)] = item.due.timestamp()
        last_due = max(expected.values())
        say(f"  {len(expected)} timeline messages expected; waiting until {last_due - time.time():.0f} s after now "
            "(+ 10 s) for them")
        rss_during: list[list[dict[str, float]]] = []
        while time.time() < last_due + 10:
            rss_during.append([vm(p) for p in pids])
            time.sleep(1)
        fake.wait_idle(quiet_s=1.0, timeout=30)

        posts: dict[tuple[str, str], list[float]] = defaultdict(list)
        unknown = 0
        for call in fake.calls_to("chat.postMessage"):
            if not call.ok:
                continue
            text = str(call.args.get("text") or "")
            kind = kind_of(text)
            found = _WINDOW.search(json.dumps(call.args.get("blocks")))
            if kind is None or found is None:
                unknown += 1
                continue
            posts[(found.group(1), kind)].append(call.at)
        delays = {key: posts[key][0] - due for key, due in expected.items() if posts.get(key)}
        by_kind: dict[str, list[float]] = defaultdict(list)
        for (_, kind), delay in delays.items():
            by_kind[kind.partition(":")[0]].append(delay)
        duplicates = sum(len(v) - 1 for v in posts.values() if len(v) > 1)
        misses = [key for key in expected if key not in posts]
        unexpected = [key for key in posts if key not in expected]
        skipped = Counter()
        for wid in windows:
            for entry in store.audit_entries(wid):
                if entry.action.startswith("reminder.") and entry.outcome != "ok":
                    skipped[f"{entry.action} {entry.outcome}"] += 1
        all_delays = list(delays.values())
        rows = [[kind, len(v), percentile(v, 50) * 1000, percentile(v, 99) * 1000, max(v) * 1000, min(v) * 1000]
                for kind, v in sorted(by_kind.items(), key=lambda kv: ["announce", "reminder", "final", "start",
                                                                         "status", "complete"].index(kv[0]))]
        rows.append(["all", len(all_delays), percentile(all_delays, 50) * 1000, percentile(all_delays, 99) * 1000,
                     max(all_delays, default=float("nan")) * 1000, min(all_delays, default=float("nan")) * 1000])
        print_table(f"P4 reminder delay from due time: {len(windows)} windows, 2 replicas (goal max ≤ 2,000 ms)",
                    ["kind", "posted", "p50 ms", "p99 ms", "max ms", "min ms"], rows)
        print_table("P4 correctness (goal 0 / 0)", ["", "count"], [
            ["expected messages", len(expected)], ["duplicates (same window + reminder posted twice)", duplicates],
            ["misses (expected, never posted)", len(misses)], ["posted but not expected", len(unexpected)],
            ["window id collisions at scheduling", collisions], ["scheduling refused", len(failed)],
            *[[f"audit: {k}", v] for k, v in sorted(skipped.items())]])
        late = sorted(delays.items(), key=lambda kv: -kv[1])[:5]
        result.update({
            "scheduling_s": round(scheduling_s, 2), "schedule_request_p50_ms": percentile([b[2] for b in booked], 50) * 1000,
            "expected": len(expected), "posted": sum(len(v) for v in posts.values()), "duplicates": duplicates,
            "misses": len(misses), "missed": [list(k) for k in misses[:50]], "unexpected": len(unexpected),
            "unknown_posts": unknown, "id_collisions": collisions, "refused": len(failed), "audit_not_ok": dict(skipped),
            "delay_ms": {kind: {"n": len(v), "p50": percentile(v, 50) * 1000, "p99": percentile(v, 99) * 1000,
                                "max": max(v) * 1000, "min": min(v) * 1000} for kind, v in by_kind.items()},
            "delay_all_ms": {"p50": percentile(all_delays, 50) * 1000, "p99": percentile(all_delays, 99) * 1000,
                             "max": max(all_delays, default=float("nan")) * 1000},
            "latest": [[w, k, round(d * 1000, 1)] for (w, k), d in late],
            "rss_during_timeline_peak_mib": [max(r[i]["VmRSS"] for r in rss_during) for i in range(2)]
            if rss_during else None,
        })
        say(f"  latest: {result['latest']}")

        # ---- phase 2: n_rss more windows (in-process bot.calendar.operations.schedule_window, same Redis) for RSS --------
        if n_rss:
            base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
            per_day = 24
            t = time.monotonic()
            made = 0
            for i in range(n_rss):
                start = base + timedelta(days=i // per_day, hours=i % per_day)
                outcome = schedule_window(deps, env_name="prod", request=WindowRequest(
                    start=start, duration_s=8, timezone="America/New_York", release_notes=f"rss window {i}",
                    owner=ALICE), user=ALICE)
                made += outcome.window is not None
                if (i + 1) % 2000 == 0:
                    say(f"  {i + 1:,} windows scheduled ({time.monotonic() - t:.0f} s)")
            rss_schedule_s = time.monotonic() - t
            jobs = redis_client.hlen(deps.store.key("scheduler", "jobs"))
            say(f"  {made:,} windows, {jobs:,} jobs in the shared store after {rss_schedule_s:.0f} s")
            time.sleep(max(args.renew_every, 2) + 1)  # a periodic re-read of the full store by every replica
            after_schedule = [vm(p) for p in pids]
            listing = [senders[i].slash(ALICE, "windows prod", channel_id=PROD_CHANNEL) for i in range(2)]
            after_listing = [vm(p) for p in pids]
            rows = [[f"replica {'ab'[i]} (pid {pids[i]})", result["rss_idle_mib"][i]["VmRSS"],
                     after_schedule[i]["VmRSS"], after_listing[i]["VmRSS"], after_listing[i]["VmHWM"]]
                    for i in range(2)]
            print_table(f"P4 RSS (MiB; goal < 200 MB) with {made:,} scheduled windows ({jobs:,} reminder jobs)",
                        ["process", "idle, empty store", f"{made:,} windows", "after /migrate windows", "peak (VmHWM)"],
                        rows)
            result.update({"rss_windows_made": made, "rss_jobs": jobs, "rss_schedule_s": round(rss_schedule_s, 1),
                           "rss_after_schedule_mib": after_schedule, "rss_after_listing_mib": after_listing,
                           "listing_status": [r.status_code for r in listing],
                           "listing_ms": [r.elapsed.total_seconds() * 1000 if hasattr(r, "elapsed") else None
                                          for r in listing]})
    finally:
        for bot in bots:
            bot.stop()
        fake.stop()
        keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            redis_client.delete(*keys[i:i + 1000])
    out = write_results("p4_reminders", result)
    worst = result.get("delay_all_ms", {}).get("max", float("nan"))
    peak = max((r["VmRSS"] for r in result.get("rss_after_listing_mib", [])), default=float("nan"))
    say(f"max delay {worst:.0f} ms (goal ≤ 2000), duplicates {result.get('duplicates')}, misses {result.get('misses')}, "
        f"RSS {peak:.0f} MiB (goal < 200); results in {out}")
    return 0


def failover(args: argparse.Namespace) -> int:
    """Kill -9 the replica that posted a window's announcement (the last claim it won) 1 s before the window's
    "24 h" reminder is due, with 3 replicas; the reminder's delay from its due time, duplicates and misses."""
    from bot.calendar.rules import timeline
    from bot.config import BotConfig, CalendarConfig
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.server import FakeSlack
    from bot.store import keys as names
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
    from tests.harness import COMPRESSED_CALENDAR as FAST

    work = Path(tempfile.mkdtemp(prefix="bench-p4-failover-"))
    prefix = f"benchp4f-{uuid.uuid4().hex[:8]}:"
    config = base_config(calendar=FAST)
    config["scheduler"] = {"renew_every_s": args.renew_every}
    config["limits"] = {"burst": 1_000_000, "per_minute": 60_000_000}
    config_path = write_config(work / "env.yml", config)
    cfg = CalendarConfig.model_validate(FAST)
    BotConfig.model_validate(config)
    redis_client = connect(REDIS_URL)
    store = RunStore(redis_client, prefix=prefix)
    windows = WindowStore(store)
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    made = 0

    def replica() -> BotProcess:
        nonlocal made
        made += 1
        return BotProcess(config_path=config_path, slack_api_url=fake.base_url, redis_url=REDIS_URL,
                          key_prefix=prefix, log_path=work / f"bot-{made}.log").start()

    def posts(window_id: str, kind: str) -> list[float]:
        return [call.at for call in fake.calls_to("chat.postMessage") if call.ok
                and kind_of(str(call.args.get("text") or "")) == kind and window_id in json.dumps(call.args.get("blocks"))]

    def wait_for(predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        return None

    rounds: list[dict[str, Any]] = []
    say(f"P4 failover: {args.rounds} rounds, 3 replicas on {REDIS_URL.split('@')[-1]}, prefix {prefix}; logs in {work}")
    bots = [replica() for _ in range(3)]
    try:
        for number in range(args.rounds):
            sender = SlackSender(bots[number % 3].url + "/slack/events", SIGNING_SECRET, fake=fake)
            start = datetime.fromtimestamp(math.ceil(time.time()) + 7, UTC)
            local = start.astimezone(NEW_YORK)
            text = sender.slash(ALICE, f"schedule prod {local:%Y-%m-%d} {local:%H:%M:%S} {args.duration}s "
                                       f"\"failover round {number}\"", channel_id=PROD_CHANNEL).json()["text"]
            found = re.search(r"window `([a-z0-9-]+)`", text)
            if found is None:
                say(f"  round {number}: refused: {text[:200]}")
                continue
            window_id = found.group(1)
            wait_for(lambda w=window_id: posts(w, "announce"), 10)
            window = windows.get(window_id)
            assert window is not None
            holder = str(redis_client.get(store.keys.once(names.window_message(window_id, window.revision,
                                                                               "announce"))) or "")
            victim = next(b for b in bots if b.proc and f":{b.proc.pid}:" in f":{holder}")
            due = {item.kind: item.due.timestamp() for item in timeline(window, cfg, window.created_at)}
            time.sleep(max(0.0, due["reminder"] - 1 - time.time()))
            killed_at = time.time()
            victim.kill()
            posted = wait_for(lambda w=window_id: posts(w, "reminder"), 30) or []
            wait_for(lambda w=window_id: posts(w, "complete"), 40)
            time.sleep(0.5)
            counts = Counter(kind_of(str(c.args.get("text") or "")) for c in fake.calls_to("chat.postMessage")
                             if c.ok and window_id in json.dumps(c.args.get("blocks")))
            delay = (posted[0] - due["reminder"]) if posted else None
            rounds.append({"window": window_id, "killed_s_before_due": round(due["reminder"] - killed_at, 3),
                           "reminder_delay_ms": round(delay * 1000, 1) if delay is not None else None,
                           "reminder_posts": len(posted), "messages": dict(counts)})
            say(f"  round {number}: killed pid {victim.proc.pid if victim.proc else '?'} "
                f"{due['reminder'] - killed_at:.2f} s before due; reminder "
                f"{'missed' if delay is None else f'{delay * 1000:.0f} ms after due'}, posted {len(posted)}x")
            bots = [b for b in bots if b is not victim] + [replica()]
    finally:
        for bot in bots:
            bot.stop()
        fake.stop()
        keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            redis_client.delete(*keys[i:i + 1000])
    delays = [r["reminder_delay_ms"] for r in rounds if r["reminder_delay_ms"] is not None]
    duplicates = sum(max(0, count - 1) for r in rounds for kind, count in r["messages"].items()
                     if kind and not kind.startswith("status"))
    misses = sum(1 for r in rounds if r["reminder_delay_ms"] is None)
    print_table("P4 failover: reminder delay after its poster is killed 1 s before due (goal ≤ 2,000 ms, once)",
                ["round", "killed s before due", "delay ms", "reminder posts"],
                [[i, r["killed_s_before_due"], r["reminder_delay_ms"], r["reminder_posts"]] for i, r in enumerate(rounds)])
    summary = {"rounds": rounds, "replicas": 3, "median_delay_ms": percentile(delays, 50) if delays else None,
               "max_delay_ms": max(delays, default=None), "duplicates": duplicates, "misses": misses,
               "load_avg_1m": os.getloadavg()[0]}
    out = write_results("p4_failover", summary)
    say(f"median {summary['median_delay_ms']} ms, max {summary['max_delay_ms']} ms, duplicates {duplicates}, "
        f"misses {misses}; results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
