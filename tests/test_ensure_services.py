"""scripts/ensure-services.sh: does nothing when the services answer, never apt/sudo then, says how without apt."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure-services.sh"
# Programs the script must not run when there is nothing to do (or no apt): each shim records its call and fails.
SHIMMED = ["apt-get", "apt", "sudo", "brew", "docker", "pg_ctlcluster", "systemctl", "service"]
# What a bare machine has: a shell and coreutils, none of PostgreSQL, Redis or apt.
BASICS = ["bash", "cat", "dirname", "id", "ls", "mkdir", "chmod", "chown", "seq", "sleep", "sort", "tee"]


@pytest.fixture
def shims(tmp_path: Path) -> tuple[Path, Path]:
    """A directory of recording shims, and the file they write each call to."""
    calls = tmp_path / "calls.log"
    shim_dir = tmp_path / "shims"
    shim_dir.mkdir()
    for name in SHIMMED:
        shim = shim_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim_dir, calls


def run(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PGPORT", "REDIS_PORT", "SERVICES_DIR")}
    return subprocess.run(["bash", str(SCRIPT)], env={**base, "PATH": path, **env}, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_services_that_answer_are_left_alone(shims, pg_admin_url, redis_url):
    """PostgreSQL and Redis answer (the test's own): exit 0, one line, and no apt, sudo or service manager ran."""
    shim_dir, calls = shims
    result = run(f"{shim_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("ensure-services: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; "
                                     "nothing to do")
    assert not calls.exists(), calls.read_text()


def test_without_apt_it_says_what_to_start(shims, tmp_path):
    """Nothing answers, nothing is installed, no apt (a Mac, say): how to start them, exit 1, nothing run."""
    shim_dir, calls = shims
    for name in ("apt-get", "apt"):  # this machine has no apt at all (sudo and the rest still record)
        (shim_dir / name).unlink()
    bare = tmp_path / "bin"
    bare.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        assert found, name
        (bare / name).symlink_to(found)
    result = run(f"{shim_dir}:{bare}", PGPORT=str(free_port()), REDIS_PORT=str(free_port()),
                 SERVICES_DIR=str(tmp_path / "services"))
    assert result.returncode == 1
    assert "redis-server is not installed" in result.stderr
    assert "brew install postgresql@17 redis" in result.stderr
    assert "POSTGRES_HOST_AUTH_METHOD=trust postgres:17" in result.stderr
    assert "Traceback" not in result.stderr
    assert not calls.exists(), calls.read_text()
    assert not (tmp_path / "services").exists()


@pytest.fixture
def services_dir() -> Iterator[Path]:
    """A directory the postgres account can reach (pytest's own temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ensure-services-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_down_services_get_throwaway_ones_of_their_own(shims, services_dir):
    """Nothing on the ports: Redis and a throwaway cluster start under SERVICES_DIR, with its own pg_hba.conf
    trusting loopback; the system PostgreSQL's configuration is not touched and no apt or sudo ran."""
    if not shutil.which("redis-server") or not shutil.which("psql"):
        pytest.skip("needs redis-server and psql installed")
    shim_dir, calls = shims
    pg_port, redis_port = free_port(), free_port()
    system_hba = sorted(Path("/etc/postgresql").glob("*/main/pg_hba.conf"))
    before = {p: p.read_bytes() for p in system_hba}
    data = services_dir / "pg"
    try:
        result = run(f"{shim_dir}:{os.environ['PATH']}", PGPORT=str(pg_port), REDIS_PORT=str(redis_port),
                     SERVICES_DIR=str(services_dir))
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"ensure-services: PostgreSQL (127.0.0.1:{pg_port}) and Redis (127.0.0.1:{redis_port}) answer")
        assert redis.Redis(port=redis_port).ping()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "host all all 127.0.0.1/32 trust" in (data / "pg_hba.conf").read_text()
        assert {p: p.read_bytes() for p in system_hba} == before
        assert not calls.exists(), calls.read_text()
        again = run(f"{shim_dir}:{os.environ['PATH']}", PGPORT=str(pg_port), REDIS_PORT=str(redis_port),
                    SERVICES_DIR=str(services_dir))
        assert again.returncode == 0 and "nothing to do" in again.stderr
    finally:
        pid_file = services_dir / "redis" / "redis.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), 15)
        if (data / "postmaster.pid").exists():
            pg_ctl = Path(shutil.which("pg_ctl") or "pg_ctl")
            command = [str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", "postgres", "--", *command]
            subprocess.run(command, capture_output=True, timeout=60)
