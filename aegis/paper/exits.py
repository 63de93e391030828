"""Exit rules of a long spot position, bar by bar: the one definition shared by the paper
executor, the backtest and the brain's labels, so that a label is exactly the trade the executor
would have made.

Within one bar the order of prices is unknown; the rules are pessimistic on purpose so that
paper results never flatter the model:
- a bar that opens beyond the stop (a gap) fills at its open, not at the stop level;
- a bar that touches both the stop and the take-profit is counted as stopped out;
- the trailing stop trails the highest high of the bars *before* the current one, so a bar can
  never raise its own stop and then hit it;
- the time exit fills at the close of the bar in which the holding period is reached.
"""

from __future__ import annotations

EXIT_NONE = 0
EXIT_STOP = 1
EXIT_TAKE = 2
EXIT_TRAILING = 3
EXIT_TIME = 4
EXIT_FORCED = 5

EXIT_REASONS = {
    EXIT_STOP: "stop_loss",
    EXIT_TAKE: "take_profit",
    EXIT_TRAILING: "trailing_stop",
    EXIT_TIME: "time_exit",
    EXIT_FORCED: "forced",
}


def exit_check(
    entry_price: float,
    peak_high: float,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    bar_close: float,
    bars_held: int,
    stop_pct: float,
    take_pct: float,
    trailing_pct: float,
    max_hold_bars: int,
) -> tuple[int, float]:
    """Return (reason, exit price) for one bar of an open long; reason EXIT_NONE keeps it open.

    ``peak_high`` is the highest high since entry up to the previous bar (the entry price on the
    first bar); ``bars_held`` counts this bar (1 on the first bar after entry).
    """
    stop_level = entry_price * (1.0 - stop_pct / 100.0)
    reason = EXIT_STOP
    if trailing_pct > 0.0:
        trail_level = peak_high * (1.0 - trailing_pct / 100.0)
        if trail_level > stop_level:
            stop_level = trail_level
            reason = EXIT_TRAILING
    take_level = entry_price * (1.0 + take_pct / 100.0)
    if bar_open <= stop_level:
        return reason, bar_open
    if bar_low <= stop_level:
        return reason, stop_level
    if bar_open >= take_level:
        return EXIT_TAKE, bar_open
    if bar_high >= take_level:
        return EXIT_TAKE, take_level
    if max_hold_bars > 0 and bars_held >= max_hold_bars:
        return EXIT_TIME, bar_close
    return EXIT_NONE, 0.0


def trade_return_pct(
    entry_price: float, exit_price: float, commission_pct: float, slippage_pct: float
) -> tuple[float, float]:
    """Return (gross %, net %) of a long bought at ``entry_price`` and sold at ``exit_price``.

    Gross is the raw price move. Net pays slippage against us on both fills and the commission
    on both sides (commission on the quote value of each fill).
    """
    gross = (exit_price / entry_price - 1.0) * 100.0
    slip = slippage_pct / 100.0
    fee = commission_pct / 100.0
    buy = entry_price * (1.0 + slip)
    sell = exit_price * (1.0 - slip)
    net = (sell * (1.0 - fee) / (buy * (1.0 + fee)) - 1.0) * 100.0
    return gross, net
