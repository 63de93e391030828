"""Read a schema's catalog (tables, columns, indexes, constraints, functions) and diff two.

The diff sorts every difference into one of two kinds: *safe* — something missing that can be
added without touching existing rows or weakening a guarantee (an index, a nullable column) —
and *drift* — anything else (a column of another type, an extra NOT NULL, a missing table or
constraint), which must stop start-up with a message naming the object.
Monthly partitions of ``market_data`` are data, not schema, and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

IGNORED_TABLES = frozenset({"schema_version"})


@dataclass(frozen=True)
class ColumnInfo:
    """One column as the catalog describes it."""

    table: str
    name: str
    type: str
    not_null: bool
    default: str | None


@dataclass(frozen=True)
class Catalog:
    """The managed objects of one schema, with schema names stripped from definitions."""

    tables: dict[str, str] = field(default_factory=dict)  # name -> relkind ('r' or 'p')
    columns: dict[tuple[str, str], ColumnInfo] = field(default_factory=dict)
    indexes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, def)
    constraints: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, name) -> def
    functions: dict[str, str] = field(default_factory=dict)  # name(args) -> body


@dataclass(frozen=True)
class SyncAction:
    """A safe repair: the DDL to run and the line to log."""

    description: str
    sql: str


@dataclass(frozen=True)
class CatalogDiff:
    safe: tuple[SyncAction, ...]
    drift: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not (self.safe or self.drift)


_TABLES_SQL = """
SELECT c.relname, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""
_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS dflt
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND a.attnum > 0 AND NOT a.attisdropped
"""
_INDEXES_SQL = """
SELECT i.relname AS name, t.relname AS table, pg_get_indexdef(i.oid) AS def
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = $1 AND NOT t.relispartition AND t.relkind IN ('r', 'p')
"""
_CONSTRAINTS_SQL = """
SELECT t.relname AS table, k.conname AS name, pg_get_constraintdef(k.oid) AS def
  FROM pg_constraint k
  JOIN pg_class t ON t.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = $1 AND NOT t.relispartition AND t.relkind IN ('r', 'p')
"""
_FUNCTIONS_SQL = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name, p.prosrc
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1
"""


async def read_catalog(conn: asyncpg.Connection, schema: str) -> Catalog:
    """Return the managed objects of ``schema`` as seen by ``conn``."""

    def strip(text: str) -> str:
        return text.replace(f" {schema}.", " ").replace(f'"{schema}".', "")

    tables = {r["relname"]: r["relkind"] for r in await conn.fetch(_TABLES_SQL, schema)}
    tables = {k: v for k, v in tables.items() if k not in IGNORED_TABLES}
    columns = {
        (r["relname"], r["attname"]): ColumnInfo(
            r["relname"], r["attname"], r["type"], r["attnotnull"], r["dflt"]
        )
        for r in await conn.fetch(_COLUMNS_SQL, schema)
        if r["relname"] in tables
    }
    indexes = {
        r["name"]: (r["table"], strip(r["def"]))
        for r in await conn.fetch(_INDEXES_SQL, schema)
        if r["table"] in tables
    }
    constraints = {
        (r["table"], r["name"]): r["def"]
        for r in await conn.fetch(_CONSTRAINTS_SQL, schema)
        if r["table"] in tables
    }
    functions = {r["name"]: r["prosrc"] for r in await conn.fetch(_FUNCTIONS_SQL, schema)}
    return Catalog(tables, columns, indexes, constraints, functions)


def diff_catalogs(expected: Catalog, live: Catalog, schema: str) -> CatalogDiff:
    """Compare ``live`` against ``expected``; DDL of safe actions targets ``schema``."""
    safe: list[SyncAction] = []
    drift: list[str] = []
    ignored: list[str] = []
    q = _quote

    for table, kind in sorted(expected.tables.items()):
        if table not in live.tables:
            drift.append(f"table {table}: missing")
        elif live.tables[table] != kind:
            drift.append(f"table {table}: partitioning differs from the expected schema")

    for key, col in sorted(expected.columns.items()):
        if col.table not in live.tables:
            continue
        name = f"column {col.table}.{col.name}"
        have = live.columns.get(key)
        if have is None:
            if col.not_null:
                drift.append(f"{name}: missing (NOT NULL, cannot be added safely)")
            else:
                dflt = f" DEFAULT {col.default}" if col.default else ""
                safe.append(
                    SyncAction(
                        f"added nullable {name} {col.type}",
                        f"ALTER TABLE {q(schema)}.{q(col.table)} ADD COLUMN {q(col.name)} "
                        f"{col.type}{dflt}",
                    )
                )
            continue
        if have.type != col.type:
            drift.append(f"{name}: type {have.type}, expected {col.type}")
        if have.not_null and not col.not_null:
            drift.append(f"{name}: extra NOT NULL")
        if col.not_null and not have.not_null:
            drift.append(f"{name}: NOT NULL missing")
        if have.default != col.default:
            drift.append(f"{name}: default {have.default!r}, expected {col.default!r}")

    for key, col in sorted(live.columns.items()):
        if key in expected.columns or col.table not in expected.tables:
            continue
        name = f"column {col.table}.{col.name}"
        if col.not_null and col.default is None:
            drift.append(f"{name}: unexpected NOT NULL column without default")
        else:
            ignored.append(f"{name}: not in the expected schema (nullable, left alone)")

    for index, (table, definition) in sorted(expected.indexes.items()):
        if table not in live.tables:
            continue
        have = live.indexes.get(index)
        if have is None:
            if (table, index) in expected.constraints:
                continue  # reported as a missing constraint below
            safe.append(
                SyncAction(
                    f"created missing index {index} on {table}",
                    _requalify(definition, schema),
                )
            )
        elif have != (table, definition):
            drift.append(f"index {index}: definition {have[1]!r}, expected {definition!r}")

    for (table, name), definition in sorted(expected.constraints.items()):
        if table not in live.tables:
            continue
        have = live.constraints.get((table, name))
        if have is None:
            drift.append(f"constraint {table}.{name}: missing")
        elif have != definition:
            drift.append(f"constraint {table}.{name}: {have!r}, expected {definition!r}")

    for function, body in sorted(expected.functions.items()):
        have = live.functions.get(function)
        if have is None:
            drift.append(f"function {function}: missing")
        elif have != body:
            drift.append(f"function {function}: body differs from the migrations")

    return CatalogDiff(tuple(safe), tuple(drift), tuple(ignored))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _requalify(index_def: str, schema: str) -> str:
    """Point a schema-stripped CREATE INDEX at ``schema``."""
    for marker in (" ON ONLY ", " ON "):
        head, sep, tail = index_def.partition(marker)
        if sep:
            # ON ONLY would leave the index invalid on partitioned tables; build it everywhere.
            return f"{head} ON {_quote(schema)}.{tail}"
    raise ValueError(f"not an index definition: {index_def!r}")
