"""The brain's 12-feature vector: batch over a 1m series, and live for many symbols at once.

Every feature is causal (row t uses only bars closed at or before the end of decision bar t) and
scale-free (percentages, ratios, signed states), so one model serves every symbol. Definitions
are in docs/features.md and in `FEATURE_NAMES` order:

==================  =======================================================================
trend_1d            1d market-structure trend: +1 / -1 = direction of the last BOS/CHoCH, 0 none
trend_1h            the same on 1h bars
structure_15m       last 15m structure event: +1 bullish BOS, +2 bullish CHoCH, -1 / -2 bearish
fvg_size_pct        nearest unmitigated FVG (by midpoint): direction * height / close * 100; NaN
fvg_distance_pct    (close - that FVG's midpoint) / close * 100; NaN when there is none
ob_distance_pct     (close - nearest unmitigated order block's midpoint) / close * 100; NaN none
liquidity_sweep     +1 sell-side / -1 buy-side pool swept and reclaimed, fading linearly to 0
                    over `sweep_window` decision bars
rsi_14              RSI(14) of decision-bar closes, 0..100 (TA-Lib numbers)
atr_pct             ATR(14) / close * 100
macd_hist_pct       MACD(12, 26, 9) histogram / close * 100
bb_width            (upper - lower) / middle of Bollinger(20, 2)
volume_z            (volume - mean) / std of the last 20 decision-bar volumes (0 if flat)
==================  =======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aegis.features import _engine_nb as nb
from aegis.features.aggregate import BarInputError, timeframe_ms, validate_minute_bars
from aegis.records import N_FEATURES

FEATURE_NAMES: tuple[str, ...] = (
    "trend_1d",
    "trend_1h",
    "structure_15m",
    "fvg_size_pct",
    "fvg_distance_pct",
    "ob_distance_pct",
    "liquidity_sweep",
    "rsi_14",
    "atr_pct",
    "macd_hist_pct",
    "bb_width",
    "volume_z",
)
assert len(FEATURE_NAMES) == nb.N_FEATURES == N_FEATURES  # the intent record carries them

DECISION_TIMEFRAMES = ("1m", "5m", "15m", "1h")


@dataclass(frozen=True)
class FeatureParams:
    """Tunable rule parameters of the feature engine (defaults are the documented ones).

    swing_length_*: bars on each side that confirm a swing, per timeframe (decision, 15m, 1h,
    1d). liquidity_band_frac: pool band as a fraction of the level (0.001 = 0.1%).
    sweep_window: decision bars over which `liquidity_sweep` fades to 0.
    """

    swing_length_decision: int = 5
    swing_length_15m: int = 5
    swing_length_1h: int = 5
    swing_length_1d: int = 2
    liquidity_band_frac: float = 0.001
    sweep_window: int = 12

    def __post_init__(self) -> None:
        for name in ("decision", "15m", "1h", "1d"):
            n = getattr(self, f"swing_length_{name}")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
                raise ValueError(f"swing_length_{name} must be an integer in 1..32, got {n!r}")
        if not 0 <= self.liquidity_band_frac < 1:
            raise ValueError(
                f"liquidity_band_frac must be in [0, 1), got {self.liquidity_band_frac}"
            )
        if (
            isinstance(self.sweep_window, bool)
            or not isinstance(self.sweep_window, int)
            or self.sweep_window < 1
        ):
            raise ValueError(f"sweep_window must be a positive integer, got {self.sweep_window!r}")

    def as_array(self) -> np.ndarray:
        """Parameter vector in the kernel's layout."""
        return np.array(
            [
                self.swing_length_decision,
                self.swing_length_15m,
                self.swing_length_1h,
                self.swing_length_1d,
                self.liquidity_band_frac,
                self.sweep_window,
            ],
            dtype=np.float64,
        )


def _timeframes(decision_tf: str) -> np.ndarray:
    if decision_tf not in DECISION_TIMEFRAMES:
        raise BarInputError(
            f"decision_tf must be one of {DECISION_TIMEFRAMES}, got {decision_tf!r}"
        )
    return np.array([timeframe_ms(tf) for tf in (decision_tf, "15m", "1h", "1d")], np.int64)


