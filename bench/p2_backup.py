"""P2: our pg_dump backup step (dump, sha256, pg_restore --list) vs raw `pg_dump -Fc` + `pg_restore --list`, ≥ 1 GB."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PG_ADMIN_URL,
    create_db,
    drop_db,
    median,
    print_table,
    ratio,
    say,
    size_args,
    timed,
    with_db,
    write_results,
)

# A pgbench-like schema with less compressible rows (md5 text), so the dump's compression does real work.
SCHEMA = """
CREATE TABLE branches (bid int PRIMARY KEY, bbalance int NOT NULL, filler text);
CREATE TABLE tellers (tid int PRIMARY KEY, bid int NOT NULL REFERENCES branches, tbalance int NOT NULL, filler text);
CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, email text NOT NULL,
                       filler text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE history (id bigserial PRIMARY KEY, tid int, bid int, aid bigint, delta int, mtime timestamptz,
                      note text);
CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, finished_at timestamptz,
    migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamptz,
    started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count int NOT NULL DEFAULT 0);
"""
ROWS_PER_MB = 3_500  # accounts rows (with their share of history) per MB of pg_database_size, measured


def generate(url: str, target_mb: int) -> int:
    """Fill the database to about ``target_mb`` MB; returns pg_database_size in bytes."""
    import psycopg

    accounts = target_mb * ROWS_PER_MB
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO branches SELECT g, 0, md5(g::text) FROM generate_series(1, 100) g")
        conn.execute("INSERT INTO tellers SELECT g, (g - 1) % 100 + 1, 0, md5(g::text) FROM generate_series(1, 1000) g")
        step = 500_000
        for lo in range(1, accounts + 1, step):
            hi = min(accounts, lo + step - 1)
            conn.execute(
                "INSERT INTO accounts SELECT g, g %% 100 + 1, (g * 7919) %% 100000, 'user' || g || '@example.com', "
                "md5(g::text) || md5((g * 31)::text), now() - (g %% 86400) * interval '1 second' "
                "FROM generate_series(%s::bigint, %s::bigint) g", (lo, hi))
            conn.execute(
                "INSERT INTO history (tid, bid, aid, delta, mtime, note) SELECT g %% 1000 + 1, g %% 100 + 1, g, "
                "(g * 13) %% 5000 - 2500, now(), md5((g * 17)::text) FROM generate_series(%s::bigint, %s::bigint) g "
                "WHERE g %% 2 = 0", (lo, hi))
        conn.execute("CREATE INDEX accounts_email_idx ON accounts (email)")
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count) "
                     "SELECT gen_random_uuid()::text, md5(g::text) || md5(g::text), 'm' || g, now(), 1 "
                     "FROM generate_series(1, 40) g")
        conn.execute("VACUUM ANALYZE")
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="~50 MB database, 2 rounds", full_help="~1.1 GB database, 3 rounds")
    parser.add_argument("--mb", type=int, help="override the database size (MB)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the generated database (reused by the next run)")
    parser.add_argument("--no-restore-check", action="store_true", help="skip the one verify_restore=True run")
    args = parser.parse_args()
    target_mb = args.mb or (50 if args.quick else 1100)
    rounds = args.rounds or (2 if args.quick else 3)

    import psycopg

    from bot.backup import LocalTarget, take_pg_dump_backup

    dbname = f"bench_p2_{target_mb}mb"
    url = with_db(PG_ADMIN_URL, dbname)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
            ok = conn.execute("SELECT to_regclass('accounts') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        if not ok:
            raise psycopg.OperationalError("not generated")
        say(f"P2: reusing {dbname} ({size / 2**20:.0f} MB)")
        gen_s = 0.0
    except psycopg.OperationalError:
        say(f"P2: generating {dbname} (~{target_mb} MB) ...")
        create_db(dbname)
        gen_s, size = timed(lambda: generate(url, target_mb))
        say(f"    {size / 2**20:.0f} MB in {gen_s:.0f} s")

    work = Path(tempfile.mkdtemp(prefix="bench-p2-"))

    def fresh_dir() -> Path:
        d = work / uuid.uuid4().hex[:8]
        d.mkdir()
        return d

    sizes: dict[str, int] = {}

    def ours(fmt: str, jobs: int, verify: bool = False) -> float:
        d = fresh_dir()
        try:
            seconds, ev = timed(lambda: take_pg_dump_backup(run_id=f"bench-{uuid.uuid4().hex[:6]}", database_url=url,
                                                           target=LocalTarget(d), aws=None, fmt=fmt, jobs=jobs,
                                                           verify_restore=verify))  # type: ignore[arg-type]
            assert ev.verified and ev.toc_entries, ev
            sizes[f"ours {fmt}"] = ev.size_bytes or 0
            return seconds
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def raw(fmt: str, jobs: int) -> float:
        d = fresh_dir()
        out = d / ("dump.dump" if fmt == "c" else "dump.dir")
        try:
            def run() -> None:
                dump = ["pg_dump", f"--dbname={url}", f"--file={out}", f"--format={fmt}"]
                if fmt == "d":
                    dump.append(f"--jobs={jobs}")
                subprocess.run(dump, check=True, stdin=subprocess.DEVNULL)
                toc = subprocess.run(["pg_restore", "--list", str(out)], check=True, capture_output=True, text=True)
                assert toc.stdout.strip()
            seconds, _ = timed(run)
            sizes[f"raw {fmt}"] = out.stat().st_size if out.is_file() else sum(
                p.stat().st_size for p in out.iterdir())
            return seconds
        finally:
            shutil.rmtree(d, ignore_errors=True)

    sides = {
        "A ours -Fc (dump+sha256+list)": lambda: ours("custom", 1),
        "B raw pg_dump -Fc + pg_restore --list": lambda: raw("c", 1),
        "A2 ours -Fd -j 2 (dump+tar+sha256+list)": lambda: ours("directory", 2),
        "B2 raw pg_dump -Fd -j 2 + pg_restore --list": lambda: raw("d", 2),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for side in (names if r % 2 == 0 else list(reversed(names))):
            times[side].append(sides[side]())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k.split()[0]} {times[k][-1]:.2f}s" for k in names))
    restore_s = None
    if not args.no_restore_check:
        restore_s = ours("custom", 1, verify=True)
        say(f"  ours -Fc with verify_restore=True (restore into a scratch db and compare): {restore_s:.2f}s")
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        drop_db(dbname)

    med = {k: median(v) for k, v in times.items()}
    b = med["B raw pg_dump -Fc + pg_restore --list"]
    rows = [[k, med[k], min(v), ratio(med[k], b)] for k, v in times.items()]
    if restore_s is not None:
        rows.append(["A ours -Fc, verify_restore=True (1 run)", restore_s, restore_s, ratio(restore_s, b)])
    print_table(f"P2 backup of a {size / 2**20:.0f} MB database, {rounds} rounds (goal A/B ≤ 1.10)",
                ["side", "median s", "min s", "ratio to B"], rows)
    a = med["A ours -Fc (dump+sha256+list)"]
    out = write_results("p2_backup", {
        "database_bytes": size, "generate_s": gen_s, "rounds": rounds, "seconds": times, "median_s": med,
        "dump_bytes": sizes, "verify_restore_s": restore_s,
        "ratio_a_b": ratio(a, b),
        "ratio_a2_b": ratio(med["A2 ours -Fd -j 2 (dump+tar+sha256+list)"], b),
        "ratio_a2_b2": ratio(med["A2 ours -Fd -j 2 (dump+tar+sha256+list)"],
                             med["B2 raw pg_dump -Fd -j 2 + pg_restore --list"]),
        "goal_ratio": 1.10,
    })
    say(f"ratio A/B = {ratio(a, b):.3f} (goal ≤ 1.10); results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
