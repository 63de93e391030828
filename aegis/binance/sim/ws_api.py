"""WebSocket API endpoint (``/ws-api/v3``): requests ``{id, method, params}`` and user data.

``userDataStream.subscribe.signature`` (HMAC over the sorted params) subscribes the
connection to its account's events, pushed as ``{"subscriptionId": N, "event": {...}}``
exactly as the current docs show. Also ``ping``, ``time``, ``order.place``, ``order.status``,
``order.cancel`` and ``userDataStream.unsubscribe``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import orjson
from aiohttp import WSMsgType, web

from aegis.binance.sim import errors
from aegis.binance.sim.accounts import Account
from aegis.binance.sim.auth import verify_ws_params
from aegis.binance.sim.catalog import ExchangeCatalog
from aegis.binance.sim.clock import SimClock
from aegis.binance.sim.errors import BinanceError
from aegis.binance.sim.limits import WeightLimiter
from aegis.binance.sim.matching import MatchingEngine
from aegis.binance.sim.order_params import parse_new_order
from aegis.binance.sim.ws_connection import ConnectionRules, WsConnection

LOG = logging.getLogger(__name__)


class ApiConnection(WsConnection):
    """A WebSocket API connection and its user-data subscriptions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.next_subscription_id = 0
        self.subscriptions: dict[int, str] = {}


class WsApiHub:
    """Serves ``/ws-api/v3`` and fans account events out to subscribed connections."""

    def __init__(
        self,
        clock: SimClock,
        rules: ConnectionRules,
        accounts: Mapping[str, Account],
        engine: MatchingEngine,
        catalog: ExchangeCatalog,
        limiter: WeightLimiter,
        server_time: Callable[[], int],
        market_time: Callable[[], int],
    ) -> None:
        self.clock = clock
        self.rules = rules
        self.accounts = accounts
        self.engine = engine
        self.catalog = catalog
        self.limiter = limiter
        self.server_time = server_time
        self.market_time = market_time
        self.connections: set[ApiConnection] = set()
        self.events_sent = 0

    def dispatch(self, api_key: str, event: dict) -> None:
        """Push one account event to every subscription of ``api_key``."""
        for conn in list(self.connections):
            for sub_id, key in conn.subscriptions.items():
                if key == api_key:
                    frame = orjson.dumps({"subscriptionId": sub_id, "event": event}).decode()
                    if conn.offer(frame):
                        self.events_sent += 1

    def abort_all(self, reason: str = "fault: drop") -> int:
        """Drop every WebSocket API connection without a close frame; return how many."""
        conns = list(self.connections)
        for conn in conns:
            conn.abort(reason)
        return len(conns)

    async def cut_old_connections(self) -> None:
        now = self.clock.now_ms()
        for conn in list(self.connections):
            if not conn.closed and conn.too_old(now):
                await conn.close(1000, "Connection lifetime reached")

    def announce_shutdown(self) -> int:
        """Send ``{"event": {"e": "serverShutdown", ...}}`` to every connection."""
        frame = orjson.dumps({"event": {"e": "serverShutdown", "E": self.clock.now_ms()}}).decode()
        conns = [c for c in self.connections if not c.closed]
        for conn in conns:
            conn.offer(frame)
        return len(conns)

    async def close_all(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001, "Server shutting down")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        ws = web.WebSocketResponse(
            autoping=False, autoclose=False, timeout=2.0, compress=False, max_msg_size=1 << 20
        )
        await ws.prepare(request)
        conn = ApiConnection(ws, transport, self.clock, self.rules, None)
        self.connections.add(conn)
        conn.start()
        ip = request.remote or "unknown"
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
                    conn.offer(self._answer(conn, msg.data, ip))
                elif msg.type == WSMsgType.CLOSE:
                    await conn.on_peer_close()
                    break
        finally:
            self.connections.discard(conn)
            await conn.finish()
        return ws

    def _answer(self, conn: ApiConnection, data: str | bytes, ip: str) -> str:
        try:
            req = orjson.loads(data)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            err = BinanceError(-1135, "Invalid JSON Request")
            return orjson.dumps({"id": None, "status": 400, "error": err.payload()}).decode()
        req_id = req.get("id")
        params = req.get("params") or {}
        status = 200
        try:
            if not isinstance(params, dict):
                raise BinanceError(-1135, "Invalid JSON Request")
            result = self._call(conn, str(req.get("method")), params)
            body: dict = {"id": req_id, "status": 200, "result": result}
        except BinanceError as exc:
            status = exc.status
            body = {"id": req_id, "status": status, "error": exc.payload()}
        body["rateLimits"] = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.limiter.limit,
                "count": self.limiter.used(ip),
            }
        ]
        return orjson.dumps(body).decode()

    def _call(self, conn: ApiConnection, method: str, params: dict) -> object:
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self.server_time()}
        if method == "userDataStream.subscribe.signature":
            account = verify_ws_params(params, self.accounts, self.server_time())
            sub_id = conn.next_subscription_id
            conn.next_subscription_id += 1
            conn.subscriptions[sub_id] = account.api_key
            LOG.info("user data subscription %d opened", sub_id)
            return {"subscriptionId": sub_id}
        if method == "userDataStream.unsubscribe":
            sub_id = params.get("subscriptionId")
            if sub_id is None:
                conn.subscriptions.clear()
            elif conn.subscriptions.pop(int(sub_id), None) is None:
                raise BinanceError(-2036, "User Data Stream subscription not active.")
            return {}
        if method in ("order.place", "order.status", "order.cancel"):
            account = verify_ws_params(params, self.accounts, self.server_time())
            text = {k: str(v) for k, v in params.items()}
            if method == "order.place":
                req = parse_new_order(text, self.catalog)
                return self.engine.place(account, req, self.market_time()).new_order_answer(
                    req.resp_type
                )
            if method == "order.status":
                order = self.engine.find(account, text)
                if order is None:
                    raise errors.no_such_order()
                return order.query_answer()
            return self.engine.cancel(account, text, self.market_time()).cancel_answer(
                self.server_time()
            )
        raise BinanceError(-1020, "This operation is not supported.")
