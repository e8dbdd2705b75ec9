"""Runnable multi-phase alternatives: the user's own statement rewritten, phase by phase, as Prisma migrations."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from bot.safety.advice import quote, quote_qualified

# Where a phase runs:
# - here:      in this migration file, in place of the statement ("" = leave the statement out of this file);
# - migration: a later Prisma migration of its own (Prisma runs the whole file in one transaction);
# - alone:     a later Prisma migration holding only this statement (Prisma then runs it outside a transaction,
#              which CONCURRENTLY needs);
# - script:    a script run outside Prisma, in batches, between two migrations: repeat it until it changes 0 rows;
# - deploy:    an application change to deploy before the next phase (no SQL).
PhaseKind = Literal["here", "migration", "alone", "script", "deploy"]

BATCH_ROWS = 5000
# A value only the user can choose (what to backfill); the runnable-alternatives test fills it in.
VALUE = "<value>"


@dataclass(frozen=True)
class Phase:
    """One step of an alternative: where it runs, its SQL (may be empty) and what to do around it."""

    kind: PhaseKind
    sql: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def _sql(node: Any) -> str:
    return str(RawStream()(node))


def _name63(text: str) -> str:
    return text.encode("utf-8")[:63].decode("utf-8", errors="ignore")


def _short(table: str) -> str:
    return table.split(".")[-1]


# -- shared phase shapes --------------------------------------------------------------------------------

def _not_null_phases(rel: str, column: str, table: str) -> list[Phase]:
    check = quote(_name63(f"{_short(table)}_{column}_not_null"))
    col = quote(column)
    return [
        Phase("migration", f"ALTER TABLE {rel} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID",
              "no scan: only new and updated rows are checked"),
        Phase("migration", f"ALTER TABLE {rel} VALIDATE CONSTRAINT {check}",
              "scans under SHARE UPDATE EXCLUSIVE: reads and writes continue"),
        Phase("migration", f"ALTER TABLE {rel} ALTER COLUMN {col} SET NOT NULL;\n"
                           f"ALTER TABLE {rel} DROP CONSTRAINT {check}",
              "the validated CHECK proves it, so SET NOT NULL skips the scan (PG 12+)"),
    ]


def _backfill(rel: str, column: str, expr: str, extra: str = "") -> Phase:
    col = quote(column)
    return Phase("script", f"UPDATE {rel} SET {col} = {expr} WHERE ctid IN (SELECT ctid FROM {rel} "
                           f"WHERE {col} IS NULL{extra} LIMIT {BATCH_ROWS})",
                 (f"{VALUE} is what existing rows should hold; " if expr == VALUE else "")
                 + "not in a migration: Prisma runs a migration file as one transaction")


def _alter(stmt: Any, cmd: Any) -> str:
    one = ast.AlterTableStmt(relation=stmt.relation, cmds=(cmd,), objtype=stmt.objtype, missing_ok=stmt.missing_ok)
    return _sql(one).strip()


def _rest(stmt: Any, old: Any, *new: Any) -> str:
    """The statement with the finding's command replaced by ``new`` (or left out), keeping its other commands:
    Prisma puts several column changes of one table in one ALTER TABLE. "" when nothing is left."""
    if type(stmt).__name__ != "AlterTableStmt" or old is None:
        return ""
    cmds: list[Any] = []
    for cmd in stmt.cmds or ():
        cmds.extend(new if cmd is old else (cmd,))
    if not cmds:
        return ""
    whole = ast.AlterTableStmt(relation=stmt.relation, cmds=tuple(cmds), objtype=stmt.objtype,
                               missing_ok=stmt.missing_ok)
    return _sql(whole).strip()


def _cmds(stmt: Any, subtype: enums.AlterTableType) -> list[Any]:
    if not isinstance(stmt, ast.AlterTableStmt):
        return []
    return [c for c in stmt.cmds or () if c.subtype == subtype]


def _cmd(stmt: Any, subtype: enums.AlterTableType, name: str = "") -> Any:
    found = _cmds(stmt, subtype)
    if name:
        found = [c for c in found if (c.name or getattr(c.def_, "colname", None)
                                      or getattr(c.def_, "conname", None)) == name] or found
    return found[0] if found else None


def _deploy(note: str) -> Phase:
    return Phase("deploy", "", note)


# -- one builder per advice key --------------------------------------------------------------------------

@dataclass
class Subject:
    """What a builder reads: the statement (text and parse tree), its table and the finding's names."""

    sql: str
    stmt: Any
    table: str
    names: Mapping[str, str]

    @cached_property
    def rel(self) -> str:
        relation = getattr(self.stmt, "relation", None)
        return _sql(relation) if relation is not None else quote_qualified(self.table)

    def name(self, key: str) -> str:
        return self.names.get(key, "") or ""


