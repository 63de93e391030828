"""Pure bookkeeping of live orders: client order ids, intents as journal detail, positions and
closed trades computed from real fills. No I/O; ``live.py`` does the sending and the writing.

Money follows the exchange, not a model: a position's quantity is what the entry fills left in
the account (executed quantity minus a commission paid in the base asset), its entry price is
the average fill price, and a closed trade's pnl is the quote received minus the quote spent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from aegis.binance.filters import SymbolFilters
from aegis.binance.journal import JournalFill
from aegis.binance.models import ExchangeOrder
from aegis.binance.user_events import OrderUpdate
from aegis.paper.exits import EXIT_REASONS
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import PaperPosition, PaperTrade

CLIENT_ID_PREFIX = "aegis-"
CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")  # Binance's newClientOrderId rule
EXIT_RECONCILED = 6  # not an exit rule: the exchange had no balance for the position
EXIT_CRASH_GUARD = 7  # not an exit rule: the exchange-side crash guard sold (``live_guard``)
EXIT_CRASH_GUARD_NAME = "crash_guard"
EXIT_REASON_NAMES = {
    **EXIT_REASONS,
    EXIT_RECONCILED: "reconciled",
    EXIT_CRASH_GUARD: EXIT_CRASH_GUARD_NAME,
}
_ZERO = Decimal(0)
_ESTIMATED_SLOT = 999  # synthetic trade id slot of an aggregate fill rebuilt from a query


def entry_client_id(intent_id: int) -> str:
    """``newClientOrderId`` of an intent's entry: the intent id itself, prefixed."""
    if not 0 < intent_id < 2**64:
        raise ValueError(f"intent id must be a positive uint64, got {intent_id}")
    return f"{CLIENT_ID_PREFIX}{intent_id}"


def exit_client_id(intent_id: int, attempt: int) -> str:
    """``newClientOrderId`` of the ``attempt``-th exit order (ids are never reused)."""
    return f"{entry_client_id(intent_id)}-x{attempt}"


def is_own_client_id(client_order_id: str) -> bool:
    """True for ids this module makes (other orders of the account are not ours to repair)."""
    return client_order_id.startswith(CLIENT_ID_PREFIX)


@dataclass(frozen=True, slots=True)
class LiveMarket:
    """One tradable symbol: its assets and order rules."""

    symbol: str
    base_asset: str
    quote_asset: str
    filters: SymbolFilters

    @classmethod
    def from_symbol_info(cls, info: Mapping[str, Any]) -> LiveMarket:
        """Build from one entry of ``exchangeInfo["symbols"]``."""
        return cls(
            info["symbol"],
            info["baseAsset"],
            info["quoteAsset"],
            SymbolFilters.from_symbol_info(info),
        )

    @property
    def step(self) -> Decimal:
        """LOT_SIZE step (the smallest quantity difference that matters)."""
        grid = self.filters.lot_grid
        return grid.step if grid is not None and grid.step is not None else Decimal("1e-8")


def intent_detail(intent: PaperIntent) -> dict[str, Any]:
    """The intent as JSON-able journal detail (enough to rebuild it after a restart)."""
    out = {f.name: getattr(intent, f.name) for f in fields(intent)}
    out["features"] = list(intent.features)
    return out


def intent_from_detail(detail: Mapping[str, Any]) -> PaperIntent:
    """Inverse of ``intent_detail``; raises ``InvalidIntent`` for a corrupt row."""
    names = {f.name for f in fields(PaperIntent)}
    values = {k: v for k, v in detail.items() if k in names}
    values["features"] = tuple(float(x) for x in values.get("features", ()))
    return PaperIntent(**values)


def fills_from_answer(order: ExchangeOrder, time_ms: int) -> list[JournalFill]:
    """Fills of a FULL new-order answer, under Binance's trade ids.

    The same trades reach the user-data stream under the same ids, so a fill learnt both ways
    is one row. An answer without ``tradeId`` gets deterministic synthetic (negative) ids
    derived from the exchange order id, which keep ``trades`` rows unique and a rewrite
    idempotent.
    """
    return [
        JournalFill(
            order.client_order_id,
            order.symbol,
            f.trade_id if f.trade_id >= 0 else -(order.order_id * 1000 + i),
            order.side,
            f.price,
            f.quantity,
            f.price * f.quantity,
            f.commission,
            f.commission_asset,
            False,
            time_ms,
            order.order_id,
        )
        for i, f in enumerate(order.fills)
        if f.trade_id >= 0 or i < _ESTIMATED_SLOT  # synthetic ids stop below the estimate's
    ]


def fill_from_update(update: OrderUpdate) -> JournalFill:
    """The fill an ``executionReport`` of execution type TRADE carries."""
    return JournalFill(
        update.client_order_id,
        update.symbol,
        update.trade_id,
        update.side,
        update.last_price,
        update.last_quantity,
        update.last_price * update.last_quantity,
        update.commission,
        update.commission_asset,
        update.is_maker,
        update.transaction_time_ms,
        update.order_id,
    )


