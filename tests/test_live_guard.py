"""The crash guard: planning on real exchangeInfo rules, and its life against the simulator.

The simulator tests make a real entry (a MARKET BUY through the project's REST client over
loopback), place the guard with ``CrashGuard`` and let the replay of recorded bars move the
price; the user-data stream is the project's own ``UserDataStream`` feeding an ``AccountCache``,
as in live mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import pytest
from sim_support import KEY, SECRET, quick_config

from aegis.binance.account import AccountCache
from aegis.binance.errors import InsufficientBalance, OrderRejected
from aegis.binance.filters import SymbolFilters
from aegis.binance.live_book import CLIENT_ID_PATTERN, LiveMarket, entry_client_id, exit_client_id
from aegis.binance.live_guard import (
    STATUS_ABSENT,
    CrashGuard,
    GuardConfig,
    GuardUnavailable,
    guard_client_id,
    guard_order_type,
    parse_guard_client_id,
    plan_guard,
)
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sim.catalog import read_exchange_info
from aegis.binance.sim.config import EXCHANGE_INFO_FILE
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.user_events import BalancesUpdate
from aegis.binance.userdata import UserDataStream
from aegis.binance.weight import WeightBudget

# 2023-03-22 18:51 UTC, the FOMC decision: BTC falls 4.5 % in the next 25 minutes.
FOMC = 1679511060000


@pytest.fixture(scope="module")
def btc_info() -> dict:
    info = read_exchange_info(EXCHANGE_INFO_FILE)
    return next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")


def market_of(info: dict, order_types: list[str] | None = None) -> LiveMarket:
    entry = copy.deepcopy(info)
    if order_types is not None:
        entry["orderTypes"] = order_types
    return LiveMarket.from_symbol_info(entry)


@contextlib.asynccontextmanager
async def rest_client(rest_url: str, home):
    with WeightBudget.for_home(home) as budget:
        async with BinanceRestClient(
            rest_url, budget, api_key=KEY, api_secret=SECRET, backoff_base_s=0.01, time_samples=1
        ) as rest:
            yield rest


@dataclass(frozen=True)
class Entry:
    """What a filled entry left: the base quantity held and the average price paid."""

    intent_id: int
    quantity: Decimal
    price: Decimal


async def enter(rest: BinanceRestClient, intent_id: int, quote: Decimal = Decimal(100)) -> Entry:
    """A MARKET BUY of about ``quote`` USDT of BTC under the intent's entry id."""
    price = await rest.avg_price("BTCUSDT")
    qty = (quote / price).quantize(Decimal("0.00001"), rounding="ROUND_DOWN")
    answer = await rest.new_order("BTCUSDT", "BUY", "MARKET", qty,
                                  client_order_id=entry_client_id(intent_id))  # fmt: skip
    assert answer.status == "FILLED"
    fee = sum(f.commission for f in answer.fills if f.commission_asset == "BTC")
    paid = answer.cumulative_quote / answer.executed_quantity
    return Entry(intent_id, answer.executed_quantity - fee, paid)


async def btc_market(rest: BinanceRestClient) -> LiveMarket:
    info = await rest.exchange_info(["BTCUSDT"])
    return LiveMarket.from_symbol_info(info["symbols"][0])


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def btc(sim):
    bal = sim.account().balance("BTC")
    return bal.free, bal.locked


# -- ids and planning (pure) ---------------------------------------------------------------------


def test_guard_ids_are_valid_distinct_from_entry_and_exit_ids_and_parse_back():
    biggest = 2**64 - 1
    ids = [guard_client_id(biggest, 1), guard_client_id(biggest, 2), guard_client_id(7, 1)]
    assert all(CLIENT_ID_PATTERN.match(i) for i in ids) and len(set(ids)) == 3
    assert guard_client_id(42, 1) == "aegis-42-g1"
    assert guard_client_id(42, 1) not in {entry_client_id(42), exit_client_id(42, 1)}
    assert parse_guard_client_id(guard_client_id(biggest, 3)) == (biggest, 3)
    assert parse_guard_client_id(exit_client_id(42, 1)) is None
    assert parse_guard_client_id(entry_client_id(42)) is None
    with pytest.raises(ValueError):
        guard_client_id(42, 0)


