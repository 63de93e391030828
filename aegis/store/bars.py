"""Bars bound for ``market_data``: the domain type, and validation before the database.

A ``BarBatch`` is one symbol and timeframe plus a numpy array of ``aegis.records.BAR_DTYPE``
(the ring's layout). ``BarBatch.from_rows`` builds one from plain tuples
``(open_time_ms, open, high, low, close, volume[, quote_volume, trade_count, taker_buy_volume,
taker_buy_quote_volume])``, rejecting rows that hold a non-number.

``validate_bars`` rejects, with a reason and a message per row: non-finite or non-positive
prices, negative or non-finite volumes, high below low, high below the body (max of open and
close), low above the body, an open time not aligned to the timeframe or outside
[2009-01-01, now + 2 days], and a bar repeated within the batch (the first copy is kept).
An unknown timeframe or a malformed symbol rejects the whole batch.
Unknown optional values — NaN quote/taker volumes, a negative trade count — are stored as NULL.
"""

from __future__ import annotations

import enum
import math
import numbers
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from aegis.records import BAR_DTYPE

MINUTE_MS = 60_000
TIMEFRAME_MS: dict[str, int] = {
    "1s": 1_000, "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS, "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": 1440 * MINUTE_MS,
    "3d": 3 * 1440 * MINUTE_MS, "1w": 7 * 1440 * MINUTE_MS, "1M": 0,  # calendar month
}  # fmt: skip
EARLIEST_OPEN_MS = 1_230_768_000_000  # 2009-01-01T00:00Z: nothing traded before
FUTURE_SLACK_MS = 2 * 86_400_000
_WEEK_OFFSET_MS = 4 * 86_400_000  # Binance weeks open on Monday; the epoch was a Thursday
_OPTIONAL_DEFAULTS = (math.nan, -1, math.nan, math.nan)  # unknown: stored as NULL
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
_ROW_FIELDS = (
    "open_time_ms", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip


class RejectReason(enum.StrEnum):
    UNKNOWN_TIMEFRAME = "unknown_timeframe"
    BAD_SYMBOL = "bad_symbol"
    NOT_A_NUMBER = "not_a_number"
    NON_FINITE_PRICE = "non_finite_price"
    NON_POSITIVE_PRICE = "non_positive_price"
    BAD_VOLUME = "bad_volume"
    HIGH_BELOW_LOW = "high_below_low"
    HIGH_BELOW_BODY = "high_below_body"
    LOW_ABOVE_BODY = "low_above_body"
    MISALIGNED_OPEN_TIME = "misaligned_open_time"
    OPEN_TIME_OUT_OF_RANGE = "open_time_out_of_range"
    DUPLICATE_BAR = "duplicate_bar"


@dataclass(frozen=True)
class BarRejection:
    """One rejected input row: where it was, why, and a message a human can act on."""

    index: int
    reason: RejectReason
    message: str


@dataclass(frozen=True)
class BarBatch:
    """Bars of one symbol and timeframe, in ``BAR_DTYPE`` (``symbol_id``/``recv_ns`` unused).

    ``source_index`` maps each bar back to its position in the caller's input (set by
    ``from_rows`` when rows were dropped), so rejections name the caller's row.
    """

    symbol: str
    timeframe: str
    bars: np.ndarray
    source_index: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bars, np.ndarray) or self.bars.dtype != BAR_DTYPE:
            raise TypeError("BarBatch.bars must be a numpy array of aegis.records.BAR_DTYPE")

    @classmethod
    def from_rows(
        cls, symbol: str, timeframe: str, rows: Iterable[Sequence[object]]
    ) -> tuple[BarBatch, tuple[BarRejection, ...]]:
        """Build a batch from tuples; rows holding a non-number are returned as rejections."""
        good: list[tuple] = []
        kept: list[int] = []
        rejected: list[BarRejection] = []
        for i, row in enumerate(rows):
            problem = _row_problem(row)
            if problem:
                msg = f"{symbol} {timeframe} row {i}: {problem}"
                rejected.append(BarRejection(i, RejectReason.NOT_A_NUMBER, msg))
                continue
            values = [*row, *_OPTIONAL_DEFAULTS[len(row) - 6 :]]
            good.append(
                (int(values[0]), *map(float, values[1:7]), int(values[7]), *map(float, values[8:]))
            )
            kept.append(i)
        bars = np.zeros(len(good), dtype=BAR_DTYPE)
        for j, name in enumerate(_ROW_FIELDS):
            bars[name] = [g[j] for g in good]
        return cls(symbol, timeframe, bars, np.asarray(kept, dtype=np.int64)), tuple(rejected)

    def positions(self) -> np.ndarray:
        """Position of each bar in the caller's original input."""
        return np.arange(len(self.bars)) if self.source_index is None else self.source_index


