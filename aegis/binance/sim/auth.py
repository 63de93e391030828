"""API-key, HMAC signature and timestamp/recvWindow checks of signed requests."""

from __future__ import annotations

from collections.abc import Mapping

from aegis.binance.signing import MAX_RECV_WINDOW_MS, hmac_signature, verify_signature
from aegis.binance.sim import errors
from aegis.binance.sim.accounts import Account
from aegis.binance.sim.errors import BinanceError
from aegis.binance.sim.order_params import int_param

DEFAULT_RECV_WINDOW_MS = 5000


def account_for_key(api_key: str | None, accounts: Mapping[str, Account]) -> Account:
    """The account of an API key: -2014 when missing/malformed, -2015 when unknown."""
    if not api_key or not api_key.isascii() or not api_key.isalnum():
        raise BinanceError(-2014, errors.MSG_BAD_KEY_FORMAT, status=401)
    account = accounts.get(api_key)
    if account is None:
        raise BinanceError(-2015, errors.MSG_REJECTED_KEY, status=401)
    return account


def check_timestamp(params: Mapping[str, str], server_time_ms: int) -> None:
    """Binance's rule: reject when ``timestamp >= server + 1000`` or older than recvWindow."""
    timestamp = int_param(dict(params), "timestamp")
    if timestamp is None:
        raise errors.mandatory("timestamp")
    recv_window = DEFAULT_RECV_WINDOW_MS
    raw = params.get("recvWindow")
    if raw:
        try:
            recv_window = float(raw)
        except ValueError:
            raise errors.invalid_param("recvWindow") from None
        if not 0 < recv_window <= MAX_RECV_WINDOW_MS:
            raise errors.invalid_param("recvWindow")
    if timestamp >= server_time_ms + 1000:
        raise BinanceError(-1021, errors.MSG_TIMESTAMP_AHEAD)
    if server_time_ms - timestamp > recv_window:
        raise BinanceError(-1021, errors.MSG_TIMESTAMP_OUTSIDE)


def verify_rest(
    api_key: str | None,
    params: Mapping[str, str],
    raw_query: str,
    raw_body: str,
    accounts: Mapping[str, Account],
    server_time_ms: int,
) -> Account:
    """Authenticate a signed REST request; return its account or raise ``BinanceError``."""
    account = account_for_key(api_key, accounts)
    if not params.get("signature"):
        raise errors.mandatory("signature")
    check_timestamp(params, server_time_ms)
    if not verify_signature(account.api_secret, raw_query, raw_body):
        raise BinanceError(-1022, errors.MSG_BAD_SIGNATURE)
    return account


def verify_ws_params(
    params: Mapping[str, object], accounts: Mapping[str, Account], server_time_ms: int
) -> Account:
    """Authenticate a signed WebSocket API request (params sorted by name, HMAC over them)."""
    api_key = params.get("apiKey")
    account = account_for_key(api_key if isinstance(api_key, str) else None, accounts)
    signature = params.get("signature")
    if not isinstance(signature, str) or not signature:
        raise errors.mandatory("signature")
    as_text = {k: _ws_value(v) for k, v in params.items()}
    check_timestamp(as_text, server_time_ms)
    payload = "&".join(f"{k}={as_text[k]}" for k in sorted(as_text) if k != "signature")
    if hmac_signature(account.api_secret, payload) != signature.lower():
        raise BinanceError(-1022, errors.MSG_BAD_SIGNATURE)
    return account


def _ws_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
