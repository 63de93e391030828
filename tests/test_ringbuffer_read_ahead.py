"""ReadAhead: records handled before they are committed, committed in ring order, never lost."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ringbuffer_workers import SEQ_DTYPE

from aegis.ringbuffer import BusySpinWait, ReadAhead, Ring


def new_ring(consumers: int = 1) -> Ring:
    return Ring.create(f"aegis-test-ra-{uuid.uuid4().hex[:12]}", SEQ_DTYPE, 8, consumers)


@pytest.fixture
def ring():
    made = new_ring()
    yield made
    made.close()


def publish(producer, *seqs: int) -> None:
    batch = np.zeros(len(seqs), SEQ_DTYPE)
    batch["seq"] = seqs
    producer.publish_batch(batch)


def seqs(view) -> list[int]:
    return [int(x) for x in view["seq"]]


def test_take_returns_only_records_not_taken_before_although_none_is_committed(ring):
    producer, reader = ring.producer(), ReadAhead(ring.consumer(0))
    publish(producer, 0, 1)
    assert seqs(reader.take()) == [0, 1]
    assert seqs(reader.take()) == []
    publish(producer, 2)
    assert seqs(reader.take()) == [2]
    assert reader.outstanding == 3
    assert ring.stats().consumers[0].sequence == 0


def test_commit_releases_the_oldest_taken_records_in_ring_order(ring):
    producer, reader = ring.producer(), ReadAhead(ring.consumer(0))
    publish(producer, 0, 1, 2)
    reader.take()
    reader.commit(2)
    assert ring.stats().consumers[0].sequence == 2 and reader.outstanding == 1
    publish(producer, 3)
    assert seqs(reader.take()) == [3]
    reader.commit(2)
    assert ring.stats().consumers[0].sequence == 4 and reader.outstanding == 0


def test_committing_more_than_was_taken_is_refused(ring):
    producer, reader = ring.producer(), ReadAhead(ring.consumer(0))
    publish(producer, 0, 1)
    reader.take()
    with pytest.raises(ValueError, match="cannot commit 3 records: 2 are taken"):
        reader.commit(3)
    assert ring.stats().consumers[0].sequence == 0


def test_a_next_life_is_given_every_taken_but_uncommitted_record_again(ring):
    producer, first = ring.producer(), ring.consumer(0)
    reader = ReadAhead(first)
    publish(producer, 0, 1, 2, 3)
    reader.take()
    reader.commit(1)
    first.close()  # the process dies with three records taken, not committed
    assert seqs(ReadAhead(ring.consumer(0)).take()) == [1, 2, 3]


def test_records_past_the_buffer_end_wait_for_the_commit_of_those_before_it(ring):
    producer, reader = ring.producer(), ReadAhead(ring.consumer(0))
    publish(producer, *range(6))
    reader.take()
    reader.commit(6)  # the next record sits in slot 6 of 8
    publish(producer, 6, 7, 8, 9)  # 8 and 9 wrap to slots 0 and 1
    assert seqs(reader.take()) == [6, 7]
    assert not reader.ready and seqs(reader.take()) == []
    reader.commit(2)
    assert reader.ready and seqs(reader.take()) == [8, 9]


def test_ready_and_arm_count_only_records_not_taken(ring):
    producer, reader = ring.producer(), ReadAhead(ring.consumer(0))
    assert not reader.arm()
    publish(producer, 0)
    assert reader.ready
    reader.take()
    assert not reader.ready and not reader.arm()
    reader.disarm()


def test_a_consumer_reading_after_another_is_refused():
    ring = new_ring(consumers=2)
    try:
        with pytest.raises(ValueError, match="without dependencies"):
            ReadAhead(ring.consumer(1, after=(0,)))
    finally:
        ring.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["publish", "take", "commit"]),
                          st.integers(1, 5)), max_size=40))  # fmt: skip
def test_taken_records_come_in_order_once_and_commits_follow_the_model(steps):
    """Any interleaving: every record is taken once, in order; the ring commits what was said."""
    model_ring = new_ring()
    try:
        producer = model_ring.producer(BusySpinWait())
        reader = ReadAhead(model_ring.consumer(0, max_batch=5))
        published = taken = committed = 0
        for op, n in steps:
            if op == "publish":
                n = min(n, 8 - (published - committed))  # a full ring refuses the rest
                if n:
                    publish(producer, *range(published, published + n))
                    published += n
            elif op == "take":
                got = seqs(reader.take())
                assert got == list(range(taken, taken + len(got)))
                taken += len(got)
            else:
                n = min(n, taken - committed)
                reader.commit(n)
                committed += n
            assert reader.outstanding == taken - committed
            assert model_ring.stats().consumers[0].sequence == committed
            assert taken - committed <= 5  # bounded by the consumer's batch
        while committed < published:  # everything published is taken in the end
            taken += len(reader.take())
            reader.commit(taken - committed)
            committed = taken
        assert committed == published
    finally:
        model_ring.close()
