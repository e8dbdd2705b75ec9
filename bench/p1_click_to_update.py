"""P1 (issue 17, goal 1): a click to the updated message arriving at Slack, the bot (A) vs a bare Bolt app (B).

Both sides are served the same way (Starlette + uvicorn) and talk to the same Slack stand-in, which answers every
Web API call after `--latency` (80 ms), as Slack does. A click is a signed `block_actions` request on a checklist
item's Confirm button; it is timed from the moment the request leaves the client to the moment the stand-in receives
the `chat.update` of that message (A: the run's status message with the item ticked; B: a bare app whose listener
acks and makes one `chat.update` of the same blocks — the floor). Two loads: one user clicking, and 10 users clicking
at once, each on a different run (10 environments). Rounds alternate A B, B A. The ack under a 50-client storm is
`bench/p1_ack_latency.py` (the second table of BENCHMARKS.md's P1).

    .venv/bin/python bench/p1_click_to_update.py            # 6 rounds × 5 items, 1 and 10 users
    .venv/bin/python bench/p1_click_to_update.py --quick    # 2 rounds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REDIS_URL,
    ROOT,
    median,
    percentile,
    print_table,
    ratio,
    say,
    size_args,
    write_results,
)

USERS = 10
ITEMS = ["staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_args(parser, quick_help="2 rounds", full_help="6 rounds")
    parser.add_argument("--rounds", type=int, help="rounds (default 6); each clicks the 5 checklist items")
    parser.add_argument("--latency", type=float, default=0.08, help="the stand-in's answer delay per call, s")
    parser.add_argument("--followup-threads", type=int, help="the bot's followup_threads (default: its own default)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 6)

    import httpx

    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.server import FakeSlack
    from bot.store.runs import RunStore, connect
    from tests.harness import ALICE, BOB, BOT_TOKEN, SIGNING_SECRET, BotProcess, free_port, write_config

    work = Path(tempfile.mkdtemp(prefix="bench-p1u-"))
    fake = FakeSlack(token=BOT_TOKEN, latency_s=args.latency).start()
    approvers = [f"U0APPR{i:02d}" for i in range(USERS + 1)]
    for user, name in [(ALICE, "alice"), (BOB, "bob")] + [(u, u.lower()) for u in approvers]:
        fake.add_user(user, name)
    envs = [f"e{i}" for i in range(USERS + 1)]  # e0 for the one user; e1..e10 for the ten at once
    channels = {env: f"C0BENCH{i:02d}" for i, env in enumerate(envs)}
    for env, channel in channels.items():
        fake.add_channel(channel, f"bench-{env}")
    config: dict[str, Any] = {"environments": {
        env: {"channel": channels[env], "requesters": [ALICE], "approvers": [BOB, *approvers],
              "deploy": {"enabled": False}} for env in envs},
        "limits": {"burst": 1_000_000, "per_minute": 60_000_000}}
    if args.followup_threads:
        config["followup_threads"] = args.followup_threads
    prefix = f"benchp1u-{uuid.uuid4().hex[:8]}:"
    store = RunStore(connect(REDIS_URL), prefix=prefix)
    bot = BotProcess(config_path=write_config(work / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=REDIS_URL, key_prefix=prefix, log_path=work / "bot.log")
    bare_port = free_port()
    bare = None
    samples: dict[str, dict[str, list[float]]] = {load: {"A": [], "B": []} for load in ("1 user", f"{USERS} users")}
    say(f"P1 click → updated message: stand-in latency {args.latency * 1000:.0f} ms, {rounds} rounds × "
        f"{len(ITEMS)} items; logs in {work}")
    try:
        bot.start()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "p1_bare_bolt.py"), "--port", str(bare_port),
                                 "--signing-secret", SIGNING_SECRET, "--token", BOT_TOKEN,
                                 "--slack-api-url", fake.base_url, "--process-before-response", "--update"],
                                cwd=ROOT, stdout=open(work / "bare.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        senders = {"A": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake),
                   "B": SlackSender(f"http://127.0.0.1:{bare_port}/slack/events", SIGNING_SECRET, fake=fake)}
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{bare_port}/healthz", timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        def start_runs() -> dict[str, tuple[str, str]]:
            """A run in every environment, its message settled: env -> (run id, message ts)."""
            for env in envs:
                senders["A"].slash(ALICE, env, channel_id=channels[env])
            found: dict[str, tuple[str, str]] = {}
            until = time.monotonic() + 60
            while len(found) < len(envs):
                if time.monotonic() > until:
                    raise RuntimeError(f"runs did not start (log: {work / 'bot.log'})")
                for env in envs:
                    run = store.active_run(env)
                    if run is not None and run.message_ts and run.facts.pending is not None:
                        message = fake.message(channels[env], run.message_ts)
                        if message and f" v{run.version} " in str(message["blocks"][-1]):
                            found[env] = (run.id, run.message_ts)
                time.sleep(0.05)
            return found

        def cancel_runs(runs: dict[str, tuple[str, str]]) -> None:
            for env, (run_id, _) in runs.items():
                senders["A"].slash(ALICE, f"cancel {run_id} bench round over", channel_id=channels[env])

        # B's messages: one per environment, the same blocks as the bot's, posted through the stand-in.
        def b_messages(runs: dict[str, tuple[str, str]]) -> dict[str, str]:
            posted = {}
            for env, (_, ts) in runs.items():
                message = fake.message(channels[env], ts)
                assert message is not None
                reply = httpx.post(fake.base_url + "chat.postMessage",
                                                 headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                                                 json={"channel": channels[env], "text": "floor",
                                                       "blocks": message["blocks"]})
                posted[env] = reply.json()["ts"]
            return posted

        def click(side: str, env: str, ts: str, item: str, user: str, out: list[float]) -> None:
            message = fake.message(channels[env], ts)
            assert message is not None
            seen = len(fake.calls)
            began = time.time()
            senders[side].click(user, channel_id=channels[env], message=message, action_id=f"checklist:{item}")
            until = time.monotonic() + 30
            while time.monotonic() < until:
                for call in fake.calls[seen:]:
                    if call.method == "chat.update" and call.args.get("ts") == ts:
                        out.append(call.at - began)
                        return
                time.sleep(0.001)
            raise RuntimeError(f"side {side}: no chat.update for {env} in 30 s")

        def wait_version(env: str, run_id: str, version: int) -> None:
            until = time.monotonic() + 30
            while time.monotonic() < until:
                run = store.get(run_id)
                message = fake.message(channels[env], run.message_ts or "")
                if run.version >= version and message and f" v{run.version} " in str(message["blocks"][-1]):
                    return
                time.sleep(0.01)
            raise RuntimeError(f"{env}: the message did not settle")

        for r in range(rounds):
            runs = start_runs()
            floor = b_messages(runs)
            for item in ITEMS:
                for side in ("AB" if r % 2 == 0 else "BA"):
                    env0 = envs[0]
                    target = runs[env0][1] if side == "A" else floor[env0]
                    version = store.get(runs[env0][0]).version
                    click(side, env0, target, item, BOB, samples["1 user"][side])
                    if side == "A":
                        wait_version(env0, runs[env0][0], version + 1)
                    threads = []
                    versions = {env: store.get(runs[env][0]).version for env in envs}
                    for i, env in enumerate(envs[1:], 1):
                        target = runs[env][1] if side == "A" else floor[env]
                        threads.append(threading.Thread(target=click, args=(
                            side, env, target, item, approvers[i], samples[f"{USERS} users"][side])))
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    if side == "A":
                        for env in envs[1:]:
                            wait_version(env, runs[env][0], versions[env] + 1)
            cancel_runs(runs)
            say(f"  round {r + 1}/{rounds}: 1 user A {median(samples['1 user']['A']) * 1000:.0f} ms, "
                f"B {median(samples['1 user']['B']) * 1000:.0f} ms")
    finally:
        bot.stop()
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        fake.stop()
        for key in store.redis.scan_iter(match=prefix + "*", count=1000):
            store.redis.delete(key)
    rows = []
    result: dict[str, Any] = {"rounds": rounds, "latency_s": args.latency, "users": USERS}
    for load, sides in samples.items():
        a, b = sides["A"], sides["B"]
        rows.append([load, len(a), median(a) * 1000, percentile(a, 95) * 1000, median(b) * 1000,
                     percentile(b, 95) * 1000, ratio(percentile(a, 95), percentile(b, 95))])
        result[load] = {"a_ms": [x * 1000 for x in a], "b_ms": [x * 1000 for x in b],
                        "a_p50_ms": median(a) * 1000, "a_p95_ms": percentile(a, 95) * 1000,
                        "b_p50_ms": median(b) * 1000, "b_p95_ms": percentile(b, 95) * 1000,
                        "ratio_p95": ratio(percentile(a, 95), percentile(b, 95))}
    print_table(f"P1 click → chat.update at the stand-in ({args.latency * 1000:.0f} ms per call); goal A p95 ≤ 1.2× B",
                ["load", "clicks per side", "A p50 ms", "A p95 ms", "B p50 ms", "B p95 ms", "A/B p95"], rows)
    path = write_results("p1_click_to_update", result)
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
