"""Read a consumer's records ahead of its commits (a journal behind, handling in front).

In the Disruptor the business logic does not wait for the journaller: records are handled as
they arrive and released only once they are durable. ``ReadAhead`` gives a ``Consumer`` that
shape: ``take()`` returns the records not yet taken, although earlier ones are still
uncommitted, and ``commit(count)`` releases the oldest ``count`` taken records, in ring order,
once the caller has made them durable. A crash still redelivers every uncommitted record
(taken or not) to the next life: the ring's at-least-once delivery is unchanged.

Records taken stay valid until committed: the producer cannot overwrite a slot this
consumer has not committed. What can be outstanding is bounded by the consumer's batch: a
view always starts at the committed sequence, so at most ``max_batch`` records (and never past
the end of the buffer) are taken and uncommitted at once. A consumer reading ``after``
others is refused: a dependency that stalled and then moves again can shorten its next view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .consumer import Consumer


class ReadAhead:
    """Takes records past the uncommitted ones of one ``Consumer``; commits them in order."""

    def __init__(self, consumer: Consumer) -> None:
        if consumer.after:
            raise ValueError(f"ReadAhead needs a consumer without dependencies, got after="
                             f"{consumer.after}")  # fmt: skip
        self.consumer = consumer
        self._taken = 0  # records after the committed sequence already returned by take()

    @property
    def outstanding(self) -> int:
        """Records taken and not yet committed."""
        return self._taken

    def take(self) -> np.ndarray:
        """Return the records readable after those already taken (a view, maybe empty)."""
        view = self.consumer.poll()
        fresh = view[self._taken :]
        self._taken += len(fresh)
        return fresh

    def commit(self, count: int) -> None:
        """Release the oldest ``count`` taken records (every one before them is released)."""
        if not 0 <= count <= self._taken:
            raise ValueError(f"cannot commit {count} records: {self._taken} are taken")
        if count:
            # A view starts at the committed sequence and is never shorter than an earlier one
            # from there, so it holds every taken record: commit a prefix of it.
            self.consumer.poll()
            self.consumer.commit(count)
            self._taken -= count

    @property
    def ready(self) -> bool:
        """True if records can be taken now."""
        return len(self.consumer.poll()) > self._taken

    def arm(self) -> bool:
        """Raise the wake flag (``Consumer.arm``); True if records can be taken now."""
        self.consumer.arm()
        return self.ready

    def disarm(self) -> None:
        self.consumer.disarm()

    def wake_fileno(self) -> int:
        return self.consumer.wake_fileno()
