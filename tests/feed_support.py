"""Shared harness of the feed tests: a simulator, a MarketFeed, a real ring and PostgreSQL.

``FeedRig`` runs the feed pipeline of ``processes/feed`` in the test's loop: simulator →
WebSocket + REST → MarketFeed → RingPublisher (a real shared-memory ring, drained by a consumer
task that records every (symbol id, open time) it reads) and ClosedBarStore → MarketDataWriter →
DurableWriter → PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aegis.binance.market_feed import FeedOptions, MarketFeed
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sim.config import SimConfig
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.streams import StreamSettings
from aegis.binance.universe import select_universe
from aegis.binance.weight import WeightBudget
from aegis.processes.feed_outputs import ClosedBarStore, RingPublisher
from aegis.records import BAR_DTYPE
from aegis.ringbuffer import Ring
from aegis.store.database import Database
from aegis.store.durable import DurableWriter
from aegis.store.market_data import MarketDataWriter
from aegis.store.setup import prepare_database

DAY2 = 1679097600000  # 2023-03-18 00:00 UTC, two days into the recordings
MINUTE = 60_000
REAL = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "DOGEUSDT")

_migrated: set[str] = set()


async def migrated(dsn: str) -> None:
    """Apply the migrations once per test session database."""
    if dsn not in _migrated:
        await prepare_database(dsn)
        _migrated.add(dsn)


def sim_config(symbols: int, minutes: int, **overrides) -> SimConfig:
    """A simulator serving ``symbols`` symbols from DAY2 for ``minutes``, 1200x real time.

    A running clock, not the stepped one: while every connection is down, simulated time must
    go on at its pace (as real time does), not race to the end of the recording.
    """
    base = dict(
        symbols=REAL, symbol_count=symbols if symbols > len(REAL) else None,
        from_ms=DAY2 - 60 * MINUTE, to_ms=DAY2 + minutes * MINUTE, start_ms=DAY2, speed=1200.0,
        updates_per_bar=2, start_paused=True, weight_limit_1m=6000,
    )  # fmt: skip
    if symbols < len(REAL):
        base["symbols"] = REAL[:symbols]
    base.update(overrides)
    return SimConfig(**base)


def fast_options(**stream_overrides) -> FeedOptions:
    streams = dict(
        max_streams_per_connection=50, silence_deadline_s=1.0, backoff_base_s=0.02,
        backoff_cap_s=0.2, replacement_wait_s=2.0,
    )  # fmt: skip
    streams.update(stream_overrides)
    return FeedOptions(
        streams=StreamSettings(**streams), initial_history_bars=30,
        backfill_retry_base_s=0.05, backfill_retry_cap_s=0.5,
    )  # fmt: skip


@dataclass
class FeedRig:
    """A running simulator + feed + ring + database; see module docstring."""

    sim: BinanceSimulator
    feed: MarketFeed
    rest: BinanceRestClient
    budget: WeightBudget
    ring: Ring
    writer: DurableWriter
    store: ClosedBarStore
    ids: dict[str, int]
    read: list[np.ndarray] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)

    def ring_pairs(self) -> np.ndarray:
        """(symbol_id, open_time_ms) of every record read from the ring, in ring order."""
        if not self.read:
            return np.zeros((0, 2), dtype=np.int64)
        bars = np.concatenate(self.read)
        return np.stack([bars["symbol_id"].astype(np.int64), bars["open_time_ms"]], axis=1)

    async def wait_published_through(self, last_open_ms: int, timeout: float) -> bool:
        """Wait until every symbol has published its bar opening at ``last_open_ms``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seq = self.feed.sequencer
        while loop.time() < deadline:
            if all(seq.next_open(i) > last_open_ms for i in self.ids.values()):
                return True
            await asyncio.sleep(0.05)
        return False


@contextlib.asynccontextmanager
async def feed_rig(
    config: SimConfig,
    dsn: str,
    tmp_path: Path,
    *,
    options: FeedOptions | None = None,
    last_stored: dict[str, int] | None = None,
    sim_clock_ages: bool = False,
    budget_share: float = 0.5,
    budget_window_s: float = 60.0,
    seed: int = 7,
):
    await migrated(dsn)
    async with BinanceSimulator(config) as sim:
        budget = WeightBudget.for_home(
            tmp_path, limit=config.weight_limit_1m, share=budget_share, window_s=budget_window_s
        )
        rest = BinanceRestClient(sim.rest_url, budget, backoff_base_s=0.05, backoff_cap_s=0.5)
        info = await rest.exchange_info()
        tickers = await rest.ticker_24hr()
        universe = select_universe(info, tickers, top_n=len(sim.market.series))
        ids = universe.ids()
        ring = Ring.create(
            f"aegis-test-feed-{os.getpid()}-{uuid.uuid4().hex[:8]}", BAR_DTYPE, 1 << 14, 1
        )
        producer, consumer = ring.producer(), ring.consumer(0)
        database = Database(dsn)
        writer = DurableWriter(database, tmp_path / "spill", name="feed-test")
        await writer.start()
        store = ClosedBarStore(MarketDataWriter(writer), {i: s for s, i in ids.items()})
        publisher = RingPublisher(producer)

        def on_closed(record: np.ndarray) -> None:
            publisher.publish(record)
            store.add(record)

        # Connection age on the simulator's clock, so its scaled 24 h cut and the feed's
        # replacement deadline are measured in the same time.
        kwargs = {"age_clock": lambda: sim.clock.now_ms() / 1000} if sim_clock_ages else {}
        feed = MarketFeed(
            sim.ws_url, rest, ids, on_closed, options=options or fast_options(),
            rng=random.Random(seed), **kwargs,
        )  # fmt: skip
        rig = FeedRig(sim, feed, rest, budget, ring, writer, store, ids)

        async def drain_ring() -> None:
            while True:
                batch = consumer.poll()
                if len(batch):
                    rig.read.append(batch.copy())
                    consumer.commit()
                else:
                    await asyncio.sleep(0.002)

        rig.tasks = [asyncio.create_task(t) for t in (publisher.run(), store.run(), drain_ring())]
        try:
            feed.start(last_stored or {})
            assert await feed.streams.wait_connected(15), "streams did not connect"
            yield rig
        finally:
            await feed.close()
            for _ in range(500):
                if not publisher.backlog:
                    break
                await asyncio.sleep(0.01)
            for task in rig.tasks:
                task.cancel()
            await asyncio.gather(*rig.tasks, return_exceptions=True)
            while len(batch := consumer.poll()):
                rig.read.append(batch.copy())
                consumer.commit()
            await writer.flush(30)
            await writer.close()
            await rest.close()
            budget.close()
            ring.close()


def run_feed_child(config) -> None:
    """Target of a spawned feed process: exit with the code ``processes/feed.main`` returns."""
    import sys

    from aegis.processes.feed import main

    sys.exit(main(config))
