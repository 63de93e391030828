"""Specification of the durable write path: idempotent batches, dead letters, and no row lost
while a REAL PostgreSQL (a private cluster started by this module) is stopped mid-run."""

from __future__ import annotations

import asyncio
import gzip
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import asyncpg
import numpy as np
import pytest

from aegis.records import BAR_DTYPE
from aegis.schema.migrator import migrate_sync
from aegis.store import (
    BarBatch,
    Database,
    DurableWriter,
    EventLog,
    MarketDataWriter,
    RejectReason,
    RowShapeError,
    UnknownTableError,
    recent_events,
)
from aegis.store.embedded import EmbeddedPostgres
from aegis.store.spill import SpillFile, claim_spills

T0 = 1_679_000_040_000


def _bars(symbol: str, n: int, start: int = T0) -> list[tuple]:
    return [
        (symbol, "1m", start + 60_000 * i, 1.0, 2.0, 0.5, 1.5, 10.0, None, None, None, None, 1)
        for i in range(n)
    ]


def _writer(dsn: str, spill: Path, **kw: object) -> DurableWriter:
    opts: dict = {"backoff_base_s": 0.02, "backoff_cap_s": 0.2, "spill_after_s": 0.3}
    opts.update(kw)
    return DurableWriter(Database(dsn, connect_timeout_s=1.0), spill, **opts)


