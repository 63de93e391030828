"""Timeframes from closed 1m bars, and the fixed-length bar history the brain keeps per series.

Binance builds a kline of timeframe T from the trades whose time falls in
[k*T, (k+1)*T) since the Unix epoch (UTC); so folding its 1m klines into those buckets gives the
same open/high/low/close and, up to float summation, the same volume. When a 1m bar is missing
the aggregate is built from the minutes that exist and marked incomplete (never filled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aegis.features._aggregate_nb import aggregate_nb
from aegis.records import BAR_INCOMPLETE

MINUTE_MS = 60_000
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}


class BarInputError(ValueError):
    """Bars given to aggregation or to a KlineBuffer are malformed or out of order."""


def timeframe_ms(timeframe: str) -> int:
    """Return the length of `timeframe` ("1m", "5m", "15m", "1h", "1d") in milliseconds."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise BarInputError(
            f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_MS)}"
        ) from None


@dataclass(frozen=True)
class AggregatedBars:
    """Higher-timeframe bars; `n_minutes` 1m bars went into each, `complete` when all did."""

    timeframe: str
    open_time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    n_minutes: np.ndarray

    @property
    def complete(self) -> np.ndarray:
        """True where every 1m bar of the bucket was present."""
        return self.n_minutes == TIMEFRAME_MS[self.timeframe] // MINUTE_MS

    @property
    def flags(self) -> np.ndarray:
        """BAR_DTYPE-style flags: BAR_INCOMPLETE where a minute was missing."""
        return np.where(self.complete, 0, BAR_INCOMPLETE).astype(np.uint32)


def validate_minute_bars(
    open_time_ms: np.ndarray, *columns: tuple[str, np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Check a 1m series (aligned, strictly increasing times; finite, equal-length columns)."""
    t = np.asarray(open_time_ms)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise BarInputError("open_time_ms must be a 1-D integer array (epoch milliseconds)")
    t = np.ascontiguousarray(t, dtype=np.int64)
    out = []
    for name, col in columns:
        a = np.asarray(col)
        if a.shape != t.shape:
            raise BarInputError(f"{name} has shape {a.shape}, open_time_ms has {t.shape}")
        a = np.ascontiguousarray(a, dtype=np.float64)
        if not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise BarInputError(f"{name} has a non-finite value at index {bad}")
        out.append(a)
    if t.size and (t % MINUTE_MS != 0).any():
        bad = int(np.flatnonzero(t % MINUTE_MS != 0)[0])
        raise BarInputError(f"open_time_ms[{bad}]={t[bad]} is not on a minute boundary")
    if t.size > 1 and (np.diff(t) <= 0).any():
        bad = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
        raise BarInputError(f"open_time_ms is not strictly increasing at index {bad}")
    return t, out


def aggregate_bars(
    open_time_ms: np.ndarray,
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timeframe: str,
) -> AggregatedBars:
    """Aggregate closed 1m bars into `timeframe` bars aligned to UTC open times (Binance rules).

    Only buckets with at least one 1m bar appear; incomplete ones are flagged, not filled. The
    last bucket is returned even if the series ends inside it (check `complete`).
    """
    tf = timeframe_ms(timeframe)
    t, (o, h, lo, c, v) = validate_minute_bars(
        open_time_ms,
        ("open", open),
        ("high", high),
        ("low", low),
        ("close", close),
        ("volume", volume),
    )
    parts = aggregate_nb(t, o, h, lo, c, v, tf)
    return AggregatedBars(timeframe, *parts)


class KlineBuffer:
    """Fixed-length history of one symbol's bars of one timeframe, in preallocated arrays.

    Each bar is written twice, at `i` and `i + capacity`, so the latest `len(self)` bars are
    always one contiguous slice: `view("close")` is a zero-copy chronological array and
    `append` allocates nothing.
    """

    FIELDS = ("open", "high", "low", "close", "volume")

    def __init__(self, capacity: int, timeframe: str = "1m") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise BarInputError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.timeframe = timeframe
        self._tf_ms = timeframe_ms(timeframe)
        self._time = np.zeros(2 * capacity, np.int64)
        self._flags = np.zeros(2 * capacity, np.uint32)
        self._values = np.zeros((len(self.FIELDS), 2 * capacity))
        self._next = 0  # slot the next bar goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def last_open_time_ms(self) -> int | None:
        """Open time of the newest bar, None when empty."""
        if not self._size:
            return None
        return int(self._time[(self._next - 1) % self.capacity])

    def append(
        self,
        open_time_ms: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        flags: int = 0,
    ) -> None:
        """Add the next closed bar; its open time must be aligned and later than the last one."""
        t = int(open_time_ms)
        if t % self._tf_ms:
            raise BarInputError(f"open time {t} is not aligned to {self.timeframe}")
        last = self.last_open_time_ms
        if last is not None and t <= last:
            raise BarInputError(f"bar at {t} is not after the last bar at {last}")
        values = (open, high, low, close, volume)
        for name, value in zip(self.FIELDS, values, strict=True):
            if not np.isfinite(value):
                raise BarInputError(f"{name}={value!r} is not finite (bar at {t})")
        if not low <= min(open, close) <= max(open, close) <= high or volume < 0:
            raise BarInputError(f"inconsistent bar at {t}: o={open} h={high} l={low} c={close}")
        i = self._next
        for slot in (i, i + self.capacity):
            self._time[slot] = t
            self._flags[slot] = flags
            self._values[:, slot] = values
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def warm_up(
        self,
        open_time_ms: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        flags: np.ndarray | None = None,
    ) -> None:
        """Load a history (oldest first, e.g. rows from market_data); keeps the newest bars."""
        t = np.asarray(open_time_ms, dtype=np.int64)
        cols = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)]
        f = np.zeros(t.shape, np.uint32) if flags is None else np.asarray(flags, np.uint32)
        if any(a.shape != t.shape for a in [*cols, f]) or t.ndim != 1:
            raise BarInputError("warm-up arrays must be 1-D and of equal length")
        start = max(0, t.shape[0] - self.capacity)
        for i in range(start, t.shape[0]):
            self.append(int(t[i]), *(float(a[i]) for a in cols), flags=int(f[i]))

    def _window(self) -> slice:
        end = self._next + self.capacity if self._size == self.capacity else self._next
        return slice(end - self._size, end)

    def view(self, field: str) -> np.ndarray:
        """Chronological read-only view of one column: "open_time_ms", "flags" or a price field."""
        if field == "open_time_ms":
            arr = self._time[self._window()]
        elif field == "flags":
            arr = self._flags[self._window()]
        elif field in self.FIELDS:
            arr = self._values[self.FIELDS.index(field), self._window()]
        else:
            raise BarInputError(f"unknown field {field!r}")
        arr = arr.view()
        arr.flags.writeable = False
        return arr
