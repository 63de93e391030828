"""One of the ring's multicast readers."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from .barrier import SequenceBarrier
from .errors import RingError, RingInUseError
from .kernels import load_acquire, store_release
from .layout import CURSOR, consumer_heartbeat_word, consumer_pid_word, consumer_sequence_word
from .segment import pid_alive
from .wait import DEFAULT_WAIT, WaitStrategy
from .wake import WakeListener

if TYPE_CHECKING:
    from .ring import Ring

HEARTBEAT_PERIOD_S = 1.0  # a consumer blocked in wait_for still beats this often


class Consumer:
    """Read every record of the ring, in order, as zero-copy batches, then commit.

    Delivery is at-least-once across crashes: the committed sequence lives in shared memory,
    so a consumer killed between reading a batch and ``commit()`` is handed the same batch
    again by its next life (attached with the same ``index``); nothing is ever skipped.
    Views returned by ``poll``/``wait_for`` point into the ring and are valid until
    ``commit()`` (after which the producer may overwrite those slots).
    """

    def __init__(
        self,
        ring: Ring,
        index: int,
        wait: WaitStrategy = DEFAULT_WAIT,
        max_batch: int | None = None,
    ) -> None:
        if not 0 <= index < ring.consumers:
            raise ValueError(f"consumer index {index} outside 0..{ring.consumers - 1}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        meta = ring._meta
        pid_word = consumer_pid_word(index)
        holder = int(meta[pid_word])
        if holder not in (0, os.getpid()) and pid_alive(holder):
            raise RingInUseError(f"consumer {index} of ring {ring.name!r} is held by pid {holder}")
        listener = WakeListener(ring.name, index) if wait.needs_listener else None
        meta[pid_word] = os.getpid()
        self.index = index
        self._ring = ring
        self._meta = meta
        self._base = ring._base  # None after close: a kernel call then raises, never crashes
        self._records = ring._records
        self._empty = ring._records[:0]
        self._capacity = ring.capacity
        self._mask = ring.capacity - 1
        self._max_batch = ring.capacity if max_batch is None else max_batch
        self._wait = wait
        self._barrier = SequenceBarrier(meta, index, listener)
        self._sequence_word = consumer_sequence_word(index)
        self._heartbeat_word = consumer_heartbeat_word(index)
        self._pid_word = pid_word
        self._sequence = load_acquire(self._base, self._sequence_word)
        self._pending = 0
        self.beat()

    @property
    def sequence(self) -> int:
        """Count of records committed (the sequence of the next record to handle)."""
        return self._sequence

    @property
    def lag(self) -> int:
        """Records published but not yet committed by this consumer."""
        return load_acquire(self._base, CURSOR) - self._sequence

    def poll(self) -> np.ndarray:
        """Return the records available from the committed sequence (a view, maybe empty).

        The batch stops at the end of the buffer (it never wraps) and at ``max_batch``.
        Polling again without ``commit()`` returns the same records first.
        """
        return self._view(load_acquire(self._base, CURSOR))

    def wait_for(self, timeout: float | None = None) -> np.ndarray:
        """Like ``poll`` but wait per the wait strategy; return an empty view after ``timeout`` s."""
        cursor = load_acquire(self._base, CURSOR)
        if cursor > self._sequence:
            return self._view(cursor)
        now = time.monotonic_ns()
        deadline = None if timeout is None else now + int(timeout * 1e9)
        while True:
            self._meta[self._heartbeat_word] = now
            chunk_end = now + int(HEARTBEAT_PERIOD_S * 1e9)
            if deadline is not None:
                chunk_end = min(chunk_end, deadline)
            cursor = self._wait.wait(self._barrier, self._sequence, chunk_end)
            now = time.monotonic_ns()
            if cursor > self._sequence or (deadline is not None and now >= deadline):
                return self._view(cursor)

    def commit(self, count: int | None = None) -> None:
        """Mark the last polled batch (or its first ``count`` records) handled, with one store."""
        if count is None:
            count = self._pending
        elif not 0 <= count <= self._pending:
            raise ValueError(f"cannot commit {count} records of a {self._pending}-record batch")
        self._sequence += count
        self._pending = 0
        store_release(self._base, self._sequence_word, self._sequence)

    def beat(self) -> None:
        """Record that this consumer is alive (monotonic ns, read by ``Ring.inspect``)."""
        self._meta[self._heartbeat_word] = time.monotonic_ns()

    def close(self) -> None:
        """Release the consumer slot; its committed sequence stays for the next life."""
        if self._barrier is None:
            return
        self._barrier.lower_wake_flag()
        self._barrier.close()
        self._barrier = None
        self._base = None
        # Shadow the reading methods so a late call fails clearly (free on the hot path).
        self.poll = self.wait_for = self.commit = self._closed
        if int(self._meta[self._pid_word]) == os.getpid():
            self._meta[self._pid_word] = 0

    def _closed(self, *args: object, **kwargs: object) -> None:
        raise RingError(f"consumer {self.index} of ring {self._ring.name!r} is closed")

    def _view(self, cursor: int) -> np.ndarray:
        sequence = self._sequence
        available = cursor - sequence
        if available <= 0:
            self._pending = 0
            return self._empty
        start = sequence & self._mask
        count = min(available, self._capacity - start, self._max_batch)
        self._pending = count
        return self._records[start : start + count]
