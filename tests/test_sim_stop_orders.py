"""Stop and take-profit orders in the simulator: placement rules, waiting, cancel, triggering.

Placement and cancel go over REST, events over the WS API user-data stream; triggering is driven
by the replay of real recorded bars (at speed 0 the replay advances only while a market stream
listens, so each test connects one and resumes the clock).
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from sim_support import call, events_until, next_events, quick_config, subscribe_user_data

from aegis.binance.sim import errors
from aegis.binance.sim.bars import path_points, price_on_path, range_between
from aegis.binance.sim.catalog import read_exchange_info
from aegis.binance.sim.config import EXCHANGE_INFO_FILE, AccountSpec
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.sim.stops import is_reached, trigger_price, triggers_on_rise

RICH = AccountSpec(balances=(("USDT", Decimal("100000")), ("BTC", Decimal("1"))))
TICK = Decimal("0.01")  # BTCUSDT's tick size in the bundled exchangeInfo
# 2023-03-18 16:28 UTC: BTC falls 1.9 % inside one minute, then recovers part of it.
FALL_0318 = 1679156880000
# 2023-03-20 08:38 UTC: the one bar of the recording that opens a few dollars below every price
# of the second half of the bar before it (a gap the continuous intra-bar path cannot cross).
GAP_BAR = 1679301480000


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config(accounts=(RICH,))) as s:
        yield s


def with_stop_loss_allowed(tmp_path: Path) -> Path:
    """The real exchangeInfo with STOP_LOSS added to BTCUSDT's orderTypes (it lacks it)."""
    info = read_exchange_info(EXCHANGE_INFO_FILE)
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert "STOP_LOSS" not in btc["orderTypes"]
    btc["orderTypes"] = [*btc["orderTypes"], "STOP_LOSS"]
    path = tmp_path / "exchangeInfo.json"
    path.write_text(json.dumps(info))
    return path


async def order(http, sim, **params):
    return await call(
        http, sim, "POST", "/api/v3/order", {"symbol": "BTCUSDT", **params}, signed=True
    )


async def query(http, sim, client_id):
    return await call(http, sim, "GET", "/api/v3/order",
                      {"symbol": "BTCUSDT", "origClientOrderId": client_id}, signed=True)  # fmt: skip


def below(price: Decimal, pct: str) -> Decimal:
    return (price * (1 - Decimal(pct) / 100)).quantize(TICK)


async def run_replay(http, sim, user_ws, done):
    """Let the replay run until a user-data event satisfies ``done``; return the events."""
    market = await http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]))
    sim.clock.resume()
    try:
        return await events_until(user_ws, done)
    finally:
        sim.clock.pause()
        await market.close()


def first_bar_reaching(sim, start_ms: int, level: Decimal) -> int:
    """Open time of the first recorded bar from ``start_ms`` on whose low reaches ``level``."""
    i = sim.market.index_at("BTCUSDT", start_ms)
    while Decimal(repr(sim.market.bar("BTCUSDT", i).low)) > level:
        i += 1
    return sim.market.bar("BTCUSDT", i).open_time


# -- pure trigger rules -----------------------------------------------------------------------


def test_trigger_direction_follows_binance_price_rules():
    # "Price above market price: STOP_LOSS BUY, TAKE_PROFIT SELL; below: STOP_LOSS SELL,
    # TAKE_PROFIT BUY" (POST /api/v3/order), for the market and the limit versions alike.
    for kind in ("STOP_LOSS", "STOP_LOSS_LIMIT"):
        assert triggers_on_rise(kind, "BUY") and not triggers_on_rise(kind, "SELL")
    for kind in ("TAKE_PROFIT", "TAKE_PROFIT_LIMIT"):
        assert triggers_on_rise(kind, "SELL") and not triggers_on_rise(kind, "BUY")
    stop = Decimal(100)
    assert is_reached("STOP_LOSS", "SELL", stop, Decimal(100))
    assert not is_reached("STOP_LOSS", "SELL", stop, Decimal("100.01"))
    assert is_reached("TAKE_PROFIT_LIMIT", "SELL", stop, Decimal("100.01"))
    assert not is_reached("TAKE_PROFIT_LIMIT", "SELL", stop, Decimal("99.99"))


