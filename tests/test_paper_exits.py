"""Every exit reason of a paper position, bar by bar through exit_check."""

from __future__ import annotations

import pytest
from paper_helpers import BTC, MIN, T0, exchange, intent

from aegis.paper.events import PositionOpened, TradeClosed

ENTRY = T0 + 5 * MIN


def run(bars, **config):
    """Open one 1000-USDT long at the open of the first bar, feed the rest, return the trade."""
    stop = config.pop("stop_pct", 1.0)
    take = config.pop("take_pct", 2.0)
    ex = exchange(slippage_pct=0.0, commission_pct=0.0, **config)
    ex.submit(intent(stop_pct=stop, take_pct=take))
    trades = []
    for minute, (o, h, lo, c) in bars:
        events = ex.on_bar(BTC, ENTRY + minute * MIN, o, h, lo, c)
        if minute == 0:
            assert any(isinstance(e, PositionOpened) for e in events)
        trades += [e.trade for e in events if isinstance(e, TradeClosed)]
    return trades, ex


def test_exit_low_touches_stop_closes_at_stop_level():
    [t], _ = run([(0, (100, 100.5, 99.5, 100)), (1, (100, 100.2, 98.9, 99.2))])
    assert (t.exit_reason, t.close_price, t.exit_at_ms) == ("stop_loss", 99.0, ENTRY + 2 * MIN)


def test_exit_entry_bar_itself_can_stop_out():
    [t], _ = run([(0, (100, 100.1, 98.5, 99))])
    assert (t.exit_reason, t.close_price, t.bars_held) == ("stop_loss", 99.0, 1)


def test_exit_gap_below_stop_fills_at_open_not_at_stop():
    [t], _ = run([(0, (100, 100.5, 99.5, 100)), (1, (97, 97.5, 96, 97))])
    assert (t.exit_reason, t.close_price) == ("stop_loss", 97.0)


def test_exit_high_touches_take_closes_at_take_level():
    [t], _ = run([(0, (100, 100.5, 99.5, 100)), (1, (100.5, 102.5, 100.1, 102))])
    assert (t.exit_reason, t.close_price) == ("take_profit", 102.0)


def test_exit_bar_touching_stop_and_take_counts_as_stop():
    [t], _ = run([(0, (100, 100.5, 99.5, 100)), (1, (100, 103, 98, 101))])
    assert t.exit_reason == "stop_loss" and t.net_return_pct < 0


def test_exit_trailing_stop_trails_previous_highs():
    bars = [
        (0, (100, 100, 99.8, 100)),
        (1, (100, 101.5, 100, 101.4)),
        (2, (101.3, 101.4, 100, 100.2)),
    ]
    [t], _ = run(bars, stop_pct=5.0, take_pct=10.0, trailing_pct=1.0)
    assert t.exit_reason == "trailing_stop"
    assert t.close_price == pytest.approx(101.5 * 0.99)


def test_exit_time_exit_at_close_of_last_held_bar():
    bars = [
        (0, (100, 100.2, 99.9, 100)),
        (1, (100, 100.3, 99.8, 100.1)),
        (2, (100.1, 100.4, 99.9, 100.3)),
    ]
    [t], _ = run(bars, max_hold_minutes=3)
    assert (t.exit_reason, t.close_price, t.bars_held) == ("time_exit", 100.3, 3)


def test_exit_time_exit_counts_minutes_across_a_data_gap():
    bars = [(0, (100, 100.2, 99.9, 100)), (7, (100.1, 100.4, 99.9, 100.2))]
    [t], _ = run(bars, max_hold_minutes=5)
    assert (t.exit_reason, t.bars_held, t.exit_at_ms) == ("time_exit", 8, ENTRY + 8 * MIN)


def test_exit_forced_flatten_uses_last_close():
    trades, ex = run([(0, (100, 100.5, 99.5, 100.3))])
    assert trades == []
    [event] = ex.flatten(ENTRY + 90_000)
    assert (event.trade.exit_reason, event.trade.close_price) == ("forced", 100.3)
    assert event.trade.exit_at_ms == ENTRY + 90_000


def test_exit_position_without_exit_stays_open_with_updated_peak():
    trades, ex = run([(0, (100, 100.5, 99.5, 100)), (1, (100, 101, 99.9, 100.8))])
    [pos] = ex.open_positions()
    assert trades == [] and pos.peak_high == 101 and pos.bars_held == 2 and pos.mark_price == 100.8
