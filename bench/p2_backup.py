"""P2: backup → verified → rehearsed (ours) vs raw pg_dump -Fc + one pg_restore into a fresh cluster + psql, ≥ 1 GB."""

from __future__ import annotations

import argparse
import os
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


# The pending migrations both sides apply to the restored copy (Prisma layout for ours, psql -f for the floor).
PENDING = {
    "20990101000000_add_note": "ALTER TABLE accounts ADD COLUMN note text;\n",
    "20990102000000_index_history": "CREATE INDEX history_aid_idx ON history (aid);\n",
    "20990103000000_backfill": "UPDATE branches SET bbalance = bid * 10;\nALTER TABLE tellers ADD COLUMN region text;\n",
}
# The same disposable-copy settings the bot's throwaway cluster uses (bot/integrations/pgcluster.py).
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_wal_size=4GB",
        "-c", "checkpoint_timeout=30min", "-c", "autovacuum=off", "-c", "listen_addresses="]


def write_migrations(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, sql in PENDING.items():
        (directory / name).mkdir(exist_ok=True)
        (directory / name / "migration.sql").write_text(sql)
    return directory


def parallel_flags(jobs: int) -> list[str]:
    return ["-Fd", "-j", str(jobs)] if jobs > 1 else ["-Fc"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    size_args(parser, quick_help="~50 MB database, 2 rounds", full_help="~1.1 GB database, 3 rounds")
    parser.add_argument("--mb", type=int, help="override the database size (MB)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the generated database (reused by the next run)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="N > 1: directory format with N parallel jobs on both sides (pg_dump -Fd -j N, "
                             "pg_restore -j N; the bot's backup.format: directory, backup.jobs: N)")
    args = parser.parse_args()
    jobs = max(1, args.jobs)
    fmt = "directory" if jobs > 1 else "custom"
    target_mb = args.mb or (50 if args.quick else 1100)
    rounds = args.rounds or (2 if args.quick else 3)

    import psycopg

    from bot.backup.evidence import LocalTarget
    from bot.backup.pg_dump import take_pg_dump_backup
    from bot.backup.rehearsal import rehearse_from_evidence
    from bot.backup.sandbox import hold
    from bot.integrations.pgcluster import server_binaries

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

    # Not under a private dir: as root the clusters run as postgres, who must reach them.
    work = Path(tempfile.mkdtemp(prefix="bench-p2-"))
    work.chmod(0o755)
    migrations = write_migrations(work / "migrations")
    bindir = server_binaries(None)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def fresh_dir() -> Path:
        d = work / uuid.uuid4().hex[:8]
        d.mkdir()
        d.chmod(0o755)
        return d

    parts: dict[str, list[float]] = {"ours backup+verify": [], "ours rehearse": []}
    phases: list[dict[str, float]] = []

    def ours() -> float:
        d = fresh_dir()
        run_id = f"bench-{uuid.uuid4().hex[:6]}"

        def keep(copy: object) -> bool:
            hold(run_id, copy)  # type: ignore[arg-type]
            return True

        def both() -> None:
            b_s, ev = timed(lambda: take_pg_dump_backup(run_id=run_id, database_url=url, target=LocalTarget(d),
                                                       aws=None, verify_restore=True, keep_restored=keep,
                                                       fmt=fmt, jobs=jobs))  # type: ignore[arg-type]
            assert ev.verified and ev.restored_table_count, ev
            phases.append(dict(ev.phases))
            say(f"    the run's checklist line: {ev.describe()}")
            r_s, report = timed(lambda: rehearse_from_evidence(ev.to_dict(), database_url=url,
                                                               migrations_dir=migrations, run_id=run_id,
                                                               pending=list(PENDING), lock_timeout_ms=None))
            assert report.ok and "rehearsed on the copy the backup was verified with" in report.notes, report
            parts["ours backup+verify"].append(b_s)
            parts["ours rehearse"].append(r_s)
        try:
            seconds, _ = timed(both)
            return seconds
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def floor() -> float:
        d = fresh_dir()
        dump, data = d / "dump.dump", d / "data"
        parallel = ["--format=d", f"--jobs={jobs}"] if jobs > 1 else ["--format=c"]

        def run() -> None:
            subprocess.run(["pg_dump", f"--dbname={url}", f"--file={dump}", *parallel], check=True,
                           stdin=subprocess.DEVNULL)
            if as_user:
                shutil.chown(d, "postgres", "postgres")
            quiet = {"stdout": subprocess.DEVNULL, "check": True}
            subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                            "--no-sync"], **quiet)  # type: ignore[call-overload]
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(d / "log"), "-w", "-o",
                            " ".join([*FAST, "-c", f"unix_socket_directories={d}"]), "start"], **quiet)  # type: ignore[call-overload]
            try:
                target = f"postgresql://postgres@/postgres?host={d}"
                subprocess.run(["psql", "-X", "-q", target, "-c", "CREATE DATABASE copy"], **quiet)  # type: ignore[call-overload]
                copy = f"postgresql://postgres@/copy?host={d}"
                subprocess.run(["pg_restore", "--exit-on-error", "--no-owner", "--no-privileges", f"--dbname={copy}",
                                *([f"--jobs={jobs}"] if jobs > 1 else []), str(dump)], **quiet)  # type: ignore[call-overload]
                files = [a for name in PENDING for a in ("-f", str(migrations / name / "migration.sql"))]
                subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", copy, *files], **quiet)  # type: ignore[call-overload]
            finally:  # torn down inside the timing, as ours is (the dump file is kept by both)
                subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                               stdout=subprocess.DEVNULL, check=False)
                shutil.rmtree(data, ignore_errors=True)
        try:
            seconds, _ = timed(run)
            return seconds
        finally:
            shutil.rmtree(d, ignore_errors=True)

    sides = {
        "A ours: backup → verified → rehearsed": ours,
        f"B floor: pg_dump {' '.join(parallel_flags(jobs))} + initdb + pg_restore{f' -j {jobs}' if jobs > 1 else ''} + psql": floor,
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for side in (names if r % 2 == 0 else list(reversed(names))):
            times[side].append(sides[side]())
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k.split()[0]} {times[k][-1]:.2f}s" for k in names))
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        drop_db(dbname)

    med = {k: median(v) for k, v in times.items()}
    a, b = med[names[0]], med[names[1]]
    rows = [[k, med[k], min(v), ratio(med[k], b)] for k, v in times.items()]
    rows += [[f"  of which {k}", median(v), min(v), ratio(median(v), b)] for k, v in parts.items()]
    print_table(f"P2 backup → verified → rehearsed, {size / 2**20:.0f} MB database, {fmt} format, {jobs} job(s), "
                f"{rounds} rounds (goal A/B ≤ 1.15)", ["side", "median s", "min s", "ratio to B"], rows)
    if phases:
        keys = list(phases[0])
        print_table("P2: the phases the run's message shows (median s)", ["phase", "median s"],
                    [[k, median([p.get(k, 0.0) for p in phases])] for k in keys])
    out = write_results("p2_backup", {
        "database_bytes": size, "generate_s": gen_s, "rounds": rounds, "seconds": times, "median_s": med,
        "parts_s": parts, "phases_s": phases, "format": fmt, "jobs": jobs, "ratio_a_b": ratio(a, b), "goal_ratio": 1.15, "pending": list(PENDING),
    })
    say(f"ratio A/B = {ratio(a, b):.3f} (goal ≤ 1.15); results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
