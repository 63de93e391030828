"""UserDataStream over real sockets: the simulator's WebSocket API, and a scripted local server
for what the simulator cannot be told to do (a chosen ping payload, garbage, serverShutdown)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import aiohttp
import orjson
import pytest
from aiohttp import web
from sim_support import KEY, SECRET, call, quick_config

from aegis.binance.account import AccountCache
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.user_events import OrderUpdate
from aegis.binance.userdata import UserDataStream


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config()) as s:
        yield s


def stream_for(url: str, sim_or_clock, cache: AccountCache, **kwargs) -> UserDataStream:
    server_time = getattr(sim_or_clock, "server_time_ms", sim_or_clock)
    kwargs.setdefault("backoff_base_s", 0.05)
    kwargs.setdefault("backoff_cap_s", 0.2)
    return UserDataStream(
        url, KEY, kwargs.pop("secret", SECRET), server_time_ms=server_time,
        on_event=cache.apply, rng=random.Random(1), **kwargs,
    )  # fmt: skip


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def market_buy(sim, client_id: str) -> None:
    async with aiohttp.ClientSession() as http:
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
                  "newClientOrderId": client_id}  # fmt: skip
        status, body, _ = await call(http, sim, "POST", "/api/v3/order", params, signed=True)
        assert status == 200, body


async def test_stream_events_feed_the_cache_and_first_connect_asks_for_reconciliation(sim):
    cache = AccountCache()
    connected = []
    stream = stream_for(sim.ws_api_url, sim, cache, on_connected=connected.append)
    stream.start()
    try:
        await stream.wait_connected(5)
        assert stream.reconcile_due.is_set() and connected == [1]
        await market_buy(sim, "ud-1")
        await until(lambda: cache.balance("BTC").free > 0)
        assert cache.order("ud-1").status == "FILLED"
        assert cache.balance("BTC").free == Decimal("0.001") * Decimal("0.999")
        assert cache.balance("USDT").free < Decimal(10000)
    finally:
        await stream.stop()


async def test_stream_answers_server_pings_and_outlives_the_pong_deadline():
    # Pings every 0.4 s; a client that does not echo them is closed after 1.2 s.
    config = quick_config(ping_interval_s=0.4, pong_timeout_s=1.2)
    async with BinanceSimulator(config) as sim:
        stream = stream_for(sim.ws_api_url, sim, AccountCache())
        stream.start()
        try:
            await stream.wait_connected(5)
            await asyncio.sleep(2.5)
            assert stream.connects == 1 and stream.pings_answered >= 4
            assert len(sim.ws_api.connections) == 1
        finally:
            await stream.stop()


async def test_stream_reconnects_after_a_drop_and_signals_reconciliation_again(sim):
    cache = AccountCache()
    stream = stream_for(sim.ws_api_url, sim, cache)
    stream.start()
    try:
        await stream.wait_connected(5)
        stream.reconcile_due.clear()
        assert sim.drop_ws_api_connections() == 1
        await until(lambda: stream.connects == 2)
        assert stream.reconcile_due.is_set()
        await market_buy(sim, "ud-after-drop")
        await until(lambda: cache.order("ud-after-drop") is not None)
    finally:
        await stream.stop()


async def test_stream_rolls_over_before_lifetime_with_overlap_and_loses_no_event(sim):
    cache = AccountCache()
    stream = stream_for(sim.ws_api_url, sim, cache, max_connection_s=0.4)
    stream.start()
    try:
        await stream.wait_connected(5)
        for i in range(6):
            await market_buy(sim, f"ud-roll-{i}")
            await asyncio.sleep(0.15)
        await until(lambda: all(cache.order(f"ud-roll-{i}") for i in range(6)))
        assert stream.connects >= 3 and "closed" not in stream.errors
        assert len(sim.ws_api.connections) <= 2  # the old one is closed after the overlap
    finally:
        await stream.stop()


async def test_stream_with_refused_key_stops_with_failure_instead_of_retrying(sim):
    stream = stream_for(sim.ws_api_url, sim, AccountCache(), secret="wrong-secret")
    stream.start()
    try:
        with pytest.raises(Exception, match="code -1022"):
            await stream.wait_connected(5)
        assert stream.failure is not None and stream.failure.fatal and stream.connects == 0
    finally:
        await stream.stop()


@pytest.fixture
async def scripted_server():
    """A WebSocket API look-alike: answers the subscription, then plays ``script`` frames."""
    state = {"pongs": [], "connections": 0, "subscribe_params": []}

    async def handle(request):
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        state["connections"] += 1
        first = state["connections"] == 1
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.PONG:
                state["pongs"].append(bytes(msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                req = orjson.loads(msg.data)
                state["subscribe_params"].append(req["params"])
                await ws.send_str(
                    orjson.dumps(
                        {"id": req["id"], "status": 200, "result": {"subscriptionId": 0}}
                    ).decode()
                )
                if first:
                    await ws.ping(b"payload-1763")
                    await ws.send_str("{not json")
                    await ws.send_str('{"subscriptionId":0,"event":{"e":"executionReport"}}')
                    await ws.send_str('{"event":{"e":"serverShutdown","E":5}}')
        return ws  # fmt: skip

    app = web.Application()
    app.router.add_get("/ws-api/v3", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/ws-api/v3", state
    await runner.cleanup()


async def test_stream_echoes_ping_payload_drops_garbage_and_moves_on_server_shutdown(
    scripted_server,
):
    url, state = scripted_server
    events: list = []
    stream = UserDataStream(url, KEY, SECRET, server_time_ms=lambda: 1_700_000_000_000,
                            on_event=events.append)  # fmt: skip
    stream.start()
    try:
        await until(lambda: state["connections"] == 2 and stream.connects == 2)
        assert state["pongs"] == [b"payload-1763"]
        assert stream.errors["malformed: not JSON"] == 1
        assert stream.errors["malformed: executionReport: missing field execution type"] == 1
        assert not [e for e in events if isinstance(e, OrderUpdate)]
        params = state["subscribe_params"][0]
        assert set(params) == {"apiKey", "recvWindow", "timestamp", "signature"}
        assert params["timestamp"] == 1_700_000_000_000 and len(params["signature"]) == 64
    finally:
        await stream.stop()


def test_stream_with_non_positive_lifetime_is_refused():
    with pytest.raises(ValueError, match="max_connection_s"):
        UserDataStream("ws://127.0.0.1:1", KEY, SECRET, server_time_ms=lambda: 0,
                       on_event=lambda e: None, max_connection_s=0)  # fmt: skip
