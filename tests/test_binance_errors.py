"""Specification of the Binance error taxonomy (aegis.binance.errors)."""

from __future__ import annotations

import gzip
import json

import pytest

from aegis.binance.errors import (
    AccountRestricted,
    Action,
    AuthError,
    BadRequest,
    BinanceError,
    DuplicateOrder,
    FilterFailure,
    InsufficientBalance,
    InvalidTimestamp,
    IpBanned,
    NoSuchOrder,
    OrderRejected,
    RateLimited,
    RetryableError,
    UnknownOrderState,
    WafBlocked,
    classify,
)


@pytest.fixture(scope="module")
def catalogue(data_dir):
    with gzip.open(data_dir / "samples" / "binance_spot_error_codes.json.gz") as fh:
        return json.load(fh)


def _answers(catalogue):
    for entry in catalogue["errors"]:
        for msg in entry["messages"]:
            yield entry["code"], msg
    for row in catalogue["message_tables"]:
        code = -1013 if row["section"] == "Filter failures" else -2010
        yield code, row["message"]


def test_classify_every_catalogued_code_on_an_order_never_says_plain_retry(catalogue):
    # Re-sending an order whose fate is unknown is how duplicates happen: the only actions an
    # order request may get are query, reject, back off, resync, silence or halt.
    for code, msg in _answers(catalogue):
        error = classify(400, code, msg, order_request=True)
        assert isinstance(error, BinanceError)
        assert error.action is not Action.RETRY, (code, msg, type(error))


def test_classify_every_catalogued_filter_failure_is_filter_failure_with_name(catalogue):
    rows = [r for r in catalogue["message_tables"] if r["section"] == "Filter failures"]
    assert len(rows) >= 10
    for row in rows:
        error = classify(400, -1013, row["message"], order_request=True)
        assert isinstance(error, FilterFailure) and error.action is Action.REJECT
        assert row["message"] == f"Filter failure: {error.filter_type}"


def test_classify_catalogued_network_codes_on_order_are_unknown_state(catalogue):
    names = {e["code"]: e["name"] for e in catalogue["errors"]}
    for code in (-1006, -1007):
        assert names[code] in ("UNEXPECTED_RESP", "TIMEOUT")
        assert isinstance(classify(400, code, "x", order_request=True), UnknownOrderState)
        assert isinstance(classify(400, code, "x", order_request=False), RetryableError)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 0])
def test_classify_server_error_on_order_is_unknown_state_and_on_read_retryable(status):
    assert classify(status, None, "Internal", order_request=True).action is Action.QUERY_ORDER
    assert classify(status, None, "Internal", order_request=False).action is Action.RETRY


def test_classify_429_carries_retry_after():
    error = classify(429, -1003, "Too much request weight used", retry_after=7)
    assert (
        isinstance(error, RateLimited)
        and error.retry_after == 7
        and error.action is Action.BACK_OFF
    )


def test_classify_418_with_retry_after_bans_until_now_plus_delay():
    error = classify(418, -1003, "Way too much request weight used", retry_after=120, now=1000.0)
    assert isinstance(error, IpBanned) and error.until == 1120.0 and error.action is Action.SILENCE


def test_classify_418_message_timestamp_wins():
    msg = "Way too much request weight used; IP banned until 1700000000000. Please use WebSocket"
    assert classify(418, -1003, msg, retry_after=5, now=0).until == 1_700_000_000.0


def test_classify_403_is_waf_back_off():
    assert isinstance(classify(403, None, "Forbidden"), WafBlocked)


def test_classify_minus_1021_resyncs_clock():
    error = classify(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    assert isinstance(error, InvalidTimestamp) and error.action is Action.RESYNC_CLOCK


@pytest.mark.parametrize("code", [-1002, -1022, -2014, -2015])
def test_classify_auth_codes_halt(code):
    error = classify(401 if code == -1002 else 400, code, "nope", order_request=True)
    assert isinstance(error, AuthError) and error.action is Action.HALT


def test_classify_order_messages_pick_specific_classes():
    assert isinstance(
        classify(400, -2010, "Duplicate order sent.", order_request=True), DuplicateOrder
    )
    assert classify(400, -2010, "Duplicate order sent.").action is Action.QUERY_ORDER
    balance = classify(400, -2010, "Account has insufficient balance for requested action.")
    assert isinstance(balance, InsufficientBalance) and balance.action is Action.REJECT
    assert isinstance(classify(400, -2013, "Order does not exist."), NoSuchOrder)
    assert isinstance(classify(400, -2011, "Unknown order sent."), NoSuchOrder)
    assert isinstance(classify(400, -2010, "Market is closed.", order_request=True), OrderRejected)
    restricted = classify(400, -2010, "This account may not place or cancel orders.")
    assert isinstance(restricted, AccountRestricted) and restricted.action is Action.HALT


def test_classify_parameter_error_on_read_is_bad_request_not_retried():
    error = classify(400, -1121, "Invalid symbol.")
    assert type(error) is BadRequest and error.action is Action.REJECT


def test_classify_http_error_without_binance_body_on_order_is_unknown_state():
    assert isinstance(classify(404, None, "Not Found", order_request=True), UnknownOrderState)
    assert type(classify(404, None, "Not Found")) is BadRequest


def test_binance_error_message_names_status_and_code():
    assert str(classify(400, -1121, "Invalid symbol.")) == "Invalid symbol. (HTTP 400, code -1121)"
