"""Backups by pg_dump: take one to local disk or versioned S3, verify it by a test restore, and fetch it back for a restore."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bot.backup.evidence import (
    BACKUP_PREFIX,
    BackupEvidence,
    LocalTarget,
    S3Target,
    Verification,
    backup_name,
    compare_with_live,
    human_size,
    no_progress,
    sha256_of,
)
from bot.backup.sandbox import RestoredCopy, restore_isolated
from bot.config import RehearsalConfig
from bot.errors import BackupError, IntegrationError
from bot.integrations.aws import Aws, S3Object
from bot.integrations.postgres import Postgres, describe_database, pg_dump, pg_restore_list

log = logging.getLogger(__name__)

_EXTENSIONS = {"custom": ".dump", "directory": ".tar"}
_SIDECAR = ".json"
_NO_RESTORE_NOTE = "test restore skipped (verify_restore is off): checked by sha256 and pg_restore --list only"


def _name_pattern(run_id: str, extensions: tuple[str, ...] = ("",)) -> re.Pattern[str]:
    """Names of this run's backups only (``run-1`` must not match ``run-1-b``'s backups)."""
    ext = "|".join(re.escape(e) for e in extensions)
    return re.compile(rf"^{re.escape(BACKUP_PREFIX + run_id)}-\d{{8}}-\d{{6}}(?:{ext})$")


# ---------------------------------------------------------------------------------------------------------------
# Directory-format packing
# ---------------------------------------------------------------------------------------------------------------


def _pack(directory: Path, out: Path, arcname: str) -> None:
    """An uncompressed tar of a directory-format dump (its data files are already compressed)."""
    with tarfile.open(out, "w") as tar:
        tar.add(directory, arcname=arcname)


def _unpack(archive: Path, into: Path) -> Path:
    """Extract a packed directory-format dump safely and return the dump directory inside it."""
    with tarfile.open(archive, "r") as tar:
        tar.extractall(into, filter="data")
    tocs = sorted(into.rglob("toc.dat"))
    if not tocs:
        raise BackupError(f"{archive.name} does not contain a directory-format dump (no toc.dat).")
    return tocs[0].parent


@contextmanager
def restorable(path: Path, fmt: str) -> Iterator[Path]:
    """The path pg_restore can read for a stored backup file (unpacking a directory-format tar)."""
    if fmt != "directory":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="migrate-bot-unpack-") as tmp:
        yield _unpack(path, Path(tmp))


def format_of(filename: str) -> Literal["custom", "directory"]:
    return "directory" if filename.endswith(_EXTENSIONS["directory"]) else "custom"


# ---------------------------------------------------------------------------------------------------------------
# Restore verification
# ---------------------------------------------------------------------------------------------------------------


def _verify_restore(
    dump: Path,
    *,
    live_url: str,
    isolation: RehearsalConfig | None,
    sha256: str | None,
    jobs: int,
    live_tables: list[str],
    live_migrations: int | None,
    timeout_s: float,
    progress: Callable[[str], None],
    keep: Callable[[RestoredCopy], bool] | None,
) -> Verification:
    """Restore ``dump`` on an isolated server (never the live one) and compare it with the live database.

    The copy is disposed of unless it verified and ``keep`` takes it (for the rehearsal that follows). A failed
    restore is reported as not verified (with the reason).
    """
    try:
        copy = restore_isolated(dump, isolation, live_url=live_url, jobs=jobs, timeout_s=timeout_s, progress=progress)
    except IntegrationError as exc:
        return Verification(ok=False, notes=[f"restore verification failed: {exc}"])
    copy.sha256 = sha256
    return compare_with_live(copy, live_tables, live_migrations, keep)


# ---------------------------------------------------------------------------------------------------------------
# pg_dump backups
# ---------------------------------------------------------------------------------------------------------------


def _metadata(evidence: BackupEvidence, run_id: str, fmt: str) -> dict[str, str]:
    """What is stored next to a dump (sidecar file or S3 metadata) so that a reuse can check it."""
    return {
        "run-id": run_id,
        "format": fmt,
        "sha256": evidence.sha256 or "",
        "restore-verified": "true" if evidence.verified and evidence.restored_table_count is not None else "false",
        "restored-prisma-migrations": "" if evidence.restored_prisma_migrations is None else str(evidence.restored_prisma_migrations),
        "restored-table-count": "" if evidence.restored_table_count is None else str(evidence.restored_table_count),
        "toc-entries": str(evidence.toc_entries or 0),
    }


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _write_sidecar(path: Path, data: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.partial")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_sidecar(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _find_local(directory: Path, run_id: str) -> Path | None:
    pattern = _name_pattern(run_id, tuple(_EXTENSIONS.values()))
    if not directory.is_dir():
        return None
    found = sorted(p for p in directory.iterdir() if p.is_file() and pattern.match(p.name))
    return found[-1] if found else None


def _find_s3(aws: Aws, target: S3Target, run_id: str) -> S3Object | None:
    pattern = _name_pattern(run_id, tuple(_EXTENSIONS.values()))
    prefix = target.key_for(BACKUP_PREFIX + run_id + "-")
    for obj in aws.list_objects(target.bucket, prefix):
        if pattern.match(obj.key.rsplit("/", 1)[-1]):
            return obj
    return None


def _remove_stale_partials(directory: Path, run_id: str) -> None:
    """Delete half-written files of an earlier, interrupted attempt of this run."""
    if not directory.is_dir():
        return
    stem = f".{BACKUP_PREFIX}{run_id}-"
    for path in directory.iterdir():
        if path.name.startswith(stem) and ".partial" in path.name:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _verify_stored(
    evidence: BackupEvidence,
    stored: Path,
    fmt: str,
    recorded: dict[str, str],
    *,
    live_url: str,
    isolation: RehearsalConfig | None,
    keep: Callable[[RestoredCopy], bool] | None,
    jobs: int,
    live_tables: list[str],
    verify_restore: bool,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Re-check a backup made by an earlier attempt: checksum, table of contents, and the restore if needed."""
    evidence.sha256 = sha256_of(stored)
    evidence.size_bytes = stored.stat().st_size
    expected = recorded.get("sha256")
    if expected and expected != evidence.sha256:
        raise BackupError(
            f"The existing backup {evidence.identifier} does not match its recorded sha256 "
            f"({expected[:12]}… recorded, {evidence.sha256[:12]}… now); move it aside and take a new one."
        )
    if not expected:
        evidence.notes.append("no recorded checksum for the existing backup; sha256 computed now")
    with restorable(stored, fmt) as readable:
        evidence.toc_entries = len(pg_restore_list(readable, timeout_s=timeout_s))
        already_verified = recorded.get("restore-verified") == "true" and bool(expected)
        if already_verified:
            evidence.restored_prisma_migrations = _int_or_none(recorded.get("restored-prisma-migrations"))
            evidence.restored_table_count = _int_or_none(recorded.get("restored-table-count"))
            evidence.verified = evidence.toc_entries > 0
        elif verify_restore:
            result = _verify_restore(
                readable, live_url=live_url, isolation=isolation, sha256=evidence.sha256, jobs=jobs,
                live_tables=live_tables, live_migrations=evidence.live_prisma_migrations,
                timeout_s=timeout_s, progress=progress, keep=keep,
            )
            evidence.restored_prisma_migrations = result.restored_prisma_migrations
            evidence.restored_table_count = result.restored_table_count
            evidence.notes += result.notes
            evidence.verified = result.ok and evidence.toc_entries > 0
        else:
            evidence.verified = evidence.toc_entries > 0
            evidence.notes.append(_NO_RESTORE_NOTE)
    if evidence.live_prisma_migrations != evidence.restored_prisma_migrations and evidence.restored_prisma_migrations is not None:
        evidence.notes.append(
            f"the live database now has {evidence.live_prisma_migrations} migrations, "
            f"the backup {evidence.restored_prisma_migrations}"
        )


