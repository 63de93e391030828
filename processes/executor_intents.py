"""Intents decided as they arrive, written one ring batch at a time, in ring order.

A PostgreSQL commit takes 0.3 ms on a quiet machine and several ms when a minute's close
has every process busy. An executor that awaited each intent batch's commit before reading
the next left intents of the same minute waiting in the ring for that long. The pipeline
decides every batch as soon as it is published (``ReadAhead.take``) and queues its rows;
one write is in flight at a time, in the order the batches were decided, and the ring
records of a batch are committed only after its write. Reports and notes go out after the
write (``ExecutorService.persist_intents``), as before.

A crash still loses nothing: every record not yet written is uncommitted and comes again.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aegis.processes.executor_service import DecidedIntents, ExecutorService
from aegis.ringbuffer import ReadAhead


class IntentPipeline:
    """The executor's intents: decided at once, persisted in order (create inside the loop)."""

    def __init__(self, service: ExecutorService, reader: ReadAhead) -> None:
        self.service = service
        self.reader = reader
        self._queue: deque[DecidedIntents] = deque()  # decided, oldest first; [0] may be writing
        self.writing: asyncio.Task | None = None

    @property
    def idle(self) -> bool:
        """No decided intent waits for its write."""
        return not self._queue

    async def take(self) -> int:
        """Decide the intents published since the last take and queue their write."""
        fresh = self.reader.take()
        if not len(fresh):
            return 0
        self._queue.append(await self.service.decide_intents(fresh))
        self._start()
        return len(fresh)

    def settle(self) -> int:
        """Commit the batch whose write finished (re-raising its failure); start the next."""
        if self.writing is None or not self.writing.done():
            return 0
        task, self.writing = self.writing, None
        count = task.result()
        self._queue.popleft()
        self.reader.commit(count)
        self._start()
        return count

    async def finish(self) -> None:
        """Write and commit every decided batch (at stop); a failure leaves the rest uncommitted."""
        while self._queue:
            if self.writing is None:
                self._start()
            await asyncio.wait({self.writing})
            self.settle()

    def _start(self) -> None:
        if self.writing is None and self._queue:
            self.writing = asyncio.get_running_loop().create_task(
                self.service.persist_intents(self._queue[0]), name="intent-write"
            )
