"""What a backup step proves: the evidence record, backup names and the comparison of a restored copy with the live database."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.backup.sandbox import RestoredCopy
from bot.errors import IntegrationError
from bot.integrations.postgres import Postgres
from bot.runbook.rules import BackupResult, StepResult

BACKUP_PREFIX = "pre-migration-"


@dataclass(frozen=True)
class LocalTarget:
    """Keep the dump in a local (or mounted) directory."""

    directory: Path


@dataclass(frozen=True)
class S3Target:
    """Upload the dump to a versioned S3 bucket under ``prefix``."""

    bucket: str
    prefix: str = ""

    def key_for(self, filename: str) -> str:
        """The object key of ``filename`` under this target's prefix."""
        prefix = self.prefix.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return prefix + filename


class BackupEvidence(BackupResult):
    """What the backup step proves: what was taken, where it is, and how it was checked. Its fields are those of
    the backup step's stored result (bot.runbook.rules.BackupResult), declared once there."""

    def describe(self) -> str:
        """One line for the checklist, e.g. ``pg_dump 12.3 MB, sha256 ab12…, 7 migrations, 12 tables, restore-verified``."""
        parts: list[str] = []
        if self.method == "pg_dump":
            parts.append(f"pg_dump {human_size(self.size_bytes)}" if self.size_bytes is not None else "pg_dump")
            if self.sha256:
                parts.append(f"sha256 {self.sha256[:8]}…")
        else:
            parts.append(f"RDS snapshot {self.identifier}")
        migrations = self.restored_prisma_migrations if self.restored_prisma_migrations is not None else self.live_prisma_migrations
        tables = self.restored_table_count if self.restored_table_count is not None else self.live_table_count
        if migrations is not None:
            parts.append(f"{migrations} migrations")
        if tables is not None:
            parts.append(f"{tables} tables")
        if self.method == "pg_dump":
            if not self.verified:
                parts.append("NOT verified")
            else:
                parts.append("restore-verified" if self.restored_table_count is not None else "TOC-verified (no test restore)")
        elif self.restored_table_count is not None:  # restored into a temporary instance (rehearsal rds_restore)
            parts.append("restore-verified" if self.verified else "NOT verified")
        else:
            parts.append("available" if self.verified else "NOT available")
        if self.reused:
            parts.append("reused")
        line = ", ".join(parts)
        if self.phases:
            line += " — " + " · ".join(f"{name} {human_duration(s)}" for name, s in self.phases.items())
        elif self.took_s:
            line += f" — took {human_duration(self.took_s)}"
        return line

    def to_dict(self) -> dict[str, Any]:
        """Every field of the evidence, JSON-ready (for the run store, the audit log and the rehearsal)."""
        return {name: getattr(self, name) for name in BackupResult.model_fields if name not in StepResult.model_fields}


def human_duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``: how long a phase took, for planning a window."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def backup_name(run_id: str, now: datetime) -> str:
    """``pre-migration-<run_id>-<YYYYmmdd-HHMMSS>`` with the time in UTC."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"{BACKUP_PREFIX}{run_id}-{now:%Y%m%d-%H%M%S}"


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def no_progress(_: str) -> None:
    return None


@dataclass
class Verification:
    ok: bool
    restored_prisma_migrations: int | None = None
    restored_table_count: int | None = None
    notes: list[str] = field(default_factory=list)


def compare_with_live(
    copy: RestoredCopy,
    live_tables: list[str],
    live_migrations: int | None,
    keep: Callable[[RestoredCopy], bool] | None,
) -> Verification:
    """The restored copy's tables and ``_prisma_migrations`` count against the live ones; the copy is closed
    unless it matched and ``keep`` took it."""
    result = Verification(ok=False)
    kept = False
    try:
        restored = Postgres(copy.url)
        restored_tables = restored.table_names()
        result.restored_prisma_migrations = restored.prisma_migrations_count()
        result.restored_table_count = len(restored_tables)
        missing = sorted(set(live_tables) - set(restored_tables))
        extra = sorted(set(restored_tables) - set(live_tables))
        if missing:
            result.notes.append(f"tables missing after restore: {', '.join(missing[:10])}")
        if extra:
            result.notes.append(f"tables only in the restore: {', '.join(extra[:10])}")
        if result.restored_prisma_migrations != live_migrations:
            result.notes.append(
                f"_prisma_migrations rows differ: live {live_migrations}, restored {result.restored_prisma_migrations}"
            )
        result.ok = not missing and not extra and result.restored_prisma_migrations == live_migrations
        kept = result.ok and keep is not None and keep(copy)
    except IntegrationError as exc:
        result.ok = False
        result.notes.append(f"restore verification failed: {exc}")
    finally:
        if not kept:
            problems = copy.close()
            result.notes += problems
            result.ok = result.ok and not problems
    return result
