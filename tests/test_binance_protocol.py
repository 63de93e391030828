"""Specification of the kline wire format (aegis.binance.protocol), on real recorded messages."""

from __future__ import annotations

import contextlib
import copy
import csv
import gzip
import json
import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.binance.protocol import (
    INTERVAL_MS,
    KlineParser,
    MalformedFrame,
    build_kline_frame,
    build_rest_kline_row,
)
from aegis.records import BAR_BACKFILLED, BAR_CLOSED, BAR_DTYPE

IDS = {"BTCUSDT": 7, "ETHUSDT": 8}


@pytest.fixture
def parser():
    return KlineParser(IDS, intervals=("1m", "5m"))


def test_parse_real_closed_frame_fills_every_field(parser, closed_msg):
    rec = parser.parse(orjson.dumps(closed_msg), recv_ns=123)[0]
    assert rec["open_time_ms"] == 1617566580000 and rec["recv_ns"] == 123
    assert rec["symbol_id"] == 7 and rec["flags"] == BAR_CLOSED
    assert (rec["open"], rec["high"], rec["low"], rec["close"]) == (
        57994.6,
        58018.03,
        57974.41,
        57999.99,
    )
    assert rec["volume"] == 23.067122 and rec["quote_volume"] == 1337913.58654308
    assert rec["taker_buy_volume"] == 11.413347 and rec["taker_buy_quote_volume"] == 661954.86510045
    assert rec["trades"] == 1020


def test_parse_real_in_progress_frame_is_not_flagged_closed(parser, samples):
    rec = parser.parse(orjson.dumps(samples["kline_open_combined"]["msg"]))[0]
    assert rec["symbol_id"] == 8 and rec["flags"] == 0 and rec["close"] == 2064.73


def test_parse_into_writes_the_given_slot_and_returns_interval(parser, closed_msg):
    out = np.zeros(4, dtype=BAR_DTYPE)
    assert parser.parse_into(orjson.dumps(closed_msg), out, 2, 5) == INTERVAL_MS["1m"]
    assert out[2]["symbol_id"] == 7 and out[1]["symbol_id"] == 0


def test_parse_subscription_reply_returns_none(parser):
    assert parser.parse(b'{"result":null,"id":1}') is None


def _mutated(msg, path, value):
    msg = copy.deepcopy(msg)
    node = msg
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return orjson.dumps(msg)


K = ("data", "k")
MALFORMED = [
    ((*K, "h"), "57000.00000000", "high below open or close"),
    ((*K, "l"), "58000.00000000", "low above open or close"),
    ((*K, "o"), "NaN", "open is not finite and positive"),
    ((*K, "c"), "inf", "close is not finite and positive"),
    ((*K, "c"), "0", "close is not finite and positive"),
    ((*K, "o"), "-1", "open is not finite and positive"),
    ((*K, "o"), "abc", "open is not a number"),
    ((*K, "o"), 57994.6, "open is not a decimal string"),
    ((*K, "v"), "-0.1", "volume is not finite and non-negative"),
    ((*K, "q"), "nan", "quote volume is not finite and non-negative"),
    ((*K, "V"), "99", "taker volume above volume"),
    ((*K, "Q"), "9999999", "taker quote volume above quote volume"),
    ((*K, "n"), -1, "trade count is negative"),
    ((*K, "n"), "1020", "trade count is not an integer"),
    ((*K, "t"), 1617566580001, "open time not aligned to interval"),
    ((*K, "t"), True, "open time is not an integer"),
    ((*K, "T"), 1617566640000, "close time inconsistent with interval"),
    ((*K, "x"), "true", "closed flag is not a boolean"),
    ((*K, "i"), "5m", "interval does not match stream"),
    ((*K, "s"), "ETHUSDT", "symbol does not match stream"),
    (("data", "s"), "ETHUSDT", "symbol does not match stream"),
    (("stream",), "xrpusdt@kline_1m", "unknown stream"),
    (("stream",), "btcusdt@kline_1M", "unknown stream"),
    (("stream",), 5, "unknown stream"),
    (("data", "e"), "24hrTicker", "not a kline event"),
    ((*K, "c"), KeyError, "missing field c"),
    (("data", "k"), [], "mistyped structure"),
    (("data",), "x", "mistyped structure"),
]


