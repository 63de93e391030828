"""300 symbols (6 real, 294 derived from them) streamed over two connections."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import websockets
from sim_support import DAY2, drain, quick_config

from aegis.binance.sim.server import BinanceSimulator

MINUTES = 15


async def collect(url: str, until_ms: int, closed: dict[str, list]) -> None:
    async with websockets.connect(url, max_queue=1024) as ws:
        while True:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            k = frame["data"]["k"]
            if k["x"]:
                closed.setdefault(k["s"], []).append(k)
            if k["t"] >= until_ms and k["x"]:
                return


async def test_300_symbols_every_closed_bar_once_and_equal_to_rest_klines():
    cfg = quick_config(symbols=None, symbol_count=300, updates_per_bar=2,
                       start_ms=1680393600000)  # 2023-04-02: all six real series present  # fmt: skip
    async with BinanceSimulator(cfg) as sim:
        symbols = sorted(sim.market.series)
        assert len(symbols) == 300 and sum(sim.market.series[s].derived for s in symbols) == 294
        streams = [f"{s.lower()}@kline_1m" for s in symbols]
        start = sim.clock.now_ms()
        until = start + MINUTES * 60_000
        closed: dict[str, list] = {}
        conns = [
            websockets.connect(sim.stream_url(streams[:200]), max_queue=1024),
            websockets.connect(sim.stream_url(streams[200:]), max_queue=1024),
        ]
        wall = time.monotonic()
        async with conns[0] as a, conns[1] as b:
            sim.clock.resume()

            async def read(ws):
                while True:
                    k = orjson.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["k"]
                    if k["x"] and k["t"] < until:
                        closed.setdefault(k["s"], []).append(k)
                    if k["t"] >= until:
                        return

            await asyncio.gather(read(a), read(b))
            sim.clock.pause()
            await drain(a)
            await drain(b)
        elapsed = time.monotonic() - wall
        assert set(closed) == set(symbols)
        async with aiohttp.ClientSession() as http:
            for symbol in (symbols[0], "D001BTCUSDT", "BTCUSDT", symbols[-1]):
                url = (f"{sim.rest_url}/api/v3/klines?symbol={symbol}&interval=1m"
                       f"&startTime={start}&endTime={until - 1}")  # fmt: skip
                async with http.get(url) as resp:
                    rows = await resp.json()
                got = [(k["t"], k["o"], k["h"], k["l"], k["c"], k["v"]) for k in closed[symbol]]
                assert got == [tuple(r[:6]) for r in rows]
        for symbol, bars in closed.items():
            times = [k["t"] for k in bars]
            assert times == sorted(set(times)), symbol
        assert elapsed < 30
        assert start >= DAY2
