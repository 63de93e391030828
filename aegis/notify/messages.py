"""Text of every notification: short, plain, one event per message, never a secret.

Pure functions of domain numbers, so the executor decides *what* to say and the channels only
*how* to deliver it. Every message starts with a tag naming the mode ("AEGIS paper" / "AEGIS
live") so a paper alert can never be mistaken for real money.
"""

from __future__ import annotations


def _tag(live: bool) -> str:
    return "[AEGIS live]" if live else "[AEGIS paper]"


def _duration(ms: int) -> str:
    minutes = max(0, ms) // 60_000
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def trade_opened(
    symbol: str,
    quantity: object,
    entry_price: float,
    notional: float,
    stop_pct: float,
    take_pct: float,
    confidence: float,
    *,
    live: bool = False,
) -> str:
    """An entry filled."""
    return (
        f"{_tag(live)} OPEN {symbol}: bought {quantity} at {entry_price:.8g} "
        f"({notional:,.2f} quote), stop -{stop_pct:.2f}% take +{take_pct:.2f}%, "
        f"confidence {confidence:.2f}"
    )


def trade_closed(
    symbol: str,
    exit_reason: str,
    entry_price: float,
    close_price: float,
    net_return_pct: float,
    pnl: float,
    duration_ms: int,
    *,
    live: bool = False,
) -> str:
    """A position closed; the return is net of commission and slippage."""
    return (
        f"{_tag(live)} CLOSE {symbol} ({exit_reason}): {entry_price:.8g} -> {close_price:.8g}, "
        f"net {net_return_pct:+.2f}% ({pnl:+,.2f} quote) after {_duration(duration_ms)}"
    )


def kill_switch(
    reason: str, loss_pct: float, limit_pct: float, equity: float, *, live: bool = False
) -> str:
    """The kill switch tripped: positions flattened, entries stopped until re-armed."""
    return (
        f"{_tag(live)} KILL SWITCH ({reason}): loss {loss_pct:.2f}% reached limit "
        f"{limit_pct:.2f}%; all positions flattened, no new entries until re-armed. "
        f"Equity {equity:,.2f}"
    )


def crash_loop(process: str, restarts: int, window_s: float, *, live: bool = False) -> str:
    """A supervised process keeps crashing."""
    return (
        f"{_tag(live)} CRASH LOOP: process {process} restarted {restarts} times in "
        f"{window_s:.0f}s; the watchdog stopped restarting it"
    )


def daily_summary(
    day: str,
    trades: int,
    wins: int,
    net_pnl: float,
    equity: float,
    day_return_pct: float,
    *,
    live: bool = False,
) -> str:
    """End-of-day (UTC) summary of closed trades and equity."""
    rate = f"{100.0 * wins / trades:.0f}%" if trades else "n/a"
    return (
        f"{_tag(live)} DAILY {day}: {trades} trades, win rate {rate}, net pnl {net_pnl:+,.2f}, "
        f"day {day_return_pct:+.2f}%, equity {equity:,.2f}"
    )