@pytest.mark.parametrize(
    ("path", "value", "reason"), MALFORMED, ids=[m[2] + str(m[0]) for m in MALFORMED]
)
def test_parse_malformed_frame_raises_with_reason_and_sample(
    parser, closed_msg, path, value, reason
):
    frame = _mutated(closed_msg, path, value)
    with pytest.raises(MalformedFrame) as info:
        parser.parse(frame)
    assert info.value.reason == reason
    assert info.value.sample == frame[:200]


@pytest.mark.parametrize("frame", [b"", b"{", b"[1,2]", b'"kline"', b"null", b'{"stream":"a"}'])
def test_parse_non_frames_raise_malformed(parser, frame):
    with pytest.raises(MalformedFrame):
        parser.parse(frame)


def test_parser_unknown_interval_is_refused_at_construction():
    with pytest.raises(ValueError, match="1M"):
        KlineParser(IDS, intervals=("1M",))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_arbitrary_bytes_never_raises_anything_but_malformed(frame):
    parser = KlineParser(IDS)
    with contextlib.suppress(MalformedFrame):
        parser.parse(frame)


# orjson (which builds the test frame) writes 64-bit integers only; wider ones are covered by
# test_parse_integer_wider_than_64_bits_is_malformed with a hand-written frame.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


@settings(max_examples=400, deadline=None)
@given(
    field=st.sampled_from(sorted("tTsiflohcvnxqVQ")),
    value=JSON_VALUES | st.from_regex(r"-?\d{1,6}\.\d{1,8}", fullmatch=True),
)
def test_parse_any_field_value_either_valid_bar_or_malformed(field, value):
    msg = {
        "stream": "btcusdt@kline_1m",
        "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {
            "t": 60000, "T": 119999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": "10.0",
            "c": "10.5", "h": "11.0", "l": "9.5", "v": "2.0", "n": 3, "x": True, "q": "20.0",
            "V": "1.0", "Q": "10.0", "B": "0"}},
    }  # fmt: skip
    msg["data"]["k"][field] = value
    try:
        rec = KlineParser(IDS).parse(orjson.dumps(msg))[0]
    except MalformedFrame:
        return
    prices = [rec["open"], rec["high"], rec["low"], rec["close"]]
    assert all(math.isfinite(p) and p > 0 for p in prices)
    assert (
        rec["low"]
        <= min(rec["open"], rec["close"])
        <= max(rec["open"], rec["close"])
        <= rec["high"]
    )
    assert 0 <= rec["taker_buy_volume"] <= rec["volume"] < math.inf
    assert rec["open_time_ms"] % 60000 == 0


def test_parse_rest_klines_real_sample_flags_backfilled_and_closed(parser, data_dir):
    body = (data_dir / "samples" / "http_spot_market_klines.json").read_bytes()
    rows = json.loads(body)
    bars = parser.parse_rest_klines(body, "btcusdt", "1m")
    assert len(bars) == len(rows) and (bars["flags"] == BAR_CLOSED | BAR_BACKFILLED).all()
    assert bars[0]["open_time_ms"] == rows[0][0] and bars[0]["close"] == float(rows[0][4])
    assert bars[0]["trades"] == rows[0][8] and bars[0]["taker_buy_volume"] == float(rows[0][9])
    assert (np.diff(bars["open_time_ms"]) == 60000).all()


