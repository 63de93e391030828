"""Specification of bar validation: bad input is rejected with a reason, the rest survives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aegis.records import BAR_DTYPE
from aegis.store.bars import BarBatch, RejectReason, validate_bars, validate_symbol_bars

T0 = 1_679_000_040_000  # 2023-03-16T20:54Z, a whole minute
NOW = T0 + 86_400_000


def _bars(n: int, *, start: int = T0, step: int = 60_000) -> np.ndarray:
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["open_time_ms"] = start + step * np.arange(n)
    bars["open"], bars["high"], bars["low"], bars["close"] = 100.0, 101.0, 99.0, 100.5
    bars["volume"] = 5.0
    bars["quote_volume"] = np.nan
    bars["taker_buy_volume"] = np.nan
    bars["taker_buy_quote_volume"] = np.nan
    bars["trades"] = -1
    return bars


def test_validate_bars_clean_batch_becomes_table_rows_with_unknowns_as_null() -> None:
    result = validate_bars(BarBatch("BTCUSDT", "1m", _bars(3)), now_ms=NOW)
    assert result.rejections == ()
    assert result.rows[0] == (
        "BTCUSDT",
        "1m",
        T0,
        100.0,
        101.0,
        99.0,
        100.5,
        5.0,
        None,
        None,
        None,
        None,
        0,
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("open", math.nan, RejectReason.NON_FINITE_PRICE),
        ("close", math.inf, RejectReason.NON_FINITE_PRICE),
        ("low", -1.0, RejectReason.NON_POSITIVE_PRICE),
        ("open", 0.0, RejectReason.NON_POSITIVE_PRICE),
        ("volume", -3.0, RejectReason.BAD_VOLUME),
        ("quote_volume", math.inf, RejectReason.BAD_VOLUME),
        ("high", 98.0, RejectReason.HIGH_BELOW_LOW),
        ("high", 100.2, RejectReason.HIGH_BELOW_BODY),
        ("low", 100.4, RejectReason.LOW_ABOVE_BODY),
        ("open_time_ms", T0 + 1, RejectReason.MISALIGNED_OPEN_TIME),
        ("open_time_ms", NOW + 10 * 86_400_000, RejectReason.OPEN_TIME_OUT_OF_RANGE),
        ("open_time_ms", 60_000, RejectReason.OPEN_TIME_OUT_OF_RANGE),
    ],
)
def test_validate_bars_one_bad_bar_is_rejected_with_reason_and_rest_kept(
    field: str, value: float, reason: RejectReason
) -> None:
    bars = _bars(5)
    bars[2][field] = value
    result = validate_bars(BarBatch("ETHUSDT", "1m", bars), now_ms=NOW)
    assert [(r.index, r.reason) for r in result.rejections] == [(2, reason)]
    assert (
        "ETHUSDT 1m" in result.rejections[0].message
        and reason.value in result.rejections[0].message
    )
    assert len(result.rows) == 4


def test_validate_bars_duplicate_in_batch_keeps_first_copy_only() -> None:
    bars = _bars(4)
    bars[3] = bars[1]
    bars[3]["close"] = 100.7
    result = validate_bars(BarBatch("BTCUSDT", "1m", bars), now_ms=NOW)
    assert [(r.index, r.reason) for r in result.rejections] == [(3, RejectReason.DUPLICATE_BAR)]
    assert [row[6] for row in result.rows] == [100.5, 100.5, 100.5]


def test_validate_bars_unknown_timeframe_rejects_whole_batch_with_clear_error() -> None:
    result = validate_bars(BarBatch("BTCUSDT", "7m", _bars(3)), now_ms=NOW)
    assert result.rows == []
    assert {r.reason for r in result.rejections} == {RejectReason.UNKNOWN_TIMEFRAME}
    assert "unknown timeframe '7m'" in result.rejections[0].message


def test_validate_bars_malformed_symbol_rejects_whole_batch() -> None:
    result = validate_bars(BarBatch("btc/usdt", "1m", _bars(2)), now_ms=NOW)
    assert result.rows == [] and result.rejections[0].reason is RejectReason.BAD_SYMBOL


def test_validate_bars_week_and_month_alignment_follow_binance() -> None:
    monday = 1_678_665_600_000  # 2023-03-13T00:00Z, a Monday
    assert (
        validate_bars(
            BarBatch("BTCUSDT", "1w", _bars(2, start=monday, step=7 * 86_400_000)),
            now_ms=monday + 30 * 86_400_000,
        ).rejections
        == ()
    )
    tuesday = monday + 86_400_000
    assert (
        validate_bars(BarBatch("BTCUSDT", "1w", _bars(1, start=tuesday)), now_ms=NOW)
        .rejections[0]
        .reason
        is RejectReason.MISALIGNED_OPEN_TIME
    )
    march_1 = 1_677_628_800_000  # 2023-03-01T00:00Z
    assert (
        validate_bars(BarBatch("BTCUSDT", "1M", _bars(1, start=march_1)), now_ms=NOW).rejections
        == ()
    )


def test_bar_batch_from_rows_string_where_number_belongs_is_rejected_by_position() -> None:
    rows = [
        (T0, 100, 101, 99, 100.5, 5),
        (T0 + 60_000, "100", 101, 99, 100.5, 5),
        (T0 + 120_000, 100, 101, 99, 100.5, 5, 500.0, 7, 2.0, 200.0),
        (T0 + 180_000, 100, 101, 99, None, 5),
        (T0 + 240_000, 100, 101),
        "not a row",
        (T0 + 300_000, 100, 98, 99, 100.5, 5),
    ]
    batch, not_numbers = BarBatch.from_rows("BTCUSDT", "1m", rows)
    assert [(r.index, r.reason) for r in not_numbers] == [
        (i, RejectReason.NOT_A_NUMBER) for i in (1, 3, 4, 5)
    ]
    assert "open must be a number, got str '100'" in not_numbers[0].message
    result = validate_bars(batch, now_ms=NOW)
    assert [(r.index, r.reason) for r in result.rejections] == [(6, RejectReason.HIGH_BELOW_LOW)]
    assert result.rows[1][8:12] == (500.0, 7, 2.0, 200.0)


def test_bar_batch_wrong_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="BAR_DTYPE"):
        BarBatch("BTCUSDT", "1m", np.zeros(3))


def test_validate_symbol_bars_matches_validating_each_symbol_alone() -> None:
    names = {1: "BTCUSDT", 2: "ETHUSDT", 3: "SOLUSDT"}
    bars = np.concatenate([_bars(4), _bars(4), _bars(4)])
    bars["symbol_id"] = np.repeat([1, 2, 3], 4)
    bars["close"] += np.arange(12)  # every row distinct
    bars["high"] = np.maximum(bars["high"], bars["close"])
    bars[1]["low"] = 102.0  # BTC: low above the body
    bars[6]["open_time_ms"] = bars[5]["open_time_ms"]  # ETH: a repeat of its own bar
    bars[9]["open"] = math.nan  # SOL: non-finite price
    mixed = np.concatenate([bars[::2], bars[1::2]])  # symbols interleaved, times out of order
    result = validate_symbol_bars(names, "1m", mixed, now_ms=NOW)
    alone = {sid: validate_bars(BarBatch(name, "1m", mixed[mixed["symbol_id"] == sid]),
                                now_ms=NOW) for sid, name in names.items()}  # fmt: skip
    assert sorted(result.rows) == sorted(r for v in alone.values() for r in v.rows)
    assert sorted(r.reason for r in result.rejections) == sorted(
        r.reason for v in alone.values() for r in v.rejections
    )
    assert len(result.rows) == 9 and {r.message.split()[0] for r in result.rejections} == {
        "BTCUSDT", "ETHUSDT", "SOLUSDT"}  # fmt: skip
    # Rejections name the row of the caller's array.
    assert all(mixed[r.index]["symbol_id"] in names for r in result.rejections)


def test_validate_symbol_bars_rejects_rows_of_unknown_or_malformed_symbols() -> None:
    bars = _bars(3)
    bars["symbol_id"] = [1, 2, 3]
    result = validate_symbol_bars({1: "BTCUSDT", 3: "btc/usdt"}, "1m", bars, now_ms=NOW)
    assert [r[0] for r in result.rows] == ["BTCUSDT"]
    assert [(r.index, r.reason) for r in result.rejections] == [
        (1, RejectReason.BAD_SYMBOL), (2, RejectReason.BAD_SYMBOL)]  # fmt: skip
    with pytest.raises(ValueError, match="unknown timeframe"):
        validate_symbol_bars({1: "BTCUSDT"}, "7m", bars, now_ms=NOW)
    with pytest.raises(TypeError, match="BAR_DTYPE"):
        validate_symbol_bars({1: "BTCUSDT"}, "1m", np.zeros(2), now_ms=NOW)
