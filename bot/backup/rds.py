"""Backups by RDS snapshot: take (or reuse) the run's snapshot, and verify it by restoring it to a temporary instance."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bot.backup.evidence import (
    BACKUP_PREFIX,
    BackupEvidence,
    backup_name,
    compare_with_live,
    no_progress,
)
from bot.backup.sandbox import RestoredCopy, restore_rds
from bot.config import RehearsalConfig
from bot.errors import IntegrationError
from bot.integrations.aws import SNAPSHOT_FAILED_STATUSES, Aws
from bot.integrations.postgres import Postgres


def _rds_identifier(name: str) -> str:
    """``name`` made valid as an RDS identifier: letters, digits and single hyphens, starting with a letter."""
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", name)).strip("-")
    return cleaned[:255]


def take_rds_snapshot_backup(
    *,
    run_id: str,
    aws: Aws,
    instance_id: str,
    database_url: str | None,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BackupEvidence:
    """Snapshot ``instance_id`` (or reuse this run's snapshot) and wait until it is available."""
    started = time.monotonic()
    evidence = BackupEvidence(method="rds_snapshot", identifier="", location=f"rds:{instance_id}")
    if database_url:
        db = Postgres(database_url)
        evidence.live_prisma_migrations = db.prisma_migrations_count()
        evidence.live_table_count = len(db.table_names())

    run_part = _rds_identifier(BACKUP_PREFIX + run_id)
    pattern = re.compile(rf"^{re.escape(run_part)}-\d{{8}}-\d{{6}}$")
    existing = [
        s
        for s in aws.list_snapshots(run_part + "-")
        if pattern.match(s.id) and s.instance_id == instance_id and s.status not in SNAPSHOT_FAILED_STATUSES
    ]
    if existing:
        snapshot = existing[0]
        evidence.reused = True
        evidence.notes.append(f"reused snapshot {snapshot.id} from an earlier attempt of this run")
    else:
        snapshot_id = _rds_identifier(backup_name(run_id, now or datetime.now(UTC)))
        snapshot = aws.create_snapshot(
            instance_id,
            snapshot_id,
            tags={"migrate-bot:run-id": run_id, "migrate-bot:purpose": "pre-migration"},
        )
    snapshot = aws.wait_snapshot(snapshot.id, on_progress)
    evidence.identifier = snapshot.id
    evidence.verified = snapshot.status == "available"
    evidence.took_s = round(time.monotonic() - started, 3)
    return evidence


def verify_snapshot_by_restore(
    evidence: BackupEvidence,
    *,
    aws: Aws,
    isolation: RehearsalConfig,
    run_id: str,
    database_url: str | None,
    keep: Callable[[RestoredCopy], bool] | None = None,
    endpoint: Callable[[str], str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> BackupEvidence:
    """rehearsal target ``rds_restore``: restore the run's snapshot into a temporary instance and compare it with
    the live database (read only); the instance is deleted unless ``keep`` takes it for the rehearsal."""
    progress = on_progress or no_progress
    live_tables = Postgres(database_url).table_names() if database_url else []
    try:
        copy = restore_rds(aws, evidence.identifier, isolation, run_id=run_id, endpoint=endpoint, progress=progress)
    except IntegrationError as exc:
        evidence.verified = False
        evidence.notes.append(f"restore verification failed: {exc}")
        return evidence
    result = compare_with_live(copy, live_tables, evidence.live_prisma_migrations, keep)
    evidence.restored_prisma_migrations = result.restored_prisma_migrations
    evidence.restored_table_count = result.restored_table_count
    evidence.notes += result.notes
    evidence.verified = evidence.verified and result.ok
    return evidence
