"""Wait strategies: how a consumer waits for records and a producer waits for free slots.

All four first spin a little inside a kernel (cheap when the next record is microseconds away),
then differ in how they give the core back:

=============  =========================================  =================  ===============
strategy       consumer idle phase                        idle CPU           wake-up latency
=============  =========================================  =================  ===============
BusySpinWait   keeps spinning                             100% of a core     ~0.1-1 us
YieldingWait   ``sched_yield`` in a loop                  100% (yields)      ~1-10 us
SleepingWait   sleeps, backing off 50 us -> 1 ms          ~1-5% (1k naps/s)  <= ~1 ms
BlockingWait   sleeps in the kernel, producer wakes it    ~0%                ~10-60 us
=============  =========================================  =================  ===============

``BlockingWait`` is the default (``benchmarks/bench_ring.py`` measures every strategy's idle
CPU). Producers never sleep in the kernel (consumers do not signal them): a full ring is the
exceptional case, so while full a ``BusySpinWait`` producer retries at once, a ``YieldingWait``
one yields, and the ``SleepingWait``/``BlockingWait`` ones nap 50 us -> 1 ms until the timeout.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .barrier import SequenceBarrier
from .kernels import arm_wake, load_acquire, spin_until
from .layout import WAKE_ON_PUBLISH


def _backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    return min(max_s, first_s * (1 << min(attempt, 20)))


@dataclass(frozen=True)
class BusySpinWait:
    """Spin on the cursor without ever giving the core back: lowest latency, burns a core."""

    spins: int = 4096
    needs_listener = False

    def wait(self, barrier: SequenceBarrier, sequence: int, deadline_ns: int) -> int:
        """Return the cursor once it exceeds ``sequence``, or the last one read at the deadline."""
        while True:
            cursor = spin_until(barrier.base, barrier.cursor_index, sequence, self.spins)
            if cursor > sequence or time.monotonic_ns() >= deadline_ns:
                return cursor

    def idle(self, attempt: int) -> None:
        """Producer back-off while the ring is full: none."""


@dataclass(frozen=True)
class YieldingWait:
    """Spin, then ``sched_yield`` between reads: low latency, still 100% CPU when idle."""

    spins: int = 1000
    needs_listener = False

    def wait(self, barrier: SequenceBarrier, sequence: int, deadline_ns: int) -> int:
        cursor = spin_until(barrier.base, barrier.cursor_index, sequence, self.spins)
        while cursor <= sequence and time.monotonic_ns() < deadline_ns:
            os.sched_yield()
            cursor = load_acquire(barrier.base, barrier.cursor_index)
        return cursor

    def idle(self, attempt: int) -> None:
        os.sched_yield()


@dataclass(frozen=True)
class SleepingWait:
    """Spin, yield a few times, then sleep with exponential back-off capped at ``max_sleep_s``."""

    spins: int = 1000
    yields: int = 10
    first_sleep_s: float = 50e-6
    max_sleep_s: float = 1e-3
    needs_listener = False

    def __post_init__(self) -> None:
        if not 0 < self.first_sleep_s <= self.max_sleep_s <= 1e-3:
            raise ValueError("SleepingWait needs 0 < first_sleep_s <= max_sleep_s <= 1 ms")

    def wait(self, barrier: SequenceBarrier, sequence: int, deadline_ns: int) -> int:
        cursor = spin_until(barrier.base, barrier.cursor_index, sequence, self.spins)
        attempt = 0
        while cursor <= sequence:
            remaining_s = (deadline_ns - time.monotonic_ns()) / 1e9
            if remaining_s <= 0:
                break
            if attempt < self.yields:
                os.sched_yield()
            else:
                nap = _backoff_s(attempt - self.yields, self.first_sleep_s, self.max_sleep_s)
                time.sleep(min(nap, remaining_s))
            attempt += 1
            cursor = load_acquire(barrier.base, barrier.cursor_index)
        return cursor

    def idle(self, attempt: int) -> None:
        time.sleep(_backoff_s(attempt, self.first_sleep_s, self.max_sleep_s))


@dataclass(frozen=True)
class BlockingWait:
    """Spin briefly, then sleep in the kernel until the producer's wake-up (see ``wake.py``).

    ``slice_s`` bounds each kernel sleep so a wake-up lost to a restart race (the producer
    clears the flag of a consumer it found gone just as a new life raises it) costs at most
    one slice of latency, never a hang.
    """

    spins: int = 20_000
    slice_s: float = 0.1
    needs_listener = True

    def wait(self, barrier: SequenceBarrier, sequence: int, deadline_ns: int) -> int:
        base = barrier.base
        cursor = spin_until(base, barrier.cursor_index, sequence, self.spins)
        if barrier.listener is None:
            raise RuntimeError("BlockingWait needs the consumer's wake listener")
        while cursor <= sequence:
            remaining_s = (deadline_ns - time.monotonic_ns()) / 1e9
            if remaining_s <= 0:
                break
            cursor = arm_wake(base, barrier.wake_index, barrier.cursor_index, WAKE_ON_PUBLISH)
            if cursor <= sequence:
                barrier.listener.sleep(min(remaining_s, self.slice_s))
                cursor = load_acquire(base, barrier.cursor_index)
            barrier.lower_wake_flag()
        return cursor

    def idle(self, attempt: int) -> None:
        time.sleep(_backoff_s(attempt, 50e-6, 1e-3))


WaitStrategy = BusySpinWait | YieldingWait | SleepingWait | BlockingWait
DEFAULT_WAIT = BlockingWait()
