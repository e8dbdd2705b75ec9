"""Migration rehearsal: apply the pending migrations to a restored copy of the run's pg_dump on an isolated server, time them, watch their locks."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.backup.pg_dump import fetched_backup, restorable
from bot.backup.sandbox import RestoredCopy, restore_isolated, restore_rds, scratch_name, take
from bot.config import RehearsalConfig
from bot.errors import BackupError, BotError, IntegrationError, MigrationError
from bot.integrations.aws import Aws
from bot.integrations.postgres import Postgres, SessionLock, database_of, schema_of
from bot.integrations.prisma.migrations import (
    MIGRATIONS_TABLE,
    AppliedMigration,
    PrismaError,
    list_local_migrations,
)
from bot.integrations.prisma.native import NativeRunner
from bot.redact import redact
from bot.safety.analysis import Lock

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.01
_APPLYING_RE = re.compile(r"^Applying migration `(.+)`$")
_APPLIED_RE = re.compile(r"^Applied `(.+)` in ([0-9.]+) s$")
# Wait events of an idle or merely chatty backend, not of a migration waiting on something.
_IGNORED_WAIT_TYPES = frozenset({"Client", "Activity"})


class RehearsalError(MigrationError):
    """The rehearsal could not be started (no dump, unknown migration names, a dump it cannot fetch)."""


@dataclass
class RehearsedMigration:
    """One migration as it ran on the restored copy."""

    name: str
    duration_s: float
    ok: bool
    error: str | None = None
    # table -> the strongest pg_locks mode seen while it ran, e.g. {"User": "AccessExclusiveLock"}
    locks: dict[str, str] = field(default_factory=dict)
    # "Type:Event" wait events seen while it ran, e.g. "Lock:relation", "IO:DataFileRead"
    waits: list[str] = field(default_factory=list)


@dataclass
class RehearsalReport:
    """What the rehearsal did; ``ok`` only when every pending migration applied on the restored copy."""

    ok: bool
    migrations: list[RehearsedMigration]
    took_s: float
    scratch_database: str
    pending: list[str] = field(default_factory=list)
    error: str | None = None  # a failure that is not one migration's (restore, bookkeeping)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> RehearsedMigration | None:
        """The migration that failed, if one did."""
        return next((m for m in self.migrations if not m.ok), None)

    def summary(self) -> str:
        """One line for the thread, e.g. ``2/2 applied on a restored copy in 1.3 s (slowest: add_index 0.9 s)``."""
        failed = self.failed
        if failed is not None:
            line = f"{failed.name} failed: {failed.error}"
        elif self.error is not None:
            line = f"rehearsal failed: {self.error}"
        elif not self.pending:
            line = f"nothing pending on the restored copy (checked in {self.took_s:.1f} s)"
        else:
            applied = [m for m in self.migrations if m.ok]
            line = f"{len(applied)}/{len(self.pending)} applied on a restored copy in {self.took_s:.1f} s"
            if applied:
                slowest = max(applied, key=lambda m: m.duration_s)
                line += f" (slowest: {_short_name(slowest.name)} {slowest.duration_s:.1f} s)"
        cleanup = [n for n in self.notes if n.startswith("could not drop")]
        if cleanup:
            line += f"; WARNING: {cleanup[0]}"
        return redact(line)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for the run store and the audit log)."""
        return asdict(self)


def _short_name(name: str) -> str:
    """``20240301120000_add_index`` -> ``add_index`` (Prisma's timestamp prefix dropped)."""
    return re.sub(r"^\d{8,}_", "", name) or name


def _migration_error(exc: BotError) -> str:
    """The database's own words from a P3018 (``division by zero (SQLSTATE 22012)``), else the error line."""
    if isinstance(exc, PrismaError) and exc.code == "P3018":
        _, sep, detail = exc.reason.partition("Database error: ")
        if sep:
            detail = detail.removeprefix("ERROR: ").strip()
            if exc.database_error_code:
                detail += f" (SQLSTATE {exc.database_error_code})"
            return redact(detail)
    return redact(str(exc))


# ---------------------------------------------------------------------------------------------------------------
# The lock sampler
# ---------------------------------------------------------------------------------------------------------------


