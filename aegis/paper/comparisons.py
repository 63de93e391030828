"""The runs a report compares: a backtest as a ``StrategyRun``, and buy-and-hold of the same bars.

Buy-and-hold splits the starting equity equally over the symbols, buys each at the open of its
first bar with the paper executor's slippage and commission, marks it at every close, and sells
at the last close paying both again (its last equity point is what the sale brings back), so it
carries the same costs as the strategy it is compared with.
"""

from __future__ import annotations

import numpy as np

from aegis.paper.backtest import BacktestResult
from aegis.paper.backtest_inputs import BacktestData
from aegis.paper.backtest_replay import forward_filled_closes, traded_minutes
from aegis.paper.exchange import PaperConfig
from aegis.paper.exits import trade_return_pct
from aegis.paper.report import ReportTrade, StrategyRun

MINUTE_MS = 60_000


def strategy_run(result: BacktestResult, name: str) -> StrategyRun:
    """A backtest's closed trades and minute equity curve as a report run."""
    trades = tuple(ReportTrade.from_paper_trade(t, result.symbols[t.symbol_id])
                   for t in result.trades)  # fmt: skip
    notes = ()
    if result.open_positions:
        notes = (f"{name}: {result.open_positions} positions still open at the end, marked at "
                 "their last close",)  # fmt: skip
    return StrategyRun(name, trades, result.equity_time_ms, result.equity,
                       result.starting_equity, result.exposure, notes)  # fmt: skip


def buy_and_hold_run(
    data: BacktestData, paper: PaperConfig, starting_equity: float, name: str = "buy & hold"
) -> StrategyRun:
    """Equal-weight buy-and-hold of every symbol of ``data`` over its whole window."""
    minutes = traded_minutes(data)
    closes = forward_filled_closes(minutes, data.series)
    fee, slip = paper.commission_pct / 100.0, paper.slippage_pct / 100.0
    share = starting_equity / len(data.series)
    equity = np.zeros(len(minutes))
    value = np.zeros(len(minutes))
    trades = []
    last = len(minutes) - 1
    for j, s in enumerate(data.series):
        first = data.first_traded_row(s)
        if first >= len(s.open_time_ms):  # no bar of this symbol in the window: its share idles
            equity += share
            continue
        entry = float(s.open[first])
        fill = entry * (1.0 + slip)
        qty = share / (fill * (1.0 + fee))
        held = minutes >= s.open_time_ms[first]
        marked = np.where(held, qty * np.nan_to_num(closes[:, j]), 0.0)
        value += marked
        equity += np.where(held, marked, share)
        exit_px = float(s.close[-1])
        proceeds = qty * exit_px * (1.0 - slip)
        cash_back = proceeds * (1.0 - fee)
        equity[last] += cash_back - qty * closes[last, j]
        _, net = trade_return_pct(entry, exit_px, paper.commission_pct, paper.slippage_pct)
        commission = qty * fill * fee + proceeds * fee
        slippage = qty * (fill - entry) + qty * (exit_px - exit_px * (1.0 - slip))
        trades.append(ReportTrade(data.symbols[s.symbol_id], int(s.open_time_ms[first]),
                                  int(s.open_time_ms[-1]) + MINUTE_MS, float(net),
                                  cash_back - share, commission, slippage, qty * fill))  # fmt: skip
    value[last] = 0.0  # sold at the last close
    return StrategyRun(name, tuple(trades), minutes + MINUTE_MS, equity, starting_equity,
                       value)  # fmt: skip