class _Phases:
    """Times the phases of a backup into ``evidence.phases``: each ``done(name)`` ends the phase begun by the last."""

    def __init__(self, evidence: BackupEvidence) -> None:
        self.evidence = evidence
        self.mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.evidence.phases[name] = round(now - self.mark, 3)
        self.mark = now


def take_pg_dump_backup(
    *,
    run_id: str,
    database_url: str,
    target: LocalTarget | S3Target,
    aws: Aws | None,
    fmt: Literal["custom", "directory"] = "custom",
    jobs: int = 1,
    verify_restore: bool = True,
    now: datetime | None = None,
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float = 3600,
    isolation: RehearsalConfig | None = None,
    keep_restored: Callable[[RestoredCopy], bool] | None = None,
) -> BackupEvidence:
    """Dump the database (or reuse this run's existing dump), verify it by restoring, store it, and say how.

    For an S3 target the bucket must be versioned: that is checked before anything is dumped. The returned
    evidence has ``verified`` True only when the table of contents is non-empty and a restore on the isolated
    server ``isolation`` names (default: a throwaway local cluster; never the live server) gave the same tables
    and ``_prisma_migrations`` count as the live database. ``keep_restored`` may take that verified copy (return
    True) so the rehearsal uses the same restore; otherwise it is disposed of here.
    """
    started = time.monotonic()
    progress = on_progress or no_progress
    if fmt not in _EXTENSIONS:
        raise BackupError(f"Backup format must be custom or directory, not {fmt!r}.")
    if isinstance(target, S3Target) and aws is None:
        raise BackupError("An S3 backup target needs AWS access, but no AWS client was given.")
    db = Postgres(database_url)

    progress(f"Reading the live state of the {describe_database(database_url)}")
    live_tables = db.table_names()
    live_migrations = db.prisma_migrations_count()

    if isinstance(target, S3Target):
        assert aws is not None
        aws.require_versioning(target.bucket)

    evidence = BackupEvidence(
        method="pg_dump",
        identifier="",
        location="",
        live_prisma_migrations=live_migrations,
        live_table_count=len(live_tables),
    )
    if live_migrations is None:
        evidence.notes.append("the live database has no _prisma_migrations table")
    verify_args: dict[str, Any] = {
        "live_url": database_url, "isolation": isolation, "keep": keep_restored,
        "jobs": jobs, "live_tables": live_tables, "verify_restore": verify_restore,
        "timeout_s": timeout_s, "progress": progress,
    }

    # -- reuse this run's backup if an earlier attempt made one -----------------------------------------------
    if isinstance(target, LocalTarget):
        directory = Path(target.directory)
        existing = _find_local(directory, run_id)
        if existing is not None:
            progress(f"Reusing this run's existing backup {existing.name}")
            sidecar = existing.with_name(existing.name + _SIDECAR)
            evidence.identifier = str(existing)
            evidence.location = str(existing)
            evidence.reused = True
            existing_fmt = format_of(existing.name)
            _verify_stored(evidence, existing, existing_fmt, _read_sidecar(sidecar), **verify_args)
            _write_sidecar(sidecar, _metadata(evidence, run_id, existing_fmt))
            evidence.took_s = round(time.monotonic() - started, 3)
            return evidence
    else:
        assert aws is not None
        existing_obj = _find_s3(aws, target, run_id)
        if existing_obj is not None:
            progress(f"Reusing this run's existing backup {existing_obj.url}")
            evidence.identifier = existing_obj.key
            evidence.location = existing_obj.url
            evidence.s3_version_id = existing_obj.version_id
            evidence.reused = True
            recorded = aws.object_metadata(target.bucket, existing_obj.key, existing_obj.version_id)
            with tempfile.TemporaryDirectory(prefix="migrate-bot-backup-") as tmp:
                local = Path(tmp) / existing_obj.key.rsplit("/", 1)[-1]
                aws.download_file(target.bucket, existing_obj.key, local, version_id=existing_obj.version_id)
                _verify_stored(evidence, local, format_of(local.name), recorded, **verify_args)
            if evidence.size_bytes != existing_obj.size:
                raise BackupError(f"Downloaded {existing_obj.url} has {evidence.size_bytes} bytes, S3 says {existing_obj.size}.")
            evidence.took_s = round(time.monotonic() - started, 3)
            return evidence

    # -- a new dump ----------------------------------------------------------------------------------------
    name = backup_name(run_id, now or datetime.now(UTC))
    filename = name + _EXTENSIONS[fmt]
    workdir_owned: str | None = None
    if isinstance(target, LocalTarget):
        workdir = Path(target.directory)
        workdir.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(workdir, run_id)
    else:
        workdir_owned = tempfile.mkdtemp(prefix="migrate-bot-backup-")
        workdir = Path(workdir_owned)
    final = workdir / filename
    partial_tag = uuid.uuid4().hex[:6]
    partial_file = workdir / f".{filename}.{partial_tag}.partial"
    partial_dir = workdir / f".{name}.{partial_tag}.partial-dir"
    phase = _Phases(evidence)
    try:
        progress(f"Dumping the {describe_database(database_url)} ({fmt} format{f', {jobs} jobs' if fmt == 'directory' else ''})")
        if fmt == "custom":
            pg_dump(database_url, partial_file, fmt="custom", timeout_s=timeout_s)
            readable = final
        else:
            pg_dump(database_url, partial_dir, fmt="directory", jobs=jobs, timeout_s=timeout_s)
            _pack(partial_dir, partial_file, name)
            readable = partial_dir
        os.replace(partial_file, final)
        phase.done("dump")

        evidence.sha256 = sha256_of(final)
        evidence.size_bytes = final.stat().st_size
        progress("Reading the dump's table of contents")
        toc = pg_restore_list(readable, timeout_s=timeout_s)
        evidence.toc_entries = len(toc)
        if not toc:
            evidence.notes.append("the dump's table of contents is empty")
        phase.done("checks")

        if verify_restore:
            result = _verify_restore(
                readable, live_url=database_url, isolation=isolation, sha256=evidence.sha256, jobs=jobs,
                live_tables=live_tables, live_migrations=live_migrations,
                timeout_s=timeout_s, progress=progress, keep=keep_restored,
            )
            evidence.restored_prisma_migrations = result.restored_prisma_migrations
            evidence.restored_table_count = result.restored_table_count
            evidence.notes += result.notes
            evidence.verified = result.ok and bool(toc)
            phase.done("verify")
        else:
            evidence.verified = bool(toc)
            evidence.notes.append(_NO_RESTORE_NOTE)

        metadata = _metadata(evidence, run_id, fmt)
        if isinstance(target, LocalTarget):
            _write_sidecar(final.with_name(final.name + _SIDECAR), metadata)
            evidence.identifier = str(final)
            evidence.location = str(final)
        else:
            assert aws is not None
            key = target.key_for(filename)
            progress(f"Uploading {human_size(evidence.size_bytes)} to s3://{target.bucket}/{key}")
            obj = aws.upload_file(final, target.bucket, key, metadata=metadata)
            if obj.size != evidence.size_bytes:
                raise BackupError(f"Uploaded {obj.url} has {obj.size} bytes, the dump has {evidence.size_bytes}.")
            evidence.identifier = key
            evidence.location = obj.url
            evidence.s3_version_id = obj.version_id
            phase.done("upload")
    finally:
        partial_file.unlink(missing_ok=True)
        shutil.rmtree(partial_dir, ignore_errors=True)
        if workdir_owned is not None:
            shutil.rmtree(workdir_owned, ignore_errors=True)
    evidence.took_s = round(time.monotonic() - started, 3)
    return evidence