Builder = Callable[[Subject], "list[Phase] | None"]


def _column_without(col: Any, drop: set[Any]) -> Any:
    out = copy.deepcopy(col)
    out.constraints = tuple(c for c in col.constraints or () if c.contype not in drop) or None
    if enums.ConstrType.CONSTR_NOTNULL in drop:
        out.is_not_null = False
    if enums.ConstrType.CONSTR_DEFAULT in drop:
        out.raw_default = None
    return out


def _has(col: Any, contype: enums.ConstrType) -> Any:
    return next((c for c in col.constraints or () if c.contype == contype), None)


def _required_column(s: Subject) -> list[Phase] | None:
    cmd = _cmd(s.stmt, enums.AlterTableType.AT_AddColumn, s.name("column"))
    if cmd is None:
        return None
    col = cmd.def_
    nullable = _column_without(col, {enums.ConstrType.CONSTR_NOTNULL})
    column = col.colname
    return [
        Phase("here", _rest(s.stmt, cmd, ast.AlterTableCmd(subtype=cmd.subtype, def_=nullable)),
              "the column is added nullable: existing rows get NULL, nothing is rewritten"),
        _deploy(f"make the Prisma field optional ({column}?) and deploy code that writes it"),
        _backfill(s.rel, column, VALUE),
        *_not_null_phases(s.rel, column, s.table),
        _deploy(f"make the Prisma field required again ({column}), matching the database"),
    ]


def _set_not_null(s: Subject) -> list[Phase] | None:
    column = s.name("column")
    if not column:
        return None
    return [
        Phase("here", _rest(s.stmt, _cmd(s.stmt, enums.AlterTableType.AT_SetNotNull, column)),
              "leave SET NOT NULL out of this migration"),
        _backfill(s.rel, column, VALUE),
        *_not_null_phases(s.rel, column, s.table),
    ]


def _index(s: Subject) -> list[Phase] | None:
    if not isinstance(s.stmt, ast.IndexStmt):
        return None
    index = copy.deepcopy(s.stmt)
    index.concurrent = True
    return [
        Phase("here", "", "leave the index out of this migration"),
        Phase("alone", _sql(index), "the only statement of its migration (prisma migrate dev --create-only, "
              "then edit migration.sql), so Prisma runs it outside a transaction; if it fails, "
              "DROP INDEX CONCURRENTLY the INVALID index before retrying"),
    ]


def _constraint_cmd(s: Subject, contype: enums.ConstrType) -> tuple[Any, Any] | None:
    for cmd in _cmds(s.stmt, enums.AlterTableType.AT_AddConstraint):
        con = cmd.def_
        if con.contype == contype and (not s.name("constraint") or con.conname == s.name("constraint")):
            return cmd, con
    return None


def _default_constraint_name(s: Subject, con: Any, suffix: str) -> str:
    """PostgreSQL's own choice for an unnamed constraint: table, columns, suffix."""
    columns = [a.sval for a in (con.fk_attrs or con.keys or ())]
    return _name63("_".join([_short(s.table), *columns, suffix]) if columns else f"{_short(s.table)}_{suffix}")


