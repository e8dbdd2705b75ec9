"""Migration safety review: squawk findings joined with pglast lock analysis and live table sizes."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.integrations.pgcatalog import LiveCatalog, TableSize, server_version_num
from bot.integrations.squawk import SquawkBatch, SquawkConfig, SquawkViolation
from bot.messages import statements
from bot.safety.advice import REGISTRY, SAFE, Level, advise, risky
from bot.safety.analysis import (
    Check,
    FileAnalysis,
    Lock,
    SchemaModel,
    StatementAnalysis,
    TableLock,
    analyze_file,
)

if TYPE_CHECKING:
    from bot.integrations.pgcatalog import Connection

LEVELS: tuple[Level, ...] = ("high", "medium", "low", "info")
_RANK = {level: i for i, level in enumerate(LEVELS)}

# Size thresholds for lock risk with a database: a table at or above either HIGH bound makes a rewrite/scan
# "high"; below both MEDIUM bounds it is "low" (the lock lasts well under a second); in between "medium".
MEDIUM_ROWS = 10_000
MEDIUM_BYTES = 10 * 1024**2
HIGH_ROWS = 1_000_000
HIGH_BYTES = 1024**3
# Without a database (size unknown), risk is static:
STATIC_REWRITE_OR_SCAN_BLOCKING_READS: Level = "high"  # ACCESS EXCLUSIVE + rewrite or full scan
STATIC_SCAN_BLOCKING_WRITES: Level = "medium"  # SHARE / SHARE ROW EXCLUSIVE + scan or index build
STATIC_DATA_CHANGE: Level = "medium"  # UPDATE/DELETE in the DDL transaction

# squawk rules that are noise for Prisma-generated SQL (Prisma picks these types and names): info.
INFO_RULES = frozenset({
    "prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity", "prefer-text-field",
    "prefer-timestamptz", "prefer-timestamp-tz", "prefer-robust-stmts", "ban-char-field", "identifier-too-long",
    "require-table-schema",
})
# Dropped when the runner sets that timeout itself (lock_timeout: bot_sets_timeouts; statement_timeout: a
# statement_timeout_ms is given); else kept at "low".
LOCK_TIMEOUT_RULE, STATEMENT_TIMEOUT_RULE = "require-lock-timeout", "require-statement-timeout"
TIMEOUT_RULES = (LOCK_TIMEOUT_RULE, STATEMENT_TIMEOUT_RULE)
# Level of squawk findings the analysis has no opinion on; anything not listed is "medium".
SQUAWK_LEVELS: dict[str, Level] = {
    "syntax-error": "high", "ban-drop-database": "high", "ban-truncate-cascade": "high",
    "ban-uncommitted-transaction": "high", "ban-concurrent-index-creation-in-transaction": "high",
    "ban-duplicate-column-assignments": "high", "ban-drop-schema": "high",
"ban-drop-not-null": "low", "ban-drop-default": "low",
    "ban-drop-constraint": "low", "renaming-object": "low", "ban-drop-type": "low",
}
# squawk rule -> analysis checks about the same issue (merged into one finding, the rule kept visible).
SQUAWK_TO_CHECKS: dict[str, frozenset[str]] = {
    "adding-required-field": frozenset({"required-column", "identity-column"}),
    "adding-not-nullable-field": frozenset({"set-not-null"}),
    "require-concurrent-index-creation": frozenset({"non-concurrent-index"}),
    "adding-foreign-key-constraint": frozenset({"fk-without-not-valid"}),
    "constraint-missing-not-valid": frozenset({"fk-without-not-valid", "check-without-not-valid",
                                               "validate-same-transaction", "unique-build"}),
    "changing-column-type": frozenset({"type-change", "type-change-safe"}),
    "ban-drop-column": frozenset({"drop-column"}),
    "ban-drop-table": frozenset({"drop-table"}),
    "renaming-column": frozenset({"rename-column"}),
    "renaming-table": frozenset({"rename-table"}),
    "adding-field-with-default": frozenset({"volatile-default", "generated-column"}),
    "adding-serial-primary-key-field": frozenset({"unique-build"}),
    "disallowed-unique-constraint": frozenset({"unique-build"}),
    "require-concurrent-index-deletion": frozenset({"drop-index"}),
    "require-concurrent-reindex": frozenset({"reindex"}),
    "require-concurrent-partition-detach": frozenset({"detach-partition"}),
    "ban-concurrent-index-creation-in-transaction": frozenset({"concurrently-in-transaction"}),
    "syntax-error": frozenset({"syntax-error"}),
    "prefer-repack": frozenset({"table-rewrite"}),
    "require-enum-value-ordering": frozenset({"enum-add-value", "enum-add-value-old-pg"}),
}

# Advice for findings squawk raises alone (no analysis check covers them); other rules get "squawk-rule".
SQUAWK_ADVICE: dict[str, str] = {
    "ban-drop-constraint": "drop-constraint", "ban-drop-default": "drop-default",
    "ban-drop-not-null": "drop-not-null", "ban-drop-type": "drop-type", "renaming-object": "rename-object",
    "require-lock-timeout": "set-timeout", "require-statement-timeout": "set-timeout",
}


@dataclass
class Finding:
    """One issue in one statement of one migration, from squawk, the analysis, or both (see squawk_rules)."""

    migration: str
    statement_index: int | None
    rule: str
    level: Level
    category: str
    message: str
    why: str
    alternative: str
    table: str | None = None
    lock: str | None = None
    rewrites: bool = False
    scans: bool = False
    rows: int | None = None
    bytes: int | None = None
    source: Literal["squawk", "analysis"] = "analysis"
    squawk_rules: list[str] = field(default_factory=list)
    line: int | None = None
    statement: str | None = None
    # Every table the statement locks (an FK's referenced table too): table, lock, role, rows, bytes.
    tables: list[dict[str, Any]] = field(default_factory=list)
    # The alternative as runnable phases (bot.safety.alternatives.Phase.to_json); [] when it is prose only.
    phases: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (every field; a shallow copy: dataclasses.asdict's deep walk cost 80 ms per 1,000)."""
        data = dict(vars(self))
        data["squawk_rules"] = list(self.squawk_rules)
        return data