def remainder_fill(
    order: ExchangeOrder,
    recorded: Iterable[JournalFill],
    market: LiveMarket,
    commission_rate: Decimal,
    time_ms: int,
) -> JournalFill | None:
    """The part of an order's execution missing from ``recorded`` fills, as one estimated fill.

    Used when the order was learnt from a query (no trade list): the missing quantity at the
    average price of the missing quote, commission at ``commission_rate`` in the asset received.
    """
    recorded = list(recorded)
    qty = order.executed_quantity - sum((f.quantity for f in recorded), _ZERO)
    quote = order.cumulative_quote - sum((f.quote_qty for f in recorded), _ZERO)
    if qty <= 0 or quote <= 0:
        return None
    buy = order.side == "BUY"
    commission = (qty if buy else quote) * commission_rate
    asset = market.base_asset if buy else market.quote_asset
    return JournalFill(
        order.client_order_id,
        order.symbol,
        -(order.order_id * 1000 + _ESTIMATED_SLOT),
        order.side,
        quote / qty,
        qty,
        quote,
        commission.quantize(Decimal("1e-8")),
        asset,
        False,
        time_ms,
        order.order_id,
        estimated=True,
    )


@dataclass(frozen=True, slots=True)
class FillTotals:
    """Sums over an order's fills, commission split by the asset it was paid in."""

    quantity: Decimal
    quote: Decimal
    base_commission: Decimal
    quote_commission: Decimal

    @property
    def average_price(self) -> Decimal:
        return self.quote / self.quantity if self.quantity else _ZERO


def fill_totals(fills: Iterable[JournalFill], market: LiveMarket) -> FillTotals:
    """Add up fills (a commission in a third asset such as BNB is not in the account's books)."""
    qty = quote = base_fee = quote_fee = _ZERO
    for f in fills:
        qty += f.quantity
        quote += f.quote_qty
        if f.commission_asset == market.base_asset:
            base_fee += f.commission
        elif f.commission_asset == market.quote_asset:
            quote_fee += f.commission
    return FillTotals(qty, quote, base_fee, quote_fee)


def open_position(
    intent: PaperIntent,
    totals: FillTotals,
    fill_time_ms: int,
    bar_interval_ms: int,
    trailing_pct: float,
    max_hold_bars: int,
    commission_pct: float,
    equity_before: float,
) -> PaperPosition:
    """The position an entry's fills opened.

    ``entry_at_ms`` is the open of the bar in which the fill happened, and that bar is the
    first one the exit rules see — as in paper mode, where the entry fills at that bar's open.
    """
    avg = float(totals.average_price)
    held = totals.quantity - totals.base_commission
    bar = fill_time_ms - fill_time_ms % bar_interval_ms
    commission = float(totals.base_commission) * avg + float(totals.quote_commission)
    return PaperPosition(
        intent_id=intent.intent_id,
        symbol_id=intent.symbol_id,
        quantity=held,
        entry_at_ms=bar,
        entry_price=avg,
        entry_fill_price=avg,
        notional=float(totals.quote),
        entry_commission=commission,
        commission_pct=commission_pct,
        slippage_pct=0.0,
        stop_pct=intent.stop_pct,
        take_pct=intent.take_pct,
        trailing_pct=trailing_pct,
        max_hold_bars=max_hold_bars,
        peak_high=avg,
        bars_held=0,
        last_bar_ms=bar - 1,
        mark_price=avg,
        decision_time_ms=intent.decision_time_ms,
        predicted_return_pct=intent.predicted_return_pct,
        confidence=intent.confidence,
        model_version=intent.model_version,
        position_size_pct=100.0 * float(totals.quote) / equity_before if equity_before > 0 else 0.0,
        features=intent.features,
    )


def close_trade(
    pos: PaperPosition,
    exit_code: int,
    decision_price: float,
    sold: FillTotals | None,
    time_ms: int,
    bars_held: int,
) -> PaperTrade:
    """The trade a position became; ``sold`` None means closed without a sale (reconciled).

    ``close_price`` is the price the exit rule decided on (the level a label would use);
    ``close_fill_price`` is the real average sale price. Returns come from real money: quote
    received minus quote spent, over quote spent.
    """
    spent = pos.notional  # quote paid; a base-asset fee is already missing from the quantity
    if sold is not None and sold.quantity > 0:
        fill = float(sold.average_price)
        exit_fee = float(sold.quote_commission) + float(sold.base_commission) * fill
        received = float(sold.quote) - float(sold.quote_commission)
    else:
        # Nothing was sold by us (the balance went elsewhere): value it at the decision price,
        # flagged by the exit reason, rather than invent a fill or a total loss.
        fill, exit_fee = decision_price, 0.0
        received = float(pos.quantity) * decision_price
    pnl = received - spent
    entry = pos.entry_fill_price
    gross = (fill / entry - 1.0) * 100.0
    net = pnl / spent * 100.0 if spent > 0 else 0.0
    return PaperTrade.closing(
        pos,
        time_ms=time_ms,
        bars_held=bars_held,
        entry_fill_price=entry,
        close_price=decision_price,
        close_fill_price=fill,
        gross_return_pct=gross,
        net_return_pct=net,
        commission_quote=pos.entry_commission + exit_fee,
        slippage_quote=0.0,
        slippage_pct=0.0,
        pnl=pnl,
        exit_reason=EXIT_REASON_NAMES.get(exit_code, "unknown"),
        exit_code=exit_code,
    )


__all__ = [
    "CLIENT_ID_PATTERN",
    "EXIT_CRASH_GUARD",
    "EXIT_CRASH_GUARD_NAME",
    "EXIT_RECONCILED",
    "FillTotals",
    "LiveMarket",
    "close_trade",
    "entry_client_id",
    "exit_client_id",
    "fill_from_update",
    "fill_totals",
    "fills_from_answer",
    "intent_detail",
    "intent_from_detail",
    "is_own_client_id",
    "open_position",
    "remainder_fill",
]
