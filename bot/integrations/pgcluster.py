"""Throwaway PostgreSQL clusters (initdb + pg_ctl in a temp dir, unix socket only) for verifying and rehearsing backups."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from bot.errors import IntegrationError
from bot.redact import redact

log = logging.getLogger(__name__)

DIR_PREFIX = "migrate-bot-pg-"
MARKER = "migrate-bot-cluster.json"
SERVER_ROOTS = (Path("/usr/lib/postgresql"), Path("/usr/local/lib/postgresql"))
_PORT = 5432  # only names the socket file: the cluster listens on no TCP port at all
_DUMPED_FROM = re.compile(r"Dumped from database version:\s*(\d+)(?:\.\d+)?")
# A disposable copy: durability is worth nothing here, speed is.
_SETTINGS = {
    "listen_addresses": "''",
    "port": str(_PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'30min'",
    "autovacuum": "off",
    "max_connections": "40",
}
# The dump is restored by a superuser (extensions and all), then everything it made is handed to a role that
# is NOT one: the unreviewed migrations run as that owner, so COPY … TO PROGRAM, ALTER SYSTEM, untrusted
# extensions (dblink, postgres_fdw) and superuser roles are refused before approval, even on the throwaway host.
RESTORE_ROLE = "migrate_bot_restore"
REHEARSAL_ROLE = "migrate_bot_rehearsal"
# The only line of pg_hba.conf: the unix socket in the cluster's private directory, nothing over TCP.
_HBA = "local all all trust\n"


class ClusterError(IntegrationError):
    """A throwaway cluster could not be made, started or found binaries for."""


def dump_major_version(header: str) -> int | None:
    """The server major version from ``pg_restore --list`` output (``Dumped from database version: 15.4``)."""
    match = _DUMPED_FROM.search(header)
    return int(match.group(1)) if match else None


def _server_tools_in(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def _installed(roots: tuple[Path, ...], path: str | None) -> dict[int, Path]:
    """{major: bin dir} under Debian-style ``<root>/<major>/bin``, plus the initdb on ``path`` (Homebrew, RPMs)."""
    found: dict[int, Path] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.name.isdigit() and _server_tools_in(entry / "bin"):
                found.setdefault(int(entry.name), entry / "bin")
    initdb = shutil.which("initdb", path=path) if path else None
    if initdb and _server_tools_in(Path(initdb).parent):
        try:
            version = subprocess.run([initdb, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            version = ""
        match = re.search(r"\(PostgreSQL\)\s+(\d+)", version)
        if match:
            found.setdefault(int(match.group(1)), Path(initdb).parent)
    return found


def server_binaries(major: int | None, roots: tuple[Path, ...] = SERVER_ROOTS, path: str | None = None) -> Path:
    """The bin directory of the server matching ``major``, else the newest newer one; ClusterError if none fits.

    ``path`` (default: $PATH) is searched for initdb too, for installs that are not laid out like Debian's.
    """
    found = _installed(roots, os.environ.get("PATH") if path is None else path)
    usable = sorted(v for v in found if major is None or v >= major)
    if major is not None and major in found:
        return found[major]
    if usable:
        return found[usable[-1]]
    have = ", ".join(str(v) for v in sorted(found)) or "none"
    wanted = f"PostgreSQL {major} or newer" if major is not None else "a PostgreSQL server"
    raise ClusterError(f"No server binaries for {wanted} to restore into (installed under "
                       f"{', '.join(str(r) for r in roots)}: {have}); install the postgresql-{major or 'NN'} package.")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (so a reused pid is not mistaken for its owner), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return ""  # alive, start time unknown (not Linux)


def _owner_alive(marker: dict[str, object]) -> bool:
    pid = marker.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    if started is None:
        return False
    return not started or not marker.get("started") or started == marker.get("started")


def _clean_env() -> dict[str, str]:
    """What the server (and anything a migration runs with COPY … TO PROGRAM) inherits: no secrets, no URLs."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env["LC_MESSAGES"] = "C"
    return env


