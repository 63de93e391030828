"""The ring's single writer."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import RingError, RingFull, RingInUseError
from .kernels import publish_batch, try_publish
from .layout import CURSOR, H_STALLS, PRODUCER_PID
from .segment import pid_alive
from .wait import DEFAULT_WAIT, WaitStrategy
from .wake import WakeSender

if TYPE_CHECKING:
    from .ring import Ring


class Producer:
    """Publish records of the ring's dtype; one live producer per ring.

    The fastest path writes fields into ``slot`` (a preallocated one-record array of the
    ring's dtype, e.g. ``rec = producer.slot[0]; rec["close"] = 1.5``) and calls
    ``try_publish()`` / ``publish()`` without an argument: nothing is allocated per record.
    Passing a one-element array of the ring's dtype publishes straight from its memory (checked
    once while the caller keeps passing the same array, as a parser reusing one record does);
    an ``np.void`` is copied into ``slot`` first. A restarted producer resumes at the cursor kept
    in shared memory.
    """

    def __init__(self, ring: Ring, wait: WaitStrategy = DEFAULT_WAIT) -> None:
        meta = ring._meta
        owner = int(meta[PRODUCER_PID])
        if owner not in (0, os.getpid()) and pid_alive(owner):
            raise RingInUseError(f"ring {ring.name!r} already has a live producer (pid {owner})")
        meta[PRODUCER_PID] = os.getpid()
        self._ring = ring
        self._meta = meta
        self._base = ring._base  # None after close: a kernel call then raises, never crashes
        self._dtype = ring.dtype
        self._consumers = ring.consumers
        self._wait = wait
        self.slot = np.zeros(1, dtype=ring.dtype)
        self._slot_address = self.slot.ctypes.data
        # The last array published from and its address; referenced, so its memory stays put.
        self._source: np.ndarray | None = None
        self._source_dtype: np.dtype | None = None
        self._source_address = 0
        self._waker = WakeSender(ring.name, ring.consumers, ring._meta)

    @property
    def cursor(self) -> int:
        """Count of records published so far (the next record's sequence)."""
        return int(self._meta[CURSOR])

    @property
    def stalls(self) -> int:
        """Times a publish found the ring full (shared by every producer life of this ring)."""
        return int(self._meta[H_STALLS])

    def try_publish(self, record: np.void | np.ndarray | None = None) -> bool:
        """Publish one record if a slot is free; return False (nothing written) when full."""
        address = self._slot_address if record is None else self._address_of(record)
        sleepers = try_publish(self._base, address)
        if sleepers < 0:
            self._meta[H_STALLS] += 1
            return False
        if sleepers:
            self._wake(sleepers)
        return True

    def publish(
        self, record: np.void | np.ndarray | None = None, timeout: float | None = None
    ) -> None:
        """Publish one record, waiting per the wait strategy; ``RingFull`` after ``timeout`` s."""
        address = self._slot_address if record is None else self._address_of(record)
        sleepers = try_publish(self._base, address)
        if sleepers < 0:
            self._meta[H_STALLS] += 1
            deadline = None if timeout is None else time.monotonic() + timeout
            attempt = 0
            while sleepers < 0:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RingFull(
                        f"ring {self._ring.name!r} full for {timeout}s at cursor {self.cursor}: "
                        "the slowest consumer is not reading"
                    )
                self._wait.idle(attempt)
                attempt += 1
                sleepers = try_publish(self._base, address)
        if sleepers:
            self._wake(sleepers)

    def try_publish_batch(self, records: np.ndarray) -> int:
        """Publish the leading records of a 1-D array that fit now, in order; return how many
        (0 when the ring is full; never waits)."""
        records = self._batch_of(records)
        address, total = records.ctypes.data, len(records)
        start = 0
        while start < total:
            count, sleepers = publish_batch(self._base, address, start, total)
            if sleepers:
                self._wake(sleepers)
            if not count:
                self._meta[H_STALLS] += 1
                break
            start += count
        return start

    def publish_batch(self, records: np.ndarray, timeout: float | None = None) -> None:
        """Publish every record of a 1-D array, as many per cursor release as fit.

        Raises ``RingFull`` (with ``.published``, the count that did go out, in order) when
        no slot frees up for ``timeout`` seconds in a row.
        """
        records = self._batch_of(records)
        address, total = records.ctypes.data, len(records)
        start = 0
        attempt = 0
        stalled = False
        deadline = None
        while start < total:
            count, sleepers = publish_batch(self._base, address, start, total)
            if sleepers:
                self._wake(sleepers)
            if count:
                start += count
                attempt = 0
                stalled = False  # the timeout bounds a wait without progress, not the batch
                continue
            if not stalled:
                stalled = True
                self._meta[H_STALLS] += 1
                deadline = None if timeout is None else time.monotonic() + timeout
            elif deadline is not None and time.monotonic() >= deadline:
                raise RingFull(
                    f"ring {self._ring.name!r} full for {timeout}s after {start} of "
                    f"{total} records",
                    published=start,
                )
            self._wait.idle(attempt)
            attempt += 1

    def _batch_of(self, records: np.ndarray) -> np.ndarray:
        if not isinstance(records, np.ndarray) or records.dtype != self._dtype:
            raise TypeError(f"a batch must be an array of the ring's dtype {self._dtype}")
        if records.ndim != 1:
            raise ValueError(f"a batch must be a 1-D array, got shape {records.shape}")
        return np.ascontiguousarray(records)  # kept referenced while its address is used

    def close(self) -> None:
        """Release the producer role (the cursor stays in shared memory)."""
        if self._waker is None:
            return
        self._waker.close()
        self._waker = None
        self._base = None
        # Shadow the publishing methods so a late call fails clearly instead of reaching a
        # kernel with no segment (costs nothing on the hot path).
        self.try_publish = self.publish = self.publish_batch = self._closed
        if int(self._meta[PRODUCER_PID]) == os.getpid():
            self._meta[PRODUCER_PID] = 0

    def _closed(self, *args: object, **kwargs: object) -> None:
        raise RingError(f"producer of ring {self._ring.name!r} is closed")

    def _address_of(self, record: np.void | np.ndarray) -> int:
        """Where the publish kernel copies the record from (its own memory when it can)."""
        if record is self._source and record.dtype is self._source_dtype:
            return self._source_address  # the same array again: checked when first seen
        if record.dtype != self._dtype:
            raise TypeError(f"record dtype {record.dtype} is not the ring's dtype {self._dtype}")
        if not isinstance(record, np.ndarray):
            self.slot[0] = record
            return self._slot_address
        if record.size != 1:
            raise ValueError(f"publish takes one record, got {record.size}; use publish_batch")
        self._source, self._source_dtype = record, record.dtype
        self._source_address = record.ctypes.data
        return self._source_address

    def _wake(self, sleepers: int) -> None:
        self._waker.wake(sleepers)