def feature_matrix(
    open_time_ms: np.ndarray,
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    decision_tf: str = "5m",
    params: FeatureParams | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Compute one row of the 12 features per closed decision bar of a 1m series.

    Returns (decision_open_time_ms int64 (n,), features float64 (n, 12), FEATURE_NAMES). A
    decision bar is closed when its last minute is present or a later minute exists; a bar the
    series ends inside without its last minute is not emitted (it is not known to be closed).
    Gaps are kept: a bucket with missing minutes is built from the minutes that exist.
    """
    tf = _timeframes(decision_tf)
    t, (o, h, lo, c, v) = validate_minute_bars(
        open_time_ms,
        ("open", open),
        ("high", high),
        ("low", low),
        ("close", close),
        ("volume", volume),
    )
    p = (params or FeatureParams()).as_array()
    out_t, feats, bad = nb.feature_matrix_nb(t, o, h, lo, c, v, tf, p)
    if bad >= 0:  # validate_minute_bars already guarantees this cannot happen
        raise BarInputError(f"bar {bad} was rejected by the feature engine")
    return out_t, feats, FEATURE_NAMES


@dataclass(frozen=True)
class FeatureRows:
    """Rows emitted by one FeatureEngine.update call (views into the engine's buffers)."""

    symbol_index: np.ndarray  # int64 (k,)
    decision_open_time_ms: np.ndarray  # int64 (k,)
    features: np.ndarray  # float64 (k, 12)


class FeatureEngine:
    """Live features for a fixed universe of symbols, fed one closed 1m bar per symbol at a time.

    All state is one preallocated (n_symbols, 4, BLOCK_LEN) array updated by a compiled kernel,
    O(1) per bar; `update` emits a row when a symbol's decision bar closes, the same row
    `feature_matrix` gives for that bar. Returned arrays are views valid until the next call.
    """

    def __init__(
        self, n_symbols: int, decision_tf: str = "5m", params: FeatureParams | None = None
    ) -> None:
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 1:
            raise ValueError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        self.n_symbols = n_symbols
        self.decision_tf = decision_tf
        self.params = params or FeatureParams()
        self._tf = _timeframes(decision_tf)
        self._p = self.params.as_array()
        self._states = np.zeros((n_symbols, nb.N_BLOCKS, nb.BLOCK_LEN))
        for s in range(n_symbols):
            nb.init_symbol_nb(self._states[s])
        self._cap = 0
        self._grow(max(64, n_symbols))

    def _grow(self, n_inputs: int) -> None:
        self._cap = 2 * n_inputs
        self._out_sym = np.empty(self._cap, np.int64)
        self._out_t = np.empty(self._cap, np.int64)
        self._out_rows = np.empty((self._cap, nb.N_FEATURES))

    def reset(self, symbol_index: int) -> None:
        """Forget a symbol's history (e.g. before re-warming it after a long gap)."""
        nb.init_symbol_nb(self._states[symbol_index])

    def update(
        self,
        symbol_index: np.ndarray,
        open_time_ms: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> FeatureRows:
        """Feed one closed 1m bar for each listed symbol; return the decision rows that closed.

        Raises BarInputError (and applies nothing) for an unknown symbol index, a time that is
        not after that symbol's previous minute, or non-finite prices.
        """
        sym = np.asarray(symbol_index, dtype=np.int64)
        t = np.asarray(open_time_ms, dtype=np.int64)
        cols = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)]
        if sym.ndim != 1 or any(a.shape != sym.shape for a in [t, *cols]):
            raise BarInputError("update arrays must be 1-D and of equal length")
        for name, a in zip(("open", "high", "low", "close", "volume"), cols, strict=True):
            if not np.isfinite(a).all():
                raise BarInputError(f"{name} has a non-finite value")
        if 2 * sym.shape[0] > self._cap:
            self._grow(sym.shape[0])
        k = nb.on_minutes_nb(
            self._states,
            sym,
            t,
            *cols,
            self._tf,
            self._p,
            self._out_sym,
            self._out_t,
            self._out_rows,
        )
        if k < 0:
            i = -1 - k
            raise BarInputError(
                f"bar {i} rejected: symbol index {int(sym[i])}, open time {int(t[i])} (unknown "
                f"symbol, not minute-aligned, or not after that symbol's previous minute)"
            )
        return FeatureRows(self._out_sym[:k], self._out_t[:k], self._out_rows[:k])

    def warm_up(
        self,
        symbol_index: int,
        open_time_ms: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> int:
        """Replay a symbol's 1m history (e.g. from market_data); return decision rows it closed."""
        if not 0 <= symbol_index < self.n_symbols:
            raise BarInputError(f"symbol index {symbol_index} out of range")
        t, cols = validate_minute_bars(
            open_time_ms,
            ("open", open),
            ("high", high),
            ("low", low),
            ("close", close),
            ("volume", volume),
        )
        rows = nb.warm_up_nb(self._states[symbol_index], t, *cols, self._tf, self._p)
        if rows < 0:
            raise BarInputError(
                f"warm-up bar {-1 - rows} is not after symbol {symbol_index}'s previous minute"
            )
        return int(rows)
