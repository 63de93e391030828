"""Memory-ordering stress tests across two processes on a small ring lapped thousands of times.

Forbidden outcome: a consumer reads a slot whose sequence is published while the slot does not
(yet, or any longer) hold that sequence's record — "record visible before its sequence is
published", or "slot overwritten before the consumer committed it". Every 512-byte record
carries its sequence and 63 words derived from it, and the consumer checks every word.

The first test consumes inside a Numba loop built from the ring's own acquire/release
primitives, reading each slot nanoseconds after the cursor moves: Python's microseconds of
overhead would otherwise hide a reordering (moving the producer's cursor store before its
record copy makes that test fail). The second runs the same check through the public API.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid

import numpy as np
import pytest
import ringbuffer_workers as workers
from numba import njit

from aegis.ringbuffer import Ring, YieldingWait
from aegis.ringbuffer.kernels_nb import load_acquire_nb, store_release_nb
from aegis.ringbuffer.layout import CURSOR, consumer_sequence_word

SPAWN = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.slow


@njit(cache=True)
def _consume_and_check_nb(base, data, sequence_word, expected, total, key, patience):
    """Consume from ``expected`` towards ``total`` as fast as possible.

    Return (torn records, next expected) once done or after ``patience`` empty spins, so the
    caller can yield the core (the machine may have fewer free cores than spinning processes).
    """
    torn = 0
    idle = 0
    mask = data.shape[0] - 1
    while expected < total:
        cursor = load_acquire_nb(base, CURSOR)
        if cursor == expected:
            idle += 1
            if idle > patience:
                break
            continue
        idle = 0
        while expected < cursor:
            slot = expected & mask
            bad = data[slot, 0] != np.uint64(expected)
            pattern = np.uint64(expected) * key
            for word in range(1, data.shape[1]):
                if data[slot, word] != pattern + np.uint64(word):
                    bad = True
            torn += bad
            expected += 1
        store_release_nb(base, sequence_word, expected)
    return torn, expected


def _run_producer(name: str, total: int) -> multiprocessing.Process:
    child = SPAWN.Process(target=workers.stress_produce, args=(name, total), daemon=True)
    child.start()
    return child


def _stop(child: multiprocessing.Process) -> None:
    if child.is_alive():
        child.kill()
    child.join(5)


def test_ring_stress_consumer_never_reads_record_before_its_sequence_is_published():
    name = f"aegis-test-{uuid.uuid4().hex[:12]}"
    total = 100_000
    ring = Ring.create(name, workers.STRESS_DTYPE, capacity=16, consumers=1)
    child = None
    try:
        base, data = ring._base, ring._records.view(np.uint64).reshape(ring.capacity, -1)
        _consume_and_check_nb(base, data[:0], 0, 0, 0, workers.STRESS_KEY, 1)  # compile first
        child = _run_producer(name, total)
        torn = read = 0
        deadline = time.monotonic() + 60
        while read < total and time.monotonic() < deadline:
            more_torn, read = _consume_and_check_nb(
                base, data, consumer_sequence_word(0), read, total, workers.STRESS_KEY, 20_000
            )
            torn += more_torn
            os.sched_yield()
        child.join(30)
        assert child.exitcode == 0
        assert read == total
        assert torn == 0, f"{torn} records were read before their bytes were published"
    finally:
        if child is not None:
            _stop(child)
        ring.close()
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(name)]


def test_ring_stress_public_api_batches_never_torn_nor_overwritten_before_commit():
    name = f"aegis-test-{uuid.uuid4().hex[:12]}"
    total = 50_000
    ring = Ring.create(name, workers.STRESS_DTYPE, capacity=16, consumers=1)
    child = None
    try:
        consumer = ring.consumer(0, wait=YieldingWait())
        child = _run_producer(name, total)
        expected = torn_on_read = torn_before_commit = largest = 0
        while expected < total:
            batch = consumer.wait_for(timeout=30.0)
            assert len(batch), f"producer stalled at {expected}"
            sequences = np.arange(expected, expected + len(batch))
            want = workers.stress_words(sequences)
            first_look = batch.copy()
            torn_on_read += int(np.count_nonzero(first_look["seq"] != sequences))
            torn_on_read += int(np.count_nonzero((first_look["words"] != want).any(axis=1)))
            torn_before_commit += int(np.count_nonzero(batch["seq"] != sequences))
            torn_before_commit += int(np.count_nonzero((batch["words"] != want).any(axis=1)))
            expected += len(batch)
            largest = max(largest, len(batch))
            consumer.commit()
        child.join(30)
        assert child.exitcode == 0
        assert (torn_on_read, torn_before_commit) == (0, 0)
        # 50k records through 16 slots lapped the ring ~3k times; a batch never spans more
        # than the ring holds (how full batches are depends on the machine's load).
        assert largest <= 16
    finally:
        if child is not None:
            _stop(child)
        ring.close()
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(name)]
