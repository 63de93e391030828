"""Run report: figures on hand-made trades and curves, the terminal table, the HTML + PNG files,
buy-and-hold on real bars, and errors for curves that cannot be summarised."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aegis.paper.backtest_inputs import load_backtest_data, window_ms
from aegis.paper.comparisons import buy_and_hold_run
from aegis.paper.exchange import PaperConfig
from aegis.paper.report import (
    ReportInputError,
    ReportTrade,
    StrategyRun,
    max_drawdown_pct,
    render_table,
    sharpe_ratio,
    summarize,
)
from aegis.paper.report_html import write_report

H = 3_600_000
DAY = 24 * H


def _trade(entry_h, exit_h, net, pnl, fee, slip=0.0):
    return ReportTrade("BTCUSDT", entry_h * H, exit_h * H, net, pnl, fee, slip, 1000.0)


def _hand_run() -> StrategyRun:
    trades = (
        _trade(1, 3, 1.5, 15.0, 2.0, 0.4),
        _trade(4, 5, -1.0, -10.0, 2.0, 0.4),
        _trade(6, 8, 0.0, 0.0, 2.0, 0.4),
        _trade(7, 9, 2.0, 20.0, 2.0, 0.4),
    )
    t = np.arange(0, 10) * H
    equity = np.array([1000, 1010, 1050, 990, 1020, 960, 1000, 1100, 1080, 1025.0])
    return StrategyRun("hand", trades, t, equity, 1000.0)


def test_summarize_hand_made_trades_gives_hit_rate_fees_and_return():
    s = summarize(_hand_run())
    assert s.trades == 4
    assert s.hit_rate_pct == 50.0  # 1.5 and 2.0 win; -1.0 loses; 0.0 is not a win
    assert s.fees_paid == pytest.approx(8.0)
    assert s.slippage_paid == pytest.approx(1.6)
    assert s.net_return_pct == pytest.approx(2.5)
    assert s.mean_trade_pct == pytest.approx(0.625)
    assert s.final_equity == 1025.0


def test_max_drawdown_is_largest_fall_from_running_peak():
    # peaks 1050 then 1100: falls to 960 (-8.571%) and to 1025 (-6.818%)
    assert summarize(_hand_run()).max_drawdown_pct == pytest.approx((1050 - 960) / 1050 * 100)
    assert max_drawdown_pct(np.array([1.0, 2.0, 3.0])) == 0.0
    assert max_drawdown_pct(np.array([100.0, 50.0, 200.0, 100.0])) == pytest.approx(50.0)


def test_exposure_from_trade_intervals_merges_overlaps():
    # held 1-3, 4-5, 6-9 (6-8 and 7-9 overlap) = 2 + 1 + 3 = 6 of 9 hours
    assert summarize(_hand_run()).exposure_pct == pytest.approx(600 / 9)


def test_exposure_from_position_values_when_given():
    run = StrategyRun("x", (), np.arange(4) * H, np.full(4, 10.0), 10.0,
                      exposure=np.array([0.0, 5.0, 5.0, 0.0]))  # fmt: skip
    assert summarize(run).exposure_pct == 50.0


def test_sharpe_uses_daily_closes_and_sqrt_365():
    days = np.array([100.0, 101.0, 100.0, 102.0, 103.0])
    t = np.repeat(np.arange(5) * DAY, 2) + np.tile([H, 23 * H], 5)
    equity = np.repeat(days, 2) * np.tile([0.5, 1.0], 5)  # the day's last point counts
    r = days[1:] / days[:-1] - 1
    assert sharpe_ratio(t, equity) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365))


def test_sharpe_undefined_with_too_few_days_or_no_variation():
    assert math.isnan(sharpe_ratio(np.arange(10) * H, np.linspace(1, 2, 10)))
    assert math.isnan(sharpe_ratio(np.arange(5) * DAY, np.full(5, 7.0)))


def test_summarize_without_trades_has_no_hit_rate():
    run = StrategyRun("idle", (), np.arange(3) * H, np.full(3, 50.0), 50.0)
    s = summarize(run)
    assert s.trades == 0 and math.isnan(s.hit_rate_pct) and s.net_return_pct == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"equity_time_ms": np.array([], np.int64), "equity": np.array([])}, "non-empty"),
        ({"equity_time_ms": np.array([2, 1]), "equity": np.array([1.0, 1.0])}, "increasing"),
        ({"equity_time_ms": np.array([1, 2]), "equity": np.array([1.0, np.nan])}, "non-finite"),
        ({"starting_equity": 0.0}, "positive"),
    ],
)
def test_strategy_run_bad_curve_raises(kwargs, match):
    args = {"name": "bad", "trades": (), "equity_time_ms": np.array([1, 2]),
            "equity": np.array([1.0, 1.0]), "starting_equity": 1.0}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ReportInputError, match=match):
        StrategyRun(**args)


def test_render_table_lists_every_strategy_and_the_sharpe_convention():
    text = render_table([summarize(_hand_run())], "title", ["a note"])
    assert "hand" in text and "+2.500" in text and "50.0" in text
    assert "sqrt(365)" in text and text.endswith("a note")


def test_write_report_writes_html_and_png(tmp_path):
    files = write_report(tmp_path / "reports", [_hand_run()], "Hand <run>", {"period": "x"},
                         ["note & more"], stem="r1")  # fmt: skip
    assert files.html == tmp_path / "reports" / "r1.html"
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = files.html.read_text()
    assert "Hand &lt;run&gt;" in page and 'src="r1.png"' in page and "note &amp; more" in page


def test_buy_and_hold_on_real_bars_equals_first_open_to_last_close():
    start, end = window_ms("2023-04-03", "2023-04-04")
    data = load_backtest_data(None, ["BTCUSDT", "ETHUSDT"], start, end)
    free = PaperConfig(commission_pct=0.0, slippage_pct=0.0)
    run = buy_and_hold_run(data, free, 1000.0)
    growth = [s.close[-1] / s.open[0] for s in data.series]
    assert run.equity[-1] == pytest.approx(500.0 * sum(growth))
    assert run.equity[0] == pytest.approx(sum(500.0 * s.close[0] / s.open[0] for s in data.series))
    paid = buy_and_hold_run(data, PaperConfig(), 1000.0)
    s = summarize(paid)
    assert s.trades == 2 and s.fees_paid == pytest.approx(2 * 0.001 * 1000, rel=0.1)
    assert s.final_equity < run.equity[-1]
    assert s.net_return_pct == pytest.approx(np.mean([t.net_return_pct for t in paid.trades]))
