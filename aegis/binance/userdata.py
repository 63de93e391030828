"""The account's user-data stream over the WebSocket API, kept alive around the clock.

Binance retired the listenKey (``/api/v3/userDataStream``) on 2026-02-20; account events now
come over the WebSocket API: one signed ``userDataStream.subscribe.signature`` request (HMAC
over the alphabetically sorted ``apiKey`` and ``timestamp``) and the connection receives
``{"subscriptionId": N, "event": {...}}`` frames, parsed at the edge (``user_events``) and
handed to ``on_event``.

Keeping it alive:

* the server pings every 20 s; each ping is answered at once with a pong that **echoes its
  payload** (an unsolicited pong does not count);
* silence longer than ``silence_timeout_s`` (no frame, not even a ping) means a dead path: the
  connection is dropped and reopened;
* a connection lives at most 24 h: before ``max_connection_s`` the stream opens and subscribes
  a *new* connection first, drains the old one, then closes it (events in the overlap may
  arrive twice; consumers dedupe by execution id);
* ``serverShutdown`` and ``eventStreamTerminated`` trigger the same rollover at once;
* failed connects back off exponentially with full jitter (``aegis.backoff``); the backoff
  resets once a connection has stayed up for ``stable_after_s``.

Events can be missed while no connection is subscribed, so after **every** (re)connect — the
first one included — ``reconcile_due`` is set and ``on_connected(count)`` is called: the owner
reconciles against REST. Credentials that the server refuses (-2014/-2015/-1022) stop the
stream with ``UserDataStreamError`` in ``failure``: retrying a wrong key only burns connection
attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
import orjson

from aegis.backoff import backoff_delays
from aegis.binance.signing import hmac_signature
from aegis.binance.user_events import (
    MalformedUserEvent,
    ServerShutdown,
    StreamTerminated,
    UserEvent,
    parse_user_message,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTION_S = 23.5 * 3600.0  # Binance cuts at 24 h; roll over well before
_FATAL_CODES = frozenset({-2014, -2015, -1022, -1002})


class UserDataStreamError(RuntimeError):
    """The server refused the subscription; ``code`` is Binance's error code if any."""

    def __init__(self, msg: str, code: int | None = None) -> None:
        super().__init__(f"{msg} (code {code})" if code is not None else msg)
        self.msg = msg
        self.code = code

    @property
    def fatal(self) -> bool:
        """True when retrying cannot help (key, secret or signature refused)."""
        return self.code in _FATAL_CODES


class _Rollover(Exception):
    """The server asked us to move to a new connection."""


