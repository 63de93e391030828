"""Where the executor's orders go: the paper exchange, or Binance through ``LiveExchange``.

Both venues take the same calls (``submit``, ``on_bar``, ``flatten``, awaited) and answer with
the same paper events (``PositionOpened``, ``TradeClosed``, ``IntentRejected``), so
``ExecutorService`` runs one logic in both modes. They differ in who records the orders:

- paper: the executor writes ``orders`` (NEW before the paper exchange acts, then FILLED /
  REJECTED / CANCELED) and ``virtual_positions`` itself (``records_book``);
- live: ``LiveExchange`` journals every order and fill in ``orders`` / ``trades`` through its
  ``OrderJournal`` before and after sending (``aegis.binance.journal_pg``), and rebuilds its
  positions from that journal; the executor writes only closed trades and account snapshots.
"""

from __future__ import annotations

from typing import Any, Protocol

from aegis.paper.events import PaperEvent, SubmitOutcome
from aegis.paper.exchange import PaperExchange
from aegis.paper.intents import PaperIntent


class Venue(Protocol):
    """What ``ExecutorService`` needs of an exchange."""

    exchange: Any  # queries: equity(), open_count(), symbol_exposure(), open_positions(), ...
    records_book: bool
    bar_interval_ms: int

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]: ...
    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list: ...
    async def flatten(self, time_ms: int) -> list[PaperEvent]: ...


class PaperVenue:
    """The in-memory paper exchange; the executor records its book."""

    records_book = True

    def __init__(self, exchange: PaperExchange) -> None:
        self.exchange = exchange
        self.bar_interval_ms = exchange.config.bar_interval_ms

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]:
        return self.exchange.submit(intent), []

    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list[PaperEvent]:
        return self.exchange.on_bar(symbol_id, open_time_ms, open_, high, low, close)

    async def flatten(self, time_ms: int) -> list[PaperEvent]:
        return self.exchange.flatten(time_ms)


class LiveVenue:
    """Real orders through ``aegis.binance.live.LiveExchange`` (which journals them)."""

    records_book = False

    def __init__(self, exchange: Any) -> None:  # aegis.binance.live.LiveExchange
        self.exchange = exchange
        self.bar_interval_ms = exchange.config.bar_interval_ms

    async def submit(self, intent: PaperIntent) -> tuple[SubmitOutcome, list[PaperEvent]]:
        outcome = await self.exchange.submit(intent)
        return outcome, self.exchange.drain_events()

    async def on_bar(self, symbol_id, open_time_ms, open_, high, low, close) -> list[PaperEvent]:
        return await self.exchange.on_bar(symbol_id, open_time_ms, open_, high, low, close)

    async def flatten(self, time_ms: int) -> list[PaperEvent]:
        return await self.exchange.flatten(time_ms)