def _not_valid(s: Subject) -> list[Phase] | None:
    contype = enums.ConstrType.CONSTR_FOREIGN if isinstance(s.stmt, ast.AlterTableStmt) and _constraint_cmd(
        s, enums.ConstrType.CONSTR_FOREIGN) else enums.ConstrType.CONSTR_CHECK
    found = _constraint_cmd(s, contype)
    if found is None:
        return None
    cmd, con = found
    con = copy.deepcopy(con)
    con.conname = con.conname or _default_constraint_name(
        s, con, "fkey" if contype == enums.ConstrType.CONSTR_FOREIGN else "check")
    con.skip_validation, con.initially_valid = True, False
    kept = "its ON DELETE / ON UPDATE actions and DEFERRABLE as written" \
        if contype == enums.ConstrType.CONSTR_FOREIGN else "the same condition"
    return [
        Phase("here", _rest(s.stmt, cmd, ast.AlterTableCmd(subtype=cmd.subtype, def_=con)),
              f"NOT VALID: only new rows are checked; {kept}"),
        Phase("migration", f"ALTER TABLE {s.rel} VALIDATE CONSTRAINT {quote(con.conname)}",
              "checks the existing rows under SHARE UPDATE EXCLUSIVE: reads and writes continue"),
    ]


def _validate_later(s: Subject) -> list[Phase] | None:
    constraint = s.name("constraint")
    if not constraint:
        return None
    validate = _cmd(s.stmt, enums.AlterTableType.AT_ValidateConstraint, constraint)
    return [Phase("here", _rest(s.stmt, validate), "leave VALIDATE out of this migration"),
            Phase("migration", f"ALTER TABLE {s.rel} VALIDATE CONSTRAINT {quote(constraint)}",
                  "in its own, later migration: the ADD CONSTRAINT lock is no longer held")]


def _type_change(s: Subject) -> list[Phase] | None:
    cmd = _cmd(s.stmt, enums.AlterTableType.AT_AlterColumnType, s.name("column"))
    if cmd is None or cmd.def_.typeName is None:
        return None
    column = cmd.name
    new = _name63(f"{column}_new")
    type_sql = _sql(cmd.def_.typeName)
    expr = _sql(cmd.def_.raw_default) if cmd.def_.raw_default is not None else f"{quote(column)}::{type_sql}"
    add = ast.AlterTableCmd(subtype=enums.AlterTableType.AT_AddColumn, def_=ast.ColumnDef(
        colname=new, typeName=cmd.def_.typeName, is_local=True))
    return [
        Phase("here", _rest(s.stmt, cmd, add), "a new nullable column: no rewrite"),
        _deploy(f"dual-write: code writes both {column} and {new} (map {new} with a second Prisma field); "
                f"give {new} the NOT NULL, default and indexes {column} has"),
        _backfill(s.rel, new, expr, f" AND {quote(column)} IS NOT NULL"),
        _deploy(f"read {new}; keep writing both"),
        Phase("migration", f"ALTER TABLE {s.rel} DROP COLUMN {quote(column)};\n"
                           f"ALTER TABLE {s.rel} RENAME COLUMN {quote(new)} TO {quote(column)}",
              "the column swap, in one transaction: a brief ACCESS EXCLUSIVE, no rewrite"),
    ]


def _drop_column(s: Subject) -> list[Phase] | None:
    column = s.name("column")
    if not column:
        return None
    drop = _cmd(s.stmt, enums.AlterTableType.AT_DropColumn, column)
    return [Phase("here", _rest(s.stmt, drop), "leave the column in place for now"),
            _deploy(f"stop reading and writing {column}: mark the field @ignore in schema.prisma (or make it "
                    "optional) and deploy"),
            Phase("migration", f"ALTER TABLE {s.rel} DROP COLUMN {quote(column)}",
                  "once no running version uses it")]


def _drop_table(s: Subject) -> list[Phase] | None:
    if not s.table:
        return None
    return [Phase("here", "", "keep the table for now"),
            _deploy(f"migrate or archive the data first (e.g. pg_dump --table '{quote_qualified(s.table)}', or keep "
                    "the pre-migration snapshot); remove every read and write of the model and deploy"),
            Phase("migration", f"DROP TABLE {quote_qualified(s.table)}", "once no running version uses it")]


def _truncate(s: Subject) -> list[Phase] | None:
    if not s.table:
        return None
    return [Phase("here", "", "leave TRUNCATE out of the deploy migration"),
            _deploy(f"archive the rows first (pg_dump --data-only --table '{quote_qualified(s.table)}')"),
            Phase("migration", f"TRUNCATE {quote_qualified(s.table)}", "in a maintenance step, on its own")]


