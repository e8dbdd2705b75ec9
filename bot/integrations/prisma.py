"""Prisma Migrate on PostgreSQL: the migrations directory, `_prisma_migrations`, and the two runners."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.errors import MigrationError


@dataclass(frozen=True)
class LocalMigration:
    """One directory under prisma/migrations, as Prisma sees it."""

    name: str
    directory: Path
    sql: str
    checksum: str
    down_sql: str | None = None


def migration_checksum(raw: bytes) -> str:
    """Prisma's checksum: sha256 of the file decoded as UTF-8 (bad bytes -> U+FFFD) and re-encoded."""
    return hashlib.sha256(raw.decode("utf-8", "replace").encode("utf-8")).hexdigest()


def list_local_migrations(migrations_dir: Path | str) -> list[LocalMigration]:
    """Every subdirectory of ``migrations_dir`` in Prisma's order, with its SQL and checksum.

    Raises MigrationError (P3015) for a directory that has no migration.sql.
    """
    root = Path(migrations_dir)
    if not root.is_dir():
        raise MigrationError(f"Migrations directory {root} does not exist.")
    migrations: list[LocalMigration] = []
    for directory in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name.encode()):
        script = directory / "migration.sql"
        if not script.is_file():
            raise MigrationError(
                f"P3015: Could not find the migration file at {script}. "
                "Please delete the directory or restore the migration file."
            )
        raw = script.read_bytes()
        down = directory / "down.sql"
        migrations.append(
            LocalMigration(
                name=directory.name,
                directory=directory,
                sql=raw.decode("utf-8", "replace"),
                checksum=migration_checksum(raw),
                down_sql=down.read_text("utf-8", "replace") if down.is_file() else None,
            )
        )
    return migrations
