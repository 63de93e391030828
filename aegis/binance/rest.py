"""Binance spot REST client: signing, server-time offset, the shared weight budget, error types.

Every request first draws its weight from the kernel-wide ``WeightBudget`` and feeds the answer's
``X-MBX-USED-WEIGHT-1M`` back into it; 429 and 418 put the whole kernel on hold through the same
budget (``Retry-After`` / the ban's end), so no process sends while banned. Signed requests carry
``timestamp`` (local clock + the median offset to ``/api/v3/time``) and ``recvWindow``; a -1021
resyncs the offset and retries once. A new order whose fate is unknown (5xx, timeout, -1007) is
looked up by its client order id before anything else; this client never sends an order twice.

Secrets: the API secret is held in a ``_Secret`` whose repr is masked; query strings of signed
requests are never logged and never put into exception messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import numpy as np
import orjson
from yarl import URL

from aegis.backoff import backoff_delays
from aegis.binance.errors import (
    Action,
    BinanceError,
    InvalidTimestamp,
    IpBanned,
    NoSuchOrder,
    RateLimited,
    UnknownOrderState,
    classify,
)
from aegis.binance.models import AccountSnapshot, CommissionRates, ExchangeOrder
from aegis.binance.protocol import MAX_KLINES_PER_REQUEST, KlineParser
from aegis.binance.signing import DEFAULT_RECV_WINDOW_MS, encode_params, signed_query
from aegis.binance.weight import WeightBudget

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-MBX-APIKEY"
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_COUNT_HEADERS = {"X-MBX-ORDER-COUNT-10S": "10s", "X-MBX-ORDER-COUNT-1D": "1d"}


class _Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "'***'" if self._value else "''"

    __str__ = __repr__


def _ticker_weight(count: int | None) -> int:
    if count is None or count > 100:
        return 80
    return 2 if count <= 20 else 40


class BinanceRestClient:
    """Async client of the Binance spot REST API (or the testnet, or the simulator)."""

    def __init__(
        self,
        base_url: str,
        budget: WeightBudget,
        *,
        api_key: str = "",
        api_secret: str = "",
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        time_samples: int = 5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """Nothing is sent until the first call; the aiohttp session is created in its loop."""
        self.base_url = base_url.rstrip("/")
        self.budget = budget
        self._api_key = _Secret(api_key)
        self._api_secret = _Secret(api_secret)
        self.recv_window_ms = recv_window_ms
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retries = max_retries
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._time_samples = time_samples
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self.offset_ms: int | None = None
        self.order_counts: dict[str, int] = {}
        self.error_counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"BinanceRestClient({self.base_url!r}, api_key={self._api_key!r})"

    async def __aenter__(self) -> BinanceRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (safe to call twice)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport ----------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        """The local clock corrected by the last measured server-time offset."""
        return int(self._clock() * 1000) + (self.offset_ms or 0)

    async def _send(self, method: str, path: str, query: str, headers: dict[str, str]):
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = URL(
            f"{self.base_url}{path}?{query}" if query else f"{self.base_url}{path}", encoded=True
        )
        async with self._session.request(method, url, headers=headers) as response:
            return response.status, response.headers.copy(), await response.read()

    def _observe_headers(self, headers) -> None:
        used = headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self.budget.observe_used_weight(int(used))
        for header, key in ORDER_COUNT_HEADERS.items():
            count = headers.get(header)
            if count is not None and count.isdigit():
                self.order_counts[key] = int(count)

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        weight: int,
        signed: bool = False,
        order_request: bool = False,
        raw: bool = False,
    ) -> Any:
        """Send one request through the budget; retry what the error type allows."""
        if signed and not (self._api_key and self._api_secret):
            raise BinanceError(f"{path} needs an API key and secret")
        params = {k: v for k, v in (params or {}).items() if v is not None}
        delays = backoff_delays(*self._backoff, self._rng)
        resynced = False
        attempt = 0
        while True:
            attempt += 1
            if signed and self.offset_ms is None:
                await self.sync_time()
            await self.budget.acquire(weight)
            headers: dict[str, str] = {}
            if signed:
                headers[API_KEY_HEADER] = self._api_key.reveal()
                secret = self._api_secret.reveal()
                query = signed_query(params, secret, self.server_time_ms(), self.recv_window_ms)
            else:
                query = encode_params(params)
            try:
                status, answer_headers, body = await self._send(method, path, query, headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = classify(
                    0, None, f"no answer: {type(exc).__name__}", order_request=order_request
                )
            else:
                self._observe_headers(answer_headers)
                if status == 200:
                    return body if raw else orjson.loads(body)
                error = self._error_from(status, answer_headers, body, order_request)
            self.error_counts[type(error).__name__] += 1
            self._hold(error, path)
            if isinstance(error, InvalidTimestamp) and not resynced:
                resynced = True
                await self.sync_time()
                continue
            if error.action is Action.RETRY and attempt <= self.max_retries:
                await self._sleep(next(delays))
                continue
            log.warning(
                "binance %s %s failed: %s (%s so far)",
                method,
                path,
                error,
                self.error_counts[type(error).__name__],
            )
            raise error

    def _error_from(self, status: int, headers, body: bytes, order_request: bool) -> BinanceError:
        code, msg = None, body[:200].decode("utf-8", "replace")
        try:
            parsed = orjson.loads(body)
            if isinstance(parsed, dict) and "code" in parsed:
                code, msg = int(parsed["code"]), str(parsed.get("msg", ""))
        except (orjson.JSONDecodeError, ValueError, TypeError):
            pass
        retry_after = headers.get("Retry-After")
        try:
            retry_s = float(retry_after) if retry_after is not None else None
        except ValueError:
            retry_s = None
        return classify(
            status, code, msg, order_request=order_request, retry_after=retry_s, now=self._clock()
        )

    def _hold(self, error: BinanceError, path: str) -> None:
        """Put every process of the kernel on hold for a 429 or a 418."""
        if isinstance(error, IpBanned):
            self.budget.ban(error.until)
            log.error(
                "binance IP banned until %.0f (epoch s) after %s: all REST silent",
                error.until,
                path,
            )
        elif isinstance(error, RateLimited):
            self.budget.back_off(error.retry_after)
            log.warning(
                "binance rate limited on %s: all REST waits %.1f s", path, error.retry_after
            )

    # -- time ------------------------------------------------------------------------------

    async def time(self) -> int:
        """``GET /api/v3/time``: the server's epoch ms."""
        return int((await self._request("GET", "/api/v3/time", weight=1))["serverTime"])

    async def sync_time(self) -> int:
        """Set the server-time offset to the median of several round-trip-corrected samples."""
        samples = []
        for _ in range(self._time_samples):
            sent = self._clock()
            server_ms = await self.time()
            received = self._clock()
            samples.append(server_ms - (sent + received) * 500)
        self.offset_ms = int(statistics.median(samples))
        log.info("binance server-time offset %d ms (median of %d)", self.offset_ms, len(samples))
        return self.offset_ms

    # -- market data -----------------------------------------------------------------------

    async def exchange_info(self, symbols: list[str] | None = None) -> dict:
        """``GET /api/v3/exchangeInfo`` (weight 20)."""
        params = {"symbols": orjson.dumps(symbols).decode()} if symbols else None
        return await self._request("GET", "/api/v3/exchangeInfo", params, weight=20)

    async def ticker_24hr(self, symbols: list[str] | None = None) -> list[dict]:
        """``GET /api/v3/ticker/24hr`` for some symbols or all (weight 2/40/80)."""
        params = {"symbols": orjson.dumps(symbols).decode()} if symbols else None
        weight = _ticker_weight(len(symbols) if symbols else None)
        return await self._request("GET", "/api/v3/ticker/24hr", params, weight=weight)

    async def avg_price(self, symbol: str) -> Decimal:
        """``GET /api/v3/avgPrice`` (weight 2): the reference price of PERCENT_PRICE filters."""
        answer = await self._request("GET", "/api/v3/avgPrice", {"symbol": symbol}, weight=2)
        return Decimal(answer["price"])

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MAX_KLINES_PER_REQUEST,
    ) -> bytes:
        """``GET /api/v3/klines`` (weight 2, ≤ 1000 bars): the raw answer for ``KlineParser``."""
        if not 1 <= limit <= MAX_KLINES_PER_REQUEST:
            raise ValueError(f"limit must be 1..{MAX_KLINES_PER_REQUEST}, got {limit}")
        params = {
            "symbol": symbol,
            "interval": interval,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": limit,
        }
        return await self._request("GET", "/api/v3/klines", params, weight=2, raw=True)

    async def klines_range(
        self,
        parser: KlineParser,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int,
    ) -> np.ndarray:
        """Every bar with ``start_ms ≤ open time ≤ end_ms``, paging 1000 at a time.

        Bars still in progress at the server's time are returned without BAR_CLOSED.
        """
        pages = []
        cursor = start_ms
        while cursor <= end_ms:
            body = await self.klines(symbol, interval, start_ms=cursor, end_ms=end_ms)
            page = parser.parse_rest_klines(body, symbol, interval, now_ms=self.server_time_ms())
            if len(page) == 0:
                break
            pages.append(page)
            cursor = int(page["open_time_ms"][-1]) + 1
            if len(page) < MAX_KLINES_PER_REQUEST:
                break
        if not pages:
            return parser.parse_rest_klines(b"[]", symbol, interval)
        return np.concatenate(pages)

    # -- orders and account ----------------------------------------------------------------

    async def new_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal,
        price: Decimal | None = None,
        *,
        client_order_id: str,
        time_in_force: str | None = None,
        stop_price: Decimal | None = None,
        response_type: str = "FULL",
        lookups: int = 3,
    ) -> ExchangeOrder:
        """``POST /api/v3/order`` with ``newClientOrderId`` = the intent id (weight 1).

        ``stop_price`` is the trigger of STOP_LOSS(_LIMIT) / TAKE_PROFIT(_LIMIT) orders.

        When the answer leaves the order's fate unknown, the order is looked up by its client
        id (up to ``lookups`` times, with backoff) and returned if found. Not found, the original
        ``UnknownOrderState`` is raised with ``.lookup = "not found"``: the caller reconciles; this
        method never sends the order again.
        """
        if order_type == "LIMIT" and time_in_force is None:
            time_in_force = "GTC"
        params = {
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "timeInForce": time_in_force,
            "quantity": format(quantity, "f"),
            "price": None if price is None else format(price, "f"),
            "stopPrice": None if stop_price is None else format(stop_price, "f"),
            "newClientOrderId": client_order_id,
            "newOrderRespType": response_type,
        }
        try:
            answer = await self._request(
                "POST", "/api/v3/order", params, weight=1, signed=True, order_request=True
            )
        except UnknownOrderState as unknown:
            return await self._resolve_unknown(symbol, client_order_id, unknown, lookups)
        return ExchangeOrder.from_wire(answer)

    async def _resolve_unknown(
        self, symbol: str, client_order_id: str, unknown: UnknownOrderState, lookups: int
    ) -> ExchangeOrder:
        delays = backoff_delays(*self._backoff, self._rng)
        unknown.lookup = "failed"
        for attempt in range(lookups):
            if attempt:
                await self._sleep(next(delays))
            try:
                order = await self.query_order(symbol, orig_client_order_id=client_order_id)
            except NoSuchOrder:
                unknown.lookup = "not found"
                continue
            except BinanceError as exc:
                if exc.action in (Action.REJECT, Action.HALT, Action.SILENCE):
                    raise
                unknown.lookup = "failed"
                continue
            log.warning(
                "binance order %s had unknown state; found it %s", client_order_id, order.status
            )
            return order
        log.error("binance order %s state unknown; lookup %s", client_order_id, unknown.lookup)
        raise unknown

    async def query_order(
        self, symbol: str, *, order_id: int | None = None, orig_client_order_id: str | None = None
    ) -> ExchangeOrder:
        """``GET /api/v3/order`` by exchange id or client id (weight 4)."""
        if order_id is None and orig_client_order_id is None:
            raise ValueError("query_order needs order_id or orig_client_order_id")
        params = {"symbol": symbol, "orderId": order_id, "origClientOrderId": orig_client_order_id}
        return ExchangeOrder.from_wire(
            await self._request("GET", "/api/v3/order", params, weight=4, signed=True)
        )

    async def cancel_order(
        self, symbol: str, *, order_id: int | None = None, orig_client_order_id: str | None = None
    ) -> ExchangeOrder:
        """``DELETE /api/v3/order`` (weight 1); an unknown outcome raises ``UnknownOrderState``."""
        if order_id is None and orig_client_order_id is None:
            raise ValueError("cancel_order needs order_id or orig_client_order_id")
        params = {"symbol": symbol, "orderId": order_id, "origClientOrderId": orig_client_order_id}
        answer = await self._request(
            "DELETE", "/api/v3/order", params, weight=1, signed=True, order_request=True
        )
        return ExchangeOrder.from_wire(answer)

    async def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """``GET /api/v3/openOrders`` for one symbol (weight 6) or all (weight 80)."""
        params = {"symbol": symbol} if symbol else None
        answer = await self._request(
            "GET", "/api/v3/openOrders", params, weight=6 if symbol else 80, signed=True
        )
        return [ExchangeOrder.from_wire(o) for o in answer]

    async def account(self) -> AccountSnapshot:
        """``GET /api/v3/account`` (weight 20), zero balances omitted."""
        params = {"omitZeroBalances": True}
        return AccountSnapshot.from_wire(
            await self._request("GET", "/api/v3/account", params, weight=20, signed=True)
        )

    async def commission(self, symbol: str) -> CommissionRates:
        """``GET /api/v3/account/commission`` (weight 20)."""
        params = {"symbol": symbol}
        answer = await self._request(
            "GET", "/api/v3/account/commission", params, weight=20, signed=True
        )
        return CommissionRates.from_wire(answer)
