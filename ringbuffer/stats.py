"""Read-only snapshots of a ring for status commands and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .layout import (
    CURSOR,
    H_OWNER_PID,
    H_STALLS,
    PRODUCER_PID,
    RingGeometry,
    consumer_heartbeat_word,
    consumer_pid_word,
    consumer_sequence_word,
)
from .segment import pid_alive


@dataclass(frozen=True)
class ConsumerStats:
    """One consumer at snapshot time; ``heartbeat_ns`` is ``time.monotonic_ns()`` of its beat."""

    index: int
    sequence: int
    lag: int
    heartbeat_ns: int
    heartbeat_age_s: float | None  # None when it never beat
    pid: int  # 0 when no process holds the slot
    attached: bool  # pid names a live process


@dataclass(frozen=True)
class RingStats:
    """A ring at snapshot time, read without knowing its record dtype."""

    name: str
    capacity: int
    record_size: int
    cursor: int
    stalls: int
    owner_pid: int
    producer_pid: int
    consumers: tuple[ConsumerStats, ...]

    @property
    def max_lag(self) -> int:
        """Lag of the slowest consumer (what gates the producer)."""
        return max(c.lag for c in self.consumers)


def snapshot(name: str, meta: np.ndarray, geometry: RingGeometry) -> RingStats:
    """Read a ring's counters from its ``meta`` words (plain aligned 8-byte loads).

    Consumer sequences are read before the cursor, so every lag is >= 0; the figures are
    mutually consistent to within the records published while reading.
    """
    now = time.monotonic_ns()
    sequences = [int(meta[consumer_sequence_word(i)]) for i in range(geometry.consumers)]
    cursor = int(meta[CURSOR])
    consumers = []
    for i, sequence in enumerate(sequences):
        beat = int(meta[consumer_heartbeat_word(i)])
        pid = int(meta[consumer_pid_word(i)])
        consumers.append(
            ConsumerStats(
                index=i,
                sequence=sequence,
                lag=cursor - sequence,
                heartbeat_ns=beat,
                heartbeat_age_s=(now - beat) / 1e9 if beat else None,
                pid=pid,
                attached=pid_alive(pid),
            )
        )
    return RingStats(
        name=name,
        capacity=geometry.capacity,
        record_size=geometry.record_size,
        cursor=cursor,
        stalls=int(meta[H_STALLS]),
        owner_pid=int(meta[H_OWNER_PID]),
        producer_pid=int(meta[PRODUCER_PID]),
        consumers=tuple(consumers),
    )
