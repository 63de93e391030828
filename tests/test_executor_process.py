"""The real paper executor process: SIGKILL at each step of an order's life, and SIGTERM drain.

Each test runs ``tests/executor_worker.py`` (``ExecutorProcess`` under the kernel runtime) as a
subprocess over real shared-memory rings and a fresh, migrated PostgreSQL database.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
from executor_support import (
    BTC,
    BTC_FIRST,
    Worker,
    bars,
    consumed,
    directory,
    empty_executor_tables,
    executor_rings,
    intent_record,
    rows,
    until,
)

from aegis.paper.exchange import PaperConfig, PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.records import REPORT_TRADE_CLOSED


@pytest.fixture
def rings():
    with executor_rings() as made:
        yield made


@pytest.fixture
async def dsn(module_dsn):
    await empty_executor_tables(module_dsn)
    return module_dsn


def reference_trade(data: np.ndarray, rec: np.ndarray):
    book = PaperExchange(PaperConfig(max_hold_minutes=10), directory().filters, 10_000.0)
    book.submit(PaperIntent.from_record(rec[0]))
    events = [e for b in data.tolist() for e in book.on_bar(BTC, b[0], *b[4:8])]
    return events[-1].trade


SQL_AT_CRASH = (
    "SELECT (SELECT string_agg(status, ',') FROM orders),"
    " (SELECT string_agg(status, ',') FROM virtual_positions),"
    " (SELECT count(*) FROM virtual_trades)"
)
CRASH_POINTS = [
    # (checkpoint, counter, value, rows at the crash, brain re-sends the intent after it).
    # In paper mode these are the brief's "before send / after send before ack / after fill
    # before write". A re-sent intent would hide a lost one, so the points that could lose
    # the intent get it once and the others get it twice.
    pytest.param("intents_read", "intents", 1, (None, None, 0), False,
                 id="after-intent-read-before-order-row"),
    pytest.param("intents_written", "intents", 1, ("NEW", None, 0), True,
                 id="after-order-row-before-ring-commit"),
    pytest.param("bars_written", "positions_opened", 1, ("FILLED", "open", 0), True,
                 id="after-position-before-trade"),
    pytest.param("bars_read", "trades_closed", 1, ("FILLED", "open", 0), False,
                 id="after-exit-before-trade-row"),
]  # fmt: skip


@pytest.mark.parametrize(("crash_at", "counter", "value", "at_crash", "resend"), CRASH_POINTS)
async def test_executor_process_sigkill_then_restart_keeps_one_order_one_position_one_trade(
    dsn, rings, tmp_path, crash_at, counter, value, at_crash, resend
):
    rec = intent_record(81)
    data = bars(BTC, BTC_FIRST, 16)
    intents = rings["intents"].producer()
    intents.publish_batch(rec)
    rings["market"].producer().publish_batch(data)

    crashed = Worker(dsn, tmp_path, rings, crash_at=crash_at, crash_when=counter, crash_min=value)
    assert crashed.wait() == -signal.SIGKILL, crashed.output()
    assert not consumed(rings)
    assert tuple((await rows(dsn, SQL_AT_CRASH))[0]) == at_crash
    if resend:
        intents.publish_batch(rec)

    restarted = Worker(dsn, tmp_path, rings)

    async def finished() -> bool:
        return consumed(rings) and bool(await rows(dsn, "SELECT 1 FROM virtual_trades"))

    await until(finished)
    assert restarted.stop() == 0, restarted.output()

    orders = await rows(dsn, "SELECT client_order_id, status FROM orders ORDER BY 1")
    assert [tuple(o) for o in orders] == [("aegis-81", "FILLED"), ("aegis-81-x1", "FILLED")]
    positions = await rows(dsn, "SELECT position_id, status FROM virtual_positions")
    assert [tuple(p) for p in positions] == [(81, "closed")]
    trades = await rows(dsn, "SELECT pnl, exit_at_ms, exit_reason FROM virtual_trades")
    expected = reference_trade(data, rec)
    assert len(trades) == 1 and trades[0]["exit_at_ms"] == expected.exit_at_ms
    assert float(trades[0]["pnl"]) == pytest.approx(expected.pnl, abs=1e-9)
    reports = rings["reports"].consumer(0)
    got = reports.poll().copy()
    reports.close()
    assert list(got["kind"]) == [REPORT_TRADE_CLOSED] and list(got["intent_id"]) == [81]


async def test_executor_process_sigterm_drains_waiting_intents_and_exits_zero(dsn, rings, tmp_path):
    worker = Worker(dsn, tmp_path, rings)
    intents = rings["intents"].producer()
    intents.publish_batch(intent_record(91))

    async def first_written() -> bool:
        return bool(await rows(dsn, "SELECT 1 FROM orders"))

    await until(first_written)
    batch = np.concatenate([intent_record(i, decision_time_ms=BTC_FIRST + i * 300_000)
                            for i in range(92, 100)])  # fmt: skip
    intents.publish_batch(batch)
    assert worker.stop() == 0, worker.output()
    ids = [int(r["intent_id"]) for r in await rows(dsn, "SELECT intent_id FROM orders ORDER BY 1")]
    assert ids == list(range(91, 100))
    assert consumed(rings)
