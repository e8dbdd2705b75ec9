"""A small Prisma-managed database for tests: `_prisma_migrations` with Prisma's DDL plus two tables with rows."""

from __future__ import annotations

import uuid

import psycopg

PRISMA_DDL = """
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
"""


def seed(url: str, migrations: int = 3) -> None:
    """A small Prisma-managed schema: _prisma_migrations plus two tables with rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_DDL)
        for i in range(migrations):
            conn.execute(
                "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)"
                " VALUES (%s, %s, now(), %s, 1)",
                (str(uuid.uuid4()), "0" * 64, f"2026010{i}000000_m{i}"),
            )
        conn.execute('CREATE TABLE "User" (id serial PRIMARY KEY, email text UNIQUE NOT NULL)')
        conn.execute('CREATE TABLE "Post" (id serial PRIMARY KEY, author int REFERENCES "User"(id), title text)')
        conn.execute("""INSERT INTO "User" (email) SELECT 'u' || g || '@x.test' FROM generate_series(1, 50) g""")
        conn.execute("""INSERT INTO "Post" (author, title) SELECT 1 + g % 50, 'p' || g FROM generate_series(1, 200) g""")
