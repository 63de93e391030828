"""Reconciliation of the live ledger against the exchange over REST, and repair of the drift.

``reconcile`` (full: weight ~100) runs at start, after every user-data reconnect, periodically,
and when something suggests drift (an exit refused, a fill of an own id that no intent tracks).
It never runs because an order was answered: a single order whose outcome is unknown is settled
by ``resolve_order`` (the user-data stream, else one query by client id, weight 4). Steps:

1. ``GET /api/v3/account`` and ``GET /api/v3/openOrders`` reseed the ``AccountCache``;
2. every unresolved journal order (``SUBMITTING``, open, or final with fills missing) is
   resolved with ``resolve_order``: settled from the stream if it told everything, else queried
   by client order id; found, it is settled like any answer (an order filled while we were away
   gets its fill recorded and its position opened or closed); not found and older than the
   grace period, it was never sent (the process died first) and is marked rejected ``not_sent``
   — it cannot appear later, since nothing will ever send that id;
3. every crash guard the journal holds as resting (``live_guard``) but ``openOrders`` no longer
   lists is queried by client id and settled: a guard that filled while nobody watched closes
   its trade as ``crash_guard`` with its real fill, before step 5 could call the position
   unbacked;
4. our own open orders (``aegis-`` ids) that the journal does not hold, and fills of our own ids
   that no open intent tracks (an order marked ``not_sent`` that executed late after all), are
   reported as drift — loudly, since those coins are outside every position;
5. positions whose base asset the account no longer holds (sold by hand, withdrawn) are closed
   newest first with reason ``reconciled``; a shortfall within one lot step shrinks the position.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from decimal import Decimal

from aegis.binance.errors import NoSuchOrder
from aegis.binance.journal import JournalOrder
from aegis.binance.live_book import EXIT_RECONCILED, close_trade, is_own_client_id
from aegis.binance.live_guard import ROLE_GUARD
from aegis.binance.live_ledger import REJECT_NOT_SENT, IntentBook, IntentLedger
from aegis.binance.rest import BinanceRestClient

log = logging.getLogger(__name__)


OUTCOME_STREAMED = "streamed"  # final state journaled from the user-data stream (no request)
OUTCOME_RESOLVED = "resolved"  # final state journaled from a query
OUTCOME_OPEN = "open"  # the exchange has it, not final yet
OUTCOME_NOT_SENT = "not_sent"  # not on the exchange after the grace period: never sent
OUTCOME_UNKNOWN = "unknown"  # not on the exchange yet, but may still be on its way


# How each outcome counts in a ReconcileReport (an order still open is not resolved yet).
_COUNTED_AS = {
    OUTCOME_STREAMED: OUTCOME_RESOLVED,
    OUTCOME_RESOLVED: OUTCOME_RESOLVED,
    OUTCOME_OPEN: OUTCOME_UNKNOWN,
    OUTCOME_NOT_SENT: OUTCOME_NOT_SENT,
    OUTCOME_UNKNOWN: OUTCOME_UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciliation found and repaired."""

    reason: str
    resolved: int = 0
    not_sent: int = 0
    still_unknown: int = 0
    closed_reconciled: int = 0
    foreign_open_orders: int = 0
    drift: tuple[str, ...] = ()


async def wait_grace(ledger: IntentLedger) -> None:
    """Sleep until the youngest unresolved order is older than the grace period."""
    youngest = max(
        (o.created_at_ms for b in ledger.books.values() for o in b.unresolved()), default=None
    )
    if youngest is not None:
        wait = youngest / 1000 + ledger.config.unknown_grace_s - ledger.clock()
        if wait > 0:
            await asyncio.sleep(wait)


