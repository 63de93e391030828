"""Binance error answers the simulator gives, with the exact codes and texts of the docs.

Every message here appears in the bundled catalogue (aegis/data/samples/
binance_spot_error_codes.json.gz); a test keeps them in sync.
"""

from __future__ import annotations


class BinanceError(Exception):
    """An error answer: HTTP status plus Binance's ``{"code": ..., "msg": ...}`` payload."""

    def __init__(self, code: int, msg: str, status: int = 400, retry_after: int | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.retry_after = retry_after

    def payload(self) -> dict[str, object]:
        """Return the JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


MSG_UNKNOWN_ORDER = "Unknown order sent."
MSG_DUPLICATE_ORDER = "Duplicate order sent."
MSG_INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
MSG_WOULD_MATCH = "Order would immediately match and take."
MSG_MARKET_CLOSED = "Market is closed."
MSG_WOULD_TRIGGER = "Order would trigger immediately."
# -2010 answers for an order type the symbol's ``orderTypes`` does not list (documented ones).
MSG_TYPE_NOT_SUPPORTED = {
    "MARKET": "Market orders are not supported for this symbol.",
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}
MSG_TIMESTAMP_AHEAD = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_TIMESTAMP_OUTSIDE = "Timestamp for this request is outside of the recvWindow."
MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_BAD_KEY_FORMAT = "API-key format invalid."
MSG_REJECTED_KEY = "Invalid API-key, IP, or permissions for action."
MSG_UNKNOWN = "An unknown error occurred while processing the request."
MSG_TIMEOUT = (
    "Timeout waiting for response from backend server. Send status unknown; "
    "execution status unknown."
)
MSG_TOO_MUCH_WEIGHT = (
    "Too much request weight used; current limit is {limit} request weight per {interval}. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
MSG_BANNED = (
    "Way too much request weight used; IP banned until {until}. "
    "Please use WebSocket Streams for live updates to avoid bans."
)
MSG_TOO_MANY_ORDERS = "Too many new orders; current limit is {limit} orders per {interval}."


def mandatory(param: str) -> BinanceError:
    """-1102 for a missing or empty mandatory parameter."""
    return BinanceError(
        -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def not_required(param: str) -> BinanceError:
    """-1106 for a parameter the order type does not take."""
    return BinanceError(-1106, f"Parameter '{param}' sent when not required.")


def invalid_param(param: str) -> BinanceError:
    """-1130 for a parameter whose value is not valid."""
    return BinanceError(-1130, f"Data sent for parameter '{param}' is not valid.")


def invalid_symbol() -> BinanceError:
    """-1121 for a symbol the exchange does not list."""
    return BinanceError(-1121, "Invalid symbol.")


def filter_failure(filter_type: str) -> BinanceError:
    """-1013 with Binance's ``Filter failure: <NAME>`` text."""
    return BinanceError(-1013, f"Filter failure: {filter_type}")


def new_order_rejected(msg: str) -> BinanceError:
    """-2010 NEW_ORDER_REJECTED with one of the documented reasons."""
    return BinanceError(-2010, msg)


def no_such_order() -> BinanceError:
    """-2013 for a query of an order that does not exist."""
    return BinanceError(-2013, "Order does not exist.")


def cancel_rejected() -> BinanceError:
    """-2011 for a cancel of an unknown (or no longer open) order."""
    return BinanceError(-2011, MSG_UNKNOWN_ORDER)
