"""``LiveExchange``: brain intents as real Binance spot orders, with the paper exchange's shape.

Interface (what the executor calls in either mode): ``submit(intent) -> SubmitOutcome``,
``on_bar(...) -> events``, ``flatten(...) -> events``, ``open_positions()``, ``equity()``,
``snapshot()``; events are the paper ones (``PositionOpened``, ``TradeClosed``,
``IntentRejected``). Live-only: ``start()`` (rebuild + reconcile before any intent),
``reconcile(reason)``, ``resolve_due()``, ``drain_events()`` (events produced by submit,
the stream and reconciliation), ``closed_position(intent_id)`` and ``run_reconciler(stream)``.
Every method is a coroutine; they serialise on one lock, so a reconciliation never interleaves
with an order in flight.

Order safety:

* ``newClientOrderId`` is derived from the intent id (``aegis-<id>``; exits
  ``aegis-<id>-x<attempt>``, never reused), and the order is written to the ``OrderJournal``
  **before** it is sent; a second intent with the same id is a duplicate and sends nothing.
* An order is settled by its REST answer; the user-data events of an order whose REST call is
  still in flight (they usually arrive first) only wait for that answer, so an ordinary fill
  costs no request beyond the order itself. Fills are deduplicated by trade id (the FULL answer
  and the stream describe the same trades).
* An unknown outcome (5xx, timeout, -1007) is **never resolved by sending again**. With the
  user-data stream connected, the order's ``executionReport`` events settle it (status,
  cumulative quantity and quote, each fill with its commission) — no request at all; if the
  stream has not told its final state within ``stream_wait_s``, one order query by client id
  (weight 4) settles it. Without the stream, the REST client queries at once (up to 3 times).
  Until it is resolved the position takes no other order.
* An order still ``SUBMITTING`` in the journal that the exchange does not know (the process died
  before sending) is marked rejected once older than ``unknown_grace_s``; it was never placed, so
  nothing is lost and nothing can be doubled.

Exits — executor-managed on closed 1m bars; exchange-side only as a far crash guard:

    AEGIS closes live positions itself: on every closed 1-minute bar the executor runs the very
    function the paper exchange and the brain's training labels use (``exit_check``:
    stop-loss, take-profit, trailing stop, time exit, pessimistic order inside a bar) and, when
    it fires, sends a MARKET SELL of the position's quantity. One definition of the exit rules
    means a live trade is the trade the model was trained to predict and the trade paper mode
    reports. Exchange-side OCO/stop orders would fire on intra-bar ticks with Binance's own
    trigger semantics: a STOP_LOSS_LIMIT can be jumped in a gap and rest unfilled, an OCO has no
    time exit, and ``trailingDelta`` trails every tick rather than the previous bars' high the
    labels use — live results would drift from labels and paper in ways no test can pin down. The price of this choice is latency: a stop is acted on at the close of
    the bar that crossed it, up to a minute after the touch, and fills at the market then — the
    trade records both the rule's level (``close_price``) and the real fill
    (``close_fill_price``), so the gap is measured, not hidden. The risk it adds — an executor
    that is down cannot stop anything — is bounded by the watchdog restarting the executor
    within seconds, by reconciliation on start, by the kill switch, and by the crash guard.

Crash guard (``live_guard`` plans and sends one, ``position_guards`` keeps one per position;
``LiveConfig.crash_guard``, on by default, ``None`` turns it off): a resting SELL stop far below
the rule's stop, placed right after an entry fills and released before every exit.

Reconciliation (``reconcile``, weight ~100): at start, after every user-data reconnect, every
``reconcile_interval_s``, and when drift is suspected (an exit refused, a fill of an own id no
intent tracks) — never because an order was answered. REST ``account`` and ``openOrders``
reseed the ``AccountCache``; each unresolved journal order is settled (from the stream, else by
a query by client id; an order filled while we were away gets its fill recorded and its
position opened or closed); each guard no longer open is queried and settled; a position whose
base asset balance is gone from the account is closed with reason ``reconciled``.
``reconciliations`` counts them by reason, ``resolutions`` the targeted settlements by outcome.

Restart: positions rebuilt from the journal are not announced again (no second "trade opened"):
their ``PositionOpened`` belonged to the life that journaled the fill. An entry the journal
held unresolved and reconciliation finds filled is announced once, as any fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal

from aegis.binance.account import AccountCache
from aegis.binance.errors import (
    BinanceError,
    HaltError,
    IpBanned,
    OrderRejected,
    RateLimited,
    UnknownOrderState,
)
from aegis.binance.filters import FilterRejected, InvalidOrder
from aegis.binance.journal import ROLE_ENTRY, ROLE_EXIT, JournalOrder, OrderJournal
from aegis.binance.live_book import (
    LiveMarket,
    entry_client_id,
    exit_client_id,
    intent_detail,
    is_own_client_id,
)
from aegis.binance.live_checks import OPEN_RECHECK_S, RETRY_S, OrderChecks
from aegis.binance.live_guard import (
    ROLE_GUARD,
    CrashGuard,
    GuardConfig,
    GuardOrder,
)
from aegis.binance.live_ledger import (
    REJECT_EXCHANGE_PREFIX,
    REJECT_NOT_SENT,
    IntentBook,
    IntentLedger,
    LiveConfig,
)
from aegis.binance.live_reconcile import (
    ReconcileReport,
    reconcile,
    resolve_order,
    wait_grace,
)
from aegis.binance.models import ExchangeOrder
from aegis.binance.position_guards import PositionGuards
from aegis.binance.rest import BinanceRestClient
from aegis.binance.user_events import OrderUpdate
from aegis.binance.userdata import UserDataStream
from aegis.paper.events import (
    REJECT_FILTER_PREFIX,
    REJECT_INSUFFICIENT_CASH,
    REJECT_UNKNOWN_SYMBOL,
    REJECT_UNSELLABLE_PREFIX,
    SUBMIT_DUPLICATE,
    SUBMIT_PENDING,
    SUBMIT_REJECTED,
    PaperEvent,
    SubmitOutcome,
)
from aegis.paper.exits import EXIT_FORCED, EXIT_NONE, exit_check
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import EquitySnapshot, PaperPosition

log = logging.getLogger(__name__)

SUBMIT_FILLED = "filled"
Checkpoint = Callable[[str], None]
REST_LOOKUPS = 3  # the REST client's own queries after an unknown outcome, without the stream

__all__ = [
    "REJECT_EXCHANGE_PREFIX",
    "REJECT_NOT_SENT",
    "SUBMIT_FILLED",
    "GuardConfig",
    "LiveConfig",
    "LiveExchange",
    "LiveMarket",
    "ReconcileReport",
]


class LiveExchange:
    """Real orders on Binance spot for brain intents (spot longs), journaled and reconciled."""

    def __init__(
        self,
        rest: BinanceRestClient,
        journal: OrderJournal,
        markets: Mapping[int, LiveMarket],
        config: LiveConfig | None = None,
        *,
        cache: AccountCache | None = None,
        clock: Callable[[], float] = time.time,
        checkpoint: Checkpoint | None = None,
        known_intent_ids: Iterable[int] = (),
    ) -> None:
        """``markets`` maps the ring's symbol ids to symbols; ``known_intent_ids`` are intents
        already traded or rejected (a replayed one is a duplicate, as in paper mode);
        ``checkpoint(name)`` is called at "intent_written" and "order_answered" (crash tests
        kill the process there)."""
        self.rest = rest
        self.config = config or LiveConfig()
        self.cache = cache or AccountCache()
        self.ledger = IntentLedger(journal, markets, self.config, self.cache, clock)
        self.ledger.seen.update(int(i) for i in known_intent_ids)
        self._checkpoint = checkpoint or (lambda name: None)
        self._lock = asyncio.Lock()
        self._marks: dict[int, float] = {}
        self._last_bar: dict[int, int] = {}
        self.reconcile_requested = asyncio.Event()  # a full reconciliation is wanted
        self.resolve_requested = asyncio.Event()  # an order check was scheduled or is due
        self.last_report: ReconcileReport | None = None
        self.reconciliations: Counter[str] = Counter()  # full reconciliations by reason
        self.resolutions: Counter[str] = Counter()  # targeted settlements by outcome
        self.stream: UserDataStream | None = None
        self._in_flight: set[str] = set()  # client ids whose REST call is not answered yet
        self._checks = OrderChecks(self.config.unknown_grace_s, self.resolve_requested.set)
        self.guard = CrashGuard(rest)
        self.guards = PositionGuards(self.guard, self.ledger, self._marks, self._in_flight,
                                     self._place, self._checkpoint)  # fmt: skip
        # Exits decided while their guard could not be released: sent on the next bar.
        self._deferred: dict[int, tuple[int, float, int, int]] = {}
        self.cache.order_listeners.append(self._on_order_event)

    def user_data_stream(self, url: str, api_key: str, api_secret: str, **kwargs) -> UserDataStream:
        """A ``UserDataStream`` that feeds this exchange's account cache (start it yourself).

        While it is connected, unknown order outcomes are settled from its events first."""
        self.stream = UserDataStream(
            url, api_key, api_secret, server_time_ms=self.rest.server_time_ms,
            on_event=self.cache.apply, **kwargs,
        )  # fmt: skip
        return self.stream

    def _stream_live(self) -> bool:
        stream = self.stream
        return stream is not None and stream.connected.is_set() and stream.failure is None

    # -- queries -------------------------------------------------------------------------------

    @property
    def rejections(self):
        """Rejection counter per reason (entries, and exits as ``exit_<reason>``)."""
        return self.ledger.rejections

    @property
    def guards_unavailable(self) -> Counter[str]:
        """Positions left without a crash guard, by reason."""
        return self.guards.unavailable

    @property
    def guard_releases(self) -> Counter[str]:
        """Crash guards released before exits, by the status they were found in."""
        return self.guards.releases

    def open_positions(self) -> tuple[PaperPosition, ...]:
        """Open positions, oldest first."""
        return tuple(b.position for b in self.ledger.books.values() if b.position is not None)

    def open_count(self) -> int:
        """Open positions plus intents whose entry is not settled yet."""
        return len(self.ledger.books)

    def symbol_exposure(self, symbol_id: int) -> float:
        """Quote exposure on one symbol: positions at mark plus unsettled entries' notional."""
        total = 0.0
        for book in self.ledger.books.values():
            if book.intent.symbol_id == symbol_id:
                pos = book.position
                total += pos.market_value if pos is not None else book.intent.notional
        return total

    def cash(self) -> float:
        """Quote-asset balance (free + locked) as the account cache knows it: current while the
        ``user_data_stream`` runs, as of the last reconciliation otherwise."""
        bal = self.cache.balance(self.config.quote_asset)
        return float(bal.free + bal.locked)

    def equity(self) -> float:
        """Quote balance plus every open position at its last observed close."""
        return self.cash() + sum(p.market_value for p in self.open_positions())

    def snapshot(self, time_ms: int) -> EquitySnapshot:
        """The account at ``time_ms`` for ``account_state``."""
        cash, value = self.cash(), sum(p.market_value for p in self.open_positions())
        opened = len(self.open_positions())
        pending = len(self.ledger.books) - opened
        return EquitySnapshot(time_ms, cash, value, cash + value, opened, pending)

    def closed_position(self, intent_id: int) -> PaperPosition | None:
        """The last state of a recently closed position: a ``TradeClosed`` drained after a
        restart may close a position its reader never saw open (closed at ``start``)."""
        return self.ledger.closed_position(intent_id)

    def drain_events(self) -> list[PaperEvent]:
        """Events produced outside ``on_bar`` (submit, stream settlements, reconciliation)
        since the last call."""
        events, self.ledger.outbox = self.ledger.outbox, []
        return events

    # -- start and reconciliation ------------------------------------------------------------

    async def start(self) -> ReconcileReport:
        """Rebuild unfinished intents from the journal, then reconcile with the exchange.

        Call before the first intent: the account cache (cash) is seeded here. Rebuilt
        positions are not announced (see the module docstring)."""
        async with self._lock:
            await self.ledger.rebuild(await self.ledger.journal.load_unfinished())
            await wait_grace(self.ledger)
            return await self._reconcile_locked("start")

    async def reconcile(self, reason: str) -> ReconcileReport:
        """Compare with the exchange over REST and repair the drift (``live_reconcile``)."""
        async with self._lock:
            return await self._reconcile_locked(reason)

    async def _reconcile_locked(self, reason: str) -> ReconcileReport:
        self.last_report = await reconcile(self.ledger, self.rest, reason)
        self.reconciliations[reason] += 1
        now = self.ledger.clock()
        unresolved = {o.client_order_id: o for b in self.ledger.books.values()
                      for o in b.unresolved()}  # fmt: skip
        self._checks.keep(unresolved, now)
        await self.guards.ensure()
        return self.last_report

    async def resolve_due(self) -> int:
        """Settle the unresolved orders whose check is due — from the user-data stream if it
        told their final state, else by one query by client id each; return how many were
        settled. Orders not settled are scheduled again."""
        async with self._lock:
            now = self.ledger.clock()
            settled = 0
            for cid in self._checks.due(now):
                found = self.ledger.find(cid)
                if found is None or not found[1].is_unresolved:
                    self._checks.drop(cid)
                    continue
                book, order = found
                try:
                    outcome = await resolve_order(self.ledger, self.rest, book, order)
                except HaltError:
                    raise
                except BinanceError as exc:
                    log.warning("order %s: query failed (%s); asked again in %.0f s", cid, exc,
                                RETRY_S)  # fmt: skip
                    self._checks.retry(cid, now)
                    continue
                self.resolutions[outcome] += 1
                if self._checks.after(order, outcome, now):
                    settled += 1
                    log.info("order %s settled (%s)", cid, outcome)
            if settled:
                await self.guards.ensure()  # an entry settled here opened a position
            return settled

    async def run_reconciler(self, reconnects: asyncio.Event | None = None) -> None:
        """Until cancelled: reconcile fully whenever ``reconnects``
        (``UserDataStream.reconcile_due``) is set, when drift is suspected, and every
        ``reconcile_interval_s``; settle single orders (``resolve_due``) when they are due."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.config.reconcile_interval_s
        events = [self.reconcile_requested, self.resolve_requested]
        if reconnects is not None:
            events.append(reconnects)
        while True:
            timeout = max(0.0, next_full - loop.time())
            check_in = self._checks.next_in(self.ledger.clock())
            if check_in is not None:
                timeout = min(timeout, check_in)
            if not any(e.is_set() for e in events) and timeout > 0:
                waiters = [asyncio.ensure_future(e.wait()) for e in events]
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
            reason = None
            if reconnects is not None and reconnects.is_set():
                reason = "reconnect"
            elif self.reconcile_requested.is_set():
                reason = "requested"
            elif loop.time() >= next_full:
                reason = "periodic"
            for event in events:
                event.clear()
            try:
                if reason is not None:
                    await self.reconcile(reason)
                    next_full = loop.time() + self.config.reconcile_interval_s
                else:
                    await self.resolve_due()
            except HaltError:
                raise
            except BinanceError as exc:
                log.warning("reconciliation (%s) failed: %s; retried next round",
                            reason or "orders", exc)  # fmt: skip
                next_full = min(next_full, loop.time() + RETRY_S)

    def _on_order_event(self, update: OrderUpdate) -> None:
        """An ``executionReport`` reached the account cache (called from the stream's task)."""
        cid = update.client_order_id
        found = self.ledger.find(cid)
        if found is None:
            if update.is_trade and is_own_client_id(cid) and not self.ledger.recently_settled(cid):
                # One of our ids filled although the journal holds it as finished (e.g. marked
                # not_sent, then executed late): the coins are not tracked by any position.
                log.error("fill of %s %s %s that no open intent tracks", cid, update.side,
                          update.last_quantity)  # fmt: skip
                self.ledger.orphan_fills.append(update)
                self.reconcile_requested.set()
            return
        _, order = found
        if not order.is_unresolved:
            return  # already settled by its answer: the event repeats what we know
        if update.is_trade:
            self.ledger.note_stream_fill(update)
        if cid not in self._in_flight and update.is_final:
            # Not waiting for a REST answer (outcome unknown, or rebuilt): the stream settles it.
            self._checks.schedule(cid, self.ledger.clock())

    # -- entries -------------------------------------------------------------------------------

    async def submit(self, intent: PaperIntent) -> SubmitOutcome:
        """Send the intent's MARKET BUY now, journaled first; the same intent id twice is a
        duplicate. Status ``filled``, ``pending`` (outcome unknown: the stream or a query by
        client id settles it), ``duplicate`` or ``rejected``; the resulting events come from
        ``drain_events``."""
        async with self._lock:
            ledger = self.ledger
            if intent.intent_id in ledger.seen:
                return SubmitOutcome(intent.intent_id, SUBMIT_DUPLICATE)
            ledger.seen.add(intent.intent_id)
            market = ledger.markets.get(intent.symbol_id)
            fitted = REJECT_UNKNOWN_SYMBOL if market is None else await self._fit(intent, market)
            if isinstance(fitted, str):
                ledger.reject(intent, fitted)
                return SubmitOutcome(intent.intent_id, SUBMIT_REJECTED, fitted)
            cid = entry_client_id(intent.intent_id)
            equity = self.equity()
            order = JournalOrder(
                cid, intent.intent_id, ROLE_ENTRY, market.symbol, "BUY", "MARKET", fitted,
                ledger.now_ms(), intent_detail(intent) | {"equity_before": equity},
            )  # fmt: skip
            if not await ledger.journal.intent_written(order):
                return SubmitOutcome(intent.intent_id, SUBMIT_DUPLICATE)
            book = IntentBook(intent, market, order, fills={cid: []}, equity_before=equity)
            ledger.books[intent.intent_id] = book
            self._checkpoint("intent_written")
            await self._place(book, order)
            if book.position is not None:
                await self.guards.place(book)
            if intent.intent_id not in ledger.books:
                return SubmitOutcome(intent.intent_id, SUBMIT_REJECTED, ledger.last_reject)
            if book.position is None:
                return SubmitOutcome(intent.intent_id, SUBMIT_PENDING, "unknown_state")
            return SubmitOutcome(intent.intent_id, SUBMIT_FILLED)

    async def _fit(self, intent: PaperIntent, market: LiveMarket) -> Decimal | str:
        """The entry quantity on the symbol's grid, or the reason it cannot be traded."""
        price = self._marks.get(intent.symbol_id)
        if price is None:
            try:
                price = float(await self.rest.avg_price(market.symbol))
            except HaltError:
                raise
            except BinanceError as exc:
                log.warning("no reference price for %s: %s", market.symbol, exc)
                return REJECT_EXCHANGE_PREFIX + "no_price"
        try:
            qty, _ = market.filters.fit("BUY", "MARKET", intent.notional / price, avg_price=price)
        except FilterRejected as exc:
            return REJECT_FILTER_PREFIX + exc.filter_type
        except InvalidOrder:
            return REJECT_FILTER_PREFIX + "INVALID_ORDER"
        stop_level = price * (1.0 - intent.stop_pct / 100.0)
        try:  # a position must stay sellable at its own stop
            market.filters.check("SELL", "MARKET", qty, avg_price=stop_level)
        except FilterRejected as exc:
            return REJECT_UNSELLABLE_PREFIX + exc.filter_type
        cost = float(qty) * price * (1.0 + self.config.commission_pct / 100.0)
        if cost > float(self.cache.balance(market.quote_asset).free):
            return REJECT_INSUFFICIENT_CASH
        return qty

    async def _place(
        self, book: IntentBook, order: JournalOrder, guard: GuardOrder | None = None
    ) -> BinanceError | None:
        """Send a journaled order once and settle its answer; return the exchange's refusal, if
        it refused. While the REST call is in flight, its stream events wait for that answer
        instead of asking REST themselves."""
        cid = order.client_order_id
        self._in_flight.add(cid)
        try:
            answer = await self._send(book, order, guard)
            if isinstance(answer, ExchangeOrder):
                await self.ledger.settle(book, order, answer)
        finally:
            self._in_flight.discard(cid)
        found = self.ledger.find(cid)
        if found is not None and found[1].is_unresolved and cid not in self._checks:
            # Answered, not final (resting on the book): the stream or a later query settles it.
            # A guard rests by design: only its final state (from the stream) is looked at.
            cached = self.cache.order(cid)
            now = self.ledger.clock()
            if cached is not None and cached.is_final:
                self._checks.schedule(cid, now)
            elif order.role != ROLE_GUARD:
                self._checks.schedule(cid, now + OPEN_RECHECK_S)
        return answer if isinstance(answer, BinanceError) else None

    async def _send(
        self, book: IntentBook, order: JournalOrder, guard: GuardOrder | None = None
    ) -> ExchangeOrder | BinanceError | None:
        """Send a journaled order (``guard``: that guard's planned order) once: the answer, the
        refusal (journaled as rejected) or None (outcome still unknown)."""
        cid = order.client_order_id
        stream_live = self._stream_live()
        lookups = 0 if stream_live else REST_LOOKUPS
        try:
            if guard is not None:
                answer = await self.guard.place(guard, lookups=lookups)
            else:
                answer = await self.rest.new_order(
                    order.symbol, order.side, order.order_type, order.quantity,
                    client_order_id=cid, lookups=lookups,
                )  # fmt: skip
        except UnknownOrderState as exc:
            now = self.ledger.clock()
            cached = self.cache.order(cid)
            if stream_live:
                # Its events usually came first: settle now if they told the final state.
                wait = 0.0 if cached is not None and cached.is_final else self.config.stream_wait_s
                at, how = now + wait, "user-data stream, then a query"
            elif exc.lookup == "not found":
                at, how = self._checks.not_found_at(order, now), "a query after the grace period"
            else:
                at, how = now + RETRY_S, "a query"
            log.error("order %s outcome unknown (%s, lookup %s): settled by the %s, never resent",
                      cid, exc, exc.lookup or "none", how)  # fmt: skip
            self._checks.schedule(cid, at)
            return None
        except (OrderRejected, RateLimited, IpBanned, HaltError) as exc:
            # Refused before placement (filters, balance, rate limit, ban, keys): nothing exists.
            reason = REJECT_EXCHANGE_PREFIX + (getattr(exc, "filter_type", "") or exc.msg)[:80]
            log.warning("order %s refused: %s", cid, reason)
            await self.ledger.refused(book, order, reason)
            if order.role == ROLE_EXIT:  # the account may hold less than the book thinks
                self.reconcile_requested.set()
            if isinstance(exc, HaltError):
                raise
            return exc
        except BinanceError as exc:
            log.error("order %s: %s; its state is asked by client id", cid, exc)
            self._checks.schedule(cid, self.ledger.clock() + RETRY_S)
            return None
        self._checkpoint("order_answered")
        return answer

    # -- exits ---------------------------------------------------------------------------------

    async def on_bar(
        self, symbol_id: int, open_time_ms: int, open_: float, high: float, low: float, close: float
    ) -> list[PaperEvent]:
        """Run the exit rules on one closed bar and send the exits they decide; return every
        event since the last call (this bar's and those of submit and reconciliation)."""
        async with self._lock:
            last = self._last_bar.get(symbol_id)
            if last is None or open_time_ms > last:
                self._last_bar[symbol_id] = open_time_ms
                books = self.ledger.books
                self._deferred = {i: d for i, d in self._deferred.items() if i in books}
                held_on, exits = [], []
                for book in list(books.values()):
                    if book.intent.symbol_id != symbol_id or book.position is None:
                        continue
                    deferred = self._deferred.get(book.intent.intent_id)
                    if deferred is not None:  # decided on an earlier bar, its guard was stuck
                        if not book.unresolved():
                            exits.append((book, deferred))
                        continue
                    decision = self._step(book, open_time_ms, open_, high, low, close)
                    if decision is None:
                        held_on.append(book)
                    else:
                        reason, price, held = decision
                        exit_at = open_time_ms + self.config.bar_interval_ms
                        exits.append((book, (reason, price, exit_at, held)))
                # Positions that exit are not marked: their bar must replay after a crash that
                # happens before the exit order is journaled.
                await self.ledger.mark(held_on)
                for book, (reason, price, exit_at, held) in exits:
                    await self._exit(book, reason, price, exit_at, held)
                self._marks[symbol_id] = close
            return self.drain_events()

    def _step(self, book: IntentBook, open_time_ms, open_, high, low, close):
        """Advance a position by one bar; return (reason, price, bars held) if it must exit."""
        pos = book.position
        if open_time_ms <= pos.last_bar_ms or book.unresolved():
            return None
        held = (open_time_ms - pos.entry_at_ms) // self.config.bar_interval_ms + 1
        reason, price = exit_check(
            pos.entry_price, pos.peak_high, open_, high, low, close, held,
            pos.stop_pct, pos.take_pct, pos.trailing_pct, pos.max_hold_bars,
        )  # fmt: skip
        book.position = replace(
            pos, peak_high=max(pos.peak_high, high), bars_held=held,
            last_bar_ms=open_time_ms, mark_price=close,
        )  # fmt: skip
        return (reason, price, held) if reason != EXIT_NONE else None

    async def flatten(self, time_ms: int, symbol_id: int | None = None) -> list[PaperEvent]:
        """Sell every position (or one symbol's) at market now; return every pending event."""
        async with self._lock:
            for book in list(self.ledger.books.values()):
                pos = book.position
                if pos is None or book.unresolved():
                    continue
                if symbol_id is None or pos.symbol_id == symbol_id:
                    price = self._marks.get(pos.symbol_id, pos.mark_price)
                    await self._exit(book, EXIT_FORCED, price, time_ms, pos.bars_held)
            return self.drain_events()

    async def _exit(self, book: IntentBook, code: int, price: float, time_ms: int, held: int):
        """Release the position's guard, then sell what is left of it at market."""
        intent_id = book.intent.intent_id
        if not await self.guards.release(book):
            self._deferred[intent_id] = (code, price, time_ms, held)
            return
        self._deferred.pop(intent_id, None)
        if intent_id not in self.ledger.books:
            return  # the guard had sold it: closed as crash_guard, nothing left to sell
        pos, market = book.position, book.market
        try:
            qty, _ = market.filters.fit("SELL", "MARKET", book.held(), avg_price=price)
        except (FilterRejected, InvalidOrder) as exc:
            kind = getattr(exc, "filter_type", "INVALID_ORDER")
            self.ledger.rejections["exit_rejected:" + kind] += 1
            log.warning("exit of %d refused by %s; position stays open", pos.intent_id, kind)
            return
        detail = {"exit_code": code, "decision_price": price, "exit_at_ms": time_ms,
                  "bars_held": held}  # fmt: skip
        order = JournalOrder(
            exit_client_id(pos.intent_id, len(book.exits) + 1), pos.intent_id, ROLE_EXIT,
            market.symbol, "SELL", "MARKET", qty, self.ledger.now_ms(), detail,
        )  # fmt: skip
        if not await self.ledger.journal.intent_written(order):
            log.error("exit id %s already journaled; not sent", order.client_order_id)
            return
        book.exits.append(order)
        book.fills[order.client_order_id] = []
        self._checkpoint("intent_written")
        await self._place(book, order)