class UserDataStream:
    """A self-healing user-data subscription; run it with ``start()`` / ``stop()``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        server_time_ms: Callable[[], int],
        on_event: Callable[[UserEvent], None],
        on_connected: Callable[[int], None] | None = None,
        max_connection_s: float = DEFAULT_MAX_CONNECTION_S,
        silence_timeout_s: float = 60.0,
        request_timeout_s: float = 10.0,
        recv_window_ms: int = 5000,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
        stable_after_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        """``server_time_ms`` gives Binance's clock (e.g. ``BinanceRestClient.server_time_ms``)."""
        if max_connection_s <= 0 or silence_timeout_s <= 0:
            raise ValueError("max_connection_s and silence_timeout_s must be > 0")
        self.url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._server_time_ms = server_time_ms
        self._on_event = on_event
        self._on_connected = on_connected
        self.max_connection_s = max_connection_s
        self.silence_timeout_s = silence_timeout_s
        self.request_timeout_s = request_timeout_s
        self.recv_window_ms = recv_window_ms
        self._backoff = (backoff_base_s, backoff_cap_s)
        self.stable_after_s = stable_after_s
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.reconcile_due = asyncio.Event()
        self.failure: UserDataStreamError | None = None
        self.connects = 0
        self.pings_answered = 0
        self.events_received = 0
        self.errors: Counter[str] = Counter()

    def __repr__(self) -> str:  # never shows the key pair
        return f"UserDataStream({self.url!r}, connects={self.connects})"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the stream in a background task of the current loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="user-data-stream")

    async def stop(self) -> None:
        """Stop the stream and close its connection (safe to call twice)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.connected.clear()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until a subscription is live; raise TimeoutError (or the fatal failure)."""
        await asyncio.wait_for(self.connected.wait(), timeout_s)
        if self.failure is not None:
            raise self.failure

    async def run(self) -> None:
        """Connect, subscribe, pump, reconnect; forever until cancelled or refused for good."""
        delays = backoff_delays(*self._backoff, self._rng)
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            while True:
                if ws is None:
                    try:
                        ws = await self._open()
                    except UserDataStreamError as exc:
                        self.errors[f"subscribe {exc.code}"] += 1
                        if exc.fatal:
                            self.failure = exc
                            self.connected.set()  # wake waiters so they see the failure
                            log.error("user data stream refused for good: %s", exc)
                            return
                        ws = None
                    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                        # ValueError: an answer that is not JSON (a proxy's error page).
                        self.errors[type(exc).__name__] += 1
                    if ws is None:
                        delay = next(delays)
                        log.warning(
                            "user data stream connect failed (%d errors so far); retry in %.1f s",
                            sum(self.errors.values()),
                            delay,
                        )
                        await asyncio.sleep(delay)
                        continue
                opened = time.monotonic()
                outcome = await self._pump(ws, opened + self.max_connection_s)
                if time.monotonic() - opened >= self.stable_after_s:
                    delays = backoff_delays(*self._backoff, self._rng)
                if outcome == "rollover":
                    ws = await self._rollover(ws)
                else:
                    self.connected.clear()
                    self.errors[outcome] += 1
                    log.warning("user data stream lost (%s); reconnecting", outcome)
                    await ws.close()
                    ws = None
                    await asyncio.sleep(next(delays))
        finally:
            self.connected.clear()
            if ws is not None and not ws.closed:
                await ws.close()

    # -- one connection ----------------------------------------------------------------------

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """Connect and subscribe; signal that a reconciliation is due."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(
            self.url, autoping=False, heartbeat=None, max_msg_size=1 << 22
        )
        try:
            await self._subscribe(ws)
        except BaseException:
            await ws.close()
            raise
        self.connects += 1
        self.connected.set()
        self.reconcile_due.set()
        log.info("user data stream subscribed (connection %d)", self.connects)
        if self._on_connected is not None:
            self._on_connected(self.connects)
        return ws

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        params: dict[str, object] = {
            "apiKey": self._api_key,
            "recvWindow": self.recv_window_ms,
            "timestamp": self._server_time_ms(),
        }
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        params["signature"] = hmac_signature(self._api_secret, payload)
        request_id = f"uds-{next(self._ids)}"
        request = {"id": request_id, "method": "userDataStream.subscribe.signature"}
        await ws.send_str(orjson.dumps(request | {"params": params}).decode())
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type == aiohttp.WSMsgType.PING:
                await self._pong(ws, msg.data)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise UserDataStreamError(f"connection closed during subscribe ({msg.type.name})")
            answer = orjson.loads(msg.data)
            if not isinstance(answer, dict) or answer.get("id") != request_id:
                continue
            if answer.get("status") == 200:
                return
            error = answer.get("error") or {}
            raise UserDataStreamError(str(error.get("msg", "subscribe refused")), error.get("code"))

    async def _pong(self, ws: aiohttp.ClientWebSocketResponse, payload: bytes) -> None:
        # Binance only accepts a pong that carries the ping's own payload.
        await ws.pong(payload)
        self.pings_answered += 1

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse, deadline: float) -> str:
        """Read frames until the connection ends ("closed", "silent") or must roll over."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "rollover"
            try:
                msg = await ws.receive(timeout=min(left, self.silence_timeout_s))
            except TimeoutError:
                if deadline - time.monotonic() <= 0:
                    return "rollover"
                return "silent"
            try:
                self._handle(ws, msg)
            except _Rollover:
                return "rollover"
            if msg.type == aiohttp.WSMsgType.PING:
                await self._pong(ws, msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return "closed"

    def _handle(self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> None:
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        try:
            event = parse_user_message(orjson.loads(msg.data))
        except (orjson.JSONDecodeError, MalformedUserEvent) as exc:
            reason = getattr(exc, "reason", "not JSON")
            self.errors[f"malformed: {reason}"] += 1
            log.warning("user data frame dropped: %s (%d so far)", reason, self.errors.total())
            return
        if event is None:
            return
        if isinstance(event, (ServerShutdown, StreamTerminated)):
            log.info("user data stream: %s; moving to a new connection", type(event).__name__)
            raise _Rollover
        self.events_received += 1
        self._on_event(event)

    async def _rollover(
        self, old: aiohttp.ClientWebSocketResponse
    ) -> aiohttp.ClientWebSocketResponse | None:
        """Open the next connection before closing ``old``, so no time is left uncovered."""
        try:
            new = await self._open()
        except (UserDataStreamError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors[f"rollover {type(exc).__name__}"] += 1
            log.warning("user data rollover failed (%s); reconnecting from scratch", exc)
            new = None
        # Events that reached the old socket while the new one subscribed are still delivered.
        with contextlib.suppress(Exception):
            while True:
                msg = await old.receive(timeout=0.05)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                with contextlib.suppress(_Rollover):
                    self._handle(old, msg)
        await old.close()
        if new is None:
            self.connected.clear()
        return new
