"""Each injected fault, observed from the client side over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import time
from decimal import Decimal

import aiohttp
import orjson
import pytest
import websockets
from sim_support import call, drain, quick_config

from aegis.binance.sim.config import AccountSpec
from aegis.binance.sim.faults import FaultPlan, FrameAction
from aegis.binance.sim.server import BinanceSimulator

STREAMS = ["btcusdt@kline_1m"]


async def read_frames(ws, count: int) -> list[str]:
    return [await asyncio.wait_for(ws.recv(), 5) for _ in range(count)]


async def test_drop_every_n_frames_aborts_the_connection_without_close_frame():
    async with BinanceSimulator(quick_config(), FaultPlan(drop_every_n_frames=5)) as sim:
        async with websockets.connect(sim.stream_url(STREAMS)) as ws:
            sim.clock.resume()
            got = []
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                while True:
                    got.append(await asyncio.wait_for(ws.recv(), 5))
            sim.clock.pause()
        assert len(got) == 4
        assert closed.value.rcvd is None  # no close frame: a dead TCP path
        assert sim.faults.injected["drop"] == 1


async def test_malformed_frames_come_in_addition_to_every_real_frame():
    async with (
        BinanceSimulator(quick_config(), FaultPlan(malformed_every_n_frames=3)) as sim,
        websockets.connect(sim.stream_url(STREAMS)) as ws,
    ):
        sim.clock.resume()
        frames = await read_frames(ws, 24)
        sim.clock.pause()
        await drain(ws)
    valid, bad = [], 0
    for text in frames:
        try:
            k = orjson.loads(text)["data"]["k"]
            if k["o"] == "NaN" or float(k["h"]) < float(k["l"]):
                raise ValueError
            valid.append((k["t"], k["x"]))
        except (ValueError, KeyError, TypeError):
            bad += 1
    assert bad == 6  # every 3rd data frame is preceded by a malformed one
    closed_times = [t for t, x in valid if x]
    assert closed_times == sorted(set(closed_times))
    assert all(b - a == 60_000 for a, b in itertools.pairwise(closed_times))


async def test_duplicate_and_reordered_frames_are_injected():
    faults = FaultPlan(duplicate_every_n_frames=4, reorder_every_n_frames=7)
    async with (
        BinanceSimulator(quick_config(updates_per_bar=4), faults) as sim,
        websockets.connect(sim.stream_url(STREAMS)) as ws,
    ):
        sim.clock.resume()
        events = [orjson.loads(f)["data"]["E"] for f in await read_frames(ws, 40)]
        sim.clock.pause()
        await drain(ws)
    duplicates = sum(1 for a, b in itertools.pairwise(events) if a == b)
    backwards = sum(1 for a, b in itertools.pairwise(events) if b < a)
    assert duplicates >= 5 and backwards >= 3


async def test_stall_holds_frames_then_delivers_them():
    # A stepped replay runs up to a queue ahead of the reader: keep the 24 h cut out of reach.
    async with BinanceSimulator(quick_config(connection_lifetime_ms=10**12)) as sim:
        async with websockets.connect(sim.stream_url(STREAMS)) as ws:
            sim.clock.resume()
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["k"]["t"]
            sim.clock.pause()
            await drain(ws)  # nothing in flight: what follows is the stall alone
            sim.faults.stall(0.6)
            started = time.monotonic()
            sim.clock.resume()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.4)
            nxt = orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["k"]["t"]
            assert time.monotonic() - started >= 0.5
            sim.clock.pause()
            await drain(ws)
        assert nxt > first


async def test_429_storm_and_forced_418_answer_then_recover():
    async with BinanceSimulator(quick_config()) as sim, aiohttp.ClientSession() as http:
        sim.faults.storm_429(2, retry_after_s=3)
        answers = [await call(http, sim, "GET", "/api/v3/time") for _ in range(3)]
        assert [a[0] for a in answers] == [429, 429, 200]
        assert answers[0][2]["Retry-After"] == "3" and answers[0][1]["code"] == -1003
        sim.faults.ban(0.5)
        status, _body, headers = await call(http, sim, "GET", "/api/v3/time")
        assert status == 418 and headers["Retry-After"] == "1"
        await asyncio.sleep(0.6)
        assert (await call(http, sim, "GET", "/api/v3/time"))[0] == 200


async def test_clock_skew_moves_server_time_and_the_timestamp_check():
    async with BinanceSimulator(quick_config()) as sim, aiohttp.ClientSession() as http:
        unskewed = sim.clock.now_ms()
        sim.faults.clock_skew_ms = 7000
        _, body, _ = await call(http, sim, "GET", "/api/v3/time")
        assert body["serverTime"] == unskewed + 7000
        status, body, _ = await call(
            http, sim, "GET", "/api/v3/account", signed=True, timestamp_ms=unskewed
        )
        assert body["code"] == -1021  # a client that did not resync is 7 s behind
        status, _, _ = await call(http, sim, "GET", "/api/v3/account", signed=True)
        assert status == 200  # resynced to the skewed server time


async def test_5xx_after_placing_leaves_an_order_the_client_can_find_by_client_id():
    rich = AccountSpec(balances=(("USDT", Decimal("100000")),))
    async with (
        BinanceSimulator(quick_config(accounts=(rich,))) as sim,
        aiohttp.ClientSession() as http,
    ):
        sim.faults.fail_orders_after_placing(1)
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01",
                  "newClientOrderId": "intent-5xx"}  # fmt: skip
        status, body, _ = await call(http, sim, "POST", "/api/v3/order", params, signed=True)
        assert status == 503 and body["code"] == -1007
        status, found, _ = await call(
            http, sim, "GET", "/api/v3/order",
            {"symbol": "BTCUSDT", "origClientOrderId": "intent-5xx"}, signed=True,
        )  # fmt: skip
        assert status == 200 and found["status"] == "FILLED"
        assert sim.account().balance("BTC").free > 0


async def test_dropping_ws_api_connections_ends_user_data_streams():
    async with BinanceSimulator(quick_config()) as sim, websockets.connect(sim.ws_api_url) as ws:
        await ws.send('{"id":1,"method":"ping"}')
        await asyncio.wait_for(ws.recv(), 5)
        assert sim.drop_ws_api_connections() == 1
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)


def test_fault_plan_update_rejects_unknown_fields_and_reset_turns_all_off():
    plan = FaultPlan()
    plan.update(drop_every_n_frames="3", stall_seconds=0.1)
    assert plan.drop_every_n_frames == 3 and plan.stalled_for() > 0
    with pytest.raises(ValueError, match="unknown fault fields"):
        plan.update(explode=True)
    plan.reset()
    assert plan.drop_every_n_frames == 0 and plan.stalled_for() == 0
    assert plan.injected == {"stall": 1}


def test_frames_pass_in_bulk_only_while_no_frame_fault_or_stall_is_on():
    plan = FaultPlan()
    assert plan.pass_clean(300) and plan.frames_seen == 300  # counted, as one by one
    for fault in ("drop", "malformed", "duplicate", "reorder"):
        plan.update(**{f"{fault}_every_n_frames": 7})
        assert not plan.pass_clean(5) and plan.frames_seen == 300
        plan.reset()
    plan.stall(5.0)
    assert not plan.pass_clean(5)
    plan.reset()
    assert plan.pass_clean(1) and plan.frames_seen == 301
    plan.update(duplicate_every_n_frames=3)
    assert plan.next_frame_action() is FrameAction.SEND  # the count goes on: frame 302
    assert plan.next_frame_action() is FrameAction.DUPLICATE  # 303


async def test_delayed_order_answer_leaves_the_order_placed_when_the_client_gives_up():
    rich = AccountSpec(balances=(("USDT", Decimal("100000")),))
    async with (
        BinanceSimulator(quick_config(accounts=(rich,))) as sim,
        aiohttp.ClientSession() as http,
    ):
        sim.faults.order_response_delay_s = 0.5
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01",
                  "newClientOrderId": "slow-1"}  # fmt: skip
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                call(http, sim, "POST", "/api/v3/order", params, signed=True), 0.2
            )
        sim.faults.order_response_delay_s = 0.0
        status, found, _ = await call(
            http, sim, "GET", "/api/v3/order",
            {"symbol": "BTCUSDT", "origClientOrderId": "slow-1"}, signed=True,
        )  # fmt: skip
        assert status == 200 and found["status"] == "FILLED"
