"""Frozen value objects of the paper book: an open position, a closed trade, an equity snapshot.

Prices come in two flavours, kept apart on purpose:
- ``entry_price`` / ``close_price`` are the *observed* market prices (bar open, stop level, …) —
  the inputs of ``trade_return_pct`` and of the brain's labels;
- ``entry_fill_price`` / ``close_fill_price`` are what the account paid and received after
  slippage (against us on both sides).

Commission is charged in the quote asset on the quote value of each fill (as with a BNB-less
account whose fee is converted to quote), so the bought quantity stays fully sellable and the net
% return of a trade does not depend on its size. ``reward_score`` is the net % return of the
trade after fees and slippage: the very quantity the model predicts, so a reward can be compared
with its prediction without any conversion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from aegis.records import N_FEATURES, REPORT_DTYPE, REPORT_TRADE_CLOSED


class PaperRecordError(ValueError):
    """A persisted paper position cannot be rebuilt; the message names the field."""


@dataclass(frozen=True, slots=True)
class PaperPosition:
    """An open virtual long, with the exit rules it was opened under and its bar-by-bar state."""

    intent_id: int
    symbol_id: int
    quantity: Decimal
    entry_at_ms: int  # open time of the bar whose open filled the entry
    entry_price: float  # observed price (bar open) before slippage
    entry_fill_price: float  # entry_price * (1 + slippage)
    notional: float  # quantity * entry_fill_price, quote asset, before commission
    entry_commission: float  # quote asset
    commission_pct: float
    slippage_pct: float
    stop_pct: float
    take_pct: float
    trailing_pct: float
    max_hold_bars: int  # 0 disables the time exit
    peak_high: float  # highest high since entry up to the last processed bar
    bars_held: int  # bars processed since entry (the entry bar counts as 1)
    last_bar_ms: int  # open time of the last processed bar; older or equal bars are replays
    mark_price: float  # last observed close, used for equity and forced exits
    decision_time_ms: int
    predicted_return_pct: float
    confidence: float
    model_version: int
    position_size_pct: float  # notional / equity at entry, %
    features: tuple[float, ...]

    @property
    def cost(self) -> float:
        """Cash the entry took out of the account: notional plus commission."""
        return self.notional + self.entry_commission

    @property
    def market_value(self) -> float:
        """Quantity at the last observed close (no exit costs deducted)."""
        return float(self.quantity) * self.mark_price

    def after_bar(
        self, peak_high: float, bars_held: int, last_bar_ms: int, mark_price: float
    ) -> PaperPosition:
        """This position with one more bar processed (``peak_high`` … ``mark_price`` replaced).

        The exchange calls this for every bar of every open position; ``dataclasses.replace``
        (which looks every field up by name) costs twice as much.
        """
        return PaperPosition(
            intent_id=self.intent_id, symbol_id=self.symbol_id, quantity=self.quantity,
            entry_at_ms=self.entry_at_ms, entry_price=self.entry_price,
            entry_fill_price=self.entry_fill_price, notional=self.notional,
            entry_commission=self.entry_commission, commission_pct=self.commission_pct,
            slippage_pct=self.slippage_pct, stop_pct=self.stop_pct, take_pct=self.take_pct,
            trailing_pct=self.trailing_pct, max_hold_bars=self.max_hold_bars,
            peak_high=peak_high, bars_held=bars_held, last_bar_ms=last_bar_ms,
            mark_price=mark_price, decision_time_ms=self.decision_time_ms,
            predicted_return_pct=self.predicted_return_pct, confidence=self.confidence,
            model_version=self.model_version, position_size_pct=self.position_size_pct,
            features=self.features,
        )  # fmt: skip

    def to_record(self) -> dict[str, Any]:
        """Plain dict for the ``virtual_positions`` row (Decimal quantity, list of features)."""
        return _row(self)

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> PaperPosition:
        """Rebuild from a persisted row; raise ``PaperRecordError`` naming a missing/bad field."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in row:
                raise PaperRecordError(f"virtual position: missing field {f.name!r}")
            values[f.name] = _coerce_field(f.name, f.type, row[f.name])
        position = cls(**values)
        _check_position(position)
        return position