def test_trigger_price_is_the_stop_on_a_continuous_path_and_the_start_past_a_gap():
    stop, d = Decimal(100), Decimal
    assert trigger_price("STOP_LOSS", "SELL", stop, d(105), d(99), d(105)) == stop
    assert trigger_price("STOP_LOSS", "SELL", stop, d(98), d(97), d(98)) == d(98)  # gap down
    assert trigger_price("STOP_LOSS", "SELL", stop, d(105), d("100.01"), d(105)) is None
    assert trigger_price("STOP_LOSS", "BUY", stop, d(95), d(95), d(101)) == stop
    assert trigger_price("STOP_LOSS", "BUY", stop, d(103), d(102), d(104)) == d(103)  # gap up
    assert trigger_price("TAKE_PROFIT", "BUY", stop, d(101), d(99), d(101)) == stop
    assert trigger_price("TAKE_PROFIT", "SELL", stop, d(99), d(99), d("99.99")) is None


def test_every_new_stop_order_error_text_is_documented(data_dir):
    with gzip.open(data_dir / "samples" / "binance_spot_error_codes.json.gz") as fh:
        catalogue = json.load(fh)
    documented = {t["message"] for t in catalogue["message_tables"]}
    assert errors.MSG_WOULD_TRIGGER in documented
    assert set(errors.MSG_TYPE_NOT_SUPPORTED.values()) <= documented


# -- placement, waiting, cancel -----------------------------------------------------------------


async def test_stop_loss_limit_waits_off_the_book_with_its_base_locked(sim, http):
    ws, _ = await subscribe_user_data(http, sim)
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    stop, limit = below(price, "2"), below(price, "3")
    status, ack, _ = await order(http, sim, side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC",
                                 quantity="0.5", price=str(limit), stopPrice=str(stop),
                                 newClientOrderId="guard-1")  # fmt: skip
    assert status == 200
    # Binance answers ACK by default for every type but MARKET and LIMIT.
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    new, position = (e["event"] for e in await next_events(ws, 2))
    assert (new["x"], new["X"], new["o"], new["c"]) == ("NEW", "NEW", "STOP_LOSS_LIMIT", "guard-1")
    assert (new["P"], new["p"], new["w"]) == (f"{stop:.8f}", f"{limit:.8f}", False)
    assert "W" not in new  # Working Time appears only once the order works on the book
    assert position["e"] == "outboundAccountPosition"
    assert {b["a"]: (b["f"], b["l"]) for b in position["B"]} == {
        "BTC": ("0.50000000", "0.50000000")
    }
    btc = sim.account().balance("BTC")
    assert (btc.free, btc.locked) == (Decimal("0.5"), Decimal("0.5"))
    _, listed, _ = await call(http, sim, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"},
                              signed=True)  # fmt: skip
    assert [(o["clientOrderId"], o["type"], o["stopPrice"], o["isWorking"], o["workingTime"])
            for o in listed] == [("guard-1", "STOP_LOSS_LIMIT", f"{stop:.8f}", False, -1)]  # fmt: skip
    _, queried, _ = await query(http, sim, "guard-1")
    assert (queried["status"], queried["orderId"], queried["price"]) == (
        "NEW", ack["orderId"], f"{limit:.8f}",
    )  # fmt: skip
    # A full answer on request carries the conditional stopPrice field and workingTime -1.
    _, full, _ = await order(http, sim, side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC",
                             quantity="0.1", price=str(limit), stopPrice=str(stop),
                             newOrderRespType="FULL")  # fmt: skip
    assert (full["status"], full["stopPrice"], full["workingTime"], full["fills"]) == (
        "NEW", f"{stop:.8f}", -1, [],
    )  # fmt: skip
    await ws.close()


