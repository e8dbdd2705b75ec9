"""Throwaway clusters for verify and rehearsal: made and removed, swept after a killed bot, the dump's version picked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.integrations.pgcluster import (
    DIR_PREFIX,
    ClusterError,
    LocalCluster,
    dump_major_version,
    server_binaries,
    sweep,
)
from bot.integrations.postgres import pg_dump, pg_restore_header
from tests.harness import wait_until


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp dir: that is private to root, and as root the clusters run as postgres.
    directory = Path(tempfile.mkdtemp(prefix="pgcluster-test-"))
    directory.chmod(0o755)
    yield directory
    sweep(directory)
    shutil.rmtree(directory, ignore_errors=True)


def installed_major() -> int:
    try:
        return int(server_binaries(None).parent.name)
    except ClusterError as exc:
        pytest.skip(str(exc))


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def cluster_of_a_killed_bot(base: Path) -> Path:
    """The directory of a running cluster whose owner (a stand-in bot process) was killed with SIGKILL."""
    script = (
        "import time; from pathlib import Path\n"
        "from bot.integrations.pgcluster import LocalCluster, server_binaries\n"
        f"c = LocalCluster(server_binaries(None), base_dir=Path({str(base)!r})).start()\n"
        "print(c.directory, flush=True); time.sleep(600)\n"
    )
    bot = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert bot.stdout is not None
        return Path(bot.stdout.readline().strip())
    finally:
        bot.kill()
        bot.wait(10)


def postmaster_pid(directory: Path) -> int:
    return int((directory / "data" / "postmaster.pid").read_text().splitlines()[0])


class TestLocalCluster:
    def test_cluster_is_created_reachable_only_by_socket_and_removed(self, base: Path) -> None:
        """A cluster starts in its own marked directory, listens on no TCP port, and stop() removes it all."""
        cluster = LocalCluster(server_binaries(installed_major()), base_dir=base).start()
        directory = cluster.directory
        assert directory is not None and (directory / "migrate-bot-cluster.json").is_file()
        pid = postmaster_pid(directory)
        assert answers(cluster.url()) and "host=" in cluster.url() and "127.0.0.1" not in cluster.url()
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        cluster.stop()
        assert not directory.exists() and cluster.directory is None
        wait_until(lambda: not alive(pid), timeout=10)

    def test_leftover_of_a_killed_bot_is_swept(self, base: Path) -> None:
        """A bot killed with its cluster running leaves it behind; the next sweep stops it and removes its dir,
        while a cluster whose owner is alive is left alone."""
        leftover = cluster_of_a_killed_bot(base)
        assert leftover.name.startswith(DIR_PREFIX) and leftover.is_dir()
        orphan_pid = postmaster_pid(leftover)
        assert alive(orphan_pid)  # the server outlived the bot that started it
        mine = LocalCluster(server_binaries(None), base_dir=base).start()  # starting a cluster sweeps first
        try:
            assert not leftover.exists()
            wait_until(lambda: not alive(orphan_pid), timeout=10)
            assert sweep(base) == [] and mine.directory is not None and mine.directory.exists()
            assert answers(mine.url())
        finally:
            mine.stop()

    def test_marker_naming_a_dead_owner_is_swept(self, base: Path) -> None:
        """sweep() alone (as at bot start) removes a directory whose marker names a process that is gone."""
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(done.stdout)
        leftover = base / f"{DIR_PREFIX}dead"
        leftover.mkdir()
        (leftover / "migrate-bot-cluster.json").write_text(f'{{"pid": {dead_pid}, "started": "1"}}')
        stranger = base / f"{DIR_PREFIX}nomarker"  # not ours (or still being made): never touched
        stranger.mkdir()
        assert sweep(base) == [leftover]
        assert not leftover.exists() and stranger.exists()


class TestVersionPicking:
    def test_major_version_read_from_the_dump_header(self, scratch_db: str, tmp_path: Path) -> None:
        """The dump's "Dumped from database version" picks the server binaries of that major version."""
        dump = pg_dump(scratch_db, tmp_path / "x.dump")
        with psycopg.connect(scratch_db) as conn:
            live_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        assert dump_major_version(pg_restore_header(dump)) == live_major
        if live_major in (15, installed_major()):
            assert server_binaries(live_major).parent.name == str(live_major)
        assert dump_major_version(";     Dumped from database version: 16.2 (Debian 16.2-1)\n") == 16
        assert dump_major_version("; no version here") is None

    @pytest.fixture
    def roots(self, tmp_path: Path) -> tuple[Path, ...]:
        root = tmp_path / "postgresql"
        for major in (13, 15, 16):
            bindir = root / str(major) / "bin"
            bindir.mkdir(parents=True)
            for tool in ("initdb", "pg_ctl", "postgres"):
                (bindir / tool).write_text("")
        (root / "17" / "bin").mkdir(parents=True)  # client only: no server binaries
        return (root,)

    def test_exact_major_else_newest_newer_else_a_clear_error(self, roots: tuple[Path, ...]) -> None:
        assert server_binaries(15, roots, path="").parent.name == "15"
        assert server_binaries(14, roots, path="").parent.name == "16"
        assert server_binaries(None, roots, path="").parent.name == "16"
        with pytest.raises(ClusterError, match=r"No server binaries for PostgreSQL 17 or newer .*installed.*13, 15, 16"):
            server_binaries(17, roots, path="")

    def test_initdb_on_the_path_counts_with_its_own_version(self, roots: tuple[Path, ...], tmp_path: Path) -> None:
        """An install not laid out like Debian's (Homebrew, RPMs): the initdb on PATH, by `initdb --version`."""
        other = tmp_path / "opt" / "bin"
        other.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "postgres"):
            (other / tool).write_text("#!/bin/sh\necho 'initdb (PostgreSQL) 17.2'\n")
            (other / tool).chmod(0o755)
        assert server_binaries(17, roots, path=str(other)) == other
        assert server_binaries(15, roots, path=str(other)).parent.name == "15"


class TestSweepOnBotStart:
    def test_bot_start_removes_a_killed_bots_cluster(self, base: Path, tmp_path: Path, redis_url: str) -> None:
        """`migrate-bot serve` sweeps the configured cluster directory before it serves anything."""
        from bot.devtools.slack.server import FakeSlack
        from tests.harness import ALICE, BOB, BOT_TOKEN, PROD_CHANNEL, BotProcess, write_config

        leftover = cluster_of_a_killed_bot(base)
        orphan_pid = postmaster_pid(leftover)
        config = {"environments": {"prod": {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
            "rehearsal": {"target": "local", "local_dir": str(base)},
        }}}
        fake = FakeSlack(token=BOT_TOKEN).start()
        bot = BotProcess(config_path=write_config(tmp_path / "env.yml", config), slack_api_url=fake.base_url,
                         redis_url=redis_url, key_prefix=f"test:sweep:{os.getpid()}:", log_path=tmp_path / "bot.log")
        try:
            bot.start()
            assert not leftover.exists()
            wait_until(lambda: not alive(orphan_pid), timeout=10)
            assert "removing a throwaway cluster left by process" in bot.logs()
        finally:
            bot.stop()
            fake.stop()