def _row_problem(row: Sequence[object]) -> str | None:
    if not isinstance(row, Sequence) or isinstance(row, str | bytes):
        return f"expected a tuple of numbers, got {type(row).__name__}"
    if not 6 <= len(row) <= 10:
        return f"expected 6 to 10 fields ({', '.join(_ROW_FIELDS)}), got {len(row)}"
    for name, value in zip(_ROW_FIELDS, row, strict=False):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"{name} must be a number, got {type(value).__name__} {value!r}"
    return None


@dataclass(frozen=True)
class ValidatedBars:
    """Rows ready for ``market_data`` (table column order) and what was rejected."""

    rows: list[tuple]
    rejections: tuple[BarRejection, ...]


def validate_bars(batch: BarBatch, *, now_ms: int | None = None) -> ValidatedBars:
    """Check a batch; return the good rows as ``market_data`` tuples and the rejections."""
    n = len(batch.bars)
    src = batch.positions()
    label = f"{batch.symbol} {batch.timeframe}"
    if batch.timeframe not in TIMEFRAME_MS:
        msg = f"{label}: unknown timeframe {batch.timeframe!r} (known: {', '.join(TIMEFRAME_MS)})"
        return ValidatedBars(
            [],
            tuple(BarRejection(int(src[i]), RejectReason.UNKNOWN_TIMEFRAME, msg) for i in range(n)),
        )
    if not isinstance(batch.symbol, str) or not _SYMBOL_RE.match(batch.symbol):
        msg = f"{label}: symbol must be 2-30 upper-case letters/digits, got {batch.symbol!r}"
        return ValidatedBars(
            [], tuple(BarRejection(int(src[i]), RejectReason.BAD_SYMBOL, msg) for i in range(n))
        )
    b = batch.bars
    reason = _reasons(b, batch.timeframe, np.zeros(n, np.int64), now_ms)
    rejections = tuple(
        BarRejection(int(src[i]), _ORDER[reason[i]], _message(label, b[i], _ORDER[reason[i]]))
        for i in np.flatnonzero(reason >= 0)
    )
    return ValidatedBars(_to_rows(batch.symbol, batch.timeframe, b[reason < 0]), rejections)


def validate_symbol_bars(
    symbol_of: Mapping[int, str], timeframe: str, bars: np.ndarray, *, now_ms: int | None = None
) -> ValidatedBars:
    """``validate_bars`` for bars of many symbols at once, each named by ``symbol_of`` of its
    ``symbol_id`` (a bar repeated means the same symbol and open time). One pass of array
    checks instead of one per symbol: the feed's flush of a whole universe's minute."""
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE:
        raise TypeError("bars must be a numpy array of aegis.records.BAR_DTYPE")
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r} (known: {', '.join(TIMEFRAME_MS)})")
    ids = bars["symbol_id"].astype(np.int64)
    unique_ids, at = np.unique(ids, return_inverse=True)
    names = [symbol_of.get(int(i)) for i in unique_ids]
    named = np.array([isinstance(x, str) and bool(_SYMBOL_RE.match(x)) for x in names], bool)
    reason = _reasons(bars, timeframe, ids, now_ms)
    reason[~named[at]] = _ORDER.index(RejectReason.BAD_SYMBOL)
    symbols = [names[k] for k in at.tolist()]
    rejections = tuple(
        BarRejection(int(i), _ORDER[reason[i]], _message(f"{symbols[i]} {timeframe}", bars[i],
                                                         _ORDER[reason[i]]))
        for i in np.flatnonzero(reason >= 0)
    )  # fmt: skip
    good = np.flatnonzero(reason < 0)
    return ValidatedBars(
        _to_rows([symbols[i] for i in good.tolist()], timeframe, bars[good]), rejections
    )