async def reconcile(ledger: IntentLedger, rest: BinanceRestClient, reason: str) -> ReconcileReport:
    """Compare the ledger with the exchange and repair it; return what was found."""
    snapshot = await rest.account()
    exchange_open = await rest.open_orders()
    ledger.cache.load_snapshot(snapshot, exchange_open)
    counts = {"resolved": 0, "not_sent": 0, "unknown": 0}
    drift: list[str] = []
    for book in list(ledger.books.values()):
        for order in book.unresolved():
            outcome = await resolve_order(ledger, rest, book, order)
            if order.role == ROLE_GUARD and outcome == OUTCOME_OPEN:
                outcome = OUTCOME_RESOLVED  # a guard found resting is where it should be
            outcome = _COUNTED_AS[outcome]
            counts[outcome] += 1
            if outcome != OUTCOME_UNKNOWN:
                drift.append(f"{order.client_order_id}: {outcome} ({order.status} in journal)")
    listed = {o.client_order_id: o for o in exchange_open}
    for book in list(ledger.books.values()):
        guard = book.resting_guard()
        if guard is None or guard in book.unresolved():
            continue
        found = listed.get(guard.client_order_id)
        if found is not None:
            if found.executed_quantity != guard.executed_qty:
                # Triggered and partly sold, still resting: the position holds less now.
                await ledger.settle(book, guard, found)
            continue
        # Not open any more: it filled, or was cancelled or expired, while we looked away.
        outcome = await resolve_order(ledger, rest, book, guard)
        if outcome != OUTCOME_OPEN:  # OPEN: placed after the openOrders listing was taken
            counts[_COUNTED_AS[outcome]] += 1
            drift.append(f"{guard.client_order_id}: guard {outcome} (resting in journal)")
    journal_ids = {o.client_order_id for b in ledger.books.values() for o in b.orders()}
    foreign = [
        o
        for o in exchange_open
        if is_own_client_id(o.client_order_id) and o.client_order_id not in journal_ids
    ]
    for order in foreign:
        drift.append(f"{order.client_order_id}: open on the exchange, not in the journal")
    for fill in ledger.orphan_fills:
        drift.append(
            f"{fill.client_order_id}: {fill.side} {fill.last_quantity} {fill.symbol} filled on "
            "the exchange while the journal holds the order as finished; not tracked"
        )
    ledger.orphan_fills.clear()
    closed = await _close_unbacked(ledger, drift)
    report = ReconcileReport(
        reason, counts["resolved"], counts["not_sent"], counts["unknown"], closed,
        len(foreign), tuple(drift),
    )  # fmt: skip
    if drift or counts["unknown"]:
        log.warning(
            "reconciliation (%s): %d repaired, %d still unknown: %s",
            reason, len(drift), counts["unknown"], "; ".join(drift[:10]),
        )  # fmt: skip
    else:
        log.info("reconciliation (%s): journal and exchange agree", reason)
    return report


async def resolve_order(
    ledger: IntentLedger, rest: BinanceRestClient, book: IntentBook, order: JournalOrder
) -> str:
    """Settle one unresolved order: from the user-data stream if it told everything (no
    request), else by ``GET /api/v3/order`` by client id (weight 4). Returns an ``OUTCOME_*``;
    a failed query raises its ``BinanceError``."""
    if await ledger.settle_from_stream(book, order):
        return OUTCOME_STREAMED
    try:
        found = await rest.query_order(order.symbol, orig_client_order_id=order.client_order_id)
    except NoSuchOrder:
        age_s = ledger.clock() - order.created_at_ms / 1000
        if age_s < ledger.config.unknown_grace_s:
            return OUTCOME_UNKNOWN  # may still be on its way to the matching engine
        await ledger.refused(book, order, REJECT_NOT_SENT)
        return OUTCOME_NOT_SENT
    await ledger.settle(book, order, found)
    return OUTCOME_RESOLVED if found.is_final else OUTCOME_OPEN


async def _close_unbacked(ledger: IntentLedger, drift: list[str]) -> int:
    by_symbol: dict[int, list[IntentBook]] = {}
    for book in ledger.books.values():
        if book.position is not None and not book.unresolved():
            by_symbol.setdefault(book.intent.symbol_id, []).append(book)
    closed = 0
    for books in by_symbol.values():
        market = books[0].market
        bal = ledger.cache.balance(market.base_asset)
        have = bal.free + bal.locked
        held = sum((b.held() for b in books), Decimal(0))
        # Stable sort, then reversed: among equal entry times the later submission goes first.
        newest_first = sorted(books, key=lambda b: b.position.entry_at_ms)[::-1]
        for book in newest_first:
            pos = book.position
            if held <= have:
                break
            if held - have < market.step and held - book.held() < have:
                book.position = replace(pos, quantity=pos.quantity - (held - have))
                drift.append(f"{book.entry.client_order_id}: resized by {held - have}")
                break
            held -= book.held()
            drift.append(
                f"{book.entry.client_order_id}: {book.held()} {market.base_asset} not in the "
                f"account ({have}); closed as reconciled"
            )
            trade = close_trade(
                pos, EXIT_RECONCILED, pos.mark_price, None, ledger.now_ms(), pos.bars_held
            )
            await ledger.finish(book, trade)
            closed += 1
    return closed
