"""``PositionGuards``: each live position's crash guard over its life, for ``LiveExchange``.

``live_guard`` plans a guard and sends it; this keeps one per open position. Right after an
entry fills, inside the exchange's lock, a SELL STOP_LOSS (or STOP_LOSS_LIMIT where the symbol
has no STOP_LOSS) is journaled (role ``guard``, id ``aegis-<id>-g<n>``, exit code 7, decision
price = its stop) and sent, resting at twice the rule's stop distance below the entry: while the
executor runs, the rule's own exit always comes first. A resting, acknowledged guard does not
hold the position up (``IntentBook.unresolved``: only a guard whose send outcome is unknown
does).

Every exit and ``flatten`` first releases the guard (its coins are locked while it rests), then
sends a new MARKET SELL — never ``cancelReplace``, whose half-failures leave either order's fate
to guess: a guard found FILLED closes the trade as ``crash_guard`` with its fill and no exit is
sent; one that sold part of the position leaves only the rest to sell; a cancel whose outcome is
unknown sends no exit this bar, the decision is sent on the next one. A guard that sells while
the executor runs is settled from its ``executionReport`` events (else one query by client id);
one that sold while it was down is found by reconciliation (journaled resting, absent from
``openOrders``: queried) **before** positions without coins are closed as ``reconciled``.

After every reconciliation, each open position without a guard that may rest gets one under the
next attempt id — never two at once. A position that cannot have one (filters, no stop order
type, MAX_NUM_ALGO_ORDERS, refused) trades on without it, logged once and counted in
``unavailable``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from aegis.binance.errors import BinanceError, HaltError, IpBanned, RateLimited
from aegis.binance.journal import JournalOrder
from aegis.binance.live_guard import (
    ROLE_GUARD,
    STATUS_ABSENT,
    CrashGuard,
    GuardOrder,
    GuardUnavailable,
    plan_guard,
)
from aegis.binance.live_ledger import REJECT_EXCHANGE_PREFIX, IntentBook, IntentLedger

log = logging.getLogger(__name__)

# Sends a journaled order once and settles its answer; returns the exchange's refusal, if any.
PlaceOrder = Callable[[IntentBook, JournalOrder, GuardOrder], Awaitable[BinanceError | None]]


class PositionGuards:
    """Places, counts and releases the crash guards of a ``LiveExchange``'s open positions.

    Runs under the exchange's lock: it shares the exchange's ledger, its last closes
    (``marks``), its set of client ids whose REST call is in flight and its ``place``."""

    def __init__(
        self,
        client: CrashGuard,
        ledger: IntentLedger,
        marks: Mapping[int, float],
        in_flight: set[str],
        place: PlaceOrder,
        checkpoint: Callable[[str], None],
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.config = ledger.config.crash_guard
        self._marks = marks
        self._in_flight = in_flight
        self._place = place
        self._checkpoint = checkpoint
        self.unavailable: Counter[str] = Counter()  # positions left unguarded, by reason
        self.releases: Counter[str] = Counter()  # guards released before exits, by status
        self._unguarded: dict[int, str] = {}  # intent -> why it has no guard (logged once)
        self._given_up: set[int] = set()  # refused by the exchange: not sent again

    async def ensure(self) -> None:
        """Give every open position without a guard one (never a second while one may rest)."""
        if self.config is None:
            return
        books = self.ledger.books
        self._unguarded = {i: r for i, r in self._unguarded.items() if i in books}
        self._given_up = {i for i in self._given_up if i in books}
        for book in list(books.values()):
            if (
                book.position is not None
                and book.intent.intent_id in self.ledger.books  # closed while one was placed
                and book.resting_guard() is None
                and not book.unresolved()
                and book.intent.intent_id not in self._given_up
            ):
                await self.place(book)

    async def place(self, book: IntentBook) -> None:
        """Journal, then send, the position's next crash guard (``live_guard``); a position
        that cannot have one trades on without it, counted in ``unavailable``."""
        cfg, pos, market = self.config, book.position, book.market
        if cfg is None or pos is None:
            return
        try:
            planned = plan_guard(
                market, pos.intent_id, len(book.guards) + 1, book.held(), pos.entry_price,
                pos.stop_pct, cfg, reference_price=self._marks.get(pos.symbol_id),
                open_algo_orders=self._open_algo_orders(market.symbol),
            )  # fmt: skip
        except GuardUnavailable as exc:
            # Planning is pure: tried again at each reconciliation (an algo-order slot may free).
            self._no_guard(book, exc.reason, str(exc))
            return
        order = JournalOrder(
            planned.client_order_id, pos.intent_id, ROLE_GUARD, market.symbol, "SELL",
            planned.order_type, planned.quantity, self.ledger.now_ms(), planned.journal_detail(),
        )  # fmt: skip
        if not await self.ledger.journal.intent_written(order):
            self._given_up.add(pos.intent_id)
            self._no_guard(book, "duplicate_id", f"{order.client_order_id} already journaled")
            return
        book.guards.append(order)
        book.fills[order.client_order_id] = []
        self._checkpoint("guard_written")
        refusal = await self._place(book, order, planned)
        placed = book.guards[-1]
        if placed.status == "REJECTED":
            # Refused for what it is (filters, "would trigger immediately"): not sent again in
            # this life; refused for the rate (429, 418): the next reconciliation tries again.
            if not isinstance(refusal, RateLimited | IpBanned):
                self._given_up.add(pos.intent_id)
            self._no_guard(book, placed.reject_reason, f"{placed.client_order_id} refused")
        else:
            self._unguarded.pop(pos.intent_id, None)

    async def release(self, book: IntentBook) -> bool:
        """Cancel the position's resting guard so its base can be sold, and settle what it did.

        False: its state is unknown (still locking the base), so no exit now. True: the exit
        may go on — unless the guard had sold the position, which is then closed."""
        guard = book.resting_guard()
        if guard is None:
            return True
        cid = guard.client_order_id
        self._in_flight.add(cid)  # its cancel event waits for this answer
        try:
            release = await self.client.release(guard.symbol, cid)
        except HaltError:
            raise
        except BinanceError as exc:
            self.releases["unknown"] += 1
            log.warning("crash guard %s not released (%s); exit retried next bar", cid, exc)
            return False
        finally:
            self._in_flight.discard(cid)
        self.releases[release.status] += 1
        if release.status == STATUS_ABSENT:
            await self.ledger.refused(book, guard, REJECT_EXCHANGE_PREFIX + "absent")
        else:
            await self.ledger.settle(book, guard, release.order)
        return True

    def _no_guard(self, book: IntentBook, reason: str, detail: str) -> None:
        """Count and log a position left without a guard, once per intent and reason."""
        intent_id = book.intent.intent_id
        if self._unguarded.get(intent_id) != reason:
            self._unguarded[intent_id] = reason
            self.unavailable[reason] += 1
            log.warning("position %d trades without a crash guard: %s", intent_id, detail)

    def _open_algo_orders(self, symbol: str) -> int:
        """Open stop orders on ``symbol`` as the account cache knows them (MAX_NUM_ALGO_ORDERS)."""
        return sum(
            1
            for o in self.ledger.cache.open_orders().values()
            if o.symbol == symbol and o.order_type.startswith(("STOP_LOSS", "TAKE_PROFIT"))
        )
