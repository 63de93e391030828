"""REST endpoint handlers (``/api/v3/...``): answers in Binance's JSON shapes.

Handlers are plain methods over an already admitted, already authenticated request; rate
limiting, signatures and logging happen in ``rest_gate``. Each route declares its request
weight as Binance documents it.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from aegis.binance.sim import errors
from aegis.binance.sim.accounts import Account, d8
from aegis.binance.sim.catalog import ExchangeCatalog
from aegis.binance.sim.errors import BinanceError
from aegis.binance.sim.faults import FaultPlan
from aegis.binance.sim.intervals import INTERVAL_MS
from aegis.binance.sim.limits import OrderCounter
from aegis.binance.sim.market import MarketData
from aegis.binance.sim.matching import MatchingEngine
from aegis.binance.sim.order_params import int_param, parse_new_order, required

MAX_KLINES = 1000


@dataclass
class RestRequest:
    """One admitted request: merged parameters, server time, account when signed."""

    params: dict[str, str]
    server_time_ms: int
    ip: str
    account: Account | None = None


@dataclass
class Answer:
    body: object
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RestRequest], Awaitable[Answer]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    weight: Callable[[dict[str, str]], int]
    signed: bool = False
    counts_order: bool = False


def _symbols_param(params: dict[str, str]) -> list[str] | None:
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise errors.invalid_param("symbols") from None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise errors.invalid_param("symbols")
    return value


def _ticker_weight(params: dict[str, str]) -> int:
    if params.get("symbol"):
        return 2
    try:
        n = len(json.loads(params["symbols"])) if params.get("symbols") else 0
    except ValueError:
        n = 0
    if n == 0:
        return 80
    return 2 if n <= 20 else 40 if n <= 100 else 80


class RestApi:
    """Handlers of the simulated ``/api/v3`` endpoints."""

    def __init__(
        self,
        catalog: ExchangeCatalog,
        market: MarketData,
        engine: MatchingEngine,
        orders: OrderCounter,
        faults: FaultPlan,
        market_time: Callable[[], int],
    ) -> None:
        self.catalog = catalog
        self.market = market
        self.engine = engine
        self.orders = orders
        self.faults = faults
        self.market_time = market_time

    def routes(self) -> dict[tuple[str, str], Route]:
        """(method, path) → Route, with Binance's documented weights."""
        fixed = lambda w: lambda _p: w  # noqa: E731
        return {
            ("GET", "/api/v3/ping"): Route(self.ping, fixed(1)),
            ("GET", "/api/v3/time"): Route(self.time, fixed(1)),
            ("GET", "/api/v3/exchangeInfo"): Route(self.exchange_info, fixed(20)),
            ("GET", "/api/v3/klines"): Route(self.klines, fixed(2)),
            ("GET", "/api/v3/avgPrice"): Route(self.avg_price, fixed(2)),
            ("GET", "/api/v3/ticker/24hr"): Route(self.ticker_24hr, _ticker_weight),
            ("POST", "/api/v3/order"): Route(self.new_order, fixed(1), True, True),
            ("GET", "/api/v3/order"): Route(self.query_order, fixed(4), True),
            ("DELETE", "/api/v3/order"): Route(self.cancel_order, fixed(1), True),
            ("POST", "/api/v3/order/test"): Route(
                self.test_order,
                lambda p: 20 if p.get("computeCommissionRates") == "true" else 1,
                True,
            ),
            ("GET", "/api/v3/openOrders"): Route(
                self.open_orders, lambda p: 6 if p.get("symbol") else 80, True
            ),
            ("GET", "/api/v3/allOrders"): Route(self.all_orders, fixed(20), True),
            ("GET", "/api/v3/myTrades"): Route(self.my_trades, fixed(20), True),
            ("GET", "/api/v3/account"): Route(self.account, fixed(20), True),
            ("GET", "/api/v3/account/commission"): Route(self.commission, fixed(20), True),
        }

    # -- market data -------------------------------------------------------------------------

    def _market_symbol(self, params: dict[str, str]) -> str:
        symbol = required(params, "symbol")
        if symbol not in self.market:
            raise errors.invalid_symbol()
        return symbol

    async def ping(self, req: RestRequest) -> Answer:
        return Answer({})

    async def time(self, req: RestRequest) -> Answer:
        return Answer({"serverTime": req.server_time_ms})

    async def exchange_info(self, req: RestRequest) -> Answer:
        chosen = _symbols_param(req.params)
        if req.params.get("symbol"):
            chosen = [req.params["symbol"]]
        if chosen is not None and any(s not in self.catalog for s in chosen):
            raise errors.invalid_symbol()
        return Answer(self.catalog.answer(req.server_time_ms, chosen))

    async def klines(self, req: RestRequest) -> Answer:
        symbol = self._market_symbol(req.params)
        interval = required(req.params, "interval")
        interval_ms = INTERVAL_MS.get(interval)
        if interval_ms is None:
            raise BinanceError(-1120, "Invalid interval.")
        limit = int_param(req.params, "limit")
        limit = 500 if limit is None else limit
        if not 1 <= limit <= MAX_KLINES:
            raise errors.invalid_param("limit")
        rows = self.market.kline_rows(
            symbol,
            self.market_time(),
            int_param(req.params, "startTime"),
            int_param(req.params, "endTime"),
            limit,
            interval_ms,
        )
        return Answer(rows)

    async def avg_price(self, req: RestRequest) -> Answer:
        symbol = self._market_symbol(req.params)
        now = self.market_time()
        price = self.market.avg_price(symbol, now, 5)
        return Answer({"mins": 5, "price": f"{price or 0.0:.8f}", "closeTime": now})

    async def ticker_24hr(self, req: RestRequest) -> Answer:
        now = self.market_time()
        if req.params.get("symbol"):
            return Answer(self.market.ticker_24h(self._market_symbol(req.params), now))
        chosen = _symbols_param(req.params)
        if chosen is not None and any(s not in self.market for s in chosen):
            raise errors.invalid_symbol()
        names = chosen if chosen is not None else sorted(self.market.series)
        return Answer([t for s in names if (t := self.market.ticker_24h(s, now)) is not None])

    # -- trading -----------------------------------------------------------------------------

    def _order_headers(self, api_key: str) -> dict[str, str]:
        c10, c1d = self.orders.counts(api_key)
        return {"X-MBX-ORDER-COUNT-10S": str(c10), "X-MBX-ORDER-COUNT-1D": str(c1d)}

    async def new_order(self, req: RestRequest) -> Answer:
        account = req.account
        assert account is not None
        breached = self.orders.exceeded(account.api_key)
        if breached:
            limit = self.orders.limit_10s if breached.startswith("10") else self.orders.limit_1d
            raise BinanceError(
                -1015,
                errors.MSG_TOO_MANY_ORDERS.format(limit=limit, interval=breached),
                status=429,
            )
        order_req = parse_new_order(req.params, self.catalog)
        order = self.engine.place(account, order_req, self.market_time())
        self.orders.record(account.api_key)
        headers = self._order_headers(account.api_key)
        if self.faults.order_response_delay_s > 0:
            await asyncio.sleep(self.faults.order_response_delay_s)
        if self.faults.take_order_5xx():
            # The order exists and may be filled; the client is told nothing useful.
            err = BinanceError(-1007, errors.MSG_TIMEOUT, status=self.faults.order_5xx_status)
            return Answer(err.payload(), err.status, headers)
        return Answer(order.new_order_answer(order_req.resp_type), 200, headers)

    async def test_order(self, req: RestRequest) -> Answer:
        assert req.account is not None
        order_req = parse_new_order(req.params, self.catalog)
        self.engine.validate(req.account, order_req, self.market_time())
        if req.params.get("computeCommissionRates") != "true":
            return Answer({})
        rate = d8(self.engine.commission_rate)
        zero = d8(Decimal(0))
        return Answer(
            {
                "standardCommissionForOrder": {"maker": rate, "taker": rate},
                "specialCommissionForOrder": {"maker": zero, "taker": zero},
                "taxCommissionForOrder": {"maker": zero, "taker": zero},
                "discount": {
                    "enabledForAccount": False,
                    "enabledForSymbol": False,
                    "discountAsset": "BNB",
                    "discount": "0.75000000",
                },
            }
        )

    async def query_order(self, req: RestRequest) -> Answer:
        assert req.account is not None
        order = self.engine.find(req.account, req.params)
        if order is None:
            raise errors.no_such_order()
        return Answer(order.query_answer())

    async def cancel_order(self, req: RestRequest) -> Answer:
        assert req.account is not None
        order = self.engine.cancel(req.account, req.params, self.market_time())
        return Answer(order.cancel_answer(req.server_time_ms))

    async def open_orders(self, req: RestRequest) -> Answer:
        assert req.account is not None
        symbol = req.params.get("symbol")
        if symbol and symbol not in self.catalog:
            raise errors.invalid_symbol()
        return Answer([o.query_answer() for o in self.engine.open_orders(req.account, symbol)])

    def _history_window(self, req: RestRequest) -> tuple[str, int, int | None, int | None]:
        symbol = required(req.params, "symbol")
        if symbol not in self.catalog:
            raise errors.invalid_symbol()
        limit = int_param(req.params, "limit")
        limit = 500 if limit is None else limit
        if not 1 <= limit <= 1000:
            raise errors.invalid_param("limit")
        return symbol, limit, int_param(req.params, "startTime"), int_param(req.params, "endTime")

    async def all_orders(self, req: RestRequest) -> Answer:
        assert req.account is not None
        symbol, limit, start, end = self._history_window(req)
        from_id = int_param(req.params, "orderId")
        chosen = [
            o
            for o in self.engine.all_orders(req.account, symbol)
            if (from_id is None or o.order_id >= from_id)
            and (start is None or o.time_ms >= start)
            and (end is None or o.time_ms <= end)
        ]
        chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
        return Answer([o.query_answer() for o in chosen])

    async def my_trades(self, req: RestRequest) -> Answer:
        assert req.account is not None
        symbol, limit, start, end = self._history_window(req)
        order_id = int_param(req.params, "orderId")
        from_id = int_param(req.params, "fromId")
        trades = [
            t
            for o in self.engine.all_orders(req.account, symbol)
            if order_id is None or o.order_id == order_id
            for t in o.trade_answers()
        ]
        trades.sort(key=lambda t: t["id"])
        trades = [
            t
            for t in trades
            if (from_id is None or t["id"] >= from_id)
            and (start is None or t["time"] >= start)
            and (end is None or t["time"] <= end)
        ]
        trades = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        return Answer(trades)

    async def account(self, req: RestRequest) -> Answer:
        account = req.account
        assert account is not None
        rate = self.engine.commission_rate
        bps = int(rate * 10_000)
        omit_zero = req.params.get("omitZeroBalances") == "true"
        balances = [
            {"asset": a, "free": d8(b.free), "locked": d8(b.locked)}
            for a, b in sorted(account.balances.items())
            if not (omit_zero and b.free == 0 and b.locked == 0)
        ]
        zero = d8(Decimal(0))
        return Answer(
            {
                "makerCommission": bps,
                "takerCommission": bps,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {"maker": d8(rate), "taker": d8(rate)}
                | {"buyer": zero, "seller": zero},
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": account.update_time,
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": zlib.crc32(account.api_key.encode()),
            }
        )

    async def commission(self, req: RestRequest) -> Answer:
        symbol = required(req.params, "symbol")
        if symbol not in self.catalog:
            raise errors.invalid_symbol()
        rate = d8(self.engine.commission_rate)
        zero = d8(Decimal(0))
        four = {"maker": rate, "taker": rate, "buyer": zero, "seller": zero}
        none = {"maker": zero, "taker": zero, "buyer": zero, "seller": zero}
        return Answer(
            {
                "symbol": symbol,
                "standardCommission": four,
                "specialCommission": none,
                "taxCommission": none,
                "discount": {
                    "enabledForAccount": False,
                    "enabledForSymbol": False,
                    "discountAsset": "BNB",
                    "discount": "0.75000000",
                },
            }
        )
