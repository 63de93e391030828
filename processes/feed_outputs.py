"""Where the feed's closed bars go: the market ring, ``market_data``, the latest bar in Redis.

``RingPublisher`` publishes each record at once when the ring has room (the hot path: one
``try_publish``, no allocation). When the slowest consumer lags and the ring is full, records
queue in order in a backlog that a task drains as room appears, so a slow consumer never stalls
the WebSocket reading (Binance drops a slow reader) and never loses or reorders a bar.

``ClosedBarStore`` buffers closed records and hands them all at once to ``MarketDataWriter``
(validated, batched ``COPY`` + ``ON CONFLICT DO NOTHING``, spilled to disk while PostgreSQL is
down) and puts each symbol's newest bar in the ``HotCache`` (Redis, 1 h TTL, one pipelined round
trip). It flushes once closes have stopped arriving for ``quiet_s``, or when the oldest buffered
bar has waited ``flush_every_s``: Binance closes every symbol's bar within milliseconds of the
minute, and that burst is when the brain and executor decide, so the storing (validation, the
COPY, PostgreSQL's and Redis's own work) runs just after it instead of competing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from aegis.records import BAR_DTYPE
from aegis.store.cache import HotCache, LatestBar
from aegis.store.market_data import MarketDataWriter

log = logging.getLogger(__name__)


class LatencyRecorder:
    """Receive → publish latencies in ns, in a preallocated ring of samples."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.samples = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def add(self, ns: int) -> None:
        self.samples[self.count % len(self.samples)] = ns
        self.count += 1

    def values(self) -> np.ndarray:
        return self.samples[: min(self.count, len(self.samples))].copy()


