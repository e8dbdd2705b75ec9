"""Known-safe migration shapes raise no alarm: column swaps, objects made earlier in the same migration, temp tables.

Each migration is shaped like real Prisma output (the ``-- AlterTable`` headers, quoted names, ``ON DELETE`` clauses
of ``prisma migrate dev``), hand-edited the way public Prisma projects do it; squawk runs for real.
"""

from __future__ import annotations

import psycopg

from bot.safety import Review, review_migrations

INIT = (
    "20240101000000_init",
    'CREATE TABLE "User" ("id" TEXT NOT NULL, "email" TEXT NOT NULL, "status" TEXT, "status_new" INTEGER,\n'
    '    CONSTRAINT "User_pkey" PRIMARY KEY ("id"));\n'
    'CREATE UNIQUE INDEX "User_email_key" ON "User"("email");\n'
    'CREATE TABLE "Post" ("id" TEXT NOT NULL, "authorId" TEXT, "title" TEXT,\n'
    '    CONSTRAINT "Post_pkey" PRIMARY KEY ("id"));\n'
    'ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") '
    "ON DELETE SET NULL ON UPDATE CASCADE;\n",
)

# The second half of a type change done without data loss: "status_new" was added and backfilled by an earlier
# release; this migration swaps it in under the old name, inside Prisma's one transaction.
COLUMN_SWAP = (
    '-- AlterTable\nALTER TABLE "User" DROP COLUMN "status";\n\n'
    '-- RenameColumn\nALTER TABLE "User" RENAME COLUMN "status_new" TO "status";\n'
)

# A new table with its index and FK, an index renamed by `prisma migrate dev` after a @@unique rename, and columns
# added then renamed or dropped again before the migration was ever applied (an edited --create-only migration).
SAME_MIGRATION = (
    '-- CreateTable\nCREATE TABLE "Tag" ("id" TEXT NOT NULL, "name" TEXT NOT NULL, "postId" TEXT,\n'
    '    CONSTRAINT "Tag_pkey" PRIMARY KEY ("id"));\n\n'
    '-- CreateIndex\nCREATE UNIQUE INDEX "Tag_name_key" ON "Tag"("name");\n\n'
    '-- AddForeignKey\nALTER TABLE "Tag" ADD CONSTRAINT "Tag_postId_fkey" FOREIGN KEY ("postId") REFERENCES '
    '"Post"("id") ON DELETE SET NULL ON UPDATE CASCADE;\n\n'
    '-- RenameIndex\nALTER INDEX "Tag_name_key" RENAME TO "Tag_label_key";\n\n'
    '-- AlterTable\nALTER TABLE "Post" ADD COLUMN "draft" BOOLEAN;\n'
    'ALTER TABLE "Post" RENAME COLUMN "draft" TO "isDraft";\n'
    'ALTER TABLE "Post" ADD COLUMN "scratch" TEXT;\n'
    'ALTER TABLE "Post" DROP COLUMN "scratch";\n'
)

# A data fix staged through a temporary table (the UPDATE of "User" is a real backfill and stays flagged).
TEMP_TABLE_AS = (
    '-- Backfill\nCREATE TEMP TABLE "_email_fix" AS SELECT "id", lower("email") AS "email" FROM "User";\n'
    'CREATE INDEX "_email_fix_id_idx" ON "_email_fix"("id");\n'
    'UPDATE "User" u SET "email" = f."email" FROM "_email_fix" f WHERE u."id" = f."id";\n'
    'DROP TABLE "_email_fix";\n'
)
TEMP_TABLE = (
    'CREATE TEMPORARY TABLE "_ids" ("id" TEXT NOT NULL);\n'
    'INSERT INTO "_ids" SELECT "id" FROM "User";\n'
    'CREATE INDEX "_ids_idx" ON "_ids"("id");\n'
    'ALTER TABLE "_ids" ADD COLUMN "n" INTEGER NOT NULL;\n'
    'DROP TABLE "_ids";\n'
)


def review(sql: str) -> Review:
    """Review INIT plus one migration holding ``sql``, run by a runner that sets both timeouts."""
    return review_migrations([INIT, ("20240201000000_change", sql)], statement_timeout_ms=30_000)


class TestColumnSwap:
    def test_drop_then_rename_into_the_name_is_no_finding(self) -> None:
        """Dropping "status" and renaming "status_new" to "status" in one transaction: no finding at all (squawk's
        ban-drop-column and renaming-column included); the ACCESS EXCLUSIVE lock is still listed."""
        result = review(COLUMN_SWAP)
        assert result.migrations[1].findings == []
        assert 'locks ACCESS EXCLUSIVE on "User"' in result.migrations[1].summary_line

    def test_a_drop_without_the_rename_is_still_flagged(self) -> None:
        """The same drop alone, or with the rename in a later transaction, is a breaking change."""
        alone = review('-- AlterTable\nALTER TABLE "User" DROP COLUMN "status";\n')
        split = review('BEGIN;\nALTER TABLE "User" DROP COLUMN "status";\nCOMMIT;\n'
                       'BEGIN;\nALTER TABLE "User" RENAME COLUMN "status_new" TO "status";\nCOMMIT;\n')
        for result in (alone, split):
            rules = {f.rule for f in result.migrations[1].findings}
            assert "drop-column" in rules and result.has_high


class TestObjectsOfTheSameMigration:
    def test_new_table_index_fk_rename_and_scratch_columns_raise_nothing(self) -> None:
        """Every statement on objects this migration created is free of findings, squawk's too."""
        result = review(SAME_MIGRATION)
        assert [(f.rule, f.statement_index) for f in result.migrations[1].findings] == []

    def test_renaming_an_existing_column_is_still_flagged(self) -> None:
        """The exemption is for columns added in this migration only."""
        result = review('ALTER TABLE "Post" RENAME COLUMN "title" TO "headline";\n')
        assert {f.rule for f in result.migrations[1].findings} == {"rename-column"}


class TestTemporaryTables:
    def test_temp_table_statements_raise_nothing_but_the_real_backfill(self) -> None:
        """CREATE TEMP TABLE AS, its index and its DROP TABLE are not flagged; the UPDATE of "User" is."""
        result = review(TEMP_TABLE_AS)
        found = [(f.rule, f.table) for f in result.migrations[1].findings]
        assert found == [("backfill-in-migration", "User")]
        assert all(t.table != "_email_fix" for t in result.migrations[1].table_locks if not t.new)

    def test_temporary_table_with_columns_and_indexes_raises_nothing(self) -> None:
        """A temporary table is seen by no other session: indexing, altering or dropping it is no risk."""
        assert review(TEMP_TABLE).migrations[1].findings == []

    def test_connected_review_shows_no_unknown_size_for_a_temp_table(self, scratch_db: str) -> None:
        """With a database, no finding says "size unknown" about a temporary table the migration makes."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(INIT[1])
            conn.execute("""INSERT INTO "User" ("id", "email") VALUES ('u1', 'A@x.io')""")
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            result = review_migrations([("20240201000000_change", TEMP_TABLE_AS)], conn=conn,
                                       statement_timeout_ms=30_000)
        findings = result.migrations[0].findings
        assert [(f.rule, f.table) for f in findings] == [("backfill-in-migration", "User")]
        assert not any("size unknown" in f.why for f in findings)
