"""Go-time lock pre-flight: sessions that would block (or be queued behind) the migration's locks, found just before deploy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.integrations.postgres import Postgres, SessionLock, schema_of
from bot.redact import redact
from bot.safety.analysis import Catalog, SchemaModel, analyze_file

QUERY_CHARS = 120


@dataclass
class Blocker:
    """One session that touches a target table and has held its transaction open too long."""

    pid: int
    state: str
    age_s: float
    query: str
    locks: list[str] = field(default_factory=list)  # e.g. 'AccessShareLock on "User"', '... (waiting)'
    tables: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``pid 4242 idle in transaction for 12 s on "User": SELECT …``."""
        on = ", ".join(f'"{t}"' for t in self.tables)
        return f"pid {self.pid} {self.state} for {self.age_s:.0f} s on {on}: {self.query}"


@dataclass
class PreflightReport:
    """The pre-flight verdict: ``ok`` when no session would hold up the migration's locks."""

    ok: bool
    tables: list[str]
    blockers: list[Blocker] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``clear: no long or idle transactions on "User", "Post"`` or the blockers found."""
        if not self.tables:
            return "clear: the pending migrations touch no existing tables"
        if self.ok:
            return "clear: no long-running or idle-in-transaction sessions on " + ", ".join(
                f'"{t}"' for t in self.tables
            )
        count = len(self.blockers)
        head = f"{count} session{'s' if count != 1 else ''} would hold up the migration's locks"
        return redact(
            f"{head}: "
            + "; ".join(b.describe() for b in self.blockers[:3])
            + (f"; and {count - 3} more" if count > 3 else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for the run store and the audit log)."""
        return asdict(self)


def target_tables(migrations: Sequence[tuple[str, str]], database_url: str | None = None) -> list[str]:
    """The existing tables the (name, sql) migrations lock, in first-locked order; tables they create are left out.

    Referenced (parent) tables of foreign keys count: adding one locks the parent SHARE ROW EXCLUSIVE, dropping
    one ACCESS EXCLUSIVE. With ``database_url`` the live catalog names the parent of an FK the migrations only
    drop or validate by name (Prisma's "drop FK, re-add with a new onDelete"); without it only FKs the
    migrations themselves create are known. Temporary tables are left out. Names are as the safety analysis
    writes them: bare for the default schema, ``schema.table`` otherwise.
    """
    if database_url is None:
        return _target_tables(migrations, None)
    from bot.integrations.pgcatalog import LiveCatalog

    with Postgres(database_url).read_only_connection() as conn:
        return _target_tables(migrations, LiveCatalog(conn))


def _target_tables(migrations: Sequence[tuple[str, str]], catalog: Catalog | None) -> list[str]:
    model = SchemaModel()
    seen: list[str] = []
    for _name, sql in migrations:
        analysis = analyze_file(sql, model, catalog)
        for lock in analysis.table_locks:
            if lock.table not in seen and lock.table not in analysis.temporary:
                seen.append(lock.table)
    created = set(model.created)
    return [t for t in seen if t not in created]


def _one_line(query: str) -> str:
    text = " ".join(query.split())
    return redact(text[: QUERY_CHARS - 1] + "…" if len(text) > QUERY_CHARS else text)


def lock_preflight(
    database_url: str,
    tables: list[str],
    *,
    long_running_s: float = 60,
    idle_in_tx_s: float = 5,
) -> PreflightReport:
    """Find other sessions holding or awaiting a lock on ``tables`` that are idle in transaction or long-running.

    A session counts when it holds (or waits for) any lock on a target table and is either idle in
    transaction for more than ``idle_in_tx_s`` (since its last statement) or has had its transaction open
    more than ``long_running_s`` while running. Either keeps its locks until it ends, so the migration's
    lock would wait, and queue every later query on the table behind it. Raises IntegrationError when the
    database cannot be queried.
    """
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return PreflightReport(ok=True, tables=[])
    schema = schema_of(database_url)
    rows = Postgres(database_url).session_locks()
    by_pid: dict[int, list[SessionLock]] = {}
    for row in rows:
        by_pid.setdefault(row.pid, []).append(row)
    blockers: list[Blocker] = []
    for pid, session in by_pid.items():
        first = session[0]
        if first.backend_type not in (None, "client backend"):
            continue
        touched: list[str] = []
        locks: list[str] = []
        for row in session:
            if row.table is None or row.mode is None:
                continue
            name = row.table if row.schema == schema else f"{row.schema}.{row.table}"
            if name in wanted:
                if name not in touched:
                    touched.append(name)
                locks.append(f'{row.mode} on "{name}"' + ("" if row.granted else " (waiting)"))
        if not touched:
            continue
        state = first.state or "unknown"
        if state.startswith("idle in transaction"):
            age = first.state_age_s or 0.0
            if age <= idle_in_tx_s:
                continue
        elif state == "active":
            age = first.xact_age_s if first.xact_age_s is not None else (first.query_age_s or 0.0)
            if age <= long_running_s:
                continue
        else:
            continue
        blockers.append(
            Blocker(
                pid=pid,
                state=state,
                age_s=round(age, 1),
                query=_one_line(first.query),
                locks=sorted(set(locks)),
                tables=sorted(touched, key=wanted.index),
            )
        )
    blockers.sort(key=lambda b: -b.age_s)
    return PreflightReport(ok=not blockers, tables=wanted, blockers=blockers)
