"""The matching engine: places, fills, cancels and queries orders against the replayed price.

There is no order book: a MARKET order (or a marketable LIMIT) fills at once, whole, at the
current simulated price (the in-progress bar's close) as taker; a resting LIMIT fills whole at
its limit price (maker) as soon as the replayed price path touches it. Commission is charged
in the asset received. Every state change is announced to ``listener(api_key, event)`` as
Binance's ``executionReport`` / ``outboundAccountPosition``.

Stop and take-profit orders (``stops.py``) wait with their funds locked, off the book
(``isWorking`` false, ``workingTime`` -1), until the path reaches their stop price. Then
STOP_LOSS / TAKE_PROFIT fill whole as a MARKET order at the trigger price (taker); a
STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT becomes a LIMIT order: filled at the trigger price when its
limit allows it, else working on the book from the next path segment on (announced by an
``executionReport`` NEW with ``w`` true and ``W`` set; Binance does not document the trigger
event, this is the simulator's choice), or expired when its time in force is IOC/FOK.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

from aegis.binance.filters import FilterRejected, InvalidOrder, SymbolFilters
from aegis.binance.sim import errors
from aegis.binance.sim.accounts import Account, Fill, InsufficientBalance, SimOrder
from aegis.binance.sim.catalog import ExchangeCatalog
from aegis.binance.sim.errors import BinanceError
from aegis.binance.sim.market import MarketData
from aegis.binance.sim.order_params import (
    STOP_MARKET_TYPES,
    NewOrderRequest,
    client_id_param,
    int_param,
    required,
)
from aegis.binance.sim.stops import is_reached, trigger_price

LOG = logging.getLogger(__name__)
Q8 = Decimal("0.00000001")
Listener = Callable[[str, dict], None]


def _random_client_id() -> str:
    return secrets.token_urlsafe(16)[:22]


class MatchingEngine:
    """Orders of every account, matched against ``MarketData`` at the clock's time."""

    def __init__(
        self,
        catalog: ExchangeCatalog,
        market: MarketData,
        commission_rate: Decimal,
        listener: Listener | None = None,
    ) -> None:
        self.catalog = catalog
        self.market = market
        self.commission_rate = commission_rate
        self.listener = listener
        self._orders: dict[tuple[str, int], SimOrder] = {}
        self._open_by_symbol: dict[str, dict[int, SimOrder]] = {}
        self._next_order_id = 1_000_001
        self._next_trade_id = 5_000_001

    # -- queries -----------------------------------------------------------------------------

    def current_price(self, symbol: str, now_ms: int) -> Decimal:
        """Current simulated price on the symbol's tick grid."""
        px = self.market.price_at(symbol, now_ms)
        if px is None:
            raise BinanceError(-2010, errors.MSG_MARKET_CLOSED)
        return Decimal(f"{px:.{self.catalog.spec(symbol).price_decimals}f}")

    def open_orders(self, account: Account, symbol: str | None = None) -> list[SimOrder]:
        """Open orders of ``account`` (all symbols, or one), oldest first."""
        books = [self._open_by_symbol.get(symbol, {})] if symbol else self._open_by_symbol.values()
        found = [o for book in books for o in book.values() if o.api_key == account.api_key]
        return sorted(found, key=lambda o: o.order_id)

    def all_orders(self, account: Account, symbol: str) -> list[SimOrder]:
        """Every order of ``account`` on ``symbol`` (open and closed), oldest first."""
        found = [
            o for o in self._orders.values() if o.api_key == account.api_key and o.symbol == symbol
        ]
        return sorted(found, key=lambda o: o.order_id)

    def find(self, account: Account, params: dict[str, str]) -> SimOrder | None:
        """Order named by ``orderId`` or ``origClientOrderId`` (-1102 when neither is sent)."""
        symbol = required(params, "symbol")
        if symbol not in self.catalog:
            raise errors.invalid_symbol()
        order_id = int_param(params, "orderId")
        client_id = client_id_param(params, "origClientOrderId")
        if order_id is None and client_id is None:
            raise BinanceError(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if order_id is not None:
            order = self._orders.get((account.api_key, order_id))
            if order is None or order.symbol != symbol:
                return None
            if client_id is not None and order.client_order_id != client_id:
                return None
            return order
        # Most recent order with that client id (Binance lets a closed id be reused).
        best = None
        for order in self._orders.values():
            if (
                order.api_key == account.api_key
                and order.symbol == symbol
                and order.client_order_id == client_id
                and (best is None or order.order_id > best.order_id)
            ):
                best = order
        return best

    # -- commands ----------------------------------------------------------------------------

    def validate(self, account: Account, req: NewOrderRequest, now_ms: int) -> Decimal:
        """Run every check of a new order without placing it; return the current price."""
        spec = self.catalog.spec(req.symbol)
        if spec.status != "TRADING":
            raise BinanceError(-2010, errors.MSG_MARKET_CLOSED)
        allowed = spec.filters.order_types
        if allowed and req.type not in allowed and req.type in errors.MSG_TYPE_NOT_SUPPORTED:
            raise errors.new_order_rejected(errors.MSG_TYPE_NOT_SUPPORTED[req.type])
        price_now = self.current_price(req.symbol, now_ms)
        avg = self.market.avg_price(req.symbol, now_ms, spec.filters.avg_price_mins or 5)
        mine = self.open_orders(account, req.symbol)  # MAX_NUM_ORDERS is per account
        try:
            if req.stop_price is not None:
                spec.filters.check_stop_price(req.stop_price)  # PRICE_FILTER covers stopPrice
            self._check_filters(
                spec.filters, req, Decimal(f"{avg:.8f}") if avg else price_now, mine
            )
        except FilterRejected as exc:
            raise errors.filter_failure(exc.filter_type) from None
        except InvalidOrder as exc:
            # Past parse_new_order only the symbol's allowed order types can fail here.
            LOG.debug("order rejected before filters: %s", exc)
            kind = {"MARKET": "Market", "LIMIT_MAKER": "Limit maker"}.get(req.type, req.type)
            raise errors.new_order_rejected(
                f"{kind} orders are not supported for this symbol."
            ) from None
        if req.new_client_order_id is not None and any(
            o.client_order_id == req.new_client_order_id for o in self.open_orders(account)
        ):
            raise errors.new_order_rejected(errors.MSG_DUPLICATE_ORDER)
        if req.stop_price is not None and is_reached(req.type, req.side, req.stop_price, price_now):
            raise errors.new_order_rejected(errors.MSG_WOULD_TRIGGER)
        if req.type == "LIMIT_MAKER" and self._marketable(req.side, req.price, price_now):
            raise errors.new_order_rejected(errors.MSG_WOULD_MATCH)
        need_asset, need = self._requirement(req, price_now)
        if account.balance(need_asset).free < need:
            raise errors.new_order_rejected(errors.MSG_INSUFFICIENT_BALANCE)
        return price_now

    @staticmethod
    def _check_filters(
        filters: SymbolFilters, req: NewOrderRequest, avg: Decimal, mine: list[SimOrder]
    ) -> None:
        n_algo = sum(o.is_stop for o in mine)
        if req.type in STOP_MARKET_TYPES:
            # Filters see a stop-market order as the MARKET order it becomes when triggered;
            # the algo-order cap still counts it.
            filters.check(req.side, "MARKET", req.quantity, None, avg, open_orders=len(mine))
            if filters.max_num_algo_orders and n_algo + 1 > filters.max_num_algo_orders:
                raise FilterRejected("MAX_NUM_ALGO_ORDERS")
            return
        filters.check(
            req.side,
            req.type,
            req.quantity,
            None if req.type == "MARKET" else req.price,
            avg,
            open_orders=len(mine),
            open_algo_orders=n_algo,
        )

    def place(self, account: Account, req: NewOrderRequest, now_ms: int) -> SimOrder:
        """Validate and place a new order; fill it at once when it is marketable."""
        price_now = self.validate(account, req, now_ms)
        order = SimOrder(
            symbol=req.symbol,
            order_id=self._next_order_id,
            client_order_id=req.new_client_order_id or _random_client_id(),
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            price=req.price,
            orig_qty=req.quantity,
            api_key=account.api_key,
            time_ms=now_ms,
            stop_price=req.stop_price,
        )
        self._next_order_id += 1
        self._orders[(account.api_key, order.order_id)] = order
        self._report(account, order, "NEW", now_ms)
        if req.stop_price is not None:
            self._rest(account, order, *self._requirement(req, req.price), now_ms)
        elif req.type == "MARKET" or self._marketable(req.side, req.price, price_now):
            self._fill(account, order, price_now, maker=False, now_ms=now_ms)
        elif req.time_in_force in ("IOC", "FOK"):
            order.status = "EXPIRED"
            order.update_time_ms = now_ms
            self._report(account, order, "EXPIRED", now_ms)
        else:
            self._rest(account, order, *self._requirement(req, req.price), now_ms)
        LOG.info(
            "order %s %s %s %s qty=%s status=%s",
            order.order_id, order.symbol, order.side, order.type, order.orig_qty, order.status,
        )  # fmt: skip
        return order

    def cancel(self, account: Account, params: dict[str, str], now_ms: int) -> SimOrder:
        """Cancel an open order (-2011 ``Unknown order sent.`` when unknown or not open)."""
        order = self.find(account, params)
        if order is None or not order.is_open:
            raise errors.cancel_rejected()
        order.cancel_client_order_id = (
            client_id_param(params, "newClientOrderId") or _random_client_id()
        )
        self._close(account, order, "CANCELED", now_ms)
        self._report(account, order, "CANCELED", now_ms)
        self._emit_position(account, now_ms)
        return order

    def on_price_path(
        self,
        symbol: str,
        low: float,
        high: float,
        now_ms: int,
        accounts: dict[str, Account],
        start: float | None = None,
    ) -> int:
        """Match the resting orders of ``symbol`` against one path segment; return fills.

        Working LIMIT orders touched by ``low``..``high`` fill at their limit; then waiting stop
        orders whose stop price the segment reaches trigger. ``start`` is the segment's first
        price (a bar's open may gap past a stop); None triggers at the stop price.
        """
        book = self._open_by_symbol.get(symbol)
        if not book:
            return 0
        lo, hi = Decimal(repr(low)), Decimal(repr(high))
        touched = [
            o
            for o in book.values()
            if not o.is_waiting
            and ((o.side == "BUY" and lo <= o.price) or (o.side == "SELL" and hi >= o.price))
        ]
        waiting = [o for o in book.values() if o.is_waiting]
        for order in sorted(touched, key=lambda o: o.order_id):
            account = accounts[order.api_key]
            account.unlock(order.locked_asset, order.locked_amount)
            order.locked_amount = Decimal(0)
            self._fill(account, order, order.price, maker=True, now_ms=now_ms)
        fills = len(touched)
        if not waiting:
            return fills
        decimals = self.catalog.spec(symbol).price_decimals
        first = None if start is None else Decimal(f"{start:.{decimals}f}")
        for order in sorted(waiting, key=lambda o: o.order_id):
            begin = order.stop_price if first is None else first
            px = trigger_price(order.type, order.side, order.stop_price, begin, lo, hi)
            if px is not None:
                fills += self._trigger(accounts[order.api_key], order, px, now_ms)
        return fills

    def _trigger(self, account: Account, order: SimOrder, price: Decimal, now_ms: int) -> int:
        """A stop order's price was reached at ``price``: fill, expire or start working."""
        order.triggered_ms = now_ms
        LOG.info("order %s %s %s %s triggered at %s",
                 order.order_id, order.symbol, order.side, order.type, price)  # fmt: skip
        if order.type in STOP_MARKET_TYPES or self._marketable(order.side, order.price, price):
            account.unlock(order.locked_asset, order.locked_amount)
            order.locked_amount = Decimal(0)
            try:
                self._fill(account, order, price, maker=False, now_ms=now_ms)
            except BinanceError:
                # A BUY stop that gapped past the quote it locked and the account cannot pay.
                self._expire(account, order, now_ms)
                return 0
            return 1
        if order.time_in_force in ("IOC", "FOK"):
            self._expire(account, order, now_ms)
        else:
            self._report(account, order, "NEW", now_ms)  # now on the book
        return 0

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _marketable(side: str, limit: Decimal, price_now: Decimal) -> bool:
        return limit >= price_now if side == "BUY" else limit <= price_now

    def _requirement(self, req: NewOrderRequest, price: Decimal) -> tuple[str, Decimal]:
        spec = self.catalog.spec(req.symbol)
        if req.side == "BUY":
            if req.type == "MARKET":
                ref = price
            elif req.type in STOP_MARKET_TYPES:
                ref = req.stop_price  # the simulator's choice: Binance does not document it
            else:
                ref = req.price
            return spec.quote_asset, ref * req.quantity
        return spec.base_asset, req.quantity

    def _rest(
        self, account: Account, order: SimOrder, asset: str, amount: Decimal, now_ms: int
    ) -> None:
        """Lock the order's funds and keep it open in its symbol's book."""
        account.lock(asset, amount)
        order.locked_asset, order.locked_amount = asset, amount
        self._open_by_symbol.setdefault(order.symbol, {})[order.order_id] = order
        self._emit_position(account, now_ms)

    def _expire(self, account: Account, order: SimOrder, now_ms: int) -> None:
        self._close(account, order, "EXPIRED", now_ms)
        self._report(account, order, "EXPIRED", now_ms)
        self._emit_position(account, now_ms)

    def _fill(
        self, account: Account, order: SimOrder, price: Decimal, maker: bool, now_ms: int
    ) -> None:
        spec = self.catalog.spec(order.symbol)
        qty = order.orig_qty - order.executed_qty
        quote = price * qty
        try:
            if order.side == "BUY":
                account.spend(spec.quote_asset, quote)
                commission = (qty * self.commission_rate).quantize(Q8, rounding=ROUND_DOWN)
                account.credit(spec.base_asset, qty - commission)
                asset = spec.base_asset
            else:
                account.spend(spec.base_asset, qty)
                commission = (quote * self.commission_rate).quantize(Q8, rounding=ROUND_DOWN)
                account.credit(spec.quote_asset, quote - commission)
                asset = spec.quote_asset
        except InsufficientBalance:
            raise errors.new_order_rejected(errors.MSG_INSUFFICIENT_BALANCE) from None
        fill = Fill(price, qty, commission, asset, self._next_trade_id, maker, now_ms)
        self._next_trade_id += 1
        order.fills.append(fill)
        order.executed_qty += qty
        order.cumm_quote += quote
        self._close(account, order, "FILLED", now_ms)
        self._report(account, order, "TRADE", now_ms, fill)
        self._emit_position(account, now_ms)

    def _close(self, account: Account, order: SimOrder, status: str, now_ms: int) -> None:
        if order.locked_amount > 0:
            account.unlock(order.locked_asset, order.locked_amount)
            order.locked_amount = Decimal(0)
        order.status = status
        order.update_time_ms = now_ms
        self._open_by_symbol.get(order.symbol, {}).pop(order.order_id, None)

    def _report(
        self,
        account: Account,
        order: SimOrder,
        exec_type: str,
        now_ms: int,
        fill: Fill | None = None,
    ) -> None:
        order.executions += 1  # each executionReport gets its own execution id
        self._emit(account, order.execution_report(exec_type, now_ms, fill))

    def _emit(self, account: Account, event: dict) -> None:
        if self.listener is not None:
            self.listener(account.api_key, event)

    def _emit_position(self, account: Account, now_ms: int) -> None:
        changed = account.take_changes(now_ms)
        if changed:
            self._emit(account, account.position_event(changed, now_ms))

    def symbols_with_open_orders(self) -> list[str]:
        """Symbols that have at least one resting order."""
        return [s for s, book in self._open_by_symbol.items() if book]
