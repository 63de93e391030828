"""Order lifecycle against the simulator (REST) and the user-data events it pushes (WS API)."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp
import orjson
import pytest
from sim_support import KEY, SECRET, call, next_events, quick_config, subscribe_user_data

from aegis.binance.signing import hmac_signature
from aegis.binance.sim.catalog import read_exchange_info
from aegis.binance.sim.config import EXCHANGE_INFO_FILE, AccountSpec
from aegis.binance.sim.server import BinanceSimulator

RICH = AccountSpec(balances=(("USDT", Decimal("100000")), ("BTC", Decimal("1"))))


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config(accounts=(RICH,))) as s:
        yield s


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def order(http, sim, **params):
    return await call(
        http, sim, "POST", "/api/v3/order", {"symbol": "BTCUSDT", **params}, signed=True
    )


async def test_market_buy_fills_at_current_price_with_commission_in_base(sim, http):
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    status, body, headers = await order(http, sim, side="BUY", type="MARKET", quantity="0.01000",
                                        newClientOrderId="intent-1")  # fmt: skip
    assert status == 200, body
    assert body["status"] == "FILLED" and body["clientOrderId"] == "intent-1"
    fill = body["fills"][0]
    assert Decimal(fill["price"]) == price
    assert Decimal(fill["commission"]) == Decimal("0.00001000") and fill["commissionAsset"] == "BTC"
    assert headers["X-MBX-ORDER-COUNT-10S"] == "1" and headers["X-MBX-ORDER-COUNT-1D"] == "1"
    acct = sim.account()
    assert acct.balance("BTC").free == Decimal("1") + Decimal("0.01") - Decimal("0.00001")
    assert acct.balance("USDT").free == Decimal("100000") - price * Decimal("0.01")


async def test_market_sell_pays_commission_in_quote(sim, http):
    status, body, _ = await order(http, sim, side="SELL", type="MARKET", quantity="0.5")
    assert status == 200 and body["fills"][0]["commissionAsset"] == "USDT"
    quote = Decimal(body["cummulativeQuoteQty"])
    assert sim.account().balance("USDT").free == Decimal("100000") + quote - (
        quote * Decimal("0.001")
    ).quantize(Decimal("0.00000001"), rounding="ROUND_DOWN")


async def test_filter_failures_answer_minus_1013_with_filter_name(sim, http):
    _, body, _ = await order(http, sim, side="BUY", type="MARKET", quantity="0.000001")
    assert body == {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
    _, body, _ = await order(http, sim, side="BUY", type="LIMIT", timeInForce="GTC",
                             quantity="0.001", price="10000.001")  # fmt: skip
    assert body == {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}
    _, body, _ = await order(http, sim, side="BUY", type="MARKET", quantity="0.00010")
    assert body == {"code": -1013, "msg": "Filter failure: NOTIONAL"}


async def test_insufficient_balance_answers_minus_2010(sim, http):
    status, body, _ = await order(http, sim, side="BUY", type="MARKET", quantity="100")
    assert (status, body) == (
        400,
        {"code": -2010, "msg": "Account has insufficient balance for requested action."},
    )


async def test_invalid_symbol_and_missing_parameters(sim, http):
    _, body, _ = await call(http, sim, "POST", "/api/v3/order",
                            {"symbol": "NOPE", "side": "BUY", "type": "MARKET", "quantity": "1"}, signed=True)  # fmt: skip
    assert body["code"] == -1121
    _, body, _ = await order(http, sim, side="BUY", type="LIMIT", quantity="0.001", price="20000")
    assert body == {
        "code": -1102,
        "msg": "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
    }
    _, body, _ = await order(http, sim, side="SELL", type="STOP_LOSS", quantity="0.001")
    assert body == {
        "code": -1102,
        "msg": "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed.",
    }


async def test_limit_order_rests_locks_funds_and_cancels(sim, http):
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    limit = (price * Decimal("0.9")).quantize(Decimal("0.01"))
    status, body, _ = await order(http, sim, side="BUY", type="LIMIT", timeInForce="GTC",
                                  quantity="0.01", price=str(limit), newClientOrderId="rest-1")  # fmt: skip
    assert status == 200 and body["status"] == "NEW"
    assert sim.account().balance("USDT").locked == limit * Decimal("0.01")
    _, open_orders, _ = await call(
        http, sim, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, signed=True
    )
    assert [o["clientOrderId"] for o in open_orders] == ["rest-1"]
    _, dup, _ = await order(http, sim, side="BUY", type="LIMIT", timeInForce="GTC",
                            quantity="0.01", price=str(limit), newClientOrderId="rest-1")  # fmt: skip
    assert dup == {"code": -2010, "msg": "Duplicate order sent."}
    _, queried, _ = await call(http, sim, "GET", "/api/v3/order",
                               {"symbol": "BTCUSDT", "origClientOrderId": "rest-1"}, signed=True)  # fmt: skip
    assert queried["status"] == "NEW" and queried["orderId"] == body["orderId"]
    _, canceled, _ = await call(http, sim, "DELETE", "/api/v3/order",
                                {"symbol": "BTCUSDT", "orderId": body["orderId"]}, signed=True)  # fmt: skip
    assert canceled["status"] == "CANCELED" and canceled["origClientOrderId"] == "rest-1"
    assert sim.account().balance("USDT").locked == 0
    _, again, _ = await call(http, sim, "DELETE", "/api/v3/order",
                             {"symbol": "BTCUSDT", "orderId": body["orderId"]}, signed=True)  # fmt: skip
    assert again == {"code": -2011, "msg": "Unknown order sent."}


async def test_query_of_unknown_order_answers_minus_2013(sim, http):
    status, body, _ = await call(http, sim, "GET", "/api/v3/order",
                                 {"symbol": "BTCUSDT", "origClientOrderId": "never"}, signed=True)  # fmt: skip
    assert (status, body) == (400, {"code": -2013, "msg": "Order does not exist."})
    _, body, _ = await call(http, sim, "GET", "/api/v3/order", {"symbol": "BTCUSDT"}, signed=True)
    assert body["code"] == -1102


async def test_order_test_validates_without_placing(sim, http):
    status, body, _ = await call(http, sim, "POST", "/api/v3/order/test",
                                 {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}, signed=True)  # fmt: skip
    assert (status, body) == (200, {})
    assert sim.account().balance("BTC").free == Decimal("1")
    _, body, _ = await call(http, sim, "POST", "/api/v3/order/test",
                            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.000001"}, signed=True)  # fmt: skip
    assert body["msg"] == "Filter failure: LOT_SIZE"


async def test_user_data_stream_reports_market_fill(sim, http):
    ws, sub_id = await subscribe_user_data(http, sim)
    _status, body, _ = await order(http, sim, side="BUY", type="MARKET", quantity="0.01",
                                  newClientOrderId="ud-1")  # fmt: skip
    events = await next_events(ws, 3)
    assert [e["subscriptionId"] for e in events] == [sub_id] * 3
    new, trade, position = (e["event"] for e in events)
    assert (new["e"], new["x"], new["X"], new["c"]) == ("executionReport", "NEW", "NEW", "ud-1")
    assert (trade["x"], trade["X"], trade["l"]) == ("TRADE", "FILLED", "0.01000000")
    assert trade["i"] == body["orderId"] and trade["N"] == "BTC"
    assert position["e"] == "outboundAccountPosition"
    assert {b["a"] for b in position["B"]} == {"BTC", "USDT"}
    await ws.close()


async def test_resting_limit_fills_when_the_replayed_price_crosses(sim, http):
    ws, _ = await subscribe_user_data(http, sim)
    price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
    limit = (price * Decimal("0.999")).quantize(Decimal("0.01"))
    _, body, _ = await order(http, sim, side="BUY", type="LIMIT", timeInForce="GTC",
                             quantity="0.01", price=str(limit))  # fmt: skip
    assert body["status"] == "NEW"
    await next_events(ws, 2)  # NEW + position (funds locked)
    # At speed 0 the replay advances only while a market stream listens.
    market = await http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]))
    sim.clock.resume()
    trade, _position = (e["event"] for e in await next_events(ws, 2))
    sim.clock.pause()
    await market.close()
    assert (trade["x"], trade["X"], trade["L"], trade["m"]) == (
        "TRADE",
        "FILLED",
        f"{limit:.8f}",
        True,
    )
    assert sim.market.price_at("BTCUSDT", trade["T"]) is not None
    _, queried, _ = await call(http, sim, "GET", "/api/v3/order",
                               {"symbol": "BTCUSDT", "orderId": body["orderId"]}, signed=True)  # fmt: skip
    assert queried["status"] == "FILLED"
    assert sim.account().balance("USDT").locked == 0
    await ws.close()


async def test_ws_api_rejects_bad_signature_and_answers_ping_and_time(sim, http):
    async with http.ws_connect(sim.ws_api_url) as ws:
        params = {"apiKey": KEY, "timestamp": sim.server_time_ms(), "signature": "00" * 32}
        await ws.send_str(
            orjson.dumps(
                {"id": 1, "method": "userDataStream.subscribe.signature", "params": params}
            ).decode()
        )
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["status"] == 400 and answer["error"]["code"] == -1022
        await ws.send_str('{"id": 2, "method": "time"}')
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["result"] == {"serverTime": sim.server_time_ms()}
        await ws.send_str('{"id": 3, "method": "ping"}')
        assert orjson.loads((await ws.receive(timeout=5)).data)["result"] == {}


async def test_ws_api_order_place_uses_the_same_engine(sim, http):
    async with http.ws_connect(sim.ws_api_url) as ws:
        params = {"apiKey": KEY, "newClientOrderId": "ws-1", "quantity": "0.01", "side": "BUY",
                  "symbol": "BTCUSDT", "timestamp": sim.server_time_ms(), "type": "MARKET"}  # fmt: skip
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        params["signature"] = hmac_signature(SECRET, payload)
        await ws.send_str(
            orjson.dumps({"id": "p", "method": "order.place", "params": params}).decode()
        )
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["status"] == 200 and answer["result"]["status"] == "FILLED"
    _, queried, _ = await call(http, sim, "GET", "/api/v3/order",
                               {"symbol": "BTCUSDT", "origClientOrderId": "ws-1"}, signed=True)  # fmt: skip
    assert queried["status"] == "FILLED"


async def test_orders_over_the_10s_limit_answer_429_minus_1015(http):
    async with BinanceSimulator(quick_config(accounts=(RICH,), orders_limit_10s=2)) as sim:
        for _ in range(2):
            status, _, _ = await order(http, sim, side="BUY", type="MARKET", quantity="0.001")
            assert status == 200
        status, body, _ = await order(http, sim, side="BUY", type="MARKET", quantity="0.001")
        assert status == 429 and body["code"] == -1015
        assert body["msg"] == "Too many new orders; current limit is 2 orders per 10 SECOND."


async def test_max_num_orders_counts_the_accounts_open_orders_on_the_symbol(http, tmp_path):
    info = read_exchange_info(EXCHANGE_INFO_FILE)
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    for f in btc["filters"]:
        if f["filterType"] == "MAX_NUM_ORDERS":
            f["maxNumOrders"] = 2  # the real entry allows 200
    path = tmp_path / "exchangeInfo.json"
    path.write_text(json.dumps(info))
    other = AccountSpec(api_key="otherKey1", api_secret="otherSecret", balances=RICH.balances)
    cfg = quick_config(accounts=(RICH, other), exchange_info_path=path)
    async with BinanceSimulator(cfg) as sim:
        price = sim.engine.current_price("BTCUSDT", sim.clock.now_ms())
        limit = str((price * Decimal("0.8")).quantize(Decimal("0.01")))
        params = {
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.001",
            "price": limit,
        }
        for _ in range(2):
            assert (await order(http, sim, **params))[0] == 200
        status, body, _ = await order(http, sim, **params)
        assert body == {"code": -1013, "msg": "Filter failure: MAX_NUM_ORDERS"}
        status, _, _ = await call(
            http, sim, "POST", "/api/v3/order", {"symbol": "BTCUSDT", **params},
            signed=True, key="otherKey1", secret="otherSecret",
        )  # fmt: skip
        assert status == 200


async def test_all_orders_and_my_trades_list_the_accounts_history(sim, http):
    await order(http, sim, side="BUY", type="MARKET", quantity="0.01", newClientOrderId="h-1")
    await order(http, sim, side="SELL", type="MARKET", quantity="0.005", newClientOrderId="h-2")
    status, orders, headers = await call(
        http, sim, "GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"}, signed=True
    )
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "22"  # 2 orders + 20
    assert [o["clientOrderId"] for o in orders] == ["h-1", "h-2"]
    _, trades, _ = await call(
        http, sim, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}, signed=True
    )
    assert [(t["isBuyer"], t["qty"]) for t in trades] == [
        (True, "0.01000000"),
        (False, "0.00500000"),
    ]
    assert trades[0]["commissionAsset"] == "BTC" and trades[1]["commissionAsset"] == "USDT"
    _, only, _ = await call(
        http, sim, "GET", "/api/v3/myTrades",
        {"symbol": "BTCUSDT", "orderId": orders[1]["orderId"]}, signed=True,
    )  # fmt: skip
    assert [t["orderId"] for t in only] == [orders[1]["orderId"]]


async def test_ws_api_bad_json_and_unknown_method_get_error_answers(sim, http):
    async with http.ws_connect(sim.ws_api_url) as ws:
        await ws.send_str("{nope")
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["status"] == 400 and answer["error"]["code"] == -1135
        await ws.send_str('{"id": 7, "method": "margin.borrow", "params": {}}')
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["id"] == 7 and answer["error"]["code"] == -1020
        await ws.send_str(
            '{"id": 8, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 3}}'
        )
        answer = orjson.loads((await ws.receive(timeout=5)).data)
        assert answer["error"] == {
            "code": -2036,
            "msg": "User Data Stream subscription not active.",
        }
