"""The crash guard wired into ``LiveExchange``, against the simulator over real sockets.

Every live position gets a resting STOP_LOSS_LIMIT SELL far below its rule stop right after its
entry fills (journaled first, role ``guard``); the executor's own exits and ``flatten`` cancel it
before they sell; a guard that sells while the executor runs, or while it is down, closes the
trade as ``crash_guard`` with the real fill. Prices move by the simulator's replay of recorded
bars (2023-03-22, the FOMC fall) where the guard must fill, and by ``on_bar`` where the
executor's exit rules must decide.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import aiohttp
import pytest
from live_support import (
    BTC,
    eventually,
    intent,
    live_exchange,
    posts_for,
    sim_orders,
    streaming,
)
from sim_support import quick_config

from aegis.binance.journal import MemoryOrderJournal
from aegis.binance.live import GuardConfig, LiveConfig
from aegis.binance.live_book import exit_client_id
from aegis.binance.live_guard import (
    EXIT_CRASH_GUARD,
    ROLE_GUARD,
    guard_client_id,
    plan_guard,
)
from aegis.binance.sim.server import BinanceSimulator
from aegis.paper.events import PositionOpened, TradeClosed

# 2023-03-22 18:51 UTC, the FOMC decision: BTC falls 4.5 % in the next 25 minutes, through a
# guard at twice a 1 % rule stop.
FOMC = 1679511060000
STEP = Decimal("0.00001")  # BTCUSDT's LOT_SIZE step in the bundled exchangeInfo
GRACE = dict(unknown_grace_s=0.2)


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config()) as s:
        yield s


@pytest.fixture
async def fomc():
    async with BinanceSimulator(quick_config(start_ms=FOMC)) as s:
        yield s


def btc_balance(sim) -> tuple[Decimal, Decimal]:
    bal = sim.account().balance("BTC")
    return bal.free, bal.locked


def usdt_held(sim) -> Decimal:
    bal = sim.account().balance("USDT")
    return bal.free + bal.locked


def requests(sim, client_order_id: str) -> list[str]:
    """The order requests (method) the simulator received naming one client order id."""
    return [
        e.method
        for e in sim.request_log.entries("/api/v3/order")
        if client_order_id in (e.params.get("newClientOrderId"), e.params.get("origClientOrderId"))
    ]


@contextlib.asynccontextmanager
async def replaying(sim):
    """Let the simulator's replay run (a market stream listens and is read) inside the block."""
    async with aiohttp.ClientSession() as http:
        market = await http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]))

        async def read() -> None:
            async for _ in market:
                pass

        reader = asyncio.create_task(read())
        sim.clock.resume()
        try:
            yield
        finally:
            sim.clock.pause()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await market.close()


# -- placement -----------------------------------------------------------------------------------


async def test_entry_fill_places_a_journaled_guard_at_twice_the_stop_on_the_grid(sim, tmp_path):
    resting_at_write = []

    def checkpoint(name: str) -> None:
        if name == "guard_written":
            resting_at_write.append(len(sim_orders(sim, guard_client_id(601, 1))))

    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal, checkpoint=checkpoint) as ex:
        outcome = await ex.submit(intent(601, stop=1.0))
        (pos,) = ex.open_positions()
        book = ex.ledger.books[601]
        events = ex.drain_events()
    cid = guard_client_id(601, 1)
    assert outcome.status == "filled" and [type(e) for e in events] == [PositionOpened]
    assert resting_at_write == [0]  # journaled before it was sent
    assert [m for m, c in journal.calls if c == cid] == ["intent_written", "order_acked"]
    expected = plan_guard(book.market, 601, 1, pos.quantity, pos.entry_price, 1.0, GuardConfig())
    (placed,) = sim_orders(sim, cid)
    assert (placed.type, placed.side, placed.status) == ("STOP_LOSS_LIMIT", "SELL", "NEW")
    assert (placed.stop_price, placed.price, placed.orig_qty) == (
        expected.stop_price, expected.limit_price, expected.quantity,
    )  # fmt: skip
    # Twice the rule's 1 % below the entry, rounded up onto the tick; the limit 5 % under it.
    stop = Decimal(repr(pos.entry_price)) * Decimal("0.98")
    assert stop <= placed.stop_price < stop + Decimal("0.01")
    assert placed.orig_qty % STEP == 0 and pos.quantity - placed.orig_qty < STEP
    journaled = journal.orders[cid]
    assert (journaled.role, journaled.status, journaled.order_type) == (
        ROLE_GUARD, "NEW", "STOP_LOSS_LIMIT",
    )  # fmt: skip
    assert journaled.detail["exit_code"] == EXIT_CRASH_GUARD == 7
    assert journaled.detail["decision_price"] == float(placed.stop_price)
    # The position's coins are locked by the guard, yet the position is not waiting on anything.
    assert btc_balance(sim) == (pos.quantity - placed.orig_qty, placed.orig_qty)
    assert book.unresolved() == [] and ex.snapshot(0).pending_intents == 0


