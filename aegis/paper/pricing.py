"""Money of one closed paper trade: fills, commission, slippage and returns, from one formula.

The % returns come from ``trade_return_pct`` — the definition the brain's labels use — and
the quote-asset amounts are derived from the same fill prices, so the pnl of a trade divided by
its cost is its net % return.
"""

from __future__ import annotations

from aegis.paper.exits import trade_return_pct
from aegis.paper.positions import PaperPosition, PaperTrade


def close_position(
    pos: PaperPosition, exit_code: int, exit_reason: str, price: float, time_ms: int, held: int
) -> tuple[PaperTrade, float]:
    """Close ``pos`` at the observed ``price``; return the trade and the cash it brings back."""
    qty = float(pos.quantity)
    fill = price * (1.0 - pos.slippage_pct / 100.0)
    proceeds = qty * fill
    exit_commission = proceeds * pos.commission_pct / 100.0
    cash_in = proceeds - exit_commission
    gross, net = trade_return_pct(pos.entry_price, price, pos.commission_pct, pos.slippage_pct)
    slippage_quote = qty * (pos.entry_fill_price - pos.entry_price) + qty * (price - fill)
    trade = PaperTrade.closing(
        pos,
        time_ms=time_ms,
        bars_held=held,
        entry_fill_price=pos.entry_fill_price,
        close_price=price,
        close_fill_price=fill,
        gross_return_pct=gross,
        net_return_pct=net,
        commission_quote=pos.entry_commission + exit_commission,
        slippage_quote=slippage_quote,
        slippage_pct=pos.slippage_pct,
        pnl=cash_in - pos.cost,
        exit_reason=exit_reason,
        exit_code=exit_code,
    )
    return trade, cash_in
