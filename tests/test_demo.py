"""`make demo` driven from a pipe: the README's demo script runs a whole run, and the demo leaves nothing behind."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
import redis

from bot.devtools.demo import ALIVE_KEY, DATABASE_KEY, clean_leftovers, made_by_demo
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- demo-script"
PREFIX_LINE = re.compile(r"Redis key prefix (demo:\d+-[0-9a-f]{6}:)")
APPLIED = ["20240101000000_init", "20240215000000_add_counseling_session", "20240301000000_add_email_verified"]


def readme_script(marker: str = MARKER + ":") -> str:
    """The fenced block after a demo-script marker in README.md, exactly as a reader would paste it."""
    readme = (ROOT / "README.md").read_text("utf-8")
    assert marker in readme, f"README.md lost its {marker} marker"
    match = re.search(r"^```[^\n]*\n(.*?)^```", readme[readme.index(marker):], re.S | re.M)
    assert match, f"no fenced block after the {marker} marker in README.md"
    return match.group(1)


def _drop(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _databases_of(admin_url: str, database: str) -> list[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")]
    return [name for name in names if made_by_demo(name, database)]


def _keys(redis_url: str, prefix: str) -> list[bytes]:
    return list(redis.Redis.from_url(redis_url).scan_iter(match=prefix + "*", count=1000))


def _applied(url: str) -> list[str] | None:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            rows = conn.execute("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
                                "ORDER BY started_at").fetchall()
    except psycopg.Error:
        return None
    return [str(r[0]) for r in rows]


def _start_demo(tmp_path: Path, admin_url: str, redis_url: str, database: str, out: IO[str],
                request: Any) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bot", "demo", "--workdir", str(tmp_path / "demo"),
                             "--admin-url", admin_url, "--redis-url", redis_url, "--database", database],
                            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _drop(admin_url, database)  # only when the demo could not do it itself

    request.addfinalizer(stop)
    return proc


class TestDemo:
    def test_readme_script_walks_a_run_to_succeeded(self, tmp_path, pg_admin_url, redis_url, request):
        """The README's script, piped, takes a run through two-person approval to Succeeded, exit status 0."""
        database = f"demo_{uuid.uuid4().hex[:10]}"  # a second suite running its own demo must not share it
        url = pg_admin_url.rsplit("/", 1)[0] + "/" + database
        log = tmp_path / "out.txt"
        with log.open("w") as out:
            proc = _start_demo(tmp_path, pg_admin_url, redis_url, database, out, request)
            assert proc.stdin is not None
            proc.stdin.write(readme_script())  # no `quit`: end of input ends the demo, after the check below
            proc.stdin.flush()

            def migrated() -> bool:
                assert proc.poll() is None, f"the demo ended early:\n{log.read_text()[-3000:]}"
                return _applied(url) == APPLIED

            wait_until(migrated, timeout=240, interval=0.5)  # in the database, while the demo still runs
            proc.stdin.close()
            returncode = proc.wait(timeout=300)
        text = log.read_text()
        assert returncode == 0, text[-3000:]
        assert "You requested this run, so you cannot approve it" in text
        assert "✅ Approved by @bob" in text
        assert "Smoke tests" in text and "✅ counsel: 201 in" in text
        assert "🟢 Succeeded" in text
        assert "Release" in text and "from `v1.1.0`: Add email verification" in text  # pinned to the demo's tag
        assert "Traceback" not in text and "\n! " not in text
        assert list((tmp_path / "demo" / "backups").glob("pre-migration-local-*"))

        # It removed its Redis keys (by the prefix it printed) and its database on the way out.
        match = PREFIX_LINE.search(text)
        assert match, text[:2000]
        assert _keys(redis_url, match.group(1)) == []
        assert _databases_of(pg_admin_url, database) == []
        assert f"dropped database(s) {database}" in text

    def test_readme_rollback_script_leaves_the_site_up(self, tmp_path, pg_admin_url, redis_url, request):
        """The README's second script: a failed smoke test, Option 2 by two people, then maintenance off and a
        passing smoke test: the run reads Rolled back and the demo app serves every path again."""
        database = f"demo_{uuid.uuid4().hex[:10]}"
        log = tmp_path / "out.txt"
        with log.open("w") as out:
            proc = _start_demo(tmp_path, pg_admin_url, redis_url, database, out, request)
            proc.communicate(readme_script(MARKER + "-rollback:"), timeout=600)
        text = log.read_text()
        assert proc.returncode == 0, text[-3000:]
        assert "❌ Smoke-test critical paths — Smoke tests failed: counsel failed" in text
        assert "Confirm restore" in text and "✅ Restore the database from the backup" in text
        assert "✅ Disable maintenance mode — maintenance page off" in text
        assert "✅ Smoke-test the site after the rollback — 4/4 passed" in text
        assert "⚪ Rolled back" in text
        assert text.rstrip().count("demo app: maintenance mode off; every path works") == 1
        assert "Traceback" not in text and "\n! " not in text

    def test_a_failing_line_makes_the_piped_demo_exit_non_zero(self, tmp_path, pg_admin_url, redis_url, request):
        """A mistyped command is reported as Slack would, the demo exits 1, and it still cleans up."""
        database = f"demo_{uuid.uuid4().hex[:10]}"
        log = tmp_path / "out.txt"
        with log.open("w") as out:
            proc = _start_demo(tmp_path, pg_admin_url, redis_url, database, out, request)
            proc.communicate("/migrat local\nclick nothing like this\n", timeout=120)
        text = log.read_text()
        assert proc.returncode == 1, text[-3000:]
        assert "/migrat is not a valid command" in text and "Did you mean /migrate?" in text
        assert "no button matches 'nothing like this'" in text
        assert "2 line(s) of the input failed" in text
        match = PREFIX_LINE.search(text)
        assert match and _keys(redis_url, match.group(1)) == []
        assert _databases_of(pg_admin_url, database) == []


