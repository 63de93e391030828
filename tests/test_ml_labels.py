"""Labels are the net % return of exactly the trade the executor's exit rules would make."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.ml.labels import (
    ExitRules,
    LabelInputError,
    entry_times_for,
    label_candidates,
)
from aegis.paper.exits import EXIT_NONE, EXIT_STOP, EXIT_TAKE, EXIT_TIME, EXIT_TRAILING

T0 = 1_680_000_000_000  # a minute boundary
MIN = 60_000
NO_FEES = {"commission_pct": 0.0, "slippage_pct": 0.0}


def bars(rows, times=None):
    """Hand-made 1m bars from (open, high, low, close) tuples, one minute apart."""
    a = np.array(rows, dtype=np.float64)
    t = np.array(times if times is not None else [T0 + i * MIN for i in range(len(rows))], np.int64)
    return t, a[:, 0], a[:, 1], a[:, 2], a[:, 3]


def net_by_hand(entry, exit_, fee_pct, slip_pct):
    buy = entry * (1 + slip_pct / 100) * (1 + fee_pct / 100)
    sell = exit_ * (1 - slip_pct / 100) * (1 - fee_pct / 100)
    return (sell / buy - 1) * 100


def one(series, rules, entry_time=T0):
    lab = label_candidates(*series, np.array([entry_time]), rules)
    return {k: getattr(lab, k)[0] for k in lab.__dataclass_fields__}


def test_label_stop_hit_exits_at_stop_level_net_of_fees():
    s = bars([(100, 100.5, 99.5, 100), (100, 100.2, 98.5, 99)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, commission_pct=0.1, slippage_pct=0.0))
    assert r["reason"] == EXIT_STOP
    assert r["exit_price"] == pytest.approx(99.0)
    assert r["gross_pct"] == pytest.approx(-1.0)
    # 99 * 0.999 / (100 * 1.001) - 1 = -1.19780...%
    assert r["net_pct"] == pytest.approx(net_by_hand(100, 99, 0.1, 0.0))
    assert r["net_pct"] == pytest.approx(-1.1978021978, abs=1e-9)
    assert r["exit_time_ms"] == T0 + 2 * MIN
    assert r["complete"]


def test_label_take_profit_exits_at_take_level():
    s = bars([(100, 101, 99.6, 100.5), (100.5, 102.3, 100.1, 102)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, commission_pct=0.1, slippage_pct=0.05))
    assert r["reason"] == EXIT_TAKE
    assert r["exit_price"] == pytest.approx(102.0)
    assert r["gross_pct"] == pytest.approx(2.0)
    assert r["net_pct"] == pytest.approx(net_by_hand(100, 102, 0.1, 0.05))
    assert r["net_pct"] < r["gross_pct"] - 0.29  # two commissions + two slippages


def test_label_bar_touching_stop_and_take_counts_as_stop():
    s = bars([(100, 100.3, 99.8, 100), (100, 103, 98, 101)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, **NO_FEES))
    assert r["reason"] == EXIT_STOP
    assert r["net_pct"] == pytest.approx(-1.0)


def test_label_gap_below_stop_fills_at_open_not_at_stop():
    s = bars([(100, 100.2, 99.9, 100), (97, 97.5, 96.5, 97.2)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, commission_pct=0.1, slippage_pct=0.0))
    assert r["reason"] == EXIT_STOP
    assert r["exit_price"] == pytest.approx(97.0)
    assert r["gross_pct"] == pytest.approx(-3.0)
    assert r["net_pct"] == pytest.approx(net_by_hand(100, 97, 0.1, 0.0))


def test_label_gap_above_take_fills_at_open():
    s = bars([(100, 100.2, 99.9, 100), (103, 103.5, 102.8, 103.2)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, **NO_FEES))
    assert (r["reason"], r["exit_price"]) == (EXIT_TAKE, 103.0)


def test_label_time_exit_fills_at_close_of_last_held_bar():
    flat = [(100, 100.2, 99.9, 100.1)] * 5
    s = bars([*flat[:2], (100, 100.2, 99.9, 100.4), *flat[3:]])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, max_hold_minutes=3, commission_pct=0.1))
    assert r["reason"] == EXIT_TIME
    assert r["exit_price"] == pytest.approx(100.4)  # close of the 3rd held bar
    assert r["exit_time_ms"] == T0 + 3 * MIN
    assert r["net_pct"] == pytest.approx(net_by_hand(100, 100.4, 0.1, 0.02))


def test_label_time_exit_counts_minutes_across_a_data_gap():
    # bars at minutes 0, 1, then a hole, then 10: with a 5-minute hold the bar at minute 10 exits
    times = [T0, T0 + MIN, T0 + 10 * MIN, T0 + 11 * MIN]
    s = bars([(100, 100.2, 99.9, 100)] * 3 + [(100, 100.1, 99.9, 100)], times)
    r = one(s, ExitRules(stop_pct=1, take_pct=2, max_hold_minutes=5, **NO_FEES))
    assert r["reason"] == EXIT_TIME
    assert r["exit_time_ms"] == T0 + 11 * MIN


def test_label_trailing_stop_follows_previous_highs():
    s = bars(
        [
            (100, 103, 99.8, 102.5),  # entry bar: peak becomes 103 only after this bar
            (102.5, 102.8, 101.5, 102),  # trail = 103 * 0.99 = 101.97 -> hit
        ]
    )
    r = one(s, ExitRules(stop_pct=5, take_pct=10, trailing_pct=1, **NO_FEES))
    assert r["reason"] == EXIT_TRAILING
    assert r["exit_price"] == pytest.approx(101.97)
    assert r["gross_pct"] == pytest.approx(1.97)


def test_label_trailing_stop_never_uses_the_same_bars_high():
    # the entry bar rallies to 103 and falls to 101: its own high must not arm the trail
    s = bars([(100, 103, 101, 101.5)])
    r = one(s, ExitRules(stop_pct=5, take_pct=10, trailing_pct=1, **NO_FEES))
    assert r["reason"] == EXIT_NONE
    assert not r["complete"]


def test_label_horizon_not_passed_is_incomplete_and_nan():
    s = bars([(100, 100.5, 99.5, 100)] * 3)
    r = one(s, ExitRules(max_hold_minutes=240))
    assert not r["complete"]
    assert np.isnan(r["net_pct"]) and np.isnan(r["gross_pct"])
    assert r["exit_time_ms"] == -1
    assert r["entry_price"] == 100


def test_label_entry_is_next_bar_open_after_decision_bar_close():
    s = bars([(100, 100.2, 99.9, 100), (101, 101.2, 100.9, 101), (101, 104, 100.9, 103)])
    decided = entry_times_for(np.array([T0 - 4 * MIN]), "5m")  # 5m bar [T0-4m, T0+1m)
    lab = label_candidates(*s, decided, ExitRules(stop_pct=1, take_pct=2, **NO_FEES))
    assert lab.entry_index[0] == 1 and lab.entry_price[0] == 101
    assert lab.exit_price[0] == pytest.approx(103.02)


def test_label_entry_inside_a_gap_uses_first_bar_after_it():
    times = [T0, T0 + 10 * MIN, T0 + 11 * MIN]
    s = bars([(100, 100, 100, 100), (105, 105.5, 104.9, 105), (105, 107.5, 104.9, 107)], times)
    lab = label_candidates(
        *s, np.array([T0 + 3 * MIN]), ExitRules(stop_pct=1, take_pct=2, **NO_FEES)
    )
    assert lab.entry_time_ms[0] == T0 + 10 * MIN
    assert lab.reason[0] == EXIT_TAKE and lab.exit_price[0] == pytest.approx(107.1)


def test_label_decision_on_last_bar_has_no_entry_yet():
    s = bars([(100, 100.2, 99.9, 100)])
    lab = label_candidates(*s, np.array([T0 + MIN]), ExitRules())
    assert lab.entry_index[0] == -1 and not lab.complete[0] and np.isnan(lab.entry_price[0])


def test_label_without_fees_net_equals_gross():
    s = bars([(100, 100.5, 99.5, 100), (100, 102.5, 99.5, 101)])
    r = one(s, ExitRules(stop_pct=1, take_pct=2, **NO_FEES))
    assert r["net_pct"] == pytest.approx(r["gross_pct"])


def test_label_many_candidates_keep_their_order():
    s = bars([(100, 100.1, 99.9, 100), (100, 102.5, 99.9, 102), (102, 102, 99, 99.5)])
    lab = label_candidates(
        *s, np.array([T0 + 2 * MIN, T0]), ExitRules(stop_pct=1, take_pct=2, **NO_FEES)
    )
    assert list(lab.reason) == [EXIT_STOP, EXIT_TAKE]
    assert lab.reason_names() == ["stop_loss", "take_profit"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t, o, h, lo, c: (t[::-1].copy(), o, h, lo, c), "strictly increasing"),
        (lambda t, o, h, lo, c: (t, o[:-1], h, lo, c), "same length"),
        (lambda t, o, h, lo, c: (t, np.where(o > 0, np.nan, o), h, lo, c), "finite"),
        (lambda t, o, h, lo, c: (t, o, lo - 1, lo, c), "high is below"),
    ],
)
def test_label_bad_bars_raise_clear_error(mutate, message):
    s = bars([(100, 100.5, 99.5, 100)] * 3)
    with pytest.raises(LabelInputError, match=message):
        label_candidates(*mutate(*s), np.array([T0]), ExitRules())


def test_exit_rules_from_settings_are_the_executor_settings():
    from aegis.config import Settings

    s = Settings().replace(stop_loss_pct=1.5, trailing_stop_pct=0.7, commission_pct=0.075)
    r = ExitRules.from_settings(s)
    assert (r.stop_pct, r.take_pct, r.trailing_pct) == (1.5, s.take_profit_pct, 0.7)
    assert (r.max_hold_minutes, r.commission_pct, r.slippage_pct) == (
        s.max_hold_minutes, 0.075, s.slippage_pct,
    )  # fmt: skip


def test_exit_rules_bad_values_raise():
    with pytest.raises(LabelInputError):
        ExitRules(stop_pct=0)
    with pytest.raises(LabelInputError):
        ExitRules(take_pct=-1)
    with pytest.raises(LabelInputError):
        entry_times_for(np.array([T0]), "7m")


def test_label_real_btc_data_every_complete_label_is_consistent(data_dir):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", skiprows=1, max_rows=20_000)
    t = raw[:, 0].astype(np.int64)
    entries = t[::7] + MIN
    rules = ExitRules()
    lab = label_candidates(t, raw[:, 1], raw[:, 2], raw[:, 3], raw[:, 4], entries, rules)
    done = lab.complete
    assert done.mean() > 0.95
    assert (lab.net_pct[done] < lab.gross_pct[done]).all()
    assert (lab.exit_time_ms[done] > lab.entry_time_ms[done]).all()
    # the time exit happens at the first bar held max_hold minutes, even across a data gap
    exit_idx = np.searchsorted(t, lab.exit_time_ms[done] - MIN)
    held_before_exit_bar = t[exit_idx - 1] + MIN - lab.entry_time_ms[done]
    assert (held_before_exit_bar < rules.max_hold_minutes * MIN).all()
    timed = lab.reason[done] == EXIT_TIME
    assert (lab.exit_time_ms[done][timed] - lab.entry_time_ms[done][timed] >= 240 * MIN).all()
    # a stop can only lose at least the stop distance (gaps lose more), a take gains at least take
    stop = lab.reason == EXIT_STOP
    take = lab.reason == EXIT_TAKE
    assert (lab.gross_pct[stop] <= -rules.stop_pct + 1e-9).all()
    assert (lab.gross_pct[take] >= rules.take_pct - 1e-9).all()
    assert stop.any() and take.any() and (lab.reason == EXIT_TIME).any()


def _reference_label(t, o, h, lo, c, wanted, r: ExitRules):
    """Obviously-correct slow walk: the executor's rules, one Python step per bar."""
    from aegis.paper.exits import exit_check, trade_return_pct

    e = next((i for i in range(len(t)) if t[i] >= wanted), None)
    if e is None:
        return None
    peak = o[e]
    for j in range(e, len(t)):
        held = (t[j] - t[e]) // MIN + 1
        reason, px = exit_check(
            o[e], peak, o[j], h[j], lo[j], c[j], held,
            r.stop_pct, r.take_pct, r.trailing_pct, r.max_hold_minutes,
        )  # fmt: skip
        if reason != EXIT_NONE:
            net = trade_return_pct(o[e], px, r.commission_pct, r.slippage_pct)[1]
            return t[e], t[j] + MIN, px, reason, net
        peak = max(peak, h[j])
    return None


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.floats(-0.015, 0.015), min_size=2, max_size=60),
    gaps=st.lists(st.integers(1, 3), min_size=60, max_size=60),
    wanted=st.lists(st.integers(0, 70), min_size=1, max_size=5),
    trailing=st.sampled_from([0.0, 0.5, 1.5]),
    hold=st.integers(0, 30),
)
def test_label_property_matches_slow_reference_walk(steps, gaps, wanted, trailing, hold):
    close = 100.0 * np.cumprod(1.0 + np.array(steps))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(np.array(steps)) * 100 + 0.05
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    t = T0 + np.cumsum(np.array(gaps[: len(close)], dtype=np.int64)) * MIN
    rules = ExitRules(stop_pct=1.0, take_pct=1.5, trailing_pct=trailing, max_hold_minutes=hold)
    entries = T0 + np.array(wanted, dtype=np.int64) * MIN
    lab = label_candidates(t, open_, high, low, close, entries, rules)
    for k, w in enumerate(entries):
        ref = _reference_label(t, open_, high, low, close, w, rules)
        if ref is None:
            assert not lab.complete[k]
            continue
        assert lab.complete[k]
        assert (lab.entry_time_ms[k], lab.exit_time_ms[k], lab.reason[k]) == (
            ref[0],
            ref[1],
            ref[3],
        )
        assert lab.exit_price[k] == ref[2] and lab.net_pct[k] == ref[4]
