"""Candidate rules: the SMC long rule and the EMA crossover on hand-made rows; EMA batch == live."""

from __future__ import annotations

import numpy as np
import pytest
from features_data import klines

from aegis.features import FEATURE_NAMES
from aegis.features.aggregate import aggregate_bars
from aegis.features.candidates import (
    CandidateInputError,
    CandidateRule,
    EmaTracker,
    SmcLongParams,
    ema_crossover,
    ema_inputs,
    rule_by_name,
    smc_long,
)
from aegis.features.indicators import ema


def row(**values: float) -> np.ndarray:
    """A feature row that satisfies the SMC long rule by an order-block retest, overridable."""
    base = dict(
        trend_1d=0.0, trend_1h=1.0, structure_15m=1.0, fvg_size_pct=np.nan,
        fvg_distance_pct=np.nan, ob_distance_pct=0.2, liquidity_sweep=0.0, rsi_14=55.0,
        atr_pct=0.3, macd_hist_pct=0.01, bb_width=0.02, volume_z=0.5,
    )  # fmt: skip
    base.update(values)
    return np.array([[base[n] for n in FEATURE_NAMES]])


def judge(features: np.ndarray, rule: CandidateRule | None = None):
    return (rule or smc_long()).evaluate(features, FEATURE_NAMES)


def test_smc_long_all_conditions_met_is_candidate_with_base_confidence_plus_retest():
    is_cand, conf = judge(row())
    assert is_cand.tolist() == [True]
    assert conf[0] == pytest.approx(0.5)  # 0.4 + 0.1 order-block retest


@pytest.mark.parametrize(
    "change",
    [
        {"trend_1h": 0.0},  # no higher-timeframe uptrend
        {"trend_1h": -1.0},
        {"trend_1d": -1.0},  # daily trend down
        {"structure_15m": 0.0},  # 15m does not confirm
        {"structure_15m": -2.0},
        {"ob_distance_pct": 0.8},  # too far above the block: no retest, no other trigger
        {"ob_distance_pct": -0.1},  # below the block's midpoint
        {"rsi_14": 80.0},  # overbought
        {"rsi_14": np.nan},  # too little history
    ],
)
def test_smc_long_one_condition_missing_is_not_candidate_and_confidence_zero(change):
    is_cand, conf = judge(row(**change))
    assert is_cand.tolist() == [False]
    assert conf.tolist() == [0.0]


def test_smc_long_sweep_alone_triggers_and_raises_confidence_with_daily_trend_and_choch():
    features = row(ob_distance_pct=np.nan, liquidity_sweep=1.0, trend_1d=1.0, structure_15m=2.0)
    is_cand, conf = judge(features)
    assert is_cand.tolist() == [True]
    assert conf[0] == pytest.approx(0.4 + 0.15 + 0.15 + 0.1)


def test_smc_long_bullish_fvg_retest_triggers_but_bearish_gap_does_not():
    bull = row(ob_distance_pct=np.nan, fvg_size_pct=0.3, fvg_distance_pct=0.1)
    bear = row(ob_distance_pct=np.nan, fvg_size_pct=-0.3, fvg_distance_pct=0.1)
    assert judge(bull)[0].tolist() == [True]
    assert judge(bear)[0].tolist() == [False]


def test_smc_long_retest_band_is_a_parameter():
    wide = smc_long(SmcLongParams(retest_band_pct=1.0))
    assert judge(row(ob_distance_pct=0.8), wide)[0].tolist() == [True]


def test_rule_looks_columns_up_by_name_so_reordered_columns_give_the_same_verdict():
    features = np.vstack([row(), row(trend_1h=-1.0), row(liquidity_sweep=0.7)])
    perm = np.random.default_rng(1).permutation(len(FEATURE_NAMES))
    names = tuple(FEATURE_NAMES[i] for i in perm)
    a = smc_long().evaluate(features, FEATURE_NAMES)
    b = smc_long().evaluate(features[:, perm], names)
    assert a[0].tolist() == b[0].tolist() and np.array_equal(a[1], b[1])


def test_ema_crossover_fires_only_on_the_bar_fast_crosses_above_slow():
    def e(fast_now, slow_now, fast_prev, slow_prev):
        return [[fast_now, fast_prev], [slow_now, slow_prev]]  # (period, [now, prev])

    ema_rows = np.array(
        [
            e(11.0, 10.0, 10.0, 10.0),  # prev equal, now above: cross
            e(11.5, 11.0, 11.0, 11.2),  # prev below, now above: cross
            e(11.5, 11.0, 11.2, 11.0),  # already above: no
            e(10.0, 11.0, 11.2, 11.0),  # falls below: no
            e(11.0, np.nan, 10.0, np.nan),  # slow EMA still warming up: no
        ]
    )
    is_cand, conf = ema_crossover(10, 30).evaluate(np.zeros((5, 12)), FEATURE_NAMES, ema_rows)
    assert is_cand.tolist() == [True, True, False, False, False]
    assert conf.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_ema_crossover_needs_its_emas_and_valid_periods():
    with pytest.raises(CandidateInputError, match="needs EMAs"):
        ema_crossover().evaluate(np.zeros((1, 12)), FEATURE_NAMES)
    with pytest.raises(CandidateInputError):
        ema_crossover(30, 10)


def test_rule_bad_inputs_raise_clear_errors():
    with pytest.raises(CandidateInputError, match=r"features must be \(k, 12\)"):
        smc_long().evaluate(np.zeros((2, 11)), FEATURE_NAMES)
    with pytest.raises(CandidateInputError, match="not among"):
        smc_long().evaluate(np.zeros((1, 2)), ("a", "b"))
    with pytest.raises(CandidateInputError, match="unknown candidate rule"):
        rule_by_name("moon")
    broken = CandidateRule("broken", lambda f, n, e: (np.zeros(3, bool), np.zeros(2)))
    with pytest.raises(CandidateInputError, match="returned shapes"):
        broken.evaluate(np.zeros((3, 12)), FEATURE_NAMES)


def test_ema_tracker_live_equals_batch_on_real_decision_closes():
    b = klines("ETHUSDT")
    bars = aggregate_bars(b["open_time"][:20000], b["open"][:20000], b["high"][:20000],
                          b["low"][:20000], b["close"][:20000], b["volume"][:20000], "5m")  # fmt: skip
    close = bars.close
    batch = ema_inputs(close, (10, 30))
    assert np.array_equal(batch[:, 1, 0], ema(close, 30), equal_nan=True)  # TA-Lib numbers
    tracker = EmaTracker(3, (10, 30))
    live = np.concatenate(
        [tracker.update(np.array([2]), close[i : i + 1]) for i in range(len(close))]
    )
    assert np.array_equal(live, batch, equal_nan=True)


def test_rule_confidence_is_clamped_to_0_1_nan_and_non_candidates_are_0():
    conf = np.array([np.nan, np.inf, -np.inf, -0.5, 0.3, 1.7, 0.0, 1.0, 0.9])
    cand = np.array([True] * 8 + [False])
    rule = CandidateRule("plug_in", lambda features, names, ema: (cand, conf))
    is_cand, out = rule.evaluate(np.zeros((9, len(FEATURE_NAMES))), FEATURE_NAMES)
    assert is_cand.tolist() == cand.tolist()
    assert out.tolist() == [0.0, 1.0, 0.0, 0.0, 0.3, 1.0, 0.0, 1.0, 0.0]
