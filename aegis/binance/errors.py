"""Binance errors as types whose class decides what the caller does next.

``classify`` turns an HTTP status and Binance's ``{"code", "msg"}`` body into one exception. The
``action`` of its class is the whole policy, so no caller re-derives it from codes:

==============  =====================================================================
RETRY           temporary; the request had no side effect: retry with backoff
BACK_OFF        rate limited (429, -1015) or WAF-blocked (403): wait ``retry_after``
SILENCE         IP banned (418): no request from any process until ``until``
RESYNC_CLOCK    -1021: resync the server-time offset, then retry once
QUERY_ORDER     the order's fate is unknown (5xx, timeout, -1006/-1007) or the client id is
                already used (-2010 duplicate): query by ``origClientOrderId`` first
REJECT          the exchange refused this request; sending it again gets the same answer
HALT            credentials or account permissions: a human must act
==============  =====================================================================
"""

from __future__ import annotations

import enum
import re
import time


class Action(enum.Enum):
    RETRY = "retry"
    BACK_OFF = "back_off"
    SILENCE = "silence"
    RESYNC_CLOCK = "resync_clock"
    QUERY_ORDER = "query_order"
    REJECT = "reject"
    HALT = "halt"


class BinanceError(Exception):
    """Any error answered by Binance (or by the network on the way to it)."""

    action = Action.REJECT

    def __init__(self, msg: str, *, status: int = 0, code: int | None = None) -> None:
        super().__init__(f"{msg} (HTTP {status}, code {code})" if status or code else msg)
        self.msg = msg
        self.status = status
        self.code = code


class RetryableError(BinanceError):
    """Temporary failure of a request without side effects (5xx on a read, -1001, -1008)."""

    action = Action.RETRY


class RateLimited(BinanceError):
    """429 / -1003 / -1015: the whole kernel waits ``retry_after`` seconds."""

    action = Action.BACK_OFF

    def __init__(self, msg: str, *, retry_after: float, status: int = 429, code: int | None = None):
        super().__init__(msg, status=status, code=code)
        self.retry_after = retry_after


class WafBlocked(RateLimited):
    """403: the web application firewall refused the request; back off."""


class IpBanned(BinanceError):
    """418: the IP is banned until ``until`` (epoch seconds); send nothing before it."""

    action = Action.SILENCE

    def __init__(self, msg: str, *, until: float, status: int = 418, code: int | None = None):
        super().__init__(msg, status=status, code=code)
        self.until = until


class InvalidTimestamp(BinanceError):
    """-1021: the request's timestamp is outside recvWindow; resync the clock, retry once."""

    action = Action.RESYNC_CLOCK


class UnknownOrderState(BinanceError):
    """An order request whose outcome is unknown; query by client order id before anything."""

    action = Action.QUERY_ORDER
    lookup = ""  # set by the REST client after querying: "not found" or "failed"


class DuplicateOrder(UnknownOrderState):
    """-2010 ``Duplicate order sent.``: the client order id exists, so an earlier send landed."""


class BadRequest(BinanceError):
    """The exchange refused the request as sent (parameters, symbol, …); do not resend it."""


class NoSuchOrder(BadRequest):
    """-2013 or ``Unknown order sent.``: the exchange has no order with this id."""


class OrderRejected(BadRequest):
    """A new order or a cancel was refused (-2010, -2011, -1013, …); never retry it."""


class FilterFailure(OrderRejected):
    """-1013 ``Filter failure: <filter_type>``."""

    def __init__(self, msg: str, *, status: int = 400, code: int | None = -1013) -> None:
        super().__init__(msg, status=status, code=code)
        self.filter_type = msg.removeprefix("Filter failure: ").strip()


class InsufficientBalance(OrderRejected):
    """-2010 ``Account has insufficient balance for requested action.``"""


class HaltError(BinanceError):
    """Needs a human: the kernel stops trading and notifies."""

    action = Action.HALT


