"""Candidate rules: which closed decision bars are long-entry candidates, and how confident.

A rule is pluggable: a :class:`CandidateRule` wraps a pure function

    fn(features (k, 12), names, ema (k, P, 2)) -> (is_candidate bool (k,), confidence float (k,))

over a batch of decision rows (any mix of symbols). ``names`` is the column order of
``features`` (``FEATURE_NAMES``), so a rule looks columns up by name and survives a reordering.
``ema`` carries, for each of the rule's ``ema_periods``, the EMA of the decision-bar closes at
the row (``[..., 0]``) and at the same symbol's previous decision bar (``[..., 1]``), NaN during
the EMA's warm-up. Price-based rules (the EMA crossover of the peer benchmark) need that: the
12 features are scale-free and carry no price level. EMAs have TA-Lib's numbers: the batch form
(:func:`ema_inputs`) and the live form (:class:`EmaTracker`) agree exactly.

Confidence is in [0, 1]; it ranks candidates and drives cold-start trading (no model yet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from aegis.features import _indicators_nb as ind

RuleFunction = Callable[[np.ndarray, Sequence[str], np.ndarray], tuple[np.ndarray, np.ndarray]]


class CandidateInputError(ValueError):
    """A rule was given rows it cannot judge, or returned something that is not a verdict."""


@dataclass(frozen=True)
class CandidateRule:
    """A named candidate rule and the EMAs of decision-bar closes it reads (maybe none)."""

    name: str
    fn: RuleFunction
    ema_periods: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for p in self.ema_periods:
            if isinstance(p, bool) or not isinstance(p, int) or p < 1:
                raise CandidateInputError(f"ema period must be a positive integer, got {p!r}")

    def evaluate(
        self, features: np.ndarray, names: Sequence[str], ema: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply the rule with checked shapes; confidence is 0 wherever it is not a candidate."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise CandidateInputError(f"features must be (k, {len(names)}), got {x.shape}")
        k, n_ema = x.shape[0], len(self.ema_periods)
        if ema is None:
            if n_ema:
                raise CandidateInputError(f"rule {self.name} needs EMAs {self.ema_periods}")
            ema = np.empty((k, 0, 2))
        ema = np.asarray(ema, dtype=np.float64)
        if ema.shape != (k, n_ema, 2):
            raise CandidateInputError(f"ema must be ({k}, {n_ema}, 2), got {ema.shape}")
        is_cand, conf = self.fn(x, tuple(names), ema)
        is_cand = np.asarray(is_cand, dtype=bool)
        conf = np.asarray(conf, dtype=np.float64)
        if is_cand.shape != (k,) or conf.shape != (k,):
            raise CandidateInputError(
                f"rule {self.name} returned shapes {is_cand.shape}, {conf.shape}"
            )
        # Clamp to [0, 1], NaN to 0: ufuncs rather than nan_to_num + clip, which cost ~10 us
        # per call on the brain's hot path (same values, infinities included).
        clamped = np.minimum(np.maximum(conf, 0.0), 1.0)
        return is_cand, np.where(is_cand & (clamped == clamped), clamped, 0.0)


def _column(features: np.ndarray, names: Sequence[str], name: str) -> np.ndarray:
    try:
        return features[:, list(names).index(name)]
    except ValueError:
        raise CandidateInputError(f"feature {name!r} is not among {tuple(names)}") from None


@dataclass(frozen=True)
class SmcLongParams:
    """Tunables of the default SMC long rule (percentages of price)."""

    retest_band_pct: float = 0.5  # close at most this far above a bullish zone's midpoint
    max_rsi: float = 75.0  # no chasing an overbought bar


def smc_long(params: SmcLongParams | None = None) -> CandidateRule:
    """The default rule: SMC long entries, documented in :func:`smc_long_verdict`."""
    p = params or SmcLongParams()

    def fn(features, names, ema):
        return smc_long_verdict(features, names, p)

    return CandidateRule("smc_long", fn)


def smc_long_verdict(
    features: np.ndarray, names: Sequence[str], params: SmcLongParams
) -> tuple[np.ndarray, np.ndarray]:
    """Judge rows by the SMC long rule; return (is_candidate, confidence).

    A row is a long candidate when all hold:

    1. **Higher-timeframe trend up**: ``trend_1h > 0`` (the last 1h BOS/CHoCH was bullish) and
       the daily trend is not down (``trend_1d >= 0``).
    2. **15m structure confirms**: ``structure_15m > 0`` (last 15m event a bullish BOS or CHoCH).
    3. **A bullish trigger**, one of:
       - a **sell-side liquidity sweep** reclaimed recently (``liquidity_sweep > 0``);
       - a **retest of a bullish FVG**: the nearest open gap is bullish (``fvg_size_pct > 0``)
         and the close sits at or just above its midpoint
         (``0 <= fvg_distance_pct <= retest_band_pct``);
       - a **retest of an order block**: the close sits at or just above the nearest
         unmitigated block's midpoint (``0 <= ob_distance_pct <= retest_band_pct``).
    4. Not overbought: ``rsi_14 < max_rsi`` (NaN RSI, i.e. too little history, fails).

    Confidence = 0.4 + 0.15 if the daily trend is also up + 0.15 × the sweep strength (fading
    from 1 over the sweep window) + 0.1 per zone retest (FVG, order block) + 0.1 when the 15m
    event was a CHoCH (a fresh reversal), capped at 1.
    """
    col = lambda name: _column(features, names, name)  # noqa: E731
    t1d, t1h, s15 = col("trend_1d"), col("trend_1h"), col("structure_15m")
    sweep = np.nan_to_num(col("liquidity_sweep"), nan=0.0)
    fvg_size, fvg_dist, ob_dist = (
        col("fvg_size_pct"),
        col("fvg_distance_pct"),
        col("ob_distance_pct"),
    )
    rsi = col("rsi_14")
    band = params.retest_band_pct
    with np.errstate(invalid="ignore"):
        htf_up = (t1h > 0) & (t1d >= 0)
        confirm = s15 > 0
        swept = sweep > 0
        fvg_retest = (fvg_size > 0) & (fvg_dist >= 0) & (fvg_dist <= band)
        ob_retest = (ob_dist >= 0) & (ob_dist <= band)
        calm = rsi < params.max_rsi
    is_cand = htf_up & confirm & (swept | fvg_retest | ob_retest) & calm
    conf = (
        0.4
        + 0.15 * (t1d > 0)
        + 0.15 * np.where(swept, sweep, 0.0)
        + 0.1 * fvg_retest
        + 0.1 * ob_retest
        + 0.1 * (s15 == 2)
    )
    return is_cand, np.minimum(conf, 1.0)


def ema_crossover(fast: int = 10, slow: int = 30) -> CandidateRule:
    """Long when EMA(fast) of decision closes crosses above EMA(slow): previous bar's fast EMA
    at or below the slow one, this bar's strictly above. Confidence 1 (the rule has no grading).

    The peer-benchmark rule (backtesting.py / NautilusTrader run the same crossover).
    """
    if not 1 <= fast < slow:
        raise CandidateInputError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")

    def fn(features, names, ema):
        f_now, s_now = ema[:, 0, 0], ema[:, 1, 0]
        f_prev, s_prev = ema[:, 0, 1], ema[:, 1, 1]
        with np.errstate(invalid="ignore"):
            cross = (f_prev <= s_prev) & (f_now > s_now)
        return cross, np.ones(features.shape[0])

    return CandidateRule(f"ema_crossover_{fast}_{slow}", fn, (fast, slow))


RULES: dict[str, Callable[[], CandidateRule]] = {
    "smc_long": smc_long,
    "ema_crossover": ema_crossover,
}


def rule_by_name(name: str) -> CandidateRule:
    """Return a rule with default parameters by name (``smc_long``, ``ema_crossover``)."""
    try:
        return RULES[name]()
    except KeyError:
        raise CandidateInputError(
            f"unknown candidate rule {name!r} (known: {', '.join(RULES)})"
        ) from None


# -- EMAs of decision-bar closes -------------------------------------------------------------


def ema_inputs(close: np.ndarray, periods: Sequence[int]) -> np.ndarray:
    """Batch form: (n, P, 2) EMAs of a symbol's decision closes, now and at the previous bar."""
    c = np.ascontiguousarray(close, dtype=np.float64)
    out = np.full((c.shape[0], len(periods), 2), np.nan)
    for j, p in enumerate(periods):
        e = ind.ema_nb(c, int(p))
        out[:, j, 0] = e
        out[1:, j, 1] = e[:-1]
    return out


