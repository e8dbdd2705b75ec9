"""P5: review_migrations (our lock analysis + squawk, no database) vs squawk alone on the same 400 files."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, print_table, ratio, say, size_args, timed, write_results  # noqa: E402
from migrations_gen import write as write_migrations  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="40 migrations, 2 rounds (seconds)", full_help="400 migrations, 5 rounds")
    parser.add_argument("--migrations", type=int)
    parser.add_argument("--rounds", type=int)
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

    # Time spent inside squawk during our review (one squawk process per file, as review_migrations runs it).
    in_squawk = [0.0]
    real_run_squawk = review_mod.run_squawk

    def counting_run_squawk(*a, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return real_run_squawk(*a, **kw)
        finally:
            in_squawk[0] += time.perf_counter() - t

    review_mod.run_squawk = counting_run_squawk

    def ours() -> tuple[float, float]:
        in_squawk[0] = 0.0
        seconds, review = timed(lambda: review_migrations(migrations))
        assert len(review.migrations) == n
        return seconds, in_squawk[0]

    def squawk_once() -> float:
        """What a user runs: one squawk over all the files."""
        seconds, done = timed(lambda: subprocess.run(
            [squawk, "--reporter", "json", "--assume-in-transaction", *map(str, files)],
            capture_output=True, text=True, cwd=work))
        assert done.returncode in (0, 1, 3), done.stderr[-300:]  # non-zero exit = violations found
        assert done.stdout.strip().startswith("["), done.stdout[:200]
        return seconds

    def squawk_per_file() -> float:
        """squawk alone, but one process per file as our review starts it (same flags, via run_squawk)."""
        return timed(lambda: [run_squawk(sql, filename=name) for name, sql in migrations])[0]

    ours()  # warm-up: imports, pglast, page cache
    squawk_once()
    times: dict[str, list[float]] = {"A review_migrations": [], "B squawk (one run, all files)": [],
                                     "B2 squawk (one run per file)": []}
    squawk_share: list[float] = []
    names = list(times)
    for r in range(rounds):
        for side in (names if r % 2 == 0 else list(reversed(names))):
            if side.startswith("A"):
                seconds, inside = ours()
                times[side].append(seconds)
                squawk_share.append(inside)
            elif side.startswith("B2"):
                times[side].append(squawk_per_file())
            else:
                times[side].append(squawk_once())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k.split()[0]} {times[k][-1]:.3f}s" for k in names))

    b = median(times["B squawk (one run, all files)"])
    a = median(times["A review_migrations"])
    rows = [[k, median(v), min(v), ratio(median(v), b), median(v) / n * 1000] for k, v in times.items()]
    print_table(f"P5 safety review: {n} migrations, {rounds} rounds (goal A/B ≤ 1.3)",
                ["side", "median s", "min s", "ratio to B", "ms / file"], rows)
    inside = median(squawk_share)
    print_table("Where A's time goes (median)", ["part", "seconds", "share"], [
        ["squawk subprocesses (one per file)", inside, f"{inside / a:.0%}"],
        ["our analysis (pglast, lock model, findings)", a - inside, f"{(a - inside) / a:.0%}"],
    ])
    out = write_results("p5_safety_review", {
        "migrations": n, "rounds": rounds, "seconds": times,
        "median_s": {k: median(v) for k, v in times.items()},
        "a_inside_squawk_median_s": inside,
        "ratio_a_b": ratio(a, b),
        "ratio_a_b2": ratio(a, median(times["B2 squawk (one run per file)"])),
        "goal_ratio": 1.3,
    })
    say(f"ratio A/B = {ratio(a, b):.3f} (goal ≤ 1.3); A/B2 = {ratio(a, median(times['B2 squawk (one run per file)'])):.3f}; "
        f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