def _volatile_default(s: Subject) -> list[Phase] | None:
    cmd = _cmd(s.stmt, enums.AlterTableType.AT_AddColumn, s.name("column"))
    if cmd is None:
        return None
    col = cmd.def_
    default = _has(col, enums.ConstrType.CONSTR_DEFAULT)
    if default is None or col.typeName is None:
        return None
    not_null = bool(col.is_not_null or _has(col, enums.ConstrType.CONSTR_NOTNULL))
    bare = _column_without(col, {enums.ConstrType.CONSTR_NOTNULL, enums.ConstrType.CONSTR_DEFAULT})
    expr = _sql(default.raw_expr)
    column = col.colname
    phases = [
        Phase("here", _rest(s.stmt, cmd, ast.AlterTableCmd(subtype=cmd.subtype, def_=bare)) + ";\n"
              f"ALTER TABLE {s.rel} ALTER COLUMN {quote(column)} SET DEFAULT {expr}",
              "column without a default, then the default for new rows only: no rewrite"),
        _backfill(s.rel, column, expr),
    ]
    if not_null:
        phases += _not_null_phases(s.rel, column, s.table)
    return phases


def _unique(s: Subject) -> list[Phase] | None:
    found = _constraint_cmd(s, enums.ConstrType.CONSTR_UNIQUE) or _constraint_cmd(s, enums.ConstrType.CONSTR_PRIMARY)
    here = Phase("here", "", "leave the constraint out of this migration")
    if found is not None:
        cmd, con = found
        here = Phase("here", _rest(s.stmt, cmd), "leave the constraint out of this migration")
        keys = [k.sval for k in con.keys or ()]
        if not keys or con.including or con.exclusions:
            return None
        suffix = "pkey" if con.contype == enums.ConstrType.CONSTR_PRIMARY else "key"
        name = con.conname or _default_constraint_name(s, con, suffix)
    else:
        add = _cmd(s.stmt, enums.AlterTableType.AT_AddColumn, s.name("column"))
        if add is None:
            return None
        con = _has(add.def_, enums.ConstrType.CONSTR_UNIQUE) or _has(add.def_, enums.ConstrType.CONSTR_PRIMARY)
        if con is None:
            return None
        cmd = add
        keys = [add.def_.colname]
        suffix = "pkey" if con.contype == enums.ConstrType.CONSTR_PRIMARY else "key"
        name = con.conname or _name63(f"{_short(s.table)}_{keys[0]}_{suffix}")
        plain = _column_without(add.def_, {con.contype})
        if con.contype == enums.ConstrType.CONSTR_PRIMARY:
            plain.is_not_null = True
        here = Phase("here", _rest(s.stmt, add, ast.AlterTableCmd(subtype=add.subtype, def_=plain)),
                     "the column without the constraint")
    elems = tuple(ast.IndexElem(name=k, ordering=enums.SortByDir.SORTBY_DEFAULT,
                                nulls_ordering=enums.SortByNulls.SORTBY_NULLS_DEFAULT) for k in keys)
    index = ast.IndexStmt(idxname=name, relation=copy.deepcopy(s.stmt.relation), accessMethod="btree",
                          indexParams=elems, unique=True, concurrent=True,
                          nulls_not_distinct=bool(con.nulls_not_distinct))
    using = ast.Constraint(contype=con.contype, conname=name, indexname=name, deferrable=con.deferrable,
                           initdeferred=con.initdeferred)
    kind = "PRIMARY KEY" if con.contype == enums.ConstrType.CONSTR_PRIMARY else "UNIQUE"
    return [
        here,
        Phase("alone", _sql(index), "the only statement of its migration, so Prisma runs it outside a "
              "transaction; builds without blocking writes"),
        Phase("migration", _alter(s.stmt, ast.AlterTableCmd(subtype=cmd.subtype if found else
                                                              enums.AlterTableType.AT_AddConstraint, def_=using)),
              f"{kind} USING INDEX: a brief ACCESS EXCLUSIVE, no index build"),
    ]


def _drop_index(s: Subject) -> list[Phase] | None:
    index = s.name("index")
    if not index:
        return None
    exists = "IF EXISTS " if getattr(s.stmt, "missing_ok", False) else ""
    return [Phase("here", "", "leave DROP INDEX out of this migration"),
            Phase("alone", f"DROP INDEX CONCURRENTLY {exists}{quote_qualified(index)}",
                  "the only statement of its migration, so Prisma runs it outside a transaction")]


