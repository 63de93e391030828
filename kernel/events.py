"""Kernel events: one log line each, and one row each in ``kernel_events`` (PostgreSQL).

The watchdog's loop must never wait on the database (PostgreSQL may be the thing that is down),
so rows go through a queue to a writer thread that owns its own event loop and connection. The
store's ``DurableWriter`` (see ``StoreEventSink``) batches, retries and spills to disk while
the database is away; a sink that cannot even be created is retried here, its failures logged
aggregated, one line per streak with its count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

PENDING_LIMIT = 10_000


@dataclass(frozen=True)
class KernelEvent:
    """One supervision event: a start, an exit, a restart, a stall, a shutdown…"""

    process: str
    event: str
    reason: str
    pid: int | None = None
    exit_code: int | None = None
    detail: dict[str, Any] | None = None
    ts_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


class EventSink(Protocol):
    """Where rows go; ``write`` may be sync or async (it runs in the writer thread's loop)."""

    def write(self, ev: KernelEvent) -> Any: ...


class StoreEventSink:
    """``kernel_events`` through the store's ``EventLog`` and ``DurableWriter``.

    Created inside the writer thread's event loop. While PostgreSQL is down the rows wait in
    memory, then in fsync'ed spill files under ``spill_dir``, and are replayed when it is back
    (by this kernel or the next): an event is never lost, and a replay never duplicates one.
    """

    def __init__(self, dsn: str, spill_dir: Path, *, close_timeout_s: float = 3.0) -> None:
        from aegis.store.database import Database
        from aegis.store.durable import DurableWriter
        from aegis.store.events import EventLog

        self.writer = DurableWriter(Database(dsn, max_size=1), spill_dir, name="kernel-events")
        self._log = EventLog(self.writer)
        self._close_timeout_s = close_timeout_s

    @classmethod
    async def open(cls, dsn: str, spill_dir: Path) -> StoreEventSink:
        sink = cls(dsn, spill_dir)
        await sink.writer.start()
        return sink

    def write(self, ev: KernelEvent) -> None:
        self._log.record(
            ev.process, ev.event, ev.reason, pid=ev.pid, exit_code=ev.exit_code, detail=ev.detail
        )

    async def close(self) -> None:
        """Flush for a moment, then spill what is left to disk."""
        await self.writer.close(self._close_timeout_s)


SinkFactory = Callable[[], Any]
"""Called inside the writer thread's event loop; returns (or awaits to) an ``EventSink``."""


class EventRecorder:
    """Log an event once and queue its row; thread-safe, never blocks the caller."""

    def __init__(self, sink_factory: SinkFactory | None) -> None:
        self._queue: queue.SimpleQueue[KernelEvent | None] = queue.SimpleQueue()
        self._writer: _Writer | None = None
        if sink_factory is not None:
            self._writer = _Writer(self._queue, sink_factory)
            self._writer.start()

    def record(self, level: int, message: str, ev: KernelEvent) -> None:
        """Log ``message`` at ``level`` and queue ``ev`` for ``kernel_events``."""
        log.log(level, message)
        if self._writer is not None:
            self._queue.put_nowait(ev)

    def close(self, timeout: float = 10.0) -> int:
        """Flush queued rows within ``timeout`` seconds; return how many could not be written."""
        if self._writer is None:
            return 0
        self._queue.put_nowait(None)
        self._writer.join(timeout)
        lost = self._writer.unwritten()
        if lost:
            log.error("%d kernel events could not be written to kernel_events", lost)
        return lost


class _Writer(threading.Thread):
    def __init__(self, q: queue.SimpleQueue[KernelEvent | None], factory: SinkFactory) -> None:
        super().__init__(name="kernel-events", daemon=True)
        self._queue = q
        self._factory = factory
        self._pending: collections.deque[KernelEvent] = collections.deque(maxlen=PENDING_LIMIT)
        self._closing = False

    def unwritten(self) -> int:
        return len(self._pending) + self._queue.qsize()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        sink = None
        failures = 0
        while True:
            self._take(block=not self._pending, timeout=0.2)
            if not self._pending:
                if self._closing:
                    break
                continue
            try:
                if sink is None:
                    sink = await _maybe_await(self._factory())
                while self._pending:
                    ev = self._pending[0]
                    await _maybe_await(sink.write(ev))
                    self._pending.popleft()
                if failures:
                    log.warning("kernel_events writable again after %d failed attempts", failures)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.error(
                        "kernel_events write failed (%s); %d rows kept, retrying",
                        exc,
                        len(self._pending),
                    )
                sink = await _close_quietly(sink)
                if self._closing:
                    break
                await asyncio.sleep(min(2.0, 0.1 * failures))
        await _close_quietly(sink)

    def _take(self, *, block: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait = max(0.0, deadline - time.monotonic()) if block else None
                item = self._queue.get(block=block, timeout=wait)
            except queue.Empty:
                return
            if item is None:
                self._closing = True
            else:
                self._pending.append(item)
            block = False


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _close_quietly(sink: Any) -> None:
    close = getattr(sink, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await _maybe_await(close())
