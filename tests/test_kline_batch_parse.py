"""The compiled batch parser of kline frames (``KlineParser.parse_many``) accepts only what the
Python parser accepts, with the same record, and hands everything else back to it."""

from __future__ import annotations

import copy
import logging

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.binance import kline_kernels, protocol
from aegis.binance.kline_layout import CLOSED, FALLBACK, UPDATE
from aegis.binance.protocol import KlineParser, MalformedFrame
from aegis.records import BAR_DTYPE

IDS = {"BTCUSDT": 7, "ETHUSDT": 8, "1000SATSUSDT": 9}


@pytest.fixture(autouse=True, params=["aot", "jit"])
def backend(request, monkeypatch):
    """Every test runs on the ahead-of-time module (when built) and on Numba's JIT."""
    try:
        parse = kline_kernels.load(request.param)
    except ImportError as exc:
        pytest.skip(f"{exc} (build it with `python -m aegis.binance.kline_kernels`)")
    monkeypatch.setattr(protocol, "_parse_klines", lambda: parse)
    return request.param


def _parse_many(parser: KlineParser, frames: list[bytes], recv_ns: int = 5):
    ends = np.cumsum([len(f) for f in frames])
    starts = ends - np.array([len(f) for f in frames])
    records, status, _ = parser.parse_many(b"".join(frames), starts, ends, recv_ns)
    return records, status


def _python_verdict(parser: KlineParser, frame: bytes):
    out = np.zeros(1, BAR_DTYPE)
    try:
        return parser.parse_into(frame, out, 0, 5), out[0].tobytes()
    except MalformedFrame as exc:
        return exc.reason, None


def _agrees(parser: KlineParser, frame: bytes) -> int:
    """Check one frame both ways; return the compiled parser's status."""
    records, status = _parse_many(parser, [frame])
    if status[0] != FALLBACK:
        _, record = _python_verdict(parser, frame)
        assert record == records[0].tobytes(), frame
        assert bool(records[0]["flags"]) == (status[0] == CLOSED)
    return int(status[0])


def test_real_frames_are_parsed_to_the_python_parsers_records(samples):
    parser = KlineParser(IDS)
    frames = [
        orjson.dumps(samples[k]["msg"]) for k in ("kline_closed_combined", "kline_open_combined")
    ]
    records, status = _parse_many(parser, frames, recv_ns=123)
    assert list(status) == [CLOSED, UPDATE]
    for frame, record in zip(frames, records, strict=True):
        out = np.zeros(1, BAR_DTYPE)
        parser.parse_into(frame, out, 0, 123)
        assert out[0].tobytes() == record.tobytes()


def test_keys_in_another_order_and_without_the_unread_ones_are_still_parsed(closed_msg):
    msg = copy.deepcopy(closed_msg)
    for key in ("f", "L", "B"):
        del msg["data"]["k"][key]
    del msg["data"]["E"]
    msg["data"]["k"] = dict(reversed(msg["data"]["k"].items()))
    reordered = {"data": dict(reversed(msg["data"].items())), "stream": msg["stream"]}
    assert _agrees(KlineParser(IDS), orjson.dumps(reordered)) == CLOSED


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m["data"]["k"].update(o="5799\\u0034.6"), "an escape in a string"),
        (lambda m: m["data"]["k"].update(o="1e3"), "an exponent"),
        (lambda m: m["data"]["k"].update(o="NaN"), "not a decimal"),
        (lambda m: m["data"]["k"].update(v="12345678901234567.1"), "a mantissa above 2**53"),
        (lambda m: m["data"]["k"].update(o=57994.6), "a number, not a string"),
        (lambda m: m["data"]["k"].update(n=-1), "a negative count"),
        (lambda m: m["data"]["k"].update(h="57000.0"), "high below open"),
        (lambda m: m["data"]["k"].update(i="5m"), "interval not the stream's"),
        (lambda m: m["data"]["k"].update(extra=1), "an unknown key"),
        (lambda m: m["data"].update(e="24hrTicker"), "another event"),
        (lambda m: m["data"].update(s="ETHUSDT"), "symbols that disagree"),
        (lambda m: m.update(stream="ethusdt@kline_1m"), "a stream of another symbol"),
        (lambda m: m["data"]["k"].pop("Q"), "a missing field"),
    ],
)
def test_a_frame_it_is_not_sure_of_goes_to_the_python_parser(closed_msg, change, why):
    msg = copy.deepcopy(closed_msg)
    change(msg)
    frame = orjson.dumps(msg).replace(b"\\\\u0034", b"\\u0034")
    assert _agrees(KlineParser(IDS), frame) == FALLBACK, why


