"""Position sizing: the formulas, the caps, and properties that must hold for any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.risk.sizing import (
    SIZING_METHODS,
    SizingInputError,
    SizingPolicy,
    kelly_fraction_of_equity,
    size_positions,
)

WIDE = SizingPolicy(max_position_pct=100, max_symbol_exposure_pct=100, max_open_positions=100)


def one(policy, **kw):
    args = dict(
        equity=10_000.0,
        predicted_return_pct=np.array([0.3]),
        symbol_id=np.array([1]),
        symbol_exposure=np.array([0.0]),
        open_positions=0,
        policy=policy,
    )
    args.update(kw)
    return size_positions(**args)


def test_fixed_fractional_notional_is_equity_times_risk_over_stop():
    res = one(WIDE, stop_pct=1.0)
    assert res.notional[0] == pytest.approx(10_000 * 0.005 / 0.01)  # 5,000: a stop loses 50 = 0.5%


def test_fixed_fractional_capped_by_max_position_pct():
    res = one(SizingPolicy(max_position_pct=10), stop_pct=1.0)
    assert res.notional[0] == pytest.approx(1_000)


def test_kelly_formula_quarter_kelly_of_risk():
    f = kelly_fraction_of_equity(np.array([0.5]), np.array([1.0]), np.array([2.0]))
    assert f[0] == pytest.approx(0.25)  # 0.5 - 0.5/2
    policy = SizingPolicy(method="kelly", max_position_pct=100, max_symbol_exposure_pct=100)
    res = one(policy, win_prob=0.5, stop_pct=4.0, take_pct=8.0)
    # risk 0.25 * 0.25 = 6.25% of equity on a 4% stop -> 156.25% of equity, capped at 100%
    assert res.notional[0] == pytest.approx(10_000)
    res = one(policy, win_prob=0.36, stop_pct=4.0, take_pct=8.0)
    # f = 0.36 - 0.64/2 = 0.04; quarter = 1% risk on a 4% stop -> 25% of equity
    assert res.notional[0] == pytest.approx(2_500)


def test_kelly_negative_edge_gives_zero():
    res = one(SizingPolicy(method="kelly"), win_prob=0.3, stop_pct=1.0, take_pct=2.0)
    assert res.notional[0] == 0.0  # f = 0.3 - 0.7/2 < 0


def test_kelly_without_win_probability_gives_zero():
    res = one(SizingPolicy(method="kelly"))
    assert res.notional[0] == 0.0


def test_atr_stop_distance_from_volatility_keeps_reward_ratio():
    policy = SizingPolicy(method="atr", atr_stop_multiple=2.0, max_position_pct=100,
                          max_symbol_exposure_pct=100)  # fmt: skip
    res = one(policy, atr_pct=0.8, stop_pct=1.0, take_pct=3.0)
    assert res.stop_pct[0] == pytest.approx(1.6)
    assert res.take_pct[0] == pytest.approx(4.8)
    assert res.notional[0] == pytest.approx(10_000 * 0.005 / 0.016)


@pytest.mark.parametrize("atr", [np.nan, 0.0, 1e-9, -0.5])
def test_atr_missing_or_degenerate_gives_zero(atr):
    res = one(SizingPolicy(method="atr"), atr_pct=atr)
    assert res.notional[0] == 0.0


def test_sizing_policy_from_settings_matches_settings():
    from aegis.config import Settings

    s = Settings().replace(sizing="kelly", kelly_fraction=0.5, max_open_positions=3)
    policy = SizingPolicy.from_settings(s)
    assert (policy.method, policy.kelly_fraction, policy.max_open_positions) == ("kelly", 0.5, 3)
    assert policy.risk_per_trade_pct == s.risk_per_trade_pct
    assert policy.max_symbol_exposure_pct == s.max_symbol_exposure_pct


@pytest.mark.parametrize("pred", [0.0, -0.2, np.nan])
def test_sizing_non_positive_prediction_gives_zero(pred):
    assert one(WIDE, predicted_return_pct=np.array([pred])).notional[0] == 0.0


def test_sizing_symbol_exposure_cap_counts_what_is_held():
    res = one(SizingPolicy(max_symbol_exposure_pct=10), symbol_exposure=np.array([700.0]))
    assert res.notional[0] == pytest.approx(300.0)
    res = one(SizingPolicy(max_symbol_exposure_pct=10), symbol_exposure=np.array([1_200.0]))
    assert res.notional[0] == 0.0


def test_sizing_free_slots_go_to_highest_predictions():
    policy = SizingPolicy(max_open_positions=3)
    res = size_positions(
        10_000.0,
        np.array([0.1, 0.5, 0.3, 0.2, 0.4]),
        np.arange(5),
        np.zeros(5),
        open_positions=1,
        policy=policy,
    )
    assert list(res.notional > 0) == [False, True, False, False, True]


def test_sizing_held_symbol_takes_no_new_slot():
    res = size_positions(
        10_000.0,
        np.array([0.1, 0.5]),
        np.array([7, 8]),
        np.array([200.0, 0.0]),
        open_positions=1,
        policy=SizingPolicy(max_open_positions=2),
    )
    assert (res.notional > 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"equity": -1.0},
        {"equity": float("nan")},
        {"symbol_id": np.array([1, 1]), "predicted_return_pct": np.array([0.1, 0.2]),
         "symbol_exposure": np.zeros(2)},
        {"symbol_exposure": np.array([-5.0])},
        {"symbol_exposure": np.zeros(3)},
        {"open_positions": -1},
    ],
)  # fmt: skip
def test_sizing_bad_input_raises(kwargs):
    with pytest.raises(SizingInputError):
        one(SizingPolicy(), **kwargs)


def test_sizing_policy_unknown_method_raises():
    with pytest.raises(SizingInputError, match="not one of"):
        SizingPolicy(method="martingale")


batch = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1, 3) | st.just(float("nan")), min_size=n, max_size=n),
        st.lists(st.floats(0, 20_000), min_size=n, max_size=n),
        st.lists(st.floats(0.05, 10), min_size=n, max_size=n),
        st.lists(st.floats(0.01, 0.99), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 5.0), min_size=n, max_size=n),
    )
)
policies = st.builds(
    SizingPolicy,
    method=st.sampled_from(SIZING_METHODS),
    risk_per_trade_pct=st.floats(0.05, 5),
    kelly_fraction=st.floats(0.05, 1),
    max_position_pct=st.floats(0.5, 100),
    max_open_positions=st.integers(0, 8),
    max_symbol_exposure_pct=st.floats(0.5, 100),
)


def _run(equity, data, policy, open_positions):
    pred, exposure, stop, p, atr = (np.array(x, dtype=np.float64) for x in data)
    return size_positions(
        equity, pred, np.arange(len(pred)), exposure, open_positions, policy,
        stop_pct=stop, take_pct=stop * 2, win_prob=p, atr_pct=atr,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(equity=st.floats(0, 1e7), data=batch, policy=policies, open_positions=st.integers(0, 10))
def test_sizing_property_never_above_caps_and_zero_without_edge(
    equity, data, policy, open_positions
):
    res = _run(equity, data, policy, open_positions)
    pred, exposure = np.array(data[0]), np.array(data[1])
    n = res.notional
    assert np.isfinite(n).all() and (n >= 0).all()
    assert (n <= equity * policy.max_position_pct / 100 * (1 + 1e-12)).all()
    assert (
        exposure + n
        <= np.maximum(equity * policy.max_symbol_exposure_pct / 100, exposure) * (1 + 1e-12)
    ).all()
    new_positions = int(((n > 0) & (exposure == 0)).sum())
    assert new_positions <= max(policy.max_open_positions - open_positions, 0)
    assert (n[~(pred > 0)] == 0).all()
    if policy.method == "kelly":
        f = kelly_fraction_of_equity(np.array(data[3]), np.array(data[2]), np.array(data[2]) * 2)
        assert (n[f <= 0] == 0).all()


@settings(max_examples=300, deadline=None)
@given(equity=st.floats(0, 1e6), factor=st.floats(1, 50), data=batch, policy=policies,
       open_positions=st.integers(0, 10))  # fmt: skip
def test_sizing_property_monotone_in_equity(equity, factor, data, policy, open_positions):
    low = _run(equity, data, policy, open_positions).notional
    high = _run(equity * factor, data, policy, open_positions).notional
    assert (high >= low * (1 - 1e-12)).all()


@settings(max_examples=300, deadline=None)
@given(equity=st.floats(0, 1e7), data=batch, stop=st.floats(0.0, 120.0) | st.just(float("nan")),
       policy=policies.filter(lambda p: p.method != "atr"),  # atr: the stop is per row anyway
       open_positions=st.integers(0, 10))  # fmt: skip
def test_sizing_scalar_exits_size_exactly_as_per_row_exits(
    equity, data, stop, policy, open_positions
):
    # Scalar stop/take take a shortcut (one Python float instead of a row each): same bits.
    pred, exposure = np.array(data[0]), np.array(data[1])
    args = (equity, pred, np.arange(len(pred)), exposure, open_positions, policy)
    k = len(pred)
    win = np.array(data[3])
    scalar = size_positions(*args, stop_pct=stop, take_pct=stop * 2, win_prob=win)
    rows = size_positions(*args, stop_pct=np.full(k, stop), take_pct=np.full(k, stop * 2),
                          win_prob=win)  # fmt: skip
    for a, b in ((scalar.notional, rows.notional), (scalar.stop_pct, rows.stop_pct),
                 (scalar.take_pct, rows.take_pct)):  # fmt: skip
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