def _count(findings: Sequence[Finding]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(LEVELS, 0)
    for finding in findings:
        counts[finding.level] += 1
    return counts


def _summarise(counts: dict[str, int]) -> str:
    parts = [f"{counts[level]} {level}" for level in LEVELS if counts.get(level)]
    return ", ".join(parts) if parts else "no findings"


@dataclass
class MigrationReview:
    """The review of one migration file."""

    name: str
    findings: list[Finding]
    summary_line: str
    table_locks: list[TableLock] = field(default_factory=list)
    statement_count: int = 0

    def counts(self) -> dict[str, int]:
        """Number of findings per level (all four levels present)."""
        return _count(self.findings)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"name": self.name, "summary_line": self.summary_line, "counts": self.counts(),
                "statements": self.statement_count, "table_locks": [t.to_json() for t in self.table_locks],
                "findings": [f.to_json() for f in self.findings]}


@dataclass
class Review:
    """The review of a sequence of migrations."""

    migrations: list[MigrationReview]
    pg_version: int | None = None
    with_database: bool = False
    squawk_config: str | None = None  # "squawk config: <path> (...)" when a .squawk.toml was honoured
    timeouts: str = ""  # what the runner sets, e.g. "lock_timeout set by the bot; statement_timeout not set"

    @property
    def findings(self) -> list[Finding]:
        """All findings, in migration order."""
        return [f for m in self.migrations for f in m.findings]

    def counts(self) -> dict[str, int]:
        """Number of findings per level (all four levels present)."""
        return _count(self.findings)

    def summary(self) -> str:
        """E.g. ``2 high, 1 medium, 5 info`` (or ``no findings``)."""
        return _summarise(self.counts())

    @property
    def has_high(self) -> bool:
        """True when any finding is high."""
        return any(f.level == "high" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"summary": self.summary(), "counts": self.counts(), "has_high": self.has_high,
                "pg_version": self.pg_version, "with_database": self.with_database,
                "squawk_config": self.squawk_config, "timeouts": self.timeouts,
                "migrations": [m.to_json() for m in self.migrations]}


