"""What a consumer waits on: the producer cursor, through its wait strategy."""

from __future__ import annotations

import numpy as np

from .layout import CURSOR, consumer_wake_word
from .wake import WakeListener


class SequenceBarrier:
    """Tracks the producer cursor for one consumer and holds what its strategy needs to sleep.

    ``listener`` is set only for strategies that sleep in the kernel (``BlockingWait``).
    """

    __slots__ = ("base", "cursor_index", "listener", "meta", "wake_index")

    def __init__(self, meta: np.ndarray, index: int, listener: WakeListener | None) -> None:
        self.meta = meta
        self.base = meta.ctypes.data  # segment address for the kernels
        self.cursor_index = CURSOR
        self.wake_index = consumer_wake_word(index)
        self.listener = listener

    def lower_wake_flag(self) -> None:
        """Tell the producer this consumer no longer needs a wake-up."""
        # Only this consumer raises its flag; the producer may clear it when the consumer is
        # gone. An 8-byte aligned store is atomic, and a late wake-up is harmless.
        self.meta[self.wake_index] = 0

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
