"""What the paper exchange tells its caller happened: each one is persisted and maybe notified."""

from __future__ import annotations

from dataclasses import dataclass

from aegis.paper.positions import PaperPosition, PaperTrade

# Rejection reasons of the paper exchange (a filter rejection is "filter:<FILTER TYPE>").
REJECT_UNKNOWN_SYMBOL = "unknown_symbol"
REJECT_STALE = "stale_intent"
REJECT_INSUFFICIENT_CASH = "insufficient_cash"
REJECT_CANCELLED = "cancelled"
REJECT_FILTER_PREFIX = "filter:"
# The entry is refused when the position could not be sold at its own stop (e.g. NOTIONAL).
REJECT_UNSELLABLE_PREFIX = "unsellable_at_stop:"
# An exit Binance would refuse leaves the position open; counted under this prefix.
EXIT_REJECTED_PREFIX = "exit_rejected:"


@dataclass(frozen=True, slots=True)
class PositionOpened:
    """An intent filled: the new position."""

    position: PaperPosition


@dataclass(frozen=True, slots=True)
class TradeClosed:
    """A position closed: the finished trade."""

    trade: PaperTrade


@dataclass(frozen=True, slots=True)
class IntentRejected:
    """An intent that will never fill, and why."""

    intent_id: int
    symbol_id: int
    time_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """Answer to ``PaperExchange.submit``: pending (fills on the next bar), duplicate or rejected."""

    intent_id: int
    status: str  # SUBMIT_PENDING | SUBMIT_DUPLICATE | SUBMIT_REJECTED
    reason: str = ""


SUBMIT_PENDING = "pending"
SUBMIT_DUPLICATE = "duplicate"
SUBMIT_REJECTED = "rejected"

PaperEvent = PositionOpened | TradeClosed | IntentRejected
