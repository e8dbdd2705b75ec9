"""P7 (issue 17, goal 4): `/migrate prod` with 434 pending migrations, to the status message showing its safety summary.

Side A: the bot (a real process, signed slash command) on an environment whose empty database has N pending
migrations generated in the shape of a large public Prisma history (`bench/migrations_gen.py`); timed from the
request leaving the client to the Slack stand-in receiving the call (post or update) whose blocks carry the review
summary. Side B, the floor: what a user would otherwise run, `squawk` alone over the same files plus one
`chat.postMessage` to the same stand-in. The stand-in answers every Web API call after `--latency` (80 ms), as Slack
does. Rounds alternate A B, B A. Every payload A sent to the stand-in is checked against Block Kit's limits.

    .venv/bin/python bench/p7_big_history.py            # 434 migrations, 5 rounds
    .venv/bin/python bench/p7_big_history.py --quick    # 60 migrations, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import migrations_gen  # noqa: E402
from common import (  # noqa: E402
    REDIS_URL,
    median,
    print_table,
    ratio,
    say,
    scratch_db,
    size_args,
    write_results,
)

SECTION_LIMIT = 3000
MESSAGE_BLOCKS = 50
OBSERVED_TEXT_LIMIT = 13_000  # the total block text Slack was seen to accept (see /work/shared/reference)


def block_text(blocks: list[dict[str, Any]]) -> list[str]:
    """Every text a block carries (section text and fields, context elements, header)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_args(parser, quick_help="60 migrations, 2 rounds", full_help="434 migrations, 5 rounds")
    parser.add_argument("-n", "--migrations", type=int, help="pending migrations (default 434)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    parser.add_argument("--latency", type=float, default=0.08, help="the stand-in's answer delay per call, s")
    args = parser.parse_args()
    n = args.migrations or (60 if args.quick else 434)
    rounds = args.rounds or (2 if args.quick else 5)

    import httpx

    from bot.devtools.slack.blockkit import validate_blocks
    from bot.devtools.slack.client import SlackSender
    from bot.devtools.slack.server import FakeSlack
    from bot.integrations.squawk import squawk_binary
    from bot.store.runs import RunStore, connect
    from tests.harness import (
        ALICE,
        BOT_TOKEN,
        PROD_CHANNEL,
        SIGNING_SECRET,
        BotProcess,
        base_config,
        write_config,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-p7-"))
    files = migrations_gen.write(work / "migrations", n=n)
    sql_files = sorted((work / "migrations").glob("*/migration.sql"))
    squawk = squawk_binary()
    fake = FakeSlack(token=BOT_TOKEN, latency_s=args.latency).start()
    fake.add_user(ALICE, "alice")
    prefix = f"benchp7-{uuid.uuid4().hex[:8]}:"
    store = RunStore(connect(REDIS_URL), prefix=prefix)
    result: dict[str, Any] = {"migrations": n, "files": len(files), "rounds": rounds, "latency_s": args.latency}
    say(f"P7: {n} migrations in {work / 'migrations'}; stand-in latency {args.latency * 1000:.0f} ms; "
        f"{rounds} alternating rounds")
    with scratch_db("bench_p7") as db_url:
        config = base_config(database_url=db_url, migrate={"migrations_dir": str(work / "migrations")},
                             backup={"method": "pg_dump", "local_dir": str(work / "backups")},
                             deploy={"enabled": False}, safety={"rehearsal": False, "preflight": False})
        config["limits"] = {"burst": 1_000_000, "per_minute": 60_000_000}
        bot = BotProcess(config_path=write_config(work / "env.yml", config), slack_api_url=fake.base_url,
                         redis_url=REDIS_URL, key_prefix=prefix, log_path=work / "bot.log")
        times: dict[str, list[float]] = {"A": [], "B": []}
        payloads: list[dict[str, Any]] = []
        per_run: list[tuple[int, int]] = []
        try:
            bot.start()
            sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
            client = httpx.Client(base_url=fake.base_url, timeout=30)

            def side_a() -> float:
                seen = len(fake.calls)
                began = time.time()
                reply = sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL)
                run = store.active_run("prod")
                assert reply.status_code == 200 and run is not None, reply.text[:300]
                marker = f"({n}) — review:"
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    for call in fake.calls[seen:]:
                        blocks = json.dumps(call.args.get("blocks", ""), ensure_ascii=False)
                        if call.method in ("chat.postMessage", "chat.update") and marker in blocks \
                                and run.id in blocks:
                            took = call.at - began
                            settle(run.id)
                            window = fake.calls[seen:]
                            per_run.append((sum(c.method == "chat.postMessage" for c in window),
                                            sum(c.method.startswith("files.") for c in window)))
                            payloads.extend(c.args for c in fake.calls[seen:]
                                            if c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"))
                            cancel = sender.slash(ALICE, f"cancel {run.id} bench round over", channel_id=PROD_CHANNEL)
                            assert "ancelled" in cancel.text, cancel.text[:300]
                            return took
                    time.sleep(0.005)
                raise RuntimeError(f"no status message with the review summary in 120 s (log: {work / 'bot.log'})")

            def settle(run_id: str) -> None:
                """Wait until the run's thread is quiet (its details posted), so rounds do not overlap."""
                last, quiet_since = len(fake.calls), time.monotonic()
                while time.monotonic() - quiet_since < max(1.0, 5 * args.latency):
                    time.sleep(0.05)
                    if len(fake.calls) != last:
                        last, quiet_since = len(fake.calls), time.monotonic()

            def side_b() -> float:
                began = time.time()
                subprocess.run([squawk, "--reporter", "json", "--assume-in-transaction", *map(str, sql_files)],
                               capture_output=True, check=False)
                posted = client.post("chat.postMessage", headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                                     json={"channel": PROD_CHANNEL, "text": f"{n} pending migrations reviewed"})
                assert posted.json().get("ok"), posted.text[:200]
                return time.time() - began

            side_a()
            side_b()  # warm both (the bot's first review loads pglast; squawk's binary into the page cache)
            payloads.clear()
            per_run.clear()
            for r in range(rounds):
                for side in ("AB" if r % 2 == 0 else "BA"):
                    times[side].append(side_a() if side == "A" else side_b())
                say(f"  round {r + 1}/{rounds}: A {times['A'][-1]:.2f} s, B {times['B'][-1]:.2f} s")
        finally:
            bot.stop()
            fake.stop()
            for key in store.redis.scan_iter(match=prefix + "*", count=1000):
                store.redis.delete(key)
    problems: list[str] = []
    largest_text = most_blocks = longest_section = 0
    for payload in payloads:
        blocks = payload.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        problems += validate_blocks(blocks)
        texts = block_text(blocks)
        most_blocks = max(most_blocks, len(blocks))
        largest_text = max(largest_text, sum(len(t) for t in texts))
        longest_section = max([longest_section] + [len(b.get("text", {}).get("text", "")) for b in blocks
                                                    if b.get("type") == "section"])
    a, b = median(times["A"]), median(times["B"])
    print_table(f"P7: /migrate prod with {n} pending migrations → status message with its safety summary "
                f"(goal A ≤ 2 s)", ["side", "median s", "min s", "max s"],
                [["A the bot", a, min(times["A"]), max(times["A"])],
                 ["B squawk alone + one chat.postMessage", b, min(times["B"]), max(times["B"])],
                 ["A / B", ratio(a, b), "", ""]])
    print_table("P7: the payloads of side A (Block Kit limits)", ["", "measured", "limit"],
                [["payloads checked", len(payloads), ""],
                 ["messages posted per run (status + thread)", max((p for p, _ in per_run), default=0), ""],
                 ["file-upload calls per run", max((f for _, f in per_run), default=0), ""], ["most blocks in one", most_blocks, MESSAGE_BLOCKS],
                 ["longest section text", longest_section, SECTION_LIMIT],
                 ["largest total block text", largest_text, OBSERVED_TEXT_LIMIT],
                 ["validator problems", len(problems), 0]])
    result.update({"a_s": times["A"], "b_s": times["B"], "a_median_s": a, "b_median_s": b, "ratio": ratio(a, b),
                   "payloads": len(payloads), "per_run_posts_files": per_run, "most_blocks": most_blocks, "longest_section": longest_section,
                   "largest_total_text": largest_text, "problems": problems[:20]})
    path = write_results("p7_big_history", result)
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