# -- sizes and risk ---------------------------------------------------------------------------------------

def human_rows(rows: int) -> str:
    """``38 M rows``, ``200 k rows``, ``12 rows``."""
    for unit, div in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if rows >= div:
            value = rows / div
            return f"{value:.0f} {unit} rows" if value >= 10 else f"{value:.1f} {unit} rows"
    return f"{rows} rows" if rows != 1 else "1 row"


def human_bytes(size: int) -> str:
    """``21 GB``, ``8.2 MB``, ``16 kB``."""
    for unit, div in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if size >= div:
            value = size / div
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{size} B"


def risk_level(lock: Lock, rewrites: bool, scans: bool, size: TableSize | None) -> Level:
    """Risk of holding ``lock`` on a table while rewriting/scanning it; ``size`` None means unknown (static)."""
    slow = rewrites or scans
    if not slow:
        return "low" if lock >= Lock.SHARE_UPDATE_EXCLUSIVE else "info"
    if size is None:
        if lock.blocks_reads:
            return STATIC_REWRITE_OR_SCAN_BLOCKING_READS
        if lock.blocks_writes:
            return STATIC_SCAN_BLOCKING_WRITES
        return STATIC_DATA_CHANGE if lock == Lock.ROW_EXCLUSIVE else "low"
    if size.rows >= HIGH_ROWS or size.bytes >= HIGH_BYTES:
        big: Level = "high"
    elif size.rows >= MEDIUM_ROWS or size.bytes >= MEDIUM_BYTES:
        big = "medium"
    else:
        return "low"
    if lock.blocks_writes or lock == Lock.ROW_EXCLUSIVE:
        return big
    return "low"


def risk_line(table: str, lock: Lock, rewrites: bool, scans: bool, size: TableSize | None,
              kind: str = "") -> str:
    """One line: ``ACCESS EXCLUSIVE + rewrite of "Message" (38 M rows, 21 GB): blocks reads and writes ...``."""
    what = "rewrite" if rewrites else ("index build" if "INDEX" in kind and scans else ("scan" if scans else ""))
    head = f"{lock.label} + {what} of \"{table}\"" if what else f"{lock.label} on \"{table}\""
    sized = f"{human_rows(size.rows)}, {human_bytes(size.bytes)}" if size is not None else "size unknown: no database"
    if lock.blocks_reads:
        blocked = "blocks reads and writes"
    elif lock.blocks_writes:
        blocked = "blocks writes"
    elif lock == Lock.ROW_EXCLUSIVE:
        blocked = "holds every earlier lock of the file"
    else:
        blocked = "blocks other schema changes"
    if rewrites:
        tail = f"{blocked} for the whole rewrite"
    elif scans:
        tail = f"{blocked} until the {'index is built' if what == 'index build' else 'scan ends'}"
    else:
        tail = f"{blocked} briefly, but queues behind long queries and everything queues behind it"
    return f"{head} ({sized}): {tail}"


# -- building findings ------------------------------------------------------------------------------------

