"""When ``LiveExchange`` looks again at an order whose outcome it does not know yet.

An order is unresolved when its answer was lost (5xx, timeout), when it rests on the book, or
when the journal holds it from a life that died before the answer. It is never sent again: it
is settled from the user-data stream or by one query by client id, at the time this schedule
gives — at once when the stream told its final state, after ``stream_wait_s`` otherwise, at the
end of its grace period when the exchange does not have it (a second miss proves it was never
sent), every ``OPEN_RECHECK_S`` while it rests, ``RETRY_S`` after a query that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aegis.binance.journal import JournalOrder
from aegis.binance.live_guard import ROLE_GUARD
from aegis.binance.live_reconcile import OUTCOME_OPEN, OUTCOME_UNKNOWN

RECHECK_S = 1.0  # soonest second look at an order the exchange does not have yet
OPEN_RECHECK_S = 5.0  # next look at an order that is on the exchange but not final
RETRY_S = 5.0  # next look after a query that failed


class OrderChecks:
    """Client order id → when to look at it (clock seconds), for unresolved orders only."""

    def __init__(self, unknown_grace_s: float, on_scheduled: Callable[[], None]) -> None:
        """``on_scheduled`` is called when a check is added from outside the resolver's loop
        (it wakes the loop: ``LiveExchange.resolve_requested``)."""
        self._grace_s = unknown_grace_s
        self._on_scheduled = on_scheduled
        self._at: dict[str, float] = {}

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._at

    def schedule(self, client_order_id: str, at: float) -> None:
        self._at[client_order_id] = at
        self._on_scheduled()

    def not_found_at(self, order: JournalOrder, now: float) -> float:
        """When to look again for an order the exchange does not have (yet): at the end of its
        grace period, when a second miss proves it was never sent."""
        return max(order.created_at_ms / 1000 + self._grace_s, now + RECHECK_S)

    def keep(self, unresolved: Mapping[str, JournalOrder], now: float) -> None:
        """After a reconciliation: drop the checks of settled orders, add the missing ones."""
        self._at = {cid: t for cid, t in self._at.items() if cid in unresolved}
        for cid, order in unresolved.items():
            self._at.setdefault(cid, self.not_found_at(order, now))

    def due(self, now: float) -> list[str]:
        """Ids whose check is due, earliest first."""
        return [cid for cid, at in sorted(self._at.items(), key=lambda i: i[1]) if at <= now]

    def drop(self, client_order_id: str) -> None:
        self._at.pop(client_order_id, None)

    def retry(self, client_order_id: str, now: float) -> None:
        """The query failed: ask again later."""
        self._at[client_order_id] = now + RETRY_S

    def after(self, order: JournalOrder, outcome: str, now: float) -> bool:
        """Reschedule after a settlement attempt; True when ``outcome`` settled the order."""
        cid = order.client_order_id
        if outcome == OUTCOME_UNKNOWN:
            self._at[cid] = self.not_found_at(order, now)
        elif outcome == OUTCOME_OPEN and order.role != ROLE_GUARD:
            self._at[cid] = now + OPEN_RECHECK_S
        else:
            # Settled; or a guard resting, as a guard should: its events will tell.
            del self._at[cid]
            return outcome != OUTCOME_OPEN
        return False

    def next_in(self, now: float) -> float | None:
        """Seconds until the earliest check (None: nothing to check)."""
        return max(0.0, min(self._at.values()) - now) if self._at else None
