"""One of the ring's multicast readers."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .barrier import SequenceBarrier
from .errors import RingError, RingInUseError
from .kernels import arm_wake, commit_sequence, load_acquire, store_release
from .layout import (
    CURSOR,
    WAKE_ON_COMMIT,
    WAKE_ON_PUBLISH,
    consumer_heartbeat_word,
    consumer_pid_word,
    consumer_sequence_word,
)
from .segment import pid_alive
from .wait import DEFAULT_WAIT, WaitStrategy
from .wake import WakeListener, WakeSender

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
        after: Sequence[int] = (),
        patience_s: float = 1.0,
        wakes: Sequence[int] = (),
    ) -> None:
        if not 0 <= index < ring.consumers:
            raise ValueError(f"consumer index {index} outside 0..{ring.consumers - 1}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        for name, indices in (("after", after), ("wakes", wakes)):
            if any(not 0 <= i < ring.consumers for i in indices) or index in indices:
                raise ValueError(f"{name}={tuple(indices)} names itself or a consumer outside "
                                 f"0..{ring.consumers - 1}")  # fmt: skip
        meta = ring._meta
        pid_word = consumer_pid_word(index)
        holder = int(meta[pid_word])
        if holder not in (0, os.getpid()) and pid_alive(holder):
            raise RingInUseError(f"consumer {index} of ring {ring.name!r} is held by pid {holder}")
        listener = WakeListener(ring.name, index) if wait.needs_listener else None
        meta[pid_word] = os.getpid()
        self.index = index
        self.after = tuple(after)
        self._ring = ring
        self._meta = meta
        self._base = ring._base  # None after close: a kernel call then raises, never crashes
        self._records = ring._records
        self._empty = ring._records[:0]
        self._capacity = ring.capacity
        self._mask = ring.capacity - 1
        self._max_batch = ring.capacity if max_batch is None else max_batch
        self._wait = wait
        self._barrier = SequenceBarrier(meta, index, listener, after, patience_s)
        self._sequence_word = consumer_sequence_word(index)
        self._heartbeat_word = consumer_heartbeat_word(index)
        self._pid_word = pid_word
        self._sequence = load_acquire(self._base, self._sequence_word)
        self._pending = 0
        # Consumers reading after this one: a commit wakes those asleep (see ``commit``).
        self._wakes_mask = sum(1 << i for i in set(wakes))
        self._waker = WakeSender(ring.name, ring.consumers, meta) if wakes else None
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
        """Like ``poll`` but wait per the wait strategy; return an empty view after ``timeout`` s.

        Records held back by an ``after`` dependency are waited for by short naps (an
        event loop sleeps on ``wake_fileno`` instead: see ``arm``).
        """
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        nap = 0
        while True:
            cursor = load_acquire(self._base, CURSOR)
            now = time.monotonic_ns()
            if cursor > self._sequence:
                batch = self._view(cursor)
                if len(batch) or (deadline is not None and now >= deadline):
                    return batch
                self._wait.idle(nap)  # held by a dependency
                nap += 1
                continue
            self._meta[self._heartbeat_word] = now
            chunk_end = now + int(HEARTBEAT_PERIOD_S * 1e9)
            if deadline is not None:
                chunk_end = min(chunk_end, deadline)
            cursor = self._wait.wait(self._barrier, self._sequence, chunk_end)
            timed_out = deadline is not None and time.monotonic_ns() >= deadline
            if cursor <= self._sequence and timed_out:
                return self._view(cursor)

    @property
    def bypasses(self) -> int:
        """Times records were read past an ``after`` dependency that stalled ``patience_s``."""
        return self._barrier.bypasses

    # -- event-loop integration: sleep in select/epoll instead of in the wait strategy --------

    def wake_fileno(self) -> int:
        """The descriptor that becomes readable on the producer's wake-up (``BlockingWait``)."""
        if self._barrier.listener is None:
            raise RingError("wake_fileno needs a consumer created with BlockingWait")
        return self._barrier.listener.fileno()

    def arm(self) -> bool:
        """Ask the producer for a wake-up on its next publish; True if records are readable now.

        Call before sleeping on ``wake_fileno()``; ``disarm()`` after waking (the flag and the
        queued wake-ups are cleared). Records ``held`` by a dependency are not readable; the
        dependency's commit wakes this consumer when the dependency was created with
        ``wakes`` naming it (else nap briefly while ``held``). While a live dependency gates
        this consumer, a publish alone does not wake it: only such a commit does.
        """
        barrier = self._barrier
        flag = WAKE_ON_COMMIT if barrier.gated else WAKE_ON_PUBLISH
        cursor = arm_wake(self._base, barrier.wake_index, barrier.cursor_index, flag)
        return barrier.limit(cursor, self._sequence) > self._sequence

    @property
    def held(self) -> bool:
        """True while published records wait for an ``after`` dependency to commit them."""
        cursor = load_acquire(self._base, CURSOR)
        return cursor > self._sequence and self._barrier.limit(cursor, self._sequence) <= (
            self._sequence
        )

    def disarm(self) -> None:
        """Lower the wake flag and drop queued wake-ups."""
        self._barrier.lower_wake_flag()
        if self._barrier.listener is not None:
            self._barrier.listener.drain()

    def commit(self, count: int | None = None) -> None:
        """Mark the last polled batch (or its first ``count`` records) handled, with one store."""
        if count is None:
            count = self._pending
        elif not 0 <= count <= self._pending:
            raise ValueError(f"cannot commit {count} records of a {self._pending}-record batch")
        self._sequence += count
        self._pending = 0
        if self._waker is None:
            store_release(self._base, self._sequence_word, self._sequence)
            return
        sleepers = commit_sequence(self._base, self._sequence_word, self._sequence)
        if sleepers & self._wakes_mask:
            self._waker.wake(sleepers & self._wakes_mask)

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
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        self._base = None
        # Shadow the reading methods so a late call fails clearly (free on the hot path).
        self.poll = self.wait_for = self.commit = self.arm = self.disarm = self._closed
        if int(self._meta[self._pid_word]) == os.getpid():
            self._meta[self._pid_word] = 0

    def _closed(self, *args: object, **kwargs: object) -> None:
        raise RingError(f"consumer {self.index} of ring {self._ring.name!r} is closed")

    def _view(self, cursor: int) -> np.ndarray:
        sequence = self._sequence
        available = self._barrier.limit(cursor, sequence) - sequence
        if available <= 0:
            self._pending = 0
            return self._empty
        start = sequence & self._mask
        count = min(available, self._capacity - start, self._max_batch)
        self._pending = count
        return self._records[start : start + count]
