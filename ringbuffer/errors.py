"""Errors raised by the ring; the type tells the caller what to do."""

from __future__ import annotations


class RingError(Exception):
    """Base class of every ring error."""


class RingFull(RingError):
    """The producer waited its whole timeout and the slowest consumer never freed a slot.

    ``published`` counts the records of a batch that did go out before the timeout.
    """

    def __init__(self, message: str, published: int = 0) -> None:
        super().__init__(message)
        self.published = published


class RingLayoutError(RingError):
    """The segment is not a ring of this layout: bad magic, version, capacity or record dtype."""


class RingInUseError(RingError):
    """A live process already owns what was asked for (the segment, the producer or a consumer)."""
