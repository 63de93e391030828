"""The feed process: Binance kline streams → the market ring, ``market_data`` and Redis.

Wiring only; the work is ``aegis.binance.market_feed.MarketFeed`` (streams, intake, sequencer,
backfill). At start the feed loads the universe it persisted last (ids stay stable), selects
today's from ``exchangeInfo`` and the 24 h tickers (top N, or the explicit ``AEGIS_SYMBOLS``)
and persists it; asks PostgreSQL for each symbol's newest stored 1m bar (local first); then
runs the pipeline. Every closed bar goes, exactly once and in time order per symbol, to

- the ``market`` ring (``RingPublisher``: never blocks the WebSocket reading),
- ``market_data`` (``ClosedBarStore`` → ``MarketDataWriter``: batched, idempotent, spilled to
  disk while PostgreSQL is away) and the latest bar per symbol to Redis (1 h TTL).

Once a day the universe is selected again; when it changed, the pipeline is rebuilt: the old
one is closed, and the new one resumes every kept symbol right after the last bar it published
(the hole of the switch-over is backfilled by REST, nothing is published twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from aegis.binance.market_feed import FeedOptions, MarketFeed
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sequencer import UNKNOWN
from aegis.binance.universe import Universe
from aegis.binance.weight import WeightBudget
from aegis.processes.feed_outputs import ClosedBarStore, RingPublisher
from aegis.processes.feed_universe import UniverseStore, last_stored_open_times, select_current
from aegis.processes.runtime import KernelProcess, ProcessContext, run_process
from aegis.store.cache import HotCache
from aegis.store.durable import DurableWriter
from aegis.store.market_data import MarketDataWriter

log = logging.getLogger(__name__)

UNIVERSE_REFRESH_S = 86_400.0
STATS_EVERY_S = 60.0


@dataclass(frozen=True)
class FeedTuning:
    """Process-level knobs (tests shorten them)."""

    options: FeedOptions = field(default_factory=FeedOptions)
    universe_refresh_s: float = UNIVERSE_REFRESH_S
    stats_every_s: float = STATS_EVERY_S
    publish_updates_every_s: float = 0.0
    """> 0: also publish the conflated in-progress bars (no BAR_CLOSED flag) to the ring at
    this period, the latest per symbol; consumers that want only closed bars filter on flags."""


class Feed(KernelProcess):
    """The feed's life cycle."""

    def __init__(self, tuning: FeedTuning | None = None) -> None:
        self.tuning = tuning or FeedTuning()
        self.feed: MarketFeed | None = None
        self._tasks: list[asyncio.Task] = []

    # -- start ------------------------------------------------------------------------------
    async def open(self, ctx: ProcessContext) -> None:
        s = self.settings = ctx.settings
        self.budget = WeightBudget.for_home(s.home, share=s.weight_share)
        self.rest = BinanceRestClient(s.rest_url, self.budget)
        self.universes = UniverseStore(ctx.db, ctx.redis, s.redis_prefix)
        previous = await self.universes.load()
        try:
            self.universe = await select_current(self.rest, s, previous)
            await self.universes.save(self.universe, f"selected {len(self.universe)} symbols")
        except Exception as exc:
            if previous is None:
                raise
            log.error("feed: universe selection failed (%s); using the persisted one", exc)
            self.universe = previous
        self.writer = DurableWriter(ctx.db, s.home / "spill", name="feed")
        await self.writer.start()
        self.cache = HotCache(ctx.db, s.redis_url, prefix=s.redis_prefix)
        self.publisher = RingPublisher(ctx.producer("market"))
        self.last_stored = await last_stored_open_times(
            ctx.db, [x.symbol for x in self.universe.symbols]
        )
        self._build(self.universe, self.last_stored)
        log.info(
            "feed: %d symbols, %d with stored history, %d shards",
            len(self.universe), len(self.last_stored), len(self.feed.streams.shards),
        )  # fmt: skip

    def _build(self, universe: Universe, last_stored: dict[str, int]) -> None:
        names = {x.symbol_id: x.symbol for x in universe.symbols}
        self.store = ClosedBarStore(MarketDataWriter(self.writer), names, cache=self.cache)
        publish, add = self.publisher.publish, self.store.add
        publish_many, add_many = self.publisher.publish_many, self.store.add_many

        def on_closed(record: np.ndarray) -> None:
            publish(record)
            add(record)

        def on_closed_many(records: np.ndarray) -> None:
            publish_many(records)
            add_many(records)

        self.feed = MarketFeed(
            self.settings.ws_url, self.rest, universe.ids(), on_closed,
            on_closed_many=on_closed_many, options=self.tuning.options,
        )  # fmt: skip
        self.feed.parser.warm()
        self._start_stored = last_stored

    # -- run --------------------------------------------------------------------------------
    async def run(self, ctx: ProcessContext) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.publisher.run(), name="ring-backlog"),
            loop.create_task(self._refresh_universe(ctx), name="universe-refresh"),
            loop.create_task(self._log_stats(), name="feed-stats"),
        ]
        if self.tuning.publish_updates_every_s > 0:
            self._tasks.append(loop.create_task(self._publish_updates(), name="feed-updates"))
        self._start_pipeline()
        await ctx.wait_stop()

    def _start_pipeline(self) -> None:
        assert self.feed is not None
        self._store_task = asyncio.get_running_loop().create_task(
            self.store.run(), name="bar-store"
        )
        self.feed.start(self._start_stored)

    async def _stop_pipeline(self) -> dict[str, int]:
        """Close the pipeline; return symbol → open time of the last bar it published."""
        assert self.feed is not None
        await self.feed.close()
        self._store_task.cancel()
        await asyncio.gather(self._store_task, return_exceptions=True)  # flushes on cancel
        seq = self.feed.sequencer
        last = {}
        for symbol, sid in self.feed.symbol_ids.items():
            nxt = seq.next_open(sid)
            if nxt != UNKNOWN:
                last[symbol] = nxt - seq.interval_ms
        return last

    async def _refresh_universe(self, ctx: ProcessContext) -> None:
        while not await ctx.wait_stop(self.tuning.universe_refresh_s):
            try:
                fresh = await select_current(self.rest, ctx.settings, self.universe)
            except Exception as exc:
                log.error("feed: daily universe refresh failed (%s); keeping the current one", exc)
                continue
            if fresh.ids() == self.universe.ids():
                continue
            await self.universes.save(fresh, f"refreshed: {len(fresh)} symbols")
            published = await self._stop_pipeline()
            added = set(fresh.ids()) - set(self.universe.ids())
            stored = await last_stored_open_times(ctx.db, sorted(added)) if added else {}
            self.universe = fresh
            self._build(fresh, {**stored, **published})
            self._start_pipeline()
            log.warning("feed: universe changed (%d symbols, %d new); pipeline rebuilt",
                        len(fresh), len(added))  # fmt: skip

    async def _publish_updates(self) -> None:
        while True:
            await asyncio.sleep(self.tuning.publish_updates_every_s)
            if self.feed is not None:
                updates = self.feed.take_updates()
                for i in range(len(updates)):
                    self.publisher.publish(updates[i : i + 1])

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.tuning.stats_every_s)
            if self.feed is not None:
                log.info(
                    "feed stats: %s ring_backlog=%d", self.feed.stats(), self.publisher.backlog
                )

    # -- stop -------------------------------------------------------------------------------
    async def drain(self, ctx: ProcessContext) -> None:
        if self.feed is not None:
            await self._stop_pipeline()
        for _ in range(200):  # up to 1 s for a lagging consumer to make room
            if not self.publisher.backlog:
                break
            await asyncio.sleep(0.005)
        if self.publisher.backlog:
            log.warning("feed: %d closed bars not published to the ring at stop (stored in "
                        "market_data)", self.publisher.backlog)  # fmt: skip
        await self.writer.close()

    async def close(self, ctx: ProcessContext) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # open() may have failed half-way: release only what it took.
        if hasattr(self, "cache"):
            with contextlib.suppress(Exception):
                await self.cache.close()
        if hasattr(self, "rest"):
            await self.rest.close()
            self.budget.close()


def main(config) -> int:
    """Entry point of the supervised ``feed`` process (``aegis.processes.feed:main``)."""
    return run_process(Feed(), config)
