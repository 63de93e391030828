"""Technical indicators with TA-Lib's numbers: batch functions and per-bar incremental states.

Batch functions take float64 arrays and return float64 arrays of the same length, NaN exactly
where TA-Lib returns NaN (its warm-up). The ``*State`` classes take one new value per call and
return the same number the batch function gives at that position. Kernels: ``_indicators_nb``.
"""

from __future__ import annotations

import numpy as np

from aegis.features import _indicators_nb as nb


class IndicatorInputError(ValueError):
    """An indicator was given arrays or parameters it cannot compute from."""


def _series(name: str, x: object) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise IndicatorInputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise IndicatorInputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise IndicatorInputError(f"{name} has a non-finite value at index {bad}")
    return arr


def _period(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise IndicatorInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise IndicatorInputError(f"arrays differ in length: {lengths}")


def ema(x: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average, seeded with the SMA of the first `period` values (TA-Lib EMA)."""
    return nb.ema_nb(_series("x", x), _period("period", period))


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's relative strength index, 0..100 (TA-Lib RSI); NaN for the first `period` bars."""
    return nb.rsi_nb(_series("close", close), _period("period", period))


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's average true range (TA-Lib ATR); NaN for the first `period` bars."""
    h, lo, c = _series("high", high), _series("low", low), _series("close", close)
    _same_length(high=h, low=lo, close=c)
    return nb.atr_nb(h, lo, c, _period("period", period, minimum=2))


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (macd, signal, hist) as TA-Lib MACD; NaN for the first slow + signal - 2 bars."""
    c = _series("close", close)
    f, s, g = _period("fast", fast, 2), _period("slow", slow, 2), _period("signal", signal)
    if f >= s:
        raise IndicatorInputError(f"fast ({f}) must be smaller than slow ({s})")
    return nb.macd_nb(c, f, s, g)


def bollinger(
    close: np.ndarray, period: int = 20, nbdev: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (upper, middle, lower) as TA-Lib BBANDS with an SMA middle and population stddev."""
    c = _series("close", close)
    p = _period("period", period, minimum=2)
    if not np.isfinite(nbdev) or nbdev <= 0:
        raise IndicatorInputError(f"nbdev must be a positive finite number, got {nbdev!r}")
    return nb.bollinger_nb(c, p, float(nbdev))


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v):
        raise IndicatorInputError(f"{name} must be finite, got {value!r}")
    return v


class EmaState:
    """Incremental EMA: `update(x)` returns what `ema(series, period)` gives at that bar."""

    def __init__(self, period: int) -> None:
        self.period = _period("period", period)
        self._state = np.zeros(nb.EMA_STATE_LEN)

    def update(self, x: float) -> float:
        """Feed the next value; return the EMA at it (NaN during warm-up)."""
        return float(nb.ema_update_nb(self._state, _finite("x", x), self.period))


class RsiState:
    """Incremental RSI: `update(close)` returns what `rsi(series, period)` gives at that bar."""

    def __init__(self, period: int = 14) -> None:
        self.period = _period("period", period)
        self._state = np.zeros(nb.RSI_STATE_LEN)

    def update(self, close: float) -> float:
        """Feed the next close; return the RSI at it (NaN during warm-up)."""
        return float(nb.rsi_update_nb(self._state, _finite("close", close), self.period))


class AtrState:
    """Incremental ATR: `update(h, l, c)` returns what `atr(...)` gives at that bar."""

    def __init__(self, period: int = 14) -> None:
        self.period = _period("period", period, minimum=2)
        self._state = np.zeros(nb.ATR_STATE_LEN)

    def update(self, high: float, low: float, close: float) -> float:
        """Feed the next bar; return the ATR at it (NaN during warm-up)."""
        h, lo, c = _finite("high", high), _finite("low", low), _finite("close", close)
        return float(nb.atr_update_nb(self._state, h, lo, c, self.period))


class MacdState:
    """Incremental MACD: `update(close)` returns (macd, signal, hist) as `macd(...)` at that bar."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast, self.slow = _period("fast", fast, 2), _period("slow", slow, 2)
        self.signal = _period("signal", signal)
        if self.fast >= self.slow:
            raise IndicatorInputError(f"fast ({fast}) must be smaller than slow ({slow})")
        self._state = np.zeros(nb.macd_state_len(self.slow))
        self._out = np.empty(3)

    def update(self, close: float) -> tuple[float, float, float]:
        """Feed the next close; return (macd, signal, hist) at it (NaN during warm-up)."""
        c = _finite("close", close)
        nb.macd_update_nb(self._state, c, self.fast, self.slow, self.signal, self._out)
        return float(self._out[0]), float(self._out[1]), float(self._out[2])


class BollingerState:
    """Incremental Bollinger bands: `update(close)` returns (upper, middle, lower) at that bar."""

    def __init__(self, period: int = 20, nbdev: float = 2.0) -> None:
        self.period = _period("period", period, minimum=2)
        if not np.isfinite(nbdev) or nbdev <= 0:
            raise IndicatorInputError(f"nbdev must be a positive finite number, got {nbdev!r}")
        self.nbdev = float(nbdev)
        self._state = np.zeros(nb.bb_state_len(self.period))
        self._out = np.empty(3)

    def update(self, close: float) -> tuple[float, float, float]:
        """Feed the next close; return (upper, middle, lower) at it (NaN during warm-up)."""
        c = _finite("close", close)
        nb.bollinger_update_nb(self._state, c, self.period, self.nbdev, self._out)
        return float(self._out[0]), float(self._out[1]), float(self._out[2])
