"""The safety review without a database: seed risky changes found with category and alternative, safe ones not high."""

from __future__ import annotations

import json
import re

import pytest

from bot.safety import Review, review_migrations
from bot.safety.advice import REGISTRY, advise

BASE = (
    "20240101000000_init",
    'CREATE TABLE "User" ("id" TEXT NOT NULL, "email" VARCHAR(100) NOT NULL, "age" INTEGER, "name" TEXT,\n'
    '    CONSTRAINT "User_pkey" PRIMARY KEY ("id"));\n'
    'CREATE TABLE "Post" ("id" TEXT NOT NULL, "authorId" TEXT, "title" TEXT, CONSTRAINT "Post_pkey" PRIMARY KEY ("id"));\n'
    'CREATE TABLE "Old" ("id" TEXT NOT NULL);\n'
    'CREATE TYPE "Role" AS ENUM (\'USER\', \'ADMIN\');\n',
)


def review(sql: str, **kwargs) -> Review:
    """Review BASE plus one migration holding ``sql``."""
    return review_migrations([BASE, ("20240201000000_change", sql)], **kwargs)


def findings_of(result: Review, rule: str):
    """Findings of the second migration with that rule."""
    return [f for f in result.migrations[1].findings if f.rule == rule]


# (name, sql, rule, category, text the alternative must contain, squawk rule merged into it)
RISKY = [
    ("non-nullable column", 'ALTER TABLE "User" ADD COLUMN "nickname" TEXT NOT NULL;', "required-column",
     "risky: adding non-nullable columns", 'CHECK ("nickname" IS NOT NULL) NOT VALID', "adding-required-field"),
    ("non-concurrent index", 'CREATE INDEX "Post_title_idx" ON "Post"("title");', "non-concurrent-index",
     "risky: adding indexes without CONCURRENTLY", 'CREATE INDEX CONCURRENTLY "Post_title_idx" ON "Post"',
     "require-concurrent-index-creation"),
    ("fk without not valid",
     'ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id");',
     "fk-without-not-valid", "risky: foreign key constraints", 'VALIDATE CONSTRAINT "Post_authorId_fkey"',
     "adding-foreign-key-constraint"),
    ("column type change", 'ALTER TABLE "User" ALTER COLUMN "age" SET DATA TYPE BIGINT;', "type-change",
     "risky: changing column types", 'ADD COLUMN age_new bigint', "changing-column-type"),
    ("dropped column", 'ALTER TABLE "Post" DROP COLUMN "title";', "drop-column", "risky: removing columns",
     'ALTER TABLE "Post" DROP COLUMN "title"', "ban-drop-column"),
    ("dropped table", 'DROP TABLE "Old";', "drop-table", "risky: removing tables", "migrate or archive the data",
     "ban-drop-table"),
    ("rename", 'ALTER TABLE "Post" RENAME COLUMN "authorId" TO "userId";', "rename-column",
     "risky: renaming columns without a dual-write period", '@map("authorId")', "renaming-column"),
]


class TestRiskyChanges:
    @pytest.mark.parametrize(("name", "sql", "rule", "category", "alternative", "squawk_rule"), RISKY,
                             ids=[r[0] for r in RISKY])
    def test_seed_risky_change_found(self, name, sql, rule, category, alternative, squawk_rule):
        """Each risky change of the seed gets one finding with the seed category and a filled-in alternative."""
        result = review(sql)
        found = findings_of(result, rule)
        assert len(found) == 1, result.migrations[1].findings
        finding = found[0]
        assert finding.category == category
        assert alternative in finding.alternative
        assert finding.level in ("high", "medium")
        assert finding.source == "analysis" and squawk_rule in finding.squawk_rules
        assert not [f for f in result.migrations[1].findings if f.rule == squawk_rule]  # merged, not doubled

    def test_rewrite_under_access_exclusive_is_high_without_db(self):
        """Statically, a rewrite under ACCESS EXCLUSIVE is high and says the size is unknown."""
        finding = findings_of(review('ALTER TABLE "User" ALTER COLUMN "age" SET DATA TYPE BIGINT;'), "type-change")[0]
        assert finding.level == "high" and finding.rewrites and finding.lock == "ACCESS EXCLUSIVE"
        assert 'ACCESS EXCLUSIVE + rewrite of "User" (size unknown: no database)' in finding.why

    def test_fk_dedup_keeps_both_squawk_rules(self):
        """squawk's two FK rules merge into the one analysis finding."""
        sql = 'ALTER TABLE "Post" ADD CONSTRAINT "fk" FOREIGN KEY ("authorId") REFERENCES "User"("id");'
        finding = findings_of(review(sql), "fk-without-not-valid")[0]
        assert set(finding.squawk_rules) == {"adding-foreign-key-constraint", "constraint-missing-not-valid"}

    def test_concurrently_in_multi_statement_file_is_high(self):
        """CREATE INDEX CONCURRENTLY next to other statements fails under Prisma's transaction: high."""
        sql = 'ALTER TABLE "User" ADD COLUMN "x" TEXT;\nCREATE INDEX CONCURRENTLY "i" ON "Post"("title");\n'
        found = findings_of(review(sql), "concurrently-in-transaction")
        assert found and found[0].level == "high"

    def test_lock_held_through_slow_statement(self):
        """An ACCESS EXCLUSIVE taken early is reported as held through a later index build on another table."""
        sql = 'ALTER TABLE "User" ADD COLUMN "x" TEXT;\nCREATE INDEX "Post_title_idx" ON "Post"("title");\n'
        result = review(sql)
        held = findings_of(result, "lock-held")
        assert held and held[0].table == "User" and held[0].statement_index == 1
        locks = {t.table: t for t in result.migrations[1].table_locks}
        assert (locks["User"].lock.label, locks["User"].first_index, locks["User"].last_index) == (
            "ACCESS EXCLUSIVE", 0, 1)
        assert 'ACCESS EXCLUSIVE on "User" (statements 1–2)' in result.migrations[1].summary_line

    def test_syntax_error_is_one_high_finding(self):
        """Unparsable SQL is one high finding that squawk's syntax-error joins."""
        found = findings_of(review("ALTER TABLE t ADD COLUMN;"), "syntax-error")
        assert len(found) == 1 and found[0].level == "high" and "syntax-error" in found[0].squawk_rules