def _reindex(s: Subject) -> list[Phase] | None:
    if not isinstance(s.stmt, ast.ReindexStmt):
        return None
    stmt = copy.deepcopy(s.stmt)
    stmt.params = (*(stmt.params or ()), ast.DefElem(defname="concurrently"))
    return [Phase("here", "", "leave REINDEX out of this migration"),
            Phase("alone", _sql(stmt), "the only statement of its migration (PG 12+)")]


def _detach(s: Subject) -> list[Phase] | None:
    cmd = _cmd(s.stmt, enums.AlterTableType.AT_DetachPartition)
    if cmd is None:
        return None
    concurrent = copy.deepcopy(cmd)
    concurrent.def_.concurrent = True
    return [Phase("here", _rest(s.stmt, cmd), "leave DETACH PARTITION out of this migration"),
            Phase("alone", _alter(s.stmt, concurrent), "the only statement of its migration (PG 14+); it leaves a CHECK "
                  "constraint matching the partition bound on the detached table: keep it to re-attach without a "
                  "scan, or drop it later")]


def _move_alone(s: Subject) -> list[Phase] | None:
    text = s.sql.strip().rstrip(";").strip()
    if not text:
        return None
    concurrent = bool(getattr(s.stmt, "concurrent", False)) or "CONCURRENTLY" in text.upper()
    return [Phase("here", "", "take this statement out of this migration"),
            Phase("alone" if concurrent else "migration", text, "in its own migration, alone")]


def _batched_dml(s: Subject) -> list[Phase] | None:
    rel = s.rel
    if isinstance(s.stmt, ast.DeleteStmt) and not s.stmt.usingClause and not s.stmt.withClause:
        where = f" WHERE {_sql(s.stmt.whereClause)}" if s.stmt.whereClause is not None else ""
        sql = f"DELETE FROM {rel} WHERE ctid IN (SELECT ctid FROM {rel}{where} LIMIT {BATCH_ROWS})"
    elif isinstance(s.stmt, ast.UpdateStmt) and not s.stmt.fromClause and not s.stmt.withClause \
            and s.stmt.targetList and all(t.name and not t.indirection and not isinstance(t.val, ast.MultiAssignRef)
                                          for t in s.stmt.targetList):
        if s.stmt.relation is None or s.stmt.relation.alias is not None:
            return None
        targets = list(s.stmt.targetList)
        sets = ", ".join(f"{quote(t.name)} = {_sql(t.val)}" for t in targets)
        cols = ", ".join(quote(t.name) for t in targets)
        vals = ", ".join(f"({_sql(t.val)})" for t in targets)
        pending = f"ROW({cols}) IS DISTINCT FROM ROW({vals})"
        where = f"({_sql(s.stmt.whereClause)}) AND {pending}" if s.stmt.whereClause is not None else pending
        sql = f"UPDATE {rel} SET {sets} WHERE ctid IN (SELECT ctid FROM {rel} WHERE {where} LIMIT {BATCH_ROWS})"
    else:
        return None
    return [Phase("here", "", "keep the data change out of the schema migration"),
            Phase("script", sql, "not in a migration: Prisma runs a migration file as one transaction")]


def _squawk_move(what: str, subtype: enums.AlterTableType | None = None) -> Builder:
    def build(s: Subject) -> list[Phase] | None:
        text = s.sql.strip().rstrip(";").strip()
        if not text:
            return None
        cmd = _cmd(s.stmt, subtype, s.name("column") or s.name("constraint")) if subtype is not None else None
        return [Phase("here", _rest(s.stmt, cmd), "leave it out of this migration"), _deploy(what),
                Phase("migration", text, "alone in a later migration, with a short lock_timeout")]
    return build


