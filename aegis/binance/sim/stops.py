"""Trigger rules of stop and take-profit orders (Binance's "algo" orders), pure and in Decimal.

Binance's rule, for the market and the limit versions alike: the stop price of a STOP_LOSS BUY
or a TAKE_PROFIT SELL lies above the market and triggers when the last price rises to it; that
of a STOP_LOSS SELL or a TAKE_PROFIT BUY lies below and triggers when the price falls to it. An
order whose stop price is already reached is refused at placement (-2010 ``Order would trigger
immediately.``).

The replay moves the price continuously inside a bar (see ``bars.py``), so a falling price
crosses a stop exactly at the stop price; only at a bar's open can it jump past it (a gap), and
then the order triggers at the open, the first price beyond the stop.
"""

from __future__ import annotations

from decimal import Decimal


def triggers_on_rise(order_type: str, side: str) -> bool:
    """True when the order triggers as the price rises to its stop (else as it falls)."""
    return order_type.startswith("STOP_LOSS") == (side == "BUY")


def is_reached(order_type: str, side: str, stop_price: Decimal, price: Decimal) -> bool:
    """True when ``price`` is at or beyond the stop price (the order would trigger now)."""
    if triggers_on_rise(order_type, side):
        return price >= stop_price
    return price <= stop_price


def trigger_price(
    order_type: str,
    side: str,
    stop_price: Decimal,
    start: Decimal,
    low: Decimal,
    high: Decimal,
) -> Decimal | None:
    """The price at which a waiting order triggers on a path segment, or None if it does not.

    ``start`` is the segment's first price and ``low``/``high`` the range it visits.
    """
    if triggers_on_rise(order_type, side):
        return max(stop_price, start) if high >= stop_price else None
    return min(stop_price, start) if low <= stop_price else None