def test_parse_rest_klines_bar_still_open_at_now_is_not_closed(parser, data_dir):
    body = (data_dir / "samples" / "http_spot_market_klines.json").read_bytes()
    last_close = json.loads(body)[-1][6]
    bars = parser.parse_rest_klines(body, "BTCUSDT", "1m", now_ms=last_close)
    assert bars[-1]["flags"] == BAR_BACKFILLED
    assert (bars[:-1]["flags"] & BAR_CLOSED).all()


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([[60000, "1", "1", "1", "1", "1", 119999, "1", 1, "1", "1"]], "12-field"),
        ([[60000, "1", "1", "1", "1", "1", 119999, "1", 1, "1", "1", "0"]] * 2, "not increasing"),
        ([[60000, "1", "0.5", "1", "1", "1", 119999, "1", 1, "1", "1", "0"]], "high below"),
        ({"code": -1121, "msg": "Invalid symbol."}, "not a list"),
    ],
)
def test_parse_rest_klines_bad_rows_raise(parser, rows, reason):
    with pytest.raises(MalformedFrame, match=reason):
        parser.parse_rest_klines(orjson.dumps(rows), "BTCUSDT", "1m")


def test_parse_rest_klines_unknown_symbol_or_interval_raise(parser):
    with pytest.raises(MalformedFrame, match="unknown symbol"):
        parser.parse_rest_klines(b"[]", "XRPUSDT", "1m")
    with pytest.raises(MalformedFrame, match="unknown interval"):
        parser.parse_rest_klines(b"[]", "BTCUSDT", "1h")


def _recorded_bars(data_dir, n):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]
    bars = np.zeros(len(rows), dtype=BAR_DTYPE)
    for i, r in enumerate(rows):
        bars[i] = (int(r["open_time"]), 0, 7, BAR_CLOSED, float(r["open"]), float(r["high"]),
                   float(r["low"]), float(r["close"]), float(r["volume"]), 0.0, 0.0, 0.0, 0)  # fmt: skip
    return bars


def test_build_kline_frame_round_trips_recorded_bars(parser, data_dir):
    bars = _recorded_bars(data_dir, 2000)
    out = np.zeros_like(bars)
    for i, bar in enumerate(bars):
        frame = build_kline_frame(bar, "BTCUSDT", "1m", int(bar["open_time_ms"]) + 60000)
        parser.parse_into(frame, out, i)
    assert (out == bars).all()


def test_build_rest_kline_rows_round_trip_recorded_bars(parser, data_dir):
    bars = _recorded_bars(data_dir, 1000)
    body = orjson.dumps([build_rest_kline_row(b, "1m") for b in bars])
    back = parser.parse_rest_klines(body, "BTCUSDT", "1m")
    back["flags"] = BAR_CLOSED
    assert (back == bars).all()


def test_parse_integer_wider_than_64_bits_is_malformed():
    frame = (
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":60000,'
        b'"T":119999,"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"10.0","c":"10.5","h":"11.0",'
        b'"l":"9.5","v":"2.0","n":99999999999999999999999,"x":true,"q":"20.0","V":"1.0",'
        b'"Q":"10.0","B":"0"}}}'
    )
    with pytest.raises(MalformedFrame):
        KlineParser(IDS).parse(frame)


def _verdict(fn, k):
    try:
        return fn(k, "1m", True, 7)
    except MalformedFrame as exc:
        return exc.reason
    except (KeyError, TypeError) as exc:
        return type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(
    field=st.sampled_from(sorted("tTohlcvnqVQ")),
    value=JSON_VALUES | st.from_regex(r"-?\d{1,6}(\.\d{1,8})?", fullmatch=True) | st.just(KeyError),
)
def test_one_pass_bar_check_gives_the_field_by_field_verdict(field, value):
    k = {"t": 60000, "T": 119999, "s": "BTCUSDT", "o": "10.0", "c": "10.5", "h": "11.0",
         "l": "9.5", "v": "2.0", "n": 3, "q": "20.0", "V": "1.0", "Q": "10.0"}  # fmt: skip
    if value is KeyError:
        del k[field]
    else:
        k[field] = value
    parser = KlineParser(IDS)
    assert _verdict(parser._record, k) == _verdict(parser._checked_record, k)