_ORDER = list(RejectReason)


def _reasons(b: np.ndarray, timeframe: str, series: np.ndarray, now_ms: int | None) -> np.ndarray:
    """Per bar the index in ``_ORDER`` of the first check it fails, or -1; ``series`` tells
    which bars may repeat each other (one symbol: all zeros)."""
    n = len(b)
    o, h, lo, c, t = b["open"], b["high"], b["low"], b["close"], b["open_time_ms"]
    prices = np.stack([o, h, lo, c])
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with np.errstate(invalid="ignore"):
        optional_vol = np.stack(
            [b["quote_volume"], b["taker_buy_volume"], b["taker_buy_quote_volume"]]
        )
        checks = [
            (RejectReason.NON_FINITE_PRICE, ~np.isfinite(prices).all(axis=0)),
            (RejectReason.NON_POSITIVE_PRICE, (prices <= 0).any(axis=0)),
            (
                RejectReason.BAD_VOLUME,
                ~np.isfinite(b["volume"])
                | (b["volume"] < 0)
                | np.isinf(optional_vol).any(axis=0)
                | (optional_vol < 0).any(axis=0),
            ),
            (RejectReason.HIGH_BELOW_LOW, h < lo),
            (RejectReason.HIGH_BELOW_BODY, h < np.maximum(o, c)),
            (RejectReason.LOW_ABOVE_BODY, lo > np.minimum(o, c)),
            (
                RejectReason.OPEN_TIME_OUT_OF_RANGE,
                (t < EARLIEST_OPEN_MS) | (t > now_ms + FUTURE_SLACK_MS),
            ),
            (RejectReason.MISALIGNED_OPEN_TIME, _misaligned(t, timeframe)),
        ]
    reason = np.full(n, -1, dtype=np.int16)
    for why, mask in checks:
        reason[(reason < 0) & mask] = _ORDER.index(why)
    # Duplicates among the rows still standing: keep the first occurrence (lexsort is stable).
    standing = np.flatnonzero(reason < 0)
    order = standing[np.lexsort((t[standing], series[standing]))]
    repeat = (t[order][1:] == t[order][:-1]) & (series[order][1:] == series[order][:-1])
    reason[order[1:][repeat]] = _ORDER.index(RejectReason.DUPLICATE_BAR)
    return reason


def _misaligned(t: np.ndarray, timeframe: str) -> np.ndarray:
    step = TIMEFRAME_MS[timeframe]
    if timeframe == "1M":
        stamps = t.astype("datetime64[ms]")
        return stamps.astype("datetime64[M]").astype("datetime64[ms]") != stamps
    if timeframe == "1w":
        return (t - _WEEK_OFFSET_MS) % step != 0
    return t % step != 0


def _message(label: str, bar: np.void, reason: RejectReason) -> str:
    ohlc = f"o={bar['open']} h={bar['high']} l={bar['low']} c={bar['close']}"
    return f"{label} open_time_ms={int(bar['open_time_ms'])}: {reason.value} ({ohlc} v={bar['volume']})"


def _nullable(values: np.ndarray, unknown: np.ndarray) -> list:
    out = values.tolist()
    if unknown.any():
        for i in np.flatnonzero(unknown):
            out[i] = None
    return out


def _to_rows(symbol: str | list[str], timeframe: str, b: np.ndarray) -> list[tuple]:
    n = len(b)
    if n == 0:
        return []
    trades = b["trades"]
    columns = [
        [symbol] * n if isinstance(symbol, str) else symbol,
        [timeframe] * n,
        b["open_time_ms"].tolist(),
        b["open"].tolist(),
        b["high"].tolist(),
        b["low"].tolist(),
        b["close"].tolist(),
        b["volume"].tolist(),
        _nullable(b["quote_volume"], np.isnan(b["quote_volume"])),
        _nullable(trades, trades < 0),
        _nullable(b["taker_buy_volume"], np.isnan(b["taker_buy_volume"])),
        _nullable(b["taker_buy_quote_volume"], np.isnan(b["taker_buy_quote_volume"])),
        (b["flags"].astype(np.int64)).tolist(),
    ]
    return list(zip(*columns, strict=True))
