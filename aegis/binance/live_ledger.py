"""``IntentLedger``: the live exchange's book of unfinished intents and how answers settle it.

Each intent not yet finished has an ``IntentBook``: the intent, its entry order, its exit
orders, the fills journaled per order and the open position. ``settle`` is the one path by
which an exchange answer (new-order answer, query, the user-data stream, reconciliation)
changes the book: it journals the state with its fills (one atomic write), then opens or closes
the position, so a crash between two writes leaves the journal behind the exchange, never
ahead; should a journal hold a final state without all of its fills, ``rebuild`` marks that
order for another query. Events for the executor collect in ``outbox``.

Fills are identified by Binance's trade id wherever they come from: the ``fills`` of a FULL
new-order answer and the TRADE ``executionReport`` events of the user-data stream describe the
same trades, so ``settle`` merges them by trade id (and never records more than the order's
executed quantity); only what neither told is estimated from the order's totals. Stream fills
of unresolved orders wait in ``stream_fills`` until their order settles, so an order whose REST
outcome was unknown can be settled from the stream alone (``settle_from_stream``).

A restart rebuilds open positions silently: their ``PositionOpened`` was announced in the life
that journaled their fill, and announcing it again would notify the trade a second time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from aegis.binance.account import AccountCache
from aegis.binance.journal import (
    ROLE_ENTRY,
    ROLE_EXIT,
    STATUS_SUBMITTING,
    JournalFill,
    JournalOrder,
    JournalState,
    OrderJournal,
    OrderState,
    PositionMark,
)
from aegis.binance.live_book import (
    LiveMarket,
    close_trade,
    fill_from_update,
    fill_totals,
    fills_from_answer,
    intent_from_detail,
    open_position,
    remainder_fill,
)
from aegis.binance.live_guard import ROLE_GUARD, GuardConfig
from aegis.binance.models import ExchangeOrder
from aegis.binance.user_events import OrderUpdate
from aegis.paper.events import IntentRejected, PaperEvent, PositionOpened, TradeClosed
from aegis.paper.exits import EXIT_FORCED
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import PaperPosition, PaperTrade

log = logging.getLogger(__name__)

REJECT_EXCHANGE_PREFIX = "exchange:"
REJECT_NOT_SENT = "not_sent"  # journaled, then the process died before sending
STATUS_UNSETTLED = "UNSETTLED"  # final on the exchange, fills not all journaled: query again
_SETTLED_KEPT = 10_000
DEFAULT_GUARD = GuardConfig()  # on by default: see ``live_guard`` for where it sits


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Live trading rules (the exit rules match ``PaperConfig``)."""

    trailing_pct: float = 0.0
    max_hold_minutes: int = 240
    bar_interval_ms: int = 60_000
    quote_asset: str = "USDT"
    commission_pct: float = 0.1  # only to estimate fees of fills rebuilt from an order query
    reconcile_interval_s: float = 300.0
    unknown_grace_s: float = 10.0  # a SUBMITTING order younger than this may still be in flight
    # While the user-data stream is connected, an order whose REST outcome is unknown waits this
    # long for the stream to tell its fate before it is queried by client id.
    stream_wait_s: float = 2.0
    # The exchange-side crash guard of every position (``live_guard``); None places none.
    crash_guard: GuardConfig | None = DEFAULT_GUARD

    def __post_init__(self) -> None:
        if self.trailing_pct < 0 or self.max_hold_minutes < 0 or self.bar_interval_ms <= 0:
            raise ValueError("trailing_pct, max_hold_minutes must be >= 0, bar_interval_ms > 0")
        if self.reconcile_interval_s <= 0 or self.unknown_grace_s < 0 or self.stream_wait_s < 0:
            raise ValueError(
                "reconcile_interval_s must be > 0, unknown_grace_s and stream_wait_s >= 0"
            )

    @property
    def max_hold_bars(self) -> int:
        return self.max_hold_minutes * 60_000 // self.bar_interval_ms

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> LiveConfig:
        """Build from ``aegis.config.Settings`` (the same exit settings as paper mode)."""
        values = {
            "trailing_pct": settings.trailing_stop_pct,
            "max_hold_minutes": settings.max_hold_minutes,
            "quote_asset": settings.quote_asset,
            "commission_pct": settings.commission_pct,
            "crash_guard": DEFAULT_GUARD if settings.live_crash_guard else None,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(slots=True)
class IntentBook:
    """Everything about one intent that is not finished yet."""

    intent: PaperIntent
    market: LiveMarket
    entry: JournalOrder
    exits: list[JournalOrder] = field(default_factory=list)
    fills: dict[str, list[JournalFill]] = field(default_factory=dict)
    position: PaperPosition | None = None
    equity_before: float = 0.0  # account equity when the entry was sent (position size %)
    guards: list[JournalOrder] = field(default_factory=list)  # crash guards, oldest first

    def orders(self) -> list[JournalOrder]:
        return [self.entry, *self.exits, *self.guards]

    def unresolved(self) -> list[JournalOrder]:
        """Orders whose state must be learnt before the position takes another order.

        A guard the exchange acknowledged is resting by design, not unresolved: only one whose
        send outcome is unknown (or final with fills missing) is."""
        return [o for o in self.orders() if needs_resolution(o)]

    def resting_guard(self) -> JournalOrder | None:
        """The guard that may be resting on the exchange (sent, not final), if any."""
        return next((g for g in reversed(self.guards) if not g.is_final), None)

    def guard_sold(self) -> Decimal:
        """Base quantity the position's guards have sold so far."""
        return sum((g.executed_qty for g in self.guards), Decimal(0))

    def held(self) -> Decimal:
        """Base quantity of the position still held (its quantity minus what guards sold)."""
        return Decimal(0) if self.position is None else self.position.quantity - self.guard_sold()

    def guard_closes(self, guard: JournalOrder) -> bool:
        """True when this final guard sold the position (nothing sellable is left)."""
        return (
            guard.is_final
            and guard.executed_qty > 0
            and (guard.status == "FILLED" or self.held() < self.market.step)
        )

    def replace_order(self, order: JournalOrder) -> None:
        cid = order.client_order_id
        if cid == self.entry.client_order_id:
            self.entry = order
        elif order.role == ROLE_GUARD:
            self.guards = [order if o.client_order_id == cid else o for o in self.guards]
        else:
            self.exits = [order if o.client_order_id == cid else o for o in self.exits]


def needs_resolution(order: JournalOrder) -> bool:
    """True for an order whose state the journal must learn from the exchange: an entry or an
    exit not final, a guard whose sending is unsettled, any order final with fills missing."""
    if order.role == ROLE_GUARD:
        return order.status in (STATUS_SUBMITTING, STATUS_UNSETTLED)
    return order.is_unresolved


class IntentLedger:
    """Unfinished intents by id, the journal they are written to, and the events they make."""

    def __init__(
        self,
        journal: OrderJournal,
        markets: Mapping[int, LiveMarket],
        config: LiveConfig,
        cache: AccountCache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.markets = dict(markets)
        self.config = config
        self.cache = cache
        self.clock = clock
        self.books: dict[int, IntentBook] = {}
        self.outbox: list[PaperEvent] = []
        self.seen: set[int] = set()
        self.rejections: Counter[str] = Counter()
        self.last_reject = ""
        self.orphan_fills: list[OrderUpdate] = []  # own fills no open intent tracks
        # Stream fills of unresolved orders, by client order id then trade id, until settled.
        self.stream_fills: dict[str, dict[int, JournalFill]] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()  # recent final orders
        self._closed: OrderedDict[int, PaperPosition] = OrderedDict()  # recently closed
        self._fee_rate = Decimal(str(config.commission_pct)) / 100

    def now_ms(self) -> int:
        """Wall-clock epoch ms (journal times; market times come from the exchange)."""
        return int(self.clock() * 1000)

    def reject(self, intent: PaperIntent, reason: str) -> None:
        """Count and announce an intent that will never trade."""
        self.rejections[reason] += 1
        self.last_reject = reason
        self.outbox.append(
            IntentRejected(intent.intent_id, intent.symbol_id, self.now_ms(), reason)
        )

    # -- rebuild -------------------------------------------------------------------------------

    async def rebuild(self, state: JournalState) -> None:
        """Recreate the books of unfinished intents from what the journal holds."""
        by_intent: dict[int, list[JournalOrder]] = {}
        for order in state.orders:
            by_intent.setdefault(order.intent_id, []).append(order)
        fills: dict[str, list[JournalFill]] = {}
        for f in state.fills:
            fills.setdefault(f.client_order_id, []).append(f)
        for intent_id, orders in sorted(by_intent.items()):
            await self._rebuild_one(intent_id, orders, fills, state.marks.get(intent_id))
        log.info("live ledger rebuilt %d unfinished intents from the journal", len(self.books))

    async def _rebuild_one(
        self,
        intent_id: int,
        orders: list[JournalOrder],
        fills: Mapping[str, Iterable[JournalFill]],
        mark: PositionMark | None,
    ) -> None:
        entry = next((o for o in orders if o.role == ROLE_ENTRY), None)
        if entry is None:
            log.error("journal: intent %d has exit orders but no entry; ignored", intent_id)
            return
        intent = intent_from_detail(entry.detail)
        market = self.markets.get(intent.symbol_id)
        if market is None:
            log.error("journal: intent %d trades unknown symbol %d", intent_id, intent.symbol_id)
            return
        self.seen.add(intent_id)
        book = IntentBook(intent, market, entry, equity_before=entry.detail.get("equity_before", 0))
        book.exits = sorted((o for o in orders if o.role == ROLE_EXIT), key=_creation)
        book.guards = sorted((o for o in orders if o.role == ROLE_GUARD), key=_creation)
        book.fills = {o.client_order_id: list(fills.get(o.client_order_id, ())) for o in orders}
        self.books[intent_id] = book
        for order in book.orders():
            recorded = sum((f.quantity for f in book.fills[order.client_order_id]), Decimal(0))
            if order.is_final and recorded < order.executed_qty:
                # Died between journaling the answer and its fills: query it again.
                book.replace_order(replace(order, status=STATUS_UNSETTLED))
        if book.entry.is_final and book.entry.executed_qty > 0:
            self._open_from_fills(book, mark)
        for exit_order in book.exits:
            if exit_order.is_final and exit_order.executed_qty > 0:
                await self._close_from_fills(book, exit_order)
                return
        for guard in book.guards:
            if book.position is not None and book.guard_closes(guard):
                await self._close_from_fills(book, guard)
                return

    def closed_position(self, intent_id: int) -> PaperPosition | None:
        """The last state of a recently closed position (its ``TradeClosed`` may be unread)."""
        return self._closed.get(intent_id)

    def recently_settled(self, client_order_id: str) -> bool:
        """True for an order whose final state came from the exchange (its events may trail)."""
        return client_order_id in self._settled

    def find(self, client_order_id: str) -> tuple[IntentBook, JournalOrder] | None:
        """The book and journal order of one of the ledger's orders, or None."""
        for book in self.books.values():
            for order in book.orders():
                if order.client_order_id == client_order_id:
                    return book, order
        return None

    def note_stream_fill(self, update: OrderUpdate) -> None:
        """Keep a TRADE event of an unresolved order until that order settles."""
        self.stream_fills.setdefault(update.client_order_id, {})[update.trade_id] = (
            fill_from_update(update)
        )

    async def settle_from_stream(self, book: IntentBook, order: JournalOrder) -> bool:
        """Settle ``order`` from the user-data stream alone, if the stream told everything.

        That is: the account cache holds the order in a final state, and the stream's fills of
        it add up to its executed quantity. Otherwise (events missed, not final yet) return
        False and change nothing: the caller asks REST."""
        cached = self.cache.order(order.client_order_id)
        if cached is None or not cached.is_final:
            return False
        fills = self.stream_fills.get(order.client_order_id, {}).values()
        if sum((f.quantity for f in fills), Decimal(0)) != cached.executed_quantity:
            return False
        await self.settle(book, order, cached.to_exchange())
        return True

    # -- settling ------------------------------------------------------------------------------

    async def settle(self, book: IntentBook, order: JournalOrder, answer: ExchangeOrder) -> None:
        """Journal an exchange answer (state and fills together) and apply it to the position."""
        cid = order.client_order_id
        self.cache.remember(answer)
        state = OrderState(
            answer.status, answer.order_id, answer.executed_quantity, answer.cumulative_quote
        )
        recorded = book.fills.setdefault(cid, [])
        new_fills: list[JournalFill] = []
        if answer.is_final:
            streamed = sorted(self.stream_fills.pop(cid, {}).values(), key=_by_trade_id)
            new_fills = merge_fills(
                recorded, fills_from_answer(answer, answer.time_ms) + streamed,
                answer.executed_quantity,
            )  # fmt: skip
            missing = remainder_fill(
                answer, recorded + new_fills, book.market, self._fee_rate, answer.time_ms
            )
            if missing is not None:
                new_fills.append(missing)
        await self.journal.order_acked(cid, state, new_fills, self.now_ms())
        recorded.extend(new_fills)
        updated = replace(
            order,
            status=answer.status,
            exchange_order_id=answer.order_id,
            executed_qty=answer.executed_quantity,
            cumulative_quote=answer.cumulative_quote,
            updated_at_ms=answer.time_ms,
        )
        book.replace_order(updated)
        if not answer.is_final:
            return
        self.stream_fills.pop(cid, None)  # events that came in during the journal write
        self._settled[cid] = None
        while len(self._settled) > _SETTLED_KEPT:
            self._settled.popitem(last=False)
        if order.role == ROLE_EXIT:
            if answer.executed_quantity > 0:
                await self._close_from_fills(book, updated)
        elif order.role == ROLE_GUARD:
            # A guard that sold part of the position only shrinks what an exit must sell.
            if book.position is not None and book.guard_closes(updated):
                await self._close_from_fills(book, updated)
        elif answer.executed_quantity > 0:
            # No mark yet: the journaled fills rebuild exactly this position.
            self._open_from_fills(book, None)
            pos = book.position
            self.outbox.append(PositionOpened(pos))
            log.info(
                "live position %d opened: %s %s at %.8g",
                pos.intent_id, pos.quantity, book.market.symbol, pos.entry_price,
            )  # fmt: skip
        else:
            del self.books[book.intent.intent_id]
            self.reject(book.intent, REJECT_EXCHANGE_PREFIX + answer.status.lower())

    async def refused(self, book: IntentBook, order: JournalOrder, reason: str) -> None:
        """The exchange does not have this order and never will: journal and drop it."""
        await self.journal.order_rejected(order.client_order_id, reason, self.now_ms())
        self.stream_fills.pop(order.client_order_id, None)
        book.replace_order(replace(order, status="REJECTED", reject_reason=reason))
        if order.role == ROLE_ENTRY:
            self.books.pop(book.intent.intent_id, None)
            self.reject(book.intent, reason)
        elif order.role == ROLE_EXIT:
            self.rejections["exit_" + reason] += 1
            self.last_reject = reason
        # A refused guard: the position trades on without it (``LiveExchange`` counts why).

    def _open_from_fills(self, book: IntentBook, mark: PositionMark | None) -> None:
        if book.position is not None:
            return
        fills = book.fills.get(book.entry.client_order_id, ())
        totals = fill_totals(fills, book.market)
        if totals.quantity <= 0:
            log.error("entry %s executed but has no fills journaled", book.entry.client_order_id)
            return
        cfg = self.config
        pos = open_position(
            book.intent, totals, min(f.executed_at_ms for f in fills),
            cfg.bar_interval_ms, cfg.trailing_pct, cfg.max_hold_bars, cfg.commission_pct,
            book.equity_before,
        )  # fmt: skip
        if mark is not None:
            pos = replace(
                pos,
                peak_high=mark.peak_high,
                bars_held=mark.bars_held,
                last_bar_ms=mark.last_bar_ms,
                mark_price=mark.mark_price,
            )
        book.position = pos

    async def _close_from_fills(self, book: IntentBook, exit_order: JournalOrder) -> None:
        """Close the position with the order that sold it (an exit or a guard); what a guard
        sold before it was released counts in the same trade."""
        pos = book.position
        if pos is None:
            log.error("exit %s filled but its position is unknown", exit_order.client_order_id)
            return
        sellers = [exit_order, *(g for g in book.guards if g.executed_qty > 0
                                 and g.client_order_id != exit_order.client_order_id)]  # fmt: skip
        fills = [f for o in sellers for f in book.fills.get(o.client_order_id, ())]
        sold = fill_totals(fills, book.market)
        detail = exit_order.detail
        # A guard's exit time is its last fill's (exchange time; the journal's is a wall clock).
        own = [f.executed_at_ms for f in book.fills.get(exit_order.client_order_id, ())]
        exit_at = int(detail.get("exit_at_ms", max(own, default=exit_order.updated_at_ms)))
        # A guard sells between bars: held until the bar of its fill, at least what was seen.
        held = max(pos.bars_held, (exit_at - pos.entry_at_ms) // self.config.bar_interval_ms + 1)
        trade = close_trade(
            pos,
            int(detail.get("exit_code", EXIT_FORCED)),
            float(detail.get("decision_price", sold.average_price)),
            sold,
            exit_at,
            int(detail.get("bars_held", held)),
        )
        left = pos.quantity - sold.quantity
        if left > book.market.step:
            log.warning(
                "exit %s sold %s of %s; %s %s stay in the account",
                exit_order.client_order_id, sold.quantity, pos.quantity, left,
                book.market.base_asset,
            )  # fmt: skip
        await self.finish(book, trade)

    async def finish(self, book: IntentBook, trade: PaperTrade) -> None:
        """Journal the position as closed and announce the trade."""
        await self.journal.position_closed(
            book.intent.intent_id, trade.exit_reason, trade.exit_at_ms
        )
        self.books.pop(book.intent.intent_id, None)
        if book.position is not None:
            self._closed[book.intent.intent_id] = book.position
            while len(self._closed) > _SETTLED_KEPT:
                self._closed.popitem(last=False)
        self.outbox.append(TradeClosed(trade))
        log.info(
            "live trade %d closed (%s): net %.3f%%, pnl %.4f",
            trade.intent_id, trade.exit_reason, trade.net_return_pct, trade.pnl,
        )  # fmt: skip

    async def mark(self, books: Iterable[IntentBook]) -> None:
        """Journal the exit-rule state of positions after a bar, in one write."""
        marks = {}
        for book in books:
            pos = book.position
            marks[book.intent.intent_id] = PositionMark(
                pos.peak_high, pos.bars_held, pos.last_bar_ms, pos.mark_price
            )
        if marks:
            await self.journal.positions_marked(marks)


def merge_fills(
    recorded: Iterable[JournalFill], candidates: Iterable[JournalFill], executed: Decimal
) -> list[JournalFill]:
    """The ``candidates`` not yet ``recorded``, by trade id, in order, up to ``executed``.

    The quantity cap is the guard against a fill told twice under two ids (an answer without
    trade ids next to the stream's): the sum of an order's fills never exceeds its execution.
    """
    recorded = list(recorded)
    seen = {f.trade_id for f in recorded}
    total = sum((f.quantity for f in recorded), Decimal(0))
    out = []
    for fill in candidates:
        if fill.trade_id in seen or total + fill.quantity > executed:
            continue
        seen.add(fill.trade_id)
        total += fill.quantity
        out.append(fill)
    return out


def _by_trade_id(fill: JournalFill) -> int:
    return fill.trade_id


def _creation(order: JournalOrder) -> tuple[int, str]:
    return order.created_at_ms, order.client_order_id