class RingPublisher:
    """Publish BAR_DTYPE records to a ring producer, in order, without ever blocking the loop."""

    def __init__(
        self,
        producer: Any,
        *,
        latency: LatencyRecorder | None = None,
        retry_s: float = 0.0005,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``producer`` is an ``aegis.ringbuffer.Producer`` of a BAR_DTYPE ring."""
        self._try_publish = producer.try_publish
        self._try_publish_batch = producer.try_publish_batch
        # Records not published yet, oldest first, in the chunks they came in: one copy and one
        # ring call per chunk, not per record (a backlog can reach hundreds of thousands).
        self._backlog: deque[np.ndarray] = deque()
        self._queued = 0
        self._latency = latency
        self._retry_s = retry_s
        self._clock = clock
        self._wakeup = asyncio.Event()
        self.published = 0
        self.backlogged = 0

    @property
    def backlog(self) -> int:
        """Records waiting for room in the ring."""
        return self._queued

    def publish(self, record: np.ndarray) -> None:
        """Publish a one-record array now, or queue a copy behind earlier ones."""
        if not self._backlog and self._try_publish(record):
            self.published += 1
            if self._latency is not None:
                self._latency.add(self._clock() - int(record[0]["recv_ns"]))
            return
        self._queue(record.copy())

    def publish_many(self, records: np.ndarray) -> None:
        """Publish records in order (one ring release for all that fit); queue the rest."""
        done = 0 if self._backlog else self._try_publish_batch(records)
        self.published += done
        if self._latency is not None:
            now = self._clock()
            for recv_ns in records["recv_ns"][:done].tolist():
                self._latency.add(now - recv_ns)
        if done < len(records):
            self._queue(records[done:].copy())

    def _queue(self, chunk: np.ndarray) -> None:
        self._backlog.append(chunk)
        self._queued += len(chunk)
        self.backlogged += len(chunk)
        self._wakeup.set()

    async def run(self) -> None:
        """Drain the backlog whenever the ring has room again (run as a task)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._backlog:
                head = self._backlog[0]
                done = self._try_publish_batch(head)
                self.published += done
                self._queued -= done
                if done == len(head):
                    self._backlog.popleft()
                    continue
                if done:
                    self._backlog[0] = head[done:]
                await asyncio.sleep(self._retry_s)


class ClosedBarStore:
    """Batch closed bars into ``market_data`` and the latest bar per symbol into the cache."""

    def __init__(
        self,
        writer: MarketDataWriter,
        symbol_of: Mapping[int, str],
        *,
        timeframe: str = "1m",
        cache: HotCache | None = None,
        capacity: int = 8192,
        flush_every_s: float = 0.25,
        quiet_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._symbol_of = dict(symbol_of)
        self.timeframe = timeframe
        self._cache = cache
        self._buffer = np.zeros(capacity, dtype=BAR_DTYPE)
        self._count = 0
        self._flush_every = flush_every_s
        self._quiet = min(quiet_s, flush_every_s)
        self._clock = clock
        self._first_s = self._last_s = 0.0  # when the oldest / newest buffered bar came
        self._latest: dict[int, np.void] = {}
        self.stored = 0
        self.cached = 0

    def add(self, record: np.ndarray) -> None:
        """Take one closed bar (a one-record array); flush at once when the buffer is full."""
        self.add_many(record)

    def add_many(self, records: np.ndarray) -> None:
        """Take closed bars (a BAR_DTYPE array), flushing whenever the buffer fills."""
        taken = 0
        while taken < len(records):
            if self._count == len(self._buffer):
                self.flush()
            now = self._clock()
            if self._count == 0:
                self._first_s = now
            self._last_s = now
            n = min(len(records) - taken, len(self._buffer) - self._count)
            self._buffer[self._count : self._count + n] = records[taken : taken + n]
            self._count += n
            taken += n

    def due_in(self) -> float | None:
        """Seconds until the buffered bars are due for a flush (0: now); None when empty."""
        if self._count == 0:
            return None
        now = self._clock()
        quiet = self._last_s + self._quiet - now
        oldest = self._first_s + self._flush_every - now
        return max(0.0, min(quiet, oldest))

    def flush(self) -> int:
        """Queue the buffered bars on the writer (never blocks on the database); return count."""
        n = self._count
        if n == 0:
            return 0
        bars = self._buffer[:n].copy()
        self._count = 0
        # One validation pass for every symbol: per-symbol batches cost ~20 ms of loop time
        # per flush at 300 symbols, and a flush may coincide with a burst of closes.
        self._writer.write_symbols(self._symbol_of, self.timeframe, bars)
        for bar in bars[::-1][np.unique(bars["symbol_id"][::-1], return_index=True)[1]]:
            if int(bar["symbol_id"]) in self._symbol_of:  # the writer rejected the others
                self._latest[int(bar["symbol_id"])] = bar  # each symbol's newest bar
        self.stored += n
        return n

    async def push_latest(self) -> int:
        """Put each symbol's newest bar since the last push into the cache; return count."""
        if self._cache is None or not self._latest:
            self._latest.clear()
            return 0
        latest, self._latest = self._latest, {}
        await self._cache.put_bars(
            _latest_bar(self._symbol_of[symbol_id], self.timeframe, bar)
            for symbol_id, bar in latest.items()
        )
        self.cached += len(latest)
        return len(latest)

    async def run(self) -> None:
        """Flush and push when due (run as a task); a last flush on cancel."""
        try:
            while True:
                due = self.due_in()
                if due is None:
                    await asyncio.sleep(self._quiet)
                elif due > 0:
                    await asyncio.sleep(due)
                else:
                    self.flush()
                    await self.push_latest()
        finally:
            self.flush()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.push_latest())


def _latest_bar(symbol: str, timeframe: str, bar: np.void) -> LatestBar:
    return LatestBar(
        symbol, timeframe, int(bar["open_time_ms"]), float(bar["open"]), float(bar["high"]),
        float(bar["low"]), float(bar["close"]), float(bar["volume"]), float(bar["quote_volume"]),
        int(bar["trades"]), float(bar["taker_buy_volume"]), float(bar["taker_buy_quote_volume"]),
        int(bar["flags"]),
    )  # fmt: skip
