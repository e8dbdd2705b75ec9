"""Every alternative the review can emit runs: phase by phase, as Prisma migrations, ending in the original's schema.

The corpus (tests/data/safety/alternatives/) holds real-shaped Prisma migrations, one case a directory: the change
(migration.sql) on top of a shared starting schema (base_init.sql, with rows from base_rows.sql), the advice key
whose alternative it exercises, the squawk/analysis rule, and the findings the review must report for it
(rule, level, lock, tables touched). For each case the review runs without a database; the finding's phases are
then applied to a throwaway database holding the starting schema and rows, each migration through the bot's own
Prisma runner (bot.integrations.prisma.native), each script outside it until it changes no rows; the end schema
must equal what the original migration produces on another throwaway database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.integrations.prisma.migrations import PrismaError
from bot.integrations.prisma.native import NativeRunner
from bot.safety import review_migrations
from bot.safety.advice import REGISTRY, SAFE
from bot.safety.alternatives import BUILDERS, VALUE
from bot.safety.analysis import analyze_file

CORPUS = Path(__file__).parent / "data" / "safety" / "alternatives"
INIT = (CORPUS / "base_init.sql").read_text()
ROWS = (CORPUS / "base_rows.sql").read_text()
CASES = sorted(p.name for p in (CORPUS / "cases").iterdir() if p.is_dir())
INIT_NAME = "20240101000000_init"
CHANGE_NAME = "20240201000000_change"


def _case(name: str) -> tuple[dict[str, Any], str]:
    directory = CORPUS / "cases" / name
    return json.loads((directory / "case.json").read_text()), (directory / "migration.sql").read_text()


def _review(meta: dict[str, Any], sql: str) -> Any:
    return review_migrations([(INIT_NAME, INIT), (CHANGE_NAME, sql)], pg_version=meta.get("pg_version", 15))


def _finding(meta: dict[str, Any], sql: str) -> Any:
    review = _review(meta, sql)
    found = [f for f in review.migrations[1].findings
             if f.rule == meta["rule"] or meta["rule"] in f.squawk_rules]
    assert found, f"no {meta['rule']} finding in {[f.rule for f in review.migrations[1].findings]}"
    return found[0]


def _shape(finding: Any) -> dict[str, Any]:
    return {"rule": finding.rule, "level": finding.level, "lock": finding.lock,
            "tables": sorted(f"{t['table']}:{t['lock']}" for t in finding.tables)}


def _runnable_keys() -> list[str]:
    return sorted(k for k, a in REGISTRY.items() if a.category != SAFE and not a.manual)


class TestCorpusCoversEveryAlternative:
    def test_every_runnable_alternative_has_a_case(self):
        """A registry entry with a runnable alternative and no corpus case fails here (add one under cases/)."""
        covered = {_case(name)[0]["alternative"] for name in CASES}
        missing = [key for key in _runnable_keys() if key not in covered]
        assert not missing, f"advice without a runnable-alternative case: {missing}"

    def test_every_runnable_alternative_has_a_builder(self):
        """An entry is either built as SQL phases or says why it cannot be (Advice.manual)."""
        assert [k for k in _runnable_keys() if k not in BUILDERS] == []
        assert all(REGISTRY[k].manual for k in REGISTRY if REGISTRY[k].category != SAFE and k not in BUILDERS)


@pytest.mark.parametrize("name", CASES)
def test_expected_findings(name):
    """The review reports exactly the expected non-info findings (rule, level, lock, tables) for the case."""
    meta, sql = _case(name)
    review = _review(meta, sql)
    shapes = [_shape(f) for f in review.migrations[1].findings if f.level != "info"]
    assert shapes == meta["findings"]
    finding = _finding(meta, sql)
    assert finding.category.startswith("risky: ") and finding.phases, finding
    assert finding.lock, "every finding names its lock"


def _snapshot(url: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The user-visible schema: columns, constraints (FK actions included), indexes, enum labels, views.

    A case may name tables whose constraints differ by design (``constraints_differ_on``, with the reason), e.g.
    the CHECK that DETACH PARTITION CONCURRENTLY leaves on the detached table.
    """
    queries = {
        "columns": """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped
              AND c.relname <> '_prisma_migrations'""",
        "constraints": """
            SELECT c.relname, k.conname, pg_get_constraintdef(k.oid), k.convalidated
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relname <> '_prisma_migrations'""",
        "indexes": """
            SELECT i.tablename, i.indexname, i.indexdef, x.indisvalid
            FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname
            JOIN pg_index x ON x.indexrelid = c.oid
            WHERE i.schemaname = 'public' AND i.tablename <> '_prisma_migrations'""",
        "enums": """
            SELECT t.typname, e.enumlabel, e.enumsortorder FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid""",
        "relations": """
            SELECT c.relname, c.relkind, c.relispartition FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')""",
    }
    skip = set(meta.get("constraints_differ_on", {}))
    with psycopg.connect(url, autocommit=True) as conn:
        found = {key: sorted(tuple(map(str, row)) for row in conn.execute(query).fetchall())
                 for key, query in queries.items()}
    found["constraints"] = [row for row in found["constraints"] if row[0] not in skip]
    return found


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).mkdir(parents=True)
    (directory / name / "migration.sql").write_text(sql)


