"""The native runner against a database server that crashes mid-deploy: `_prisma_migrations` never lies about it.

A throwaway cluster (tests/chaos.py) is crashed with `pg_ctl stop -m immediate` while NativeRunner.deploy applies
migrations, then restarted (WAL replay). Its WAL writer is slowed to 10 s, so commits that did not wait for
their own flush (the bookkeeping between two scripts) are really lost by the crash when nothing flushed them.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bot.integrations.prisma.migrations import PrismaError, list_local_migrations
from bot.integrations.prisma.native import NativeRunner
from tests.chaos import ThrowawayPostgres, size

COUNT = 40


@pytest.fixture(scope="module")
def cluster():
    # Not under pytest's tmp dir: that is private to us, and as root the cluster runs as another user.
    directory = Path(tempfile.mkdtemp(prefix="pg-crash-"))
    try:
        server = ThrowawayPostgres(directory, {"wal_writer_delay": "'10s'"}).init()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"no throwaway PostgreSQL cluster here: {exc}")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def migrations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-migrations")
    for i in range(COUNT):
        folder = root / f"2026010{i // 10}{i % 10:02d}0000_t{i}"
        folder.mkdir()
        (folder / "migration.sql").write_text(
            f'CREATE TABLE "t{i}" (id int PRIMARY KEY, note text);\n'
            f"INSERT INTO \"t{i}\" SELECT g, md5(g::text) FROM generate_series(1, 3000) g;\n")
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    return root


def fresh_database(cluster: ThrowawayPostgres, name: str) -> str:
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


def state(url: str) -> tuple[set[int], dict[int, list[tuple[bool, str]]]]:
    """Which migrations' tables exist, and each migration's rows as (finished, checksum)."""
    with psycopg.connect(url) as conn:
        tables = {int(name[1:]) for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^t[0-9]+$'")}
        rows: dict[int, list[tuple[bool, str]]] = {}
        exists = conn.execute("SELECT to_regclass('_prisma_migrations') IS NOT NULL").fetchone()
        if exists and exists[0]:
            for name, finished, checksum in conn.execute(
                    "SELECT migration_name, finished_at IS NOT NULL, checksum FROM _prisma_migrations "
                    "WHERE rolled_back_at IS NULL ORDER BY started_at"):
                rows.setdefault(int(name.rsplit("_t", 1)[1]), []).append((finished, checksum))
    return tables, rows


def assert_truthful(tables: set[int], rows: dict[int, list[tuple[bool, str]]], checksums: list[str]) -> None:
    """What a crash may leave: a prefix of scripts applied, each with its row, at most one row unfinished."""
    applied = len(tables)
    assert tables == set(range(applied)), f"scripts applied out of order: {sorted(tables)}"
    for i in tables:
        assert i in rows, f"migration {i} ran but has no row in _prisma_migrations"
    for i, found in rows.items():
        assert len(found) == 1, f"migration {i} has {len(found)} live rows"
        finished, checksum = found[0]
        assert checksum == checksums[i]
        if finished:
            assert i in tables, f"migration {i} is marked finished but its script is not applied"
    unfinished = [i for i, found in rows.items() if not found[0][0]]
    assert len(unfinished) <= 1, f"more than one unfinished row: {unfinished}"
    if unfinished:
        # Either the last applied script whose finish was lost, or the next one, started but not committed.
        assert unfinished[0] in (applied - 1, applied), (unfinished, applied)
    assert set(rows) <= set(range(applied + 1))


def test_a_crash_mid_deploy_leaves_a_truthful_history_and_the_deploy_can_finish(cluster, migrations):
    checksums = [m.checksum for m in list_local_migrations(migrations)]
    rounds = size(4, 12)
    mid_deploy = 0
    rng = random.Random(20261124)
    for round_number in range(rounds):
        url = fresh_database(cluster, f"crash_{round_number}")
        failure: list[BaseException] = []

        def deploy(url: str = url, failure: list[BaseException] = failure) -> None:
            try:
                NativeRunner(url, connect_timeout_s=2).deploy(migrations)
            except PrismaError as exc:  # the server went away under it
                failure.append(exc)

        worker = threading.Thread(target=deploy)
        worker.start()
        time.sleep(rng.uniform(0.05, 0.4))
        cluster.crash()
        worker.join(30)
        assert not worker.is_alive()
        cluster.start()

        tables, rows = state(url)
        assert_truthful(tables, rows, checksums)
        if 0 < len(tables) < COUNT:
            mid_deploy += 1
            assert failure, "deploy returned normally although the server crashed under it"

        # Bring it to a correct end, as an operator would after checking reality: a started row whose script
        # is applied is marked applied, one whose script is not is rolled back; then deploy again.
        runner = NativeRunner(url)
        for i, found in rows.items():
            if not found[0][0]:
                name = list_local_migrations(migrations)[i].name
                if i in tables:
                    runner.resolve_applied(migrations, name)
                else:
                    runner.resolve_rolled_back(migrations, name)
        runner.deploy(migrations)
        tables, rows = state(url)
        assert tables == set(range(COUNT))
        assert all(found == [(True, checksums[i])] for i, found in rows.items()) and len(rows) == COUNT
    assert mid_deploy >= 1, "no crash landed in the middle of a deploy; the timing needs a look"


def test_a_deploy_that_returned_survives_an_immediate_crash(cluster, migrations):
    """Every commit between two scripts skips waiting for its flush; the last one must not."""
    url = fresh_database(cluster, "crash_after")
    result = NativeRunner(url).deploy(migrations)
    assert len(result.applied) == COUNT
    cluster.crash()
    cluster.start()
    tables, rows = state(url)
    assert tables == set(range(COUNT))
    assert len(rows) == COUNT and all(found[0][0] for found in rows.values()), \
        "a migration reported applied is not marked finished after the crash"