async def test_cancel_of_a_waiting_stop_unlocks_its_base_and_reports_canceled(sim, http):
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    _, placed, _ = await order(http, sim, side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC",
                               quantity="0.4", price=str(below(price, "3")),
                               stopPrice=str(below(price, "2")), newClientOrderId="guard-2")  # fmt: skip
    ws, _ = await subscribe_user_data(http, sim)
    status, canceled, _ = await call(http, sim, "DELETE", "/api/v3/order",
                                     {"symbol": "BTCUSDT", "origClientOrderId": "guard-2",
                                      "newClientOrderId": "cancel-guard-2"}, signed=True)  # fmt: skip
    assert status == 200
    assert (canceled["status"], canceled["origClientOrderId"], canceled["clientOrderId"]) == (
        "CANCELED", "guard-2", "cancel-guard-2",
    )  # fmt: skip
    assert canceled["stopPrice"] == f"{below(price, '2'):.8f}"
    report, position = (e["event"] for e in await next_events(ws, 2))
    assert (report["x"], report["X"], report["c"], report["C"]) == (
        "CANCELED", "CANCELED", "cancel-guard-2", "guard-2",
    )  # fmt: skip
    assert report["i"] == placed["orderId"] and report["P"] == canceled["stopPrice"]
    assert {b["a"]: b["l"] for b in position["B"]} == {"BTC": "0.00000000"}
    assert sim.account().balance("BTC").locked == 0
    _, again, _ = await call(http, sim, "DELETE", "/api/v3/order",
                             {"symbol": "BTCUSDT", "origClientOrderId": "guard-2"}, signed=True)  # fmt: skip
    assert again == {"code": -2011, "msg": "Unknown order sent."}
    _, queried, _ = await query(http, sim, "guard-2")
    assert queried["status"] == "CANCELED"
    await ws.close()


async def test_a_stop_already_reached_is_refused_as_would_trigger_immediately(sim, http):
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    refusal = {"code": -2010, "msg": "Order would trigger immediately."}
    above = (price * Decimal("1.01")).quantize(TICK)
    cases = [
        dict(side="SELL", type="STOP_LOSS_LIMIT", stopPrice=str(price), price=str(below(price, "1"))),
        dict(side="SELL", type="STOP_LOSS_LIMIT", stopPrice=str(above), price=str(below(price, "1"))),
        dict(side="BUY", type="STOP_LOSS_LIMIT", stopPrice=str(below(price, "1")), price=str(above)),
        dict(side="SELL", type="TAKE_PROFIT_LIMIT", stopPrice=str(below(price, "1")),
             price=str(below(price, "1"))),
        dict(side="BUY", type="TAKE_PROFIT_LIMIT", stopPrice=str(above), price=str(above)),
    ]  # fmt: skip
    for case in cases:
        _, body, _ = await order(http, sim, timeInForce="GTC", quantity="0.01", **case)
        assert body == refusal, case
    assert sim.engine.open_orders(sim.account()) == []
    assert sim.account().balance("BTC").locked == 0 and sim.account().balance("USDT").locked == 0


async def test_stop_parameters_are_checked_like_binance(sim, http):
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    stop, limit = str(below(price, "2")), str(below(price, "3"))
    base = dict(side="SELL", quantity="0.01")
    expected = [
        (dict(type="STOP_LOSS_LIMIT", timeInForce="GTC", stopPrice=stop),
         {"code": -1102,
          "msg": "Mandatory parameter 'price' was not sent, was empty/null, or malformed."}),
        (dict(type="STOP_LOSS_LIMIT", price=limit, stopPrice=stop),
         {"code": -1102,
          "msg": "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."}),
        (dict(type="STOP_LOSS_LIMIT", timeInForce="GTC", price=limit),
         {"code": -1102,
          "msg": "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed."}),
        (dict(type="LIMIT", timeInForce="GTC", price=limit, stopPrice=stop),
         {"code": -1106, "msg": "Parameter 'stopPrice' sent when not required."}),
        (dict(type="STOP_LOSS", price=limit, stopPrice=stop),
         {"code": -1106, "msg": "Parameter 'price' sent when not required."}),
        (dict(type="STOP_LOSS", timeInForce="GTC", stopPrice=stop),
         {"code": -1106, "msg": "Parameter 'timeInForce' sent when not required."}),
        (dict(type="STOP_LOSS_LIMIT", timeInForce="GTC", price=limit, stopPrice=stop + "1"),
         {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}),
        (dict(type="STOP_LOSS_LIMIT", timeInForce="GTC", price=limit, stopPrice=stop,
              trailingDelta="100"),
         {"code": -1014, "msg": "Unsupported order combination."}),
        # The real BTCUSDT entry lists STOP_LOSS_LIMIT but not STOP_LOSS.
        (dict(type="STOP_LOSS", stopPrice=stop),
         {"code": -2010, "msg": "Stop loss orders are not supported for this symbol."}),
        (dict(type="STOP_LOSS_LIMIT", timeInForce="GTC", price=limit, stopPrice=stop,
              quantity="100"),
         {"code": -2010, "msg": "Account has insufficient balance for requested action."}),
    ]  # fmt: skip
    for params, answer in expected:
        status, body, _ = await order(http, sim, **(base | params))
        assert (status, body) == (400, answer), params
    assert sim.engine.open_orders(sim.account()) == []


