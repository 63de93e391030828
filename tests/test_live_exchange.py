"""LiveExchange against the Binance simulator over real sockets (memory and PostgreSQL journals)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import pytest
from live_support import BTC, intent, live_exchange, posts_for, rest_client, sim_orders
from sim_support import call, quick_config

from aegis.binance.journal import (
    ROLE_ENTRY,
    STATUS_SUBMITTING,
    JournalOrder,
    MemoryOrderJournal,
)
from aegis.binance.live import LiveConfig, LiveExchange
from aegis.binance.live_book import (
    CLIENT_ID_PATTERN,
    entry_client_id,
    exit_client_id,
    intent_detail,
)
from aegis.binance.sim.server import BinanceSimulator
from aegis.paper.events import IntentRejected, PositionOpened, TradeClosed


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config()) as s:
        yield s


def btc_held(sim) -> Decimal:
    bal = sim.account().balance("BTC")
    return bal.free + bal.locked


def test_client_ids_are_deterministic_valid_and_distinct_per_exit_attempt():
    biggest = 2**64 - 1
    ids = [entry_client_id(biggest), exit_client_id(biggest, 1), exit_client_id(biggest, 2)]
    assert all(CLIENT_ID_PATTERN.match(i) for i in ids) and len(set(ids)) == 3
    assert entry_client_id(42) == "aegis-42" == entry_client_id(42)
    with pytest.raises(ValueError):
        entry_client_id(0)


async def test_submit_writes_the_intent_before_sending_and_opens_the_filled_position(sim, tmp_path):
    on_exchange_at_write = []

    def checkpoint(name: str) -> None:
        if name == "intent_written":
            on_exchange_at_write.append(len(sim_orders(sim, "aegis-101")))

    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal, checkpoint=checkpoint) as ex:
        outcome = await ex.submit(intent(101))
        events = ex.drain_events()
    assert outcome.status == "filled" and on_exchange_at_write == [0]
    assert [m for m, cid in journal.calls if cid == "aegis-101"] == [
        "intent_written", "order_acked",
    ]  # fmt: skip
    assert [f.quantity for f in journal.fills.values()] == [Decimal("0.00365")]
    (opened,) = events
    assert isinstance(opened, PositionOpened)
    pos = opened.position
    assert pos.quantity == btc_held(sim)  # the fee in BTC is not ours to sell
    assert journal.orders["aegis-101"].status == "FILLED"
    assert len(posts_for(sim, "aegis-101")) == 1


async def test_submit_same_intent_twice_sends_one_order(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        first = await ex.submit(intent(102))
        second = await ex.submit(intent(102))
    assert (first.status, second.status) == ("filled", "duplicate")
    assert len(posts_for(sim, "aegis-102")) == 1


async def test_submit_order_refused_by_filters_or_cash_sends_nothing(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        tiny = await ex.submit(intent(103, notional=1.0))
        huge = await ex.submit(intent(104, notional=50_000.0))
        unknown = await ex.submit(intent(105).__class__(105, 9, 0, 100.0, 1.0, 2.0))
        events = ex.drain_events()
    assert tiny.reason == "filter:NOTIONAL" and huge.reason == "insufficient_cash"
    assert unknown.reason == "unknown_symbol"
    assert [type(e) for e in events] == [IntentRejected] * 3
    assert sim.request_log.entries("/api/v3/order") == []


async def test_submit_answered_5xx_after_placing_is_found_by_client_id_not_resent(sim, tmp_path):
    sim.faults.fail_orders_after_placing(1)
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        outcome = await ex.submit(intent(106))
        (pos,) = ex.open_positions()
    assert outcome.status == "filled"
    assert sim.faults.injected["order_5xx"] == 1
    assert len(posts_for(sim, "aegis-106")) == 1 and len(sim_orders(sim, "aegis-106")) == 1
    assert pos.quantity == btc_held(sim)


async def test_on_bar_take_profit_sells_the_position_and_closes_the_trade(sim, tmp_path):
    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
        await ex.submit(intent(107))
        (pos,) = ex.open_positions()
        p = pos.entry_price
        quiet = await ex.on_bar(BTC, pos.entry_at_ms, p, p * 1.001, p * 0.999, p)
        events = await ex.on_bar(BTC, pos.entry_at_ms + 60_000, p, p * 1.03, p * 0.999, p * 1.02)
    assert [type(e) for e in quiet] == [PositionOpened]
    (closed,) = events
    trade = closed.trade
    assert isinstance(closed, TradeClosed) and trade.exit_reason == "take_profit"
    assert trade.close_price == pytest.approx(p * 1.02) and trade.bars_held == 2
    assert len(posts_for(sim, exit_client_id(107, 1))) == 1
    assert btc_held(sim) < Decimal("0.00001")  # only dust below one lot step is left
    assert 107 in journal.closed and ex.open_positions() == ()
    # The sale happened at the simulator's price, so the trade reports that real fill.
    assert trade.close_fill_price == pytest.approx(p) and trade.net_return_pct < 0


async def test_flatten_sells_everything_and_replayed_bars_change_nothing(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        await ex.submit(intent(108))
        await ex.submit(intent(109))
        (a, _) = ex.open_positions()
        p = a.entry_price
        await ex.on_bar(BTC, a.entry_at_ms, p, p, p, p)
        assert await ex.on_bar(BTC, a.entry_at_ms, p, p * 1.5, p, p) == []  # replay: ignored
        events = await ex.flatten(a.entry_at_ms + 60_000)
    assert sorted(e.trade.intent_id for e in events) == [108, 109]
    assert {e.trade.exit_reason for e in events} == {"forced"}


async def test_start_marks_a_journaled_order_the_exchange_never_got_as_not_sent(sim, tmp_path):
    journal = MemoryOrderJournal()
    old = JournalOrder("aegis-110", 110, ROLE_ENTRY, "BTCUSDT", "BUY", "MARKET",
                       Decimal("0.001"), 1_000, intent_detail(intent(110)))  # fmt: skip
    await journal.intent_written(old)
    async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
        report = ex.last_report
        events = ex.drain_events()
        again = await ex.submit(intent(110))
    assert report.not_sent == 1 and journal.orders["aegis-110"].status == "REJECTED"
    assert events == [IntentRejected(110, BTC, events[0].time_ms, "not_sent")]
    assert again.status == "duplicate" and posts_for(sim, "aegis-110") == []


async def test_reconcile_closes_a_position_whose_coins_left_the_account(sim, tmp_path):
    # Without crash guards: a resting guard locks the coins the hand sale below takes.
    config = LiveConfig(unknown_grace_s=0.2, crash_guard=None)
    async with live_exchange(sim.rest_url, tmp_path, config=config) as ex:
        await ex.submit(intent(111))
        await ex.submit(intent(112))
        held = btc_held(sim)
        # Someone sells most of the BTC by hand, outside AEGIS.
        async with aiohttp.ClientSession() as http:
            params = {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                      "quantity": "0.00300"}  # fmt: skip
            status, body, _ = await call(http, sim, "POST", "/api/v3/order", params, signed=True)
            assert status == 200, body
        ex.drain_events()
        report = await ex.reconcile("test")
        events = ex.drain_events()
        (left,) = ex.open_positions()
    assert held > Decimal("0.007") and report.closed_reconciled == 1
    (closed,) = events
    assert closed.trade.exit_reason == "reconciled" and closed.trade.intent_id == 112
    assert left.intent_id == 111 and left.quantity <= btc_held(sim)


async def test_user_data_stream_keeps_cash_current_without_polling(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        stream = ex.user_data_stream(sim.ws_api_url, *_keys())
        stream.start()
        try:
            await stream.wait_connected(5)
            accounts_before = len(sim.request_log.entries("/api/v3/account"))
            cash_before = ex.cash()
            await ex.submit(intent(113))
            for _ in range(100):
                if ex.cash() < cash_before:
                    break
                await asyncio.sleep(0.02)
            assert ex.cash() == pytest.approx(float(sim.account().balance("USDT").free))
            assert len(sim.request_log.entries("/api/v3/account")) == accounts_before
        finally:
            await stream.stop()


def _keys():
    from sim_support import KEY, SECRET

    return KEY, SECRET


async def test_pg_journal_survives_a_restart_of_the_exchange(sim, tmp_path, pg_dsn):
    from aegis.binance.journal_pg import PgOrderJournal
    from aegis.schema.migrator import migrate

    await migrate(pg_dsn)
    journal = await PgOrderJournal.connect(pg_dsn)
    try:
        await journal._pool.execute("DELETE FROM orders WHERE mode = 'live'")
        await journal._pool.execute("DELETE FROM trades WHERE mode = 'live'")
        async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
            await ex.submit(intent(2**63 + 5))
            (before,) = ex.open_positions()
            p = before.entry_price
            await ex.on_bar(BTC, before.entry_at_ms, p, p * 1.004, p * 0.999, p)
            (marked,) = ex.open_positions()
        async with live_exchange(sim.rest_url, tmp_path / "2", journal) as again:
            (rebuilt,) = again.open_positions()
            duplicate = await again.submit(intent(2**63 + 5))
            assert again.last_report.drift == ()
        assert rebuilt == marked and duplicate.status == "duplicate"
        state = await journal.load_unfinished()
        assert {(o.role, o.status) for o in state.orders} == {("entry", "FILLED"), ("guard", "NEW")}
        assert [f.quantity for f in state.fills] == [Decimal("0.00365")]
        assert not await journal.intent_written(state.orders[0])
        await journal.position_closed(2**63 + 5, "forced", 1)
        assert (await journal.load_unfinished()).orders == ()
    finally:
        await journal.close()


async def test_pg_journal_submitting_order_round_trips(pg_dsn):
    from aegis.binance.journal_pg import PgOrderJournal
    from aegis.schema.migrator import migrate

    await migrate(pg_dsn)
    journal = await PgOrderJournal.connect(pg_dsn)
    try:
        order = JournalOrder("aegis-777001", 777001, ROLE_ENTRY, "BTCUSDT", "BUY", "MARKET",
                             Decimal("0.001"), 123, intent_detail(intent(777001)))  # fmt: skip
        assert await journal.intent_written(order)
        (loaded,) = [o for o in (await journal.load_unfinished()).orders
                     if o.client_order_id == "aegis-777001"]  # fmt: skip
        assert loaded.status == STATUS_SUBMITTING and loaded.detail == order.detail
        await journal.order_rejected("aegis-777001", "not_sent", 456)
        assert "aegis-777001" not in {
            o.client_order_id for o in (await journal.load_unfinished()).orders
        }
    finally:
        await journal.close()


async def test_exchange_without_start_has_no_cash_and_refuses_entries(sim, tmp_path):
    async with rest_client(sim.rest_url, tmp_path) as rest:
        from live_support import btc_market

        ex = LiveExchange(rest, MemoryOrderJournal(), {BTC: await btc_market(rest)}, LiveConfig())
        outcome = await ex.submit(intent(114))
    assert outcome.reason == "insufficient_cash" and posts_for(sim, "aegis-114") == []


async def test_reconcile_leaves_a_young_unknown_order_alone_and_sends_nothing(sim, tmp_path):
    journal = MemoryOrderJournal()
    young = JournalOrder(
        "aegis-115",
        115,
        ROLE_ENTRY,
        "BTCUSDT",
        "BUY",
        "MARKET",
        Decimal("0.001"),
        int(time.time() * 1000),
        intent_detail(intent(115)),
    )
    await journal.intent_written(young)  # fmt: skip
    async with rest_client(sim.rest_url, tmp_path) as rest:
        from live_support import btc_market

        config = LiveConfig(unknown_grace_s=30.0)
        ex = LiveExchange(rest, journal, {BTC: await btc_market(rest)}, config)
        await ex.ledger.rebuild(await journal.load_unfinished())
        report = await ex.reconcile("test")
        outcome = await ex.submit(intent(115))
    assert report.still_unknown == 1 and journal.orders["aegis-115"].status == STATUS_SUBMITTING
    assert outcome.status == "duplicate" and posts_for(sim, "aegis-115") == []
    assert ex.open_count() == 1 and ex.snapshot(0).pending_intents == 1


async def test_user_stream_reconnect_triggers_a_reconciliation(sim, tmp_path):
    from sim_support import KEY, SECRET

    async with live_exchange(sim.rest_url, tmp_path) as ex:
        stream = ex.user_data_stream(
            sim.ws_api_url, KEY, SECRET, backoff_base_s=0.05, backoff_cap_s=0.1
        )
        stream.start()
        task = asyncio.create_task(ex.run_reconciler(stream.reconcile_due))
        try:
            await stream.wait_connected(5)
            for _ in range(100):
                if ex.last_report.reason == "reconnect":
                    break
                await asyncio.sleep(0.02)
            assert ex.last_report.reason == "reconnect"  # the first connect counts too
            accounts = len(sim.request_log.entries("/api/v3/account"))
            sim.drop_ws_api_connections()
            for _ in range(200):
                if len(sim.request_log.entries("/api/v3/account")) > accounts:
                    break
                await asyncio.sleep(0.02)
            assert stream.connects == 2
            assert len(sim.request_log.entries("/api/v3/account")) == accounts + 1
        finally:
            task.cancel()
            await stream.stop()


async def test_start_queries_again_an_order_journaled_final_without_its_fills(sim, tmp_path):
    # A journal that is not atomic could hold FILLED without fills; the order is asked again and
    # its execution recorded as one estimated fill at the average price.
    first = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, first) as ex:
        await ex.submit(intent(116))
        (expected,) = ex.open_positions()
    torn = MemoryOrderJournal()
    torn.orders = dict(first.orders)
    async with live_exchange(sim.rest_url, tmp_path / "2", torn) as again:
        (rebuilt,) = again.open_positions()
        report = again.last_report
    (fill,) = torn.fills.values()
    assert report.resolved == 1 and fill.estimated and fill.trade_id == -(1000001 * 1000 + 999)
    assert rebuilt.quantity == expected.quantity == btc_held(sim)
    assert rebuilt.entry_price == pytest.approx(expected.entry_price)


@pytest.mark.parametrize(
    "bad", [{"bar_interval_ms": 0}, {"trailing_pct": -1.0}, {"reconcile_interval_s": 0.0}]
)
def test_live_config_out_of_range_is_refused(bad):
    with pytest.raises(ValueError):
        LiveConfig(**bad)


def test_live_config_from_settings_takes_the_paper_exit_settings():
    from aegis.config import Settings

    settings = Settings.load({"AEGIS_TRAILING_STOP_PCT": "0.5", "AEGIS_MAX_HOLD_MINUTES": "30"})
    config = LiveConfig.from_settings(settings, reconcile_interval_s=60.0)
    assert (config.trailing_pct, config.max_hold_bars, config.quote_asset) == (0.5, 30, "USDT")


def test_corrupt_journal_detail_or_unknown_order_fails_loudly():
    from aegis.binance.journal import JournalError, OrderState
    from aegis.binance.live_book import intent_from_detail
    from aegis.paper.intents import InvalidIntent

    with pytest.raises(InvalidIntent, match="notional"):
        intent_from_detail(intent_detail(intent(1)) | {"notional": -5.0})
    with pytest.raises(JournalError, match="aegis-404"):
        state = OrderState("FILLED", 1, Decimal(1), Decimal(1))
        asyncio.run(MemoryOrderJournal().order_acked("aegis-404", state, (), 0))


async def test_known_intent_ids_make_a_replayed_intent_a_duplicate(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path, known_intent_ids=[117]) as ex:
        outcome = await ex.submit(intent(117))
    assert outcome.status == "duplicate" and posts_for(sim, "aegis-117") == []


async def test_fill_of_an_own_id_no_intent_tracks_is_reported_as_drift(sim, tmp_path):
    from sim_support import KEY, SECRET

    async with live_exchange(sim.rest_url, tmp_path) as ex:
        stream = ex.user_data_stream(sim.ws_api_url, KEY, SECRET)
        stream.start()
        try:
            await stream.wait_connected(5)
            await ex.submit(intent(118))  # tracked: its events are not drift
            async with aiohttp.ClientSession() as http:
                params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                          "quantity": "0.001", "newClientOrderId": "aegis-119"}  # fmt: skip
                status, body, _ = await call(
                    http, sim, "POST", "/api/v3/order", params, signed=True
                )
                assert status == 200, body
            for _ in range(100):
                if ex.ledger.orphan_fills:
                    break
                await asyncio.sleep(0.02)
            report = await ex.reconcile("test")
        finally:
            await stream.stop()
    (line,) = [d for d in report.drift if "not tracked" in d]
    assert line.startswith("aegis-119: BUY 0.00100000 BTCUSDT")
    assert not [d for d in report.drift if "aegis-118" in d]


# -- settling orders without full reconciliation -------------------------------------------------

FULL_RECONCILIATION = ("GET /api/v3/account", "GET /api/v3/openOrders")


def sim_trades(sim, client_order_id: str) -> dict[int, Decimal]:
    """Trade id -> quantity of every fill the simulator made for one client order id."""
    return {f.trade_id: f.qty for o in sim_orders(sim, client_order_id) for f in o.fills}


def journaled(journal: MemoryOrderJournal, client_order_id: str) -> dict[int, Decimal]:
    return {t: f.quantity for (_, t), f in journal.fills.items()
            if f.client_order_id == client_order_id}  # fmt: skip


async def test_sequential_orders_with_the_user_stream_on_cause_no_full_reconciliation(
    sim, tmp_path, pg_dsn
):
    """With a durable journal, each order's stream events arrive while its REST call (answer and
    journal write) is still in flight; they must wait for that answer, not ask REST."""
    from live_support import eventually, requests_per_endpoint, streaming

    from aegis.binance.journal_pg import PgOrderJournal
    from aegis.schema.migrator import migrate

    await migrate(pg_dsn)
    journal = await PgOrderJournal.connect(pg_dsn)
    n = 12
    ids = [entry_client_id(200 + i) for i in range(n)]
    try:
        await journal._pool.execute("DELETE FROM orders WHERE mode = 'live'")
        await journal._pool.execute("DELETE FROM trades WHERE mode = 'live'")
        async with live_exchange(sim.rest_url, tmp_path, journal) as ex, streaming(ex, sim):
            before = requests_per_endpoint(sim)
            outcomes = [(await ex.submit(intent(200 + i, notional=20.0))).status
                        for i in range(n)]  # fmt: skip
            # Every order's stream events have reached the exchange.
            await eventually(lambda: all(ex.cache.order(c) is not None for c in ids))
            await asyncio.sleep(0.05)  # let the reconciler act on them, if it were to
            events = ex.drain_events()
            positions = ex.open_positions()
            fills = (await journal.load_unfinished()).fills
            closed = await ex.flatten(0)  # n exit orders, settled the same way
            exits = [exit_client_id(200 + i, 1) for i in range(n)]
            await eventually(lambda: all(ex.cache.order(c) is not None for c in exits))
            await asyncio.sleep(0.05)
            after = requests_per_endpoint(sim)
    finally:
        await journal.close()
    assert outcomes == ["filled"] * n
    assert dict(ex.reconciliations) == {"start": 1, "reconnect": 1} and not ex.resolutions
    for endpoint in (*FULL_RECONCILIATION, "GET /api/v3/order"):
        assert after.get(endpoint, 0) == before.get(endpoint, 0), endpoint
    # Entries, exits, and a crash guard for the first 5 (BTCUSDT's MAX_NUM_ALGO_ORDERS), each
    # cancelled before its exit; their answers settle them, no query.
    guards = 5
    assert after["POST /api/v3/order"] - before.get("POST /api/v3/order", 0) == 2 * n + guards
    assert after["DELETE /api/v3/order"] - before.get("DELETE /api/v3/order", 0) == guards
    # Nothing doubled: one journal fill per exchange trade, under the exchange's trade id.
    for cid in ids:
        got = {f.trade_id: f.quantity for f in fills if f.client_order_id == cid}
        assert got == sim_trades(sim, cid) != {}
    assert [type(e) for e in events] == [PositionOpened] * n
    assert sum(p.quantity for p in positions) == btc_held(sim) + sum(
        sum(sim_trades(sim, c).values()) for c in exits
    )
    assert [type(e) for e in closed] == [TradeClosed] * n and ex.open_positions() == ()


async def test_unknown_outcome_is_settled_from_the_user_stream_without_any_query(sim, tmp_path):
    from live_support import eventually, requests_per_endpoint, streaming

    journal = MemoryOrderJournal()
    config = LiveConfig(unknown_grace_s=0.2, stream_wait_s=0.05)
    async with live_exchange(sim.rest_url, tmp_path, journal, config) as ex, streaming(ex, sim):
        before = requests_per_endpoint(sim)
        sim.faults.fail_orders_after_placing(1)
        outcome = await ex.submit(intent(301))
        await eventually(lambda: ex.open_positions() != ())
        after = requests_per_endpoint(sim)
        events = ex.drain_events()
        (pos,) = ex.open_positions()
    assert outcome.status == "pending" and sim.faults.injected["order_5xx"] == 1
    assert dict(ex.resolutions) == {"streamed": 1}
    assert dict(ex.reconciliations) == {"start": 1, "reconnect": 1}
    for endpoint in (*FULL_RECONCILIATION, "GET /api/v3/order"):
        assert after.get(endpoint, 0) == before.get(endpoint, 0), endpoint
    assert len(posts_for(sim, "aegis-301")) == 1
    assert journaled(journal, "aegis-301") == sim_trades(sim, "aegis-301") != {}
    assert not any(f.estimated for f in journal.fills.values())  # real fills, real fees
    assert [type(e) for e in events] == [PositionOpened] and pos.quantity == btc_held(sim)


async def test_unknown_outcome_the_stream_missed_is_settled_by_one_query_by_client_id(
    sim, tmp_path
):
    from live_support import eventually, requests_per_endpoint, streaming

    from aegis.binance.user_events import OrderUpdate

    def lost(event) -> bool:
        return isinstance(event, OrderUpdate) and event.client_order_id == "aegis-302"

    journal = MemoryOrderJournal()
    config = LiveConfig(unknown_grace_s=0.2, stream_wait_s=0.05)
    async with (
        live_exchange(sim.rest_url, tmp_path, journal, config) as ex,
        streaming(ex, sim, drop=lost),
    ):
        before = requests_per_endpoint(sim)
        sim.faults.fail_orders_after_placing(1)
        outcome = await ex.submit(intent(302))
        await eventually(lambda: ex.open_positions() != ())
        after = requests_per_endpoint(sim)
        (pos,) = ex.open_positions()
    assert outcome.status == "pending" and dict(ex.resolutions) == {"resolved": 1}
    queries = [e for e in sim.request_log.entries("/api/v3/order") if e.method == "GET"]
    assert [q.params["origClientOrderId"] for q in queries] == ["aegis-302"]
    for endpoint in FULL_RECONCILIATION:
        assert after.get(endpoint, 0) == before.get(endpoint, 0), endpoint
    assert len(posts_for(sim, "aegis-302")) == 1 and pos.quantity == btc_held(sim)


def test_merge_fills_takes_each_trade_once_and_never_more_than_was_executed():
    from aegis.binance.journal import JournalFill
    from aegis.binance.live_ledger import merge_fills

    def fill(trade_id: int, qty: str) -> JournalFill:
        q = Decimal(qty)
        return JournalFill("aegis-1", "BTCUSDT", trade_id, "BUY", Decimal(100), q, q * 100,
                           Decimal(0), "BTC", False, 0, 7)  # fmt: skip

    recorded = [fill(11, "0.1")]
    # The stream repeats trade 11 and the answer's trade 12; trade 13 is new.
    merged = merge_fills(recorded, [fill(12, "0.2"), fill(11, "0.1"), fill(12, "0.2"),
                                    fill(13, "0.3")], Decimal("0.6"))  # fmt: skip
    assert [f.trade_id for f in merged] == [12, 13]
    # An answer without trade ids (synthetic, negative) next to the stream's real ids: the same
    # 0.3 told twice is taken once, since an order never fills beyond its executed quantity.
    twice = merge_fills([], [fill(-7000, "0.3"), fill(21, "0.3")], Decimal("0.3"))
    assert [f.trade_id for f in twice] == [-7000]