BUILDERS: dict[str, Builder] = {
    "required-column": _required_column,
    "set-not-null": _set_not_null,
    "non-concurrent-index": _index,
    "fk-without-not-valid": _not_valid,
    "check-without-not-valid": _not_valid,
    "validate-same-transaction": _validate_later,
    "type-change": _type_change,
    "drop-column": _drop_column,
    "drop-table": _drop_table,
    "truncate": _truncate,
    "volatile-default": _volatile_default,
    "unique-build": _unique,
    "drop-index": _drop_index,
    "reindex": _reindex,
    "detach-partition": _detach,
    "lock-held": _move_alone,
    "concurrently-in-transaction": _move_alone,
    "enum-add-value-old-pg": _move_alone,
    "backfill-in-migration": _batched_dml,
}

_SERIALS = {"serial": "integer", "serial4": "integer", "bigserial": "bigint", "serial8": "bigint",
            "smallserial": "smallint", "serial2": "smallint"}


def _serial(s: Subject) -> list[Phase] | None:
    """SERIAL column (Prisma's autoincrement() on an existing table): sequence and default first, no rewrite."""
    cmd = _cmd(s.stmt, enums.AlterTableType.AT_AddColumn, s.name("column"))
    if cmd is None or cmd.def_.typeName is None:
        return None
    col = cmd.def_
    base = _SERIALS.get(col.typeName.names[-1].sval)
    extra = {c.contype for c in col.constraints or ()} - {enums.ConstrType.CONSTR_NOTNULL}
    if base is None or extra:
        return None  # identity columns and serials with more constraints keep the prose alternative
    column = col.colname
    schema, _, short = s.table.rpartition(".")
    sequence = f"{short}_{column}_seq"
    if len(sequence.encode("utf-8")) > 63:
        return None  # PostgreSQL would shorten the name its own way
    qualified = (quote(schema) + "." if schema else "") + quote(sequence)
    col_sql = quote(column)
    plain = ast.AlterTableCmd(subtype=cmd.subtype, def_=ast.ColumnDef(
        colname=column, typeName=ast.TypeName(names=(ast.String(sval=base),), typemod=-1), is_local=True))
    return [
        Phase("here", f"CREATE SEQUENCE {qualified} AS {base};\n"
                      f"{_rest(s.stmt, cmd, plain)};\n"
                      f"ALTER TABLE {s.rel} ALTER COLUMN {col_sql} SET DEFAULT nextval('{qualified.replace(chr(39), chr(39) * 2)}');\n"
                      f"ALTER SEQUENCE {qualified} OWNED BY {s.rel}.{col_sql}",
              "what SERIAL does, without filling every row under ACCESS EXCLUSIVE: new rows get numbers at once"),
        _backfill(s.rel, column, "DEFAULT"),
        *_not_null_phases(s.rel, column, s.table),
    ]


def _set_timeout(s: Subject) -> list[Phase] | None:
    text = s.sql.strip().rstrip(";").strip()
    setting = s.name("setting")
    if not text or setting not in TIMEOUTS:
        return None
    return [Phase("here", f"SET {setting} = '{TIMEOUTS[setting]}';\n{text}",
                  f"{setting} for the rest of this migration; pick a bound that fits your largest table")]


# Values the set-timeout alternative suggests: the runner's default lock_timeout, a generous statement bound.
TIMEOUTS = {"lock_timeout": "5s", "statement_timeout": "15min"}

BUILDERS["set-timeout"] = _set_timeout
BUILDERS["identity-column"] = _serial
BUILDERS["drop-constraint"] = _squawk_move("deploy code that no longer relies on the constraint (or its "
                                           "replacement first, for a drop-and-re-add)",
                                           enums.AlterTableType.AT_DropConstraint)
BUILDERS["drop-default"] = _squawk_move("deploy code that sets the column on every insert",
                                        enums.AlterTableType.AT_ColumnDefault)
BUILDERS["drop-not-null"] = _squawk_move("deploy code that reads the column as optional (handles NULL)",
                                         enums.AlterTableType.AT_DropNotNull)
BUILDERS["drop-type"] = _squawk_move("remove every column and code path that uses the type, and deploy")
BUILDERS["rename-object"] = _squawk_move("deploy code that uses the new name (or keep the old name with "
                                         "map: in schema.prisma)")
BUILDERS["squawk-rule"] = _squawk_move("deploy code that no longer depends on what the statement changes")


def _one_command(s: Subject, subtype: enums.AlterTableType) -> str:
    """Only the ALTER TABLE command the finding is about, when the statement holds several."""
    cmd = _cmd(s.stmt, subtype, s.name("column") or s.name("constraint"))
    return _alter(s.stmt, cmd) if cmd is not None else s.sql


