"""Helpers shared by the simulator tests (signed requests, quick configs)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import aiohttp

from aegis.binance.signing import signed_query
from aegis.binance.sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig

KEY = DEFAULT_API_KEY
SECRET = DEFAULT_API_SECRET
BTC_FIRST_OPEN = 1679004900000  # first bar of the bundled BTCUSDT recording
DAY2 = 1679097600000  # 2023-03-18 00:00 UTC: a day of history behind it


def quick_config(**overrides: Any) -> SimConfig:
    """A frozen-clock, single-symbol simulator that starts with a day of history."""
    base = SimConfig(
        symbols=("BTCUSDT",), speed=0, start_paused=True, updates_per_bar=2, start_ms=DAY2
    )
    return replace(base, **overrides)


async def call(
    session: aiohttp.ClientSession,
    sim: Any,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    signed: bool = False,
    key: str | None = KEY,
    secret: str = SECRET,
    timestamp_ms: int | None = None,
    recv_window: int = 5000,
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    """Send one REST request the way a Binance client does; return (status, json, headers)."""
    params = dict(params or {})
    if signed:
        ts = sim.server_time_ms() if timestamp_ms is None else timestamp_ms
        query = signed_query(params, secret, ts, recv_window)
    else:
        query = "&".join(f"{k}={v}" for k, v in params.items())
    headers = {"X-MBX-APIKEY": key} if key else {}
    url = f"{sim.rest_url}{path}" + (f"?{query}" if query else "")
    async with session.request(method, url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def wall() -> float:
    return time.time()


async def drain(ws: Any, quiet_s: float = 0.2) -> int:
    """Read a ``websockets`` connection until it is quiet; return the frames discarded.

    A ``websockets`` client that stops reading pauses its socket after 16 queued frames and
    then cannot see the server's close frame, so its close() would wait for its timeout.
    """
    import asyncio

    count = 0
    while True:
        try:
            await asyncio.wait_for(ws.recv(), quiet_s)
        except TimeoutError:
            return count
        count += 1
