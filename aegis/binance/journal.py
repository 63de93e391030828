"""The order journal: what the live exchange writes, durably, before and after each order.

Protocol (every call returns only once the write is durable):

1. ``intent_written(order)`` **before** the order is sent: the order with status
   ``SUBMITTING``. Returns False when that client order id was already written (a replayed
   intent): the caller must not send anything.
2. ``order_acked(client_order_id, state, fills, time_ms)`` when the exchange reports the order
   (new-order answer, a query, a reconciliation): status, exchange id, executed quantity, and
   the fills learnt with it — one atomic write, so a state is never durable without its fills;
   fills are idempotent per (symbol, trade id).
3. ``order_rejected(client_order_id, reason, time_ms)``: the order does not exist on the exchange
   and never will (refused, or never sent before a crash).
4. ``positions_marked(marks)``: the exit-rule state of the open positions after a bar (one write
   per bar, whatever the number of positions).
5. ``position_closed(intent_id, reason, time_ms)``: the position is done (after an exit fill,
   or repaired by reconciliation).
6. ``load_unfinished()``: every order (with its fills and marks) of intents whose position is
   not closed, for the rebuild after a restart.

A crash between any two calls leaves the journal one step behind the exchange, never ahead:
the restart reconciles each ``SUBMITTING`` or open order by client order id (see ``live.py``).
``MemoryOrderJournal`` is the in-memory implementation for tests and paper-like dry runs;
``aegis.binance.journal_pg.PgOrderJournal`` writes the ``orders`` and ``trades`` tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

STATUS_SUBMITTING = "SUBMITTING"
FINAL_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"})
ROLE_ENTRY = "entry"
ROLE_EXIT = "exit"
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the exchange says about an order (from ``ExchangeOrder`` or an update)."""

    status: str
    exchange_order_id: int
    executed_qty: Decimal
    cumulative_quote: Decimal


@dataclass(frozen=True, slots=True)
class JournalOrder:
    """One order as the journal keeps it; ``detail`` holds the intent (entry) or exit data."""

    client_order_id: str
    intent_id: int
    role: str  # ROLE_ENTRY | ROLE_EXIT
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    created_at_ms: int
    detail: Mapping[str, Any] = field(default_factory=dict)
    status: str = STATUS_SUBMITTING
    exchange_order_id: int | None = None
    executed_qty: Decimal = _ZERO
    cumulative_quote: Decimal = _ZERO
    reject_reason: str = ""
    updated_at_ms: int = 0

    @property
    def is_final(self) -> bool:
        """True when the exchange can no longer change this order."""
        return self.status in FINAL_STATUSES

    @property
    def is_unresolved(self) -> bool:
        """True when the journal does not know the order's final state."""
        return not self.is_final


@dataclass(frozen=True, slots=True)
class JournalFill:
    """One fill of an order. ``estimated`` fills were rebuilt from an order query (no trade
    list): one aggregate fill at the average price, commission at the configured rate."""

    client_order_id: str
    symbol: str
    trade_id: int
    side: str
    price: Decimal
    quantity: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    is_maker: bool
    executed_at_ms: int
    exchange_order_id: int | None = None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class PositionMark:
    """Exit-rule state of an open position after its last processed bar."""

    peak_high: float
    bars_held: int
    last_bar_ms: int
    mark_price: float


@dataclass(frozen=True, slots=True)
class JournalState:
    """Unfinished business loaded at start: orders, their fills and position marks."""

    orders: tuple[JournalOrder, ...]
    fills: tuple[JournalFill, ...]
    marks: Mapping[int, PositionMark]


class OrderJournal(Protocol):
    """Durable record of live orders; see the module docstring for the call order."""

    async def intent_written(self, order: JournalOrder) -> bool: ...
    async def order_acked(
        self, client_order_id: str, state: OrderState, fills: Sequence[JournalFill], time_ms: int
    ) -> None: ...
    async def order_rejected(self, client_order_id: str, reason: str, time_ms: int) -> None: ...
    async def positions_marked(self, marks: Mapping[int, PositionMark]) -> None: ...
    async def position_closed(self, intent_id: int, reason: str, time_ms: int) -> None: ...
    async def load_unfinished(self) -> JournalState: ...


class JournalError(RuntimeError):
    """A journal call named an order it does not hold."""


class MemoryOrderJournal:
    """``OrderJournal`` in memory (tests, dry runs); same semantics as the PostgreSQL one."""

    def __init__(self) -> None:
        self.orders: dict[str, JournalOrder] = {}
        self.fills: dict[tuple[str, int], JournalFill] = {}
        self.marks: dict[int, PositionMark] = {}
        self.closed: dict[int, tuple[str, int]] = {}
        self.calls: list[tuple[str, str]] = []  # (method, client order id or intent id)

    def _get(self, client_order_id: str) -> JournalOrder:
        try:
            return self.orders[client_order_id]
        except KeyError:
            raise JournalError(f"journal has no order {client_order_id}") from None

    async def intent_written(self, order: JournalOrder) -> bool:
        self.calls.append(("intent_written", order.client_order_id))
        if order.client_order_id in self.orders:
            return False
        self.orders[order.client_order_id] = replace(order, updated_at_ms=order.created_at_ms)
        return True

    async def order_acked(
        self, client_order_id: str, state: OrderState, fills: Sequence[JournalFill], time_ms: int
    ) -> None:
        self.calls.append(("order_acked", client_order_id))
        old = self._get(client_order_id)
        for fill in fills:
            self.fills.setdefault((fill.symbol, fill.trade_id), fill)
        if old.is_final and state.status not in FINAL_STATUSES:  # an older answer
            return
        self.orders[client_order_id] = replace(
            old,
            status=state.status,
            exchange_order_id=state.exchange_order_id,
            executed_qty=state.executed_qty,
            cumulative_quote=state.cumulative_quote,
            updated_at_ms=time_ms,
        )

    async def order_rejected(self, client_order_id: str, reason: str, time_ms: int) -> None:
        self.calls.append(("order_rejected", client_order_id))
        old = self._get(client_order_id)
        self.orders[client_order_id] = replace(
            old, status="REJECTED", reject_reason=reason, updated_at_ms=time_ms
        )

    async def positions_marked(self, marks: Mapping[int, PositionMark]) -> None:
        self.marks.update(marks)

    async def position_closed(self, intent_id: int, reason: str, time_ms: int) -> None:
        self.calls.append(("position_closed", str(intent_id)))
        self.closed[intent_id] = (reason, time_ms)

    async def load_unfinished(self) -> JournalState:
        done = set(self.closed)
        for order in self.orders.values():
            if order.role == ROLE_ENTRY and order.is_final and order.executed_qty == 0:
                done.add(order.intent_id)
        orders = tuple(o for o in self.orders.values() if o.intent_id not in done)
        ids = {o.client_order_id for o in orders}
        fills = tuple(f for f in self.fills.values() if f.client_order_id in ids)
        marks = {i: m for i, m in self.marks.items() if i not in done}
        return JournalState(orders, fills, marks)
