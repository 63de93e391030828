"""Paper trades equal the brain's labels: same entry bar, same exit, same net return.

Two independent references: ``aegis.ml.labels.label_candidates`` (the brain's labeller) and a
plain loop over ``exit_check`` written here, both run on the same bars as the exchange.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paper_helpers import BTC, MIN, exchange, intent

from aegis.ml.labels import ExitRules, label_candidates
from aegis.paper.events import IntentRejected, TradeClosed
from aegis.paper.exits import EXIT_NONE, exit_check, trade_return_pct

DECISION_MS = 5 * MIN


def reference_loop(t, o, h, lo, c, wanted, stop, take, trail, hold, fee, slip):
    """Return (entry time, exit time, exit price, reason, net) of one trade, or None if open."""
    idx = int(np.searchsorted(t, wanted))
    if idx >= len(t):
        return None
    entry, peak = o[idx], o[idx]
    for j in range(idx, len(t)):
        held = (t[j] - t[idx]) // MIN + 1
        reason, price = exit_check(
            entry, peak, o[j], h[j], lo[j], c[j], held, stop, take, trail, hold
        )
        if reason != EXIT_NONE:
            return (
                t[idx],
                t[j] + MIN,
                price,
                reason,
                trade_return_pct(entry, price, fee, slip)[1],
            )
        peak = max(peak, h[j])
    return None


def paper_trades(t, o, h, lo, c, decisions, rules: ExitRules):
    ex = exchange(
        cash=1e9,
        commission_pct=rules.commission_pct,
        slippage_pct=rules.slippage_pct,
        trailing_pct=rules.trailing_pct,
        max_hold_minutes=rules.max_hold_minutes,
    )
    for k, d in enumerate(decisions):
        ex.submit(intent(k + 1, notional=1_000.0, decision_time_ms=int(d),
                         stop_pct=rules.stop_pct, take_pct=rules.take_pct))  # fmt: skip
    trades = {}
    for row in zip(t, o, h, lo, c, strict=True):
        for e in ex.on_bar(BTC, int(row[0]), *map(float, row[1:])):
            assert not isinstance(e, IntentRejected), e
            if isinstance(e, TradeClosed):
                trades[e.trade.intent_id - 1] = e.trade
    return trades


def assert_trades_equal_labels(t, o, h, lo, c, decisions, rules):
    trades = paper_trades(t, o, h, lo, c, decisions, rules)
    labels = label_candidates(t, o, h, lo, c, decisions + DECISION_MS, rules)
    assert set(trades) == set(np.flatnonzero(labels.complete).tolist())
    for k, wanted in enumerate(decisions + DECISION_MS):
        ref = reference_loop(t, o, h, lo, c, wanted, rules.stop_pct, rules.take_pct,
                             rules.trailing_pct, rules.max_hold_minutes, rules.commission_pct,
                             rules.slippage_pct)  # fmt: skip
        if k not in trades:
            assert ref is None
            continue
        tr = trades[k]
        assert (tr.entry_at_ms, tr.exit_at_ms, tr.close_price, tr.exit_code) == ref[:4]
        assert tr.net_return_pct == ref[4] == labels.net_pct[k]
        assert tr.gross_return_pct == labels.gross_pct[k]
        assert tr.exit_at_ms == labels.exit_time_ms[k] and tr.entry_price == labels.entry_price[k]
        fills = trade_return_pct(tr.entry_price, tr.close_price, tr.commission_pct, tr.slippage_pct)
        assert (tr.gross_return_pct, tr.net_return_pct) == fills
    return trades


@st.composite
def bar_paths(draw):
    n = draw(st.integers(8, 60))
    steps = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))  # >1 = missing bars
    moves = draw(st.lists(st.floats(-0.02, 0.02), min_size=n, max_size=n))
    wicks = draw(
        st.lists(st.tuples(st.floats(0, 0.01), st.floats(0, 0.01)), min_size=n, max_size=n)
    )
    gaps = draw(st.lists(st.floats(-0.01, 0.01), min_size=n, max_size=n))
    t = 1_679_616_000_000 + np.cumsum(np.array(steps, dtype=np.int64)) * MIN
    o, c = np.empty(n), np.empty(n)
    price = 100.0
    for i in range(n):
        o[i] = price * (1 + gaps[i])
        c[i] = o[i] * (1 + moves[i])
        price = c[i]
    h = np.maximum(o, c) * (1 + np.array([w[0] for w in wicks]))
    lo = np.minimum(o, c) * (1 - np.array([w[1] for w in wicks]))
    return t, o, h, lo, c


rules_st = st.builds(
    ExitRules,
    stop_pct=st.floats(0.1, 5.0),
    take_pct=st.floats(0.1, 5.0),
    trailing_pct=st.one_of(st.just(0.0), st.floats(0.1, 3.0)),
    max_hold_minutes=st.integers(0, 40),
    commission_pct=st.floats(0.0, 0.2),
    slippage_pct=st.floats(0.0, 0.1),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=bar_paths(), rules=rules_st, offsets=st.lists(st.integers(-10, 60), min_size=1, max_size=6)
)
def test_paper_trades_random_bars_equal_labels_and_reference_loop(path, rules, offsets):
    t, o, h, lo, c = path
    decisions = np.array([t[0] + k * MIN for k in offsets], dtype=np.int64)
    assert_trades_equal_labels(t, o, h, lo, c, decisions, rules)


def test_paper_trades_real_btc_day_with_gap_equal_labels(data_dir: Path):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", skiprows=1)
    day = 1_679_616_000_000  # 2023-03-24 UTC: holds the 12:40-13:59 hole and flat bars
    rows = raw[(raw[:, 0] >= day) & (raw[:, 0] < day + 86_400_000)]
    t = rows[:, 0].astype(np.int64)
    assert len(t) < 1440  # the hole is really there
    decisions = np.arange(day, day + 86_400_000 - DECISION_MS, 15 * MIN, dtype=np.int64)
    for rules in (ExitRules(), ExitRules(0.3, 0.5, 0.2, 90, 0.1, 0.05)):
        trades = assert_trades_equal_labels(t, *rows[:, 1:5].T, decisions, rules)
        assert len(trades) > 50
