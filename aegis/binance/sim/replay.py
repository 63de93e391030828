"""The replay loop: walks simulated time bar by bar, publishing klines and filling orders.

Each minute has ``updates_per_bar`` update points; at point k the bar is seen at fraction
k/N (the last point, at the minute's end, is the closing ``x=true`` update). Events are built
only for symbols someone listens to; resting orders are matched for every symbol that has one,
against the path segment since the previous point.

At speed 0 the replay is paced by its readers; with ``hold_without_listeners`` (the default)
simulated time stands still while no stream connection listens, so a client that lost all
its connections does not come back to find the whole recording replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
import orjson

from aegis.binance.sim.bars import path_points, price_on_path, range_between
from aegis.binance.sim.clock import SimClock
from aegis.binance.sim.config import MINUTE_MS
from aegis.binance.sim.events import kline_event
from aegis.binance.sim.market import BarValues, MarketData
from aegis.binance.sim.market_streams import StreamHub
from aegis.binance.sim.matching import MatchingEngine

LOG = logging.getLogger(__name__)
PREPARE_LEAD_S = 0.05


class KlineReplay:
    """Drives the clock-paced publication of recorded bars."""

    def __init__(
        self,
        market: MarketData,
        clock: SimClock,
        hub: StreamHub,
        engine: MatchingEngine,
        accounts: dict,
        hold_without_listeners: bool = True,
        after_step: Callable[[], object] | None = None,
    ) -> None:
        self.market = market
        self.clock = clock
        self.hub = hub
        self.engine = engine
        self.accounts = accounts
        self.hold_without_listeners = hold_without_listeners
        self.after_step = after_step
        self.finished = asyncio.Event()
        self.events_published = 0
        self.steps = 0

    def _index(self, symbol: str, minute: int) -> int:
        ot = self.market.series[symbol].open_time
        i = int(np.searchsorted(ot, minute))
        return i if i < len(ot) and int(ot[i]) == minute else -1

    async def run(self) -> None:
        n = self.market.updates_per_bar
        start = self.clock.now_ms()
        minute = start - start % MINUTE_MS
        first_k = (start - minute) * n // MINUTE_MS + 1
        try:
            while minute <= self.market.last_open_ms:
                bars: dict[str, BarValues | None] = {}
                for k in range(first_k, n + 1):
                    t = minute + k * MINUTE_MS // n
                    if self.clock.stepped and self.hold_without_listeners:
                        await self.hub.listening.wait()
                    # Built shortly before the step is due, so that at its time the simulator
                    # only writes: a real exchange takes no CPU from the machine it feeds, and
                    # building 300 events took ~5 ms of the CPUs the kernel under test uses.
                    # Not right after the last step either: its readers are busy then.
                    await self.clock.sleep_until(t - self._lead_ms(n))
                    events = self._events(minute, k / n, t, bars)
                    await self.clock.sleep_until(t)
                    await self._step(minute, k, n, t, bars, events)
                first_k = 1
                minute += MINUTE_MS
        finally:
            self.finished.set()
        LOG.info("replay finished: %d steps, %d events", self.steps, self.events_published)

    def _lead_ms(self, updates_per_bar: int) -> int:
        """Simulated ms before a step at which its events are built: ``PREPARE_LEAD_S`` of wall
        time, at most half a step (0 on a stepped clock)."""
        lead = PREPARE_LEAD_S * 1000.0 * self.clock.speed
        return int(min(lead, MINUTE_MS / updates_per_bar / 2))

    def _bar(self, symbol: str, minute: int, bars: dict[str, BarValues | None]) -> BarValues | None:
        if symbol not in bars:
            i = self._index(symbol, minute)
            bars[symbol] = self.market.bar(symbol, i) if i >= 0 else None
        return bars[symbol]

    def _events(
        self, minute: int, phi: float, t: int, bars: dict[str, BarValues | None],
        streams: dict[str, str] | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Stream name -> JSON of its kline event at fraction ``phi`` for ``streams`` (symbol ->
        stream; default: every stream listened to now) that have a bar this minute."""
        decimals = self.market.decimals
        out = {}
        for symbol, stream in (streams or self.hub.subscribed_symbols()).items():
            if symbol not in self.market:
                continue
            b = self._bar(symbol, minute, bars)
            if b is not None:  # None: a real gap in the recording; Binance sent nothing either
                event = kline_event(b, symbol, decimals[symbol], phi, t)
                out[stream] = orjson.dumps(event).decode()
        return out

    async def _step(
        self, minute: int, k: int, n: int, t: int, bars: dict[str, BarValues | None],
        events: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Publish the step's events to the streams listened to now (``events``: built
        beforehand; a stream subscribed since gets its event built here), then match resting
        orders against the path since the previous step."""
        phi = k / n
        subscribed = self.hub.subscribed_symbols()
        events = events or {}
        late = {symbol: stream for symbol, stream in subscribed.items() if stream not in events}
        if late:
            events = {**events, **self._events(minute, phi, t, bars, late)}
        for stream in subscribed.values():
            event_json = events.get(stream)
            if event_json is not None:
                await self.hub.publish(stream, event_json)
                self.events_published += 1
        for symbol in self.engine.symbols_with_open_orders():
            b = self._bar(symbol, minute, bars)
            if b is None:
                continue
            points = path_points(b.open, b.high, b.low, b.close)
            low, high = range_between(points, (k - 1) / n, phi)
            start = price_on_path(points, (k - 1) / n)
            self.engine.on_price_path(symbol, low, high, t, self.accounts, start=start)
        await self.hub.cut_old_connections()
        self.steps += 1
        if self.after_step is not None:
            self.after_step()
