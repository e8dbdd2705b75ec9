"""P3: NativeRunner.deploy (with `_prisma_migrations` bookkeeping) vs one `psql -f m1 -f m2 ...` session, 400 migrations."""

from __future__ import annotations

import argparse
import importlib.util
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    create_db,
    drop_db,
    median,
    print_table,
    ratio,
    say,
    size_args,
    timed,
    write_results,
)
from migrations_gen import write as write_migrations  # noqa: E402


def head_runner_module(rev: str = "HEAD") -> ModuleType | None:
    """The native runner as committed at ``rev`` (an earlier runner), for comparison: the one-file
    bot/integrations/prisma.py of older commits, or bot/integrations/prisma/native.py since the split."""
    text = None
    for path_at_rev in ("bot/integrations/prisma/native.py", "bot/integrations/prisma.py"):
        try:
            text = subprocess.run(["git", "show", f"{rev}:{path_at_rev}"], cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout
            break
        except (OSError, subprocess.CalledProcessError):
            continue
    if text is None:
        return None
    path = Path(tempfile.mkdtemp(prefix="bench-p3-")) / "prisma_head.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("prisma_head", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["prisma_head"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="40 migrations, 2 rounds (seconds)", full_help="400 migrations, 7 rounds")
    parser.add_argument("--migrations", type=int, help="override the number of migrations")
    parser.add_argument("--rounds", type=int, help="override the number of A/B rounds")
    parser.add_argument("--with-head", nargs="?", const="HEAD", metavar="REV",
                        help="also time the NativeRunner committed at REV (default HEAD) as side C")
    args = parser.parse_args()
    n = args.migrations or (40 if args.quick else 400)
    rounds = args.rounds or (2 if args.quick else 7)

    from bot.integrations.prisma.native import NativeRunner

    head = head_runner_module(args.with_head) if args.with_head else None
    work = Path(tempfile.mkdtemp(prefix="bench-p3-"))
    migrations_dir = work / "migrations"
    files = write_migrations(migrations_dir, n)
    say(f"P3: {n} migrations in {migrations_dir}, {rounds} alternating rounds (fresh database per side per round)")

    # Warm-up: imports (pglast, psycopg pipeline) and the server's catalog caches, not timed.
    warm = f"bench_p3_{uuid.uuid4().hex[:8]}"
    url = create_db(warm)
    try:
        NativeRunner(url).deploy(write_migrations(work / "warm", 3)[0].parent.parent)
    finally:
        drop_db(warm)

    cpu: dict[str, list[float]] = {}

    def native(runner_cls: type, side: str) -> float:
        name = f"bench_p3_{uuid.uuid4().hex[:8]}"
        url = create_db(name)
        try:
            began = time.process_time()  # this process's CPU, every thread: reading, hashing, parsing, psycopg
            seconds, result = timed(lambda: runner_cls(url).deploy(migrations_dir))
            cpu.setdefault(side, []).append(time.process_time() - began)
            assert len(result.applied) == n, f"applied {len(result.applied)} of {n}"
            return seconds
        finally:
            drop_db(name)

    psql_args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for f in files:
        psql_args += ["-f", str(f)]

    def psql() -> float:
        name = f"bench_p3_{uuid.uuid4().hex[:8]}"
        url = create_db(name)
        try:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, done = timed(lambda: subprocess.run([*psql_args, "-d", url], capture_output=True, text=True))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.setdefault("B psql", []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            assert done.returncode == 0, done.stderr[-500:]
            return seconds
        finally:
            drop_db(name)

    sides = {"A native": lambda: native(NativeRunner, "A native"), "B psql": psql}
    if head is not None:
        sides["C native@HEAD"] = lambda: native(head.NativeRunner, "C native@HEAD")
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for side in order:
            times[side].append(sides[side]())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in names))

    b = median(times["B psql"])
    paired = {k: median([x / y for x, y in zip(v, times["B psql"], strict=True)]) for k, v in times.items()}
    rows = [[k, median(v), min(v), max(v), ratio(median(v), b), paired[k], median(v) / n * 1000,
             median(cpu.get(k, [])) / n * 1000] for k, v in times.items()]
    print_table(f"P3 native migrate: {n} migrations, {rounds} rounds (goal A/B ≤ 1.10)",
                ["side", "median s", "min s", "max s", "ratio of medians", "median of per-round ratios",
                 "ms / migration", "client CPU ms / migration"], rows)
    out = write_results("p3_native_migrate", {
        "migrations": n, "rounds": rounds, "seconds": times,
        "median_s": {k: median(v) for k, v in times.items()},
        "ratio_a_b": ratio(median(times["A native"]), b),
        "paired_ratio_median": paired,
        "client_cpu_s": cpu, "client_cpu_ms_per_file": {k: median(v) / n * 1000 for k, v in cpu.items()},
        **({"ratio_c_b": ratio(median(times["C native@HEAD"]), b)} if head is not None else {}),
        "goal_ratio": 1.10,
    })
    say(f"ratio A/B = {ratio(median(times['A native']), b):.3f} (goal ≤ 1.10); results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
