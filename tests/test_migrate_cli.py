"""Tests of `migrate-bot migrate status|deploy|resolve`: exit codes and the lines an operator reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bot.cli.main import main

DATA = Path(__file__).parent / "data" / "prisma"
BAD = "20240103000000_bad"
MIGRATE_BOT = Path(sys.executable).parent / "migrate-bot"


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(DATA / "blog", target)
    return target


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestMigrateCli:
    def test_status_deploy_resolve_round_trip(
        self, scratch_db: str, migrations: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pending status exits 1, a failing deploy prints `Error: P3018`, resolve and a fixed deploy exit 0."""
        args = ["--dir", str(migrations), "--database-url", scratch_db]
        code, out, _ = run(capsys, "migrate", "status", *args)
        assert code == 1 and "Following migrations have not yet been applied:" in out and BAD in out

        code, out, err = run(capsys, "migrate", "deploy", *args)
        assert code == 1
        assert "Applying migration `20240101000000_init`" in out
        assert err.splitlines()[0] == "Error: P3018"
        assert f"Migration name: {BAD}" in err.splitlines()[1]

        code, _, err = run(capsys, "migrate", "deploy", *args)
        assert code == 1 and err.splitlines()[0] == "Error: P3009" and f"The `{BAD}` migration started at" in err

        code, out, _ = run(capsys, "migrate", "status", *args)
        assert code == 1 and "Following migration have failed:" in out

        code, out, _ = run(capsys, "migrate", "resolve", *args, "--rolled-back", BAD)
        assert code == 0 and f"Migration {BAD} marked as rolled back." in out

        script = migrations / BAD / "migration.sql"
        script.write_text(script.read_text().replace("SELECT 1 / 0;", ""))
        code, out, _ = run(capsys, "migrate", "deploy", *args)
        assert code == 0 and "All migrations have been successfully applied." in out

        code, out, _ = run(capsys, "migrate", "status", *args)
        assert code == 0 and "Database schema is up to date!" in out

    def test_resolve_applied_and_refusals(
        self, scratch_db: str, migrations: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """resolve --applied exits 0 once, then P3008; an unknown name is P3017; a finished one can't roll back."""
        args = ["--dir", str(migrations), "--database-url", scratch_db]
        code, out, _ = run(capsys, "migrate", "resolve", *args, "--applied", "20240101000000_init")
        assert code == 0 and "Migration 20240101000000_init marked as applied." in out
        code, _, err = run(capsys, "migrate", "resolve", *args, "--applied", "20240101000000_init")
        assert code == 1 and err.startswith("Error: P3008\n")
        code, _, err = run(capsys, "migrate", "resolve", *args, "--applied", "nope")
        assert code == 1 and err.startswith("Error: P3017\n")
        code, _, err = run(capsys, "migrate", "resolve", *args, "--rolled-back", "20240101000000_init")
        assert code == 1 and err.startswith("Error: P3012\n")

    def test_deploy_with_nothing_pending(
        self, scratch_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DATABASE_URL is the default URL; a second deploy says there is nothing to apply and exits 0."""
        monkeypatch.setenv("DATABASE_URL", scratch_db)
        target = tmp_path / "migrations"
        shutil.copytree(DATA / "concurrent", target)
        assert run(capsys, "migrate", "deploy", "--dir", str(target))[0] == 0
        code, out, _ = run(capsys, "migrate", "deploy", "--dir", str(target))
        assert code == 0 and "No pending migrations to apply." in out

    def test_lock_timeout_option_reaches_the_runner(
        self, scratch_db: str, migrations: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--lock-timeout-ms and --lock-retries 0 make a blocked ALTER fail fast, naming the blocker."""
        args = ["--dir", str(migrations), "--database-url", scratch_db]
        for name in (BAD, "20240102000000_add_post"):
            shutil.rmtree(migrations / name)
        later = migrations / "20240104000000_later"
        later_sql = (later / "migration.sql").read_text()
        shutil.rmtree(later)
        assert run(capsys, "migrate", "deploy", *args)[0] == 0
        later.mkdir()
        (later / "migration.sql").write_text(later_sql)
        with psycopg.connect(scratch_db) as blocker:
            blocker.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')
            code, _, err = run(capsys, "migrate", "deploy", *args, "--lock-timeout-ms", "200", "--lock-retries", "0")
            pid = blocker.info.backend_pid
            blocker.rollback()
        assert code == 1 and err.startswith("Error: P3018\n") and f"blocked by pid {pid}" in err

    def test_installed_command_never_prints_a_traceback(self, pg_admin_url: str, migrations: Path) -> None:
        """The installed `migrate-bot` reports an unreachable database in one line with the password removed."""
        url = "postgresql://postgres:hunter2secret@127.0.0.1:1/nowhere"
        proc = subprocess.run(
            [str(MIGRATE_BOT), "migrate", "status", "--dir", str(migrations), "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[0] == "Error: P1001"
        assert "Can't reach database server at `127.0.0.1:1`" in proc.stderr
        assert "Traceback" not in proc.stderr and "hunter2secret" not in proc.stdout + proc.stderr

    def test_missing_database_url_is_a_usage_error(
        self, migrations: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without --database-url or DATABASE_URL the command exits 2 with a one-line message."""
        monkeypatch.delenv("DATABASE_URL", raising=False)
        code, _, err = run(capsys, "migrate", "status", "--dir", str(migrations))
        assert code == 2 and "DATABASE_URL" in err
