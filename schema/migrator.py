"""Apply the ordered SQL migrations, then check the live catalog against the expected one.

``migrate(dsn)`` runs in ONE transaction under a transaction-scoped advisory lock, so any number
of processes may call it at once: the first applies what is pending, the others wait and find
nothing to do. The applied versions (with a checksum of each file) live in ``schema_version``.

After migrating, the expected catalog is built by replaying every migration into a scratch
schema inside a savepoint (rolled back afterwards: the migration files are the single source of
truth) and compared with the live schema. Missing safe objects (an index, a nullable column) are
added and logged; destructive drift raises ``SchemaDrift`` naming each object, and the whole
transaction — migrations included — rolls back.

Rules for migration files: never schema-qualify names (they are replayed into the scratch
schema through ``search_path``), never edit an applied file (its checksum is checked: add a new
``V000N__name.sql`` instead), and keep versions 1..N without gaps.

Timestamps in the schema are epoch milliseconds (UTC) in ``bigint`` columns named ``*_ms``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

import asyncpg

from aegis.schema.catalog import CatalogDiff, diff_catalogs, read_catalog

log = logging.getLogger(__name__)

# Key of pg_advisory_xact_lock: b"AEGIS" as an integer, shared by every AEGIS migrator.
MIGRATION_LOCK_KEY = 0x4145474953
SCRATCH_SCHEMA = "aegis_expected_catalog"
_FILE_RE = re.compile(r"^V(\d{4})__([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations cannot be applied (bad files, edited history, newer database)."""


class SchemaDrift(MigrationError):
    """The live schema differs from the expected one in a way that is not safe to repair."""

    def __init__(self, objects: tuple[str, ...]) -> None:
        self.objects = objects
        super().__init__(
            "schema drift, refusing to start (fix by hand or restore): " + "; ".join(objects)
        )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    """What one ``migrate`` call did."""

    version: int  # schema version after the call
    applied: tuple[int, ...]  # versions applied by this call
    synced: tuple[str, ...]  # safe repairs made by the auto-sync
    ignored: tuple[str, ...]  # tolerated extras (logged)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.synced)


def load_migrations() -> tuple[Migration, ...]:
    """Return the packaged migrations in order; raise ``MigrationError`` on gaps or bad names."""
    found: dict[int, Migration] = {}
    for entry in resources.files("aegis.schema").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_RE.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: migration files are named V0001__name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{entry.name}: version {version} appears twice")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        raise MigrationError(f"migration versions must be 1..N without gaps, got {sorted(found)}")
    return tuple(found[v] for v in expected)


async def migrate(dsn: str, migrations: tuple[Migration, ...] | None = None) -> MigrationReport:
    """Apply pending migrations and auto-sync the catalog, atomically and under a lock."""
    migrations = load_migrations() if migrations is None else migrations
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            schema = await conn.fetchval("SELECT current_schema()")
            applied = await _apply_pending(conn, migrations)
            diff = await _compare(conn, migrations, schema)
            if diff.drift:
                raise SchemaDrift(diff.drift)
            for action in diff.safe:
                await conn.execute(action.sql)
                log.warning("schema auto-sync: %s", action.description)
            for note in diff.ignored:
                log.info("schema auto-sync: %s", note)
            version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
    finally:
        await conn.close()
    if applied:
        log.info("schema migrated to version %d (applied %s)", version, list(applied))
    return MigrationReport(version, applied, tuple(a.description for a in diff.safe), diff.ignored)


def migrate_sync(dsn: str) -> MigrationReport:
    """Blocking ``migrate`` for command-line use (runs its own event loop)."""
    return asyncio.run(migrate(dsn))


async def compare_catalog(dsn: str) -> CatalogDiff:
    """Diff the live schema against the migrations without changing anything."""
    migrations = load_migrations()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            schema = await conn.fetchval("SELECT current_schema()")
            diff = await _compare(conn, migrations, schema)
            raise _Rollback(diff)
    except _Rollback as done:
        return done.diff
    finally:
        await conn.close()


class _Rollback(Exception):
    def __init__(self, diff: CatalogDiff) -> None:
        self.diff = diff


async def _apply_pending(
    conn: asyncpg.Connection, migrations: tuple[Migration, ...]
) -> tuple[int, ...]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_version (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at_ms bigint NOT NULL)"""
    )
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_version ORDER BY version")
    known = {m.version: m for m in migrations}
    for row in rows:
        mig = known.get(row["version"])
        if mig is None:
            raise MigrationError(
                f"database is at schema version {row['version']} ({row['name']}) but this "
                f"AEGIS only knows up to {len(migrations)}: upgrade AEGIS"
            )
        if mig.checksum != row["checksum"]:
            raise MigrationError(
                f"V{mig.version:04d}__{mig.name}.sql was edited after it was applied "
                "(checksum differs): add a new migration instead"
            )
    done = {row["version"] for row in rows}
    applied = []
    for mig in migrations:
        if mig.version in done:
            continue
        await conn.execute(mig.sql)
        await conn.execute(
            "INSERT INTO schema_version (version, name, checksum, applied_at_ms) "
            "VALUES ($1, $2, $3, $4)",
            mig.version,
            mig.name,
            mig.checksum,
            int(time.time() * 1000),
        )
        applied.append(mig.version)
    return tuple(applied)


async def _compare(
    conn: asyncpg.Connection, migrations: tuple[Migration, ...], schema: str
) -> CatalogDiff:
    """Build the expected catalog in a rolled-back scratch schema and diff the live one."""
    scratch = conn.transaction()  # nested: a savepoint
    await scratch.start()
    try:
        await conn.execute(f"CREATE SCHEMA {SCRATCH_SCHEMA}")
        await conn.execute(f"SET LOCAL search_path = {SCRATCH_SCHEMA}")
        for mig in migrations:
            await conn.execute(mig.sql)
        expected = await read_catalog(conn, SCRATCH_SCHEMA)
    finally:
        await scratch.rollback()
    live = await read_catalog(conn, schema)
    return diff_catalogs(expected, live, schema)