def test_guard_type_prefers_stop_loss_and_falls_back_to_stop_loss_limit(btc_info):
    assert "STOP_LOSS" not in btc_info["orderTypes"]  # true of every symbol in the 2024 file
    assert guard_order_type(market_of(btc_info).filters) == "STOP_LOSS_LIMIT"
    with_stop = [*btc_info["orderTypes"], "STOP_LOSS"]
    assert guard_order_type(market_of(btc_info, with_stop).filters) == "STOP_LOSS"
    with pytest.raises(GuardUnavailable) as refused:
        guard_order_type(market_of(btc_info, ["LIMIT", "MARKET"]).filters)
    assert refused.value.reason == "no_stop_order_type"


def test_stop_loss_limit_guard_sits_at_twice_the_stop_distance_on_the_grid(btc_info):
    market = market_of(btc_info)
    cfg = GuardConfig()
    order = plan_guard(market, 9, 1, Decimal("0.003649"), 27385.17, 1.5, cfg)
    tick, step = market.filters.price_grid.step, market.filters.lot_grid.step
    distance = Decimal(repr(cfg.distance_multiple)) * Decimal("1.5")  # 2 x the rule's 1.5 %
    wanted_stop = Decimal("27385.17") * (1 - distance / 100)
    assert order.order_type == "STOP_LOSS_LIMIT" and order.client_order_id == "aegis-9-g1"
    assert wanted_stop <= order.stop_price < wanted_stop + tick  # SELL side rounds up one tick
    wanted_limit = order.stop_price * (1 - Decimal(repr(cfg.limit_gap_pct)) / 100)
    assert wanted_limit <= order.limit_price < wanted_limit + tick
    assert order.quantity == Decimal("0.00364") and order.quantity % step == 0
    assert order.time_in_force == "GTC"
    market.filters.check("SELL", "STOP_LOSS_LIMIT", order.quantity, order.limit_price,
                         Decimal("27385.17"))  # fmt: skip
    market.filters.check_stop_price(order.stop_price)


def test_stop_loss_guard_has_no_limit_and_is_judged_at_its_stop(btc_info):
    market = market_of(btc_info, [*btc_info["orderTypes"], "STOP_LOSS"])
    cfg = GuardConfig(distance_multiple=3.0)
    order = plan_guard(market, 9, 2, Decimal("0.01"), Decimal("30000"), 1.0, cfg)
    assert (order.order_type, order.stop_price, order.limit_price) == (
        "STOP_LOSS", Decimal("29100.00"), None,
    )  # fmt: skip
    assert order.time_in_force is None and order.client_order_id == "aegis-9-g2"
    # 0.00018 BTC is worth 5.4 USDT at the entry but only 4.97 at a 8 % guard: under NOTIONAL 5.
    with pytest.raises(GuardUnavailable) as refused:
        plan_guard(market, 9, 1, Decimal("0.00018"), 30000, 8.0, GuardConfig(distance_multiple=1.0))
    assert refused.value.reason == "filter:NOTIONAL"


def test_plan_guard_refuses_what_no_exchange_would_take(btc_info):
    market = market_of(btc_info)
    cap = market.filters.max_num_algo_orders
    refusals = [
        (dict(stop_pct=50.0), "no_price_left"),  # twice 50 % below the entry is zero
        (dict(stop_pct=0.0), "no_rule_stop"),  # nothing to place it against
        (dict(quantity=Decimal("0.0001")), "filter:NOTIONAL"),
        (dict(quantity=Decimal("0.000001")), "filter:LOT_SIZE"),
        (dict(open_algo_orders=cap), "filter:MAX_NUM_ALGO_ORDERS"),
        (dict(entry_price="not a price"), "invalid_order"),
    ]
    base = dict(quantity=Decimal("0.01"), entry_price=27000.0, stop_pct=1.0)
    for change, reason in refusals:
        with pytest.raises(GuardUnavailable) as refused:
            plan_guard(market, 1, 1, config=GuardConfig(), **(base | change))
        assert refused.value.reason == reason, change
    one_below_cap = plan_guard(market, 1, 1, config=GuardConfig(), open_algo_orders=cap - 1, **base)
    assert one_below_cap.quantity == Decimal("0.01")


