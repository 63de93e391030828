"""Proof of faithfulness: python-binance, unmodified, talks to the simulator.

The only changes are the ones the library offers for other deployments: the base URL
(``client.API_URL``, ``BinanceSocketManager.STREAM_URL``) and ``timestamp_offset`` from
``get_server_time()`` — the library's own clock-sync mechanism, needed because the simulated
clock replays 2023.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from sim_support import KEY, SECRET, quick_config

from aegis.binance.sim.config import AccountSpec
from aegis.binance.sim.server import BinanceSimulator

binance_client = pytest.importorskip("binance.client")
binance_exceptions = pytest.importorskip("binance.exceptions")
binance_ws = pytest.importorskip("binance.ws.streams")
binance_async = pytest.importorskip("binance.async_client")


def sync_session(rest_url: str) -> list[object]:
    client = binance_client.Client(KEY, SECRET, ping=False)
    client.API_URL = rest_url + "/api"
    client.timestamp_offset = client.get_server_time()["serverTime"] - int(time.time() * 1000)
    klines = client.get_klines(symbol="BTCUSDT", interval="1m", limit=10)
    info = client.get_symbol_info("BTCUSDT")
    order = client.order_market_buy(symbol="BTCUSDT", quantity="0.01", newClientOrderId="pb-1")
    queried = client.get_order(symbol="BTCUSDT", origClientOrderId="pb-1")
    account = client.get_account()
    try:
        client.order_market_buy(symbol="BTCUSDT", quantity="0.000001")
        rejection = None
    except binance_exceptions.BinanceAPIException as exc:
        rejection = (exc.status_code, exc.code, exc.message)
    client.close_connection()
    return [klines, info, order, queried, account, rejection]


async def test_python_binance_rest_client_reads_klines_and_places_an_order():
    rich = AccountSpec(balances=(("USDT", Decimal("50000")),))
    async with BinanceSimulator(quick_config(accounts=(rich,))) as sim:
        klines, info, order, queried, account, rejection = await asyncio.to_thread(
            sync_session, sim.rest_url
        )
        expected = sim.market.kline_rows("BTCUSDT", sim.clock.now_ms(), None, None, 10)
        assert klines == expected and len(klines) == 10
        assert info["symbol"] == "BTCUSDT"
        assert order["status"] == "FILLED" and order["clientOrderId"] == "pb-1"
        assert queried["orderId"] == order["orderId"]
        balances = {b["asset"]: Decimal(b["free"]) for b in account["balances"]}
        assert balances["BTC"] == Decimal("0.00999")  # 0.01 minus 0.1% commission
        assert rejection == (400, -1013, "Filter failure: LOT_SIZE")
        paths = {e.path for e in sim.request_log.entries()}
        assert {"/api/v3/klines", "/api/v3/order", "/api/v3/account"} <= paths


async def test_python_binance_socket_manager_receives_kline_events():
    async with BinanceSimulator(quick_config()) as sim:
        client = binance_async.AsyncClient(KEY, SECRET)
        try:
            manager = binance_ws.BinanceSocketManager(client)
            manager.STREAM_URL = sim.ws_url + "/"
            async with manager.kline_socket("BTCUSDT") as stream:
                sim.clock.resume()
                event = await asyncio.wait_for(stream.recv(), 10)
                sim.clock.pause()
        finally:
            await client.close_connection()
        assert event["e"] == "kline" and event["s"] == "BTCUSDT"
        assert set(event["k"]) >= {"t", "T", "o", "h", "l", "c", "v", "x"}
