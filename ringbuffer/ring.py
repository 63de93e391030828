"""The ring: one shared-memory segment, one producer, 1..N multicast consumers."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import RingInUseError, RingLayoutError
from .layout import (
    H_CAPACITY,
    H_CONSUMERS,
    H_CREATED_NS,
    H_DATA_OFFSET,
    H_FINGERPRINT,
    H_MAGIC,
    H_OWNER_PID,
    H_RECORD_SIZE,
    H_VERSION,
    LAYOUT_VERSION,
    LINE_WORDS,
    MAGIC,
    PRODUCER_PID,
    RingGeometry,
    consumer_pid_word,
    dtype_fingerprint,
    read_geometry,
    validate_parameters,
)
from .segment import Segment, attach_segment, pid_alive, publish_segment, unlink_segment
from .stats import RingStats, snapshot

if TYPE_CHECKING:  # these load the kernels: imported when a role is taken (see below)
    from .consumer import Consumer
    from .producer import Producer
    from .wait import WaitStrategy

log = logging.getLogger(__name__)


def _map_meta(segment: Segment, name: str) -> tuple[np.ndarray, RingGeometry]:
    if segment.size < LINE_WORDS * 8:
        raise RingLayoutError(f"shared-memory segment {name!r} is too small to be a ring")
    header = np.frombuffer(segment.buf, dtype=np.int64, count=LINE_WORDS)
    geometry = read_geometry(header, segment.size, name)
    del header
    return np.frombuffer(segment.buf, dtype=np.int64, count=geometry.meta_words), geometry


def _attached_pids(meta: np.ndarray, geometry: RingGeometry) -> list[int]:
    pids = [int(meta[H_OWNER_PID]), int(meta[PRODUCER_PID])]
    pids += [int(meta[consumer_pid_word(i)]) for i in range(geometry.consumers)]
    return [pid for pid in pids if pid_alive(pid)]


class Ring:
    """A mapped ring segment; build producers and consumers from it.

    ``Ring.create`` makes the owner (which unlinks the segment on ``close``); every other
    process uses ``Ring.attach`` by name. Close a ring only after dropping the views it
    handed out (a view still alive keeps the mapping, never the name, alive).
    """

    def __init__(self, segment: Segment, dtype: np.dtype, owner: bool) -> None:
        meta, geometry = _map_meta(segment, segment.name)
        self.name = segment.name
        self.dtype = dtype
        self.capacity = geometry.capacity
        self.consumers = geometry.consumers
        self.owner = owner
        self._segment = segment
        self._geometry = geometry
        self._meta = meta
        self._base = meta.ctypes.data  # kernels take the mapping's address
        self._records = np.frombuffer(
            segment.buf, dtype=dtype, count=geometry.capacity, offset=geometry.data_offset
        )
        self._roles: list[Producer | Consumer] = []

    @classmethod
    def create(cls, name: str, dtype: np.dtype, capacity: int, consumers: int) -> Ring:
        """Create ring ``name``; reclaim a stale one left by a crashed run.

        A segment of that name is stale when its header is a ring's and neither its owner
        nor any producer or consumer recorded in it is alive. A live one raises
        ``RingInUseError``; a segment that is not a ring raises ``RingLayoutError`` (it is
        never removed).
        """
        geometry = validate_parameters(dtype, capacity, consumers)

        def initialise(meta: np.ndarray) -> None:
            meta[H_VERSION] = LAYOUT_VERSION
            meta[H_CAPACITY] = capacity
            meta[H_RECORD_SIZE] = dtype.itemsize
            meta[H_CONSUMERS] = consumers
            meta[H_FINGERPRINT] = dtype_fingerprint(dtype)
            meta[H_OWNER_PID] = os.getpid()
            meta[H_DATA_OFFSET] = geometry.data_offset
            meta[H_CREATED_NS] = time.time_ns()
            # A plain store suffices (and keeps the kernels out of ring creation): the segment is
            # still under a private temporary name; ``publish_segment`` then gives it its
            # public name with link(2), a system call that orders every earlier store of this
            # thread before it, and a reader can only map the segment after finding that name.
            meta[H_MAGIC] = MAGIC

        try:
            segment = publish_segment(name, geometry.total_bytes, geometry.meta_words, initialise)
        except FileExistsError:
            cls._reclaim_stale(name)
            segment = publish_segment(name, geometry.total_bytes, geometry.meta_words, initialise)
        return cls(segment, dtype, owner=True)

    @classmethod
    def attach(cls, name: str, dtype: np.dtype) -> Ring:
        """Map the existing ring ``name``; ``RingLayoutError`` unless it was made for ``dtype``."""
        segment = attach_segment(name)
        try:
            meta, _ = _map_meta(segment, name)
            found_size, found_print = int(meta[H_RECORD_SIZE]), int(meta[H_FINGERPRINT])
            del meta
            if found_size != dtype.itemsize or found_print != dtype_fingerprint(dtype):
                raise RingLayoutError(
                    f"ring {name!r} holds {found_size}-byte records of another dtype "
                    f"(fingerprint {found_print:#x}); attached with {dtype.itemsize}-byte "
                    f"{dtype} (fingerprint {dtype_fingerprint(dtype):#x})"
                )
            return cls(segment, dtype, owner=False)
        except BaseException:
            segment.close()
            raise

    @staticmethod
    def inspect(name: str) -> RingStats:
        """Return a read-only snapshot of ring ``name`` (no dtype needed, nothing written)."""
        segment = attach_segment(name, readonly=True)
        try:
            meta, geometry = _map_meta(segment, name)
            stats = snapshot(name, meta, geometry)
            del meta
        finally:
            segment.close()
        return stats

    def stats(self) -> RingStats:
        """Return a snapshot of this ring."""
        return snapshot(self.name, self._meta, self._geometry)

    def producer(self, wait: WaitStrategy | None = None) -> Producer:
        """Become the ring's producer (``RingInUseError`` if another live process is).

        ``wait`` defaults to ``DEFAULT_WAIT``. The first role taken in a process loads the
        kernels (ahead-of-time module, else Numba's JIT: see ``kernels``).
        """
        from .producer import Producer
        from .wait import DEFAULT_WAIT

        producer = Producer(self, DEFAULT_WAIT if wait is None else wait)
        self._roles.append(producer)
        return producer

    def consumer(
        self,
        index: int,
        wait: WaitStrategy | None = None,
        max_batch: int | None = None,
        after: tuple[int, ...] = (),
        patience_s: float = 1.0,
        wakes: tuple[int, ...] = (),
    ) -> Consumer:
        """Become consumer ``index``, resuming at its committed sequence.

        ``after``: consumers that must commit a record before this one reads it (a pipeline;
        see ``SequenceBarrier`` for the ``patience_s`` bound on that wait); ``wakes``: the
        consumers reading after this one, woken by its commits; ``wait`` as above.
        """
        from .consumer import Consumer
        from .wait import DEFAULT_WAIT

        wait = DEFAULT_WAIT if wait is None else wait
        consumer = Consumer(self, index, wait, max_batch, after, patience_s, wakes)
        self._roles.append(consumer)
        return consumer

    def close(self) -> None:
        """Release roles taken through this ring and unmap; the owner also unlinks the name."""
        if self._segment is None:
            return
        for role in self._roles:
            role.close()
        self._roles.clear()
        if self.owner:
            self.unlink()
        self._meta = self._records = None
        if not self._segment.close():
            log.debug("ring %s: views still alive, unmapped when they are dropped", self.name)
        self._segment = None

    def unlink(self) -> None:
        """Remove the ring's name from /dev/shm (mapped processes keep their mapping)."""
        unlink_segment(self.name)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _reclaim_stale(name: str) -> None:
        try:
            segment = attach_segment(name, readonly=True)
        except FileNotFoundError:
            return  # gone meanwhile
        try:
            meta, geometry = _map_meta(segment, name)
            alive = _attached_pids(meta, geometry)
            owner = int(meta[H_OWNER_PID])
            del meta
        finally:
            segment.close()
        if alive:
            raise RingInUseError(f"ring {name!r} exists and pids {alive} are attached to it")
        # A ring name has one owner (the kernel), so two creators racing to reclaim the same
        # stale name is a configuration error; the window between this check and the unlink
        # is the only place where one could remove the other's fresh ring.
        with contextlib.suppress(FileNotFoundError):
            unlink_segment(name)
        log.warning("ring %s: reclaimed stale segment of dead owner pid %d", name, owner)