class _Context:
    def __init__(self, conn: Connection | None, model: SchemaModel, pg_version: int | None) -> None:
        self.catalog = LiveCatalog(conn) if conn is not None else None
        self.model = model
        self.pg_major = (pg_version // 10000 if pg_version >= 10000 else pg_version) if pg_version else None

    def size(self, table: str | None, analysis: FileAnalysis) -> TableSize | None:
        if table is None or table in analysis.created_here or table in analysis.temporary:
            return TableSize(0, 0)
        if self.catalog is None:
            return None
        found = self.catalog.table_size(table)
        if found is None and table in self.model.created:
            return TableSize(0, 0)  # created by an earlier migration of this review, not in the DB yet
        return found


def _tables(st: StatementAnalysis | None, analysis: FileAnalysis, ctx: _Context) -> list[dict[str, Any]]:
    """Every table the statement locks, strongest lock each, with live rows and size when a database is given."""
    if st is None:
        return []
    roles: dict[str, str] = {}
    for eff in st.effects:
        roles.setdefault(eff.table, eff.role)
    out: list[dict[str, Any]] = []
    for table, lock in st.tables_touched:  # the analysis' contract: target first, strongest lock each
        role = roles.get(table, "target")
        size = ctx.size(table, analysis) if ctx.catalog is not None else None
        out.append({"table": table, "lock": lock.label, "role": role,
                    "rows": size.rows if size is not None else None, "bytes": size.bytes if size is not None else None})
    return out


def _with_held(tables: list[dict[str, Any]], held: str, lock: Lock, size: TableSize | None) -> list[dict[str, Any]]:
    """The statement's tables plus the table whose earlier lock is still held (the stronger lock kept)."""
    for entry in tables:
        if entry["table"] == held:
            if Lock[entry["lock"].replace(" ", "_")] < lock:
                entry["lock"], entry["role"] = lock.label, "held"
            return tables
    return [{"table": held, "lock": lock.label, "role": "held", "rows": size.rows if size is not None else None,
             "bytes": size.bytes if size is not None else None}, *tables]


def _others_line(tables: list[dict[str, Any]], table: str | None) -> str:
    """`` Also locks "User" (SHARE ROW EXCLUSIVE, 12 k rows, 3.1 MB).`` for the tables besides the finding's own."""
    others = []
    for t in tables:
        if t["table"] == table:
            continue
        sized = f", {human_rows(t['rows'])}, {human_bytes(t['bytes'])}" if t["rows"] is not None else ""
        others.append(f'"{t["table"]}" ({t["lock"]}{sized})')
    return f" Also locks {', '.join(others)}." if others else ""


def _alternative(key: str, category: str, prose: str, sql: str | None, table: str | None,
                 names: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The alternative text and its runnable phases (none for a safe finding; the prose when no SQL form fits)."""
    if category == SAFE:
        return "", []
    # pglast's deparser is loaded only when a review has a risky finding to rewrite
    from bot.safety.alternatives import build, render

    phases = build(key, sql, table, names) if sql and not REGISTRY[key].manual else None
    if not phases:
        return prose, []
    return render(phases), [p.to_json() for p in phases]


def _check_finding(name: str, st: StatementAnalysis, check: Check, analysis: FileAnalysis,
                   ctx: _Context) -> Finding:
    key = check.key
    names = dict(check.names)
    if key == "type-change" and not check.rewrites and not check.scans and names.get("known"):
        key = "type-change-safe"
    if key == "enum-add-value" and ctx.pg_major is not None and ctx.pg_major < 12:
        key = "enum-add-value-old-pg"
    adv = advise(key, check.table, names)
    size = ctx.size(check.table, analysis) if check.table else None
    lock = check.lock
    if adv.kind == "lock" and lock is not None and check.table:
        level = risk_level(lock, check.rewrites, check.scans, size)
        line = risk_line(check.table, lock, check.rewrites, check.scans, size,
                         "INDEX" if names.get("rebuilt_indexes") else st.kind)
        if key == "type-change" and check.rewrites and not names.get("known"):
            line += " (old type unknown: assumed to rewrite)"
        why = f"{line}. {adv.why}"
        category = adv.category
        if key == "set-not-null" and not check.scans:
            level, category = "info", SAFE
            why = f"{line}. A validated CHECK ({names.get('column')} IS NOT NULL) proves it, so there is no scan."
    else:
        level = adv.level
        category = adv.category
        why = adv.why
        if key == "required-column" and size is not None and size.rows == 0 and check.table not in \
                analysis.created_here and ctx.catalog is not None:
            level = "medium"
            why = f"\"{check.table}\" is empty now, so the migration will pass; old app code inserting rows still fails. " + why
    alternative, phases = _alternative(key, category, adv.alternative, st.sql, check.table, names)
    tables = _tables(st, analysis, ctx)
    return Finding(
        migration=name, statement_index=st.index, rule=key, level=level, category=category, message=adv.title,
        why=why + _others_line(tables, check.table), alternative=alternative, table=check.table,
        lock=lock.label if lock else (adv.lock or None), tables=tables, phases=phases,
        rewrites=check.rewrites, scans=check.scans or check.rewrites,
        rows=size.rows if size is not None and ctx.catalog is not None else None,
        bytes=size.bytes if size is not None and ctx.catalog is not None else None,
        source="analysis", line=st.line, statement=st.sql[:300])


def _lock_held_findings(name: str, analysis: FileAnalysis, by_statement: dict[int, list[Finding]],
                        ctx: _Context) -> list[Finding]:
    """Eugene-E4 style: a strong lock taken early in the file stays held during a later slow statement."""
    out: list[Finding] = []
    if analysis.lone_concurrent:
        return out
    held: dict[str, tuple[Lock, int]] = {}
    for st in analysis.statements:
        slow_findings = [f for f in by_statement.get(st.index, []) if (f.rewrites or f.scans)
                         and f.level in ("high", "medium") and f.rule != "lock-held"]
        if slow_findings and st.target and st.target not in analysis.created_here:
            level = min((f.level for f in slow_findings), key=_RANK.__getitem__)
            own = st.lock or Lock.ACCESS_SHARE
            for table, (lock, first) in held.items():
                if table in analysis.created_here or not lock.blocks_writes:
                    continue
                if table == st.target and lock <= own:
                    continue
                size = ctx.size(table, analysis)
                adv = advise("lock-held", table, {
                    "held": table, "lock": lock.label, "first": str(first + 1), "slow": str(st.index + 1),
                    "slow_kind": st.kind})
                blocked = "reads and writes" if lock.blocks_reads else "writes"
                out.append(Finding(
                    migration=name, statement_index=st.index, rule="lock-held", level=level,
                    category=adv.category, message=adv.title,
                    why=f"{lock.label} on \"{table}\" (taken at {statements(first)}) blocks {blocked} until "
                        f"{statements(st.index)} ({st.kind} on \"{st.target}\") and the rest of the file finish. "
                        + adv.why,
                    alternative=_alternative("lock-held", adv.category, adv.alternative, st.sql, table, {})[0],
                    phases=_alternative("lock-held", adv.category, adv.alternative, st.sql, table, {})[1],
                    tables=_with_held(_tables(st, analysis, ctx), table, lock, size if ctx.catalog else None),
                    table=table, lock=lock.label,
                    rows=size.rows if size is not None and ctx.catalog is not None else None,
                    bytes=size.bytes if size is not None and ctx.catalog is not None else None,
                    source="analysis", line=st.line, statement=st.sql[:300]))
        for eff in st.effects:
            prev = held.get(eff.table)
            held[eff.table] = (max(prev[0], eff.lock) if prev else eff.lock, prev[1] if prev else st.index)
    return out


def _line_starts(sql: str) -> list[int]:
    """Offset of the first character of every line."""
    starts = [0]
    at = sql.find("\n")
    while at != -1:
        starts.append(at + 1)
        at = sql.find("\n", at + 1)
    return starts


def _statement_for(violation: SquawkViolation, line_starts: list[int], analysis: FileAnalysis) -> int | None:
    if not analysis.statements:
        return None
    line = min(max(violation.line - 1, 0), len(line_starts) - 1)
    offset = line_starts[line] + max(violation.column - 1, 0)
    starts = [st.location for st in analysis.statements]
    return max(bisect.bisect_right(starts, offset) - 1, 0)


def _object_lock(key: str, fallback: str, names: dict[str, str], st: StatementAnalysis | None) -> str:
    """The lock of a statement that locks no table: on the type, index, view or other object it changes."""
    kind = st.kind if st else ""
    if key == "rename-object" and names.get("kind") not in (None, "index"):
        return f"ACCESS EXCLUSIVE on the {names['kind']}"
    if fallback:
        return fallback
    if kind == "ALTER INDEX RENAME":
        return "SHARE UPDATE EXCLUSIVE on the index"
    if kind.startswith("DROP "):
        return f"ACCESS EXCLUSIVE on the {kind.removeprefix('DROP ').lower().replace('_', ' ')}"
    if kind.startswith("ALTER TYPE"):
        return "EXCLUSIVE on the type (no table lock)"
    return "no table lock"


def _squawk_finding(name: str, v: SquawkViolation, index: int | None, analysis: FileAnalysis,
                    ctx: _Context) -> Finding:
    """A finding squawk raised alone, completed like the analysis' own: lock, tables, size, category, phases."""
    if v.rule in INFO_RULES:
        level: Level = "info"
    elif v.rule in TIMEOUT_RULES:
        level = "low"  # shown only when the runner does not set that timeout (else excluded)
    else:
        level = SQUAWK_LEVELS.get(v.rule, "medium")
    st = analysis.statements[index] if index is not None else None
    table = st.target if st else None
    tables = _tables(st, analysis, ctx)
    own = next((t for t in tables if t["table"] == table), None)
    if level == "info":
        return Finding(
            migration=name, statement_index=index, rule=v.rule, level=level, category=SAFE, message=v.message,
            why=v.help or "", alternative="", table=table, lock=own["lock"] if own else None, source="squawk",
            squawk_rules=[v.rule], line=v.line, statement=st.sql[:300] if st else None, tables=tables,
            rows=own["rows"] if own else None, bytes=own["bytes"] if own else None)
    key = SQUAWK_ADVICE.get(v.rule, "squawk-rule")
    from bot.safety.alternatives import statement_names

    names = statement_names(key, st.sql) if st else {}
    if key == "set-timeout":
        names["setting"] = "lock_timeout" if v.rule == "require-lock-timeout" else "statement_timeout"
    names.setdefault("what", v.message)
    names["help"] = v.help or v.message
    adv = advise(key, table, names)
    lock = own["lock"] if own else None
    if lock is None:
        lock = _object_lock(key, adv.lock, names, st)
    size = (f" ({human_rows(own['rows'])}, {human_bytes(own['bytes'])})"
            if own is not None and own["rows"] is not None else "")
    where = f' on "{table}"{size}' if table else ""
    why = (f"{lock}{where}: brief, but it queues behind long queries and everything queues behind it. "
           if lock else "") + adv.why + _others_line(tables, table)
    category = adv.category
    if key == "drop-constraint" and any(t["role"] == "referenced" for t in tables):
        category = risky("foreign key constraints")  # the seed's own category: it locks the parent table too
    alternative, phases = _alternative(key, category, adv.alternative, st.sql if st else None, table, names)
    return Finding(
        migration=name, statement_index=index, rule=v.rule, level=level, category=category,
        message=adv.title if key != "squawk-rule" else v.message, why=why, alternative=alternative, table=table,
        lock=lock, source="squawk", squawk_rules=[v.rule], line=v.line, statement=st.sql[:300] if st else None,
        tables=tables, phases=phases, rows=own["rows"] if own else None, bytes=own["bytes"] if own else None)


def _assume_in_transaction(analysis: FileAnalysis) -> bool:
    """squawk's --assume-in-transaction for a file: Prisma wraps it in a transaction unless it manages its own
    or is a lone CONCURRENTLY statement (run outside one)."""
    return not analysis.explicit_transaction and not analysis.lone_concurrent


def _analysis_findings(name: str, sql: str, analysis: FileAnalysis, ctx: _Context) -> list[Finding]:
    """The analysis' own findings for one file; run right after analyze_file, while ctx.model is at that file."""
    findings: list[Finding] = []
    if analysis.parse_error is not None:
        adv = advise("syntax-error")
        line = sql.count("\n", 0, analysis.parse_error_offset) + 1 if analysis.parse_error_offset else None
        findings.append(Finding(name, None, "syntax-error", "high", adv.category, f"Syntax error: {analysis.parse_error}",
                                adv.why, adv.alternative, line=line, lock=adv.lock))
    multi = len(analysis.statements) > 1 or analysis.explicit_transaction
    for st in analysis.statements:
        for check in st.checks:
            findings.append(_check_finding(name, st, check, analysis, ctx))
        if st.concurrent and multi:
            adv = advise("concurrently-in-transaction", st.target, {"what": st.kind})
            alternative, phases = _alternative(adv.key, adv.category, adv.alternative, st.sql, st.target, {})
            findings.append(Finding(name, st.index, adv.key, "high", adv.category, adv.title, adv.why,
                                    alternative, table=st.target, lock=st.lock.label if st.lock else None,
                                    line=st.line, statement=st.sql[:300], tables=_tables(st, analysis, ctx),
                                    phases=phases))
    by_statement: dict[int, list[Finding]] = {}
    for f in findings:
        if f.statement_index is not None:
            by_statement.setdefault(f.statement_index, []).append(f)
    findings.extend(_lock_held_findings(name, analysis, by_statement, ctx))
    return findings


def _review_one(name: str, sql: str, analysis: FileAnalysis, findings: list[Finding],
                violations: list[SquawkViolation], ctx: _Context) -> MigrationReview:
    """Join squawk's violations of one file into its analysis findings."""
    line_starts = _line_starts(sql) if violations and analysis.statements else []
    for v in violations:
        index = _statement_for(v, line_starts, analysis)
        targets = SQUAWK_TO_CHECKS.get(v.rule, frozenset())
        st = analysis.statements[index] if index is not None else None
        if st is not None and v.rule != "syntax-error" and (
                targets & st.known_safe.keys() or v.rule in st.known_safe or st.target in analysis.temporary
                or (targets and st.target in analysis.created_here)):
            # The parse tree shows it safe: a column swap, an object made earlier in this migration, a temporary
            # table (no other session sees it), or a table this file created (empty, unseen by deployed code).
            continue
        match = next((f for f in findings if f.source == "analysis" and f.statement_index == index
                      and f.rule in targets), None)
        if match is None and v.rule == "syntax-error":
            match = next((f for f in findings if f.rule == "syntax-error"), None)
        if match is not None:
            if v.rule not in match.squawk_rules:
                match.squawk_rules.append(v.rule)
            continue
        same = next((f for f in findings if f.source == "squawk" and f.rule == v.rule
                     and f.statement_index == index), None)
        if same is None:
            findings.append(_squawk_finding(name, v, index, analysis, ctx))
    findings.sort(key=lambda f: (f.statement_index if f.statement_index is not None else -1, _RANK[f.level]))
    existing_locks = [t for t in analysis.table_locks if not t.new and t.lock >= Lock.SHARE_UPDATE_EXCLUSIVE]
    summary = f"{name}: {_summarise(_count(findings))}"
    if existing_locks:
        summary += "; locks " + ", ".join(
            f'{t.lock.label} on "{t.table}" ({statements(t.first_index, t.last_index)})' for t in existing_locks)
    return MigrationReview(name, findings, summary, analysis.table_locks, len(analysis.statements))


def review_migrations(
    migrations: Sequence[tuple[str, str]],
    *,
    conn: Connection | None = None,
    pg_version: int | None = None,
    bot_sets_timeouts: bool = True,
    statement_timeout_ms: int | None = None,
    squawk_config: SquawkConfig | None = None,
) -> Review:
    """Review (name, SQL) migrations in order; with ``conn``, weigh the risks against live table sizes.

    ``pg_version`` is a major (15) or a server_version_num (150020); with a connection and no value it is read
    from the server, else from ``squawk_config``. ``bot_sets_timeouts``: the runner sets lock_timeout (squawk's
    require-lock-timeout is dropped); ``statement_timeout_ms``: the statement_timeout it sets (None: it sets none,
    and require-statement-timeout stays, at low). ``squawk_config``: the repository's .squawk.toml, whose
    excluded/included rules, excluded paths and pg_version apply to squawk (the lock analysis still reviews
    every file). Raises SquawkNotFound (a ConfigError) when the squawk binary is missing.
    """
    if pg_version is None and conn is not None:
        pg_version = server_version_num(conn)
    if pg_version is None and squawk_config is not None:
        pg_version = squawk_config.pg_major
    ctx = _Context(conn, SchemaModel(), pg_version)
    names = [name for name, _ in migrations]
    sqls = [sql for _, sql in migrations]
    sets_statement_timeout = bot_sets_timeouts and bool(statement_timeout_ms)
    exclude = ([LOCK_TIMEOUT_RULE] if bot_sets_timeouts else []) + (
        [STATEMENT_TIMEOUT_RULE] if sets_statement_timeout else [])
    include: list[str] = []
    if squawk_config is not None:
        exclude += [r for r in squawk_config.excluded_rules if r not in exclude]
        include = list(squawk_config.included_rules)
    timeouts = ("lock_timeout set by the bot" if bot_sets_timeouts else "lock_timeout not set by the bot") + (
        f"; statement_timeout {statement_timeout_ms} ms set by the bot" if sets_statement_timeout else
        "; statement_timeout not set by the bot (set migrate.statement_timeout_ms to have it set)")
    # squawk runs once per flag set, not once per file. Nearly every file is linted with
    # --assume-in-transaction, so that run starts first and lints every file while the analysis (which must go
    # in order: it models the schema file by file) runs here; the few files that need the other flag get a
    # second run afterwards. A file's squawk results do not depend on the other files of the run.
    analyses: list[FileAnalysis] = []
    own: list[list[Finding]] = []
    with SquawkBatch(sqls, names=names, pg_version=pg_version, assume_in_transaction=True,
                     exclude=exclude, include=include) as in_transaction:
        for name, sql in migrations:
            analysis = analyze_file(sql, ctx.model, ctx.catalog)
            analyses.append(analysis)
            own.append(_analysis_findings(name, sql, analysis, ctx))
        outside = [i for i, analysis in enumerate(analyses) if not _assume_in_transaction(analysis)]
        violations = in_transaction.results()
    if outside:
        with SquawkBatch([sqls[i] for i in outside], names=[names[i] for i in outside], pg_version=pg_version,
                         assume_in_transaction=False, exclude=exclude, include=include) as own_transaction:
            for i, found in zip(outside, own_transaction.results(), strict=True):
                violations[i] = found
    if squawk_config is not None and squawk_config.excluded_paths:
        violations = [[] if squawk_config.excludes(name) else found for name, found in zip(names, violations,
                                                                                          strict=True)]
    reviews = [_review_one(name, sql, analysis, findings, found, ctx)
               for name, sql, analysis, findings, found in zip(names, sqls, analyses, own, violations, strict=True)]
    return Review(reviews, pg_version=pg_version, with_database=conn is not None,
                  squawk_config=squawk_config.describe() if squawk_config is not None else None,
                  timeouts=timeouts)