async def test_max_num_algo_orders_caps_open_stop_orders_per_symbol(sim, http):
    info = sim.catalog.entry("BTCUSDT")
    cap = next(f["maxNumAlgoOrders"] for f in info["filters"]
               if f["filterType"] == "MAX_NUM_ALGO_ORDERS")  # fmt: skip
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    params = dict(side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC", quantity="0.01",
                  price=str(below(price, "3")), stopPrice=str(below(price, "2")))  # fmt: skip
    for _ in range(cap):
        assert (await order(http, sim, **params))[0] == 200
    _, body, _ = await order(http, sim, **params)
    assert body == {"code": -1013, "msg": "Filter failure: MAX_NUM_ALGO_ORDERS"}
    # A plain LIMIT order is not an algo order: it is still accepted.
    status, _, _ = await order(http, sim, side="SELL", type="LIMIT", timeInForce="GTC",
                               quantity="0.01", price=str(price * 2))  # fmt: skip
    assert status == 200


# -- triggering on the replayed price ----------------------------------------------------------


async def test_stop_loss_limit_sell_triggers_in_the_first_bar_that_reaches_it_and_fills(http):
    async with BinanceSimulator(quick_config(accounts=(RICH,), start_ms=FALL_0318)) as sim:
        ws, _ = await subscribe_user_data(http, sim)
        price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
        stop, limit = below(price, "1"), below(price, "2")
        _, placed, _ = await order(http, sim, side="SELL", type="STOP_LOSS_LIMIT",
                                   timeInForce="GTC", quantity="0.5", price=str(limit),
                                   stopPrice=str(stop), newClientOrderId="sl-1")  # fmt: skip
        await next_events(ws, 2)  # NEW + base locked
        events = await run_replay(http, sim, ws, lambda e: e.get("x") == "TRADE")
        trade = events[-1]
        bar = first_bar_reaching(sim, FALL_0318, stop)
        assert bar > FALL_0318  # the premise: the stop lies below the price when placed
        assert bar < trade["T"] <= bar + 60_000  # triggered within the first bar reaching it
        # The limit is below the trigger: it sells at once, as taker, at the stop price (the
        # intra-bar path is continuous, and this bar opened above the stop).
        opened = sim.market.bar("BTCUSDT", sim.market.index_at("BTCUSDT", bar)).open
        assert Decimal(repr(opened)) > stop
        assert (trade["X"], trade["c"], trade["o"], trade["m"]) == (
            "FILLED", "sl-1", "STOP_LOSS_LIMIT", False,
        )  # fmt: skip
        assert (trade["L"], trade["l"], trade["P"], trade["W"]) == (
            f"{stop:.8f}", "0.50000000", f"{stop:.8f}", trade["T"],
        )  # fmt: skip
        _, queried, _ = await query(http, sim, "sl-1")
        assert (queried["status"], queried["executedQty"], queried["isWorking"]) == (
            "FILLED", "0.50000000", True,
        )  # fmt: skip
        assert queried["orderId"] == placed["orderId"]
        quote = stop * Decimal("0.5")
        fee = (quote * Decimal("0.001")).quantize(Decimal("1e-8"), rounding="ROUND_DOWN")
        acct = sim.account()
        assert (acct.balance("BTC").free, acct.balance("BTC").locked) == (Decimal("0.5"), 0)
        assert acct.balance("USDT").free == Decimal("100000") + quote - fee
        await ws.close()


