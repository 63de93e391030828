"""Where every word of a ring segment lives.

The segment is one ``multiprocessing``-style POSIX shared-memory object::

    line 0                header: magic, version, capacity, record size, consumers,
                          dtype fingerprint, owner pid, stall counter, data offset
    line 1                producer cursor (count of records published)
    line 2                producer private words: cached gating sequence, producer pid
    line 3 + 3*i          consumer i sequence (count of records committed)
    line 4 + 3*i          consumer i heartbeat: monotonic ns of its last beat, pid
    line 5 + 3*i          consumer i wake flag (non-zero while it sleeps in the kernel:
                          WAKE_ON_PUBLISH or WAKE_ON_COMMIT)
    data_offset ...       capacity records of record_size bytes, indexed by seq & (capacity-1)

Each line is 128 bytes (two x86-64 cache lines, which also defeats the adjacent-line
prefetcher), so a word written by one process never shares a line with a word written by
another: the padding is just offsets. All words are little-endian int64.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import RingLayoutError

LINE_BYTES = 128
WORD_BYTES = 8
LINE_WORDS = LINE_BYTES // WORD_BYTES
MAGIC = int.from_bytes(b"AEGISRNG", "little")
LAYOUT_VERSION = 1
MAX_CONSUMERS = 32  # the producer reports sleeping consumers as a bitmask in one int64
DATA_ALIGN = 4096  # records start on a page so a record never straddles a cache line needlessly

# Header words (line 0).
H_MAGIC = 0
H_VERSION = 1
H_CAPACITY = 2
H_RECORD_SIZE = 3
H_CONSUMERS = 4
H_FINGERPRINT = 5
H_OWNER_PID = 6
H_STALLS = 7
H_DATA_OFFSET = 8
H_CREATED_NS = 9

CURSOR = 1 * LINE_WORDS
GATING_CACHE = 2 * LINE_WORDS
PRODUCER_PID = 2 * LINE_WORDS + 1
_CONSUMER_BASE_LINE = 3
_CONSUMER_LINES = 3


def consumer_sequence_word(index: int) -> int:
    """Return the word index of consumer ``index``'s committed sequence."""
    return (_CONSUMER_BASE_LINE + _CONSUMER_LINES * index) * LINE_WORDS


def consumer_heartbeat_word(index: int) -> int:
    """Return the word index of consumer ``index``'s heartbeat (monotonic ns)."""
    return consumer_sequence_word(index) + LINE_WORDS


def consumer_pid_word(index: int) -> int:
    """Return the word index of the pid of the process attached as consumer ``index``."""
    return consumer_heartbeat_word(index) + 1


# Wake flag values. A consumer gated by a live ``after`` dependency cannot read what the
# producer just published, only what the dependency then commits: it sleeps with
# WAKE_ON_COMMIT, which the producer's publish ignores, so a burst of publishes does not wake
# a process that has nothing to do yet (and would take CPU from the feed and the brain).
WAKE_ON_PUBLISH = 1  # woken by a publish and by a dependency's commit
WAKE_ON_COMMIT = 2  # woken by a dependency's commit only


def consumer_wake_word(index: int) -> int:
    """Return the word index of consumer ``index``'s wake flag."""
    return consumer_sequence_word(index) + 2 * LINE_WORDS


def meta_words(consumers: int) -> int:
    """Return how many int64 words the header and all sequence lines take."""
    return (_CONSUMER_BASE_LINE + _CONSUMER_LINES * consumers) * LINE_WORDS


def dtype_fingerprint(dtype: np.dtype) -> int:
    """Return a signed 64-bit digest of a record dtype's names, formats, offsets and size.

    Two dtypes with the same itemsize but different fields (or the same fields packed
    differently) get different fingerprints, so attaching with the wrong dtype is refused.
    """
    fields = tuple(
        (name, dtype.fields[name][0].str, dtype.fields[name][0].shape, dtype.fields[name][1])
        for name in (dtype.names or ())
    )
    text = repr((dtype.str, dtype.itemsize, fields))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass(frozen=True)
class RingGeometry:
    """Sizes and offsets of one ring segment, derived from its parameters."""

    capacity: int
    record_size: int
    consumers: int

    @property
    def data_offset(self) -> int:
        meta_bytes = meta_words(self.consumers) * WORD_BYTES
        return -(-meta_bytes // DATA_ALIGN) * DATA_ALIGN

    @property
    def total_bytes(self) -> int:
        return self.data_offset + self.capacity * self.record_size

    @property
    def meta_words(self) -> int:
        return meta_words(self.consumers)


def validate_parameters(dtype: np.dtype, capacity: int, consumers: int) -> RingGeometry:
    """Check the creation parameters and return the geometry, or raise ``ValueError``."""
    if not isinstance(dtype, np.dtype):
        raise TypeError(f"dtype must be a numpy dtype, got {type(dtype).__name__}")
    if dtype.hasobject:
        raise ValueError(f"dtype {dtype} holds Python objects and cannot live in shared memory")
    if dtype.itemsize == 0 or dtype.itemsize % WORD_BYTES:
        raise ValueError(
            f"record size {dtype.itemsize} must be a positive multiple of {WORD_BYTES} bytes "
            "(declare the dtype with align=True and pad it)"
        )
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")
    if not 1 <= consumers <= MAX_CONSUMERS:
        raise ValueError(f"consumers must be in 1..{MAX_CONSUMERS}, got {consumers}")
    return RingGeometry(capacity=capacity, record_size=dtype.itemsize, consumers=consumers)


def read_geometry(header: np.ndarray, segment_bytes: int, name: str) -> RingGeometry:
    """Validate a mapped header (magic, version, sizes) and return its geometry."""
    if segment_bytes < LINE_BYTES or int(header[H_MAGIC]) != MAGIC:
        raise RingLayoutError(f"shared-memory segment {name!r} is not an AEGIS ring (bad magic)")
    if int(header[H_VERSION]) != LAYOUT_VERSION:
        raise RingLayoutError(
            f"ring {name!r} has layout version {int(header[H_VERSION])}, "
            f"this code reads version {LAYOUT_VERSION}"
        )
    capacity = int(header[H_CAPACITY])
    consumers = int(header[H_CONSUMERS])
    record_size = int(header[H_RECORD_SIZE])
    if capacity < 2 or capacity & (capacity - 1) or not 1 <= consumers <= MAX_CONSUMERS:
        raise RingLayoutError(f"ring {name!r} has a corrupt header ({capacity=}, {consumers=})")
    geometry = RingGeometry(capacity=capacity, record_size=record_size, consumers=consumers)
    if int(header[H_DATA_OFFSET]) != geometry.data_offset or segment_bytes < geometry.total_bytes:
        raise RingLayoutError(f"ring {name!r} is truncated or has a corrupt data offset")
    return geometry