# ---------------------------------------------------------------------------------------------------------------
# RDS snapshots
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def fetched_backup(evidence: dict[str, Any], aws: Aws | None) -> Iterator[Path]:
    """A local path pg_restore can read for a stored pg_dump backup: downloads the exact S3 version if needed
    and unpacks a directory-format tar. The checksum is checked before anything is restored from it."""
    location = str(evidence.get("location", ""))
    if evidence.get("method") != "pg_dump":
        raise BackupError(f"Backup {evidence.get('identifier')} is not a pg_dump file.")
    with tempfile.TemporaryDirectory(prefix="migrate-bot-fetch-") as tmp:
        if location.startswith("s3://"):
            if aws is None:
                raise BackupError("Restoring an S3 backup needs AWS access, but no AWS client was given.")
            bucket, _, rest = location[len("s3://"):].partition("/")
            key = rest.split("?versionId=")[0]
            path = aws.download_file(bucket, key, Path(tmp) / Path(key).name,
                                     version_id=evidence.get("s3_version_id"))
        else:
            path = Path(location)
            if not path.exists():
                raise BackupError(f"The backup file {path} is gone; it cannot be restored.")
        expected = evidence.get("sha256")
        if expected and sha256_of(path) != expected:
            raise BackupError(f"Backup {path.name} does not match its recorded sha256; refusing to restore it.")
        with restorable(path, format_of(path.name)) as local_path:
            yield local_path
