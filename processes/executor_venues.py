"""Where the executor's orders go: the paper exchange, or Binance through ``LiveExchange``.

Both venues take the same calls (``submit``, ``on_bar``, ``flatten``, awaited) and answer with
the same paper events (``PositionOpened``, ``TradeClosed``, ``IntentRejected``), so
``ExecutorService`` runs one logic in both modes. They differ in who records the orders:

- paper: the executor writes ``orders`` (NEW before the paper exchange acts, then FILLED /
  REJECTED / CANCELED) itself (``records_book``);
- live: ``LiveExchange`` journals every order and fill in ``orders`` / ``trades`` through its
  ``OrderJournal`` before and after sending (``aegis.binance.journal_pg``), and rebuilds its
  positions from that journal.

In both, the executor writes ``virtual_positions`` (``records_positions``: what the brain's
restart, reports and users read as open positions), closed trades and account snapshots.
``closed_position(intent_id)`` gives the position a ``TradeClosed`` refers to when the executor
never saw it open (live: closed by the reconciliation at start).
"""

from __future__ import annotations

from typing import Any, Protocol

from aegis.paper.events import PaperEvent, SubmitOutcome
from aegis.paper.exchange import PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import PaperPosition


class Venue(Protocol):
    """What ``ExecutorService`` needs of an exchange."""

    exchange: Any  # queries: equity(), open_count(), symbol_exposure(), open_positions(), ...
    records_book: bool
    records_positions: bool
    bar_interval_ms: int

    def closed_position(self, intent_id: int) -> PaperPosition | None: ...

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]: ...
    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list: ...
    async def flatten(self, time_ms: int) -> list[PaperEvent]: ...


class PaperVenue:
    """The in-memory paper exchange; the executor records its book."""

    records_book = True
    records_positions = True

    def __init__(self, exchange: PaperExchange) -> None:
        self.exchange = exchange
        self.bar_interval_ms = exchange.config.bar_interval_ms

    def closed_position(self, intent_id: int) -> PaperPosition | None:
        return None  # the paper book is restored before anything closes

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]:
        return self.exchange.submit(intent), []

    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list[PaperEvent]:
        return self.exchange.on_bar(symbol_id, open_time_ms, open_, high, low, close)

    async def flatten(self, time_ms: int) -> list[PaperEvent]:
        return self.exchange.flatten(time_ms)


class LiveVenue:
    """Real orders through ``aegis.binance.live.LiveExchange`` (which journals them)."""

    records_book = False
    records_positions = True

    def __init__(self, exchange: Any) -> None:  # aegis.binance.live.LiveExchange
        self.exchange = exchange
        self.bar_interval_ms = exchange.config.bar_interval_ms

    def closed_position(self, intent_id: int) -> PaperPosition | None:
        return self.exchange.closed_position(intent_id)

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]:
        outcome = await self.exchange.submit(intent)
        return outcome, self.exchange.drain_events()

    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list[PaperEvent]:
        return await self.exchange.on_bar(symbol_id, open_time_ms, open_, high, low, close)

    async def flatten(self, time_ms: int) -> list[PaperEvent]:
        return await self.exchange.flatten(time_ms)