class AuthError(HaltError):
    """401, -1002, -1022, -2014, -2015: key, secret, signature, IP whitelist or permissions."""


class AccountRestricted(HaltError):
    """The account may not trade this (disabled, restricted symbol, API trading off)."""


# Codes whose meaning does not depend on the message.
_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})
_UNKNOWN_STATE_CODES = frozenset({-1000, -1001, -1006, -1007, -1008})
_TEMPORARY_CODES = frozenset({-1016})
_ACCOUNT_MESSAGES = (
    "This action is disabled on this account.",
    "This account may not place or cancel orders.",
    "This symbol is not permitted for this account.",
    "This symbol is restricted for this account.",
    "Rest API trading is not enabled.",
)
_BANNED_UNTIL = re.compile(r"banned until (\d{10,13})")
DEFAULT_BAN_S = 120.0  # Binance's shortest ban, used when neither header nor message says
DEFAULT_BACK_OFF_S = 60.0


def classify(
    status: int,
    code: int | None,
    msg: str,
    *,
    order_request: bool = False,
    retry_after: float | None = None,
    now: float | None = None,
) -> BinanceError:
    """Return the exception for one failed answer (not raised).

    ``order_request`` is True for requests that may place an order (``POST /api/v3/order``):
    there any server-side failure means the order's state is unknown, never "retry".
    ``retry_after`` is the ``Retry-After`` header in seconds; ``now`` is epoch seconds.
    """
    now = time.time() if now is None else now
    if status == 418:
        match = _BANNED_UNTIL.search(msg)
        if match:
            stamp = int(match.group(1))
            until = stamp / 1000 if stamp > 10**11 else float(stamp)
        else:
            until = now + (retry_after if retry_after is not None else DEFAULT_BAN_S)
        return IpBanned(msg, until=until, status=status, code=code)
    if status == 429 or code == -1003:
        return RateLimited(
            msg, retry_after=retry_after or DEFAULT_BACK_OFF_S, status=status, code=code
        )
    if status == 403:
        return WafBlocked(
            msg, retry_after=retry_after or DEFAULT_BACK_OFF_S, status=status, code=code
        )
    if code == -1015:
        # The order-rate limit: the order was not placed.
        return RateLimited(msg, retry_after=retry_after or 10.0, status=status, code=code)
    if code == -1021:
        return InvalidTimestamp(msg, status=status, code=code)
    if status == 401 or code in _AUTH_CODES:
        return AuthError(msg, status=status, code=code)
    if status >= 500 or status == 0 or code in _UNKNOWN_STATE_CODES:
        # status 0: no HTTP answer at all (timeout, connection reset after sending).
        if order_request:
            return UnknownOrderState(msg, status=status, code=code)
        return RetryableError(msg, status=status, code=code)
    if code in _TEMPORARY_CODES:
        if order_request:
            return UnknownOrderState(msg, status=status, code=code)
        return RetryableError(msg, status=status, code=code)
    if code is None:
        # An HTTP error without Binance's body (a proxy, a wrong URL): nothing says the order
        # did not land, so an order request is still resolved by query.
        if order_request:
            return UnknownOrderState(msg, status=status, code=code)
        return BadRequest(msg, status=status, code=code)
    if msg.startswith("Filter failure:"):
        return FilterFailure(msg, status=status, code=code)
    if msg.startswith(_ACCOUNT_MESSAGES):
        return AccountRestricted(msg, status=status, code=code)
    if code == -2010 and msg.startswith("Duplicate order sent"):
        return DuplicateOrder(msg, status=status, code=code)
    if code == -2010 and msg.startswith("Account has insufficient balance"):
        return InsufficientBalance(msg, status=status, code=code)
    if code == -2013 or msg.startswith("Unknown order sent"):
        return NoSuchOrder(msg, status=status, code=code)
    if order_request or code in (-1013, -2010, -2011):
        return OrderRejected(msg, status=status, code=code)
    return BadRequest(msg, status=status, code=code)