def test_guard_config_rejects_a_guard_inside_the_rule_stop_and_bad_gaps():
    for bad in (dict(distance_multiple=0.9), dict(distance_multiple=float("nan")),
                dict(limit_gap_pct=-0.1), dict(limit_gap_pct=100.0)):  # fmt: skip
        with pytest.raises(ValueError):
            GuardConfig(**bad)
    assert GuardConfig(distance_multiple=1.0, limit_gap_pct=0.0).distance_multiple == 1.0


def test_a_symbol_entry_without_order_types_gets_a_stop_limit_guard():
    bare = SymbolFilters("XUSDT", [])
    assert guard_order_type(bare) == "STOP_LOSS_LIMIT"


# -- against the simulator ---------------------------------------------------------------------


async def test_guard_placed_after_an_entry_rests_locks_the_base_and_releases_it(tmp_path):
    async with BinanceSimulator(quick_config()) as sim, rest_client(sim.rest_url, tmp_path) as rest:
        entry = await enter(rest, 301)
        order = plan_guard(await btc_market(rest), entry.intent_id, 1, entry.quantity,
                           entry.price, 1.0, GuardConfig())  # fmt: skip
        guard = CrashGuard(rest)
        placed = await guard.place(order)
        assert (placed.status, placed.client_order_id) == ("NEW", "aegis-301-g1")
        dust = entry.quantity - order.quantity  # the fee in BTC left less than a whole step
        assert 0 <= dust < Decimal("0.00001")
        assert btc(sim) == (dust, order.quantity)  # all the position can sell is locked
        listed = await rest.open_orders("BTCUSDT")
        assert [(o.client_order_id, o.order_type) for o in listed] == [
            ("aegis-301-g1", "STOP_LOSS_LIMIT")
        ]
        # While the guard rests, the executor's own exit cannot sell the position...
        with pytest.raises(InsufficientBalance):
            await rest.new_order("BTCUSDT", "SELL", "MARKET", order.quantity,
                                 client_order_id=exit_client_id(301, 1))  # fmt: skip
        # ...so the guard is released first, and then it can.
        release = await guard.release("BTCUSDT", order.client_order_id)
        assert (release.status, release.sold, release.sold_everything) == (
            "CANCELED", Decimal(0), False,
        )  # fmt: skip
        assert btc(sim) == (entry.quantity, Decimal(0))
        sold = await rest.new_order("BTCUSDT", "SELL", "MARKET", order.quantity,
                                    client_order_id=exit_client_id(301, 2))  # fmt: skip
        assert sold.status == "FILLED" and btc(sim) == (dust, Decimal(0))
        assert (await guard.status("BTCUSDT", order.client_order_id)).status == "CANCELED"


async def test_release_of_a_guard_that_was_never_placed_reports_it_absent(tmp_path):
    async with BinanceSimulator(quick_config()) as sim, rest_client(sim.rest_url, tmp_path) as rest:
        release = await CrashGuard(rest).release("BTCUSDT", guard_client_id(777, 1))
    assert (release.status, release.sold, release.order) == (STATUS_ABSENT, Decimal(0), None)


