"""Walk-forward splits never let a training label see the validation window; metrics are right."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.ml.validation import (
    ValidationError,
    ValidationMetrics,
    purged_train_mask,
    selection_metrics,
    spearman,
    walk_forward_splits,
)

horizons = st.integers(10, 300).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=n, max_size=n),
        st.lists(st.integers(0, 800), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(
    rows=horizons,
    n_folds=st.integers(1, 6),
    embargo=st.integers(0, 500),
    future=st.booleans(),
)
def test_walk_forward_property_no_train_horizon_overlaps_window_or_embargo(
    rows, n_folds, embargo, future
):
    entry = np.array(rows[0], dtype=np.int64)
    exit_ = entry + np.array(rows[1], dtype=np.int64)
    if len(entry) < n_folds + 1:
        return
    splits = walk_forward_splits(entry, exit_, n_folds, embargo, use_future_rows=future)
    for s in splits:
        assert len(np.intersect1d(s.train, s.valid)) == 0
        # the window covers every validation label's whole horizon
        assert entry[s.valid].min() == s.window_start_ms
        assert exit_[s.valid].max() == s.window_end_ms
        # purge: no training horizon [entry, exit] touches [window_start, window_end]
        te, tx = entry[s.train], exit_[s.train]
        assert not np.any((te <= s.window_end_ms) & (tx >= s.window_start_ms))
        # embargo: nothing starts within embargo after the window
        assert not np.any((te > s.window_end_ms) & (te <= s.window_end_ms + embargo))
        if not future:
            assert (tx < s.window_start_ms).all()
    # walk-forward: validation blocks move forward in time and do not overlap
    starts = [s.window_start_ms for s in splits]
    assert starts == sorted(starts)
    for a, b in itertools.pairwise(splits):
        assert len(np.intersect1d(a.valid, b.valid)) == 0


def test_walk_forward_purges_rows_whose_trade_runs_into_the_window():
    entry = np.arange(10, dtype=np.int64) * 100
    exit_ = entry + 50
    exit_[3] = 900  # row 3's trade is still open when the last window starts
    last = walk_forward_splits(entry, exit_, n_folds=4)[-1]
    assert 3 not in last.train
    assert set(last.train) == {0, 1, 2, 4, 5, 6, 7}


def test_purged_mask_embargo_excludes_rows_just_after_window():
    entry = np.array([0, 100, 200, 260, 400])
    exit_ = entry + 10
    mask = purged_train_mask(entry, exit_, window_start_ms=100, window_end_ms=210, embargo_ms=100)
    assert list(mask) == [True, False, False, False, True]


def test_walk_forward_rows_sharing_an_entry_time_stay_in_one_block():
    entry = np.repeat(np.arange(6, dtype=np.int64) * 1000, 5)
    splits = walk_forward_splits(entry, entry + 10, n_folds=3)
    for s in splits:
        block_times = set(entry[s.valid])
        assert not block_times & set(entry[s.train])


def test_walk_forward_bad_input_raises():
    with pytest.raises(ValidationError, match="before its entry"):
        walk_forward_splits(np.array([5, 6, 7]), np.array([4, 7, 8]), n_folds=1)
    with pytest.raises(ValidationError, match="cannot make"):
        walk_forward_splits(np.array([1, 2]), np.array([3, 4]), n_folds=4)
    with pytest.raises(ValidationError, match="same length"):
        walk_forward_splits(np.array([1, 2, 3]), np.array([3, 4]), n_folds=1)


def test_selection_metrics_by_hand():
    pred = np.array([0.5, 0.2, -0.1, 0.3, 0.0])
    net = np.array([1.0, -0.5, -1.0, 0.4, 0.2])
    m = selection_metrics(pred, net, threshold_pct=0.1)
    assert (m.n_candidates, m.n_taken) == (5, 3)
    assert m.mean_net_taken == pytest.approx((1.0 - 0.5 + 0.4) / 3)
    assert m.mean_net_all == pytest.approx(0.02)
    assert m.hit_rate_taken == pytest.approx(2 / 3)
    assert m.hit_rate_all == pytest.approx(3 / 5)
    sd = np.std([1.0, -0.5, 0.4], ddof=1)
    assert m.t_stat_taken == pytest.approx(m.mean_net_taken / (sd / np.sqrt(3)))


def test_selection_metrics_nothing_taken_is_nan_not_error():
    m = selection_metrics(np.array([-1.0, -2.0]), np.array([0.1, 0.2]), 0.05)
    assert m.n_taken == 0 and np.isnan(m.mean_net_taken)
    d = m.to_dict()
    assert d["mean_net_taken"] is None
    assert ValidationMetrics.from_dict(d).n_taken == 0


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr  # test-only oracle

    rng = np.random.default_rng(3)
    a = rng.integers(0, 10, 200).astype(float)
    b = a + rng.integers(0, 5, 200)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_walk_forward_evaluate_leaves_out_folds_too_small_to_fit():
    from ml_synthetic import NAMES, synthetic_rows

    from aegis.ml.model import ModelParams
    from aegis.ml.validation import walk_forward_evaluate

    x, y, entry, exit_ = synthetic_rows(500, seed=1, signal=True)
    params = ModelParams(num_boost_round=10, min_data_in_leaf=40)  # needs 80 training rows
    res = walk_forward_evaluate(x, y, entry, exit_, NAMES, 0.05, params, n_folds=4)
    assert [f.n_train for f in res.folds] == sorted(f.n_train for f in res.folds)
    assert all(f.n_train >= 80 for f in res.folds) and len(res.folds) < 4
    assert res.folds[-1].window_end_ms == exit_[res.holdout_index].max()
    with pytest.raises(ValidationError, match="last fold"):
        walk_forward_evaluate(x[:100], y[:100], entry[:100], exit_[:100], NAMES, 0.05, params)
