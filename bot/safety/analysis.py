"""Statement analysis with pglast: kind, tables, lock levels, rewrites, scans and per-table lock hold ranges."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import pglast
import pglast.parser

# The analysis walks libpg_query's JSON parse tree (pglast.parser.parse_sql_json + json.loads) rather than pglast's
# Python AST: building the ast.Node objects cost ~10x the parse itself. In that tree a node in a polymorphic
# (Node *) field is a one-key dict {"TypeName": {fields}}; a node in a typed field (RangeVar *relation,
# TypeName *typeName, ...) is the bare {fields} dict; enums are their names; fields at their default value
# (false, 0, NULL) are absent; List nodes are {"List": {"items": [...]}} where pglast had tuples.
Tree = dict[str, Any]


def _sval(node: Tree) -> str:
    """The text of a {"String": {"sval": ...}} node."""
    text: str = node["String"].get("sval", "")
    return text


class Lock(IntEnum):
    """PostgreSQL table lock modes, ordered weakest to strongest (the order of the conflict table)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """The mode as the docs write it, e.g. ``ACCESS EXCLUSIVE``."""
        return self.name.replace("_", " ")

    @property
    def pg_mode(self) -> str:
        """The mode as ``pg_locks.mode`` shows it, e.g. ``AccessExclusiveLock``."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Lock"

    @classmethod
    def from_pg_mode(cls, mode: str) -> Lock:
        """Inverse of ``pg_mode``."""
        for member in cls:
            if member.pg_mode == mode:
                return member
        raise ValueError(f"unknown lock mode {mode!r}")

    @property
    def blocks_reads(self) -> bool:
        """True when plain SELECTs wait for this lock."""
        return self is Lock.ACCESS_EXCLUSIVE

    @property
    def blocks_writes(self) -> bool:
        """True when INSERT/UPDATE/DELETE wait for this lock."""
        return self >= Lock.SHARE


@dataclass(frozen=True)
class TypeKey:
    """A column type reduced to what decides rewrites: canonical base name and type modifiers."""

    base: str
    mods: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.base}({','.join(map(str, self.mods))})" if self.mods else self.base


_TYPE_ALIASES = {
    "character varying": "varchar", "varchar": "varchar", "text": "text",
    "numeric": "numeric", "decimal": "numeric",
    "timestamp without time zone": "timestamp", "timestamp": "timestamp",
    "timestamp with time zone": "timestamptz", "timestamptz": "timestamptz",
    "time without time zone": "time", "time": "time", "time with time zone": "timetz", "timetz": "timetz",
    "interval": "interval", "integer": "int4", "int": "int4", "int4": "int4", "bigint": "int8",
    "int8": "int8", "smallint": "int2", "int2": "int2", "character": "bpchar", "char": "bpchar",
    "bpchar": "bpchar", "boolean": "bool", "bool": "bool", "double precision": "float8",
    "float8": "float8", "real": "float4", "float4": "float4", "cidr": "inet_cidr", "inet": "inet",
    "citext": "citext", "jsonb": "jsonb", "json": "json", "uuid": "uuid", "bytea": "bytea",
    "bit varying": "varbit", "varbit": "varbit",
}
_SERIAL_TYPES = {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}

# Functions whose volatility is known without a database (pg_proc.provolatile on PG 15).
KNOWN_VOLATILITY = {
    "now": "s", "current_timestamp": "s", "statement_timestamp": "s", "transaction_timestamp": "s",
    "localtimestamp": "s", "current_date": "s", "lower": "i", "upper": "i", "coalesce": "i",
    "gen_random_uuid": "v", "uuid_generate_v4": "v", "uuid_generate_v1": "v", "random": "v",
    "clock_timestamp": "v", "nextval": "v", "timeofday": "v", "txid_current": "s",
}


def canonical_type(name: str, mods: tuple[int, ...] = ()) -> TypeKey:
    """Normalise a type name from SQL or ``format_type`` (``character varying(10)``) to a TypeKey."""
    text = name.strip().strip('"')
    match = re.fullmatch(r"(.+?)\s*\(([\d,\s]+)\)(.*)", text)
    if match:
        text = (match.group(1) + match.group(3)).strip()
        mods = tuple(int(x) for x in match.group(2).split(","))
    if text.startswith("pg_catalog."):
        text = text[len("pg_catalog."):]
    if text == "cidr":
        return TypeKey("cidr", mods)
    return TypeKey(_TYPE_ALIASES.get(text.lower(), text), mods)


def type_change_rewrites(old: TypeKey, new: TypeKey, *, utc: bool | None) -> bool:
    """Whether ALTER COLUMN TYPE old -> new rewrites the table on PG 12-17 (measured on PG 15 via relfilenode)."""
    if old == new:
        return False
    widen_ok = not new.mods or (old.mods and new.mods >= old.mods)
    if old.base == new.base == "varchar":
        return not (not new.mods or (old.mods and new.mods[0] >= old.mods[0]))
    if old.base == "varchar" and new.base == "text":
        return False
    if old.base == "text" and new.base == "varchar":
        return bool(new.mods)
    if old.base == new.base == "numeric":
        if not new.mods:
            return False
        if not old.mods:
            return True
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return not (new_scale == old_scale and new.mods[0] >= old.mods[0])
    if old.base == new.base and old.base in {"timestamp", "timestamptz", "time", "timetz", "interval", "varbit"}:
        return not widen_ok
    if {old.base, new.base} == {"timestamp", "timestamptz"}:
        # Only a plain change with no new precision is binary-coercible, and only when TimeZone is UTC.
        return not (utc and not new.mods)
    if old.base == "cidr" and new.base == "inet":
        return False
    if {old.base, new.base} == {"citext", "text"} or (old.base == "varchar" and new.base == "citext"):
        return False  # binary-coercible: the heap is kept, but the indexes are rebuilt (other opclass)
    if old.base == "citext" and new.base == "varchar":
        return bool(new.mods)
    return True


# Types that share a btree operator class with another: an ALTER COLUMN TYPE between them that keeps the heap keeps
# the column's indexes too (varchar has no opclass of its own, cidr uses inet's). Any other change of base type
# that keeps the heap (text <-> citext, timestamp <-> timestamptz in UTC) rebuilds every index on the column under
# the ACCESS EXCLUSIVE lock, as does any change of collation. Measured on PG 15 and 17 (index relfilenode).
_OPCLASS_OF = {"varchar": "text", "cidr": "inet", "inet_cidr": "inet"}


def type_change_rebuilds_indexes(old: TypeKey, new: TypeKey, *, utc: bool | None, collation_changes: bool) -> bool:
    """Whether ALTER COLUMN TYPE old -> new rebuilds the indexes on the column (always true when it rewrites)."""
    if collation_changes or type_change_rewrites(old, new, utc=utc):
        return True
    return _OPCLASS_OF.get(old.base, old.base) != _OPCLASS_OF.get(new.base, new.base)


class Catalog(Protocol):
    """What the analysis may ask the live database; every method returns None/False when unknown."""

    def volatility(self, function: str) -> str | None: ...

    def column_type(self, table: str, column: str) -> TypeKey | None: ...

    def has_validated_not_null_check(self, table: str, column: str) -> bool: ...

    def index_table(self, index: str) -> str | None: ...

    def fk_parents(self, table: str) -> list[str]: ...

    def constraint_parent(self, table: str, constraint: str) -> str | None: ...

    def column_indexes(self, table: str, column: str) -> list[tuple[str, bool]] | None: ...

    def column_collation(self, table: str, column: str) -> str | None: ...

    def table_exists(self, table: str) -> bool: ...

    def timezone_is_utc(self) -> bool | None: ...


@dataclass
class SchemaModel:
    """What earlier statements of the reviewed migrations did, so later ones can be judged without a database."""

    created: set[str] = field(default_factory=set)
    columns: dict[tuple[str, str], TypeKey] = field(default_factory=dict)
    index_tables: dict[str, str] = field(default_factory=dict)
    fk_parents: dict[str, set[str]] = field(default_factory=dict)
    not_null_checks: set[tuple[str, str]] = field(default_factory=set)
    not_valid: dict[str, tuple[str, str]] = field(default_factory=dict)  # constraint -> (table, kind)
    fk_constraints: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, constraint) -> parent
    indexes: dict[str, tuple[str, tuple[str, ...], bool]] = field(default_factory=dict)  # name -> (table, cols, uniq)
    temporary: set[str] = field(default_factory=set)  # temporary tables: seen by no other session


@dataclass
class Effect:
    """The lock one statement takes on one relation, and what it does to it."""

    table: str
    lock: Lock
    rewrites: bool = False
    scans: bool = False
    role: str = "target"  # target | referenced | partition


@dataclass
class Check:
    """Something the advice registry knows how to explain, raised by one statement."""

    key: str
    table: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    rewrites: bool = False
    scans: bool = False
    lock: Lock | None = None
    # Every table the statement locks, strongest mode per table, the check's own table first; an FK's referenced
    # (parent) table is here too. Filled by analyze_file from the statement's effects.
    tables_touched: list[tuple[str, Lock]] = field(default_factory=list)


@dataclass
class StatementAnalysis:
    """One parsed statement of a migration file."""

    index: int
    kind: str
    sql: str
    line: int
    location: int
    target: str | None = None
    referenced: list[str] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    concurrent: bool = False
    new_tables: set[str] = field(default_factory=set)
    # Checks this statement would raise but the parse tree shows are safe: check key -> why (e.g. a column swap).
    # The review drops squawk's matching rules for them too.
    known_safe: dict[str, str] = field(default_factory=dict)

    @property
    def lock(self) -> Lock | None:
        """The strongest lock on the target table."""
        modes = [e.lock for e in self.effects if e.table == self.target]
        return max(modes) if modes else None

    @property
    def tables_touched(self) -> list[tuple[str, Lock]]:
        """(table, strongest lock) for every table the statement locks, in first-locked order (target first)."""
        strongest: dict[str, Lock] = {}
        if self.target is not None:
            for eff in self.effects:
                if eff.table == self.target:
                    strongest[eff.table] = max(strongest.get(eff.table, eff.lock), eff.lock)
        for eff in self.effects:
            strongest[eff.table] = max(strongest.get(eff.table, eff.lock), eff.lock)
        return list(strongest.items())

    @property
    def rewrites(self) -> bool:
        """True when a table or index is rewritten."""
        return any(e.rewrites for e in self.effects)

    @property
    def scans(self) -> bool:
        """True when a full scan or index build happens."""
        return any(e.scans or e.rewrites for e in self.effects)


@dataclass(frozen=True)
class TableLock:
    """The strongest lock a file holds on a table, from the statement that first locks it to the end of the file."""

    table: str
    lock: Lock
    first_index: int
    last_index: int
    new: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"table": self.table, "lock": self.lock.label, "from_statement": self.first_index,
                "to_statement": self.last_index, "new_table": self.new}


@dataclass
class FileAnalysis:
    """Every statement of one migration file, plus how the file runs."""

    statements: list[StatementAnalysis]
    table_locks: list[TableLock]
    explicit_transaction: bool
    lone_concurrent: bool
    parse_error: str | None = None
    parse_error_offset: int | None = None
    created_here: set[str] = field(default_factory=set)
    temporary: set[str] = field(default_factory=set)  # temporary tables the file uses: they block no other session


def table_name(rel: Tree) -> str:
    """Display/key name of a relation (a bare RangeVar): bare for the default schema, else schema-qualified."""
    schema = rel.get("schemaname")
    if schema and schema != "public":
        return f"{schema}.{_text(rel, 'relname')}"
    return _text(rel, "relname")


def _text(node: Tree, key: str) -> str:
    """A string field of a parse-tree node ("" when absent; libpg_query's JSON leaves out empty fields)."""
    value = node.get(key)
    return value if isinstance(value, str) else ""


def _object_name(parts: Any) -> str:
    names = [_sval(p) for p in parts]
    if len(names) > 1 and names[0] == "public":
        names = names[1:]
    return ".".join(names)


def _list_items(node: Any) -> list[Tree] | None:
    """The items of a {"List": ...} node (pglast: a tuple), else None."""
    if isinstance(node, dict) and "List" in node:
        items: list[Tree] = node["List"].get("items", [])
        return items
    return None


def _func_names(node: Any, found: list[str]) -> None:
    """Names of every FuncCall under node, pre-order (the order pglast's AST walk gave)."""
    if isinstance(node, dict):
        call = node.get("FuncCall")
        if call is not None and len(node) == 1:
            found.append(_sval(call["funcname"][-1]))
        for value in node.values():
            if isinstance(value, (dict, list)):
                _func_names(value, found)
    elif isinstance(node, list):
        for item in node:
            _func_names(item, found)


def _type_key(type_name: Tree) -> TypeKey:
    names = [_sval(n) for n in type_name["names"]]
    base = names[-1]
    mods: list[int] = []
    for mod in type_name.get("typmods") or ():
        const = mod.get("A_Const")
        if const is not None and "ival" in const:
            mods.append(const["ival"].get("ival", 0))
    return canonical_type(base, tuple(mods))


def _line_of(sql: str, offset: int) -> int:
    return sql.count("\n", 0, offset) + 1


class _Analyzer:
    """Walks one file's statements, updating the shared SchemaModel as it goes."""

    def __init__(self, model: SchemaModel, catalog: Catalog | None) -> None:
        self.model = model
        self.catalog = catalog
        self.created_here: set[str] = set()
        self.not_valid_here: set[str] = set()
        self.columns_here: set[tuple[str, str]] = set()  # columns added by this file
        self.indexes_here: set[str] = set()  # indexes created by this file
        # Columns dropped since the transaction began: (table, column) -> the drop-column check, withdrawn when
        # another column is renamed to the dropped name in the same transaction (a column swap).
        self.dropped: dict[tuple[str, str], tuple[StatementAnalysis, Check]] = {}
        self.temporary_used: set[str] = set()

    def _new(self, table: str | None) -> bool:
        """True for a table this file created, or a temporary table (no other session sees either)."""
        if table is None:
            return False
        if table in self.model.temporary:
            self.temporary_used.add(table)
            return True
        return table in self.created_here

    # -- lookups: this review first, then the live catalog -------------------------------------------
    def volatility(self, func: str) -> str:
        if self.catalog is not None:
            found = self.catalog.volatility(func)
            if found:
                return found
        return KNOWN_VOLATILITY.get(func.lower(), "v")  # unknown: assume volatile, like strong_migrations

    def column_type(self, table: str, column: str) -> TypeKey | None:
        if (table, column) in self.model.columns:
            return self.model.columns[(table, column)]
        return self.catalog.column_type(table, column) if self.catalog is not None else None

    def index_table(self, index: str) -> str | None:
        if index in self.model.index_tables:
            return self.model.index_tables[index]
        return self.catalog.index_table(index) if self.catalog is not None else None

    def fk_parents(self, table: str) -> set[str]:
        parents = set(self.model.fk_parents.get(table, set()))
        if self.catalog is not None:
            parents.update(self.catalog.fk_parents(table))
        parents.discard(table)
        return parents

    def constraint_parent(self, table: str, constraint: str) -> str | None:
        """The referenced table of a foreign key, from this review's model first, then the catalog."""
        parent = self.model.fk_constraints.get((table, constraint))
        if parent is None and self.catalog is not None:
            parent = self.catalog.constraint_parent(table, constraint)
        return parent

    def column_indexes(self, table: str, column: str) -> list[tuple[str, bool]] | None:
        """(index, unique) for the indexes on a column; None when unknown (no database, table not modelled)."""
        found = {name: uniq for name, (t, cols, uniq) in self.model.indexes.items() if t == table and column in cols}
        if table in self.model.created:
            return sorted(found.items())
        if self.catalog is not None:
            live = self.catalog.column_indexes(table, column)
            if live is not None:
                found.update(dict(live))
                return sorted(found.items())
        return sorted(found.items()) if found else None

    def utc(self) -> bool | None:
        return self.catalog.timezone_is_utc() if self.catalog is not None else None

    def not_null_proven(self, table: str, column: str) -> bool:
        if (table, column) in self.model.not_null_checks:
            return True
        return self.catalog.has_validated_not_null_check(table, column) if self.catalog is not None else False

    # -- statements -------------------------------------------------------------------------------------
    def analyze(self, st: StatementAnalysis, kind: str, node: Tree) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(st, node)

    def _on_CreateStmt(self, st: StatementAnalysis, node: Tree) -> None:
        table = table_name(node["relation"])
        st.kind, st.target = "CREATE TABLE", table
        self._created(st, table, node["relation"])
        st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE))
        for parent in node.get("inhRelations") or ():
            rel = parent.get("RangeVar")
            if rel is not None:
                st.effects.append(Effect(table_name(rel), Lock.ACCESS_EXCLUSIVE
                                         if node.get("partbound") is not None else Lock.SHARE_UPDATE_EXCLUSIVE,
                                         role="partition"))
                st.referenced.append(table_name(rel))
        for elt in node.get("tableElts") or ():
            col = elt.get("ColumnDef")
            if col is not None:
                if col.get("typeName") is not None:
                    self.model.columns[(table, col.get("colname"))] = _type_key(col["typeName"])
                for con in col.get("constraints") or ():
                    self._fk_parent(st, table, con.get("Constraint"))
            elif "Constraint" in elt:
                self._fk_parent(st, table, elt["Constraint"])
                self._constraint_index(table, elt["Constraint"])

    def _created(self, st: StatementAnalysis, table: str, rel: Tree) -> None:
        st.new_tables.add(table)
        self.created_here.add(table)
        self.model.created.add(table)
        if rel.get("relpersistence") == "t":
            self.model.temporary.add(table)
            self.temporary_used.add(table)
        else:
            self.model.temporary.discard(table)

    def _constraint_index(self, table: str, con: Tree) -> None:
        """A named PRIMARY KEY / UNIQUE constraint is also an index of that name."""
        if con.get("contype") in ("CONSTR_PRIMARY", "CONSTR_UNIQUE") and con.get("conname"):
            cols = tuple(_sval(k) for k in con.get("keys") or ())
            self.model.indexes[con["conname"]] = (table, cols, True)

    def _on_CreateTableAsStmt(self, st: StatementAnalysis, node: Tree) -> None:
        into = node.get("into") or {}
        if _text(node, "objtype") != "OBJECT_TABLE" or into.get("rel") is None:
            st.kind = "CREATE MATERIALIZED VIEW" if _text(node, "objtype") == "OBJECT_MATVIEW" else "CREATE TABLE AS"
            return
        table = table_name(into["rel"])
        st.kind, st.target = "CREATE TABLE AS", table
        self._created(st, table, into["rel"])
        st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE))

    def _fk_parent(self, st: StatementAnalysis, table: str, con: Tree | None) -> str | None:
        """con: a Constraint's fields (None when the element is no Constraint)."""
        if con is not None and con.get("contype") == "CONSTR_FOREIGN" and con.get("pktable"):
            parent = table_name(con["pktable"])
            self.model.fk_parents.setdefault(table, set()).add(parent)
            if con.get("conname"):
                self.model.fk_constraints[(table, con["conname"])] = parent
            if parent != table:
                st.referenced.append(parent)
                st.effects.append(Effect(parent, Lock.SHARE_ROW_EXCLUSIVE, role="referenced"))
            return parent
        return None

    def _on_IndexStmt(self, st: StatementAnalysis, node: Tree) -> None:
        table = table_name(node["relation"])
        concurrent = bool(node.get("concurrent"))
        idxname = node.get("idxname")
        st.kind = "CREATE INDEX CONCURRENTLY" if concurrent else "CREATE INDEX"
        st.target, st.concurrent = table, concurrent
        if idxname:
            self.model.index_tables[idxname] = table
            cols = tuple(_text(e["IndexElem"], "name") for e in node.get("indexParams") or () if "IndexElem" in e)
            self.model.indexes[idxname] = (table, cols, bool(node.get("unique")))
            self.indexes_here.add(idxname)
        lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.SHARE
        st.effects.append(Effect(table, lock, scans=True))
        if self._new(table):
            return
        if not concurrent:
            st.checks.append(Check("non-concurrent-index", table, {"index": idxname or "",
                                                                  "unique": "UNIQUE " if node.get("unique") else ""},
                                   scans=True, lock=lock))

    def _on_DropStmt(self, st: StatementAnalysis, node: Tree) -> None:
        kind = _text(node, "removeType")
        names = [_object_name(items) for items in map(_list_items, node.get("objects") or ()) if items is not None]
        concurrent = bool(node.get("concurrent"))
        if kind == "OBJECT_TABLE":
            st.kind = "DROP TABLE"
            for table in names:
                st.target = st.target or table
                st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE))
                for parent in sorted(self.fk_parents(table)):
                    st.referenced.append(parent)
                    st.effects.append(Effect(parent, Lock.ACCESS_EXCLUSIVE, role="referenced"))
                if not self._new(table):
                    st.checks.append(Check("drop-table", table, {}, lock=Lock.ACCESS_EXCLUSIVE))
                self.model.created.discard(table)
                self.model.temporary.discard(table)
        elif kind == "OBJECT_INDEX":
            st.kind = "DROP INDEX CONCURRENTLY" if concurrent else "DROP INDEX"
            st.concurrent = concurrent
            lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE
            for index in names:
                owner = self.index_table(index)
                if owner:
                    st.target = st.target or owner
                    st.effects.append(Effect(owner, lock))
                if not concurrent and not self._new(owner) and index not in self.indexes_here:
                    st.checks.append(Check("drop-index", owner, {"index": index}, lock=lock))
                elif index in self.indexes_here and not self._new(owner):
                    st.known_safe["drop-index"] = f'"{index}" was created in this migration: no query relies on it'
                self.model.indexes.pop(index, None)
        else:
            st.kind = f"DROP {kind.removeprefix('OBJECT_')}"

    def _on_RenameStmt(self, st: StatementAnalysis, node: Tree) -> None:
        kind = _text(node, "renameType")
        newname = _text(node, "newname")
        if node.get("relation") is None:
            st.kind = f"RENAME {kind.removeprefix('OBJECT_')}"
            return
        table = table_name(node["relation"])
        if kind == "OBJECT_INDEX":
            st.kind = "ALTER INDEX RENAME"
            index = table
            owner = self.index_table(index)
            if owner:
                self.model.index_tables[newname] = owner
                st.target = owner
                if self._new(owner) or index in self.indexes_here:
                    st.known_safe["renaming-object"] = f'"{index}" was created in this migration'
            if index in self.model.indexes:
                self.model.indexes[newname] = self.model.indexes.pop(index)
            if index in self.indexes_here:
                self.indexes_here.add(newname)
            return
        st.target = table
        st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE))
        new = self._new(table)
        if kind == "OBJECT_COLUMN":
            st.kind = "RENAME COLUMN"
            subname = _text(node, "subname")
            old = self.model.columns.pop((table, subname), None)
            if old:
                self.model.columns[(table, newname)] = old
            for name, (t, cols, uniq) in list(self.model.indexes.items()):
                if t == table and subname in cols:
                    self.model.indexes[name] = (t, tuple(newname if c == subname else c for c in cols), uniq)
            # A column swap: the old column was dropped earlier in this transaction and this one takes its name,
            # so readers of the name never miss it. The drop is no breaking change then.
            swapped = self.dropped.pop((table, newname), None)
            if swapped is not None:
                swapped[0].checks.remove(swapped[1])
                swapped[0].known_safe["drop-column"] = (f'column swap: "{subname}" takes the name "{newname}" in the '
                                                        f"same transaction, so readers never miss it")
            added_here = (table, subname) in self.columns_here
            if added_here:
                self.columns_here.discard((table, subname))
                self.columns_here.add((table, newname))
                st.known_safe["rename-column"] = f'"{subname}" was added in this migration: no deployed code uses it'
            if swapped is not None:
                st.known_safe["rename-column"] = f'column swap: "{subname}" replaces "{newname}", dropped earlier in ' \
                                                 "the same transaction"
            elif not new and not added_here:
                st.checks.append(Check("rename-column", table, {"column": subname, "new_name": newname},
                                       lock=Lock.ACCESS_EXCLUSIVE))
        elif kind == "OBJECT_TABLE":
            st.kind = "RENAME TABLE"
            if not new:
                st.checks.append(Check("rename-table", table, {"new_name": newname},
                                       lock=Lock.ACCESS_EXCLUSIVE))
            for (t, c), tk in list(self.model.columns.items()):
                if t == table:
                    self.model.columns[(newname, c)] = tk
        else:
            st.kind = f"RENAME {kind.removeprefix('OBJECT_')}"

    def _on_AlterEnumStmt(self, st: StatementAnalysis, node: Tree) -> None:
        new_val, old_val = node.get("newVal"), node.get("oldVal")
        st.kind = "ALTER TYPE ADD VALUE" if new_val and not old_val else "ALTER TYPE RENAME VALUE"
        type_name = _object_name(node.get("typeName") or ())
        if old_val:
            st.checks.append(Check("rename-enum-value", None, {"type": type_name, "old": old_val,
                                                              "new": new_val or ""}))
        else:
            st.checks.append(Check("enum-add-value", None, {"type": type_name, "value": new_val or ""}))

    def _on_TruncateStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "TRUNCATE"
        for rel in node.get("relations") or ():
            table = table_name(rel["RangeVar"])
            st.target = st.target or table
            st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE, rewrites=True))
            if not self._new(table):
                st.checks.append(Check("truncate", table, {}, lock=Lock.ACCESS_EXCLUSIVE))

    def _on_VacuumStmt(self, st: StatementAnalysis, node: Tree) -> None:
        full = any("DefElem" in o and o["DefElem"].get("defname") == "full" for o in node.get("options") or ())
        st.kind = ("VACUUM FULL" if full else "VACUUM") if node.get("is_vacuumcmd") else "ANALYZE"
        for rel in node.get("rels") or ():
            vrel = rel.get("VacuumRelation")
            if vrel is not None and vrel.get("relation") is not None:
                table = table_name(vrel["relation"])
                st.target = st.target or table
                if full:
                    st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE, rewrites=True))
                    st.checks.append(Check("table-rewrite", table, {"what": "VACUUM FULL"}, rewrites=True,
                                           lock=Lock.ACCESS_EXCLUSIVE))
                else:
                    st.effects.append(Effect(table, Lock.SHARE_UPDATE_EXCLUSIVE, scans=True))

    def _on_ClusterStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "CLUSTER"
        if node.get("relation") is not None:
            table = table_name(node["relation"])
            st.target = table
            st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE, rewrites=True))
            st.checks.append(Check("table-rewrite", table, {"what": "CLUSTER"}, rewrites=True,
                                   lock=Lock.ACCESS_EXCLUSIVE))

    def _on_ReindexStmt(self, st: StatementAnalysis, node: Tree) -> None:
        concurrent = any("DefElem" in o and o["DefElem"].get("defname") == "concurrently"
                         for o in node.get("params") or ())
        st.kind, st.concurrent = ("REINDEX CONCURRENTLY" if concurrent else "REINDEX"), concurrent
        if node.get("relation") is None:
            return
        name = table_name(node["relation"])
        table = self.index_table(name) if node.get("kind") == "REINDEX_OBJECT_INDEX" else name
        if table:
            lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.SHARE
            st.target = table
            st.effects.append(Effect(table, lock, scans=True))
            if not concurrent and not self._new(table):
                st.checks.append(Check("reindex", table, {"index": name}, scans=True, lock=lock))

    def _on_CreateTrigStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "CREATE TRIGGER"
        st.target = table_name(node["relation"])
        st.effects.append(Effect(st.target, Lock.SHARE_ROW_EXCLUSIVE))

    def _on_CommentStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "COMMENT"
        objtype = node.get("objtype")
        items = _list_items(node.get("object"))
        if objtype in ("OBJECT_TABLE", "OBJECT_COLUMN") and items is not None:
            parts = list(items)
            if objtype == "OBJECT_COLUMN":
                parts = parts[:-1]
            st.target = _object_name(parts)
            st.effects.append(Effect(st.target, Lock.SHARE_UPDATE_EXCLUSIVE))

    def _dml(self, st: StatementAnalysis, kind: str, rel: Tree, where: Any) -> None:
        table = table_name(rel)
        st.kind, st.target = kind, table
        st.effects.append(Effect(table, Lock.ROW_EXCLUSIVE, scans=where is None))
        if kind != "INSERT" and not self._new(table):
            st.checks.append(Check("backfill-in-migration", table, {"what": kind}, scans=True,
                                   lock=Lock.ROW_EXCLUSIVE))

    def _on_UpdateStmt(self, st: StatementAnalysis, node: Tree) -> None:
        self._dml(st, "UPDATE", node["relation"], node.get("whereClause"))

    def _on_DeleteStmt(self, st: StatementAnalysis, node: Tree) -> None:
        self._dml(st, "DELETE", node["relation"], node.get("whereClause"))

    def _on_InsertStmt(self, st: StatementAnalysis, node: Tree) -> None:
        self._dml(st, "INSERT", node["relation"], True)

    def _on_DoStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "DO"
        st.checks.append(Check("opaque-block", None, {}))

    def _on_TransactionStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = _text(node, "kind").removeprefix("TRANS_STMT_")
        if st.kind in {"COMMIT", "ROLLBACK", "BEGIN", "START"}:
            self.dropped.clear()  # a swap must happen within one transaction

    def _on_CreateEnumStmt(self, st: StatementAnalysis, node: Tree) -> None:
        st.kind = "CREATE TYPE AS ENUM"

    def _on_AlterTableStmt(self, st: StatementAnalysis, node: Tree) -> None:
        objtype = _text(node, "objtype")
        if objtype != "OBJECT_TABLE":
            st.kind = f"ALTER {objtype.removeprefix('OBJECT_')}"
            if objtype == "OBJECT_INDEX":
                owner = self.index_table(table_name(node["relation"]))
                if owner:
                    st.target = owner
            return
        table = table_name(node["relation"])
        st.kind, st.target = "ALTER TABLE", table
        new = self._new(table)
        kinds: list[str] = []
        for cmd in node.get("cmds") or ():
            cmd = cmd["AlterTableCmd"]
            kinds.append(cmd.get("subtype").removeprefix("AT_"))
            self._alter_cmd(st, table, cmd, new)
        st.kind = "ALTER TABLE " + ",".join(dict.fromkeys(kinds))

    def _alter_cmd(self, st: StatementAnalysis, table: str, cmd: Tree, new: bool) -> None:
        sub = _text(cmd, "subtype")
        lock = Lock.ACCESS_EXCLUSIVE
        rewrites = scans = False
        column = cmd.get("name") or ""
        definition = cmd.get("def") or {}
        if sub in {"AT_SetStatistics", "AT_ClusterOn", "AT_DropCluster", "AT_SetRelOptions", "AT_ResetRelOptions",
                   "AT_ReplaceRelOptions", "AT_SetOptions", "AT_ResetOptions", "AT_DetachPartitionFinalize"}:
            lock = Lock.SHARE_UPDATE_EXCLUSIVE
        elif sub.startswith(("AT_EnableTrig", "AT_DisableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig",
                             "AT_EnableRule", "AT_DisableRule", "AT_EnableAlwaysRule", "AT_EnableReplicaRule")):
            lock = Lock.SHARE_ROW_EXCLUSIVE
        elif sub == "AT_AddColumn":
            rewrites = self._add_column(st, table, definition["ColumnDef"], new)
        elif sub == "AT_DropColumn":
            self.model.columns.pop((table, column), None)
            for name, (t, cols, _uniq) in list(self.model.indexes.items()):
                if t == table and column in cols:
                    del self.model.indexes[name]  # PostgreSQL drops the column's indexes with it
            if not new and (table, column) not in self.columns_here:
                check = Check("drop-column", table, {"column": column}, lock=lock)
                st.checks.append(check)
                self.dropped[(table, column)] = (st, check)
            elif not new:
                st.known_safe["drop-column"] = f'"{column}" was added in this migration: no deployed code uses it'
            self.columns_here.discard((table, column))
        elif sub == "AT_AlterColumnType":
            rewrites = self._alter_type(st, table, column, definition["ColumnDef"], new)
        elif sub == "AT_SetNotNull":
            proven = self.not_null_proven(table, column)
            scans = not proven
            if not new:
                st.checks.append(Check("set-not-null", table, {"column": column}, scans=scans, lock=lock))
        elif sub == "AT_AddConstraint":
            lock, scans = self._add_constraint(st, table, definition["Constraint"], new)
        elif sub == "AT_ValidateConstraint":
            lock, scans = Lock.SHARE_UPDATE_EXCLUSIVE, True
            parent = self.constraint_parent(table, column)
            if parent and parent != table:  # validating an FK reads the parent under ROW SHARE (measured)
                st.referenced.append(parent)
                st.effects.append(Effect(parent, Lock.ROW_SHARE, role="referenced"))
            if column in self.not_valid_here and not new:
                st.checks.append(Check("validate-same-transaction", table, {"constraint": column}, scans=True,
                                       lock=lock))
            self._mark_validated(table, column)
        elif sub == "AT_AttachPartition":
            lock = Lock.SHARE_UPDATE_EXCLUSIVE
            part = definition["PartitionCmd"].get("name") if "PartitionCmd" in definition else None
            if part is not None:
                st.referenced.append(table_name(part))
                st.effects.append(Effect(table_name(part), Lock.ACCESS_EXCLUSIVE, scans=True, role="partition"))
        elif sub == "AT_DetachPartition":
            partcmd = definition.get("PartitionCmd")
            concurrent = partcmd is not None and bool(partcmd.get("concurrent"))
            lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE
            st.concurrent = st.concurrent or concurrent
            if partcmd is not None and partcmd.get("name") is not None:
                part = table_name(partcmd["name"])
                st.referenced.append(part)
                st.effects.append(Effect(part, lock, role="partition"))
            if not concurrent and not new:
                st.checks.append(Check("detach-partition", table, {}, lock=lock))
        elif sub in {"AT_SetLogged", "AT_SetUnLogged", "AT_SetTableSpace", "AT_SetAccessMethod", "AT_SetExpression"}:
            rewrites = True
            if not new:
                st.checks.append(Check("table-rewrite", table, {"what": sub.removeprefix("AT_")}, rewrites=True,
                                       lock=lock))
        elif sub == "AT_DropConstraint":
            # Dropping a foreign key takes ACCESS EXCLUSIVE on the referenced table too (its triggers go).
            parent = self.constraint_parent(table, column)
            self.model.fk_constraints.pop((table, column), None)
            if self.model.indexes.get(column, ("",))[0] == table:
                del self.model.indexes[column]
            if parent and parent != table:
                st.referenced.append(parent)
                st.effects.append(Effect(parent, Lock.ACCESS_EXCLUSIVE, role="referenced"))
        st.effects.append(Effect(table, lock, rewrites=rewrites, scans=scans))

    def _mark_validated(self, table: str, constraint: str) -> None:
        info = self.model.not_valid.pop(constraint, None)
        if info and info[1].startswith("notnull:"):
            self.model.not_null_checks.add((table, info[1].removeprefix("notnull:")))

    def _add_column(self, st: StatementAnalysis, table: str, col: Tree, new: bool) -> bool:
        type_key = _type_key(col["typeName"]) if col.get("typeName") is not None else None
        colname = _text(col, "colname")
        self.columns_here.add((table, colname))
        if type_key is not None:
            self.model.columns[(table, colname)] = type_key
        not_null = bool(col.get("is_not_null"))
        default = None
        rewrites = False
        reason = ""
        for con in col.get("constraints") or ():
            con = con.get("Constraint")
            if con is None:
                continue
            ct = con.get("contype")
            if ct in ("CONSTR_NOTNULL", "CONSTR_PRIMARY"):
                not_null = True
            if ct == "CONSTR_DEFAULT":
                default = con.get("raw_expr")
            elif ct == "CONSTR_GENERATED" and con.get("generated_kind") == "s":
                rewrites, reason = True, "generated-column"
            elif ct == "CONSTR_IDENTITY":
                rewrites, reason = True, "identity-column"
            elif ct in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") and not new:
                st.checks.append(Check("unique-build", table, {"column": colname}, scans=True,
                                       lock=Lock.ACCESS_EXCLUSIVE))
            elif ct == "CONSTR_FOREIGN":
                self._fk_parent(st, table, con)
        if type_key is not None and type_key.base in _SERIAL_TYPES:
            rewrites, reason = True, "identity-column"
        if default is not None and not rewrites:
            volatile = [f for f in self._functions(default) if self.volatility(f) == "v"]
            if volatile:
                if new:
                    return False
                st.checks.append(Check("volatile-default", table, {"column": colname, "function": volatile[0]},
                                       rewrites=True, lock=Lock.ACCESS_EXCLUSIVE))
                return True
        if new:
            return False
        if reason:
            st.checks.append(Check(reason, table, {"column": colname}, rewrites=True, lock=Lock.ACCESS_EXCLUSIVE))
        if not_null and default is None and not rewrites:
            st.checks.append(Check("required-column", table, {"column": colname,
                                                              "type": str(type_key) if type_key else ""},
                                   lock=Lock.ACCESS_EXCLUSIVE))
        return rewrites

    def _functions(self, expr: Any) -> list[str]:
        found: list[str] = []
        _func_names(expr, found)
        return found

    def _alter_type(self, st: StatementAnalysis, table: str, column: str, col: Tree, new: bool) -> bool:
        new_type = _type_key(col["typeName"])
        old_type = self.column_type(table, column)
        using = col.get("raw_default")
        simple_using = using is None or "ColumnRef" in using or (
            "TypeCast" in using and "ColumnRef" in (using["TypeCast"].get("arg") or {}))
        collation = _object_name((col.get("collClause") or {}).get("collname") or ())
        collation_changes = bool(collation) and (
            self.catalog is None or self.catalog.column_collation(table, column) != collation)
        if old_type is None or not simple_using:
            rewrites, known = True, old_type is not None
            rebuilds = True
        else:
            rewrites, known = type_change_rewrites(old_type, new_type, utc=self.utc()), True
            rebuilds = type_change_rebuilds_indexes(old_type, new_type, utc=self.utc(),
                                                    collation_changes=collation_changes)
        self.model.columns[(table, column)] = new_type
        indexes = self.column_indexes(table, column)
        # Without a rewrite, only the column's own indexes are rebuilt, and only when its opclass or collation
        # changes; unknown indexes (no database, table not modelled) count as some.
        rebuilt = [] if not rebuilds else [name for name, _ in indexes] if indexes is not None else ["?"]
        unique = [name for name, uniq in indexes or () if uniq]
        names = {"column": column, "type": str(new_type), "old_type": str(old_type) if old_type else "",
                 "known": "yes" if known else ""}
        if rebuilt and not rewrites:
            names["rebuilt_indexes"] = ", ".join(f'"{n}"' for n in rebuilt if n != "?") or "any index on it"
        if collation_changes:
            names["collation"] = collation
        if new_type.base == "citext" and (old_type is None or old_type.base != "citext") and (
                unique or indexes is None):
            # A unique index rebuilt under citext compares case-insensitively: 'a@x.io' and 'A@x.io' now collide.
            names["citext_unique"] = ", ".join(f'"{n}"' for n in unique) or "any unique index on it"
        if not new:
            st.checks.append(Check("type-change", table, names, rewrites=rewrites, scans=bool(rebuilt),
                                   lock=Lock.ACCESS_EXCLUSIVE))
        if rebuilt and not rewrites and not new:
            st.effects.append(Effect(table, Lock.ACCESS_EXCLUSIVE, scans=True))
        return rewrites and not new

    def _add_constraint(self, st: StatementAnalysis, table: str, con: Tree, new: bool) -> tuple[Lock, bool]:
        ct = con.get("contype")
        name = con.get("conname") or ""
        not_valid = bool(con.get("skip_validation"))
        self._constraint_index(table, con)
        if not_valid and name:
            self.not_valid_here.add(name)
        if ct == "CONSTR_FOREIGN":
            parent = self._fk_parent(st, table, con) or ""
            scans = not not_valid and not new
            if not_valid and name:
                self.model.not_valid[name] = (table, "fk")
            if scans:
                st.checks.append(Check("fk-without-not-valid", table, {
                    "constraint": name, "parent": parent,
                    "columns": ", ".join(f'"{_sval(a)}"' for a in con.get("fk_attrs") or ()),
                    "parent_columns": ", ".join(f'"{_sval(a)}"' for a in con.get("pk_attrs") or ())},
                    scans=True, lock=Lock.SHARE_ROW_EXCLUSIVE))
            return Lock.SHARE_ROW_EXCLUSIVE, scans
        if ct == "CONSTR_CHECK":
            column = self._not_null_check_column(con.get("raw_expr"))
            if not_valid:
                if name:
                    self.model.not_valid[name] = (table, f"notnull:{column}" if column else "check")
                return Lock.ACCESS_EXCLUSIVE, False
            if column:
                self.model.not_null_checks.add((table, column))
            if not new:
                st.checks.append(Check("check-without-not-valid", table, {"constraint": name}, scans=True,
                                       lock=Lock.ACCESS_EXCLUSIVE))
            return Lock.ACCESS_EXCLUSIVE, not new
        if ct in ("CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION"):
            if con.get("indexname"):
                return Lock.ACCESS_EXCLUSIVE, False
            if not new:
                st.checks.append(Check("unique-build", table, {"constraint": name,
                                                               "kind": ct.removeprefix("CONSTR_")},
                                       scans=True, lock=Lock.ACCESS_EXCLUSIVE))
            return Lock.ACCESS_EXCLUSIVE, not new
        return Lock.ACCESS_EXCLUSIVE, False

    @staticmethod
    def _not_null_check_column(expr: Any) -> str | None:
        test = expr.get("NullTest") if isinstance(expr, dict) else None
        if test is not None and test.get("nulltesttype") == "IS_NOT_NULL" and "ColumnRef" in (test.get("arg") or {}):
            return _sval(test["arg"]["ColumnRef"]["fields"][-1])
        return None