async def test_triggered_stop_limit_above_the_market_works_on_the_book_until_it_fills(http):
    async with BinanceSimulator(quick_config(accounts=(RICH,), start_ms=FALL_0318)) as sim:
        ws, _ = await subscribe_user_data(http, sim)
        price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
        stop = below(price, "1")
        limit = stop + 50  # a SELL limit above its stop: not marketable when the stop triggers
        await order(http, sim, side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC",
                    quantity="0.2", price=str(limit), stopPrice=str(stop),
                    newClientOrderId="sl-2")  # fmt: skip
        placed = (await next_events(ws, 2))[0]["event"]
        events = await run_replay(http, sim, ws, lambda e: e.get("x") == "TRADE")
        working = [e for e in events if e.get("x") == "NEW"]
        assert len(working) == 1 and working[0]["w"] is True and working[0]["X"] == "NEW"
        triggered = working[0]["W"]
        trade = events[-1]
        assert first_bar_reaching(sim, FALL_0318, stop) < triggered  # triggered by the fall
        assert trade["T"] > triggered
        assert (trade["X"], trade["L"], trade["m"]) == ("FILLED", f"{limit:.8f}", True)  # maker
        # It filled in the first bar after the trigger whose high reached the limit.
        i = sim.market.index_at("BTCUSDT", triggered) + 1
        while Decimal(repr(sim.market.bar("BTCUSDT", i).high)) < limit:
            i += 1
        filled_bar = sim.market.bar("BTCUSDT", i).open_time
        assert filled_bar < trade["T"] <= filled_bar + 60_000
        assert sim.account().balance("BTC").locked == 0
        reports = [placed, *(e for e in events if e["e"] == "executionReport")]
        assert len({r["I"] for r in reports}) == len(reports) == 3  # one execution id each
        await ws.close()


async def test_stop_loss_market_fills_at_the_open_of_a_bar_that_gaps_past_it(http, tmp_path):
    cfg = quick_config(accounts=(RICH,), start_ms=GAP_BAR - 1,
                       exchange_info_path=with_stop_loss_allowed(tmp_path))  # fmt: skip
    async with BinanceSimulator(cfg) as sim:
        prev = sim.market.bar("BTCUSDT", sim.market.index_at("BTCUSDT", GAP_BAR - 1))
        gap = sim.market.bar("BTCUSDT", sim.market.index_at("BTCUSDT", GAP_BAR))
        low, _ = range_between(path_points(prev.open, prev.high, prev.low, prev.close), 0.5, 1.0)
        start = price_on_path(path_points(prev.open, prev.high, prev.low, prev.close), 0.5)
        opened = Decimal(repr(gap.open))
        stop = opened + 2  # between the gap bar's open and every earlier price still to come
        assert Decimal(repr(min(low, start))) > stop  # the premise: a real gap in the data
        ws, _ = await subscribe_user_data(http, sim)
        status, _, _ = await order(http, sim, side="SELL", type="STOP_LOSS", quantity="0.3",
                                   stopPrice=str(stop), newClientOrderId="sl-3")  # fmt: skip
        assert status == 200
        await next_events(ws, 2)
        events = await run_replay(http, sim, ws, lambda e: e.get("x") == "TRADE")
        trade = events[-1]
        assert GAP_BAR < trade["T"] <= GAP_BAR + 60_000
        assert (trade["o"], trade["X"], trade["L"], trade["m"]) == (
            "STOP_LOSS", "FILLED", f"{opened:.8f}", False,
        )  # fmt: skip
        assert Decimal(trade["L"]) < stop  # the gap costs the difference, as on the exchange
        await ws.close()


async def test_stop_loss_market_fills_at_its_stop_on_a_continuous_fall(http, tmp_path):
    cfg = quick_config(accounts=(RICH,), start_ms=FALL_0318,
                       exchange_info_path=with_stop_loss_allowed(tmp_path))  # fmt: skip
    async with BinanceSimulator(cfg) as sim:
        ws, _ = await subscribe_user_data(http, sim)
        price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
        stop = below(price, "1")
        _, placed, _ = await order(http, sim, side="SELL", type="STOP_LOSS", quantity="0.3",
                                   stopPrice=str(stop), newOrderRespType="RESULT")  # fmt: skip
        assert (placed["status"], placed["price"], placed["stopPrice"]) == (
            "NEW", "0.00000000", f"{stop:.8f}",
        )  # fmt: skip
        await next_events(ws, 2)
        trade = (await run_replay(http, sim, ws, lambda e: e.get("x") == "TRADE"))[-1]
        assert (trade["X"], trade["L"], trade["z"]) == ("FILLED", f"{stop:.8f}", "0.30000000")
        await ws.close()
