"""Numba source of the ring's hot paths: publish one, publish a batch, spin on a sequence, commit.

This module is the one definition of the kernels. ``kernels`` hands them to the rest of the
package either compiled ahead of time from this very source (``aot``: the same Numba front end
and LLVM atomics, into an extension module that runs without Numba or LLVM in the process) or,
when that module is missing or stale, compiled here by Numba's JIT (from its on-disk cache).

Every kernel takes plain integers: the address of the mapped segment (``base``), word indices
and, to publish, the address of the caller's staging record. Inside, ``carray`` rebuilds the
``meta`` words and the ``capacity x words`` uint64 slots from the header. Integer arguments
keep the Python->native call cheap (no array unboxing) and each exported kernel has one
explicit int64 signature, the one the ahead-of-time build exports. The wrappers in
``producer.py``/``consumer.py`` keep the mapping alive and never call a kernel after close.

Memory ordering (the whole correctness argument of the ring)
-----------------------------------------------------------
The forbidden outcome is "a consumer reads a slot whose sequence is published but whose
bytes are not yet (or no longer) the record of that sequence". It is excluded by C++11-style
release/acquire pairs, emitted as LLVM atomic instructions by the intrinsics below:

* producer: write the record words (plain stores), then ``store_release(cursor)``. Release
  forbids both LLVM and the CPU from moving any earlier store after the cursor store.
* consumer: ``load_acquire(cursor)``, then read the slots (in Python, after the call returns).
  Acquire forbids any later load from being satisfied before the cursor load.
* consumer commit: ``store_release(sequence)`` after it has finished reading the batch;
  producer: ``load_acquire(sequence)`` of every consumer before overwriting a slot.

On x86-64 (TSO) acquire loads and release stores are plain ``mov`` instructions: the CPU never
reorders store/store or load/load, so the atomics cost nothing there; what they buy is that
LLVM (which Numba drives, and which freely reorders or hoists plain loads and stores to memory
it believes unshared) may not reorder across them nor hoist the spinning load out of its loop.
On a weaker CPU (ARM) the same IR emits ``stlr``/``ldar``, so the argument still holds.

The one place TSO is *not* enough is the sleeping-consumer handshake (``BlockingWait``): the
consumer stores its wake flag then loads the cursor, while the producer stores the cursor then
loads the wake flags. x86 may let each load pass the earlier store (store buffering) and both
sides would miss each other: a lost wake-up. A sequentially consistent fence (LLVM emits a
``lock``-prefixed instruction) on both sides forbids that.

``tests/test_ringbuffer_stress.py`` checks the forbidden outcome across two processes over
thousands of laps of a 16-slot ring with a Numba consumer that reads each slot nanoseconds
after the cursor moves; moving the cursor store above the record copy makes it fail.

Numba caches kernels keyed on this file only: the layout word indices are read from
``layout.py`` at compile time, so clear ``__pycache__`` after changing that file's offsets (the
ahead-of-time module checks a digest of both files and is ignored until rebuilt).
"""

from __future__ import annotations

from numba import carray, njit, types
from numba.extending import intrinsic

from .layout import (
    CURSOR,
    GATING_CACHE,
    H_CAPACITY,
    H_CONSUMERS,
    H_DATA_OFFSET,
    H_RECORD_SIZE,
    LINE_WORDS,
    WAKE_ON_PUBLISH,
    consumer_sequence_word,
    consumer_wake_word,
)

_SEQ0 = consumer_sequence_word(0)
_STRIDE = consumer_sequence_word(1) - consumer_sequence_word(0)
_WAKE0 = consumer_wake_word(0)


def _pointer(context, builder, address, index):
    base = builder.inttoptr(address, context.get_value_type(types.CPointer(types.int64)))
    return builder.gep(base, [index])


def _address_as_pointer(pointee):
    """An intrinsic that returns an int64 address as a pointer to ``pointee`` (for ``carray``)."""

    @intrinsic
    def cast(typingctx, address):
        signature = types.CPointer(pointee)(types.int64)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return signature, codegen

    return cast


_int64_at = _address_as_pointer(types.int64)
_uint64_at = _address_as_pointer(types.uint64)


@intrinsic
def _load_acquire(typingctx, address, index):
    """Load the int64 word ``index`` of the segment at ``address`` with acquire ordering."""
    signature = types.int64(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_pointer(context, builder, *args), "acquire", 8)

    return signature, codegen


@intrinsic
def _store_release(typingctx, address, index, value):
    """Store ``value`` into int64 word ``index`` with release ordering."""
    signature = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _pointer(context, builder, args[0], args[1]), "release", 8)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _full_fence(typingctx):
    """Emit a sequentially consistent fence (a locked instruction or mfence on x86-64)."""
    signature = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return signature, codegen


@njit("int64(int64, int64)", cache=True)
def load_acquire_nb(base, index):
    """Return word ``index`` of the segment at ``base``, read with acquire ordering."""
    return _load_acquire(base, index)


@njit("void(int64, int64, int64)", cache=True)
def store_release_nb(base, index, value):
    """Write word ``index`` of the segment at ``base`` with release ordering (a commit)."""
    _store_release(base, index, value)


