"""Market streams over real sockets: every closed bar once and in order, and Binance's rules."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import time

import aiohttp
import orjson
import pytest
import websockets
from sim_support import drain, quick_config

from aegis.binance.sim.server import BinanceSimulator

GAP_DAY_1230 = 1679661000000  # 2023-03-24 12:30 UTC, before the real outage (12:40–13:59)
GAP_DAY_1410 = 1679667000000


def recorded_bars(data_dir, symbol):
    path = data_dir / "klines" / f"binance_spot_{symbol}_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        next(fh)
        return {int(r.split(",")[0]): [float(x) for x in r.split(",")[1:]] for r in fh}


async def test_combined_stream_delivers_every_closed_bar_once_in_order_across_a_real_gap(data_dir):
    cfg = quick_config(symbols=("BTCUSDT", "ETHUSDT"), start_ms=GAP_DAY_1230, updates_per_bar=3)
    async with BinanceSimulator(cfg) as sim:
        url = sim.stream_url(["btcusdt@kline_1m", "ethusdt@kline_1m"])
        closed: dict[str, list[dict]] = {"BTCUSDT": [], "ETHUSDT": []}
        partial = 0
        async with websockets.connect(url) as ws:
            sim.clock.resume()
            while min(c[-1]["t"] if c else 0 for c in closed.values()) < GAP_DAY_1410:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                assert frame["stream"] == frame["data"]["s"].lower() + "@kline_1m"
                k = frame["data"]["k"]
                if k["x"]:
                    closed[k["s"]].append(k)
                else:
                    partial += 1
                    assert frame["data"]["E"] < k["T"]
            sim.clock.pause()
            await drain(ws)
        assert partial > 0
        for symbol, bars in closed.items():
            rec = recorded_bars(data_dir, symbol)
            expected = [t for t in sorted(rec) if GAP_DAY_1230 <= t <= bars[-1]["t"]]
            assert [b["t"] for b in bars] == expected  # every bar, once, in order
            assert not any(GAP_DAY_1230 + 600_000 <= t < GAP_DAY_1410 - 600_000 for t in expected)
            for b in bars:
                values = [float(b[f]) for f in ("o", "h", "l", "c", "v")]
                assert values == rec[b["t"]]
                assert set(b) == set("tTsifLohclvnxqVQB") | {"c"}


async def test_raw_stream_sends_unwrapped_events():
    async with BinanceSimulator(quick_config()) as sim:
        async with websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
            sim.clock.resume()
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            sim.clock.pause()
            await drain(ws)
        assert event["e"] == "kline" and event["s"] == "BTCUSDT" and "stream" not in event


async def test_subscribe_list_and_unsubscribe_follow_binance_replies():
    async with (
        BinanceSimulator(quick_config(symbols=("BTCUSDT", "ETHUSDT"))) as sim,
        websockets.connect(f"{sim.ws_url}/stream") as ws,
    ):
        await ws.send(
            '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":1}'
        )
        assert orjson.loads(await ws.recv()) == {"result": None, "id": 1}
        await ws.send('{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":2}')
        assert orjson.loads(await ws.recv()) == {"result": None, "id": 2}
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        assert orjson.loads(await ws.recv()) == {"result": ["ethusdt@kline_1m"], "id": 3}
        await asyncio.sleep(1.1)  # stay under 5 messages per second
        await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":4}')
        reply = orjson.loads(await ws.recv())
        assert reply["id"] == 4 and reply["error"]["code"] == 2
        await ws.send("{not json")
        assert orjson.loads(await ws.recv())["error"]["code"] == 3


async def test_more_than_five_messages_per_second_closes_with_1008():
    async with (
        BinanceSimulator(quick_config()) as sim,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{sim.ws_url}/stream") as ws,
    ):
        for i in range(6):
            await ws.send_str(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
        msg = None
        for _ in range(10):
            msg = await ws.receive(timeout=5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == 1008


async def test_pong_echoing_the_ping_payload_keeps_the_connection():
    async with (
        BinanceSimulator(quick_config(ping_interval_s=0.2, pong_timeout_s=1.0)) as sim,
        aiohttp.ClientSession() as http,
        http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]), autoping=False) as ws,
    ):
        pings = 0
        while pings < 8:  # 8 pings over ~1.6 s > the 1 s pong deadline
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING
            assert msg.data  # Binance's pings carry a payload to echo
            await ws.pong(msg.data)
            pings += 1
        assert not ws.closed


async def test_unanswered_or_wrong_pong_closes_the_connection():
    async with (
        BinanceSimulator(quick_config(ping_interval_s=0.2, pong_timeout_s=1.0)) as sim,
        aiohttp.ClientSession() as http,
        http.ws_connect(sim.stream_url(["btcusdt@kline_1m"]), autoping=False) as ws,
    ):
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(b"not-the-payload")  # an unsolicited pong does not count
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == 1008


async def test_connection_is_cut_after_24_hours_of_simulated_time():
    async with BinanceSimulator(quick_config(updates_per_bar=1)) as sim:
        url = sim.stream_url(["btcusdt@kline_1m"])
        opened_at = sim.clock.now_ms()
        async with websockets.connect(url) as ws:
            sim.clock.resume()
            last = None
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    last = orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]
            sim.clock.pause()
        assert closed.value.rcvd.code == 1000
        assert opened_at + 86_400_000 - 120_000 <= last["E"] <= opened_at + 86_400_000


async def test_too_many_streams_are_refused():
    async with BinanceSimulator(quick_config(max_streams_per_connection=3)) as sim:
        names = [f"sym{i}usdt@kline_1m" for i in range(4)]
        async with aiohttp.ClientSession() as http, http.get(sim.stream_url(names)) as resp:
            assert resp.status == 400
        async with websockets.connect(sim.stream_url(names[:3])) as ws:
            await ws.send(
                orjson.dumps({"method": "SUBSCRIBE", "params": names[3:], "id": 9}).decode()
            )
            reply = orjson.loads(await ws.recv())
            assert reply["error"]["code"] == 2 and "too many streams" in reply["error"]["msg"]


async def test_server_shutdown_is_announced_before_the_connections_close():
    async with (
        BinanceSimulator(quick_config()) as sim,
        websockets.connect(sim.stream_url(["btcusdt@kline_1m"])) as combined,
        websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as raw,
        websockets.connect(sim.ws_api_url) as api,
    ):
        await asyncio.sleep(0.05)  # let the server register all three
        await sim.shut_down_connections(notice_s=0.1)
        assert orjson.loads(await combined.recv())["stream"] == "!serverShutdown"
        assert orjson.loads(await raw.recv())["e"] == "serverShutdown"
        assert orjson.loads(await api.recv())["event"]["e"] == "serverShutdown"
        for ws in (combined, raw, api):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1001


async def test_ws_api_connection_is_cut_after_its_lifetime_and_pings_like_streams():
    cfg = quick_config(connection_lifetime_ms=30 * 60_000, ping_interval_s=0.2, pong_timeout_s=2)
    async with (
        BinanceSimulator(cfg) as sim,
        aiohttp.ClientSession() as http,
        http.ws_connect(sim.ws_api_url, autoping=False) as ws,
    ):
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.PING
        await ws.pong(msg.data)
        sim.clock.advance_to(sim.clock.now_ms() + 31 * 60_000)
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
        assert ws.close_code == 1000


async def test_a_step_sends_its_prebuilt_events_to_the_streams_listened_to_when_it_is_due():
    # Events are built shortly before their step: a stream subscribed since gets its event
    # built then, one unsubscribed since gets nothing, the others get what was built.
    cfg = quick_config(symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), updates_per_bar=1)
    async with (
        BinanceSimulator(cfg) as sim,
        websockets.connect(sim.stream_url(["btcusdt@kline_1m", "ethusdt@kline_1m"])) as ws,
    ):
        replay, minute = sim.replay, sim.clock.now_ms()
        t = minute + 60_000
        built = replay._events(minute, 1.0, t, {})
        assert set(built) == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
        stale = {"solusdt@kline_1m": built["ethusdt@kline_1m"].replace("ETHUSDT", "SOLUSDT")}
        await replay._step(minute, 1, 1, t, {}, {"ethusdt@kline_1m": built["ethusdt@kline_1m"],
                                                 **stale})  # fmt: skip
        frames = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert {f["stream"] for f in frames} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
        for f in frames:  # the late one is built as the early one was
            assert f["data"] == orjson.loads(built[f["stream"]])
        assert replay.events_published == 2
        assert await drain(ws) == 0


async def test_timed_replay_runs_at_the_speed_factor():
    cfg = quick_config(speed=240.0, start_paused=False, updates_per_bar=4)
    async with (
        BinanceSimulator(cfg) as sim,
        websockets.connect(sim.stream_url(["btcusdt@kline_1m"])) as ws,
    ):
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["E"]
        wall = time.monotonic()
        events = [orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["E"] for _ in range(8)]
        elapsed = time.monotonic() - wall
        assert [b - a for a, b in itertools.pairwise([first, *events])] == [15_000] * 8
        # 8 updates of 15 simulated seconds at 240x: 0.5 s of wall time.
        assert 0.35 <= elapsed <= 1.5
        assert abs(sim.clock.now_ms() - events[-1]) <= 240 * 1000 * 1.0


async def test_stepped_replay_stands_still_without_listeners_unless_told_otherwise():
    async with BinanceSimulator(quick_config(start_paused=False)) as sim:
        start = sim.clock.now_ms()
        await asyncio.sleep(0.2)
        assert sim.clock.now_ms() == start  # nobody listens: no bar goes by unseen
        async with websockets.connect(sim.stream_url(["btcusdt@kline_1m"])) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            assert sim.clock.now_ms() > start
            sim.clock.pause()
            await drain(ws)
    async with BinanceSimulator(
        quick_config(start_paused=False, hold_without_listeners=False)
    ) as sim:
        start = sim.clock.now_ms()
        await asyncio.sleep(0.2)
        assert sim.clock.now_ms() > start + 3_600_000


async def test_connection_attempts_over_the_5_minute_limit_are_refused_with_429():
    async with BinanceSimulator(quick_config(max_connects_per_5min=2)) as sim:
        for _ in range(2):
            async with websockets.connect(f"{sim.ws_url}/ws"):
                pass
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{sim.ws_url}/ws")
        assert refused.value.response.status_code == 429
        assert sim.status()["stream_connects_refused"] == 1
