"""Binance simulator throughput: what it can feed a client, and how fast it answers orders.

The simulator runs in its own process (``SimulatorProcess``), the client here, over loopback:
* stream frames/s delivered to one reader of 300 symbols (6 real + 294 derived) over two
  combined-stream connections, stepped replay (speed 0, as fast as the reader takes them);
* REST round trip of a signed MARKET order (POST /api/v3/order), p50/p99 over sequential orders;
* REST ``klines`` (limit 1000) round trip p50.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import orjson
import websockets

from aegis.binance.signing import signed_query
from aegis.binance.sim import SimulatorProcess
from aegis.binance.sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET

STREAM_SECONDS = 3.0
ORDERS = 300


async def _stream_rate(proc: SimulatorProcess, symbols: list[str]) -> tuple[int, float]:
    streams = [f"{s.lower()}@kline_1m" for s in symbols]
    base = proc.ws_url + "/stream?streams="
    async with (
        websockets.connect(base + "/".join(streams[:200]), max_queue=4096) as a,
        websockets.connect(base + "/".join(streams[200:]), max_queue=4096) as b,
    ):
        proc.resume()
        count = 0
        started = time.perf_counter()
        deadline = started + STREAM_SECONDS

        async def read(ws) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                orjson.loads(await ws.recv())
                count += 1

        await asyncio.gather(read(a), read(b))
        elapsed = time.perf_counter() - started
        proc.pause()
    return count, elapsed


async def _rest_latency(proc: SimulatorProcess) -> dict[str, float]:
    headers = {"X-MBX-APIKEY": DEFAULT_API_KEY}
    async with aiohttp.ClientSession() as http:
        async with http.get(proc.rest_url + "/api/v3/time") as resp:
            offset = (await resp.json())["serverTime"] - int(time.time() * 1000)
        orders = []
        for i in range(ORDERS):
            params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                      "quantity": "0.00100", "newClientOrderId": f"bench-{i}"}  # fmt: skip
            query = signed_query(params, DEFAULT_API_SECRET, int(time.time() * 1000) + offset)
            t0 = time.perf_counter_ns()
            async with http.post(proc.rest_url + "/api/v3/order?" + query, headers=headers) as r:
                body = await r.json()
            orders.append((time.perf_counter_ns() - t0) / 1000)
            if body.get("status") != "FILLED":
                raise RuntimeError(f"order not filled: {body}")
        klines = []
        url = proc.rest_url + "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"
        for _ in range(20):
            t0 = time.perf_counter_ns()
            async with http.get(url) as r:
                await r.read()
            klines.append((time.perf_counter_ns() - t0) / 1e6)
    orders.sort()
    return {
        "order_roundtrip_us_p50": statistics.median(orders),
        "order_roundtrip_us_p99": orders[int(0.99 * (len(orders) - 1))],
        "klines_1000_ms_p50": statistics.median(klines),
    }


def run() -> dict:
    args = ["--symbol-count", "300", "--speed", "0", "--updates-per-bar", "2",
            "--start-paused", "--start", "2023-04-02T00:00", "--balance", "USDT=10000000",
            "--weight-limit", "1000000", "--orders-per-10s", "100000",
            "--log-level", "WARNING"]  # fmt: skip
    with SimulatorProcess(args) as proc:
        from aegis.binance.sim.config import KLINES_DIR
        from aegis.binance.sim.data import load_series

        symbols = sorted(load_series([KLINES_DIR], symbol_count=300))
        frames, elapsed = asyncio.run(_stream_rate(proc, symbols))
        rest = asyncio.run(_rest_latency(proc))
    result = {
        "stream_symbols": len(symbols),
        "stream_frames": frames,
        "stream_frames_per_s": frames / elapsed,
        **rest,
    }
    print("Binance simulator (separate process, loopback)")
    print(f"  stream frames/s to one reader, 300 symbols : {result['stream_frames_per_s']:>10.0f}")
    print(f"  MARKET order round trip p50 / p99 (us)     : "
          f"{rest['order_roundtrip_us_p50']:>8.0f} / {rest['order_roundtrip_us_p99']:.0f}")  # fmt: skip
    print(f"  klines limit=1000 round trip p50 (ms)      : {rest['klines_1000_ms_p50']:>10.2f}")
    return result


if __name__ == "__main__":
    run()