_SQUAWK_SUBTYPES = {"drop-constraint": enums.AlterTableType.AT_DropConstraint,
                    "drop-default": enums.AlterTableType.AT_ColumnDefault,
                    "drop-not-null": enums.AlterTableType.AT_DropNotNull}


# Builders that use the statement's text only (the analysis gives one statement's text a finding).
_TEXT_ONLY = frozenset({"set-timeout", "lock-held", "concurrently-in-transaction", "enum-add-value-old-pg",
                        "drop-type", "rename-object", "squawk-rule"})


def build(key: str, sql: str, table: str | None, names: Mapping[str, str]) -> list[Phase] | None:
    """The phases of ``key``'s alternative for this statement, or None when it has no runnable form here."""
    builder = BUILDERS.get(key)
    if builder is None or not sql.strip():
        return None
    if key in _TEXT_ONLY:  # the statement moves or gets a SET before it as written: no parse needed
        return builder(Subject(sql, None, table or "", names))
    try:
        parsed = parse_sql(sql)
    except ParseError:
        return None
    if len(parsed) != 1:
        return None
    subject = Subject(sql, parsed[0].stmt, table or "", names)
    if key in _SQUAWK_SUBTYPES and isinstance(subject.stmt, ast.AlterTableStmt):
        subject = Subject(_one_command(subject, _SQUAWK_SUBTYPES[key]), subject.stmt, subject.table, names)
    try:
        return builder(subject)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, NotImplementedError):
        return None  # a shape the builder does not know: the prose alternative stands


def render(phases: list[Phase]) -> str:
    """The phases as one text: numbered migrations, scripts between them, deploys."""
    parts: list[str] = []
    number = 1
    for phase in phases:
        phase = Phase(phase.kind, " ".join(phase.sql.split("\n")), phase.note)
        note = f" ({phase.note})" if phase.note else ""
        if phase.kind == "here":
            parts.append(f"Migration 1, in place of this statement: {phase.sql}{note}." if phase.sql
                         else f"Migration 1: {phase.note or 'leave this statement out'}.")
        elif phase.kind in ("migration", "alone"):
            number += 1
            alone = " alone in its file" if phase.kind == "alone" else ""
            parts.append(f"Migration {number}{alone}: {phase.sql}{note}.")
        elif phase.kind == "script":
            parts.append(f"Then a script run outside Prisma, in batches, between migrations {number} and "
                         f"{number + 1}, repeated until it changes 0 rows: {phase.sql}{note}.")
        else:
            parts.append(f"Deploy: {phase.note}.")
    return " ".join(parts)


def statement_names(key: str, sql: str) -> dict[str, str]:
    """The user's names a squawk-only finding is about (column, constraint, type, what), from its statement."""
    if key not in _SQUAWK_SUBTYPES and key not in ("drop-type", "rename-object"):
        return {}
    try:
        parsed = parse_sql(sql)
    except ParseError:
        return {}
    if len(parsed) != 1:
        return {}
    stmt: Any = parsed[0].stmt
    subtype = _SQUAWK_SUBTYPES.get(key)
    if subtype is not None:
        for cmd in _cmds(stmt, subtype):
            if key == "drop-default" and cmd.def_ is not None:
                continue  # SET DEFAULT shares the subtype
            return {"constraint" if key == "drop-constraint" else "column": cmd.name or ""}
        return {}
    if key == "drop-type" and type(stmt).__name__ == "DropStmt" and stmt.objects:
        first = stmt.objects[0]
        parts = [str(n.sval) for n in getattr(first, "names", None) or first if isinstance(n, ast.String)]
        return {"type": ".".join(p for p in parts if p != "public")}
    if key == "rename-object" and type(stmt).__name__ == "RenameStmt":
        kind = str(stmt.renameType.name).removeprefix("OBJECT_").lower()
        old = stmt.relation.relname if stmt.relation is not None else _sql(stmt.object) if stmt.object else ""
        return {"what": f"{kind} {quote(old) if stmt.relation is not None else old} to {quote(stmt.newname)}",
                "kind": kind}
    return {}
