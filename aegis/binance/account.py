"""``AccountCache``: balances and open orders of the live account, fed by events, never polled.

The cache is seeded from one REST snapshot (``account`` + ``openOrders``) at each
reconciliation and otherwise moves only with user-data events: ``outboundAccountPosition``
sets absolute balances, ``balanceUpdate`` applies a deposit/withdrawal delta, and
``executionReport`` tracks each order by client order id. Events can arrive twice (a
connection rollover overlaps two subscriptions) or late (after a newer snapshot): an update
older than what the cache holds is ignored, and a fill is counted once per
(symbol, trade id), so replays never double a fill.

Listeners: ``order_listeners`` hear every order update once (a replayed fill is not passed
on), ``fill_listeners`` only the updates that carry a fill. ``LiveExchange`` uses them to settle
orders from the stream instead of asking REST.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from aegis.binance.models import AccountSnapshot, Balance, ExchangeOrder
from aegis.binance.user_events import (
    BalanceDelta,
    BalancesUpdate,
    OrderListUpdate,
    OrderUpdate,
    UserEvent,
)

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
FINAL_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"})


@dataclass(frozen=True, slots=True)
class CachedOrder:
    """The latest known state of one order."""

    symbol: str
    client_order_id: str
    order_id: int
    side: str
    order_type: str
    status: str
    quantity: Decimal
    executed_quantity: Decimal
    cumulative_quote: Decimal
    update_time_ms: int

    @classmethod
    def from_exchange(cls, order: ExchangeOrder) -> CachedOrder:
        """The state a REST answer (new order, query, open orders) reports."""
        return cls(
            order.symbol,
            order.client_order_id,
            order.order_id,
            order.side,
            order.order_type,
            order.status,
            order.quantity,
            order.executed_quantity,
            order.cumulative_quote,
            order.time_ms,
        )

    @property
    def is_final(self) -> bool:
        """True when the order can no longer change."""
        return self.status in FINAL_STATUSES

    def to_exchange(self) -> ExchangeOrder:
        """The state as an ``ExchangeOrder`` without fills (like an order query's answer)."""
        return ExchangeOrder(
            self.symbol,
            self.order_id,
            self.client_order_id,
            self.side,
            self.order_type,
            self.status,
            _ZERO,
            self.quantity,
            self.executed_quantity,
            self.cumulative_quote,
            self.update_time_ms,
        )


class AccountCache:
    """In-memory account state; ``apply`` is the only way events change it."""

    def __init__(self, keep_final: int = 10_000) -> None:
        """``keep_final`` bounds how many finished orders stay queryable."""
        self._balances: dict[str, Balance] = {}
        self._balance_time: dict[str, int] = {}
        self._open: dict[str, CachedOrder] = {}
        self._final: OrderedDict[str, CachedOrder] = OrderedDict()
        self._keep_final = keep_final
        self._fills_seen: set[tuple[str, int]] = set()
        self.order_listeners: list[Callable[[OrderUpdate], None]] = []
        self.fill_listeners: list[Callable[[OrderUpdate], None]] = []
        self.events_applied = 0
        self.stale_ignored = 0
        self.duplicate_fills = 0

    # -- reading -----------------------------------------------------------------------------

    def balance(self, asset: str) -> Balance:
        """Free and locked amount of ``asset`` (zero when unknown)."""
        return self._balances.get(asset) or Balance(asset, _ZERO, _ZERO)

    def balances(self) -> dict[str, Balance]:
        """Every non-zero balance by asset."""
        return {a: b for a, b in self._balances.items() if b.free or b.locked}

    def open_orders(self) -> dict[str, CachedOrder]:
        """Open orders by client order id."""
        return dict(self._open)

    def order(self, client_order_id: str) -> CachedOrder | None:
        """The last known state of an order (open or recently finished)."""
        return self._open.get(client_order_id) or self._final.get(client_order_id)

    # -- writing -----------------------------------------------------------------------------

    def load_snapshot(
        self, snapshot: AccountSnapshot, open_orders: Iterable[ExchangeOrder]
    ) -> None:
        """Replace balances and the open-order set with a REST snapshot."""
        self._balances = dict(snapshot.balances)
        self._balance_time = {a: snapshot.update_time_ms for a in snapshot.balances}
        self._open = {}
        for order in open_orders:
            self._open[order.client_order_id] = CachedOrder.from_exchange(order)

    def remember(self, order: ExchangeOrder) -> None:
        """Record an order state learnt from a REST answer (new order, query)."""
        self._store(CachedOrder.from_exchange(order))

    def apply(self, event: UserEvent) -> None:
        """Fold one user-data event into the cache."""
        self.events_applied += 1
        if isinstance(event, OrderUpdate):
            self._apply_order(event)
        elif isinstance(event, BalancesUpdate):
            for bal in event.balances:
                if event.update_time_ms < self._balance_time.get(bal.asset, 0):
                    self.stale_ignored += 1
                    continue
                self._balances[bal.asset] = bal
                self._balance_time[bal.asset] = event.update_time_ms
        elif isinstance(event, BalanceDelta):
            if event.clear_time_ms < self._balance_time.get(event.asset, 0):
                self.stale_ignored += 1  # already inside a newer absolute balance
                return
            old = self.balance(event.asset)
            self._balances[event.asset] = Balance(event.asset, old.free + event.delta, old.locked)
            self._balance_time[event.asset] = event.clear_time_ms
        elif isinstance(event, OrderListUpdate):
            log.info(
                "order list %s %s: %s",
                event.list_client_order_id,
                event.contingency_type,
                event.list_order_status,
            )

    def _apply_order(self, ev: OrderUpdate) -> None:
        if ev.is_trade:
            key = (ev.symbol, ev.trade_id)
            if key in self._fills_seen:
                self.duplicate_fills += 1
                return
            self._fills_seen.add(key)
        known = self.order(ev.client_order_id)
        if known is not None and (
            ev.cumulative_quantity < known.executed_quantity or (known.is_final and not ev.is_final)
        ):
            self.stale_ignored += 1
        else:
            self._store(
                CachedOrder(
                    ev.symbol,
                    ev.client_order_id,
                    ev.order_id,
                    ev.side,
                    ev.order_type,
                    ev.status,
                    ev.quantity,
                    ev.cumulative_quantity,
                    ev.cumulative_quote,
                    ev.transaction_time_ms,
                )
            )
        for listener in self.order_listeners:
            listener(ev)
        if ev.is_trade:
            for listener in self.fill_listeners:
                listener(ev)

    def _store(self, order: CachedOrder) -> None:
        if order.is_final:
            self._open.pop(order.client_order_id, None)
            self._final[order.client_order_id] = order
            self._final.move_to_end(order.client_order_id)
            while len(self._final) > self._keep_final:
                self._final.popitem(last=False)
        else:
            self._open[order.client_order_id] = order