async def test_a_guard_below_the_price_already_is_refused_and_nothing_rests(tmp_path, btc_info):
    async with BinanceSimulator(quick_config()) as sim, rest_client(sim.rest_url, tmp_path) as rest:
        await rest.new_order("BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="buy-1")
        price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
        # Planned from a stale entry far above today's price: the guard's stop is above it.
        order = plan_guard(market_of(btc_info), 5, 1, Decimal("0.00999"), price * 2, 10.0,
                           GuardConfig(distance_multiple=1.0))  # fmt: skip
        assert order.stop_price > price
        with pytest.raises(OrderRejected) as refused:
            await CrashGuard(rest).place(order)
        assert refused.value.msg == "Order would trigger immediately."
        assert sim.engine.open_orders(sim.account()) == []


async def test_crash_guard_fills_when_the_price_falls_through_it_with_no_executor(tmp_path):
    cache, fills = AccountCache(), []
    guard_filled = asyncio.Event()

    def on_fill(update) -> None:
        fills.append(update)
        if update.is_final:
            guard_filled.set()

    def on_event(event) -> None:
        seen.append(event)
        cache.apply(event)

    def base_unlocked() -> bool:  # the stream connects after the guard locked the base
        return any(
            isinstance(e, BalancesUpdate)
            and any(b.asset == "BTC" and not b.locked for b in e.balances)
            for e in seen
        )

    cache.fill_listeners.append(on_fill)
    seen: list = []
    async with BinanceSimulator(quick_config(start_ms=FOMC)) as sim:
        async with rest_client(sim.rest_url, tmp_path) as rest:
            entry = await enter(rest, 401)
            order = plan_guard(await btc_market(rest), entry.intent_id, 1, entry.quantity,
                               entry.price, 1.0, GuardConfig())  # fmt: skip
            await CrashGuard(rest).place(order)
        # The executor is gone. Only the exchange, its replayed market and our stream remain.
        async with rest_client(sim.rest_url, tmp_path / "later") as rest:
            await rest.sync_time()
            stream = UserDataStream(sim.ws_api_url, KEY, SECRET, on_event=on_event,
                                    server_time_ms=rest.server_time_ms)  # fmt: skip
            stream.start()
            try:
                await stream.wait_connected(5)
                async with aiohttp.ClientSession() as http:
                    market = await http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]))
                    sim.clock.resume()
                    await asyncio.wait_for(guard_filled.wait(), 10)
                    sim.clock.pause()
                    await market.close()
                # The balance update follows the fill on the same stream.
                await until(base_unlocked)
            finally:
                await stream.stop()
            (fill,) = fills
            assert (fill.client_order_id, fill.order_type, fill.side, fill.status) == (
                "aegis-401-g1", "STOP_LOSS_LIMIT", "SELL", "FILLED",
            )  # fmt: skip
            assert fill.last_quantity == order.quantity and fill.commission_asset == "USDT"
            # It sold in the first minute whose low reached the guard's stop, not before.
            i = sim.market.index_at("BTCUSDT", FOMC)
            while Decimal(repr(sim.market.bar("BTCUSDT", i).low)) > order.stop_price:
                i += 1
            reached = sim.market.bar("BTCUSDT", i).open_time
            assert reached > FOMC and reached < fill.transaction_time_ms <= reached + 60_000
            assert order.limit_price <= fill.last_price <= order.stop_price
            rule_stop = entry.price * (1 - Decimal("0.01"))
            assert fill.last_price < rule_stop  # far below where the executor exits
            queried = await rest.query_order("BTCUSDT", orig_client_order_id="aegis-401-g1")
            assert (queried.status, queried.executed_quantity) == ("FILLED", order.quantity)
            dust = entry.quantity - order.quantity
            assert btc(sim) == (dust, Decimal(0))
            assert (cache.balance("BTC").free, cache.balance("BTC").locked) == (dust, 0)
            # A restarted executor releasing the guard learns that it closed the position.
            release = await CrashGuard(rest).release("BTCUSDT", "aegis-401-g1")
            assert (release.status, release.sold, release.sold_everything) == (
                "FILLED", order.quantity, True,
            )  # fmt: skip
