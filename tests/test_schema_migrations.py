"""Specification of the migrator: ordered files, one locked transaction, catalog auto-sync."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

import asyncpg
import pytest

from aegis.schema.catalog import read_catalog
from aegis.schema.migrator import (
    MigrationError,
    SchemaDrift,
    compare_catalog,
    load_migrations,
    migrate,
)
from aegis.store.partitions import ensure_partitions

TEN_TABLES = {
    "market_data", "signals", "virtual_positions", "virtual_trades", "orders", "trades",
    "ml_models", "experience_buffer", "account_state", "kernel_events",
}  # fmt: skip


async def _exec(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def test_load_migrations_packaged_files_are_ordered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "core_tables"
    assert all(m.sql.strip() for m in migrations)


async def test_migrate_empty_database_creates_the_ten_tables_and_matches_catalog(
    pg_fresh_dsn: str,
) -> None:
    report = await migrate(pg_fresh_dsn)
    assert report.applied == tuple(m.version for m in load_migrations())
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:
        catalog = await read_catalog(conn, "public")
    finally:
        await conn.close()
    assert set(catalog.tables) == TEN_TABLES
    assert catalog.tables["market_data"] == "p"  # partitioned
    assert catalog.columns[("orders", "price")].type == "numeric"
    assert catalog.columns[("trades", "commission")].type == "numeric"
    assert catalog.columns[("market_data", "close")].type == "double precision"
    assert "orders_pkey" in catalog.indexes  # client_order_id is unique
    diff = await compare_catalog(pg_fresh_dsn)
    assert diff.clean and not diff.drift


async def test_migrate_twice_second_run_changes_nothing(pg_fresh_dsn: str) -> None:
    await migrate(pg_fresh_dsn)
    before = await _exec(
        pg_fresh_dsn, "SELECT version, checksum, applied_at_ms FROM schema_version"
    )
    second = await migrate(pg_fresh_dsn)
    after = await _exec(pg_fresh_dsn, "SELECT version, checksum, applied_at_ms FROM schema_version")
    assert second.applied == () and second.synced == () and not second.changed
    assert before == after


async def test_migrate_three_concurrent_migrators_apply_each_version_once(
    pg_fresh_dsn: str,
) -> None:
    reports = await asyncio.gather(*(migrate(pg_fresh_dsn) for _ in range(3)))
    applied = [r.applied for r in reports]
    assert sorted(applied, key=len) == [(), (), tuple(m.version for m in load_migrations())]
    rows = await _exec(pg_fresh_dsn, "SELECT version FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == [m.version for m in load_migrations()]


async def test_migrate_missing_index_and_nullable_column_are_added_and_logged(
    pg_fresh_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_fresh_dsn)
    await _exec(pg_fresh_dsn, "DROP INDEX kernel_events_ts_idx")
    await _exec(pg_fresh_dsn, "ALTER TABLE signals DROP COLUMN atr_pct")
    with caplog.at_level(logging.WARNING, logger="aegis.schema.migrator"):
        report = await migrate(pg_fresh_dsn)
    assert report.applied == ()
    assert any("kernel_events_ts_idx" in s for s in report.synced)
    assert any("signals.atr_pct" in s for s in report.synced)
    assert "kernel_events_ts_idx" in caplog.text and "signals.atr_pct" in caplog.text
    assert (await compare_catalog(pg_fresh_dsn)).clean


async def test_migrate_missing_index_on_partitioned_table_is_rebuilt_everywhere(
    pg_fresh_dsn: str,
) -> None:
    await migrate(pg_fresh_dsn)
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:
        await ensure_partitions(conn, since=dt.date(2023, 3, 1), through=dt.date(2023, 4, 1))
        await conn.execute("CREATE INDEX market_data_close_idx ON market_data (close)")
    finally:
        await conn.close()
    # An extra index is tolerated; the expected catalog has none, so nothing else changes.
    assert (await migrate(pg_fresh_dsn)).synced == ()


@pytest.mark.parametrize(
    ("ddl", "named"),
    [
        ("ALTER TABLE orders ALTER COLUMN price TYPE double precision", "orders.price"),
        (
            "ALTER TABLE trades ALTER COLUMN exchange_order_id SET NOT NULL",
            "trades.exchange_order_id",
        ),
        ("ALTER TABLE orders ALTER COLUMN status DROP NOT NULL", "orders.status"),
        ("ALTER TABLE account_state ADD COLUMN owner text NOT NULL", "account_state.owner"),
        ("ALTER TABLE orders DROP CONSTRAINT orders_mode_check", "orders_mode_check"),
        ("DROP TABLE experience_buffer", "experience_buffer"),
    ],
)
async def test_migrate_destructive_drift_raises_naming_the_object(
    pg_fresh_dsn: str, ddl: str, named: str
) -> None:
    await migrate(pg_fresh_dsn)
    await _exec(pg_fresh_dsn, ddl)
    with pytest.raises(SchemaDrift) as err:
        await migrate(pg_fresh_dsn)
    assert named in str(err.value)
    assert any(named in obj for obj in err.value.objects)


async def test_migrate_drift_rolls_back_everything_including_safe_repairs(
    pg_fresh_dsn: str,
) -> None:
    await migrate(pg_fresh_dsn)
    await _exec(pg_fresh_dsn, "DROP INDEX kernel_events_ts_idx")
    await _exec(pg_fresh_dsn, "ALTER TABLE orders ALTER COLUMN price TYPE real")
    with pytest.raises(SchemaDrift):
        await migrate(pg_fresh_dsn)
    rows = await _exec(
        pg_fresh_dsn, "SELECT 1 FROM pg_class WHERE relname = 'kernel_events_ts_idx'"
    )
    assert rows == []


async def test_migrate_edited_migration_refuses_with_checksum_error(pg_fresh_dsn: str) -> None:
    await migrate(pg_fresh_dsn)
    migrations = list(load_migrations())
    migrations[0] = dataclasses.replace(migrations[0], sql=migrations[0].sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(pg_fresh_dsn, tuple(migrations))


async def test_migrate_database_newer_than_code_refuses(pg_fresh_dsn: str) -> None:
    await migrate(pg_fresh_dsn)
    with pytest.raises(MigrationError, match="upgrade AEGIS"):
        await migrate(pg_fresh_dsn, load_migrations()[:1])


async def test_ensure_partitions_moves_rows_from_default_into_new_month(
    pg_fresh_dsn: str,
) -> None:
    await migrate(pg_fresh_dsn)
    jan_2031 = int(dt.datetime(2031, 1, 15, tzinfo=dt.UTC).timestamp() * 1000)
    await _exec(
        pg_fresh_dsn,
        "INSERT INTO market_data (symbol, timeframe, open_time_ms, open, high, low, close, volume)"
        " VALUES ('BTCUSDT', '1m', $1, 1, 1, 1, 1, 0)",
        jan_2031,
    )
    rows = await _exec(pg_fresh_dsn, "SELECT count(*) AS n FROM market_data_default")
    assert rows[0]["n"] == 1  # never lost, even without a partition
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:
        created = await ensure_partitions(
            conn, since=dt.date(2031, 1, 1), through=dt.date(2031, 2, 1)
        )
        again = await ensure_partitions(
            conn, since=dt.date(2031, 1, 1), through=dt.date(2031, 2, 1)
        )
        part = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM market_data WHERE open_time_ms = $1", jan_2031
        )
        stray = await conn.fetchval("SELECT count(*) FROM market_data_default")
    finally:
        await conn.close()
    assert created == [dt.date(2031, 1, 1), dt.date(2031, 2, 1)]
    assert again == []
    assert part == "market_data_p203101" and stray == 0
    # Partitions are data, not schema: the catalog is still clean.
    assert (await compare_catalog(pg_fresh_dsn)).clean


async def test_ensure_month_concurrent_sessions_create_each_partition_once_without_error(
    pg_fresh_dsn: str,
) -> None:
    await migrate(pg_fresh_dsn)
    conns = [await asyncpg.connect(pg_fresh_dsn) for _ in range(4)]
    try:
        for month in [dt.date(2032, m, 1) for m in range(1, 13)]:
            created = await asyncio.gather(
                *(c.fetchval("SELECT aegis_ensure_market_data_month($1)", month) for c in conns)
            )
            assert sorted(created) == [False, False, False, True]
    finally:
        for c in conns:
            await c.close()