async def _count(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def private_pg() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL cluster this module may stop and start at will, with AEGIS migrated."""
    home = Path(tempfile.mkdtemp(prefix="aegis-test-privpg-"))  # not under pytest's 0700 tree
    server = EmbeddedPostgres(home)
    try:
        server.start()
        dsn = server.ensure_database("aegis")
        migrate_sync(dsn)
        yield server, dsn
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


async def test_durable_writer_same_batch_twice_stores_each_row_once(
    pg_migrated_dsn: str, tmp_path: Path
) -> None:
    writer = _writer(pg_migrated_dsn, tmp_path)
    await writer.start()
    rows = _bars("IDEMUSDT", 500)
    writer.submit("market_data", rows)
    writer.submit("market_data", rows)  # a replayed batch
    assert await writer.flush(10)
    await writer.close()
    assert writer.stats.written_rows == 1000 and writer.stats.inserted_rows == 500
    assert (
        await _count(pg_migrated_dsn, "SELECT count(*) FROM market_data WHERE symbol='IDEMUSDT'")
        == 500
    )


async def test_durable_writer_order_update_newer_wins_older_replay_ignored(
    pg_migrated_dsn: str, tmp_path: Path
) -> None:
    coid = f"t-{uuid.uuid4().hex[:10]}"

    def order(status: str, updated: int, executed: str) -> dict:
        return {
            "client_order_id": coid, "intent_id": 2**64 - 1, "mode": "paper", "symbol": "BTCUSDT",
            "side": "BUY", "order_type": "MARKET", "status": status, "quantity": Decimal("0.00123"),
            "executed_qty": Decimal(executed), "created_at_ms": 1, "updated_at_ms": updated,
        }  # fmt: skip

    writer = _writer(pg_migrated_dsn, tmp_path)
    await writer.start()
    writer.submit("orders", [order("NEW", 1, "0"), order("FILLED", 3, "0.00123")])
    assert await writer.flush(10)
    writer.submit("orders", [order("NEW", 1, "0")])  # late replay of an older state
    assert await writer.flush(10)
    await writer.close()
    conn = await asyncpg.connect(pg_migrated_dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM orders WHERE client_order_id = $1", coid)
    finally:
        await conn.close()
    assert row["status"] == "FILLED" and row["executed_qty"] == Decimal("0.00123")
    assert row["intent_id"] == Decimal(2**64 - 1)


async def test_durable_writer_row_rejected_by_database_is_dead_lettered_rest_written(
    pg_migrated_dsn: str, tmp_path: Path
) -> None:
    base = {"ts_ms": 1, "process": "test-dead", "event": "start", "reason": "boot"}
    rows = [dict(base, event_id=uuid.uuid4()) for _ in range(9)]
    rows[4]["process"] = None  # NOT NULL violation, found only by the database
    writer = _writer(pg_migrated_dsn, tmp_path)
    await writer.start()
    writer.submit("kernel_events", rows)
    assert await writer.flush(10)
    await writer.close()
    assert writer.stats.dead_lettered_rows == 1
    assert (
        await _count(
            pg_migrated_dsn, "SELECT count(*) FROM kernel_events WHERE process='test-dead'"
        )
        == 8
    )
    dead = claim_spills(tmp_path / "dead-letter")
    assert [len(rows) for c in dead for _, rows in c.batches()] == [1]
    for c in dead:
        c.release()


def test_durable_writer_unknown_table_or_bad_row_shape_raises_at_submit(tmp_path: Path) -> None:
    writer = _writer("postgresql://unused@127.0.0.1:1/x", tmp_path)
    with pytest.raises(UnknownTableError, match="no_such_table"):
        writer.submit("no_such_table", [(1,)])
    with pytest.raises(RowShapeError, match="3 values, expected 13"):
        writer.submit("market_data", [(1, 2, 3)])
    with pytest.raises(RowShapeError, match="unknown columns"):
        writer.submit("kernel_events", [{"event_id": uuid.uuid4(), "colour": "red"}])


async def test_durable_writer_database_stopped_midrun_every_row_arrives_after_restart(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    server, dsn = private_pg
    writer = _writer(dsn, tmp_path, max_queued_rows=1_000, batch_rows=500)
    await writer.start()
    writer.submit("market_data", _bars("DOWNUSDT", 2_000))
    assert await writer.flush(10)
    server.stop()
    try:
        # Beyond the memory bound: these must go to a spill file, fsync'ed.
        for k in range(6):
            writer.submit(
                "market_data", _bars("DOWNUSDT", 1_000, start=T0 + 60_000 * (2_000 + 1_000 * k))
            )
            await asyncio.sleep(0.1)
        assert not await writer.flush(0.5)
        assert writer.stats.spilled_rows > 0 and not writer.stats.database_up
        assert list(tmp_path.glob("*.spill"))
    finally:
        server.start()
    assert await writer.flush(30)
    await writer.close()
    assert writer.stats.database_up and writer.stats.replayed_rows > 0
    assert await _count(dsn, "SELECT count(*) FROM market_data WHERE symbol='DOWNUSDT'") == 8_000
    assert not list(tmp_path.glob("*.spill"))


async def test_durable_writer_spill_left_by_closed_writer_is_replayed_by_next_writer(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    server, dsn = private_pg
    server.stop()
    try:
        first = _writer(dsn, tmp_path)
        await first.start()
        events = EventLog(first)
        for i in range(50):
            events.record(
                "spill-test", "restart", "crash", pid=1000 + i, exit_code=-9, detail={"n": i}
            )
        await first.close(timeout_s=0.5)  # database down: everything goes to disk
        assert first.stats.spilled_rows == 50
    finally:
        server.start()
    second = _writer(dsn, tmp_path)
    await second.start()
    assert await second.flush(30)
    assert second.stats.replayed_rows == 50
    history = await recent_events(second.database, process="spill-test", limit=100)
    await second.close()
    assert len(history) == 50 and history[0].detail["n"] in range(50)
    assert {e.exit_code for e in history} == {-9}
    assert not list(tmp_path.glob("*.spill"))


async def test_durable_writer_spill_impossible_keeps_rows_in_memory_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    missing_db = f"postgresql://postgres@{quote(str(tmp_path), safe='')}:5432/none"
    writer = _writer(missing_db, blocker / "spill", max_queued_rows=10)
    await writer.start()
    with caplog.at_level(logging.ERROR, logger="aegis.store.durable"):
        for k in range(5):
            writer.submit("market_data", _bars("NODISKUSDT", 10, start=T0 + 600_000 * k))
    assert writer.stats.queued_rows == 50 and writer.stats.spilled_rows == 0
    assert caplog.text.count("cannot spill") == 1
    await writer.close(timeout_s=0.2)


def test_event_log_empty_process_event_or_reason_is_refused(tmp_path: Path) -> None:
    events = EventLog(_writer("postgresql://unused@127.0.0.1:1/x", tmp_path))
    for args in (("", "start", "boot"), ("feed", "", "boot"), ("feed", "start", "")):
        with pytest.raises(ValueError, match="must be non-empty"):
            events.record(*args)


def test_spill_file_torn_last_frame_is_skipped_and_earlier_frames_kept(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "torn")
    spill.append("kernel_events", [(1, Decimal("1.5"), b"\x00bytes", float("nan"))])
    spill.append("kernel_events", [(2,)])
    spill.close()
    with open(spill.path, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a crash in the middle of a third frame
    (claim,) = claim_spills(tmp_path)
    batches = list(claim.batches())
    claim.release()
    assert [rows[0][0] for _, rows in batches] == [1, 2]
    row = batches[0][1][0]
    assert row[1] == Decimal("1.5") and row[2] == b"\x00bytes" and np.isnan(row[3])
    assert claim.torn_frames == 1


def test_spill_file_held_by_a_live_writer_is_not_claimed(tmp_path: Path) -> None:
    live = SpillFile(tmp_path, "live")
    live.append("kernel_events", [(1,)])
    assert claim_spills(tmp_path) == []
    live.close()
    (claim,) = claim_spills(tmp_path)
    claim.delete()
    assert not live.path.exists()


async def test_market_data_writer_mixed_input_writes_good_rows_and_counts_rejects(
    pg_migrated_dsn: str, tmp_path: Path
) -> None:
    writer = _writer(pg_migrated_dsn, tmp_path)
    await writer.start()
    md = MarketDataWriter(writer)
    rows = [
        (T0, 100.0, 101.0, 99.0, 100.5, 5.0),
        (T0 + 60_000, "oops", 101.0, 99.0, 100.5, 5.0),
        (T0 + 120_000, 100.0, 98.0, 99.0, 100.5, 5.0),
        (T0 + 180_000, float("nan"), 101.0, 99.0, 100.5, 5.0),
        (T0 + 240_000, 100.0, 101.0, 99.0, 100.5, 5.0, 502.5, 12, 2.0, 201.0),
        (T0 + 240_000, 100.0, 101.0, 99.0, 100.5, 5.0),
    ]
    result = md.write_rows("MIXUSDT", "1m", rows)
    bad_tf = md.write_rows("MIXUSDT", "2m", rows[:1])
    assert await writer.flush(10)
    await writer.close()
    assert result.accepted == 2
    assert result.counts() == {
        RejectReason.NOT_A_NUMBER: 1, RejectReason.HIGH_BELOW_LOW: 1,
        RejectReason.NON_FINITE_PRICE: 1, RejectReason.DUPLICATE_BAR: 1,
    }  # fmt: skip
    assert bad_tf.accepted == 0 and bad_tf.rejections[0].reason is RejectReason.UNKNOWN_TIMEFRAME
    assert md.rejected[RejectReason.UNKNOWN_TIMEFRAME] == 1
    conn = await asyncpg.connect(pg_migrated_dsn)
    try:
        stored = await conn.fetch(
            "SELECT open_time_ms, quote_volume, trade_count FROM market_data "
            "WHERE symbol='MIXUSDT' ORDER BY open_time_ms"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in stored] == [(T0, None, None), (T0 + 240_000, 502.5, 12)]


async def test_market_data_writer_real_binance_month_with_gaps_stored_exactly(
    pg_migrated_dsn: str, tmp_path: Path, data_dir: Path
) -> None:
    path = data_dir / "klines" / "binance_spot_XRPUSDT_1m_20230401_20230501.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1)
    bars = np.zeros(len(table), dtype=BAR_DTYPE)
    bars["open_time_ms"] = table[:, 0].astype(np.int64)
    for j, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        bars[name] = table[:, j]
    for name in ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
        bars[name] = np.nan
    bars["trades"] = -1
    writer = _writer(pg_migrated_dsn, tmp_path)
    await writer.start()
    result = MarketDataWriter(writer).write(BarBatch("XRPUSDT", "1m", bars))
    assert await writer.flush(60)
    await writer.close()
    assert result.rejected == 0 and result.accepted == len(bars)
    stored = await _count(
        pg_migrated_dsn, "SELECT count(*) FROM market_data WHERE symbol='XRPUSDT'"
    )
    assert stored == len(bars)  # gaps stay gaps: nothing filled, nothing dropped


async def test_durable_writer_with_linger_writes_a_burst_after_it_ends_and_loses_none(
    pg_migrated_dsn: str, tmp_path: Path
) -> None:
    writer = _writer(pg_migrated_dsn, tmp_path, linger_s=0.5)
    await writer.start()
    sql = "SELECT count(*) FROM market_data WHERE symbol='LINGERUSDT'"
    for k in range(3):  # one burst: three submits 20 ms apart
        writer.submit("market_data", _bars("LINGERUSDT", 100, T0 + k * 6_000_000))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert await _count(pg_migrated_dsn, sql) == 0  # still lingering (no linger: written by now)
    assert await writer.flush(10)
    assert await _count(pg_migrated_dsn, sql) == 300
    await writer.close()