@dataclass(frozen=True, slots=True)
class PaperTrade:
    """A closed virtual trade: everything ``virtual_trades`` and the brain's learning need."""

    intent_id: int
    symbol_id: int
    quantity: Decimal
    entry_at_ms: int
    exit_at_ms: int
    duration_ms: int
    bars_held: int
    entry_price: float
    entry_fill_price: float
    close_price: float
    close_fill_price: float
    notional: float
    gross_return_pct: float
    net_return_pct: float
    commission_quote: float  # both sides
    slippage_quote: float  # both sides, cost versus the observed prices
    commission_pct: float
    slippage_pct: float
    pnl: float  # quote asset, after commission and slippage
    reward_score: float  # = net_return_pct (see module docstring)
    exit_reason: str
    exit_code: int  # EXIT_* of aegis.paper.exits
    decision_time_ms: int
    predicted_return_pct: float
    confidence: float
    model_version: int
    position_size_pct: float
    features: tuple[float, ...]

    @classmethod
    def closing(
        cls,
        pos: PaperPosition,
        *,
        time_ms: int,
        bars_held: int,
        entry_fill_price: float,
        close_price: float,
        close_fill_price: float,
        gross_return_pct: float,
        net_return_pct: float,
        commission_quote: float,
        slippage_quote: float,
        slippage_pct: float,
        pnl: float,
        exit_reason: str,
        exit_code: int,
    ) -> PaperTrade:
        """The trade that closes ``pos``: what it was opened with, plus how it ended.

        Paper and live exits compute the ending differently (modelled fills vs real ones); the
        rest of the trade is the position's and must not be re-typed at each call site.
        """
        return cls(
            intent_id=pos.intent_id,
            symbol_id=pos.symbol_id,
            quantity=pos.quantity,
            entry_at_ms=pos.entry_at_ms,
            exit_at_ms=time_ms,
            duration_ms=time_ms - pos.entry_at_ms,
            bars_held=bars_held,
            entry_price=pos.entry_price,
            entry_fill_price=entry_fill_price,
            close_price=close_price,
            close_fill_price=close_fill_price,
            notional=pos.notional,
            gross_return_pct=gross_return_pct,
            net_return_pct=net_return_pct,
            commission_quote=commission_quote,
            slippage_quote=slippage_quote,
            commission_pct=pos.commission_pct,
            slippage_pct=slippage_pct,
            pnl=pnl,
            reward_score=net_return_pct,
            exit_reason=exit_reason,
            exit_code=exit_code,
            decision_time_ms=pos.decision_time_ms,
            predicted_return_pct=pos.predicted_return_pct,
            confidence=pos.confidence,
            model_version=pos.model_version,
            position_size_pct=pos.position_size_pct,
            features=pos.features,
        )

    def to_record(self) -> dict[str, Any]:
        """Plain dict for the ``virtual_trades`` row."""
        return _row(self)

    def to_report(self) -> np.ndarray:
        """A 0-d REPORT_DTYPE record (kind TRADE_CLOSED) for the executor → brain ring."""
        rec = np.zeros((), dtype=REPORT_DTYPE)
        rec["intent_id"] = self.intent_id
        rec["symbol_id"] = self.symbol_id
        rec["kind"] = REPORT_TRADE_CLOSED
        rec["entry_time_ms"] = self.entry_at_ms
        rec["exit_time_ms"] = self.exit_at_ms
        rec["gross_return_pct"] = self.gross_return_pct
        rec["net_return_pct"] = self.net_return_pct
        rec["model_version"] = self.model_version
        return rec


@dataclass(frozen=True, slots=True)
class EquitySnapshot:
    """Account value at one instant: cash plus open positions marked at their last close."""

    time_ms: int
    cash: float
    positions_value: float
    equity: float
    open_positions: int
    pending_intents: int


def _row(obj: PaperPosition | PaperTrade) -> dict[str, Any]:
    # A shallow copy: dataclasses.asdict deep-copies every float and costs ~250 us per row.
    row = {name: getattr(obj, name) for name in obj.__slots__}
    row["features"] = list(obj.features)
    return row


_INT_FIELDS = {"intent_id", "symbol_id", "entry_at_ms", "max_hold_bars", "bars_held",
               "last_bar_ms", "decision_time_ms", "model_version"}  # fmt: skip


def _coerce_field(name: str, kind: Any, value: Any) -> Any:
    try:
        if name == "quantity":
            qty = Decimal(str(value))
            if not qty.is_finite() or qty <= 0:
                raise ValueError(value)
            return qty
        if name == "features":
            feats = tuple(float(x) for x in value)
            if len(feats) != N_FEATURES:
                raise ValueError(f"{len(feats)} values")
            return feats
        if name in _INT_FIELDS:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        number = float(value)
        return number
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise PaperRecordError(f"virtual position: field {name!r} has bad value {value!r}") from exc


def _check_position(p: PaperPosition) -> None:
    prices = ("entry_price", "entry_fill_price", "notional", "peak_high", "mark_price")
    for name in prices:
        value = getattr(p, name)
        if not (math.isfinite(value) and value > 0.0):
            raise PaperRecordError(f"virtual position {p.intent_id}: {name} {value!r} must be > 0")
    if not (0.0 < p.stop_pct < 100.0) or p.take_pct <= 0.0 or p.trailing_pct < 0.0:
        raise PaperRecordError(f"virtual position {p.intent_id}: exit distances out of range")
    if p.bars_held < 0 or p.max_hold_bars < 0:
        raise PaperRecordError(f"virtual position {p.intent_id}: negative bar count")