@pytest.mark.parametrize(
    "frame",
    [
        b'{"result":null,"id":1}',
        b"not json",
        b"",
        b'{"stream":"btcusdt@kline_1m", "data":{}}',
        b'{"stream":"btcusdt@kline_1m","stream":"btcusdt@kline_1m","data":{}}',
    ],
)
def test_control_replies_and_broken_frames_go_to_the_python_parser(frame):
    assert _agrees(KlineParser(IDS), frame) == FALLBACK


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"o":', b'"o":"1.0","o":'),  # a repeated key (JSON says nothing of which one counts)
        (b'"B":"0"', b'"B":"\xc3("'),  # not UTF-8, in a field nobody reads: not JSON at all
        (b'"B":"0"', b'"B":"\t"'),  # a raw control character in a string: not JSON either
        (b'"B":"0"', b'"B":"\\""'),  # an escaped quote inside a string
        (b'"B":"0"', b'"B":"\\x"'),  # an escape JSON does not have
    ],
)
def test_bytes_json_does_not_allow_or_that_need_decoding_go_to_the_python_parser(
    closed_msg, old, new
):
    frame = orjson.dumps(closed_msg).replace(old, new, 1)
    assert frame != orjson.dumps(closed_msg)
    assert _agrees(KlineParser(IDS), frame) == FALLBACK


def test_a_symbol_with_digits_is_found(closed_msg):
    msg = copy.deepcopy(closed_msg)
    msg["stream"], msg["data"]["s"], msg["data"]["k"]["s"] = ("1000satsusdt@kline_1m",
                                                              "1000SATSUSDT", "1000SATSUSDT")  # fmt: skip
    records, status = _parse_many(KlineParser(IDS), [orjson.dumps(msg)])
    assert status[0] == CLOSED and records[0]["symbol_id"] == 9


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(r"[0-9]{1,17}(\.[0-9]{0,22})?", fullmatch=True))
def test_a_decimal_it_converts_is_exactly_pythons_float(closed_msg, text):
    msg = copy.deepcopy(closed_msg)
    msg["data"]["k"].update(o=text, h=text, l=text, c=text)
    frame = orjson.dumps(msg)
    records, status = _parse_many(KlineParser(IDS), [frame])
    if status[0] != FALLBACK:
        assert records[0]["open"] == float(text)
    if float(text) > 0 and len(text.replace(".", "")) <= 15 and not text.endswith("."):
        assert status[0] == CLOSED  # every Binance price and volume takes the compiled path
    _agrees(KlineParser(IDS), frame)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_corrupted_frame_is_refused_or_read_as_python_reads_it(closed_msg, data):
    frame = bytearray(orjson.dumps(closed_msg))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(frame) - 1))
        kind = data.draw(st.sampled_from(("replace", "insert", "delete")))
        byte = data.draw(st.sampled_from(b'{}[]",:.-0123456789eExtrufalsn \\\x00\xc3'))
        if kind == "replace":
            frame[at] = byte
        elif kind == "insert":
            frame.insert(at, byte)
        else:
            del frame[at]
    _agrees(KlineParser(IDS), bytes(frame))


def test_frames_of_one_read_are_parsed_each_with_its_own_status(closed_msg, samples):
    parser = KlineParser(IDS)
    good = orjson.dumps(closed_msg)
    update = orjson.dumps(samples["kline_open_combined"]["msg"])
    records, status = _parse_many(parser, [good, b'{"result":null,"id":3}', update, good[:-1]])
    assert list(status) == [CLOSED, FALLBACK, UPDATE, FALLBACK]
    assert records["symbol_id"][0] == 7 and (records["recv_ns"] == 5).all()


def test_a_stale_ahead_of_time_module_is_never_run_auto_takes_the_jit(caplog, backend):
    other = kline_kernels.KLINE_AOT.source_digest(numba="0.0.0")
    with caplog.at_level(logging.INFO, logger=kline_kernels.__name__):
        parse = kline_kernels.load("auto", digest=other)
    assert parse is kline_kernels.load("jit")
    if backend == "aot":  # built: it is there but stale, which is worth a warning
        [warning] = [r for r in caplog.records if r.name == kline_kernels.__name__]
        assert warning.levelno == logging.WARNING and "stale" in warning.getMessage()
        with pytest.raises(ImportError, match="stale"):
            kline_kernels.load("aot", digest=other)
    with pytest.raises(ValueError, match="'fast'"):
        kline_kernels.load("fast")


def test_spans_outside_the_read_are_handed_back_not_read():
    parser = KlineParser(IDS)
    buf = b'{"result":null,"id":1}' * 2
    records, status, _ = parser.parse_many(buf, np.array([0, 30, 5]), np.array([22, 500, 2]))
    assert list(status) == [FALLBACK, FALLBACK, FALLBACK] and not records["symbol_id"].any()
    _, status, _ = parser.parse_many(buf, np.array([30]), np.array([2]))
    assert list(status) == [FALLBACK]
