"""Fetch the closed bars a symbol is missing by REST ``klines`` and hand them to the sequencer.

A backfill is requested per symbol (``KlineBackfill.request``) by the sequencer when a hole
shows up, by the feed after a lost connection came back, and at start-up. It fetches from the
sequencer's next expected open time (at start-up: right after the last bar PostgreSQL already
holds — local first — or ``initial_history_bars`` back when it holds none) up to the server time
the stream has proved, in pages of 1000 bars, each page drawing weight 2 from the kernel-wide
``WeightBudget`` inside ``BinanceRestClient`` (a 429 or 418 holds every process; nothing is
sent during a ban). Rows still in progress at that time are left to the stream.

Failures never lose the request: temporary ones (network, 5xx, 429, 418, a malformed answer)
are retried after a jittered backoff; a request Binance refuses outright (unknown symbol) is
logged and the symbol's gate opened, so its live bars keep flowing around the hole.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable

import numpy as np

from aegis.backoff import backoff_delays
from aegis.binance.errors import Action, BinanceError
from aegis.binance.protocol import INTERVAL_MS, MAX_KLINES_PER_REQUEST, KlineParser, MalformedFrame
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sequencer import UNKNOWN, BarSequencer
from aegis.records import BAR_CLOSED

log = logging.getLogger(__name__)

_RETRY_ACTIONS = (Action.RETRY, Action.BACK_OFF, Action.SILENCE, Action.RESYNC_CLOCK)


class KlineBackfill:
    """Worker tasks that fill holes of the sequencer from REST klines."""

    def __init__(
        self,
        rest: BinanceRestClient,
        parser: KlineParser,
        sequencer: BarSequencer,
        symbol_of: Callable[[int], str],
        server_now_ms: Callable[[], int],
        *,
        interval: str = "1m",
        initial_history_bars: int = 1000,
        workers: int = 4,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        """``server_now_ms`` returns the latest server time proved by the stream (0: none yet)."""
        self.rest = rest
        self.parser = parser
        self.sequencer = sequencer
        self.symbol_of = symbol_of
        self.server_now_ms = server_now_ms
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.initial_history_bars = initial_history_bars
        self._workers = workers
        self._retry = (retry_base_s, retry_cap_s)
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._pending: set[int] = set()
        self._tasks: list[asyncio.Task] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.requests_sent = 0
        self.bars_fetched = 0
        self.bars_filled = 0
        self.failures: Counter[str] = Counter()

    # -- requests --------------------------------------------------------------------------------

    def request(self, symbol_id: int) -> None:
        """Ask for a backfill of ``symbol_id`` (no-op while one is pending)."""
        if symbol_id in self._pending:
            return
        self._pending.add(symbol_id)
        self._idle.clear()
        self._queue.put_nowait(symbol_id)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no backfill is pending; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- workers -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker tasks in the running loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(), name=f"backfill-{i}") for i in range(self._workers)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            symbol_id = await self._queue.get()
            delays = backoff_delays(*self._retry, self._rng)
            while not await self._backfill(symbol_id):
                await asyncio.sleep(next(delays))
            if not self._pending:
                self._idle.set()

    async def _backfill(self, symbol_id: int) -> bool:
        """One attempt; True when done (filled, or refused for good)."""
        symbol = self.symbol_of(symbol_id)
        while (now := self.server_now_ms()) <= 0:
            await asyncio.sleep(0.05)  # the stream has not proved any server time yet
        start = self.sequencer.next_open(symbol_id)
        if start == UNKNOWN:
            start = now - now % self.interval_ms - self.initial_history_bars * self.interval_ms
        elif start + self.interval_ms > now:
            # The bar expected next has not closed yet: nothing can be missing, ask nothing.
            self._pending.discard(symbol_id)
            self.sequencer.fill(symbol_id, self._empty(symbol), now)
            return True
        try:
            bars = await self._fetch(symbol, start, now)
        except BinanceError as exc:
            self.failures[type(exc).__name__] += 1
            if exc.action in _RETRY_ACTIONS:
                log.warning("backfill %s: %s; will retry", symbol, exc)
                return False
            log.error("backfill %s refused (%s): its gap stays open", symbol, exc)
            self._pending.discard(symbol_id)
            self.sequencer.fill(symbol_id, self._empty(symbol), None)
            return True
        except MalformedFrame as exc:
            self.failures["MalformedFrame"] += 1
            log.warning("backfill %s: malformed klines answer (%s); will retry", symbol, exc.reason)
            return False
        except (OSError, TimeoutError) as exc:
            self.failures[type(exc).__name__] += 1
            log.warning("backfill %s: %s; will retry", symbol, exc)
            return False
        closed = bars[(bars["flags"] & BAR_CLOSED) != 0]
        self.bars_fetched += len(closed)
        # Leave pending first: the fill may ask again for a bar that closed after the fetch.
        self._pending.discard(symbol_id)
        self.bars_filled += self.sequencer.fill(symbol_id, closed, now)
        return True

    def _empty(self, symbol: str) -> np.ndarray:
        return self.parser.parse_rest_klines(b"[]", symbol, self.interval)

    async def _fetch(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        pages = []
        cursor = start_ms
        while cursor <= end_ms:
            body = await self.rest.klines(
                symbol, self.interval, start_ms=cursor, end_ms=end_ms, limit=MAX_KLINES_PER_REQUEST
            )
            self.requests_sent += 1
            # Closed means closed by the time the stream has proved, never by the local clock.
            page = self.parser.parse_rest_klines(
                body, symbol, self.interval, now_ms=self.server_now_ms()
            )
            if len(page) == 0:
                break
            pages.append(page)
            cursor = int(page["open_time_ms"][-1]) + 1
            if len(page) < MAX_KLINES_PER_REQUEST:
                break
        if not pages:
            return self._empty(symbol)
        return np.concatenate(pages)
