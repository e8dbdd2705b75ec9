"""Generate N Prisma-style migrations of realistic shape (tables, columns, indexes, FKs, enums, small data updates)."""

from __future__ import annotations

import argparse
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

_COLUMN_TYPES = ["TEXT", "INTEGER", "BOOLEAN NOT NULL DEFAULT false", "TIMESTAMP(3)", "DOUBLE PRECISION",
                 "JSONB", "VARCHAR(191)", "BIGINT"]


def _create_table(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    name = f"Entity{i}"
    cols = [f"    \"{c}\" {rng.choice(_COLUMN_TYPES)}," for c in (f"field{k}" for k in range(rng.randint(2, 6)))]
    sql = (
        f"-- CreateTable\nCREATE TABLE \"{name}\" (\n"
        f"    \"id\" SERIAL NOT NULL,\n"
        f"    \"name\" TEXT NOT NULL,\n"
        f"    \"email\" TEXT,\n"
        + "\n".join(cols) + "\n"
        f"    \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n"
        f"    \"updatedAt\" TIMESTAMP(3) NOT NULL,\n\n"
        f"    CONSTRAINT \"{name}_pkey\" PRIMARY KEY (\"id\")\n);\n\n"
        f"-- CreateIndex\nCREATE UNIQUE INDEX \"{name}_email_key\" ON \"{name}\"(\"email\");\n"
    )
    tables.append({"name": name, "cols": 0})
    return f"create_{name.lower()}", sql


def _add_column(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    t = rng.choice(tables)
    t["cols"] += 1
    col = f"extra{t['cols']}"
    kind = rng.choice(["TEXT", "INTEGER", "BOOLEAN NOT NULL DEFAULT false", "TIMESTAMP(3)"])
    sql = f"-- AlterTable\nALTER TABLE \"{t['name']}\" ADD COLUMN     \"{col}\" {kind};\n"
    t.setdefault("added", []).append(col)
    return f"add_{col}_to_{t['name'].lower()}", sql


def _add_index(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    t = rng.choice(tables)
    sql = (f"-- CreateIndex\nCREATE INDEX \"{t['name']}_name_idx{i}\" ON \"{t['name']}\"(\"name\", \"createdAt\");\n")
    return f"index_{t['name'].lower()}_name", sql


def _data_update(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    t = rng.choice(tables)
    n = rng.choice([50, 100, 200, 500])
    sql = (
        f"-- Backfill\nINSERT INTO \"{t['name']}\" (\"name\", \"email\", \"updatedAt\")\n"
        f"SELECT 'user ' || g, 'user' || g || '.m{i}@example.com', CURRENT_TIMESTAMP FROM generate_series(1, {n}) AS g;\n\n"
        f"UPDATE \"{t['name']}\" SET \"name\" = upper(\"name\") WHERE \"id\" % 7 = 0;\n"
    )
    return f"backfill_{t['name'].lower()}", sql


def _foreign_key(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    child, parent = rng.sample(tables, 2)
    col = f"ref{i}Id"
    sql = (
        f"-- AlterTable\nALTER TABLE \"{child['name']}\" ADD COLUMN     \"{col}\" INTEGER;\n\n"
        f"-- AddForeignKey\nALTER TABLE \"{child['name']}\" ADD CONSTRAINT \"{child['name']}_{col}_fkey\" "
        f"FOREIGN KEY (\"{col}\") REFERENCES \"{parent['name']}\"(\"id\") ON DELETE SET NULL ON UPDATE CASCADE;\n"
    )
    return f"relate_{child['name'].lower()}", sql


def _enum(i: int, rng: random.Random, tables: list[dict]) -> tuple[str, str]:
    t = rng.choice(tables)
    sql = (
        f"-- CreateEnum\nCREATE TYPE \"Status{i}\" AS ENUM ('ACTIVE', 'INACTIVE', 'PENDING');\n\n"
        f"-- AlterTable\nALTER TABLE \"{t['name']}\" ADD COLUMN     \"status{i}\" \"Status{i}\" NOT NULL DEFAULT 'ACTIVE';\n"
    )
    return f"status_enum_{i}", sql


def migrations(n: int = 400, seed: int = 7) -> list[tuple[str, str]]:
    """(directory name, SQL) pairs in order; the first few create tables so later ones have targets."""
    rng = random.Random(seed)
    tables: list[dict] = []
    out: list[tuple[str, str]] = []
    start = datetime(2024, 1, 1, tzinfo=UTC)
    kinds = [(_create_table, 25), (_add_column, 25), (_add_index, 15), (_data_update, 20), (_foreign_key, 10),
             (_enum, 5)]
    for i in range(n):
        if len(tables) < 3:
            make = _create_table
        else:
            make = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        label, sql = make(i, rng, tables)
        stamp = (start + timedelta(hours=i)).strftime("%Y%m%d%H%M%S")
        out.append((f"{stamp}_{label}", sql))
    return out


def write(directory: Path, n: int = 400, seed: int = 7) -> list[Path]:
    """Write a prisma/migrations directory (with migration_lock.toml); returns the migration.sql paths."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / "migration_lock.toml").write_text('provider = "postgresql"\n')
    paths = []
    for name, sql in migrations(n, seed):
        d = directory / name
        d.mkdir()
        (d / "migration.sql").write_text(sql)
        paths.append(d / "migration.sql")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("-n", type=int, default=400)
    args = parser.parse_args()
    print(f"wrote {len(write(args.directory, args.n))} migrations to {args.directory}")