def _new_dir(root: Path) -> Path:
    root.mkdir()
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    _write(root, INIT_NAME, INIT)
    return root


def _fill(sql: str, meta: dict[str, Any]) -> str:
    for placeholder, value in meta["fill"].items():
        sql = sql.replace(placeholder, value)
    assert VALUE not in sql, f"the case must say what to backfill: {sql}"
    return sql


@pytest.mark.parametrize("name", CASES)
def test_alternative_runs_and_ends_in_the_original_schema(name, scratch_db_factory, tmp_path):
    """Phase by phase on a database with rows: every migration and script succeeds; the end schema is the original's."""
    meta, sql = _case(name)
    finding = _finding(meta, sql)
    assert finding.phases, f"{meta['alternative']} emitted no runnable phases"

    original_url = scratch_db_factory()
    original = _new_dir(tmp_path / "original")
    if meta.get("original_fails"):
        # The original cannot run as one Prisma migration (that is the finding): its intended schema is what its
        # statements produce one at a time.
        NativeRunner(original_url).deploy(original)
        _write(original, CHANGE_NAME, sql)
        with pytest.raises(PrismaError, match=meta["original_fails"]):
            NativeRunner(original_url).deploy(original)
        with psycopg.connect(original_url, autocommit=True) as conn:
            for statement in analyze_file(sql).statements:
                conn.execute(statement.sql)
    else:
        _write(original, CHANGE_NAME, sql)
        NativeRunner(original_url).deploy(original)
    expected = _snapshot(original_url, meta)

    url = scratch_db_factory()
    directory = _new_dir(tmp_path / "alternative")
    runner = NativeRunner(url)
    runner.deploy(directory)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ROWS)
    statements = [st.sql for st in analyze_file(sql).statements]
    here, *later = finding.phases
    assert here["kind"] == "here"
    statements[finding.statement_index] = here["sql"]
    first = ";\n".join(s.rstrip().rstrip(";") for s in statements if s.strip())
    _write(directory, CHANGE_NAME, first + ";\n" if first else "-- nothing left in this file\nSELECT 1;\n")
    runner.deploy(directory)
    number = 0
    for phase in later:
        if phase["kind"] in ("migration", "alone"):
            number += 1
            _write(directory, f"2024030{number}000000_phase", phase["sql"] + ";\n")
            runner.deploy(directory)
        elif phase["kind"] == "script":
            script = _fill(phase["sql"], meta)
            batches = 0
            with psycopg.connect(url, autocommit=True) as conn:
                while conn.execute(script).rowcount:
                    batches += 1
                    assert batches < 1000, "the batched script never finishes"
    rows = runner.rows()
    assert all(r.finished_at is not None and r.rolled_back_at is None for r in rows)
    assert len(rows) == 2 + number
    assert _snapshot(url, meta) == expected


