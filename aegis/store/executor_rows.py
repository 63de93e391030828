"""Rows of the executor's tables, built from the paper domain objects (pure, no I/O).

Column order of each tuple is the column list of ``aegis.store.executor_tables``. Numeric
columns get ``Decimal(repr(x))`` so that 0.1 is stored as 0.1, not as the binary expansion of
the float; JSON keeps NaN and infinities as text (JSON has neither).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aegis.binance.live_book import entry_client_id, exit_client_id
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import EquitySnapshot, PaperPosition, PaperTrade

STATUS_NEW = "NEW"
STATUS_FILLED = "FILLED"
STATUS_REJECTED = "REJECTED"
STATUS_CANCELED = "CANCELED"


class LedgerRecordError(ValueError):
    """A persisted executor row cannot be turned back into the book (names the row)."""


def money(value: float | Decimal | int) -> Decimal:
    """A finite number as the Decimal of its shortest repr (what a human would write)."""
    if isinstance(value, Decimal):
        return value
    if not math.isfinite(value):
        raise ValueError(f"money amount must be finite, got {value!r}")
    return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)


def _json_float(value: float) -> float | str:
    # JSON has no NaN/inf (orjson writes null); keep them as text that float() reads back.
    return value if math.isfinite(value) else repr(value)


def _json_floats(values: tuple[float, ...]) -> list[float | str]:
    if all(map(math.isfinite, values)):  # nearly always: no value to turn into text
        return list(values)
    return [_json_float(x) for x in values]


def intent_detail(intent: PaperIntent) -> dict[str, Any]:
    """The whole intent as JSON for ``orders.detail``: what a restart needs to re-submit it."""
    return {
        "intent_id": intent.intent_id,
        "symbol_id": intent.symbol_id,
        "decision_time_ms": intent.decision_time_ms,
        "notional": intent.notional,
        "stop_pct": intent.stop_pct,
        "take_pct": intent.take_pct,
        "predicted_return_pct": _json_float(intent.predicted_return_pct),
        "confidence": _json_float(intent.confidence),
        "model_version": intent.model_version,
        "features": _json_floats(intent.features),
        "recv_ns": intent.recv_ns,
    }


def intent_from_detail(detail: Mapping[str, Any]) -> PaperIntent:
    """Inverse of ``intent_detail``; ``LedgerRecordError`` when the JSON is not an intent."""
    try:
        return PaperIntent(
            intent_id=int(detail["intent_id"]),
            symbol_id=int(detail["symbol_id"]),
            decision_time_ms=int(detail["decision_time_ms"]),
            notional=float(detail["notional"]),
            stop_pct=float(detail["stop_pct"]),
            take_pct=float(detail["take_pct"]),
            predicted_return_pct=float(detail["predicted_return_pct"]),
            confidence=float(detail["confidence"]),
            model_version=int(detail["model_version"]),
            features=tuple(float(x) for x in detail["features"]),
            recv_ns=int(detail.get("recv_ns", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerRecordError(f"orders.detail is not a paper intent: {exc}") from exc


def position_state(pos: PaperPosition) -> dict[str, Any]:
    """``PaperPosition.to_record()`` made JSON-safe (quantity as text, non-finite as text)."""
    state = pos.to_record()
    state["quantity"] = str(pos.quantity)
    state["features"] = _json_floats(pos.features)
    for key in ("predicted_return_pct", "confidence"):
        state[key] = _json_float(state[key])
    return state


# What a processed bar changes in an open paper position (``PaperExchange._step``).
MARK_FIELDS = ("peak_high", "bars_held", "last_bar_ms", "mark_price")


def position_mark_row(pos: PaperPosition, now_ms: int) -> tuple:
    """The per-bar update of a stored open position: only what a bar changes, merged into its
    ``state`` (``virtual_positions`` keeps the rest from the row written at the entry)."""
    return (pos.intent_id, {name: getattr(pos, name) for name in MARK_FIELDS}, now_ms)


def entry_order_row(
    intent: PaperIntent, symbol: str, mode: str, status: str, reason: str, now_ms: int
) -> tuple:
    """The entry order of an intent as the executor first records it (NEW or REJECTED)."""
    return (
        entry_client_id(intent.intent_id), intent.intent_id, mode, symbol, "BUY", "MARKET",
        None, money(intent.notional), None, status, Decimal(0), Decimal(0), reason or None,
        intent_detail(intent), now_ms, now_ms,
    )  # fmt: skip


def refused_record_row(
    intent_id: int, symbol: str, mode: str, reason: str, detail: Mapping[str, Any], now_ms: int
) -> tuple:
    """The REJECTED entry order of an intent record that could not even be read as an intent."""
    return (
        entry_client_id(intent_id), intent_id, mode, symbol, "BUY", "MARKET", None, None, None,
        STATUS_REJECTED, Decimal(0), Decimal(0), reason, dict(detail), now_ms, now_ms,
    )  # fmt: skip


def entry_transition_row(
    intent_id: int,
    symbol: str,
    mode: str,
    status: str,
    now_ms: int,
    *,
    quantity: Decimal | None = None,
    price: float | None = None,
    quote: float = 0.0,
    reason: str = "",
) -> tuple:
    """An entry order leaving NEW (filled at ``price``, rejected or canceled)."""
    return (
        entry_client_id(intent_id), intent_id, mode, symbol, "BUY", "MARKET", quantity, None,
        None if price is None else money(price), status, quantity or Decimal(0), money(quote),
        reason or None, {}, now_ms, now_ms,
    )  # fmt: skip


def exit_order_row(trade: PaperTrade, symbol: str, mode: str, now_ms: int) -> tuple:
    """The filled SELL that closed a paper position (one per trade)."""
    proceeds = float(trade.quantity) * trade.close_fill_price
    detail = {"exit_reason": trade.exit_reason, "close_price": trade.close_price}
    return (
        exit_client_id(trade.intent_id, 1), trade.intent_id, mode, symbol, "SELL", "MARKET",
        trade.quantity, None, money(trade.close_fill_price), STATUS_FILLED, trade.quantity,
        money(proceeds), None, detail, now_ms, now_ms,
    )  # fmt: skip


def position_row(
    pos: PaperPosition, symbol: str, now_ms: int, closed: PaperTrade | None = None
) -> tuple:
    """The ``virtual_positions`` row of a position with its full state; closed by ``closed``."""
    if closed is None:
        status, closed_at, exit_price, reason = "open", None, None, None
    else:
        status, closed_at = "closed", closed.exit_at_ms
        exit_price, reason = money(closed.close_fill_price), closed.exit_reason
    return (
        pos.intent_id, symbol, "BUY", status, pos.entry_at_ms, closed_at,
        money(pos.entry_price), pos.quantity, money(pos.notional),
        money(pos.entry_price * (1 - pos.stop_pct / 100)),
        money(pos.entry_price * (1 + pos.take_pct / 100)), exit_price, reason, pos.confidence,
        pos.predicted_return_pct, pos.model_version, pos.features, now_ms, position_state(pos),
    )  # fmt: skip


def trade_row(
    trade: PaperTrade,
    symbol: str,
    timeframe: str,
    quote_asset: str,
    now_ms: int,
    exit_distances: tuple[float, float] | None = None,
) -> tuple:
    """The ``virtual_trades`` row of a closed trade (all tracking fields).

    ``exit_distances`` (stop %, take %) come from the position: a trade does not carry them.
    """
    stop_pct, take_pct = exit_distances or (None, None)
    return (
        trade.intent_id, symbol, timeframe, "BUY", trade.entry_at_ms, trade.exit_at_ms,
        trade.duration_ms, money(trade.entry_fill_price), money(trade.close_fill_price),
        money(trade.close_price), trade.quantity, money(trade.notional), trade.gross_return_pct,
        trade.net_return_pct, money(trade.commission_quote), quote_asset, trade.slippage_pct,
        trade.exit_reason, stop_pct, take_pct,
        trade.predicted_return_pct, trade.model_version, trade.features, trade.confidence,
        trade.position_size_pct, money(trade.pnl), trade.reward_score, now_ms,
    )  # fmt: skip


def account_row(account: str, snap: EquitySnapshot, peak_equity: float) -> tuple:
    """One ``account_state`` snapshot (market time)."""
    return (account, snap.time_ms, money(snap.equity), money(snap.cash), money(peak_equity),
            snap.open_positions)  # fmt: skip


@dataclass
class LedgerBatch:
    """Rows of one executor step, written atomically (one statement, one transaction).

    Keys are unique within a batch (PostgreSQL refuses to upsert one row twice in a
    statement): positions keep only their newest row, and the other lists never repeat an id.
    """

    orders: list[tuple] = field(default_factory=list)
    positions: dict[int, tuple] = field(default_factory=dict)  # newest row per position
    # Per-bar updates of positions stored earlier (``position_mark_row``); never also in
    # ``positions`` (a statement must not touch one row twice).
    marks: dict[int, tuple] = field(default_factory=dict)
    trades: list[tuple] = field(default_factory=list)
    accounts: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.orders) + len(self.positions) + len(self.marks) + len(self.trades)
                + len(self.accounts))  # fmt: skip