def _as_user() -> list[str]:
    """initdb refuses to run as root: as root, run the cluster as ``postgres`` (the bot's image is not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise ClusterError("Running as root without runuser: cannot start a throwaway cluster as postgres.")
    return ["runuser", "-u", "postgres", "--"]


class LocalCluster:
    """One throwaway cluster in its own directory; ``stop()`` kills it and removes the directory."""

    def __init__(self, bindir: Path, *, base_dir: Path | None = None) -> None:
        self.bindir = Path(bindir)
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
        self.directory: Path | None = None

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.directory is not None
        return self.directory

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq URL reaching ``database`` through this cluster's socket only (no host, no password)."""
        return (f"postgresql://{user}@/{quote(database, safe='')}?host={quote(str(self.socket_dir), safe='')}"
                f"&port={_PORT}")

    def execute(self, statement: sql.Composed, database: str = "postgres") -> None:
        """Run one statement as the bootstrap superuser."""
        try:
            with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
                conn.execute(statement)
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ClusterError(f"Throwaway cluster: {redact(lines[0])}") from exc

    def create_database(self, name: str) -> tuple[str, str]:
        """A database owned by the non-superuser rehearsal role: (the URL to restore into as the restore
        superuser, the URL of the rehearsal role). Call ``hand_over`` after the restore."""
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(REHEARSAL_ROLE)))
        return self.url(name, RESTORE_ROLE), self.url(name, REHEARSAL_ROLE)

    def hand_over(self, name: str) -> None:
        """Give everything the restore made in ``name`` to the rehearsal role (not a superuser)."""
        self.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(RESTORE_ROLE),
                                                                 sql.Identifier(REHEARSAL_ROLE)), name)

    def _run(self, args: list[str], timeout_s: float, what: str) -> None:
        try:
            done = subprocess.run([*_as_user(), *args], env=_clean_env(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{what} did not finish within {timeout_s:g} s.") from exc
        except OSError as exc:
            raise ClusterError(f"{what} could not start: {exc.strerror}") from exc
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise ClusterError(f"{what} failed (exit {done.returncode}): {redact(lines[-1] if lines else 'no output')}")

    def start(self, timeout_s: float = 120) -> LocalCluster:
        """initdb in a new private directory (marked with this process as its owner), then start the server."""
        sweep(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.base_dir))
        marker = {"pid": os.getpid(), "started": _process_start(os.getpid()), "bindir": str(self.bindir),
                  "created": time.time()}
        (self.directory / MARKER).write_text(json.dumps(marker))
        try:
            if _as_user():
                shutil.chown(self.directory, "postgres", "postgres")
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                       "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8"], timeout_s, "initdb")
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in _SETTINGS.items())
                conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
            (self.data / "pg_hba.conf").write_text(_HBA)
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "server.log"),
                       "-w", "-t", str(int(timeout_s)), "start"], timeout_s + 10, "pg_ctl start")
            self.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(RESTORE_ROLE)))
            self.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE NOSUPERUSER").format(
                sql.Identifier(REHEARSAL_ROLE)))
        except BaseException:
            self.stop()
            raise
        log.info("throwaway cluster started in %s", self.directory)
        return self

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth flushing) and delete its directory."""
        if self.directory is None:
            return
        _remove(self.directory, self.bindir)
        self.directory = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _postmaster_pid(data: Path) -> int | None:
    try:
        first = (data / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


def _remove(directory: Path, bindir: Path | None) -> None:
    """pg_ctl stop -m immediate (or kill the postmaster if that fails), then rm -rf the cluster directory."""
    data = directory / "data"
    if (data / "postmaster.pid").exists():
        pid = _postmaster_pid(data)
        stopped = False
        if bindir is not None and (bindir / "pg_ctl").is_file():
            try:
                subprocess.run([*_as_user(), str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                "-t", "30", "stop"], env=_clean_env(), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=40, check=False)
                stopped = not (data / "postmaster.pid").exists()
            except (OSError, subprocess.TimeoutExpired, ClusterError):
                stopped = False
        if not stopped and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    shutil.rmtree(directory, ignore_errors=True)


def sweep(base_dir: Path | None = None) -> list[Path]:
    """Remove throwaway clusters whose owning process is gone (a bot killed mid-rehearsal); return their dirs."""
    base = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX) or not entry.is_dir():
            continue
        try:
            marker = json.loads((entry / MARKER).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not isinstance(marker, dict) or _owner_alive(marker):
            continue
        bindir = marker.get("bindir")
        log.warning("removing a throwaway cluster left by process %s: %s", marker.get("pid"), entry)
        _remove(entry, Path(bindir) if isinstance(bindir, str) else None)
        removed.append(entry)
    return removed