class TestWithDatabase:
    def test_every_finding_carries_live_rows_and_size(self, scratch_db):
        """With a database, squawk-only findings and an FK's referenced table carry live rows and size too."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(INIT)
            conn.execute(ROWS)
            conn.execute('ANALYZE "Post"; ANALYZE "Comment"')
            sql = (_case("fk_on_delete_change")[1] + _case("drop_default")[1])
            review = review_migrations([(CHANGE_NAME, sql)], conn=conn)
        findings = {f.rule: f for f in review.findings}
        drop_default = findings["ban-drop-default"]
        assert drop_default.rows == 12000 and drop_default.bytes and drop_default.lock == "ACCESS EXCLUSIVE"
        assert '"Post" (12 k rows,' in drop_default.why
        assert drop_default.category == "risky: removing column defaults"
        fk = findings["fk-without-not-valid"]
        sizes = {t["table"]: t["rows"] for t in fk.tables}
        assert sizes == {"Comment": 500, "Post": 12000}
        assert 'Also locks "Post" (SHARE ROW EXCLUSIVE, 12 k rows,' in fk.why
        assert "ON DELETE CASCADE ON UPDATE CASCADE NOT VALID" in fk.alternative


class TestShownInTheThread:
    def test_every_case_renders_escaped_within_slack_limits(self):
        """The thread's review paragraphs for every case: escaped SQL (the <value> placeholder too), messages that fit."""
        from bot.messages import MESSAGE_LIMIT, split_message
        from bot.runbook.inspection import review_paragraphs
        from bot.runbook.rules import FindingDetail
        from bot.runbook.rules import Review as ThreadReview

        details = []
        for name in CASES:
            meta, sql = _case(name)
            for f in _review(meta, sql).migrations[1].findings:
                if f.level in ("high", "medium"):
                    details.append(FindingDetail(migration=f"{CHANGE_NAME}_{name}", level=f.level, message=f.message,
                                                 why=f.why, alternative=f.alternative, category=f.category))
        paragraphs = review_paragraphs(ThreadReview(summary="many", details=details))
        text = "\n".join(paragraphs)
        assert "&lt;value&gt;" in text and "<value>" not in text
        assert 'FOREIGN KEY ("postId") REFERENCES "Post" (id) ON DELETE CASCADE ON UPDATE CASCADE NOT VALID' in text
        pieces = split_message(paragraphs)
        assert all(len(piece) <= MESSAGE_LIMIT for piece in pieces)
        assert max(len(p) for p in paragraphs) < MESSAGE_LIMIT, "one finding fits one message"


class TestLintCommand:
    def test_json_lists_phases_and_tables_with_live_sizes(self, scratch_db, tmp_path, capsys):
        """`migrate-bot lint DIR --database-url URL --format json`: each finding lists its phases and every table
        it locks (the FK's referenced table too) with live rows."""
        from bot.cli.main import main

        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(INIT)
            conn.execute(ROWS)
            conn.execute('ANALYZE "Post"; ANALYZE "Comment"')
        directory = tmp_path / "migrations"
        directory.mkdir()
        _write(directory, CHANGE_NAME, _case("fk_on_delete_change")[1])
        assert main(["lint", str(directory), "--database-url", scratch_db, "--format", "json"]) in (0, 1)
        data = json.loads(capsys.readouterr().out)
        findings = {f["rule"]: f for f in data["migrations"][0]["findings"]}
        fk = findings["fk-without-not-valid"]
        assert {t["table"]: t["rows"] for t in fk["tables"]} == {"Comment": 500, "Post": 12000}
        assert [p["kind"] for p in fk["phases"]] == ["here", "migration"]
        assert fk["phases"][0]["sql"].endswith("ON DELETE CASCADE ON UPDATE CASCADE NOT VALID")
        dropped = findings["ban-drop-constraint"]
        assert dropped["lock"] == "ACCESS EXCLUSIVE" and dropped["rows"] == 500 and dropped["phases"]
        assert {t["table"] for t in dropped["tables"]} == {"Comment", "Post"}
        assert dropped["category"] == "risky: foreign key constraints"


class TestShapesWithoutARewrite:
    @pytest.mark.parametrize("sql", [
        'UPDATE "User" SET ("name", "role") = (\'x\', \'USER\') WHERE true;',  # multi-column assignment
        'ALTER TABLE "User" ADD COLUMN "seq" INT GENERATED ALWAYS AS IDENTITY;',  # identity, not SERIAL
    ])
    def test_prose_alternative_and_no_phases(self, sql):
        """A shape the rewrite does not handle keeps the prose alternative: never wrong SQL, never a crash."""
        finding = next(f for f in _review({}, sql).migrations[1].findings if f.level in ("high", "medium"))
        assert finding.alternative and finding.phases == [] and finding.lock
        assert "outside Prisma" in finding.alternative
