"""A 64-bit counter living in one word of the shared segment."""

from __future__ import annotations

import numpy as np

from .kernels import load_acquire, store_release


class Sequence:
    """One int64 word of ``meta``: ``get`` reads with acquire, ``set`` writes with release.

    Sequences count records (the next sequence to publish or to read), start at 0 and are
    never reset while the segment lives; at 10^9 records/s an int64 lasts 292 years.
    """

    __slots__ = ("_base", "_index", "_meta")

    def __init__(self, meta: np.ndarray, index: int) -> None:
        self._meta = meta  # keeps the mapping alive while this object lives
        self._base = meta.ctypes.data
        self._index = index

    @property
    def index(self) -> int:
        """Word index of this sequence inside ``meta``."""
        return self._index

    def get(self) -> int:
        """Return the current value (acquire)."""
        return load_acquire(self._base, self._index)

    def set(self, value: int) -> None:
        """Publish ``value`` (release: every earlier memory access happens before it)."""
        store_release(self._base, self._index, value)
