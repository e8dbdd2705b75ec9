"""`make demo` can be driven from a pipe: the whole forward runbook through the terminal console."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """\
/migrate local
click staging
click rollback
click window
click team
click reviewed
click take backup
wait
click! approve
user bob
click! approve
wait
click Enable maintenance
wait
click Apply Prisma
wait
click Smoke-test
wait
click Disable maintenance
wait
click! looks good
wait
/migrate status
quit
"""


def _drop(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class TestDemo:
    def test_piped_demo_runs_the_whole_runbook(self, tmp_path, pg_admin_url, request):
        """Commands on stdin take a run from checklist through two-person approval to a closed, succeeded run."""
        database = f"demo_{uuid.uuid4().hex[:10]}"  # a second suite running its own demo must not share it
        result = subprocess.run([sys.executable, "-m", "bot", "demo", "--workdir", str(tmp_path / "demo"),
                                 "--admin-url", pg_admin_url, "--database", database], input=SCRIPT,
                                capture_output=True, text=True, timeout=300, cwd=ROOT)
        request.addfinalizer(lambda: _drop(pg_admin_url, database))
        out = result.stdout
        assert result.returncode == 0, result.stderr[-2000:]
        assert "You requested this run, so you cannot approve it" in out
        assert "✅ Approved by @bob" in out
        assert "Smoke tests" in out and "✅ counsel: 201 in" in out
        assert "🟢 Succeeded" in out
        assert "Traceback" not in out + result.stderr
        assert list((tmp_path / "demo" / "backups").glob("pre-migration-local-*"))
        url = pg_admin_url.rsplit("/", 1)[0] + "/" + database
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
                                "ORDER BY started_at").fetchall()
        assert [r[0] for r in rows] == ["20240101000000_init", "20240215000000_add_counseling_session",
                                        "20240301000000_add_email_verified"]
