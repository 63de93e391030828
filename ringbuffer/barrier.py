"""What a consumer waits on: the producer cursor and, in a pipeline, the consumers before it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .kernels import load_acquire
from .layout import CURSOR, consumer_pid_word, consumer_sequence_word, consumer_wake_word
from .wake import WakeListener


class SequenceBarrier:
    """Tracks the producer cursor for one consumer and holds what its strategy needs to sleep.

    ``listener`` is set only for strategies that sleep in the kernel (``BlockingWait``).

    ``after`` makes a pipeline, as the Disruptor's dependent sequences do: a record becomes
    readable only once every consumer listed has committed it (``handleEventsWith(a).then(b)``).
    A trading pipeline must not let one stage's outage freeze the next, so the dependency is
    bounded: a consumer slot nobody holds does not gate, and when gated records have waited
    ``patience_s`` without any listed consumer advancing, ``limit`` gives the cursor anyway
    (``bypasses`` counts such episodes) until one of them moves again. A listed consumer made
    with ``wakes`` naming this one wakes it on commit, so a gated consumer can sleep instead
    of polling.
    """

    __slots__ = (
        "_bypassing",
        "_held_limit",
        "_held_since_ns",
        "_patience_ns",
        "base",
        "bypasses",
        "cursor_index",
        "dependents",
        "listener",
        "meta",
        "wake_index",
    )

    def __init__(
        self,
        meta: np.ndarray,
        index: int,
        listener: WakeListener | None,
        after: Sequence[int] = (),
        patience_s: float = 1.0,
    ) -> None:
        if index in after:
            raise ValueError(f"consumer {index} cannot wait for itself")
        if patience_s <= 0:
            raise ValueError(f"patience_s must be > 0, got {patience_s}")
        self.meta = meta
        self.base = meta.ctypes.data  # segment address for the kernels
        self.cursor_index = CURSOR
        self.wake_index = consumer_wake_word(index)
        self.listener = listener
        self.dependents = tuple((consumer_sequence_word(i), consumer_pid_word(i)) for i in after)
        self._patience_ns = int(patience_s * 1e9)
        self._held_limit = -1
        self._held_since_ns = 0
        self._bypassing = False
        self.bypasses = 0

    def limit(self, cursor: int, sequence: int) -> int:
        """The count of records this consumer may read now (``cursor`` without dependents)."""
        if not self.dependents:
            return cursor
        limit = cursor
        for sequence_word, pid_word in self.dependents:
            if self.meta[pid_word] == 0:
                continue  # nobody attached: nothing to wait for
            committed = load_acquire(self.base, sequence_word)
            if committed < limit:
                limit = committed
        if limit > sequence:  # the dependents are ahead: no hold
            self._held_limit, self._bypassing = -1, False
            return limit
        if limit != self._held_limit and (cursor > sequence or self._bypassing):
            # Records start waiting, or a stalled dependent moved again: a new hold.
            self._held_limit, self._held_since_ns = limit, time.monotonic_ns()
            self._bypassing = False
            return limit
        if cursor <= sequence:
            if not self._bypassing:
                self._held_limit = -1
            return limit
        if self._bypassing:
            return cursor
        if time.monotonic_ns() - self._held_since_ns < self._patience_ns:
            return limit
        self._bypassing = True
        self.bypasses += 1
        return cursor

    @property
    def gated(self) -> bool:
        """True while a dependency holds records back: one is attached and not bypassed."""
        if self._bypassing:
            return False
        return any(self.meta[pid_word] != 0 for _, pid_word in self.dependents)

    def lower_wake_flag(self) -> None:
        """Tell the producer this consumer no longer needs a wake-up."""
        # Only this consumer raises its flag; the producer may clear it when the consumer is
        # gone. An 8-byte aligned store is atomic, and a late wake-up is harmless.
        self.meta[self.wake_index] = 0

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
