"""Tests of CliRunner driving tests/fakes/fake_prisma.py, the offline stand-in for `prisma migrate`."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from bot.integrations.prisma.cli import CliRunner
from bot.integrations.prisma.migrations import PrismaError
from bot.integrations.prisma.native import NativeRunner

FAKE = Path(__file__).parent / "fakes" / "fake_prisma.py"
DATA = Path(__file__).parent / "data" / "prisma"
BAD = "20240103000000_bad"


def make_runner(url: str, migrations: Path, **env: str) -> CliRunner:
    """A CliRunner whose command is the fake Prisma CLI, pointed at ``migrations``."""
    base = dict(os.environ)
    base.update(PRISMA_MIGRATIONS_DIR=str(migrations), **env)
    return CliRunner([sys.executable, str(FAKE), "migrate"], url, cwd=migrations.parent, env=base, timeout_s=60)


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    target = tmp_path / "prisma" / "migrations"
    shutil.copytree(DATA / "blog", target)
    return target


class TestCliRunner:
    def test_status_parses_pending(self, scratch_db: str, migrations: Path) -> None:
        """On a fresh database status exits 1 and lists every local migration as pending."""
        status = make_runner(scratch_db, migrations).status()
        assert status.exit_code == 1 and not status.up_to_date
        assert status.pending == [p.name for p in sorted(migrations.iterdir()) if p.is_dir()]
        assert status.failed == []

    def test_deploy_applies_and_status_is_up_to_date(self, scratch_db: str, migrations: Path) -> None:
        """deploy applies the migrations (rows appear) and status then says up to date with exit 0."""
        shutil.rmtree(migrations / BAD)
        lines: list[str] = []
        result = make_runner(scratch_db, migrations).deploy(on_line=lines.append)
        names = ["20240101000000_init", "20240102000000_add_post", "20240104000000_later"]
        assert [a.name for a in result.applied] == names
        assert "Applying migration `20240101000000_init`" in lines
        assert "All migrations have been successfully applied." in lines
        assert [r.migration_name for r in NativeRunner(scratch_db).rows()] == names
        status = make_runner(scratch_db, migrations).status()
        assert status.up_to_date and status.exit_code == 0 and status.pending == []

    def test_failing_migration_is_p3018_then_p3009(self, scratch_db: str, migrations: Path) -> None:
        """A failing file raises P3018 naming it; the next deploy raises P3009; status lists it once nothing is pending."""
        runner = make_runner(scratch_db, migrations)
        with pytest.raises(PrismaError) as failure:
            runner.deploy()
        assert failure.value.code == "P3018" and failure.value.migration_name == BAD
        assert failure.value.database_error_code == "22012"
        with pytest.raises(PrismaError) as blocked:
            runner.deploy()
        assert blocked.value.code == "P3009" and blocked.value.migration_name == BAD
        assert "UTC failed" in str(blocked.value)
        shutil.rmtree(migrations / "20240104000000_later")
        status = runner.status()
        assert status.failed == [BAD] and status.exit_code == 1

    def test_resolve_rolled_back_then_fixed_deploy(self, scratch_db: str, migrations: Path) -> None:
        """After resolve --rolled-back and a fixed file, deploy applies the rest; a second resolve is P3012."""
        runner = make_runner(scratch_db, migrations)
        with pytest.raises(PrismaError):
            runner.deploy()
        runner.resolve_rolled_back(BAD)
        with pytest.raises(PrismaError) as again:
            runner.resolve_rolled_back(BAD)
        assert again.value.code == "P3012"
        script = migrations / BAD / "migration.sql"
        script.write_text(script.read_text().replace("SELECT 1 / 0;", ""))
        assert [a.name for a in runner.deploy().applied] == [BAD, "20240104000000_later"]

    def test_timeout_kills_the_process_group(self, scratch_db: str, migrations: Path) -> None:
        """A CLI that hangs past timeout_s is killed and reported as CLI_TIMEOUT without touching the database."""
        runner = make_runner(scratch_db, migrations, FAKE_PRISMA_SLEEP_S="30")
        runner.timeout_s = 1
        started = time.monotonic()
        with pytest.raises(PrismaError) as timed_out:
            runner.deploy()
        assert timed_out.value.code == "CLI_TIMEOUT"
        assert time.monotonic() - started < 10
        assert NativeRunner(scratch_db).rows() == []

    def test_missing_executable_is_reported(self, scratch_db: str, tmp_path: Path) -> None:
        """A command that does not exist is one readable PrismaError, not an OSError."""
        runner = CliRunner([str(tmp_path / "no-such-prisma"), "migrate"], scratch_db)
        with pytest.raises(PrismaError) as missing:
            runner.status()
        assert missing.value.code == "CLI_NOT_FOUND"

    def test_output_lines_are_redacted(self, pg_admin_url: str, migrations: Path) -> None:
        """A password in the database URL never reaches the on_line callback or the error."""
        url = pg_admin_url.replace("postgres@", "postgres:hunter2secret@").rsplit("/", 1)[0] + "/no_such_db_x"
        lines: list[str] = []
        with pytest.raises(PrismaError) as failure:
            make_runner(url, migrations, FAKE_PRISMA_ECHO_URL="1").status(on_line=lines.append)
        assert failure.value.code == "P1003"
        assert lines and not any("hunter2secret" in line for line in lines)
        assert "hunter2secret" not in str(failure.value)
