"""Intents decided as they arrive, written one ring batch at a time, in ring order.

A PostgreSQL commit takes 0.3 ms on a quiet machine and several ms when a minute's close
has every process busy. An executor that awaited each intent batch's commit before reading
the next left intents of the same minute waiting in the ring for that long. The pipeline
decides every batch as soon as it is published (``ReadAhead.take``) and queues its rows;
one write is in flight at a time, in the order the batches were decided, and the ring
records of a batch are committed only after its write. Reports and notes go out after the
write (``ExecutorService.persist_intents``), as before.

A write waits until no intent came for ``quiet_s`` (at most ``max_s`` after the oldest
unwritten batch was decided). A minute's intents come in a few brain steps ~1 ms apart, and
PostgreSQL writing the first batch ran on the executor's CPU while the next batch waited in
the ring: traces of the e2e bench showed the second batch taken 3 ms after it was published.

A crash still loses nothing: every record not yet written is uncommitted and comes again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from aegis.processes.executor_service import DecidedIntents, ExecutorService
from aegis.ringbuffer import ReadAhead

INTENT_QUIET_S = 0.003  # a write starts once no intent came for this long...
INTENT_WRITE_MAX_S = 0.02  # ...or this long after the oldest unwritten batch was decided


class IntentPipeline:
    """The executor's intents: decided at once, persisted in order (create inside the loop)."""

    def __init__(
        self,
        service: ExecutorService,
        reader: ReadAhead,
        quiet_s: float = INTENT_QUIET_S,
        max_s: float = INTENT_WRITE_MAX_S,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.service = service
        self.reader = reader
        # (when decided, monotonic ns; the batch), oldest first; [0] may be writing
        self._queue: deque[tuple[int, DecidedIntents]] = deque()
        self.writing: asyncio.Task | None = None
        self._quiet_ns = round(quiet_s * 1e9)
        self._max_ns = round(max_s * 1e9)
        self._clock = clock
        self._last_take_ns = 0

    @property
    def idle(self) -> bool:
        """No decided intent waits for its write."""
        return not self._queue

    async def take(self) -> int:
        """Decide the intents published since the last take and queue their write."""
        fresh = self.reader.take()
        if not len(fresh):
            return 0
        decided = await self.service.decide_intents(fresh)
        self._last_take_ns = self._clock()
        self._queue.append((self._last_take_ns, decided))
        self._start_if_due()
        return len(fresh)

    def write_due_in_s(self) -> float:
        """Seconds until the next write may start (0: now, or nothing to write)."""
        if self.writing is not None or not self._queue:
            return 0.0
        due = min(self._last_take_ns + self._quiet_ns, self._queue[0][0] + self._max_ns)
        return max(0.0, (due - self._clock()) / 1e9)

    def settle(self) -> int:
        """Commit the batch whose write finished (re-raising its failure); start the next
        write once it is due (``write_due_in_s``)."""
        count = 0
        if self.writing is not None and self.writing.done():
            task, self.writing = self.writing, None
            count = task.result()
            self._queue.popleft()
            self.reader.commit(count)
        self._start_if_due()
        return count

    async def finish(self) -> None:
        """Write and commit every decided batch (at stop); a failure leaves the rest uncommitted."""
        while self._queue:
            if self.writing is None:
                self._start()
            await asyncio.wait({self.writing})
            self.settle()

    def _start_if_due(self) -> None:
        if self.writing is None and self._queue and not self.write_due_in_s():
            self._start()

    def _start(self) -> None:
        self.writing = asyncio.get_running_loop().create_task(
            self.service.persist_intents(self._queue[0][1]), name="intent-write"
        )
