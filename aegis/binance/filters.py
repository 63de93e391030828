"""Binance spot order rules of one symbol (exchangeInfo filters), pure and in ``Decimal``.

``SymbolFilters.check`` answers what Binance would: ``None`` for an order it accepts, or
``FilterRejected`` whose message is exactly Binance's (``Filter failure: LOT_SIZE``).
``SymbolFilters.fit`` moves a wished order onto the grid and then checks it:

* quantity is floored to the step (never more than wished: after a fee paid in the base asset,
  9.985 cannot be sold at step 1, 9 can);
* the price moves to the tick on the side that is never worse for the user than the wish: a BUY
  rounds down (never pays more), a SELL rounds up (never receives less). If that grid price falls
  outside the PERCENT_PRICE band, or the rounded order misses the notional, the order is rejected
  rather than moved further from the wish: "close to the wish" means within one step and one tick.

Every filter is off when its value is 0. Filters are evaluated in the order the exchange lists
them, so the first failure is the one reported. Construction precomputes every ``Decimal``;
a check is a handful of ``Decimal`` operations (a few microseconds).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Products such as 922327.00000000 × 9000000000.00000000 need more than the default 28 digits.
_CTX = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
_ZERO = Decimal(0)

LIMIT_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
MARKET_TYPES = frozenset({"MARKET"})
ALGO_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
SIDES = frozenset({"BUY", "SELL"})


class FilterRejected(Exception):
    """Binance would answer -1013 ``Filter failure: <filter_type>``; never retry this order."""

    def __init__(self, filter_type: str, detail: str = "") -> None:
        super().__init__(f"Filter failure: {filter_type}")
        self.filter_type = filter_type
        self.detail = detail


class InvalidOrder(ValueError):
    """The order is malformed before any filter applies (side, type, missing or bad number)."""


def to_decimal(value: Any, name: str) -> Decimal:
    """Convert an int, str, Decimal or float (via its shortest repr) to a finite Decimal."""
    kind = type(value)
    if kind is Decimal:
        result = value
    elif kind is str or kind is int:
        try:
            result = Decimal(value)
        except decimal.InvalidOperation:
            raise InvalidOrder(f"{name} is not a number: {value!r}") from None
    elif kind is float:
        result = Decimal(repr(value))
    else:
        raise InvalidOrder(f"{name} must be Decimal, str, int or float, got {kind.__name__}")
    if not result.is_finite():
        raise InvalidOrder(f"{name} must be finite, got {value!r}")
    return result


def _dec(raw: Any) -> Decimal | None:
    """A filter value, or None when it is 0 (the filter or bound is off)."""
    value = Decimal(str(raw))
    return None if value == 0 else value


def _on_grid(value: Decimal, base: Decimal, step: Decimal) -> bool:
    return _CTX.remainder(_CTX.subtract(value, base), step) == 0


_Check = Callable[[str, bool, Decimal, "Decimal | None", "Decimal | None", int, int], None]


@dataclass(frozen=True, slots=True)
class _Grid:
    """minQty/maxQty/stepSize or minPrice/maxPrice/tickSize; None = that bound is off."""

    low: Decimal | None
    high: Decimal | None
    step: Decimal | None
    base: Decimal  # grid origin: the minimum (0 when off)
    exponent: Decimal  # quantizer giving the step's own number of decimals

    @classmethod
    def of(cls, low: Any, high: Any, step: Any) -> _Grid:
        lo, hi, st = _dec(low), _dec(high), _dec(step)
        base = lo or _ZERO
        # Grid values carry the decimals of the step and of the origin, never more.
        places = (
            min(st.normalize().as_tuple().exponent, base.normalize().as_tuple().exponent, 0)
            if st
            else 0
        )
        return cls(lo, hi, st, base, Decimal(1).scaleb(places))

    def accepts(self, value: Decimal) -> bool:
        if self.low is not None and value < self.low:
            return False
        if self.high is not None and value > self.high:
            return False
        return self.step is None or _on_grid(value, self.base, self.step)

    def snap(self, value: Decimal, up: bool) -> Decimal:
        """Move ``value`` to the grid, down or up; unchanged when there is no step."""
        if self.step is None:
            return value
        steps = _CTX.divide(_CTX.subtract(value, self.base), self.step)
        whole = steps.to_integral_value(decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR)
        snapped = _CTX.add(self.base, _CTX.multiply(whole, self.step))
        if snapped.adjusted() - self.exponent.adjusted() >= _CTX.prec:
            return snapped
        return snapped.quantize(self.exponent, context=_CTX)


class SymbolFilters:
    """The order rules of one symbol, built once from its exchangeInfo entry."""

    __slots__ = (
        "_checks",
        "ask_down",
        "ask_up",
        "avg_price_mins",
        "bid_down",
        "bid_up",
        "lot_grid",
        "market_lot_grid",
        "max_notional",
        "max_notional_to_market",
        "max_num_algo_orders",
        "max_num_orders",
        "min_notional",
        "min_notional_to_market",
        "notional_type",
        "order_types",
        "percent_type",
        "price_grid",
        "symbol",
    )

    def __init__(self, symbol: str, filters: list[Mapping[str, Any]], order_types=()) -> None:
        self.symbol = symbol
        self.order_types = frozenset(order_types)
        self.price_grid = self.lot_grid = self.market_lot_grid = None
        self.notional_type = self.percent_type = None
        self.min_notional = self.max_notional = None
        self.min_notional_to_market = self.max_notional_to_market = False
        self.avg_price_mins = 0
        self.bid_up = self.bid_down = self.ask_up = self.ask_down = None
        self.max_num_orders = self.max_num_algo_orders = 0
        checks: list[_Check] = []
        for spec in filters:
            check = self._configure(spec)
            if check is not None:
                checks.append(check)
        self._checks = tuple(checks)

    @classmethod
    def from_symbol_info(cls, info: Mapping[str, Any]) -> SymbolFilters:
        """Build from one entry of ``exchangeInfo["symbols"]``."""
        return cls(info["symbol"], list(info["filters"]), info.get("orderTypes", ()))

    def _configure(self, f: Mapping[str, Any]) -> _Check | None:
        kind = f["filterType"]
        if kind == "PRICE_FILTER":
            self.price_grid = _Grid.of(f["minPrice"], f["maxPrice"], f["tickSize"])
            return self._check_price
        if kind == "LOT_SIZE":
            self.lot_grid = _Grid.of(f["minQty"], f["maxQty"], f["stepSize"])
            return self._check_lot
        if kind == "MARKET_LOT_SIZE":
            self.market_lot_grid = _Grid.of(f["minQty"], f["maxQty"], f["stepSize"])
            return self._check_market_lot
        if kind in ("MIN_NOTIONAL", "NOTIONAL"):
            self.notional_type = kind
            self.min_notional = _dec(f["minNotional"])
            self.avg_price_mins = int(f.get("avgPriceMins", 0))
            if kind == "MIN_NOTIONAL":
                self.min_notional_to_market = bool(f.get("applyToMarket", False))
            else:
                self.max_notional = _dec(f.get("maxNotional", 0))
                self.min_notional_to_market = bool(f.get("applyMinToMarket", False))
                self.max_notional_to_market = bool(f.get("applyMaxToMarket", False))
            return self._check_notional
        if kind == "PERCENT_PRICE":
            self.percent_type = kind
            self.bid_up = self.ask_up = _dec(f["multiplierUp"])
            self.bid_down = self.ask_down = _dec(f["multiplierDown"])
            return self._check_percent
        if kind == "PERCENT_PRICE_BY_SIDE":
            self.percent_type = kind
            self.bid_up, self.bid_down = _dec(f["bidMultiplierUp"]), _dec(f["bidMultiplierDown"])
            self.ask_up, self.ask_down = _dec(f["askMultiplierUp"]), _dec(f["askMultiplierDown"])
            return self._check_percent
        if kind == "MAX_NUM_ORDERS":
            self.max_num_orders = int(f["maxNumOrders"])
            return self._check_num_orders if self.max_num_orders else None
        if kind == "MAX_NUM_ALGO_ORDERS":
            self.max_num_algo_orders = int(f["maxNumAlgoOrders"])
            return self._check_num_algo if self.max_num_algo_orders else None
        # ICEBERG_PARTS, TRAILING_DELTA, MAX_POSITION, ...: not used by the orders AEGIS sends.
        return None

    # -- public API --------------------------------------------------------------------------

    def check(
        self,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        avg_price: Any = None,
        *,
        open_orders: int = 0,
        open_algo_orders: int = 0,
    ) -> None:
        """Raise ``FilterRejected`` if Binance would reject this order, else return None.

        ``avg_price`` is the reference Binance uses (``GET avgPrice`` over ``avg_price_mins``,
        the last price when that is 0); it is required when a percent-price band or a
        market-applied notional rule is on. ``open_orders``/``open_algo_orders`` are the
        symbol's currently open orders (MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS).
        """
        is_market, qty, px, avg = self._normalize(side, order_type, quantity, price, avg_price)
        # A plain order does not count against the algo-order cap; 0 skips that check.
        n_algo = open_algo_orders + 1 if order_type in ALGO_TYPES else 0
        for check in self._checks:
            check(side, is_market, qty, px, avg, open_orders + 1, n_algo)

    def fit(
        self,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        avg_price: Any = None,
        *,
        open_orders: int = 0,
        open_algo_orders: int = 0,
    ) -> tuple[Decimal, Decimal | None]:
        """Return (quantity, price) on the grid, or raise ``FilterRejected``.

        Quantity is floored to the step; the price goes to the tick on the user's safe side
        (BUY down, SELL up). Nothing is moved further than that, so an order that still fails a
        filter (notional, price band, bounds) is rejected with the failing filter's name.
        """
        is_market, qty, px, _ = self._normalize(side, order_type, quantity, price, avg_price)
        if self.lot_grid is not None:
            qty = self._floor_qty(self.lot_grid, qty, "LOT_SIZE")
        if is_market and self.market_lot_grid is not None:
            qty = self._floor_qty(self.market_lot_grid, qty, "MARKET_LOT_SIZE")
        if px is not None and self.price_grid is not None:
            px = self.price_grid.snap(px, up=side == "SELL")
            if px <= 0:
                raise FilterRejected("PRICE_FILTER", "price below one tick")
        self.check(side, order_type, qty, px, avg_price,
                   open_orders=open_orders, open_algo_orders=open_algo_orders)  # fmt: skip
        return qty, px

    def check_stop_price(self, stop_price: Any) -> None:
        """Raise ``FilterRejected("PRICE_FILTER")`` unless a ``stopPrice`` is on the price grid.

        Binance applies PRICE_FILTER to the stop price of STOP_LOSS(_LIMIT)/TAKE_PROFIT(_LIMIT)
        orders too; check the order itself with ``check``.
        """
        stop = to_decimal(stop_price, "stop_price")
        if stop <= 0:
            raise InvalidOrder(f"stop_price must be positive, got {stop}")
        if self.price_grid is not None and not self.price_grid.accepts(stop):
            raise FilterRejected("PRICE_FILTER", f"stop price {stop}")

    def fit_stop_price(self, side: str, stop_price: Any) -> Decimal:
        """Move a stop price to the tick on the same safe side as ``fit`` moves a limit price."""
        if side not in SIDES:
            raise InvalidOrder(f"side must be BUY or SELL, got {side!r}")
        stop = to_decimal(stop_price, "stop_price")
        if stop <= 0:
            raise InvalidOrder(f"stop_price must be positive, got {stop}")
        if self.price_grid is not None:
            stop = self.price_grid.snap(stop, up=side == "SELL")
        self.check_stop_price(stop)
        return stop

    # -- internals ---------------------------------------------------------------------------

    def _normalize(self, side, order_type, quantity, price, avg_price):
        if side not in SIDES:
            raise InvalidOrder(f"side must be BUY or SELL, got {side!r}")
        if order_type in MARKET_TYPES:
            is_market = True
            if price is not None:
                raise InvalidOrder("a MARKET order carries no price")
        elif order_type in LIMIT_TYPES:
            is_market = False
            if price is None:
                raise InvalidOrder(f"a {order_type} order needs a price")
        else:
            raise InvalidOrder(f"unsupported order type {order_type!r}")
        if self.order_types and order_type not in self.order_types:
            raise InvalidOrder(f"{self.symbol} does not allow {order_type} orders")
        qty = to_decimal(quantity, "quantity")
        if qty <= 0:
            raise InvalidOrder(f"quantity must be positive, got {qty}")
        px = None
        if price is not None:
            px = to_decimal(price, "price")
            if px <= 0:
                raise InvalidOrder(f"price must be positive, got {px}")
        avg = None
        if avg_price is not None:
            avg = to_decimal(avg_price, "avg_price")
            if avg <= 0:
                raise InvalidOrder(f"avg_price must be positive, got {avg}")
        return is_market, qty, px, avg

    @staticmethod
    def _floor_qty(grid: _Grid, qty: Decimal, name: str) -> Decimal:
        if grid.low is not None and qty < grid.low:
            raise FilterRejected(name, f"quantity {qty} below minQty {grid.low}")
        floored = grid.snap(qty, up=False)
        if floored <= 0:
            raise FilterRejected(name, f"quantity {qty} below one step {grid.step}")
        return floored

    def _check_price(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if px is not None and not self.price_grid.accepts(px):
            raise FilterRejected("PRICE_FILTER", f"price {px}")

    def _check_lot(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if not self.lot_grid.accepts(qty):
            raise FilterRejected("LOT_SIZE", f"quantity {qty}")

    def _check_market_lot(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if is_market and not self.market_lot_grid.accepts(qty):
            raise FilterRejected("MARKET_LOT_SIZE", f"quantity {qty}")

    def _check_notional(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        check_min = self.min_notional is not None and (not is_market or self.min_notional_to_market)
        check_max = self.max_notional is not None and (not is_market or self.max_notional_to_market)
        if not (check_min or check_max):
            return
        ref = avg if is_market else px
        if ref is None:
            raise InvalidOrder(f"avg_price is required by {self.notional_type} for MARKET orders")
        notional = _CTX.multiply(ref, qty)
        if check_min and notional < self.min_notional:
            raise FilterRejected(self.notional_type, f"notional {notional} < {self.min_notional}")
        if check_max and notional > self.max_notional:
            raise FilterRejected(self.notional_type, f"notional {notional} > {self.max_notional}")

    def _check_percent(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if is_market:
            return
        up, down = (self.bid_up, self.bid_down) if side == "BUY" else (self.ask_up, self.ask_down)
        if up is None and down is None:
            return
        if avg is None:
            raise InvalidOrder(f"avg_price is required by {self.percent_type}")
        if up is not None and px > _CTX.multiply(avg, up):
            raise FilterRejected(self.percent_type, f"price {px} above {up} x avg {avg}")
        if down is not None and px < _CTX.multiply(avg, down):
            raise FilterRejected(self.percent_type, f"price {px} below {down} x avg {avg}")

    def _check_num_orders(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if n_orders > self.max_num_orders:
            raise FilterRejected("MAX_NUM_ORDERS", f"{n_orders} > {self.max_num_orders}")

    def _check_num_algo(self, side, is_market, qty, px, avg, n_orders, n_algo) -> None:
        if n_algo > self.max_num_algo_orders:
            raise FilterRejected("MAX_NUM_ALGO_ORDERS", f"{n_algo} > {self.max_num_algo_orders}")


def filters_by_symbol(exchange_info: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """Build ``SymbolFilters`` for every symbol of an exchangeInfo answer."""
    return {s["symbol"]: SymbolFilters.from_symbol_info(s) for s in exchange_info["symbols"]}
