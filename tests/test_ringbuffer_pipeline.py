"""A consumer that reads ``after`` another (a pipeline), and sleeping in an event loop."""

from __future__ import annotations

import os
import select
import time
import uuid

import pytest
from ringbuffer_workers import SEQ_DTYPE

from aegis.ringbuffer import BusySpinWait, Ring, RingError
from aegis.ringbuffer.layout import consumer_wake_word


@pytest.fixture
def ring_name():
    prefix = f"aegis-test-pipe-{uuid.uuid4().hex[:12]}"
    yield prefix
    assert [e for e in os.listdir("/dev/shm") if e.startswith(prefix)] == []


def _publish(producer, count: int) -> None:
    rec = producer.slot[0]
    for seq in range(count):
        rec["seq"] = seq
        assert producer.try_publish()


def test_a_pipelined_consumer_reads_only_what_the_consumer_before_it_committed(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0)
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        _publish(producer, 5)
        assert len(second.poll()) == 0
        assert len(first.poll()) == 5
        first.commit(3)
        assert second.poll()["seq"].tolist() == [0, 1, 2]
        second.commit()
        first.poll()
        first.commit()
        assert second.poll()["seq"].tolist() == [3, 4]
        assert second.bypasses == 0


def test_a_detached_dependency_does_not_hold_records_back(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer = ring.producer()
        ring.consumer(0).close()  # the slot is free: its process is gone
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        _publish(producer, 4)
        assert len(second.poll()) == 4


def test_a_stalled_dependency_is_bypassed_after_patience_then_followed_again(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0)
        second = ring.consumer(1, after=(0,), patience_s=0.05)
        _publish(producer, 4)
        assert len(second.poll()) == 0  # held from now on
        time.sleep(0.06)
        assert len(second.poll()) == 4  # the dependency did not move in 50 ms
        second.commit()
        _publish(producer, 2)
        assert len(second.poll()) == 2, "still bypassing while the dependency stays stalled"
        second.commit()
        assert second.bypasses == 1
        first.poll()
        first.commit(1)  # the dependency moves again: it gates again
        _publish(producer, 1)
        assert len(second.poll()) == 0
        first.poll()
        first.commit()
        assert second.poll()["seq"].tolist() == [0]


def test_wait_for_returns_records_once_the_dependency_commits(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0)
        second = ring.consumer(1, wait=BusySpinWait(), after=(0,), patience_s=60.0)
        _publish(producer, 2)
        assert len(second.wait_for(timeout=0.02)) == 0
        first.poll()
        first.commit()
        assert len(second.wait_for(timeout=1.0)) == 2


def test_pipeline_arguments_are_checked(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        with pytest.raises(ValueError, match="itself"):
            ring.consumer(1, after=(1,))
        with pytest.raises(ValueError, match="outside"):
            ring.consumer(1, after=(2,))
        with pytest.raises(ValueError, match="patience_s"):
            ring.consumer(1, after=(0,), patience_s=0)


def test_an_armed_consumer_is_woken_through_its_descriptor_and_disarm_drains(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        fd = consumer.wake_fileno()
        assert consumer.arm() is False
        assert select.select([fd], [], [], 0)[0] == []
        _publish(producer, 1)
        assert select.select([fd], [], [], 1.0)[0] == [fd]
        consumer.disarm()
        assert select.select([fd], [], [], 0)[0] == []
        assert consumer.arm() is True  # a record is waiting: do not sleep
        consumer.disarm()


def test_wake_fileno_needs_a_blocking_consumer(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=1) as ring:
        consumer = ring.consumer(0, wait=BusySpinWait())
        with pytest.raises(RingError, match="BlockingWait"):
            consumer.wake_fileno()


def test_held_records_are_not_ready_to_arm_and_say_so(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0)
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        assert not second.held
        _publish(producer, 1)
        assert second.held and second.arm() is False
        second.disarm()
        first.poll()
        first.commit()
        assert not second.held and second.arm() is True
        second.disarm()


def test_a_held_consumer_asleep_is_woken_by_the_commit_it_waits_for(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0, wakes=(1,))
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        fd = second.wake_fileno()
        _publish(producer, 2)
        assert second.arm() is False  # held by the first: sleeps
        second.disarm()
        assert first.arm() is True
        first.disarm()
        assert second.arm() is False
        first.poll()
        first.commit(1)
        assert select.select([fd], [], [], 1.0)[0] == [fd]  # the commit, not a publish, woke it
        second.disarm()
        assert second.poll()["seq"].tolist() == [0]


def test_a_gated_consumer_asleep_is_not_woken_by_publishes_it_cannot_read_yet(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0, wakes=(1,))
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        fd = second.wake_fileno()
        assert second.arm() is False
        _publish(producer, 3)  # a burst the first consumer has yet to handle
        assert select.select([fd], [], [], 0.05)[0] == []
        first.poll()
        first.commit()
        assert select.select([fd], [], [], 1.0)[0] == [fd]
        second.disarm()
        assert second.poll()["seq"].tolist() == [0, 1, 2]


def test_a_consumer_whose_dependency_is_gone_is_woken_by_the_publish(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0, wakes=(1,))
        second = ring.consumer(1, after=(0,), patience_s=60.0)
        first.close()  # nobody holds the dependency's slot: it gates nothing
        fd = second.wake_fileno()
        assert second.arm() is False
        _publish(producer, 1)
        assert select.select([fd], [], [], 1.0)[0] == [fd]
        second.disarm()
        assert second.poll()["seq"].tolist() == [0]


def test_a_commit_wakes_only_the_consumers_reading_after_it(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=3) as ring:
        producer, first = ring.producer(), ring.consumer(0, wakes=(1,))
        follower = ring.consumer(1, after=(0,), patience_s=60.0)
        other = ring.consumer(2)
        _publish(producer, 1)
        other.poll()
        other.commit()
        assert follower.arm() is False and other.arm() is False  # both asleep
        first.poll()
        first.commit()
        assert select.select([follower.wake_fileno()], [], [], 1.0)[0]
        assert select.select([other.wake_fileno()], [], [], 0.05)[0] == []


def test_a_consumer_cannot_wake_itself_or_a_consumer_the_ring_lacks(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        with pytest.raises(ValueError, match=r"wakes.*itself"):
            ring.consumer(0, wakes=(0,))
        with pytest.raises(ValueError, match=r"wakes.*outside"):
            ring.consumer(0, wakes=(2,))


def test_a_follower_that_died_asleep_is_no_longer_woken(ring_name):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, first = ring.producer(), ring.consumer(0, wakes=(1,))
        follower = ring.consumer(1, after=(0,), patience_s=60.0)
        _publish(producer, 1)
        assert follower.arm() is False
        follower._barrier.listener.close()  # its socket is gone, its flag still up (SIGKILL)
        first.poll()
        first.commit()
        assert ring._meta[consumer_wake_word(1)] == 0
