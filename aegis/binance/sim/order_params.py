"""Parsing of order request parameters into typed requests, with Binance's error answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from aegis.binance.sim import errors
from aegis.binance.sim.errors import BinanceError

_NUMBER_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
STOP_MARKET_TYPES = frozenset({"STOP_LOSS", "TAKE_PROFIT"})
STOP_LIMIT_TYPES = frozenset({"STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
STOP_TYPES = STOP_MARKET_TYPES | STOP_LIMIT_TYPES
KNOWN_TYPES = frozenset({"LIMIT", "MARKET", "LIMIT_MAKER"}) | STOP_TYPES
PRICELESS_TYPES = frozenset({"MARKET"}) | STOP_MARKET_TYPES
TIF_TYPES = frozenset({"LIMIT"}) | STOP_LIMIT_TYPES
FULL_ANSWER_TYPES = frozenset({"LIMIT", "MARKET"})  # the others answer ACK unless asked
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK"})
RESP_TYPES = frozenset({"ACK", "RESULT", "FULL"})


@dataclass(frozen=True)
class NewOrderRequest:
    """A syntactically valid new order (filters and balances are checked by the engine)."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    new_client_order_id: str | None
    resp_type: str
    stop_price: Decimal | None = None
    """Trigger price of STOP_LOSS(_LIMIT) / TAKE_PROFIT(_LIMIT); None for the other types."""

    @property
    def is_stop(self) -> bool:
        return self.type in STOP_TYPES


def required(params: dict[str, str], name: str) -> str:
    """The non-empty value of a mandatory parameter, else -1102."""
    value = params.get(name)
    if value is None or value == "":
        raise errors.mandatory(name)
    return value


def decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    """A number parameter as Decimal (None when absent), -1100 when it is not a number."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not _NUMBER_RE.match(raw):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            f"'{_NUMBER_RE.pattern}'.",
        )
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise errors.invalid_param(name) from None


def int_param(params: dict[str, str], name: str) -> int | None:
    """An integer parameter (None when absent), -1100 when malformed."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.lstrip("-").isdigit():
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^-?[0-9]+$'."
        )
    return int(raw)


def client_id_param(params: dict[str, str], name: str) -> str | None:
    """A client order id (None when absent), -1100 when it breaks Binance's pattern."""
    raw = params.get(name)
    if raw is None:
        return None
    if not _CLIENT_ID_RE.match(raw):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            f"'{_CLIENT_ID_RE.pattern}'.",
        )
    return raw


def parse_new_order(params: dict[str, str], symbols: object) -> NewOrderRequest:
    """Validate POST /api/v3/order parameters in Binance's order of checks."""
    symbol = required(params, "symbol")
    if symbol not in symbols:  # type: ignore[operator]
        raise errors.invalid_symbol()
    side = required(params, "side")
    if side not in ("BUY", "SELL"):
        raise BinanceError(-1117, "Invalid side.")
    order_type = required(params, "type")
    if order_type not in KNOWN_TYPES:
        raise BinanceError(-1116, "Invalid orderType.")
    tif = params.get("timeInForce")
    if order_type in TIF_TYPES:
        tif = required(params, "timeInForce")
        if tif not in TIME_IN_FORCE:
            raise BinanceError(-1115, "Invalid timeInForce.")
    elif tif:
        raise errors.not_required("timeInForce")
    if params.get("quoteOrderQty") or params.get("trailingDelta"):
        # Neither is matched by the simulator; say so rather than fake it.
        raise BinanceError(-1014, "Unsupported order combination.")
    quantity = decimal_param(params, "quantity")
    if quantity is None:
        if order_type == "MARKET":
            raise BinanceError(
                -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
            )
        raise errors.mandatory("quantity")
    price = decimal_param(params, "price")
    if order_type in PRICELESS_TYPES:
        if price is not None:
            raise errors.not_required("price")
        price = Decimal(0)
    elif price is None:
        raise errors.mandatory("price")
    stop_price = decimal_param(params, "stopPrice")
    if order_type in STOP_TYPES:
        if stop_price is None:
            raise errors.mandatory("stopPrice")
    elif stop_price is not None:
        raise errors.not_required("stopPrice")
    if quantity <= 0:
        raise errors.filter_failure("LOT_SIZE")
    if order_type not in PRICELESS_TYPES and price <= 0:
        raise errors.filter_failure("PRICE_FILTER")
    if stop_price is not None and stop_price <= 0:
        raise errors.filter_failure("PRICE_FILTER")
    default_resp = "FULL" if order_type in FULL_ANSWER_TYPES else "ACK"
    resp_type = params.get("newOrderRespType") or default_resp
    if resp_type not in RESP_TYPES:
        raise errors.invalid_param("newOrderRespType")
    return NewOrderRequest(
        symbol=symbol,
        side=side,
        type=order_type,
        time_in_force=tif or "GTC",
        quantity=quantity,
        price=price,
        new_client_order_id=client_id_param(params, "newClientOrderId"),
        resp_type=resp_type,
        stop_price=stop_price,
    )
