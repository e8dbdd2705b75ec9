"""Shared helpers of the chaos / fuzz suite (tests/test_chaos_*.py): sizes, a slow AWS link, a throwaway Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import redis

from tests.harness import free_port, wait_until

FULL = os.environ.get("MIGRATE_BOT_FULL") == "1"
"""`make test-full` (MIGRATE_BOT_FULL=1) runs every chaos test at the issue's full size."""


def size(ci: int, full: int) -> int:
    """The CI subset's size, or the full size under MIGRATE_BOT_FULL=1."""
    return full if FULL else ci


class SlowLink:
    """A forwarding HTTP proxy in front of moto: the bot's AWS calls can be made slow, and are counted.

    AWS calls are named by their API action (X-Amz-Target for JSON services such as ECS, `Action=` for
    query services such as RDS), so a test can tell which side effects really reached AWS.
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.delay_s = 0.0
        self.actions: list[str] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=120)
        link = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = link._action(self.headers.get("X-Amz-Target"), body, self.path)
                with link._lock:
                    link.actions.append(action)
                if link.delay_s:
                    time.sleep(link.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                response = link._http.request(self.command, link.target + self.path, content=body, headers=headers)
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @staticmethod
    def _action(target: str | None, body: bytes, path: str) -> str:
        if target:
            return target.rsplit(".", 1)[-1]
        if body[:200].find(b"Action=") >= 0:
            return parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
        return path.split("?", 1)[0]

    def count(self, action: str) -> int:
        with self._lock:
            return self.actions.count(action)

    def stop(self) -> None:
        self._server.shutdown()
        self._http.close()


class ThrowawayRedis:
    """A redis-server this test owns, with AOF fsync'd on every write, on a free port and a private dir."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ThrowawayRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.up, timeout=10)
        return self

    def up(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def step_starts(store, run_id: str, name: str) -> list:
    """The audit entries that started (or retried) one step."""
    return [e for e in store.audit_entries(run_id)
            if e.action in ("step.start", "step.retry") and e.data.get("step") == name]


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else in the newest /usr/lib/postgresql/<version>/bin (Debian)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(candidates[-1]) if candidates else None


class ThrowawayPostgres:
    """A PostgreSQL cluster this test owns (initdb in a private dir, a free port), which it may crash.

    ``crash()`` is ``pg_ctl stop -m immediate``: every server process quits at once, nothing is flushed, and the
    next start replays the WAL, as after a power cut of the database host. As root, the cluster runs as the
    ``postgres`` user (initdb refuses root). ``settings`` are extra ``postgresql.conf`` lines.
    """

    def __init__(self, directory: Path, settings: dict[str, str] | None = None) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root without runuser: cannot start a cluster as postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.settings = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                         "unix_socket_directories": f"'{directory}'", "fsync": "on", **(settings or {})}

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)

    def init(self) -> ThrowawayPostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.directory, "postgres", "postgres")
        assert self.initdb is not None
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in self.settings.items())
        return self

    def start(self) -> ThrowawayPostgres:
        assert self.pg_ctl is not None
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w", "start")
        return self

    def crash(self) -> None:
        assert self.pg_ctl is not None
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        assert self.pg_ctl is not None
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
