"""The executor's work, one ring batch at a time: guard, act, persist, then tell.

``ExecutorService`` is driven by ``processes/executor.py`` (the supervised process) and by
tests and benchmarks directly. Each call handles one batch taken from a ring and returns only
after every row it caused is committed to PostgreSQL; the caller then commits the ring batch.
(Intents split that in two: ``decide_intents`` at once, ``persist_intents`` in ring order,
so the next batch is decided while one is written.) So a crash anywhere leaves the batch
uncommitted and the next life gets it again, and every write being idempotent
(``aegis.store.executor_tables``) makes that replay harmless:

- an intent already in ``orders`` is a duplicate: no second order, no second position;
- a bar at or before a position's last processed bar is a replay (``PaperExchange``).

Per intent: a record that is not a tradeable intent is refused (counted, a REJECTED order when
its id is usable); the risk guards decide (kill switch, max open positions, symbol exposure,
entry cooldown); the venue takes it (``executor_venues``: the paper exchange accepts it as
pending; live, ``LiveExchange`` journals and sends a MARKET BUY). Per closed 1m bar: entries
due, exits, marks; then the kill switch watches equity — a trip flattens every position,
cancels pending entries and notifies once. Reports to the brain and notifications go out only
after the write, fire-and-forget (a full reports ring is counted, never waited on: the brain
also learns from ``virtual_trades``). A crash between the write and the report loses that
report, never the row. A write that fails for good leaves the book ahead of the database:
the service then refuses every further batch (``PersistAborted``), so nothing decided but
unwritten is ever committed in a ring.

Restart re-arms the kill switch at the current equity (``aegis.risk.guards``); the entry
cooldown per symbol is restored from ``orders``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from aegis.config import Settings
from aegis.notify import messages
from aegis.paper.events import (
    REJECT_CANCELLED,
    SUBMIT_DUPLICATE,
    SUBMIT_REJECTED,
    IntentRejected,
    PaperEvent,
    PositionOpened,
    TradeClosed,
)
from aegis.paper.exchange import PaperConfig, PaperExchange
from aegis.paper.intents import InvalidIntent, PaperIntent
from aegis.processes.executor_symbols import SymbolDirectory
from aegis.processes.executor_venues import LiveVenue, PaperVenue, Venue
from aegis.records import BAR_CLOSED, INTENT_DTYPE, REPORT_DTYPE, REPORT_INTENT_REJECTED
from aegis.risk.guards import DAY_MS, RiskGuards, RiskLimits
from aegis.store.database import is_transient
from aegis.store.executor_rows import (
    STATUS_CANCELED,
    STATUS_FILLED,
    STATUS_NEW,
    STATUS_REJECTED,
    LedgerBatch,
    account_row,
    entry_order_row,
    entry_transition_row,
    exit_order_row,
    position_mark_row,
    position_row,
    refused_record_row,
    trade_row,
)
from aegis.store.executor_tables import RestoredBook

log = logging.getLogger(__name__)

TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
RISK_PREFIX = "risk:"
INVALID_PREFIX = "invalid:"

# Crash-test checkpoints, in the order a step passes them.
CHECKPOINT_INTENTS_READ = "intents_read"  # intents taken and decided, nothing written
CHECKPOINT_INTENTS_WRITTEN = "intents_written"  # orders rows committed, ring not committed
CHECKPOINT_BARS_READ = "bars_read"  # fills/exits computed, nothing written
CHECKPOINT_BARS_WRITTEN = "bars_written"  # positions/trades committed, ring not committed

# Positions in an INTENT_DTYPE record read as a tuple (``records.tolist()``).
_ROW_INTENT_ID = INTENT_DTYPE.names.index("intent_id")
_ROW_SYMBOL_ID = INTENT_DTYPE.names.index("symbol_id")


class PersistAborted(RuntimeError):
    """The database stayed unreachable until the process was asked to stop; nothing was written."""


@dataclass
class DecidedIntents:
    """One ring batch of intents, decided (the book moved) and not yet written."""

    count: int  # ring records, every one decided (refused and duplicate ones too)
    batch: LedgerBatch
    reports: list
    notes: list[str]


class ExecutorLedger(Protocol):
    """Durable storage of the executor (``aegis.store.executor_tables.ExecutorTables``)."""

    async def write(self, batch: LedgerBatch) -> None: ...
    async def load(self, starting_cash: float) -> RestoredBook: ...
    async def load_known(self, starting_cash: float) -> RestoredBook: ...


class ReportSink(Protocol):
    """Where reports go (the reports ring's producer)."""

    def try_publish(self, record: Any) -> bool: ...


class MessageSink(Protocol):
    """Where notifications go (``aegis.notify.Notifier``)."""

    def notify(self, text: str) -> bool: ...


class ExecutorService:
    """The executor: intents and bars in, durable rows, reports and notifications out."""

    def __init__(
        self,
        venue: Venue,
        guards: RiskGuards,
        ledger: ExecutorLedger,
        directory: SymbolDirectory,
        *,
        timeframe: str = "5m",
        mode: str = "paper",
        account: str = "paper",
        snapshot_interval_ms: int = 60_000,
        known_intent_ids: frozenset[int] = frozenset(),
        reports: ReportSink | None = None,
        notifier: MessageSink | None = None,
        checkpoint: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        retry_delays: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.venue = venue
        self.exchange = exchange = venue.exchange
        self.guards = guards
        self.ledger = ledger
        self.directory = directory
        self.timeframe = timeframe
        self.mode = mode
        self.account = account
        self.snapshot_interval_ms = snapshot_interval_ms
        self.reports = reports
        self.notifier = notifier
        self.rejections: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._checkpoint = checkpoint or (lambda name: None)
        self._should_stop = should_stop
        self._clock = clock
        self._retry = retry_delays
        self._known = set(known_intent_ids)
        self._known.update(p.intent_id for p in exchange.open_positions())
        if isinstance(exchange, PaperExchange):
            self._known.update(i.intent_id for i in exchange.pending_intents())
        # The last written state of each open position: its closed row is built from it.
        self._open = {p.intent_id: p for p in exchange.open_positions()}
        self._unwritten = False  # a write failed: the book is ahead of the database
        self._last_snapshot_ms = -1
        self._day: int | None = None
        self._day_stats = [0, 0, 0.0, 0.0]  # trades, wins, net pnl, equity at day start

    @classmethod
    async def restore(
        cls, ledger: ExecutorLedger, directory: SymbolDirectory, settings: Settings, **kwargs
    ) -> ExecutorService:
        """Rebuild the paper book from the ledger (positions, pending intents, known ids, cash).

        With ``live=`` (a started ``LiveExchange``) the book is the live exchange's own (rebuilt
        from its journal and reconciled); the ledger gives the known intent ids only.
        """
        live = kwargs.pop("live", None)
        if live is not None:
            book = await ledger.load_known(settings.starting_equity)
            venue: Venue = LiveVenue(live)
            kwargs.setdefault("mode", "live")
            kwargs.setdefault("account", "live")
        else:
            book = await ledger.load(settings.starting_equity)
            venue = PaperVenue(PaperExchange.from_records(
                PaperConfig.from_settings(
                    settings, fill_deadline_ms=round(settings.paper_fill_deadline_s * 1000)
                ),
                directory.filters, max(book.cash, 0.0),
                book.positions, book.pending, book.known_intent_ids,
            ))  # fmt: skip
        exchange = venue.exchange
        last_entry = {}
        for symbol, at_ms in book.last_entry_ms.items():
            symbol_id = directory.id_of(symbol)
            if symbol_id is not None:
                last_entry[symbol_id] = at_ms
        clock = kwargs.get("clock", time.time)
        # A restart re-arms the kill switch at the current equity (aegis.risk.guards).
        guards = RiskGuards.start(
            RiskLimits.from_settings(settings), exchange.equity(), int(clock() * 1000), last_entry
        )
        log.info(
            "executor restored (%s): %d open positions, %d pending intents, %d known intents, "
            "equity %.2f", "live" if live is not None else "paper",
            len(exchange.open_positions()), len(book.pending), len(book.known_intent_ids),
            exchange.equity(),
        )  # fmt: skip
        kwargs.setdefault("timeframe", settings.decision_timeframe)
        return cls(venue, guards, ledger, directory,
                   known_intent_ids=book.known_intent_ids, **kwargs)  # fmt: skip

    # -- intents -------------------------------------------------------------------------------

    async def handle_intents(self, records: np.ndarray) -> int:
        """Decide every intent record of a ring batch and persist the decisions; return count."""
        return await self.persist_intents(await self.decide_intents(records))

    async def decide_intents(self, records: np.ndarray) -> DecidedIntents:
        """Decide every intent record of a ring batch; nothing is written or reported yet.

        The book moves at once (an accepted paper intent is pending, a live order is sent
        after its journal entry), so the next batch can be decided while this one is written
        (``persist_intents``, in ring order).
        """
        self._refuse_when_stale()
        step = DecidedIntents(len(records), LedgerBatch(), [], [])
        now_ms = self._now_ms()
        for rec, row in zip(records, records.tolist(), strict=True):
            self.counters["intents"] += 1
            await self._take_intent(rec, row, now_ms, step.batch, step.reports, step.notes)
        self._checkpoint(CHECKPOINT_INTENTS_READ)
        return step

    async def persist_intents(self, step: DecidedIntents) -> int:
        """Write a decided batch's rows, then send its reports and notes; return its count."""
        await self._write(step.batch)
        self._checkpoint(CHECKPOINT_INTENTS_WRITTEN)
        self._emit(step.reports, step.notes)
        return step.count

    async def _take_intent(self, rec, row, now_ms, batch: LedgerBatch, reports, notes) -> None:
        """``rec``: the INTENT_DTYPE record; ``row``: the same as a tuple (``from_row``)."""
        intent_id = row[_ROW_INTENT_ID]
        if intent_id in self._known:
            self.counters["intents_duplicate"] += 1
            return
        symbol_id = row[_ROW_SYMBOL_ID]
        symbol = self.directory.name_of(symbol_id)
        try:
            intent = PaperIntent.from_row(row)
        except InvalidIntent as exc:
            self._refuse_record(rec, intent_id, symbol, str(exc), now_ms, batch, reports)
            return
        self._known.add(intent_id)
        ex = self.exchange
        decision = self.guards.check_entry(
            symbol_id, intent.notional, intent.decision_time_ms, ex.equity(), ex.open_count(),
            ex.symbol_exposure(symbol_id),
        )  # fmt: skip
        records_book = self.venue.records_book
        if not decision.allowed:
            reason = RISK_PREFIX + decision.reason
            self.rejections[reason] += 1
            if records_book:
                batch.orders.append(entry_order_row(intent, symbol, self.mode, STATUS_REJECTED,
                                                    reason, now_ms))  # fmt: skip
            reports.append(_rejected_report(intent, intent.decision_time_ms))
            return
        # Paper: accepted in memory, recorded NEW below before any bar can fill it.
        # Live: LiveExchange journals the order before it sends it.
        outcome, events = await self.venue.submit(intent)
        self._apply(events, now_ms, batch, reports, notes)
        if outcome.status == SUBMIT_DUPLICATE:  # the book knew it although the ledger did not
            self.counters["intents_duplicate"] += 1
            return
        if outcome.status != SUBMIT_REJECTED:
            self.counters["intents_accepted"] += 1
            if records_book:
                batch.orders.append(entry_order_row(intent, symbol, self.mode, STATUS_NEW, "",
                                                    now_ms))  # fmt: skip
            return
        if records_book:  # live rejections come back as IntentRejected events (see _apply)
            self.rejections[outcome.reason] += 1
            batch.orders.append(entry_order_row(intent, symbol, self.mode, STATUS_REJECTED,
                                                outcome.reason, now_ms))  # fmt: skip
            reports.append(_rejected_report(intent, intent.decision_time_ms))

    def _refuse_record(self, rec, intent_id, symbol, why, now_ms, batch, reports) -> None:
        self.rejections["invalid_intent"] += 1
        if (
            self.rejections["invalid_intent"] in (1, 10, 100)
            or self.rejections["invalid_intent"] % 1000 == 0
        ):
            log.warning("invalid intent %d refused (%s); %d so far", intent_id, why,
                        self.rejections["invalid_intent"])  # fmt: skip
        if intent_id <= 0 or intent_id >= 2**64:
            return  # no usable id: nothing to record it under, nothing the brain can match
        self._known.add(intent_id)
        if self.venue.records_book:  # live: the journal holds only orders that were sent
            detail = {"symbol_id": int(rec["symbol_id"]), "side": int(rec["side"]),
                      "decision_time_ms": int(rec["decision_time_ms"]), "error": why}  # fmt: skip
            batch.orders.append(refused_record_row(intent_id, symbol, self.mode,
                                                   INVALID_PREFIX + why, detail, now_ms))  # fmt: skip
        report = np.zeros((), dtype=REPORT_DTYPE)
        report["intent_id"] = intent_id
        report["symbol_id"] = int(rec["symbol_id"])
        report["kind"] = REPORT_INTENT_REJECTED
        report["model_version"] = int(rec["model_version"])
        reports.append(report)

    # -- bars ----------------------------------------------------------------------------------

    async def handle_bars(self, records: np.ndarray) -> int:
        """Run closed bars through the paper exchange, the kill switch and the snapshots."""
        self._refuse_when_stale()
        batch, reports, notes = LedgerBatch(), [], []
        now_ms = self._now_ms()
        ex = self.exchange
        interval = self.venue.bar_interval_ms
        latest_ms = None
        touched: set[int] = set()
        for rec in records:
            if not int(rec["flags"]) & BAR_CLOSED:
                self.counters["bars_not_closed"] += 1
                continue
            symbol_id, open_ms = int(rec["symbol_id"]), int(rec["open_time_ms"])
            o, h, lo, c = (
                float(rec["open"]),
                float(rec["high"]),
                float(rec["low"]),
                float(rec["close"]),
            )
            # Checked here for both venues: a bar that is not a bar must never move a stop.
            if not (0.0 < lo <= min(o, c) and max(o, c) <= h < math.inf):
                self._bad_bar(symbol_id, open_ms, (o, h, lo, c))
                continue
            events = await self.venue.on_bar(symbol_id, open_ms, o, h, lo, c)
            self.counters["bars"] += 1
            touched.add(symbol_id)
            close_ms = open_ms + interval
            latest_ms = close_ms if latest_ms is None else max(latest_ms, close_ms)
            self._apply(events, now_ms, batch, reports, notes)
        if latest_ms is not None:
            await self._watch_equity(latest_ms, now_ms, batch, reports, notes)
        # A paper bar only moves a position's mark fields: a position stored before this step
        # gets a mark, not its whole row again (hundreds of rows per bar with many open).
        marks = self.venue.records_book
        for pos in ex.open_positions():
            if pos.symbol_id in touched and self.venue.records_positions:
                self._open[pos.intent_id] = pos
                if marks and pos.intent_id not in batch.positions:
                    batch.marks[pos.intent_id] = position_mark_row(pos, now_ms)
                else:
                    batch.positions[pos.intent_id] = position_row(
                        pos, self.directory.name_of(pos.symbol_id), now_ms
                    )
        self._checkpoint(CHECKPOINT_BARS_READ)
        await self._write(batch)
        self._checkpoint(CHECKPOINT_BARS_WRITTEN)
        self._emit(reports, notes)
        return len(records)

    async def _watch_equity(self, time_ms, now_ms, batch, reports, notes) -> None:
        ex = self.exchange
        self._roll_day(time_ms, notes)
        trip = self.guards.observe_equity(ex.equity(), time_ms)
        if trip is not None:
            self.counters["kill_switch_trips"] += 1
            log.error("kill switch tripped (%s): loss %.2f%% >= %.2f%%, equity %.2f; flattening",
                      trip.reason, trip.loss_pct, trip.limit_pct, trip.equity)  # fmt: skip
            self._apply(await self.venue.flatten(time_ms), now_ms, batch, reports, notes)
            notes.append(messages.kill_switch(trip.reason, trip.loss_pct, trip.limit_pct,
                                              ex.equity(), live=self.mode == "live"))  # fmt: skip
        due = time_ms - self._last_snapshot_ms >= self.snapshot_interval_ms
        if batch.trades or batch.orders or due:
            snap = ex.snapshot(time_ms)
            batch.accounts.append(account_row(self.account, snap,
                                              self.guards.kill_switch.peak_equity))  # fmt: skip
            self._last_snapshot_ms = time_ms

    def _roll_day(self, time_ms: int, notes: list[str]) -> None:
        day = time_ms // DAY_MS
        if self._day is None:
            self._day, self._day_stats = day, [0, 0, 0.0, self.exchange.equity()]
            return
        if day <= self._day:
            return
        trades, wins, pnl, start_equity = self._day_stats
        equity = self.exchange.equity()
        change = 100.0 * (equity - start_equity) / start_equity if start_equity > 0 else 0.0
        label = datetime.fromtimestamp(self._day * DAY_MS / 1000, UTC).strftime("%Y-%m-%d")
        notes.append(messages.daily_summary(label, trades, wins, pnl, equity, change,
                                            live=self.mode == "live"))  # fmt: skip
        self._day, self._day_stats = day, [0, 0, 0.0, equity]

    def _apply(self, events: list[PaperEvent], now_ms, batch, reports, notes) -> None:
        live = self.mode == "live"
        records_book = self.venue.records_book
        for event in events:
            if isinstance(event, PositionOpened):
                pos = event.position
                symbol = self.directory.name_of(pos.symbol_id)
                self.counters["positions_opened"] += 1
                self._open[pos.intent_id] = pos
                if records_book:
                    batch.orders.append(entry_transition_row(
                        pos.intent_id, symbol, self.mode, STATUS_FILLED, now_ms,
                        quantity=pos.quantity, price=pos.entry_fill_price, quote=pos.notional,
                    ))  # fmt: skip
                if self.venue.records_positions:
                    batch.positions[pos.intent_id] = position_row(pos, symbol, now_ms)
                notes.append(messages.trade_opened(
                    symbol, pos.quantity, pos.entry_fill_price, pos.notional, pos.stop_pct,
                    pos.take_pct, pos.confidence, live=live,
                ))  # fmt: skip
            elif isinstance(event, TradeClosed):
                self._closed(event.trade, now_ms, batch, reports, notes)
            elif isinstance(event, IntentRejected):
                cancelled = event.reason == REJECT_CANCELLED
                self.rejections[event.reason] += 1
                if records_book:
                    batch.orders.append(entry_transition_row(
                        event.intent_id, self.directory.name_of(event.symbol_id), self.mode,
                        STATUS_CANCELED if cancelled else STATUS_REJECTED, now_ms,
                        reason=event.reason,
                    ))  # fmt: skip
                rep = np.zeros((), dtype=REPORT_DTYPE)
                rep["intent_id"], rep["symbol_id"] = event.intent_id, event.symbol_id
                rep["kind"], rep["exit_time_ms"] = REPORT_INTENT_REJECTED, event.time_ms
                reports.append(rep)

    def _closed(self, trade, now_ms, batch, reports, notes) -> None:
        symbol = self.directory.name_of(trade.symbol_id)
        self.counters["trades_closed"] += 1
        pos = self._open.pop(trade.intent_id, None) or self.venue.closed_position(trade.intent_id)
        if self.venue.records_book:
            batch.orders.append(exit_order_row(trade, symbol, self.mode, now_ms))
        if self.venue.records_positions and pos is not None:
            batch.positions[trade.intent_id] = position_row(pos, symbol, now_ms, closed=trade)
        distances = None if pos is None else (pos.stop_pct, pos.take_pct)
        # Live trades go to virtual_trades too: it is the table the brain learns from.
        batch.trades.append(trade_row(trade, symbol, self.timeframe, self.directory.quote_asset,
                                      now_ms, distances))  # fmt: skip
        reports.append(trade.to_report())
        stats = self._day_stats
        stats[0] += 1
        stats[1] += trade.pnl > 0
        stats[2] += trade.pnl
        notes.append(messages.trade_closed(
            symbol, trade.exit_reason, trade.entry_fill_price, trade.close_fill_price,
            trade.net_return_pct, trade.pnl, trade.duration_ms, live=self.mode == "live",
        ))  # fmt: skip

    def _bad_bar(self, symbol_id: int, open_ms: int, ohlc: tuple[float, ...]) -> None:
        self.counters["bars_invalid"] += 1
        count = self.counters["bars_invalid"]
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("invalid bar %d@%d skipped (o h l c = %r); %d so far", symbol_id,
                        open_ms, ohlc, count)  # fmt: skip

    # -- edges ---------------------------------------------------------------------------------

    def _refuse_when_stale(self) -> None:
        if self._unwritten:
            raise PersistAborted("an earlier batch was decided but never written: the book is "
                                 "ahead of the database, so nothing more may be committed")  # fmt: skip

    async def _write(self, batch: LedgerBatch) -> None:
        try:
            await self._write_with_retries(batch)
        except BaseException:
            # Its batch stays uncommitted in the ring, but this book already holds its
            # decisions: replayed here it would be taken for duplicates and committed
            # unwritten. Only a new life, rebuilt from the database, may read it again.
            self._unwritten = True
            raise

    async def _write_with_retries(self, batch: LedgerBatch) -> None:
        base, cap = self._retry
        attempt = 0
        while True:
            try:
                await self.ledger.write(batch)
                if attempt:
                    log.info("executor database writes resumed after %d failed attempts", attempt)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                self.counters["write_retries"] += 1
                if attempt in (1, 10) or attempt % 100 == 0:
                    log.error("executor cannot write to PostgreSQL (%s: %s), attempt %d; holding "
                              "the ring batch", type(exc).__name__, exc, attempt)  # fmt: skip
                if self._should_stop():
                    raise PersistAborted("database unreachable while stopping") from exc
                await asyncio.sleep(min(cap, base * 2 ** min(attempt, 16)))

    def _emit(self, reports: list, notes: list[str]) -> None:
        for rec in reports:
            if self.reports is None:
                break
            if self.reports.try_publish(rec):
                self.counters["reports_published"] += 1
            else:
                self.counters["reports_dropped"] += 1
        if self.notifier is not None:
            for text in notes:
                self.notifier.notify(text)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _rejected_report(intent: PaperIntent, time_ms: int) -> np.ndarray:
    rec = np.zeros((), dtype=REPORT_DTYPE)
    rec["intent_id"] = intent.intent_id
    rec["symbol_id"] = intent.symbol_id
    rec["kind"] = REPORT_INTENT_REJECTED
    rec["exit_time_ms"] = time_ms
    rec["model_version"] = intent.model_version
    return rec
