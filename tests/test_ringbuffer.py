"""Ring buffer behaviour within one process: API contract, model of interleavings, errors."""

from __future__ import annotations

import _posixshmem
import os
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ringbuffer_workers import SEQ_DTYPE

from aegis.ringbuffer import (
    BlockingWait,
    BusySpinWait,
    Ring,
    RingError,
    RingFull,
    RingInUseError,
    RingLayoutError,
    Sequence,
    SleepingWait,
    YieldingWait,
)
from aegis.ringbuffer.layout import H_VERSION, consumer_sequence_word

SHM = "/dev/shm"


def _leftovers(prefix: str) -> list[str]:
    return [entry for entry in os.listdir(SHM) if entry.startswith(prefix)]


@pytest.fixture
def ring_name():
    """A unique segment name; the test fails if anything of that prefix is left in /dev/shm."""
    prefix = f"aegis-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    assert _leftovers(prefix) == []


def _publish_range(producer, start: int, stop: int) -> None:
    rec = producer.slot[0]
    for seq in range(start, stop):
        rec["seq"] = seq
        assert producer.try_publish()


def test_ring_publish_then_poll_returns_records_in_order_as_view(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        assert len(consumer.poll()) == 0
        _publish_range(producer, 0, 5)
        batch = consumer.poll()
        assert batch["seq"].tolist() == [0, 1, 2, 3, 4]
        assert batch.base is not None and not batch.flags.owndata  # a view into the ring
        consumer.commit()
        assert consumer.sequence == 5 and consumer.lag == 0 and producer.cursor == 5


def test_ring_full_try_publish_returns_false_and_counts_stall(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=4, consumers=2) as ring:
        producer, fast, slow = ring.producer(), ring.consumer(0), ring.consumer(1)
        _publish_range(producer, 0, 4)
        fast.poll()
        fast.commit()
        assert producer.try_publish() is False  # the slow consumer gates the producer
        assert Ring.inspect(ring_name).stalls == 1
        slow.poll()
        slow.commit(1)
        assert producer.try_publish() is True
        assert producer.try_publish() is False


def test_ring_publish_full_raises_ringfull_after_timeout(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=2, consumers=1) as ring:
        producer = ring.producer(wait=SleepingWait())
        ring.consumer(0)
        _publish_range(producer, 0, 2)
        with pytest.raises(RingFull, match=r"full for 0\.05s"):
            producer.publish(timeout=0.05)


def test_ring_batch_read_never_wraps_and_stops_at_buffer_end(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        _publish_range(producer, 0, 6)
        consumer.poll()
        consumer.commit()
        _publish_range(producer, 6, 12)  # slots 6,7 then 0..3
        assert consumer.poll()["seq"].tolist() == [6, 7]
        consumer.commit()
        assert consumer.poll()["seq"].tolist() == [8, 9, 10, 11]


def test_ring_publish_batch_wraps_and_raises_ringfull_with_published_count(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        records = np.zeros(20, SEQ_DTYPE)
        records["seq"] = np.arange(20)
        producer.publish_batch(records[:5], timeout=0)
        consumer.poll()
        consumer.commit()
        with pytest.raises(RingFull) as full:
            producer.publish_batch(records[5:], timeout=0.02)
        assert full.value.published == 8
        seen = consumer.poll()["seq"].tolist()
        consumer.commit()
        seen += consumer.poll()["seq"].tolist()
        assert seen == list(range(5, 13))


def test_ring_try_publish_batch_publishes_what_fits_in_order_and_never_waits(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        records = np.zeros(20, SEQ_DTYPE)
        records["seq"] = np.arange(20)
        assert producer.try_publish_batch(records[:3]) == 3
        assert producer.try_publish_batch(records[3:]) == 5  # the ring holds 8
        assert Ring.inspect(ring_name).stalls == 1  # the rest did not fit: one stall
        assert producer.try_publish_batch(records[8:]) == 0 and Ring.inspect(ring_name).stalls == 2
        consumer.poll()
        consumer.commit(6)
        assert producer.try_publish_batch(records[8:]) == 6  # wraps round the buffer's end
        seen = consumer.poll()["seq"].tolist()
        consumer.commit()
        seen += consumer.poll()["seq"].tolist()
        assert seen == list(range(6, 14))
        with pytest.raises(TypeError):
            producer.try_publish_batch(np.zeros(2, np.int64))


def test_ring_wraps_many_times_over_capacity_without_loss(ring_name):
    total = 20_000
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0, max_batch=3)
        rec = producer.slot[0]
        seen = []
        for seq in range(total):
            rec["seq"] = seq
            while not producer.try_publish():
                batch = consumer.poll()
                seen.extend(batch["seq"].tolist())
                consumer.commit()
        while len(batch := consumer.poll()):
            seen.extend(batch["seq"].tolist())
            consumer.commit()
        assert seen == list(range(total))  # 2500 laps of the buffer


def test_ring_publish_accepts_void_and_one_element_array_of_ring_dtype(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        one = np.zeros(1, SEQ_DTYPE)
        one["seq"] = 7
        producer.publish(one, timeout=0)
        one["seq"] = 8
        producer.publish(one[0], timeout=0)
        assert consumer.poll()["seq"].tolist() == [7, 8]


def test_ring_publish_reads_a_reused_record_array_afresh_each_time(ring_name):
    # A parser refills one record array per frame; the producer remembers the array, not its
    # contents, and re-checks it when the same object comes back with another dtype.
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        one = np.zeros(1, SEQ_DTYPE)
        for seq in (3, 4, 5):
            one["seq"] = seq
            assert producer.try_publish(one)
        many = np.zeros(4, SEQ_DTYPE)
        many["seq"] = [10, 11, 12, 13]
        producer.publish(many[2:3], timeout=0)
        assert consumer.poll()["seq"].tolist() == [3, 4, 5, 12]
        one.dtype = np.dtype([("a", np.int64), ("b", np.int64)])  # same size, not the ring's
        with pytest.raises(TypeError, match="not the ring's dtype"):
            producer.try_publish(one)
        assert producer.cursor == 4


def test_ring_publish_wrong_dtype_raises_typeerror_and_writes_nothing(ring_name):
    other = np.dtype([("a", np.float64), ("b", np.float64)])
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer = ring.producer()
        with pytest.raises(TypeError, match="not the ring's dtype"):
            producer.try_publish(np.zeros(1, other))
        with pytest.raises(TypeError):
            producer.publish_batch(np.zeros(3, other))
        with pytest.raises(ValueError, match="one record"):
            producer.publish(np.zeros(2, SEQ_DTYPE), timeout=0)
        assert producer.cursor == 0


def test_ring_commit_more_than_polled_raises_valueerror(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        _publish_range(producer, 0, 2)
        consumer.poll()
        with pytest.raises(ValueError, match="cannot commit 3"):
            consumer.commit(3)
        assert consumer.sequence == 0


@pytest.mark.parametrize(
    ("capacity", "consumers", "dtype", "message"),
    [
        (6, 1, SEQ_DTYPE, "power of two"),
        (1, 1, SEQ_DTYPE, "power of two"),
        (8, 0, SEQ_DTYPE, "consumers"),
        (8, 33, SEQ_DTYPE, "consumers"),
        (8, 1, np.dtype([("a", np.int32)]), "multiple of 8"),
        (8, 1, np.dtype([("a", object)]), "Python objects"),
    ],
)
def test_ring_create_bad_parameters_raises_valueerror(
    ring_name, capacity, consumers, dtype, message
):
    with pytest.raises(ValueError, match=message):
        Ring.create(ring_name, dtype, capacity=capacity, consumers=consumers)


def test_ring_attach_wrong_dtype_raises_layout_error(ring_name):
    same_size = np.dtype([("seq", np.int64), ("price", np.float64)], align=True)
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1):
        with pytest.raises(RingLayoutError, match="another dtype"):
            Ring.attach(ring_name, same_size)
        with pytest.raises(RingLayoutError, match="another dtype"):
            Ring.attach(ring_name, np.dtype([("seq", np.int64)]))
        Ring.attach(ring_name, SEQ_DTYPE).close()  # the right dtype still attaches


def test_ring_attach_wrong_version_raises_layout_error(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        ring._meta[H_VERSION] = 99
        with pytest.raises(RingLayoutError, match="layout version 99"):
            Ring.attach(ring_name, SEQ_DTYPE)


def test_ring_attach_missing_raises_filenotfound(ring_name):
    with pytest.raises(FileNotFoundError):
        Ring.attach(ring_name, SEQ_DTYPE)


def test_ring_foreign_segment_is_refused_and_never_removed(ring_name):
    fd = _posixshmem.shm_open("/" + ring_name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    os.ftruncate(fd, 8192)
    os.write(fd, b"not a ring at all")
    os.close(fd)
    try:
        with pytest.raises(RingLayoutError, match="not an AEGIS ring"):
            Ring.attach(ring_name, SEQ_DTYPE)
        with pytest.raises(RingLayoutError, match="not an AEGIS ring"):
            Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1)
        assert os.path.exists(os.path.join(SHM, ring_name))
    finally:
        _posixshmem.shm_unlink("/" + ring_name)


def test_ring_create_over_live_ring_raises_in_use(ring_name):
    with (
        Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1),
        pytest.raises(RingInUseError, match="attached"),
    ):
        Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1)


def test_ring_close_by_creator_unlinks_and_attacher_close_does_not(ring_name):
    ring = Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1)
    Ring.attach(ring_name, SEQ_DTYPE).close()
    assert _leftovers(ring_name) == [ring_name]
    ring.close()
    assert _leftovers(ring_name) == []


def test_ring_consumer_reattach_resumes_at_committed_sequence(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer = ring.producer()
        first = ring.consumer(0)
        _publish_range(producer, 0, 6)
        first.poll()
        first.commit(4)
        first.close()
        second = ring.consumer(0)
        assert second.sequence == 4
        assert second.poll()["seq"].tolist() == [4, 5]


def test_ring_inspect_reports_cursor_lag_heartbeat_without_dtype(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first, _second = ring.producer(), ring.consumer(0), ring.consumer(1)
        _publish_range(producer, 0, 10)
        first.poll()
        first.commit(7)
        first.beat()
        stats = Ring.inspect(ring_name)
        assert (stats.capacity, stats.record_size, stats.cursor) == (16, 16, 10)
        assert [c.sequence for c in stats.consumers] == [7, 0]
        assert [c.lag for c in stats.consumers] == [3, 10] and stats.max_lag == 10
        assert stats.consumers[0].heartbeat_ns > 0 and stats.consumers[0].heartbeat_age_s < 5
        assert stats.consumers[0].attached and stats.consumers[0].pid == os.getpid()
        assert stats.owner_pid == os.getpid() == stats.producer_pid


@pytest.mark.parametrize(
    "wait", [BusySpinWait(), YieldingWait(), SleepingWait(), BlockingWait()], ids=type
)
def test_ring_wait_for_times_out_empty_then_returns_published(ring_name, wait):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0, wait=wait)
        assert len(consumer.wait_for(timeout=0.02)) == 0
        _publish_range(producer, 0, 1)
        assert consumer.wait_for(timeout=1.0)["seq"].tolist() == [0]


def test_sleeping_wait_longer_than_one_ms_is_refused():
    with pytest.raises(ValueError, match="1 ms"):
        SleepingWait(max_sleep_s=0.01)


# -- model test ------------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 6)),
        st.tuples(st.just("batch"), st.integers(1, 10)),
        st.tuples(st.just("consume"), st.integers(0, 2), st.integers(0, 6) | st.none()),
        st.tuples(st.just("restart"), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.sampled_from([2, 4, 8]),
    consumers=st.integers(1, 3),
    max_batch=st.none() | st.integers(1, 5),
    ops=_ops,
)
def test_ring_any_interleaving_keeps_order_no_loss_no_duplicate(
    capacity, consumers, max_batch, ops
):
    name = f"aegis-test-model-{uuid.uuid4().hex[:12]}"
    ring = Ring.create(name, SEQ_DTYPE, capacity=capacity, consumers=consumers)
    try:
        producer = ring.producer()
        readers = [ring.consumer(i, max_batch=max_batch) for i in range(consumers)]
        committed = [0] * consumers  # the model
        delivered: list[list[int]] = [[] for _ in range(consumers)]
        cursor = 0
        rec = producer.slot[0]

        def consume(i: int, take: int | None) -> None:
            available = cursor - committed[i]
            start = committed[i] % capacity
            expected = min(available, capacity - start, max_batch or capacity)
            batch = readers[i].poll()
            assert batch["seq"].tolist() == list(range(committed[i], committed[i] + expected))
            count = expected if take is None else min(take, expected)
            delivered[i].extend(batch["seq"][:count].tolist())
            readers[i].commit(count)
            committed[i] += count

        for op in ops:
            if op[0] == "publish":
                for _ in range(op[1]):
                    rec["seq"] = cursor
                    fits = cursor - min(committed) < capacity
                    assert producer.try_publish() is fits
                    cursor += fits
            elif op[0] == "batch":
                records = np.zeros(op[1], SEQ_DTYPE)
                records["seq"] = np.arange(cursor, cursor + op[1])
                free = capacity - (cursor - min(committed))
                if op[1] <= free:
                    producer.publish_batch(records, timeout=0)
                    cursor += op[1]
                else:
                    with pytest.raises(RingFull) as full:
                        producer.publish_batch(records, timeout=0)
                    assert full.value.published == free
                    cursor += free
            elif op[0] == "consume" and op[1] < consumers:
                consume(op[1], op[2])
            elif op[0] == "restart" and op[1] < consumers:
                readers[op[1]].close()
                readers[op[1]] = ring.consumer(op[1], max_batch=max_batch)
                assert readers[op[1]].sequence == committed[op[1]]
        assert producer.cursor == cursor
        for i in range(consumers):
            while committed[i] < cursor:
                consume(i, None)
            assert delivered[i] == list(range(cursor))
    finally:
        ring.close()
    assert _leftovers(name) == []


def test_ring_closed_roles_raise_ring_error_instead_of_touching_memory(ring_name):
    ring = Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1)
    producer, consumer = ring.producer(), ring.consumer(0)
    ring.close()
    with pytest.raises(RingError, match="closed"):
        producer.try_publish()
    with pytest.raises(RingError, match="closed"):
        consumer.poll()


def test_sequence_set_then_get_reads_the_shared_word(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=1) as ring:
        ring.consumer(0)
        word = Sequence(ring._meta, consumer_sequence_word(0))
        word.set(41)
        assert word.get() == 41 == Ring.inspect(ring_name).consumers[0].sequence
        with Ring.attach(ring_name, SEQ_DTYPE) as other:  # a second mapping of the segment
            assert Sequence(other._meta, consumer_sequence_word(0)).get() == 41
