"""Why each risky change is dangerous and its safe multi-phase alternative, in the seed's vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SAFE = "safe"

Level = Literal["high", "medium", "low", "info"]


def risky(reason: str) -> str:
    """A category in the seed's words: ``risky: <reason>``."""
    return f"risky: {reason}"


@dataclass(frozen=True)
class Advice:
    """One check's explanation. ``kind`` says how its level is decided.

    - ``lock``: from the lock, rewrite/scan and table size (see review.risk_level);
    - ``fixed``: always ``level`` (breaking changes: size does not matter);
    - ``info``: informational.
    """

    key: str
    title: str
    category: str
    why: str
    alternative: str
    kind: str = "lock"
    level: Level = "info"
    # Why the alternative has no runnable SQL phases (bot.safety.alternatives); "" when it has them.
    manual: str = ""
    # The lock to show when the statement locks no table (a type, an index rename).
    lock: str = ""


class _Names(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def quote(name: str) -> str:
    """An identifier quoted as PostgreSQL needs for a name written exactly so (Prisma's mixed-case names)."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: str) -> str:
    """``audit.Log`` -> ``"audit"."Log"`` (the review shows tables of the default schema bare)."""
    return ".".join(quote(part) for part in name.split("."))


def _q(name: str) -> str:
    return quote(name) if name and not name.startswith("<") else name


def _qt(name: str) -> str:
    return quote_qualified(name) if name and not name.startswith("<") else name


REGISTRY: dict[str, Advice] = {}


def _add(advice: Advice) -> None:
    REGISTRY[advice.key] = advice


_add(Advice(
    "required-column", 'Adding non-nullable column {t}.{c} without a default', risky("adding non-nullable columns"),
    "ADD COLUMN ... NOT NULL with no default fails on any non-empty table, and the old app code, which "
    "inserts without the column, starts failing as soon as it succeeds.",
    "Phase 1: ALTER TABLE {t} ADD COLUMN {c} {type} (nullable, or NOT NULL with a constant DEFAULT); make the "
    "Prisma field optional ({column}?) and deploy code that writes it. Phase 2: backfill with a script run "
    "outside Prisma, in batches, between two migrations. Phase 3: "
    "ALTER TABLE {t} ADD CONSTRAINT {t_c_check} CHECK ({c} IS NOT NULL) NOT VALID; then in its own migration "
    "ALTER TABLE {t} VALIDATE CONSTRAINT {t_c_check}; ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL "
    "(no scan on PG 12+); ALTER TABLE {t} DROP CONSTRAINT {t_c_check}.",
    kind="fixed", level="high"))
_add(Advice(
    "set-not-null", 'SET NOT NULL on {t}.{c}', risky("adding non-nullable columns"),
    "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE (no reads, no writes) unless a validated "
    "CHECK ({column} IS NOT NULL) already proves it.",
    "Backfill NULLs first, then ALTER TABLE {t} ADD CONSTRAINT {t_c_check} CHECK ({c} IS NOT NULL) NOT VALID; "
    "in a separate migration ALTER TABLE {t} VALIDATE CONSTRAINT {t_c_check} (SHARE UPDATE EXCLUSIVE: reads "
    "and writes continue); then ALTER COLUMN {c} SET NOT NULL skips the scan; drop the CHECK afterwards."))
_add(Advice(
    "non-concurrent-index", 'CREATE {unique}INDEX {i} on {t} without CONCURRENTLY',
    risky("adding indexes without CONCURRENTLY"),
    "A plain CREATE INDEX takes a SHARE lock: every INSERT, UPDATE and DELETE on the table waits for the "
    "whole index build.",
    "Create it with CREATE {unique}INDEX CONCURRENTLY {i} ON {t} (...) as the only statement of its own "
    "migration (prisma migrate dev --create-only, then edit migration.sql): it cannot run inside the "
    "transaction Prisma wraps a multi-statement file in. If it fails, DROP INDEX CONCURRENTLY the INVALID "
    "index before retrying."))
_add(Advice(
    "fk-without-not-valid", 'Foreign key {k} on {t} -> {p} without NOT VALID', risky("foreign key constraints"),
    "Adding a validated foreign key scans {t} while holding SHARE ROW EXCLUSIVE on both {t} and {p}: "
    "writes to both tables are blocked until the check finishes.",
    "ALTER TABLE {t} ADD CONSTRAINT {k} FOREIGN KEY ({columns}) REFERENCES {p} ({parent_columns}) NOT VALID; "
    "then, in a separate migration, ALTER TABLE {t} VALIDATE CONSTRAINT {k} (SHARE UPDATE EXCLUSIVE on {t}: "
    "reads and writes continue)."))
_add(Advice(
    "check-without-not-valid", 'CHECK constraint {k} on {t} without NOT VALID',
    risky("check constraints that scan the table"),
    "A validated CHECK scans the whole table under ACCESS EXCLUSIVE: no reads or writes until it finishes.",
    "ALTER TABLE {t} ADD CONSTRAINT {k} CHECK (...) NOT VALID; then VALIDATE CONSTRAINT {k} in a separate "
    "migration."))
_add(Advice(
    "validate-same-transaction", 'VALIDATE CONSTRAINT {k} in the same migration that added it NOT VALID',
    risky("validation inside the DDL transaction"),
    "The ADD CONSTRAINT lock is still held (a Prisma file is one transaction), so the validation scan runs "
    "under it and NOT VALID gains nothing.",
    "Move ALTER TABLE {t} VALIDATE CONSTRAINT {k} into its own, later migration."))
_add(Advice(
    "type-change", 'Changing the type of {t}.{c} to {type}', risky("changing column types"),
    "ALTER COLUMN TYPE holds ACCESS EXCLUSIVE (no reads, no writes) and, unless the change is binary-coercible, "
    "rewrites the table and every index; running app code may also break on the new type.",
    "Phase 1: add a new column {c_new} {type} (nullable) and dual-write both columns. Phase 2: backfill "
    "{c_new} with a script run outside Prisma, in batches. Phase 3: switch reads to {c_new}. Phase 4: stop writing {c}, then drop it (and rename "
    "with @map in schema.prisma instead of a SQL rename). Binary-coercible changes need no rewrite: "
    "varchar(n) to a larger varchar or text, numeric precision up at the same scale."))
_add(Advice(
    "type-change-safe", 'Changing the type of {t}.{c} from {old_type} to {type} (no rewrite)', SAFE,
    "The change is binary-coercible: only a brief ACCESS EXCLUSIVE lock, no rewrite.",
    "", kind="fixed", level="low"))
_add(Advice(
    "drop-column", 'Dropping column {t}.{c}', risky("removing columns"),
    "Running app instances still select and insert {column}; they fail from the moment the column is gone, "
    "and the data cannot be restored without the backup.",
    "Phase 1: stop reading and writing {column} (mark the field @ignore in schema.prisma, or make it optional "
    "if it is required without a default) and deploy. Phase 2: once no running version uses it, drop it in a "
    "later migration: ALTER TABLE {t} DROP COLUMN {c}.",
    kind="fixed", level="high"))
_add(Advice(
    "drop-table", 'Dropping table {t}', risky("removing tables"),
    "All its data is lost, running code that still queries {table} fails, and DROP TABLE also takes ACCESS "
    "EXCLUSIVE on every table it references with a foreign key.",
    "Phase 1: migrate or archive the data first (copy what is still needed, e.g. CREATE TABLE {t_archive} AS "
    "SELECT * FROM {t}, or keep the pre-migration snapshot). Phase 2: remove all reads and writes of the model "
    "and deploy. Phase 3: DROP TABLE {t} in a later migration.",
    kind="fixed", level="high"))
_add(Advice(
    "rename-column", 'Renaming column {t}.{c} to {n}', risky("renaming columns without a dual-write period"),
    "Old app instances keep using {column} during the deploy and fail until every instance runs the new code.",
    "Keep the database name and rename only in Prisma: {new_name} ... @map(\"{column}\"). If the database column "
    "must change: add {n}, dual-write both columns, backfill, move reads to {n}, stop writing {c}, then drop it.",
    kind="fixed", level="high",
    manual="it keeps the database name (@map), so the schema deliberately stays as it was"))
_add(Advice(
    "rename-table", 'Renaming table {t} to {n}', risky("renaming tables without a dual-write period"),
    "Old app instances keep querying {table} during the deploy and fail until every instance runs the new code.",
    "Keep the table name and rename only the Prisma model with @@map(\"{table}\"). If the table itself must "
    "change: create {n}, dual-write, backfill, move reads, stop writing {t}, then drop it.",
    kind="fixed", level="high",
    manual="it keeps the database name (@@map), so the schema deliberately stays as it was"))
_add(Advice(
    "volatile-default", 'Column {t}.{c} with volatile default {function}()', risky("column default that rewrites the table"),
    "A volatile DEFAULT (one value per row) rewrites the table and all its indexes under ACCESS EXCLUSIVE.",
    "ALTER TABLE {t} ADD COLUMN {c} {type} (no default); then ALTER COLUMN {c} SET DEFAULT {function}() (new rows "
    "only); backfill existing rows with a script run outside Prisma, in batches, between two migrations."))
_add(Advice(
    "generated-column", 'Stored generated column {t}.{c}', risky("column that rewrites the table"),
    "A STORED generated column is computed for every row: a full rewrite under ACCESS EXCLUSIVE.",
    "Add a plain nullable column, fill it from the app or a trigger, backfill with a script run outside "
    "Prisma, in batches.",
    manual="a plain column filled by the app replaces the generated one: a different schema by design"))
_add(Advice(
    "identity-column", 'Serial or identity column {t}.{c}', risky("column that rewrites the table"),
    "Adding a serial/identity column fills every existing row: a full rewrite under ACCESS EXCLUSIVE.",
    "For SERIAL: create the sequence, add the column without a default, set the default, backfill with a script run "
    "outside Prisma in batches, "
    "then NOT NULL through a validated CHECK. For an identity column: create a new table with it, copy the data "
    "in batches with a script run outside Prisma, then switch (as for a table rename).",
))
_add(Advice(
    "unique-build", 'Unique or primary key constraint on {t} built under ACCESS EXCLUSIVE',
    risky("unique constraint builds an index under ACCESS EXCLUSIVE"),
    "The index is built while ACCESS EXCLUSIVE blocks all reads and writes on {table}.",
    "CREATE UNIQUE INDEX CONCURRENTLY {t_idx} ON {t} (...) in its own migration; then "
    "ALTER TABLE {t} ADD CONSTRAINT {k} UNIQUE USING INDEX {t_idx} (or PRIMARY KEY USING INDEX)."))
_add(Advice(
    "drop-index", 'DROP INDEX {i} without CONCURRENTLY', risky("dropping indexes without CONCURRENTLY"),
    "DROP INDEX takes ACCESS EXCLUSIVE on the table: short, but it queues behind long queries and everything "
    "queues behind it.",
    "DROP INDEX CONCURRENTLY {i} as the only statement of its own migration."))
_add(Advice(
    "reindex", 'REINDEX on {t} without CONCURRENTLY', risky("reindexing without CONCURRENTLY"),
    "REINDEX blocks writes to the table and any query that uses the index while it rebuilds.",
    "REINDEX ... CONCURRENTLY (PG 12+) in its own migration."))
_add(Advice(
    "detach-partition", 'DETACH PARTITION on {t} without CONCURRENTLY', risky("detaching partitions"),
    "Takes ACCESS EXCLUSIVE on the parent and the partition.",
    "ALTER TABLE {t} DETACH PARTITION ... CONCURRENTLY (PG 14+), alone in its own migration."))
_add(Advice(
    "table-rewrite", '{what} rewrites {t}', risky("table rewrite"),
    "The table is rewritten under ACCESS EXCLUSIVE: no reads or writes until it finishes.",
    "Avoid it in a deploy migration; schedule a maintenance window or use a shadow-table copy.",
    manual="a maintenance window or a shadow-table copy, not a migration rewrite"))
_add(Advice(
    "truncate", 'TRUNCATE {t}', risky("removing data"),
    "All rows are removed under ACCESS EXCLUSIVE; the data is gone.",
    "Archive the data first and truncate in a maintenance step, not a deploy migration.",
    kind="fixed", level="high"))
_add(Advice(
    "backfill-in-migration", '{what} on {t} inside the schema migration', risky("data backfill inside the DDL transaction"),
    "The whole file is one transaction: every lock taken earlier in the file is held until the data change "
    "finishes, and one huge UPDATE bloats the table and replication.",
    "Take it out of the migration and run it as a script outside Prisma, in batches of a few thousand rows, "
    "between two migrations (a migration file is one transaction, so batches inside it do not help): "
    "UPDATE {t} SET ... WHERE ctid IN (SELECT ctid FROM {t} WHERE ... LIMIT 5000), repeated until 0 rows."))
_add(Advice(
    "lock-held", '{lock} on {h} held while statement {slow} runs', risky("lock held for the rest of the migration"),
    "A Prisma migration file is one transaction, so the lock on {h} taken at statement {first} is held until "
    "the file commits, including the slow statement {slow}.",
    "Split the file: put the slow statement ({slow_kind}) in its own migration, so {h} is locked only briefly."))
_add(Advice(
    "concurrently-in-transaction", '{what} in a multi-statement migration',
    risky("CONCURRENTLY inside a transaction"),
    "PostgreSQL refuses CONCURRENTLY inside a transaction block, and Prisma runs a multi-statement file as one "
    "transaction: the migration will fail.",
    "Move the CONCURRENTLY statement into its own migration file, alone.", kind="fixed", level="high"))
_add(Advice(
    "concurrent-index", 'CREATE INDEX CONCURRENTLY {i} on {t}', SAFE,
    "Builds without blocking reads or writes (SHARE UPDATE EXCLUSIVE); waits for older transactions.",
    "", kind="fixed", level="info"))
_add(Advice(
    "enum-add-value", "Adding value '{value}' to enum {ty}", SAFE,
    "Allowed in a transaction on PG 12+, but the new value cannot be used until the migration commits; "
    "without BEFORE/AFTER it sorts last, so ordering comparisons on the enum include it at the end.",
    "", kind="fixed", level="info",
    lock="EXCLUSIVE on the type (no table lock)"))
_add(Advice(
    "enum-add-value-old-pg", "Adding value '{value}' to enum {ty} before PostgreSQL 12",
    risky("adding enum values before PostgreSQL 12"),
    "Before PG 12, ALTER TYPE ... ADD VALUE cannot run inside a transaction block; Prisma's file transaction "
    "makes the migration fail.", "Put the ADD VALUE alone in its own migration, or upgrade to PG 12+.",
    kind="fixed", level="high",
    lock="EXCLUSIVE on the type (no table lock)"))
_add(Advice(
    "rename-enum-value", "Renaming value '{old}' of enum {ty}", risky("renaming enum values"),
    "Running code still sends and expects '{old}'.",
    "Add '{new}' as a new value, handle both in the app, backfill rows, then stop using '{old}'.",
    kind="fixed", level="medium",
    manual="PostgreSQL cannot drop the old value, so the end schema differs by design",
    lock="EXCLUSIVE on the type (no table lock)"))
_add(Advice(
    "opaque-block", 'DO block', risky("code the review cannot inspect"),
    "The contents of a DO block are not analysed for locks.", "Review it by hand, or write it as plain SQL.",
    kind="fixed", level="medium",
    manual="the block's contents are not analysed",
    lock="unknown: the block is not analysed"))
_add(Advice(
    "syntax-error", 'Syntax error', risky("unparsable SQL"),
    "PostgreSQL will reject this file and the migration will fail.", "Fix the SQL.", kind="fixed", level="high",
    manual="the SQL does not parse",
    lock="none: PostgreSQL rejects the file before locking anything"))


# Findings squawk raises on its own: the statement is fine SQL but breaks running code or drops a guarantee.
_add(Advice(
    "drop-constraint", "Dropping constraint {k} on {t}", risky("removing constraints"),
    "Dropping a constraint takes ACCESS EXCLUSIVE on {t} (and, for a foreign key, on the table it references) and "
    "removes a guarantee running code may rely on.",
    "Deploy code that no longer relies on it, then drop it alone in a later migration.", level="low",
    kind="squawk"))
_add(Advice(
    "drop-default", "Dropping the default of {t}.{c}", risky("removing column defaults"),
    "Running code that inserts without {column} starts writing NULL or failing.",
    "Deploy code that sets {column} on every insert, then drop the default in a later migration.",
    level="low", kind="squawk"))
_add(Advice(
    "drop-not-null", "Dropping NOT NULL on {t}.{c}", risky("relaxing NOT NULL"),
    "Running code and Prisma's generated types still assume {column} is never NULL.",
    "Deploy code that reads {column} as optional first, then drop NOT NULL in a later migration.",
    level="low", kind="squawk"))
_add(Advice(
    "drop-type", "Dropping type {ty}", risky("removing types"),
    "Running code and any column still using {ty} break (Prisma emits this when it replaces an enum).",
    "Remove every use of the type and deploy, then drop it in a later migration.", level="low", kind="squawk",
    lock="ACCESS EXCLUSIVE on the type"))
_add(Advice(
    "rename-object", "Renaming {what}", risky("renaming without a dual-write period"),
    "Running code or tools that use the old name fail until every instance uses the new one.",
    "Keep the old name (map: in schema.prisma), or deploy code that uses the new name and rename in a later "
    "migration.", level="low", kind="squawk", lock="SHARE UPDATE EXCLUSIVE on the index"))
_add(Advice(
    "set-timeout", "No {setting} before this statement", risky("statements that can wait or run without bound"),
    "Without {setting}, a statement that waits for a lock (or runs long) holds everything queued behind it.",
    "Set it at the top of the migration file, or set migrate.statement_timeout_ms so the bot's runner sets it.",
    level="low", kind="squawk"))
_add(Advice(
    "squawk-rule", "{what}", risky("a change running code may depend on"),
    "squawk flags this statement: {help}",
    "Deploy code that no longer depends on it, then run the statement alone in a later migration.",
    level="medium", kind="squawk"))


def advise(key: str, table: str | None = None, names: Mapping[str, str] | None = None) -> Advice:
    """The registry entry for ``key`` with its texts filled with the user's own table/column names."""
    base = REGISTRY[key]
    values = _Names({k: v for k, v in (names or {}).items() if v})
    if table:
        values.setdefault("table", table)
    short = (values.get("table", "t") or "t").split(".")[-1]
    column = values.get("column", "")
    derived = {
        "t": _qt(values.get("table", "<table>")), "c": _q(column or "<column>"),
        "k": _q(values.get("constraint", "<constraint>")), "p": _qt(values.get("parent", "<parent>")),
        "i": _qt(values.get("index", "<index>")), "n": _q(values.get("new_name", "<new_name>")),
        "ty": _qt(values.get("type", "<type>")), "h": _qt(values.get("held", "<table>")),
        "t_c_check": _q(f"{short}_{column or 'col'}_not_null"),
        "c_new": _q(f"{column or 'col'}_new"), "t_archive": _q(f"{short}_archive"),
        "t_idx": _q(f"{short}_{column or 'key'}_key"),
    }
    for key_, value in derived.items():
        values.setdefault(key_, value)
    for key_ in ("columns", "parent_columns"):
        values.setdefault(key_, "...")
    values.setdefault("unique", "")

    def fill(text: str) -> str:
        return text.format_map(values)

    return Advice(base.key, fill(base.title), base.category, fill(base.why), fill(base.alternative), base.kind,
                  base.level, base.manual, base.lock)