async def test_position_that_cannot_have_a_guard_trades_without_one(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        # Twice a 50 % stop leaves no price for a guard.
        outcome = await ex.submit(intent(602, stop=50.0, take=1.0))
        await ex.reconcile("test")  # given up once, not retried by every reconciliation
        (pos,) = ex.open_positions()
        p = pos.entry_price
        events = await ex.on_bar(BTC, pos.entry_at_ms, p, p * 1.02, p * 0.999, p * 1.01)
    assert outcome.status == "filled" and dict(ex.guards_unavailable) == {"no_price_left": 1}
    assert not any(parse for parse in sim.request_log.entries("/api/v3/order")
                   if "-g" in parse.params.get("newClientOrderId", ""))  # fmt: skip
    closed = [e for e in events if isinstance(e, TradeClosed)]
    assert [c.trade.exit_reason for c in closed] == ["take_profit"]
    assert requests(sim, exit_client_id(602, 1)) == ["POST"] and sum(btc_balance(sim)) < STEP


async def test_position_over_the_algo_order_cap_gets_its_guard_once_a_slot_frees(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        await ex.submit(intent(611, take=1.0))  # the one that takes its profit below
        for i in range(612, 617):
            await ex.submit(intent(i, take=5.0))
        assert dict(ex.guards_unavailable) == {"filter:MAX_NUM_ALGO_ORDERS": 1}
        assert posts_for(sim, guard_client_id(616, 1)) == []  # the sixth: 5 rest already
        await ex.reconcile("test")  # still no slot: not sent, not counted again
        p = ex.open_positions()[0].entry_price
        bar = ex.open_positions()[0].entry_at_ms
        await ex.on_bar(BTC, bar, p, p * 1.015, p * 0.999, p * 1.01)
        assert 611 not in ex.ledger.books
        await ex.reconcile("test")
    assert dict(ex.guards_unavailable) == {"filter:MAX_NUM_ALGO_ORDERS": 1}
    assert len(posts_for(sim, guard_client_id(616, 1))) == 1
    resting = {o.client_order_id for o in sim.engine.open_orders(sim.account())}
    assert resting == {guard_client_id(i, 1) for i in range(612, 617)}


async def test_guard_refused_for_the_rate_is_placed_again_at_the_next_reconciliation(sim, tmp_path):
    def checkpoint(name: str) -> None:
        if name == "guard_written" and not posts_for(sim, guard_client_id(618, 1)):
            sim.faults.storm_429(1, retry_after_s=1)  # the guard's own POST gets the 429

    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal, checkpoint=checkpoint) as ex:
        outcome = await ex.submit(intent(618))
        assert outcome.status == "filled" and sim.engine.open_orders(sim.account()) == []
        assert journal.orders[guard_client_id(618, 1)].status == "REJECTED"
        assert len(ex.guards_unavailable) == 1  # counted once, under the refusal's reason
        await asyncio.sleep(1.1)  # past the Retry-After
        await ex.reconcile("test")
    (resting,) = sim.engine.open_orders(sim.account())
    assert (
        resting.client_order_id == guard_client_id(618, 2)
        and len(posts_for(sim, resting.client_order_id)) == 1
    )


# -- exits release the guard first ---------------------------------------------------------------


async def test_rule_exit_cancels_the_guard_then_sells_the_whole_position(sim, tmp_path):
    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
        await ex.submit(intent(603))
        (pos,) = ex.open_positions()
        p = pos.entry_price
        events = await ex.on_bar(BTC, pos.entry_at_ms, p, p * 1.03, p * 0.999, p * 1.02)
    (closed,) = [e for e in events if isinstance(e, TradeClosed)]
    assert closed.trade.exit_reason == "take_profit"
    guard, sale = guard_client_id(603, 1), exit_client_id(603, 1)
    # Cancel, then one sale: the coins were free when it was sent (no -2010 refusal).
    log = [(e.method, e.params.get("newClientOrderId") or e.params.get("origClientOrderId"))
           for e in sim.request_log.entries("/api/v3/order")]  # fmt: skip
    assert log[-2:] == [("DELETE", guard), ("POST", sale)]
    assert journal.orders[guard].status == "CANCELED" and journal.orders[sale].status == "FILLED"
    assert not ex.rejections and dict(ex.guard_releases) == {"CANCELED": 1}
    (sold,) = sim_orders(sim, sale)
    assert sold.executed_qty == sim_orders(sim, guard)[0].orig_qty  # all of it, to the step
    assert btc_balance(sim)[1] == 0 and sum(btc_balance(sim)) < STEP
    assert journal.closed[603][0] == "take_profit" and ex.open_positions() == ()


async def test_flatten_releases_every_guard_and_sells_everything(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        await ex.submit(intent(604))
        await ex.submit(intent(605))
        assert len(ex.cache.open_orders()) == 2  # one guard each
        ex.drain_events()
        events = await ex.flatten(0)
    assert sorted(e.trade.intent_id for e in events) == [604, 605]
    assert {e.trade.exit_reason for e in events} == {"forced"}
    for i in (604, 605):
        assert requests(sim, guard_client_id(i, 1)) == ["POST", "DELETE"]
        assert sim_orders(sim, guard_client_id(i, 1))[0].status == "CANCELED"
    assert sim.engine.open_orders(sim.account()) == [] and sum(btc_balance(sim)) < 2 * STEP


async def test_exit_whose_guard_cannot_be_released_waits_for_the_next_bar(sim, tmp_path):
    async with live_exchange(sim.rest_url, tmp_path) as ex:
        await ex.submit(intent(606))
        (pos,) = ex.open_positions()
        ex.drain_events()
        p = pos.entry_price
        sim.faults.storm_429(1, retry_after_s=1)  # the cancel is refused: the guard still rests
        first = await ex.on_bar(BTC, pos.entry_at_ms, p, p * 1.03, p * 0.999, p * 1.02)
        assert ex.open_positions() != () and sim_orders(sim, guard_client_id(606, 1))[0].is_open
        # The next bar no longer reaches the take profit: the decision taken is sent anyway.
        later = await ex.on_bar(BTC, pos.entry_at_ms + 60_000, p, p, p, p)
    assert first == [] and requests(sim, exit_client_id(606, 1)) == ["POST"]
    (closed,) = later
    assert closed.trade.exit_reason == "take_profit"
    assert closed.trade.close_price == pytest.approx(p * 1.02)
    assert dict(ex.guard_releases) == {"unknown": 1, "CANCELED": 1}


# -- the guard sells ------------------------------------------------------------------------------


async def test_crash_through_the_guard_while_running_closes_the_trade_as_crash_guard(
    fomc, tmp_path
):
    sim = fomc
    journal = MemoryOrderJournal()
    config = LiveConfig(stream_wait_s=0.05, **GRACE)
    async with live_exchange(sim.rest_url, tmp_path, journal, config) as ex, streaming(ex, sim):
        usdt_before = usdt_held(sim)
        await ex.submit(intent(701, stop=1.0))
        (pos,) = ex.open_positions()
        ex.drain_events()
        async with replaying(sim):
            await eventually(lambda: 701 not in ex.ledger.books, 20)
        (closed,) = ex.drain_events()
        await eventually(lambda: ex.cash() == pytest.approx(float(usdt_held(sim))))
        equity = ex.equity()
    cid = guard_client_id(701, 1)
    (guard,) = sim_orders(sim, cid)
    assert isinstance(closed, TradeClosed) and guard.status == "FILLED"
    trade = closed.trade
    assert (trade.exit_reason, trade.exit_code) == ("crash_guard", EXIT_CRASH_GUARD)
    assert trade.close_price == float(guard.stop_price)  # the level the guard chose
    assert trade.close_fill_price == pytest.approx(float(guard.cumm_quote / guard.executed_qty))
    assert trade.close_fill_price < pos.entry_price * 0.99  # beyond the rule's stop
    # Real money: what the trade says it lost is what left the account.
    assert trade.pnl == pytest.approx(float(usdt_held(sim) - usdt_before), abs=1e-6)
    assert trade.exit_at_ms == max(f.time_ms for f in guard.fills)
    assert not any(f.estimated for f in journal.fills.values())  # the stream's fills and fees
    assert journal.closed[701][0] == "crash_guard" and journal.orders[cid].status == "FILLED"
    assert posts_for(sim, exit_client_id(701, 1)) == [] and ex.open_positions() == ()
    assert equity == ex.cash()


async def test_guard_filled_while_the_executor_was_down_is_a_crash_guard_trade_on_restart(
    fomc, tmp_path
):
    sim = fomc
    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
        usdt_before = usdt_held(sim)
        await ex.submit(intent(702, stop=1.0))
    cid = guard_client_id(702, 1)
    # The executor is down; the market falls through the guard.
    async with replaying(sim):
        await eventually(lambda: sim_orders(sim, cid)[0].status == "FILLED", 20)
    async with live_exchange(sim.rest_url, tmp_path / "2", journal) as again:
        report = again.last_report
        events = again.drain_events()
        assert again.open_positions() == ()
    (guard,) = sim_orders(sim, cid)
    (closed,) = events
    trade = closed.trade
    assert (trade.exit_reason, trade.intent_id) == ("crash_guard", 702)
    assert report.closed_reconciled == 0 and report.resolved == 1
    assert trade.close_fill_price == pytest.approx(float(guard.cumm_quote / guard.executed_qty))
    # The query tells no fees: estimated at the configured 0.1 %, as the simulator charges.
    fee = sum(f.commission for f in guard.fills)
    assert trade.pnl == pytest.approx(float(usdt_held(sim) - usdt_before), abs=float(fee) / 100)
    assert journal.closed[702][0] == "crash_guard"
    # Nothing was sold twice and nothing is left resting.
    assert posts_for(sim, exit_client_id(702, 1)) == []
    assert posts_for(sim, guard_client_id(702, 2)) == []
    assert sim.engine.open_orders(sim.account()) == [] and sum(btc_balance(sim)) < STEP


# -- restart -------------------------------------------------------------------------------------


async def test_restart_gives_an_unguarded_position_exactly_one_guard(sim, tmp_path):
    journal = MemoryOrderJournal()
    unguarded = LiveConfig(crash_guard=None, **GRACE)
    async with live_exchange(sim.rest_url, tmp_path, journal, unguarded) as ex:
        await ex.submit(intent(703))
        (pos,) = ex.open_positions()
    assert sim.engine.open_orders(sim.account()) == []
    for life in ("2", "3"):
        async with live_exchange(sim.rest_url, tmp_path / life, journal) as again:
            (rebuilt,) = again.open_positions()
            assert again.last_report.drift == () and again.drain_events() == []
    assert rebuilt.quantity == pos.quantity
    assert posts_for(sim, guard_client_id(703, 1)) != [] == posts_for(sim, guard_client_id(703, 2))
    (resting,) = sim.engine.open_orders(sim.account())
    assert resting.client_order_id == guard_client_id(703, 1)
    assert len(posts_for(sim, guard_client_id(703, 1))) == 1


async def test_guard_cancelled_while_down_is_replaced_under_the_next_attempt_id(sim, tmp_path):
    journal = MemoryOrderJournal()
    async with live_exchange(sim.rest_url, tmp_path, journal) as ex:
        await ex.submit(intent(704))
        await ex.guard.release("BTCUSDT", guard_client_id(704, 1))  # by hand, journal unaware
    async with live_exchange(sim.rest_url, tmp_path / "2", journal) as again:
        (pos,) = again.open_positions()
        report = again.last_report
    assert journal.orders[guard_client_id(704, 1)].status == "CANCELED"
    assert len(report.drift) == 1 and report.closed_reconciled == 0
    (resting,) = sim.engine.open_orders(sim.account())
    assert resting.client_order_id == guard_client_id(704, 2)
    assert resting.orig_qty == journal.orders[guard_client_id(704, 1)].quantity
    assert journal.orders[guard_client_id(704, 2)].status == "NEW" and pos.intent_id == 704


def test_live_crash_guard_setting_turns_the_guard_on_or_off():
    from aegis.config import Settings

    on = LiveConfig.from_settings(Settings.load({}))
    off = LiveConfig.from_settings(Settings.load({"AEGIS_LIVE_CRASH_GUARD": "false"}))
    assert on.crash_guard == GuardConfig() and off.crash_guard is None
