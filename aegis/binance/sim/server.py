"""``BinanceSimulator``: every part wired into one aiohttp server on one loopback port.

    async with BinanceSimulator(SimConfig(symbols=("BTCUSDT",), speed=0)) as sim:
        sim.rest_url      # http://127.0.0.1:PORT        (REST under /api/v3)
        sim.ws_url        # ws://127.0.0.1:PORT          (/stream?streams=..., /ws/<stream>)
        sim.ws_api_url    # ws://127.0.0.1:PORT/ws-api/v3
        sim.clock, sim.faults, sim.request_log, sim.accounts, sim.engine

Control endpoints for a simulator in another process live under ``/_sim/`` (status, faults,
request log, clock); they are not part of Binance's API and carry no rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web

from aegis.binance.sim.accounts import Account
from aegis.binance.sim.catalog import ExchangeCatalog, read_exchange_info
from aegis.binance.sim.clock import SimClock
from aegis.binance.sim.config import SimConfig
from aegis.binance.sim.data import load_series
from aegis.binance.sim.faults import FaultPlan
from aegis.binance.sim.limits import OrderCounter, WeightLimiter
from aegis.binance.sim.market import MarketData
from aegis.binance.sim.market_streams import StreamHub
from aegis.binance.sim.matching import MatchingEngine
from aegis.binance.sim.replay import KlineReplay
from aegis.binance.sim.request_log import RequestLog
from aegis.binance.sim.rest import RestApi
from aegis.binance.sim.rest_gate import RestGate
from aegis.binance.sim.ws_api import WsApiHub
from aegis.binance.sim.ws_connection import ConnectionRules

LOG = logging.getLogger(__name__)


def _rate_limits(config: SimConfig) -> list[dict[str, Any]]:
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
         "limit": config.weight_limit_1m},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
         "limit": config.orders_limit_10s},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
         "limit": config.orders_limit_1d},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
         "limit": 61000},
    ]  # fmt: skip


class BinanceSimulator:
    """A Binance spot look-alike on loopback, replaying recorded klines."""

    def __init__(self, config: SimConfig | None = None, faults: FaultPlan | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = faults or FaultPlan()
        self.request_log = RequestLog()
        self._runner: web.AppRunner | None = None
        self._replay_task: asyncio.Task | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> BinanceSimulator:
        """Load the data, bind the port and start the replay."""
        cfg = self.config
        series = await asyncio.to_thread(
            load_series, cfg.data_paths, cfg.symbols, cfg.from_ms, cfg.to_ms, cfg.symbol_count
        )
        raw_info = await asyncio.to_thread(read_exchange_info, cfg.exchange_info_path)
        self.catalog = ExchangeCatalog(raw_info, series, cfg.serve_all_symbols, _rate_limits(cfg))
        decimals = {s: self.catalog.spec(s).price_decimals for s in series}
        self.market = MarketData(series, decimals, cfg.updates_per_bar)
        start_ms = cfg.start_ms if cfg.start_ms is not None else self.market.first_open_ms
        self.clock = SimClock(start_ms, cfg.speed, paused=cfg.start_paused)
        self.accounts: dict[str, Account] = {a.api_key: Account(a) for a in cfg.accounts}
        self.limiter = WeightLimiter(
            cfg.weight_limit_1m, cfg.rate_window_s, cfg.ban_after_429s, cfg.ban_seconds
        )
        self.orders = OrderCounter(cfg.orders_limit_10s, cfg.orders_limit_1d)
        self.engine = MatchingEngine(self.catalog, self.market, cfg.commission_rate)
        rules = ConnectionRules(
            *cfg.ping_timing(), cfg.max_incoming_per_s, cfg.connection_lifetime_ms, cfg.queue_size
        )
        self.streams = StreamHub(
            self.clock, rules, self.faults, cfg.max_streams_per_connection,
            cfg.max_connects_per_5min,
        )  # fmt: skip
        api_rules = ConnectionRules(**{**rules.__dict__, "max_incoming_per_s": 100})
        self.ws_api = WsApiHub(
            self.clock, api_rules, self.accounts, self.engine, self.catalog, self.limiter,
            self.server_time_ms, self.clock.now_ms,
        )  # fmt: skip
        self.engine.listener = self.ws_api.dispatch
        rest = RestApi(
            self.catalog, self.market, self.engine, self.orders, self.faults, self.clock.now_ms
        )
        gate = RestGate(
            rest, self.limiter, self.faults, self.accounts, self.request_log,
            self.server_time_ms, self.clock.now_ms,
        )  # fmt: skip
        app = web.Application()
        app.router.add_route("*", "/api/v3/{tail:.*}", gate.handle)
        app.router.add_get("/stream", self.streams.handle_combined)
        app.router.add_get("/ws", self.streams.handle_raw)
        app.router.add_get("/ws/{streams:.*}", self.streams.handle_raw)
        app.router.add_get("/ws-api/v3", self.ws_api.handle)
        app.router.add_get("/_sim/status", self._status)
        app.router.add_get("/_sim/faults", self._get_faults)
        app.router.add_post("/_sim/faults", self._set_faults)
        app.router.add_get("/_sim/request_log", self._get_log)
        app.router.add_post("/_sim/clock", self._set_clock)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # port 0 → the bound one
        self.replay = KlineReplay(
            self.market,
            self.clock,
            self.streams,
            self.engine,
            self.accounts,
            cfg.hold_without_listeners,
        )
        self._replay_task = asyncio.create_task(self.replay.run())
        self._lifetime_task = asyncio.create_task(self._cut_ws_api_loop())
        LOG.info(
            "simulator listening on %s:%d: %d symbols, speed %s, clock at %d",
            cfg.host, self.port, len(series), cfg.speed, start_ms,
        )  # fmt: skip
        return self

    async def stop(self) -> None:
        """Close every connection and the listening socket."""
        for task in (self._replay_task, getattr(self, "_lifetime_task", None)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._runner is not None:
            await self.streams.close_all()
            await self.ws_api.close_all()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _cut_ws_api_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self.ws_api.cut_old_connections()

    # -- public helpers ----------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    @property
    def ws_api_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws-api/v3"

    def stream_url(self, streams: list[str]) -> str:
        """Combined-stream URL for the given stream names."""
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    def server_time_ms(self) -> int:
        """Server time as REST ``time`` reports it (simulated clock + injected skew)."""
        return self.clock.now_ms() + self.faults.clock_skew_ms

    def account(self, api_key: str | None = None) -> Account:
        """The account of ``api_key`` (default: the first configured one)."""
        return self.accounts[api_key or self.config.accounts[0].api_key]

    def drop_stream_connections(self) -> int:
        """Abort every market-stream connection now; return how many."""
        conns = list(self.streams.connections)
        for conn in conns:
            conn.abort("fault: drop all")
        return len(conns)

    def drop_ws_api_connections(self) -> int:
        """Abort every WebSocket API connection now; return how many."""
        return self.ws_api.abort_all()

    async def shut_down_connections(self, notice_s: float = 0.0) -> None:
        """Announce ``serverShutdown`` on every WebSocket, wait ``notice_s``, then close them."""
        await self.streams.announce_shutdown()
        self.ws_api.announce_shutdown()
        if notice_s > 0:
            await asyncio.sleep(notice_s)
        await self.streams.close_all()
        await self.ws_api.close_all()

    def status(self) -> dict[str, Any]:
        """Counters for tests and the control endpoint."""
        return {
            "port": self.port,
            "sim_time_ms": self.clock.now_ms(),
            "server_time_ms": self.server_time_ms(),
            "paused": self.clock.paused,
            "speed": self.clock.speed,
            "symbols": len(self.market.series),
            "stream_connections": len(self.streams.connections),
            "stream_connects": self.streams.connects,
            "stream_connects_refused": self.streams.refused_connects,
            "ws_api_connections": len(self.ws_api.connections),
            "events_published": self.replay.events_published,
            "user_events_sent": self.ws_api.events_sent,
            "replay_finished": self.replay.finished.is_set(),
            "requests_logged": len(self.request_log),
        }

    # -- control endpoints -------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            values = await request.json()
            if values.pop("reset", False):
                self.faults.reset()
            self.faults.update(**values)
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.snapshot())

    async def _get_log(self, request: web.Request) -> web.Response:
        since = request.query.get("since")
        entries = self.request_log.as_dicts(float(since) if since else None)
        return web.json_response({"now": time.time(), "entries": entries})

    async def _set_clock(self, request: web.Request) -> web.Response:
        action = (await request.json()).get("action")
        if action == "pause":
            self.clock.pause()
        elif action == "resume":
            self.clock.resume()
        else:
            return web.json_response({"error": f"unknown clock action {action!r}"}, status=400)
        return web.json_response(self.status())
