"""P5: the safety review vs squawk alone on the same 400 files, in-process and as commands, plus start-up time.

Sides, alternated each round: A review_migrations in-process; B one `squawk` command over all files; B2 squawk once
per file (information); ACMD the `migrate-bot lint DIR --format json` command (a new Python process, run as
`python -m bot` from this checkout, exactly what the console script runs); HELP `migrate-bot --help`; PASS
`python -c pass`. Ratios: A/B (goal 1.3), ACMD/B (goal 1.5), HELP/PASS (goal 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, print_table, ratio, say, size_args, timed, write_results  # noqa: E402
from migrations_gen import write as write_migrations  # noqa: E402


def head_review_module(rev: str) -> ModuleType | None:
    """bot/safety/review.py as committed at ``rev`` (e.g. before squawk ran once per flag set), for comparison."""
    root = Path(__file__).resolve().parents[1]
    try:
        text = subprocess.run(["git", "show", f"{rev}:bot/safety/review.py"], cwd=root, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if text == (root / "bot" / "safety" / "review.py").read_text():
        return None  # nothing to compare: the working copy is that revision
    path = Path(tempfile.mkdtemp(prefix="bench-p5-")) / "review_head.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("review_head", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["review_head"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="40 migrations, 2 rounds (seconds)", full_help="400 migrations, 5 rounds")
    parser.add_argument("--migrations", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--with-head", nargs="?", const="HEAD", metavar="REV",
                        help="also time review_migrations as committed at REV (default HEAD), side C")
    args = parser.parse_args()
    n = args.migrations or (40 if args.quick else 400)
    rounds = args.rounds or (2 if args.quick else 5)

    import bot.safety.review as review_mod
    from bot.integrations.squawk import run_squawk, squawk_binary
    from bot.safety.review import review_migrations

    work = Path(tempfile.mkdtemp(prefix="bench-p5-"))
    files = write_migrations(work / "migrations", n)
    migrations = [(f.parent.name, f.read_text()) for f in files]
    squawk = squawk_binary()
    say(f"P5: {n} migrations in {work / 'migrations'}, {rounds} alternating rounds; squawk = {squawk}")

    # Time A spends waiting for squawk: review_migrations starts one squawk process per flag set (SquawkBatch) and
    # runs its own analysis meanwhile; what is left when it asks for the results is the wait measured here.
    waited = [0.0]
    real_results = review_mod.SquawkBatch.results

    def counting_results(self):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return real_results(self)
        finally:
            waited[0] += time.perf_counter() - t

    review_mod.SquawkBatch.results = counting_results  # type: ignore[method-assign]
    head = head_review_module(args.with_head) if args.with_head else None
    if args.with_head and head is None:
        say(f"  (--with-head: {args.with_head}'s bot/safety/review.py is the working copy or missing; no side C)")

    def ours() -> tuple[float, float]:
        waited[0] = 0.0
        seconds, review = timed(lambda: review_migrations(migrations))
        assert len(review.migrations) == n
        return seconds, waited[0]

    def ours_head() -> float:
        assert head is not None
        seconds, review = timed(lambda: head.review_migrations(migrations))
        assert len(review.migrations) == n
        return seconds

    def squawk_once() -> float:
        """What a user runs: one squawk over all the files."""
        seconds, done = timed(lambda: subprocess.run(
            [squawk, "--reporter", "json", "--assume-in-transaction", *map(str, files)],
            capture_output=True, text=True, cwd=work))
        assert done.returncode in (0, 1, 3), done.stderr[-300:]  # non-zero exit = violations found
        assert done.stdout.strip().startswith("["), done.stdout[:200]
        return seconds

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def command(args: list[str], ok: tuple[int, ...] = (0,)) -> float:
        seconds, done = timed(lambda: subprocess.run([sys.executable, *args], capture_output=True, text=True,
                                                     cwd=root, env=env))
        assert done.returncode in ok, (args, done.returncode, done.stderr[-300:])
        return seconds

    def lint_command() -> float:
        """What a user runs: `migrate-bot lint DIR --format json` (exit 1 = high findings)."""
        return command(["-m", "bot", "lint", str(work / "migrations"), "--format", "json"], ok=(0, 1))

    def squawk_per_file() -> float:
        """squawk alone, but one process per file as our review starts it (same flags, via run_squawk)."""
        return timed(lambda: [run_squawk(sql, filename=name) for name, sql in migrations])[0]

    ours()  # warm-up: imports, pglast, page cache
    squawk_once()
    lint_command()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"A review_migrations": [], "B squawk (one run, all files)": [],
                                     "B2 squawk (one run per file)": [],
                                     "ACMD migrate-bot lint DIR --format json": [],
                                     "HELP migrate-bot --help": [], "PASS python -c pass": []}
    if head is not None:
        times[f"C review_migrations at {args.with_head}"] = []
    squawk_share: list[float] = []
    names = list(times)
    for r in range(rounds):
        for side in (names if r % 2 == 0 else list(reversed(names))):
            if side.startswith("ACMD"):
                times[side].append(lint_command())
            elif side.startswith("A"):
                seconds, inside = ours()
                times[side].append(seconds)
                squawk_share.append(inside)
            elif side.startswith("C"):
                times[side].append(ours_head())
            elif side.startswith("B2"):
                times[side].append(squawk_per_file())
            elif side.startswith("HELP"):
                times[side].append(command(["-m", "bot", "--help"]))
            elif side.startswith("PASS"):
                times[side].append(command(["-c", "pass"]))
            else:
                times[side].append(squawk_once())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k.split()[0]} {times[k][-1]:.3f}s" for k in names))

    load_after = os.getloadavg()
    b = median(times["B squawk (one run, all files)"])
    a = median(times["A review_migrations"])
    acmd = median(times["ACMD migrate-bot lint DIR --format json"])
    helped, passed = median(times["HELP migrate-bot --help"]), median(times["PASS python -c pass"])
    rows = [[k, median(v), min(v), ratio(median(v), b), median(v) / n * 1000] for k, v in times.items()
            if not k.startswith(("HELP", "PASS"))]
    print_table(f"P5 safety review: {n} migrations, {rounds} rounds (goals A/B ≤ 1.3, ACMD/B ≤ 1.5)",
                ["side", "median s", "min s", "ratio to B", "ms / file"], rows)
    print_table("Start-up (goal HELP/PASS ≤ 2)", ["side", "median s", "min s", "ratio to PASS"],
                [[k, median(v), min(v), ratio(median(v), passed)] for k, v in times.items()
                 if k.startswith(("HELP", "PASS"))])
    inside = median(squawk_share)
    print_table("Where A's time goes (median)", ["part", "seconds", "share"], [
        ["waiting for squawk after our analysis (it runs alongside)", inside, f"{inside / a:.0%}"],
        ["our analysis, file writing, joining the results", a - inside, f"{(a - inside) / a:.0%}"],
    ])
    out = write_results("p5_safety_review", {
        "migrations": n, "rounds": rounds, "seconds": times,
        "median_s": {k: median(v) for k, v in times.items()},
        "a_waiting_for_squawk_median_s": inside,
        "ratio_a_b": ratio(a, b),
        "ratio_acmd_b": ratio(acmd, b), "goal_ratio_acmd_b": 1.5,
        "ratio_help_pass": ratio(helped, passed), "goal_ratio_help_pass": 2.0,
        "loadavg_before": load_before, "loadavg_after": load_after, "cpus": os.cpu_count(),
        "ratio_a_b2": ratio(a, median(times["B2 squawk (one run per file)"])),
        **({"ratio_c_b": ratio(median(times[f"C review_migrations at {args.with_head}"]), b)}
           if head is not None else {}),
        "goal_ratio": 1.3,
    })
    say(f"ratio A/B = {ratio(a, b):.3f} (goal ≤ 1.3); ACMD/B = {ratio(acmd, b):.3f} (goal ≤ 1.5); "
        f"HELP/PASS = {ratio(helped, passed):.3f} (goal ≤ 2); "
        f"A/B2 = {ratio(a, median(times['B2 squawk (one run per file)'])):.3f}; load {load_before} -> {load_after}; "
        f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
