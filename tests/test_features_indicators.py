"""Indicators: TA-Lib's numbers on real Binance closes, NaN where TA-Lib has NaN, and the
incremental states give exactly the batch values bar by bar."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from features_data import klines

from aegis.features import indicators as ind

RTOL = 1e-9


def _assert_talib(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    scale = np.maximum(np.abs(ref[ok]), 1e-300)
    worst = float(np.max(np.abs(ours[ok] - ref[ok]) / scale)) if ok.any() else 0.0
    assert worst <= RTOL, worst


@pytest.fixture(scope="module", params=["BTCUSDT", "DOGEUSDT"])
def bars(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    return klines(request.param)


def test_ema_real_closes_matches_talib(bars):
    for period in (2, 12, 26, 200):
        _assert_talib(ind.ema(bars["close"], period), talib.EMA(bars["close"], period))


def test_rsi_real_closes_matches_talib(bars):
    for period in (2, 14):
        _assert_talib(ind.rsi(bars["close"], period), talib.RSI(bars["close"], period))


def test_atr_real_bars_matches_talib(bars):
    h, lo, c = bars["high"], bars["low"], bars["close"]
    _assert_talib(ind.atr(h, lo, c, 14), talib.ATR(h, lo, c, 14))


def test_macd_real_closes_matches_talib_on_all_three_outputs(bars):
    ours = ind.macd(bars["close"], 12, 26, 9)
    for mine, ref in zip(ours, talib.MACD(bars["close"], 12, 26, 9), strict=True):
        ok = ~np.isnan(ref)
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(ref))
        # Relative to the price scale: the histogram crosses zero, where relative error is moot.
        scale = np.abs(bars["close"][ok])
        assert np.max(np.abs(mine[ok] - ref[ok]) / scale) <= RTOL


def test_macd_line_relative_error_is_tiny_where_line_is_not_near_zero(bars):
    line, _, _ = ind.macd(bars["close"])
    ref, _, _ = talib.MACD(bars["close"], 12, 26, 9)
    ok = ~np.isnan(ref) & (np.abs(ref) > 1e-6 * np.abs(bars["close"]))
    assert np.max(np.abs(line[ok] - ref[ok]) / np.abs(ref[ok])) <= RTOL


def test_bollinger_real_closes_matches_talib(bars):
    ours = ind.bollinger(bars["close"], 20, 2.0)
    for mine, ref in zip(ours, talib.BBANDS(bars["close"], 20, 2.0, 2.0), strict=True):
        _assert_talib(mine, ref)


def test_indicators_flat_series_match_talib_zero_cases():
    flat = np.full(60, 100.0)
    _assert_talib(ind.rsi(flat), talib.RSI(flat, 14))
    _assert_talib(ind.atr(flat, flat, flat), talib.ATR(flat, flat, flat, 14))
    for mine, ref in zip(ind.bollinger(flat), talib.BBANDS(flat, 20, 2.0, 2.0), strict=True):
        _assert_talib(mine, ref)


def test_indicators_input_shorter_than_warmup_all_nan():
    x = np.linspace(1.0, 2.0, 10)
    assert np.isnan(ind.rsi(x)).all() and np.isnan(ind.ema(x, 20)).all()
    assert all(np.isnan(a).all() for a in ind.macd(x))
    assert ind.ema(np.empty(0), 3).shape == (0,)


def test_incremental_states_equal_batch_bar_by_bar():
    b = klines("SOLUSDT")
    h, lo, c = (b[k][:3000] for k in ("high", "low", "close"))
    states = (
        ind.EmaState(12),
        ind.RsiState(14),
        ind.AtrState(14),
        ind.MacdState(),
        ind.BollingerState(),
    )
    got = {k: [] for k in ("ema", "rsi", "atr", "macd", "bb")}
    for i in range(c.shape[0]):
        got["ema"].append(states[0].update(c[i]))
        got["rsi"].append(states[1].update(c[i]))
        got["atr"].append(states[2].update(h[i], lo[i], c[i]))
        got["macd"].append(states[3].update(c[i]))
        got["bb"].append(states[4].update(c[i]))
    np.testing.assert_array_equal(np.array(got["ema"]), ind.ema(c, 12))
    np.testing.assert_array_equal(np.array(got["rsi"]), ind.rsi(c))
    np.testing.assert_array_equal(np.array(got["atr"]), ind.atr(h, lo, c))
    np.testing.assert_array_equal(np.array(got["macd"]), np.column_stack(ind.macd(c)))
    np.testing.assert_array_equal(np.array(got["bb"]), np.column_stack(ind.bollinger(c)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ind.ema(np.array([1.0, np.nan, 2.0]), 2), "non-finite value at index 1"),
        (lambda: ind.ema(np.ones((2, 2)), 2), "1-D"),
        (lambda: ind.ema(np.array(["a", "b"]), 2), "real numbers"),
        (lambda: ind.ema(np.ones(5), 0), "period must be an integer >= 1"),
        (lambda: ind.rsi(np.ones(5), 2.5), "period must be an integer"),
        (lambda: ind.atr(np.ones(5), np.ones(4), np.ones(5)), "differ in length"),
        (lambda: ind.macd(np.ones(50), 26, 12), "fast (26) must be smaller than slow (12)"),
        (lambda: ind.bollinger(np.ones(50), 20, -1.0), "nbdev must be a positive"),
        (lambda: ind.RsiState().update(float("inf")), "close must be finite"),
    ],
)
def test_indicators_bad_input_raises_clear_error(call, message):
    with pytest.raises(
        ind.IndicatorInputError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        call()