def _char_offsets(sql: str) -> Any:
    """libpg_query's JSON gives byte offsets into the UTF-8 text; pglast's AST gave character offsets."""
    if sql.isascii():
        return lambda offset: offset
    encoded = sql.encode("utf-8")
    return lambda offset: len(encoded[:offset].decode("utf-8", errors="ignore"))


def analyze_file(sql: str, model: SchemaModel | None = None, catalog: Catalog | None = None) -> FileAnalysis:
    """Parse one migration file and work out, per statement, the locks, rewrites, scans and checks it raises."""
    model = model if model is not None else SchemaModel()
    try:
        raw = json.loads(pglast.parser.parse_sql_json(sql)).get("stmts", [])
    except pglast.parser.ParseError as exc:
        location = getattr(exc, "location", None)
        offset = location if isinstance(location, int) else None
        return FileAnalysis([], [], False, False, parse_error=str(exc.args[0] if exc.args else exc),
                            parse_error_offset=offset)
    analyzer = _Analyzer(model, catalog)
    statements: list[StatementAnalysis] = []
    kinds: list[str] = []
    to_char = _char_offsets(sql)
    for index, rawstmt in enumerate(raw):
        byte_start = rawstmt.get("stmt_location", 0)
        byte_len = rawstmt.get("stmt_len", 0)
        start = to_char(byte_start)
        length = (to_char(byte_start + byte_len) - start) if byte_len else (len(sql) - start)
        text = sql[start:start + length].strip()
        ((kind, node),) = rawstmt["stmt"].items()
        kinds.append(kind)
        st = StatementAnalysis(index=index, kind=kind, sql=text,
                               line=_line_of(sql, start + (len(sql[start:]) - len(sql[start:].lstrip()))),
                               location=start)
        analyzer.analyze(st, kind, node)
        touched = st.tables_touched
        for check in st.checks:
            if not check.tables_touched:
                check.tables_touched = sorted(touched, key=lambda tl: tl[0] != check.table)
        statements.append(st)
    explicit = "TransactionStmt" in kinds
    lone = len(statements) == 1 and statements[0].concurrent
    return FileAnalysis(statements, _hold_ranges(statements, explicit, lone, analyzer.temporary_used), explicit, lone,
                        created_here=set(analyzer.created_here), temporary=set(analyzer.temporary_used))


def _hold_ranges(statements: list[StatementAnalysis], explicit: bool, lone: bool,
                 temporary: set[str] | None = None) -> list[TableLock]:
    """Per table: strongest lock and the statement range it is held (a Prisma file is one transaction)."""
    if not statements:
        return []
    last = len(statements) - 1
    created: set[str] = set(temporary or ())
    for st in statements:
        created |= st.new_tables
    first: dict[str, int] = {}
    strongest: dict[str, Lock] = {}
    for st in statements:
        for eff in st.effects:
            first.setdefault(eff.table, st.index)
            strongest[eff.table] = max(strongest.get(eff.table, eff.lock), eff.lock)
    ends: dict[str, int] = {}
    for table, start in first.items():
        end = last
        if lone:
            end = start
        elif explicit:
            for st in statements[start:]:
                if st.kind in {"COMMIT", "ROLLBACK"}:
                    end = st.index
                    break
        ends[table] = end
    return [TableLock(t, strongest[t], first[t], ends[t], t in created) for t in first]
