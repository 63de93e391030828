"""User-data events of the WebSocket API, parsed into domain types at the edge.

Binance pushes account events as ``{"subscriptionId": N, "event": {...}}`` (and connection
events such as ``serverShutdown`` as ``{"event": {...}}``). ``parse_user_message`` turns one
decoded frame into an ``OrderUpdate`` (``executionReport``), ``BalancesUpdate``
(``outboundAccountPosition``), ``BalanceDelta`` (``balanceUpdate``), ``OrderListUpdate``
(``listStatus``), ``StreamTerminated`` (``eventStreamTerminated``) or ``ServerShutdown``; a
request answer (``{"id", "status", ...}``) and an event type AEGIS does not use give None.
Binance's one-letter field names never leave this module. A frame that claims to be one of
these events but lacks or mistypes a field raises ``MalformedUserEvent`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from aegis.binance.models import Balance


class MalformedUserEvent(ValueError):
    """A user-data frame that cannot be trusted; ``reason`` is short and groupable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One ``executionReport``: an order changed (new, trade, canceled, expired, rejected)."""

    symbol: str
    client_order_id: str  # the order's own id (for a cancel: the cancelled order's id)
    order_id: int
    side: str
    order_type: str
    execution_type: str  # NEW, TRADE, CANCELED, REJECTED, EXPIRED, ...
    status: str  # NEW, PARTIALLY_FILLED, FILLED, CANCELED, ...
    quantity: Decimal
    price: Decimal
    last_quantity: Decimal
    last_price: Decimal
    cumulative_quantity: Decimal
    cumulative_quote: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int  # -1 unless execution_type is TRADE
    execution_id: int
    is_maker: bool
    reject_reason: str
    event_time_ms: int
    transaction_time_ms: int

    @property
    def is_trade(self) -> bool:
        """True when this update carries a fill."""
        return self.execution_type == "TRADE"

    @property
    def is_final(self) -> bool:
        """True when the order can no longer change."""
        return self.status in ("FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH")


@dataclass(frozen=True, slots=True)
class BalancesUpdate:
    """``outboundAccountPosition``: absolute free/locked of the assets that changed."""

    balances: tuple[Balance, ...]
    update_time_ms: int
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class BalanceDelta:
    """``balanceUpdate``: a deposit, withdrawal or transfer changed ``asset`` by ``delta``."""

    asset: str
    delta: Decimal
    clear_time_ms: int
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class OrderListUpdate:
    """``listStatus``: an order list (OCO, OTO, ...) changed."""

    symbol: str
    order_list_id: int
    contingency_type: str
    list_status_type: str
    list_order_status: str
    list_client_order_id: str
    reject_reason: str
    orders: tuple[tuple[str, int, str], ...]  # (symbol, order id, client order id)
    transaction_time_ms: int
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class StreamTerminated:
    """``eventStreamTerminated``: the subscription ended (logout, key revoked); resubscribe."""

    event_time_ms: int


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """``serverShutdown``: the server will close this connection soon; reconnect now."""

    event_time_ms: int


UserEvent = (
    OrderUpdate
    | BalancesUpdate
    | BalanceDelta
    | OrderListUpdate
    | StreamTerminated
    | ServerShutdown
)


def _field(raw: Mapping[str, Any], key: str, name: str) -> Any:
    try:
        return raw[key]
    except KeyError:
        raise MalformedUserEvent(f"missing field {name}") from None


def _dec(raw: Mapping[str, Any], key: str, name: str) -> Decimal:
    value = _field(raw, key, name)
    if type(value) is not str:
        raise MalformedUserEvent(f"{name} is not a decimal string")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise MalformedUserEvent(f"{name} is not a number") from None
    if not result.is_finite():
        raise MalformedUserEvent(f"{name} is not finite")
    return result


def _int(raw: Mapping[str, Any], key: str, name: str) -> int:
    value = _field(raw, key, name)
    if type(value) is not int:
        raise MalformedUserEvent(f"{name} is not an integer")
    return value


def _str(raw: Mapping[str, Any], key: str, name: str) -> str:
    value = _field(raw, key, name)
    if type(value) is not str:
        raise MalformedUserEvent(f"{name} is not a string")
    return value


def _order_update(e: Mapping[str, Any]) -> OrderUpdate:
    execution_type = _str(e, "x", "execution type")
    # A cancel carries the cancel request's id in "c" and the cancelled order's id in "C".
    own_id = _str(e, "C", "original client order id") if execution_type == "CANCELED" else ""
    commission_asset = e.get("N")
    return OrderUpdate(
        symbol=_str(e, "s", "symbol"),
        client_order_id=own_id or _str(e, "c", "client order id"),
        order_id=_int(e, "i", "order id"),
        side=_str(e, "S", "side"),
        order_type=_str(e, "o", "order type"),
        execution_type=execution_type,
        status=_str(e, "X", "order status"),
        quantity=_dec(e, "q", "quantity"),
        price=_dec(e, "p", "price"),
        last_quantity=_dec(e, "l", "last quantity"),
        last_price=_dec(e, "L", "last price"),
        cumulative_quantity=_dec(e, "z", "cumulative quantity"),
        cumulative_quote=_dec(e, "Z", "cumulative quote"),
        commission=_dec(e, "n", "commission"),
        commission_asset=commission_asset if type(commission_asset) is str else "",
        trade_id=_int(e, "t", "trade id"),
        execution_id=_int(e, "I", "execution id"),
        is_maker=bool(e.get("m", False)),
        reject_reason=str(e.get("r", "NONE")),
        event_time_ms=_int(e, "E", "event time"),
        transaction_time_ms=_int(e, "T", "transaction time"),
    )


def _balances_update(e: Mapping[str, Any]) -> BalancesUpdate:
    rows = _field(e, "B", "balances")
    if type(rows) is not list:
        raise MalformedUserEvent("balances is not a list")
    balances = []
    for row in rows:
        if type(row) is not dict:
            raise MalformedUserEvent("balance is not an object")
        balances.append(
            Balance(_str(row, "a", "asset"), _dec(row, "f", "free"), _dec(row, "l", "locked"))
        )
    return BalancesUpdate(tuple(balances), _int(e, "u", "update time"), _int(e, "E", "event time"))


def _order_list_update(e: Mapping[str, Any]) -> OrderListUpdate:
    rows = _field(e, "O", "orders")
    if type(rows) is not list:
        raise MalformedUserEvent("orders is not a list")
    orders = []
    for row in rows:
        if type(row) is not dict:
            raise MalformedUserEvent("list order is not an object")
        orders.append((_str(row, "s", "symbol"), _int(row, "i", "order id"), _str(row, "c", "id")))
    return OrderListUpdate(
        symbol=_str(e, "s", "symbol"),
        order_list_id=_int(e, "g", "order list id"),
        contingency_type=_str(e, "c", "contingency type"),
        list_status_type=_str(e, "l", "list status type"),
        list_order_status=_str(e, "L", "list order status"),
        list_client_order_id=_str(e, "C", "list client order id"),
        reject_reason=str(e.get("r", "NONE")),
        orders=tuple(orders),
        transaction_time_ms=_int(e, "T", "transaction time"),
        event_time_ms=_int(e, "E", "event time"),
    )


def parse_user_event(event: Mapping[str, Any]) -> UserEvent | None:
    """Parse the inner ``event`` object; None for an event type AEGIS does not use."""
    kind = event.get("e")
    try:
        if kind == "executionReport":
            return _order_update(event)
        if kind == "outboundAccountPosition":
            return _balances_update(event)
        if kind == "balanceUpdate":
            return BalanceDelta(
                _str(event, "a", "asset"),
                _dec(event, "d", "delta"),
                _int(event, "T", "clear time"),
                _int(event, "E", "event time"),
            )
        if kind == "listStatus":
            return _order_list_update(event)
        if kind == "eventStreamTerminated":
            return StreamTerminated(_int(event, "E", "event time"))
        if kind == "serverShutdown":
            return ServerShutdown(_int(event, "E", "event time"))
    except MalformedUserEvent as exc:
        exc.reason = f"{kind}: {exc.reason}"
        exc.args = (exc.reason,)
        raise
    return None


def parse_user_message(msg: Any) -> UserEvent | None:
    """Parse one decoded WebSocket API frame; None for request answers and unused events."""
    if type(msg) is not dict:
        raise MalformedUserEvent("frame is not a JSON object")
    if "event" not in msg:
        if "id" in msg and "status" in msg:
            return None
        raise MalformedUserEvent("frame is neither an event nor an answer")
    event = msg["event"]
    if type(event) is not dict:
        raise MalformedUserEvent("event is not an object")
    return parse_user_event(event)
