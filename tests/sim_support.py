"""Helpers shared by the simulator tests (signed requests, quick configs)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from aegis.binance.signing import hmac_signature, signed_query
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


async def subscribe_user_data(session: aiohttp.ClientSession, sim: Any):
    """Open a WS API connection subscribed to the default account's events; (ws, sub id)."""
    ws = await session.ws_connect(sim.ws_api_url)
    params = {"apiKey": KEY, "timestamp": sim.server_time_ms()}
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["signature"] = hmac_signature(SECRET, payload)
    await ws.send_str(
        orjson.dumps(
            {"id": "sub-1", "method": "userDataStream.subscribe.signature", "params": params}
        ).decode()
    )
    answer = orjson.loads((await ws.receive(timeout=5)).data)
    assert answer["id"] == "sub-1" and answer["status"] == 200
    return ws, answer["result"]["subscriptionId"]


async def next_events(ws: Any, count: int) -> list[dict]:
    """The next ``count`` user-data frames (``{"subscriptionId", "event"}``) of ``ws``."""
    out = []
    while len(out) < count:
        msg = orjson.loads((await ws.receive(timeout=5)).data)
        if "event" in msg:
            out.append(msg)
    return out


async def events_until(ws: Any, done: Any) -> list[dict]:
    """User-data events of ``ws`` up to and including the first one for which ``done`` holds."""
    out = []
    while not out or not done(out[-1]):
        out.append((await next_events(ws, 1))[0]["event"])
    return out
