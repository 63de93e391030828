"""Market stream endpoints: ``/stream?streams=...`` (combined) and ``/ws/<stream>`` (raw).

Supports live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``, at most 1024 streams per
connection, 300 connection attempts per 5 minutes per IP (HTTP 429 beyond). Only
``<symbol>@kline_1m`` streams carry data (the recordings are 1m klines);
other stream names are refused with an error rather than silently starved.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque

import orjson
from aiohttp import WSMsgType, web

from aegis.binance.sim.clock import SimClock
from aegis.binance.sim.faults import FaultPlan
from aegis.binance.sim.ws_connection import ConnectionRules, WsConnection

LOG = logging.getLogger(__name__)
_STREAM_RE = re.compile(r"^([a-z0-9]+)@kline_1m$")


class StreamError(ValueError):
    """A stream name or request the simulator refuses."""


def stream_symbol(name: str) -> str:
    """Upper-case symbol of a kline stream name, or ``StreamError``."""
    m = _STREAM_RE.match(name)
    if not m:
        raise StreamError(f"unsupported stream name '{name}' (only <symbol>@kline_1m)")
    return m.group(1).upper()


class StreamConnection(WsConnection):
    """A market-stream connection: its subscriptions and framing (combined or raw)."""

    combined: bool = True

    def __init__(self, *args, combined: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.combined = combined
        self.streams: list[str] = []


class StreamHub:
    """All market-stream connections and who listens to which stream."""

    def __init__(
        self,
        clock: SimClock,
        rules: ConnectionRules,
        faults: FaultPlan,
        max_streams: int,
        max_connects_per_5min: int = 300,
    ):
        self.max_connects_per_5min = max_connects_per_5min
        self._connect_times: dict[str, deque[float]] = {}
        self.refused_connects = 0
        self.clock = clock
        self.rules = rules
        self.faults = faults
        self.max_streams = max_streams
        self.connections: set[StreamConnection] = set()
        self.listeners: dict[str, set[StreamConnection]] = {}
        self.connects = 0
        self.listening = asyncio.Event()
        """Set while at least one connection listens to a stream (paces a stepped replay)."""
        self._subscribed: dict[str, str] | None = None  # subscribed_symbols, until it changes

    def _update_listening(self) -> None:
        self._subscribed = None
        if any(self.listeners.values()):
            self.listening.set()
        else:
            self.listening.clear()

    def subscribed_symbols(self) -> dict[str, str]:
        """symbol -> stream name for every stream with at least one listener (do not modify)."""
        if self._subscribed is None:
            self._subscribed = {stream_symbol(s): s for s, c in self.listeners.items() if c}
        return self._subscribed

    async def publish(self, stream: str, event_json: str) -> None:
        """Send one event to every listener of ``stream``."""
        conns = self.listeners.get(stream)
        if not conns:
            return
        wrapped = None
        wait = self.clock.stepped
        for conn in list(conns):
            if conn.combined:
                if wrapped is None:
                    wrapped = f'{{"stream":"{stream}","data":{event_json}}}'
                await conn.put(wrapped, True, wait)
            else:
                await conn.put(event_json, True, wait)

    async def cut_old_connections(self) -> None:
        """Close connections that lived past the lifetime (24 h of simulated time)."""
        now = self.clock.now_ms()
        for conn in list(self.connections):
            if not conn.closed and conn.too_old(now):
                LOG.info("cutting stream connection after %d ms", now - conn.connected_at_ms)
                await conn.close(1000, "Connection lifetime reached")

    async def announce_shutdown(self) -> int:
        """Send Binance's ``serverShutdown`` event to every connection; return how many."""
        event = orjson.dumps({"e": "serverShutdown", "E": self.clock.now_ms()}).decode()
        wrapped = f'{{"stream":"!serverShutdown","data":{event}}}'
        conns = [c for c in self.connections if not c.closed]
        for conn in conns:
            conn.offer(wrapped if conn.combined else event)
        return len(conns)

    async def close_all(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001, "Server shutting down")

    def _subscribe(self, conn: StreamConnection, names: list[str]) -> None:
        for name in names:
            stream_symbol(name)
        new = [n for n in dict.fromkeys(names) if n not in conn.streams]
        if len(conn.streams) + len(new) > self.max_streams:
            raise StreamError(f"too many streams; the limit is {self.max_streams} per connection")
        for name in new:
            conn.streams.append(name)
            self.listeners.setdefault(name, set()).add(conn)
        self._update_listening()

    def _unsubscribe(self, conn: StreamConnection, names: list[str]) -> None:
        for name in names:
            if name in conn.streams:
                conn.streams.remove(name)
                self.listeners.get(name, set()).discard(conn)
        self._update_listening()

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("streams", "")
        names = [n for n in raw.split("/") if n]
        return await self._serve(request, names, combined=True)

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("streams", "")
        names = [n for n in tail.split("/") if n]
        return await self._serve(request, names, combined=False)

    async def _serve(self, request: web.Request, names: list[str], combined: bool):
        try:
            for name in names:
                stream_symbol(name)
            if len(names) > self.max_streams:
                raise StreamError(f"too many streams; the limit is {self.max_streams}")
        except StreamError as exc:
            return web.json_response({"code": 2, "msg": f"Invalid request: {exc}"}, status=400)
        if not self._admit_connect(request.remote or "unknown"):
            self.refused_connects += 1
            return web.json_response(
                {"code": -1003, "msg": "Too many connection attempts from this IP."}, status=429
            )
        transport = request.transport
        ws = web.WebSocketResponse(
            autoping=False, autoclose=False, timeout=2.0, compress=False, max_msg_size=1 << 20
        )
        await ws.prepare(request)
        conn = StreamConnection(
            ws, transport, self.clock, self.rules, self.faults, combined=combined
        )
        self._subscribe(conn, names)
        self.connections.add(conn)
        self.connects += 1
        conn.start()
        try:
            while True:
                # Not ``async for``: it swallows the client's close frame, which we must answer.
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if await conn.over_rate():
                    break
                if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                    await conn.on_control_frame(msg.type, msg.data)
                elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_request(conn, msg.data)
                elif msg.type == WSMsgType.CLOSE:
                    await conn.on_peer_close()
                    break
        finally:
            self._unsubscribe(conn, list(conn.streams))
            self.connections.discard(conn)
            await conn.finish()
        return ws

    def _admit_connect(self, ip: str) -> bool:
        """Binance allows 300 connection attempts per 5 minutes per IP (wall time)."""
        now = time.monotonic()
        times = self._connect_times.setdefault(ip, deque())
        while times and times[0] <= now - 300.0:
            times.popleft()
        times.append(now)
        return len(times) <= self.max_connects_per_5min

    async def _on_request(self, conn: StreamConnection, data: str | bytes) -> None:
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError:
            await self._reply(conn, {"error": {"code": 3, "msg": "Invalid JSON"}})
            return
        if not isinstance(req, dict):
            await self._reply(conn, {"error": {"code": 2, "msg": "Invalid request"}})
            return
        req_id = req.get("id")
        method = req.get("method")
        params = req.get("params", [])
        try:
            if method == "SUBSCRIBE":
                self._subscribe(conn, list(params))
                result: object = None
            elif method == "UNSUBSCRIBE":
                self._unsubscribe(conn, list(params))
                result = None
            elif method == "LIST_SUBSCRIPTIONS":
                result = list(conn.streams)
            else:
                raise StreamError(f"unknown method '{method}'")
        except (StreamError, TypeError) as exc:
            await self._reply(
                conn, {"error": {"code": 2, "msg": f"Invalid request: {exc}"}, "id": req_id}
            )
            return
        await self._reply(conn, {"result": result, "id": req_id})

    @staticmethod
    async def _reply(conn: StreamConnection, payload: dict) -> None:
        await conn.put(orjson.dumps(payload).decode(), False, True)