SAFE = [
    ("new table", 'CREATE TABLE "Session" ("id" TEXT NOT NULL, "userId" TEXT NOT NULL,\n'
                  '  CONSTRAINT "Session_pkey" PRIMARY KEY ("id"));\n'
                  'CREATE INDEX "Session_userId_idx" ON "Session"("userId");\n'
                  'ALTER TABLE "Session" ADD CONSTRAINT "Session_userId_fkey" FOREIGN KEY ("userId") '
                  'REFERENCES "User"("id");'),
    ("nullable column", 'ALTER TABLE "User" ADD COLUMN "bio" TEXT;'),
    ("column with constant default", 'ALTER TABLE "User" ADD COLUMN "active" BOOLEAN NOT NULL DEFAULT true;'),
    ("create index concurrently", 'CREATE INDEX CONCURRENTLY "Post_title_idx" ON "Post"("title");'),
    ("enum add value", "ALTER TYPE \"Role\" ADD VALUE 'COUNSELOR';"),
]


class TestSafeChanges:
    @pytest.mark.parametrize(("name", "sql"), SAFE, ids=[s[0] for s in SAFE])
    def test_safe_change_not_high(self, name, sql):
        """The seed's safe changes produce no high (and no medium) finding."""
        findings = review(sql).migrations[1].findings
        assert not [f for f in findings if f.level in ("high", "medium")], findings

    def test_varchar_to_text_is_safe(self):
        """varchar(100) -> text, known from an earlier migration, is a safe low finding that absorbs squawk's rule."""
        found = findings_of(review('ALTER TABLE "User" ALTER COLUMN "email" SET DATA TYPE TEXT;'), "type-change-safe")
        assert len(found) == 1 and found[0].level == "low" and found[0].category == "safe"
        assert found[0].squawk_rules == ["changing-column-type"] and not found[0].rewrites

    def test_prisma_noise_rules_are_info(self):
        """prefer-text-field / prefer-bigint-over-int on Prisma's CREATE TABLE are info."""
        levels = {f.rule: f.level for f in review_migrations([BASE]).findings}
        assert levels["prefer-text-field"] == "info" and levels["prefer-bigint-over-int"] == "info"


class TestTimeoutRules:
    def test_dropped_when_bot_sets_timeouts(self):
        """require-lock-timeout is not reported when the bot sets timeouts itself (the default)."""
        result = review('ALTER TABLE "User" ADD COLUMN "bio" TEXT;')
        assert not findings_of(result, "require-lock-timeout")

    def test_reported_when_bot_does_not_set_timeouts(self):
        """With bot_sets_timeouts=False the timeout rules come back, at low."""
        result = review('ALTER TABLE "User" ADD COLUMN "bio" TEXT;', bot_sets_timeouts=False)
        found = findings_of(result, "require-lock-timeout")
        assert found and found[0].level == "low" and found[0].source == "squawk"


class TestReviewApi:
    def test_counts_summary_and_json(self):
        """counts(), summary(), has_high and to_json() agree and the JSON serialises."""
        result = review('ALTER TABLE "Post" DROP COLUMN "title";\nCREATE INDEX "i" ON "Post"("title");')
        counts = result.counts()
        assert set(counts) == {"high", "medium", "low", "info"} and counts["high"] >= 1
        assert result.has_high
        assert result.summary().startswith(f"{counts['high']} high")
        data = json.loads(json.dumps(result.to_json()))
        assert data["has_high"] is True and data["counts"] == counts
        assert data["migrations"][1]["findings"][0]["migration"] == "20240201000000_change"

    def test_empty_review(self):
        """No migrations: no findings, summary says so."""
        result = review_migrations([])
        assert result.summary() == "no findings" and not result.has_high

    def test_pg_version_before_12_makes_add_value_risky(self):
        """On PG 11 an enum ADD VALUE in Prisma's transaction is high."""
        result = review("ALTER TYPE \"Role\" ADD VALUE 'X';", pg_version=11)
        assert findings_of(result, "enum-add-value-old-pg")[0].level == "high"


class TestAdvice:
    def test_every_entry_fills_without_placeholders(self):
        """Every registry entry renders with the user's names and no KeyError."""
        for key in REGISTRY:
            advice = advise(key, "Message", {"column": "body", "constraint": "c", "parent": "User", "index": "i",
                                             "new_name": "n", "type": "text", "old": "a", "new": "b",
                                             "value": "v", "function": "f", "what": "x", "held": "H",
                                             "lock": "SHARE", "first": "0", "slow": "1", "slow_kind": "k",
                                             "old_type": "varchar(5)", "setting": "lock_timeout"})
            assert not re.search(r"<[a-z_]+>", advice.title + advice.alternative), key
            assert advice.category == "safe" or advice.category.startswith("risky: ")
