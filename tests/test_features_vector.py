"""The 12-feature vector: batch == live engine over real data, no look-ahead, gaps, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from features_data import SYMBOLS_1M, klines

from aegis.features import (
    FEATURE_NAMES,
    BarInputError,
    FeatureEngine,
    FeatureParams,
    feature_matrix,
)

COLS = ("open_time", "open", "high", "low", "close", "volume")
MIN = 60_000


def _cols(b: dict[str, np.ndarray], sl: slice = slice(None)) -> list[np.ndarray]:
    return [b[k][sl] for k in COLS]


def _feed(engine: FeatureEngine, series: list[dict[str, np.ndarray]]):
    """Feed several symbols minute by minute (one update call per minute, like the live brain)."""
    times = np.unique(np.concatenate([s["open_time"] for s in series]))
    pos = [np.searchsorted(s["open_time"], times) for s in series]
    got: list[tuple[int, int, np.ndarray]] = []
    for k, t in enumerate(times):
        idx = [
            i
            for i, s in enumerate(series)
            if pos[i][k] < s["open_time"].size and s["open_time"][pos[i][k]] == t
        ]
        rows = engine.update(
            np.array(idx),
            np.full(len(idx), t),
            *(np.array([series[i][c][pos[i][k]] for i in idx]) for c in COLS[1:]),
        )
        for j in range(rows.features.shape[0]):
            got.append(
                (
                    int(rows.symbol_index[j]),
                    int(rows.decision_open_time_ms[j]),
                    rows.features[j].copy(),
                )
            )
    return got


def test_feature_names_are_the_twelve_documented_in_order():
    assert FEATURE_NAMES == (
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


def test_feature_matrix_real_btc_one_row_per_closed_5m_bar():
    b = klines("BTCUSDT")
    t, f, names = feature_matrix(*_cols(b))
    assert names == FEATURE_NAMES and f.dtype == np.float64 and f.shape == (t.size, 12)
    ref_5m = klines("BTCUSDT", "5m")["open_time"]
    np.testing.assert_array_equal(
        t, ref_5m
    )  # every recorded Binance 5m bar, the partial last excluded
    late = f[200:]
    assert np.isfinite(late[:, [0, 1, 2, 6, 7, 8, 9, 10, 11]]).all()
    assert set(np.unique(late[:, 2])) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert ((late[:, 7] >= 0) & (late[:, 7] <= 100)).all() and (late[:, 8] > 0).all()
    assert (np.abs(late[:, 6]) <= 1).all() and (late[:, 6] != 0).any()


def test_engine_fed_minute_by_minute_equals_batch_for_every_decision_bar_of_all_symbols():
    """The live engine (one 1m bar at a time, five symbols together, as the brain runs) emits
    exactly the batch rows, bit for bit, for every decision bar of the bundled data. Because the
    engine had not been given any later bar when it emitted row t, this also proves the batch
    row t depends on nothing after the end of bar t."""
    series = [klines(s) for s in SYMBOLS_1M]
    got = _feed(FeatureEngine(len(series)), series)
    for i, s in enumerate(series):
        t, f, _ = feature_matrix(*_cols(s))
        mine = [(ts, row) for sym, ts, row in got if sym == i]
        assert [ts for ts, _ in mine] == t.tolist()
        np.testing.assert_array_equal(np.array([row for _, row in mine]), f)


def test_feature_matrix_truncated_at_random_bars_reproduces_full_rows():
    """Truncated-batch check: for 40 random decision bars t, the batch over data ending at the
    end of t gives the same row t as the batch over everything (no whole-series statistic, no
    future bar used)."""
    b = klines("ETHUSDT")
    t_full, f_full, _ = feature_matrix(*_cols(b))
    rng = np.random.default_rng(7)
    for k in rng.choice(np.arange(50, t_full.size), size=40, replace=False):
        end = np.searchsorted(b["open_time"], t_full[k] + 5 * MIN)
        t_cut, f_cut, _ = feature_matrix(*_cols(b, slice(0, end)))
        assert t_cut[-1] == t_full[k]
        np.testing.assert_array_equal(f_cut[-1], f_full[k])


def test_feature_matrix_rows_unchanged_when_the_future_is_rewritten():
    """Perturbation check: replacing every bar after bar t by different prices changes no row
    up to t."""
    b = klines("SOLUSDT")
    cols = _cols(b, slice(0, 20_000))
    t0, f0, _ = feature_matrix(*cols)
    cut = 12_345
    rng = np.random.default_rng(1)
    noisy = [c.copy() for c in cols]
    scale = rng.uniform(0.9, 1.1, size=cols[0].size - cut)
    for j in (1, 2, 3, 4):
        noisy[j][cut:] *= scale
    noisy[2][cut:] = np.maximum.reduce([noisy[1][cut:], noisy[2][cut:], noisy[4][cut:]])
    noisy[3][cut:] = np.minimum.reduce([noisy[1][cut:], noisy[3][cut:], noisy[4][cut:]])
    _, f1, _ = feature_matrix(*noisy)
    done = t0 + 5 * MIN <= cols[0][cut]
    np.testing.assert_array_equal(f1[done], f0[done])
    assert not np.array_equal(f1[~done], f0[~done], equal_nan=True)


@pytest.mark.parametrize("tf", ["1m", "15m", "1h"])
def test_other_decision_timeframes_engine_equals_batch(tf):
    b = klines("ADAUSDT")
    sl = slice(0, 12_000)
    got = _feed(FeatureEngine(1, decision_tf=tf), [{k: b[k][sl] for k in COLS}])
    t, f, _ = feature_matrix(*_cols(b, sl), decision_tf=tf)
    assert [ts for _, ts, _ in got] == t.tolist()
    np.testing.assert_array_equal(np.array([r for *_, r in got]), f)
    step = {"1m": MIN, "15m": 15 * MIN, "1h": 60 * MIN}[tf]
    assert (t % step == 0).all()


def test_real_gap_no_rows_inside_and_rows_resume_after():
    b = klines("BTCUSDT")
    t, _, _ = feature_matrix(*_cols(b))
    gap_start, gap_end = 1679661600000, 1679666400000  # 2023-03-24 12:40 .. 14:00 UTC missing
    assert not ((t >= gap_start) & (t < gap_end)).any()
    assert gap_start - 5 * MIN in t and gap_end in t


def _synthetic(n: int = 400) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    o = np.r_[100.0, c[:-1]]
    h = np.maximum(o, c) * 1.0005
    lo = np.minimum(o, c) * 0.9995
    return [np.arange(n, dtype=np.int64) * MIN, o, h, lo, c, rng.uniform(1, 5, n)]


def test_missing_last_minute_decision_bar_emitted_late_by_next_minute_in_both_paths():
    cols = _synthetic()
    keep = np.ones(cols[0].size, bool)
    keep[[104, 209]] = False  # last minute of the 5m bars at 100 and 205 missing
    cols = [c[keep] for c in cols]
    t, _, _ = feature_matrix(*cols)
    assert 100 * MIN in t and 205 * MIN in t
    engine = FeatureEngine(1)
    emitted_at = {}
    for i in range(cols[0].size):
        rows = engine.update(np.array([0]), *(c[i : i + 1] for c in cols))
        for j in range(rows.features.shape[0]):
            emitted_at[int(rows.decision_open_time_ms[j])] = int(cols[0][i])
    assert emitted_at[100 * MIN] == 105 * MIN  # known closed only when minute 105 arrived
    # A series that ends inside an unfinished bar does not emit it.
    t_cut, _, _ = feature_matrix(*(c[cols[0] < 104 * MIN] for c in cols))
    assert t_cut[-1] == 95 * MIN


def test_features_are_scale_free_under_exact_price_and_volume_rescaling():
    cols = _cols(klines("DOGEUSDT"), slice(0, 15_000))
    _, f, _ = feature_matrix(*cols)
    scaled = [cols[0], *(c * 1024.0 for c in cols[1:5]), cols[5] * 8.0]
    _, g, _ = feature_matrix(*scaled)
    np.testing.assert_allclose(g, f, rtol=1e-12, atol=1e-12)


def test_engine_rejects_bad_bars_and_keeps_state_consistent():
    cols = _synthetic(200)
    engine = FeatureEngine(2)
    rows = []
    for i in range(cols[0].size):
        r = engine.update(np.array([0]), *(c[i : i + 1] for c in cols))
        rows.extend(r.features.copy())
        if i == 50:
            with pytest.raises(BarInputError, match="not after that symbol's previous minute"):
                engine.update(np.array([0]), *(c[i : i + 1] for c in cols))
            with pytest.raises(BarInputError, match="symbol index 5"):
                engine.update(np.array([5]), *(c[i + 1 : i + 2] for c in cols))
            with pytest.raises(BarInputError, match="close has a non-finite"):
                bad = [c[i + 1 : i + 2].copy() for c in cols]
                bad[4][0] = np.nan
                engine.update(np.array([0]), *bad)
    _, f, _ = feature_matrix(*cols)
    np.testing.assert_array_equal(np.array(rows), f)


def test_engine_warm_up_then_live_equals_batch():
    b = klines("XRPUSDT")
    cols = _cols(b, slice(0, 8_000))
    engine = FeatureEngine(3)
    engine.warm_up(2, *(c[:6_000] for c in cols))
    got = []
    for i in range(6_000, 8_000):
        r = engine.update(np.array([2]), *(c[i : i + 1] for c in cols))
        got.extend(zip(r.decision_open_time_ms.tolist(), r.features.copy(), strict=True))
    t, f, _ = feature_matrix(*cols)
    k = np.searchsorted(t, got[0][0])
    assert [ts for ts, _ in got] == t[k:].tolist()
    np.testing.assert_array_equal(np.array([r for _, r in got]), f[k:])


def test_feature_matrix_and_params_bad_input_raise():
    cols = _synthetic(20)
    with pytest.raises(BarInputError, match="decision_tf must be one of"):
        feature_matrix(*cols, decision_tf="4h")
    with pytest.raises(BarInputError, match="not strictly increasing"):
        feature_matrix(cols[0][::-1], *cols[1:])
    with pytest.raises(BarInputError, match="volume has shape"):
        feature_matrix(*cols[:5], cols[5][:-1])
    with pytest.raises(ValueError, match=r"swing_length_1d must be an integer in 1\.\.32"):
        FeatureParams(swing_length_1d=0)
    with pytest.raises(ValueError, match="n_symbols"):
        FeatureEngine(0)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_gaps_engine_equals_batch_and_truncation_keeps_rows(seed):
    """Synthetic minutes with 3% random missing minutes and two long gaps (so decision, 15m and
    1h bars close late, on the next existing minute): the live engine still equals the batch,
    and truncating the data right after any bar whose last minute exists reproduces its row."""
    rng = np.random.default_rng(seed)
    cols = _synthetic(6000)
    keep = rng.random(cols[0].size) > 0.03
    keep[2003:2071] = False
    keep[4402:4450] = False
    cols = [c[keep] for c in cols]
    t, f, _ = feature_matrix(*cols)
    got = _feed(FeatureEngine(1), [dict(zip(COLS, cols, strict=True))])
    assert [ts for _, ts, _ in got] == t.tolist()
    np.testing.assert_array_equal(np.array([r for *_, r in got]), f)
    minutes = set(cols[0].tolist())
    closed_on_time = [k for k in range(t.size) if t[k] + 4 * MIN in minutes]
    for k in rng.choice(closed_on_time, size=15, replace=False):
        end = np.searchsorted(cols[0], t[k] + 5 * MIN)
        t_cut, f_cut, _ = feature_matrix(*(c[:end] for c in cols))
        assert t_cut[-1] == t[k]
        np.testing.assert_array_equal(f_cut[-1], f[k])
