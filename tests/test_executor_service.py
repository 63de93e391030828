"""ExecutorService over real PostgreSQL and a real reports ring: intents and bars in, rows out."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest
from aiohttp import web
from executor_support import (
    BTC,
    BTC_FIRST,
    ETH,
    MIN,
    bars,
    directory,
    empty_executor_tables,
    intent_record,
    rows,
    settings,
    unique,
)

from aegis.notify.notifier import Notifier
from aegis.paper.exchange import PaperConfig, PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.processes.executor_service import ExecutorService, PersistAborted
from aegis.records import REPORT_DTYPE, REPORT_INTENT_REJECTED, REPORT_TRADE_CLOSED
from aegis.ringbuffer import Ring
from aegis.store.database import Database
from aegis.store.executor_rows import LedgerRecordError
from aegis.store.executor_tables import ExecutorTables


@pytest.fixture
async def dsn(module_dsn):
    await empty_executor_tables(module_dsn)
    return module_dsn


@pytest.fixture
def reports():
    ring = Ring.create(unique("aegis-test-reports"), REPORT_DTYPE, 64, 1)
    yield ring
    ring.close()


@pytest.fixture
async def database(dsn):
    db = Database(dsn)
    db.ledgers = []
    yield db
    for ledger in db.ledgers:
        await ledger.close()
    await db.close()


async def service_for(database, tmp_path, reports=None, notifier=None, **changes):
    s = settings(database.dsn, tmp_path, **changes)
    ledger = ExecutorTables(database)
    database.ledgers.append(ledger)
    return await ExecutorService.restore(
        ledger, directory(), s,
        reports=reports.producer() if reports is not None else None, notifier=notifier,
    )  # fmt: skip


def read_reports(ring) -> np.ndarray:
    consumer = ring.consumer(0)
    try:
        got = consumer.poll().copy()
        consumer.commit()
        return got
    finally:
        consumer.close()


async def test_executor_intent_then_bars_writes_order_position_trade_and_account_rows(
    database, tmp_path, reports
):
    svc = await service_for(database, tmp_path, reports)
    await svc.handle_intents(intent_record(11))
    order = (await rows(database.dsn, "SELECT * FROM orders"))[0]
    assert (order["client_order_id"], order["status"], order["side"]) == ("aegis-11", "NEW", "BUY")
    assert order["detail"]["decision_time_ms"] == BTC_FIRST - 5 * MIN
    await svc.handle_bars(bars(BTC, BTC_FIRST, 2))
    position = (await rows(database.dsn, "SELECT * FROM virtual_positions"))[0]
    assert position["status"] == "open" and position["symbol"] == "BTCUSDT"
    assert position["state"]["last_bar_ms"] == BTC_FIRST + MIN
    await svc.handle_bars(bars(BTC, BTC_FIRST + 2 * MIN, 20))

    trades = await rows(database.dsn, "SELECT * FROM virtual_trades")
    assert len(trades) == 1
    trade = trades[0]
    assert trade["trade_id"] == 11 and trade["exit_reason"] == "time_exit"
    assert trade["confidence"] == pytest.approx(0.7) and trade["model_version"] == 3
    assert trade["position_size_pct"] == pytest.approx(5.0, rel=0.01)
    assert trade["stop_pct"] == 1.0 and trade["take_pct"] == 2.0
    assert trade["features"] == pytest.approx([i / 10 for i in range(12)])
    assert trade["reward_score"] == pytest.approx(trade["net_return_pct"])
    assert trade["commission_asset"] == "USDT" and trade["timeframe"] == "5m"
    statuses = {r["client_order_id"]: r["status"] for r in await rows(database.dsn,
                "SELECT client_order_id, status FROM orders")}  # fmt: skip
    assert statuses == {"aegis-11": "FILLED", "aegis-11-x1": "FILLED"}
    closed = (await rows(database.dsn, "SELECT status, exit_reason FROM virtual_positions"))[0]
    assert tuple(closed) == ("closed", "time_exit")
    accounts = await rows(database.dsn, "SELECT * FROM account_state ORDER BY ts_ms")
    assert accounts and accounts[-1]["account"] == "paper"
    assert float(accounts[-1]["equity"]) == pytest.approx(10_000 + float(trade["pnl"]), abs=1e-6)
    assert accounts[-1]["open_positions"] == 0
    got = read_reports(reports)
    assert list(got["kind"]) == [REPORT_TRADE_CLOSED]
    assert got["net_return_pct"][0] == pytest.approx(trade["net_return_pct"])


async def test_executor_same_intent_delivered_twice_opens_one_position(database, tmp_path):
    svc = await service_for(database, tmp_path)
    twice = np.concatenate([intent_record(21), intent_record(21)])
    await svc.handle_intents(twice)
    await svc.handle_intents(intent_record(21))
    await svc.handle_bars(bars(BTC, BTC_FIRST, 3))
    # A restarted executor sees the same intent again (at-least-once ring): still one.
    again = await service_for(database, tmp_path)
    await again.handle_intents(intent_record(21))
    await again.handle_bars(bars(BTC, BTC_FIRST, 3))
    assert len(await rows(database.dsn, "SELECT * FROM orders")) == 1
    assert len(await rows(database.dsn, "SELECT * FROM virtual_positions")) == 1
    assert svc.counters["intents_duplicate"] == 2 and again.counters["intents_duplicate"] == 1
    assert len(again.exchange.open_positions()) == 1
    # Still a duplicate after its trade closed and another restart.
    await again.handle_bars(bars(BTC, BTC_FIRST + 3 * MIN, 15))
    third = await service_for(database, tmp_path)
    await third.handle_intents(intent_record(21))
    await third.handle_bars(bars(BTC, BTC_FIRST + 18 * MIN, 10))
    assert third.counters["intents_duplicate"] == 1 and not third.exchange.open_positions()
    assert len(await rows(database.dsn, "SELECT * FROM virtual_trades")) == 1
    assert len(await rows(database.dsn, "SELECT * FROM orders")) == 2  # entry + its exit


async def test_executor_risk_guard_rejection_is_recorded_counted_and_reported(
    database, tmp_path, reports
):
    svc = await service_for(database, tmp_path, reports, max_open_positions=1)
    await svc.handle_intents(np.concatenate([intent_record(31), intent_record(32, ETH)]))
    rejected = await rows(database.dsn, "SELECT * FROM orders WHERE intent_id = 32")
    assert rejected[0]["status"] == "REJECTED"
    assert rejected[0]["reject_reason"] == "risk:max_open_positions"
    assert svc.rejections["risk:max_open_positions"] == 1
    got = read_reports(reports)
    assert list(got["intent_id"]) == [32] and list(got["kind"]) == [REPORT_INTENT_REJECTED]


async def test_executor_invalid_intent_record_is_refused_with_the_field_named(database, tmp_path):
    svc = await service_for(database, tmp_path)
    bad = intent_record(41, notional=float("nan"))
    await svc.handle_intents(bad)
    row = (await rows(database.dsn, "SELECT * FROM orders"))[0]
    assert row["status"] == "REJECTED" and row["reject_reason"].startswith("invalid:notional")
    assert svc.rejections["invalid_intent"] == 1 and not svc.exchange.pending_intents()


async def test_executor_restart_resumes_open_position_and_ends_with_the_same_trade(
    database, tmp_path
):
    data = bars(BTC, BTC_FIRST, 20)
    first = await service_for(database, tmp_path)
    await first.handle_intents(intent_record(51, stop_pct=5.0, take_pct=5.0))
    await first.handle_bars(data[:4])
    restarted = await service_for(database, tmp_path)
    assert restarted.exchange.open_positions() == first.exchange.open_positions()
    assert restarted.exchange.cash == pytest.approx(first.exchange.cash)
    await restarted.handle_bars(data[:6])  # the first four are replays
    await restarted.handle_bars(data[6:])
    stored = (await rows(database.dsn, "SELECT pnl, exit_at_ms FROM virtual_trades"))[0]

    reference = PaperExchange(PaperConfig(max_hold_minutes=10), directory().filters, 10_000.0)
    rec = intent_record(51, stop_pct=5.0, take_pct=5.0)[0]
    reference.submit(PaperIntent.from_record(rec))
    events = [e for b in data.tolist() for e in reference.on_bar(BTC, b[0], *b[4:8])]
    trade = events[-1].trade
    assert stored["exit_at_ms"] == trade.exit_at_ms
    assert float(stored["pnl"]) == pytest.approx(trade.pnl, abs=1e-9)


async def test_executor_kill_switch_flattens_blocks_entries_and_notifies(database, tmp_path):
    received: list[dict] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    notifier = Notifier.from_settings(
        settings(database.dsn, tmp_path, discord_webhook_url=f"http://127.0.0.1:{port}/hook")
    )
    await notifier.start()
    try:
        svc = await service_for(database, tmp_path, notifier=notifier, max_drawdown_pct=0.01,
                                max_daily_loss_pct=0.0)  # fmt: skip
        await svc.handle_intents(intent_record(61, notional=2_000.0, stop_pct=5.0, take_pct=5.0))
        # An ETH entry still waiting for its bar when the switch trips: cancelled, not filled.
        await svc.handle_intents(intent_record(63, ETH, decision_time_ms=BTC_FIRST + 600 * MIN))
        data = bars(BTC, BTC_FIRST, 30)
        for i in range(len(data)):
            await svc.handle_bars(data[i : i + 1])
            if svc.guards.kill_switch.tripped:
                break
        assert svc.guards.kill_switch.tripped and svc.counters["kill_switch_trips"] == 1
        trade = (await rows(database.dsn, "SELECT exit_reason FROM virtual_trades"))[0]
        assert trade["exit_reason"] == "forced"
        cancelled = await rows(database.dsn, "SELECT status FROM orders WHERE intent_id = 63")
        assert cancelled[0]["status"] == "CANCELED" and not svc.exchange.pending_intents()
        await svc.handle_intents(intent_record(62))
        refused = await rows(database.dsn, "SELECT reject_reason FROM orders WHERE intent_id=62")
        assert refused[0]["reject_reason"] == "risk:kill_switch"
        for _ in range(100):
            if any("KILL SWITCH" in m["content"] for m in received):
                break
            await asyncio.sleep(0.02)
        texts = [m["content"] for m in received]
        assert any("OPEN BTCUSDT" in t for t in texts)
        assert any("KILL SWITCH (max_drawdown)" in t for t in texts)
    finally:
        await notifier.stop()
        await runner.cleanup()


async def test_executor_bad_bar_is_counted_and_the_batch_still_commits(database, tmp_path):
    svc = await service_for(database, tmp_path)
    await svc.handle_intents(intent_record(71))
    data = bars(BTC, BTC_FIRST, 3)
    data["high"][1] = data["low"][1] / 2  # high below low: not a bar
    await svc.handle_bars(data)
    assert svc.counters["bars_invalid"] == 1 and svc.counters["bars"] == 2
    assert len(await rows(database.dsn, "SELECT * FROM virtual_positions")) == 1


async def test_executor_unknown_symbol_intent_is_rejected_by_the_exchange(database, tmp_path):
    svc = await service_for(database, tmp_path)
    await svc.handle_intents(intent_record(81, symbol_id=999))
    row = (await rows(database.dsn, "SELECT symbol, status, reject_reason FROM orders"))[0]
    assert tuple(row) == ("#999", "REJECTED", "unknown_symbol")


async def test_executor_corrupt_persisted_position_stops_the_restore_naming_the_row(
    database, tmp_path
):
    svc = await service_for(database, tmp_path)
    await svc.handle_intents(intent_record(91))
    await svc.handle_bars(bars(BTC, BTC_FIRST, 2))
    conn = await asyncpg.connect(database.dsn)
    await conn.execute("UPDATE virtual_positions SET state = state - 'quantity'")
    await conn.close()
    with pytest.raises(LedgerRecordError, match=r"virtual_positions 91: .*'quantity'"):
        await service_for(database, tmp_path)


async def test_executor_database_down_holds_the_batch_then_aborts_on_stop(dsn, tmp_path):
    down = Database("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=0.2)
    up = Database(dsn)
    restored = await ExecutorService.restore(ExecutorTables(up), directory(),
                                             settings(dsn, tmp_path))  # fmt: skip
    stops = iter([False, False, True])
    svc = ExecutorService(
        restored.venue, restored.guards, ExecutorTables(down), directory(),
        should_stop=lambda: next(stops), retry_delays=(0.001, 0.001),
    )  # fmt: skip
    with pytest.raises(PersistAborted):
        await svc.handle_intents(intent_record(101))
    assert svc.counters["write_retries"] == 3
    assert await rows(dsn, "SELECT * FROM orders") == []
    await up.close()
    await down.close()


async def test_executor_restart_keeps_the_entry_cooldown_of_a_symbol(database, tmp_path):
    first = await service_for(database, tmp_path, min_entry_interval_s=600.0)
    await first.handle_intents(intent_record(111))
    restarted = await service_for(database, tmp_path, min_entry_interval_s=600.0)
    later = intent_record(112, decision_time_ms=BTC_FIRST - 5 * MIN + 5 * MIN)
    await restarted.handle_intents(later)
    row = (await rows(database.dsn, "SELECT reject_reason FROM orders WHERE intent_id = 112"))[0]
    assert row["reject_reason"] == "risk:entry_cooldown"


async def test_executor_full_reports_ring_drops_and_counts_without_blocking(database, tmp_path):
    ring = Ring.create(unique("aegis-test-reports-small"), REPORT_DTYPE, 2, 1)
    try:
        svc = await service_for(database, tmp_path, ring, max_open_positions=0)
        await svc.handle_intents(np.concatenate([intent_record(i) for i in (121, 122, 123)]))
        assert svc.counters["reports_published"] == 2 and svc.counters["reports_dropped"] == 1
        assert len(await rows(database.dsn, "SELECT * FROM orders")) == 3
    finally:
        ring.close()