class TestCleanLeftovers:
    @pytest.fixture
    def namespace(self, redis_url: str) -> Iterator[str]:
        """A namespace of its own, so the test never touches a demo (or test) running beside it."""
        namespace = f"demotest{uuid.uuid4().hex[:8]}:"
        yield namespace
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=namespace + "*"):
            client.delete(key)

    def test_removes_dead_demos_only(self, namespace, pg_admin_url, redis_url, request):
        """Keys and databases of a dead demo go; a running demo, other keys and other databases stay."""
        client = redis.Redis.from_url(redis_url)
        base = f"demotest_{uuid.uuid4().hex[:8]}"
        dead, live = f"{namespace}1700000000-abcdef:", f"{namespace}1700000001-123456:"
        client.set(dead + "run:local-1", "x")
        client.set(dead + DATABASE_KEY, base + "_dead")
        client.set(live + "run:local-2", "x")
        client.set(live + DATABASE_KEY, base + "_live")
        client.set(live + ALIVE_KEY, "1", ex=60)
        client.set(namespace + "not-a-demo", "x")
        made = [base, f"{base}_restored_20261201_120000", f"{base}_pre_restore_20261201_120000",
                f"{base}_rehearsal_0a1b2c", base + "_dead", base + "_live", base + "x", base + "_restored_later"]
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            for name in made:
                conn.execute(f'CREATE DATABASE "{name}"')
        request.addfinalizer(lambda: [_drop(pg_admin_url, name) for name in made])

        report = io.StringIO()
        clean_leftovers(redis_url, pg_admin_url, databases=[base], namespace=namespace, out=report)

        assert sorted(k.decode() for k in client.scan_iter(match=namespace + "*")) == sorted(
            [live + "run:local-2", live + DATABASE_KEY, live + ALIVE_KEY, namespace + "not-a-demo"])
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            left = {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                    (base + "%",))}
        assert left == {base + "_live", base + "x", base + "_restored_later"}
        assert f"{live}* belongs to a demo that is still running" in report.getvalue()