@njit(cache=True)
def _slowest_nb(base, consumers):
    slowest = _load_acquire(base, _SEQ0)
    for i in range(1, consumers):
        sequence = _load_acquire(base, _SEQ0 + i * _STRIDE)
        if sequence < slowest:
            slowest = sequence
    return slowest


@njit(cache=True)
def _sleepers_nb(base, consumers, publishing):
    """The mask of consumers asleep that a publish (``publishing``) or a commit must wake."""
    mask = 0
    for i in range(consumers):
        flag = _load_acquire(base, _WAKE0 + i * _STRIDE)
        if flag == WAKE_ON_PUBLISH or (flag != 0 and not publishing):
            mask |= 1 << i
    return mask


@njit("int64(int64, int64)", cache=True)
def try_publish_nb(base, record_address):
    """Copy the record at ``record_address`` into the next slot and publish it.

    Return -1 when the slowest consumer has not freed the slot (nothing written), else the
    bitmask of consumers sleeping in ``BlockingWait`` that the caller must wake. The slowest
    consumer's sequence is cached and re-read only when the cached value would be overrun.
    """
    header = carray(_int64_at(base), LINE_WORDS)
    capacity = header[H_CAPACITY]
    words = header[H_RECORD_SIZE] // 8
    consumers = header[H_CONSUMERS]
    meta = carray(_int64_at(base), GATING_CACHE + 1)
    cursor = meta[CURSOR]  # written only by this (single) producer: a plain load is exact
    wrap_point = cursor + 1 - capacity
    if wrap_point > meta[GATING_CACHE]:
        slowest = _slowest_nb(base, consumers)
        meta[GATING_CACHE] = slowest
        if wrap_point > slowest:
            return -1
    slot = carray(
        _uint64_at(base + header[H_DATA_OFFSET] + (cursor & (capacity - 1)) * words * 8), words
    )
    record = carray(_uint64_at(record_address), words)
    for word in range(words):
        slot[word] = record[word]
    _store_release(base, CURSOR, cursor + 1)  # the record's words are visible before this
    _full_fence()  # cursor store before the wake-flag loads (see module docstring)
    return _sleepers_nb(base, consumers, True)


@njit("int64(int64, int64, int64)", cache=True)
def commit_sequence_nb(base, sequence_index, sequence):
    """Release a consumer's committed sequence, then return the mask of raised wake flags.

    For pipelines: a consumer that reads after this one may sleep until this commit. It
    raises its flag, fences, then reads this sequence; here the store comes before the fence
    and the flag loads, so one of the two always sees the other (the Dekker pattern above).
    """
    _store_release(base, sequence_index, sequence)
    _full_fence()
    return _sleepers_nb(base, carray(_int64_at(base), LINE_WORDS)[H_CONSUMERS], False)


@njit("UniTuple(int64, 2)(int64, int64, int64, int64)", cache=True)
def publish_batch_nb(base, records_address, start, count):
    """Publish as many of records ``start..count-1`` (contiguous, at ``records_address``) as fit.

    Return ``(published, sleepers_mask)``; the cursor is released once for the whole batch.
    """
    total = count - start
    if total <= 0:
        return 0, 0
    header = carray(_int64_at(base), LINE_WORDS)
    capacity = header[H_CAPACITY]
    words = header[H_RECORD_SIZE] // 8
    consumers = header[H_CONSUMERS]
    meta = carray(_int64_at(base), GATING_CACHE + 1)
    cursor = meta[CURSOR]
    free = capacity - (cursor - meta[GATING_CACHE])
    if free < total:
        slowest = _slowest_nb(base, consumers)
        meta[GATING_CACHE] = slowest
        free = capacity - (cursor - slowest)
        if free <= 0:
            return 0, 0
    published = min(total, free)
    data = carray(_uint64_at(base + header[H_DATA_OFFSET]), (capacity, words))
    records = carray(_uint64_at(records_address), (count, words))
    mask = capacity - 1
    for i in range(published):
        slot = (cursor + i) & mask
        for word in range(words):
            data[slot, word] = records[start + i, word]
    _store_release(base, CURSOR, cursor + published)
    _full_fence()
    return published, _sleepers_nb(base, consumers, True)


@njit("int64(int64, int64, int64, int64)", cache=True)
def spin_until_nb(base, index, target, spins):
    """Spin up to ``spins`` acquire loads of word ``index``; return it once it exceeds ``target``.

    Returns the last value read (possibly <= target) when the spins run out.
    """
    value = _load_acquire(base, index)
    for _ in range(spins):
        if value > target:
            return value
        value = _load_acquire(base, index)
    return value


@njit("int64(int64, int64, int64, int64)", cache=True)
def arm_wake_nb(base, wake_index, cursor_index, flag):
    """Raise a consumer's wake flag to ``flag``, then return the cursor read after a full fence.

    If the returned cursor still shows nothing new, the producer is guaranteed to see the
    flag on its next publish and send a wake-up (the Dekker pattern of the module docstring);
    with ``WAKE_ON_COMMIT`` the same holds for the dependency sequences the caller reads next.
    """
    _store_release(base, wake_index, flag)
    _full_fence()
    return _load_acquire(base, cursor_index)