class _Sampler:
    """Samples pg_locks / pg_stat_activity of the scratch database from its own connection, per migration."""

    def __init__(self, db: Postgres, schema: str, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._db = db
        self._schema = schema
        self._interval_s = interval_s
        self.current: str | None = None
        self.locks: dict[str, dict[str, Lock]] = {}
        self.waits: dict[str, list[str]] = {}
        self.error: str | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Sample in a background thread for the duration of the block."""
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(stop,), name="rehearsal-lock-sampler", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    def _loop(self, stop: threading.Event) -> None:
        snapshots = self._db.session_lock_snapshots()
        try:
            while not stop.is_set():
                name = self.current
                try:
                    rows = next(snapshots)
                except IntegrationError as exc:  # diagnostics only: never let the sampler break the rehearsal
                    self.error = str(exc)
                    return
                if name is not None and name == self.current:
                    self._record(name, rows)
                stop.wait(self._interval_s)
        finally:
            snapshots.close()

    def _record(self, name: str, rows: list[SessionLock]) -> None:
        locks = self.locks.setdefault(name, {})
        waits = self.waits.setdefault(name, [])
        for row in rows:
            if row.backend_type not in (None, "client backend"):
                continue
            if (
                row.state == "active"
                and row.wait_event_type
                and row.wait_event_type not in _IGNORED_WAIT_TYPES
            ):
                wait = f"{row.wait_event_type}:{row.wait_event}"
                if wait not in waits:
                    waits.append(wait)
            if row.table is None or row.mode is None or row.table == MIGRATIONS_TABLE:
                continue
            table = row.table if row.schema == self._schema else f"{row.schema}.{row.table}"
            try:
                mode = Lock.from_pg_mode(row.mode)
            except ValueError:
                continue
            if table not in locks or mode > locks[table]:
                locks[table] = mode


# ---------------------------------------------------------------------------------------------------------------
# Rehearsal
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _readable_dump(dump_path: Path) -> Iterator[Path]:
    """A path pg_restore reads: the custom-format file, a dump directory, or a packed directory dump unpacked."""
    if dump_path.is_dir() or not dump_path.name.endswith(".tar"):
        yield dump_path
        return
    with restorable(dump_path, "directory") as readable:
        yield readable


@contextmanager
def _selected_migrations(migrations_dir: Path, pending: list[str] | None) -> Iterator[Path]:
    """``migrations_dir`` itself, or a temporary copy holding only the ``pending`` migrations."""
    if pending is None:
        yield migrations_dir
        return
    local = {m.name: m for m in list_local_migrations(migrations_dir)}
    unknown = [name for name in pending if name not in local]
    if unknown:
        raise RehearsalError(f"Not in {migrations_dir}: {', '.join(unknown)}.")
    with tempfile.TemporaryDirectory(prefix="migrate-bot-rehearsal-") as tmp:
        target = Path(tmp) / "migrations"
        target.mkdir()
        lock_file = migrations_dir / "migration_lock.toml"
        if lock_file.is_file():
            shutil.copy2(lock_file, target / lock_file.name)
        for name in pending:
            shutil.copytree(local[name].directory, target / name)
        yield target


def rehearse(
    *,
    dump_path: Path | None = None,
    database_url: str,
    migrations_dir: Path,
    pending: list[str] | None = None,
    lock_timeout_ms: int | None = 5000,
    statement_timeout_ms: int | None = None,
    jobs: int = 1,
    timeout_s: float = 3600,
    on_event: Callable[[str], None] | None = None,
    isolation: RehearsalConfig | None = None,
    restored: RestoredCopy | None = None,
) -> RehearsalReport:
    """Apply the pending migrations to a restored copy of the backup on an isolated server, never on production.

    ``restored`` is a copy the backup step already restored and verified (this takes it over and disposes of it);
    without one, ``dump_path`` is restored on the ``isolation`` target (default: a throwaway local cluster).
    ``database_url`` is the live database's: only its name is used, and it is never connected to. ``pending``
    limits the rehearsal to those migrations (default: whatever is pending on the restored copy). A migration
    failure gives ``ok`` False naming it; a restore failure gives ``ok`` False with ``error``. Raises
    RehearsalError only for bad input (no dump, migration names not in the directory).
    """
    started = time.monotonic()
    emit = on_event or (lambda _line: None)
    migrations_dir = Path(migrations_dir)
    if restored is None and (dump_path is None or not Path(dump_path).exists()):
        raise RehearsalError(f"The dump {dump_path} does not exist.")
    scratch = restored.database if restored is not None else scratch_name(database_of(database_url) or "postgres")
    report = RehearsalReport(ok=False, migrations=[], took_s=0.0, scratch_database=scratch)
    copy = restored
    try:
        with _selected_migrations(migrations_dir, pending) as selected:
            try:
                if copy is None:
                    assert dump_path is not None
                    with _readable_dump(Path(dump_path)) as readable:
                        copy = restore_isolated(readable, isolation, live_url=database_url, database=scratch,
                                                jobs=jobs, timeout_s=timeout_s, progress=emit)
                else:
                    report.notes.append("rehearsed on the copy the backup was verified with")
                    emit(f"Rehearsing on the copy the backup was verified with ({copy.where})")
                _apply(report, copy.url, selected, pending, lock_timeout_ms, statement_timeout_ms, emit)
            except BotError as exc:
                report.error = redact(str(exc))
    finally:
        if copy is not None:
            report.notes += copy.close()
    report.ok = (
        report.error is None
        and all(m.ok for m in report.migrations)
        and len([m for m in report.migrations if m.ok]) == len(report.pending)
    )
    report.took_s = round(time.monotonic() - started, 3)
    emit(f"Rehearsal: {report.summary()}")
    return report


def _apply(
    report: RehearsalReport,
    scratch_url: str,
    migrations_dir: Path,
    requested: list[str] | None,
    lock_timeout_ms: int | None,
    statement_timeout_ms: int | None,
    emit: Callable[[str], None],
) -> None:
    """Deploy on the restored copy with the native runner, filling ``report.migrations`` as each one ends."""
    runner = NativeRunner(
        scratch_url,
        lock_timeout_ms=lock_timeout_ms,
        statement_timeout_ms=statement_timeout_ms,
        lock_retries=0,
    )
    report.pending = runner.status(migrations_dir).pending
    if requested is not None:
        already = [name for name in requested if name not in report.pending]
        if already:
            report.notes.append(f"already applied in the backup: {', '.join(already)}")
    if not report.pending:
        return
    sampler = _Sampler(Postgres(scratch_url), schema_of(scratch_url))
    marks: dict[str, float] = {}
    durations: dict[str, float] = {}

    def on_runner_event(line: str) -> None:
        applying = _APPLYING_RE.match(line)
        done = _APPLIED_RE.match(line)
        if applying:
            sampler.current = applying.group(1)
            marks[applying.group(1)] = time.monotonic()
        elif done:
            sampler.current = None
            durations[done.group(1)] = float(done.group(2))
        emit(line)

    def rehearsed(name: str, duration_s: float, error: str | None = None) -> RehearsedMigration:
        locks = sampler.locks.get(name, {})
        return RehearsedMigration(
            name=name,
            duration_s=round(duration_s, 6),  # a sub-millisecond migration is fast, not untimed
            ok=error is None,
            error=error,
            locks={table: mode.pg_mode for table, mode in sorted(locks.items())},
            waits=list(sampler.waits.get(name, [])),
        )

    failure: BotError | None = None
    applied: list[AppliedMigration] = []
    with sampler.running():
        try:
            applied = runner.deploy(migrations_dir, on_event=on_runner_event).applied
        except BotError as exc:
            failure = exc
        failing = sampler.current
        ended = time.monotonic()
    if failure is None:
        report.migrations = [rehearsed(a.name, a.duration_s) for a in applied]
        return
    # The runner raised: the ones before the failing migration finished (the runner said how long each took).
    for name, start in sorted(marks.items(), key=lambda item: item[1]):
        if name == failing:
            break
        report.migrations.append(rehearsed(name, durations.get(name, ended - start)))
    if failing is not None:
        report.migrations.append(rehearsed(failing, ended - marks[failing], _migration_error(failure)))
    else:
        report.error = redact(str(failure))
    if sampler.error:
        report.notes.append(f"lock sampling stopped: {sampler.error}")


# ---------------------------------------------------------------------------------------------------------------
# From the backup step's evidence
# ---------------------------------------------------------------------------------------------------------------


def rehearse_from_evidence(
    evidence: Mapping[str, Any],
    *,
    database_url: str,
    migrations_dir: Path,
    aws: Aws | None = None,
    run_id: str | None = None,
    **options: Any,
) -> RehearsalReport:
    """``rehearse`` on the backup a ``BackupEvidence.to_dict()`` points at: the copy the backup step verified
    (held for ``run_id``) when it is of this very file, else the file restored again (S3 through ``aws``).

    The file must match the evidence's recorded sha256, so the rehearsal is of this run's backup and no other.
    """
    if evidence.get("method") == "rds_snapshot":
        return _rehearse_snapshot(evidence, database_url=database_url, migrations_dir=migrations_dir, aws=aws,
                                  run_id=run_id, **options)
    if evidence.get("method") != "pg_dump":
        raise RehearsalError(f"Rehearsal needs a pg_dump backup, not {evidence.get('method')!r}.")
    held = take(run_id, evidence.get("sha256")) if run_id else None
    if held is not None:
        return rehearse(restored=held, database_url=database_url, migrations_dir=migrations_dir, **options)
    try:
        with fetched_backup(dict(evidence), aws) as dump:
            return rehearse(dump_path=dump, database_url=database_url, migrations_dir=migrations_dir, **options)
    except BackupError as exc:
        raise RehearsalError(str(exc)) from exc


def _rehearse_snapshot(
    evidence: Mapping[str, Any],
    *,
    database_url: str,
    migrations_dir: Path,
    aws: Aws | None,
    run_id: str | None,
    endpoint: Callable[[str], str] | None = None,
    **options: Any,
) -> RehearsalReport:
    """The rehearsal of an RDS snapshot backup: on the temporary instance the backup step verified, else a new one."""
    snapshot_id = str(evidence.get("identifier") or "")
    held = take(run_id, snapshot_id) if run_id else None
    if held is None:
        isolation = options.get("isolation")
        if aws is None or not isinstance(isolation, RehearsalConfig) or isolation.target != "rds_restore":
            raise RehearsalError("Rehearsing an RDS snapshot needs rehearsal.target rds_restore and AWS access.")
        try:
            held = restore_rds(aws, snapshot_id, isolation, run_id=run_id or "adhoc", endpoint=endpoint)
        except IntegrationError as exc:
            raise RehearsalError(str(exc)) from exc
    return rehearse(restored=held, database_url=database_url, migrations_dir=migrations_dir, **options)