@njit(cache=True)
def _ema_rows_nb(states, last, sym, close, periods, out):
    for i in range(sym.shape[0]):
        s = sym[i]
        for j in range(periods.shape[0]):
            out[i, j, 1] = last[s, j]
            v = ind.ema_update_nb(states[s, j], close[i], periods[j])
            last[s, j] = v
            out[i, j, 0] = v


class EmaTracker:
    """Live form: per-symbol EMA states of decision closes, fed rows in time order per symbol."""

    def __init__(self, n_symbols: int, periods: Sequence[int]) -> None:
        self.periods = np.asarray(tuple(periods), dtype=np.int64)
        p = len(self.periods)
        self._states = np.zeros((n_symbols, p, ind.EMA_STATE_LEN))
        self._last = np.full((n_symbols, p), np.nan)

    def update(self, symbol_index: np.ndarray, close: np.ndarray) -> np.ndarray:
        """Feed each row's decision close (a symbol may repeat, in time order); return (k, P, 2)."""
        sym = np.ascontiguousarray(symbol_index, dtype=np.int64)
        c = np.ascontiguousarray(close, dtype=np.float64)
        out = np.empty((sym.shape[0], len(self.periods), 2))
        if len(self.periods) and sym.shape[0]:
            _ema_rows_nb(self._states, self._last, sym, c, self.periods, out)
        return out

    def reset(self, symbol_index: int) -> None:
        """Forget a symbol's EMAs."""
        self._states[symbol_index] = 0.0
        self._last[symbol_index] = np.nan
