"""The one restore of a run's backup, on an isolated PostgreSQL (never the production server), shared by verify and rehearsal."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bot.config import RehearsalConfig, server_address
from bot.errors import BotError, IntegrationError
from bot.integrations.aws import Aws
from bot.integrations.pgcluster import LocalCluster, dump_major_version, server_binaries
from bot.integrations.postgres import Postgres, database_of, pg_restore, pg_restore_header

log = logging.getLogger(__name__)

SCRATCH_MARK = "_rehearsal_"


def scratch_name(database: str) -> str:
    """``<database>_rehearsal_<6 hex>``, short enough for PostgreSQL's 63-byte names."""
    return f"{database[:40]}{SCRATCH_MARK}{uuid.uuid4().hex[:6]}"


@dataclass
class RestoredCopy:
    """A database restored from a backup on an isolated server; ``close()`` disposes of it (and its server)."""

    url: str
    database: str
    where: str  # for people: "a throwaway PostgreSQL 15 cluster", "the rehearsal server db2:5432"
    sha256: str | None = None  # what it was restored from: the dump's sha256, or the RDS snapshot's identifier
    _cleanup: Callable[[], None] = field(default=lambda: None, repr=False)
    closed: bool = False

    def close(self) -> list[str]:
        """Dispose of the copy; cleanup problems come back as notes (``could not drop …``), never raised."""
        if self.closed:
            return []
        self.closed = True
        try:
            self._cleanup()
        except BotError as exc:
            log.warning("could not drop the restored copy %s: %s", self.database, exc)
            return [f"could not drop the restored copy {self.database} ({self.where}): {exc}"]
        return []


def _local(dump: Path, cfg: RehearsalConfig, database: str, jobs: int, timeout_s: float,
           progress: Callable[[str], None]) -> RestoredCopy:
    major = dump_major_version(pg_restore_header(dump, timeout_s=timeout_s))
    bindir = server_binaries(major)
    cluster = LocalCluster(bindir, base_dir=Path(cfg.local_dir) if cfg.local_dir else None)
    progress(f"Starting a throwaway PostgreSQL {bindir.parent.name} cluster to restore the backup into")
    cluster.start(timeout_s=min(timeout_s, 300))
    copy = RestoredCopy(url=cluster.url(database), database=database,
                        where=f"a throwaway PostgreSQL {bindir.parent.name} cluster", _cleanup=cluster.stop)
    try:
        restore_url, copy.url = cluster.create_database(database)
        progress(f"Restoring the backup into {copy.where}")
        pg_restore(dump, restore_url, jobs=jobs, no_owner=True, timeout_s=timeout_s, tool_dir=bindir)
        cluster.hand_over(database)  # the migrations run as its owner, who is not a superuser
    except BaseException:
        copy.close()
        raise
    return copy


def _separate_server(dump: Path, cfg: RehearsalConfig, live_url: str | None, database: str, jobs: int,
                     timeout_s: float, progress: Callable[[str], None]) -> RestoredCopy:
    assert cfg.database_url
    if live_url and server_address(cfg.database_url) == server_address(live_url):
        raise IntegrationError("rehearsal.database_url is the production server; refusing to restore there.")
    server = Postgres(cfg.database_url)
    host, port = server_address(cfg.database_url)
    copy = RestoredCopy(url=server.url_for_database(database), database=database,
                        where=f"the rehearsal server {host}:{port}",
                        _cleanup=lambda: server.drop_database(database))
    progress(f"Restoring the backup into {database} on {copy.where}")
    server.create_database(database)
    try:
        pg_restore(dump, copy.url, jobs=jobs, no_owner=True, timeout_s=timeout_s)
    except BaseException:
        copy.close()
        raise
    return copy


def restore_isolated(
    dump: Path,
    cfg: RehearsalConfig | None,
    *,
    live_url: str | None,
    database: str | None = None,
    jobs: int = 1,
    timeout_s: float = 3600,
    progress: Callable[[str], None] | None = None,
) -> RestoredCopy:
    """Restore ``dump`` on the configured isolated target (default: a throwaway local cluster)."""
    cfg = cfg or RehearsalConfig()
    emit = progress or (lambda _line: None)
    database = database or scratch_name(database_of(live_url or "") or "app")
    if cfg.target == "database_url":
        return _separate_server(dump, cfg, live_url, database, jobs, timeout_s, emit)
    if cfg.target == "rds_restore":
        raise IntegrationError("rehearsal target rds_restore restores the RDS snapshot, not a pg_dump file.")
    return _local(dump, cfg, database, jobs, timeout_s, emit)


def _rds_url(template: str | None, address: str, port: int) -> str:
    """The rehearsal credentials (``rehearsal.database_url``) pointed at the temporary instance's endpoint."""
    if not template:
        raise IntegrationError("rehearsal target rds_restore needs rehearsal.database_url: the user, password and "
                               "database to use on the temporary instance (its host is replaced).")
    parts = urlsplit(template)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}:{port}" if userinfo else f"{address}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def restore_rds(
    aws: Aws,
    snapshot_id: str,
    cfg: RehearsalConfig,
    *,
    run_id: str,
    endpoint: Callable[[str], str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RestoredCopy:
    """A temporary RDS instance restored from ``snapshot_id``, deleted when the copy is closed.

    ``endpoint`` maps the new instance's identifier to the URL to connect to (default: its RDS endpoint with
    the credentials of ``rehearsal.database_url``); tests point it at a local cluster, as moto runs no server.
    """
    emit = progress or (lambda _line: None)
    instance_id = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", f"rehearsal-{run_id}"))[:50].strip("-")
    instance_id = f"{instance_id}-{uuid.uuid4().hex[:6]}"
    emit(f"Restoring snapshot {snapshot_id} into the temporary RDS instance {instance_id}")
    aws.restore_instance_from_snapshot(snapshot_id, instance_id, cfg.rds_instance_class)
    copy = RestoredCopy(url="", database=instance_id, where=f"the temporary RDS instance {instance_id}",
                        sha256=snapshot_id, _cleanup=lambda: aws.delete_instance(instance_id))
    try:
        aws.wait_instance_available(instance_id)
        copy.url = endpoint(instance_id) if endpoint is not None else _rds_url(
            cfg.database_url, *aws.instance_endpoint(instance_id))
    except BaseException:
        copy.close()
        raise
    return copy


# ---------------------------------------------------------------------------------------------------------------
# The copy the backup step verified, kept for the rehearsal that follows it in this process
# ---------------------------------------------------------------------------------------------------------------

_HELD: dict[str, RestoredCopy] = {}
_HELD_LOCK = threading.Lock()


def hold(run_id: str, copy: RestoredCopy) -> None:
    """Keep ``copy`` for the run's rehearsal (replacing, and disposing of, an older one)."""
    with _HELD_LOCK:
        old = _HELD.pop(run_id, None)
        _HELD[run_id] = copy
    if old is not None and old is not copy:
        old.close()


def take(run_id: str, sha256: str | None) -> RestoredCopy | None:
    """The held copy of exactly this backup (by sha256), now the caller's to close; None if there is none."""
    with _HELD_LOCK:
        copy = _HELD.pop(run_id, None)
    if copy is None:
        return None
    if copy.closed or not sha256 or copy.sha256 != sha256:
        copy.close()
        return None
    return copy


def release(run_id: str) -> list[str]:
    """Dispose of a held copy nobody took (rehearsal off, nothing pending, the run gone)."""
    with _HELD_LOCK:
        copy = _HELD.pop(run_id, None)
    return copy.close() if copy is not None else []
