"""Ring buffer across real spawned processes: speeds, crashes, restarts, idle CPU, wake-ups."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid

import numpy as np
import psutil
import pytest
import ringbuffer_workers as workers
from ringbuffer_workers import SEQ_DTYPE

from aegis.ringbuffer import Ring, RingFull, RingInUseError, SleepingWait

SPAWN = multiprocessing.get_context("spawn")
SHM = "/dev/shm"
pytestmark = pytest.mark.slow


def _leftovers(prefix: str) -> list[str]:
    return [entry for entry in os.listdir(SHM) if entry.startswith(prefix)]


@pytest.fixture
def ring_name():
    """A unique segment name; the test fails if anything of that prefix is left in /dev/shm."""
    prefix = f"aegis-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    assert _leftovers(prefix) == []


@pytest.fixture
def children():
    """Spawned processes of one test; any still alive at the end is killed."""
    started: list[multiprocessing.Process] = []

    def start(target, *args) -> multiprocessing.Process:
        process = SPAWN.Process(target=target, args=args, daemon=True)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(5)


@pytest.mark.parametrize("delays", [(0.0, 0.002), (0.0, 0.0005, 0.003)], ids=["2", "3"])
def test_ring_consumers_at_different_speeds_each_see_every_record_in_order(
    ring_name, children, delays
):
    total = 6000
    out = SPAWN.Queue()
    with Ring.create(ring_name, SEQ_DTYPE, capacity=64, consumers=len(delays)) as ring:
        for index, delay in enumerate(delays):
            children(workers.consume_at_speed, ring_name, index, total, delay, out)
        producer = ring.producer(wait=SleepingWait())
        rec = producer.slot[0]
        for seq in range(total):
            rec["seq"] = seq
            producer.publish(timeout=20.0)
        results = sorted(out.get(timeout=30) for _ in delays)
        assert results == [(i, total, 0) for i in range(len(delays))]
        assert ring.stats().stalls > 0  # the slow consumer really gated the producer
        # Children attached and exited normally: the segment must survive them (no
        # resource_tracker unlinking it behind the owner's back).
        assert _leftovers(ring_name) == [ring_name]


def test_ring_consumer_sigkilled_mid_batch_restarts_gap_free(ring_name, children, tmp_path):
    total, max_batch = 1500, 50
    log = tmp_path / "handled.txt"
    with Ring.create(ring_name, SEQ_DTYPE, capacity=2048, consumers=1) as ring:
        records = np.zeros(total, SEQ_DTYPE)
        records["seq"] = np.arange(total)
        ring.producer().publish_batch(records, timeout=1.0)
        first = children(workers.consume_to_file, ring_name, str(log), 1, total, 0.0005)
        deadline = time.monotonic() + 30
        while (
            not log.exists() or log.read_text().count("\n") < 300
        ) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.join(5)
        committed = Ring.inspect(ring_name).consumers[0].sequence
        lives = [line.split() for line in log.read_text().splitlines()]
        handled_first = [int(seq) for life, seq in lives if life == "1"]
        assert len(handled_first) > committed, "the kill must land inside a batch"

        second = children(workers.consume_to_file, ring_name, str(log), 2, total, 0.0)
        second.join(30)
        assert second.exitcode == 0
    lives = [line.split() for line in log.read_text().splitlines()]
    handled_first = [int(seq) for life, seq in lives if life == "1"]
    handled_second = [int(seq) for life, seq in lives if life == "2"]
    assert handled_first == list(range(len(handled_first)))
    assert handled_second == list(range(committed, total))  # resumes at the committed sequence
    redelivered = len(handled_first) - committed
    assert 0 < redelivered <= max_batch  # at-least-once: only the uncommitted batch again


def test_ring_producer_blocked_by_dead_consumer_raises_ringfull(ring_name, children):
    ready = SPAWN.Event()
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        producer, alive = ring.producer(wait=SleepingWait()), ring.consumer(0)
        rec = producer.slot[0]
        child = children(workers.attach_consume_then_hang, ring_name, 1, 5, ready)
        for seq in range(5):
            rec["seq"] = seq
            producer.publish(timeout=1.0)
        assert ready.wait(30)
        with pytest.raises(RingInUseError, match="held by pid"):
            ring.consumer(1)  # a live process holds that slot
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        for seq in range(5, 5 + 16):  # fills up to the dead consumer's committed 5 + capacity
            rec["seq"] = seq
            producer.publish(timeout=1.0)
            alive.poll()
            alive.commit()
        started = time.monotonic()
        with pytest.raises(RingFull):
            producer.publish(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 3.0
        stats = Ring.inspect(ring_name)
        assert stats.consumers[1].sequence == 5 and not stats.consumers[1].attached
        assert stats.consumers[1].lag == 16 and stats.stalls >= 1


def test_ring_stale_segment_of_dead_owner_is_reclaimed(ring_name, children):
    ready = SPAWN.Event()
    child = children(workers.create_then_die, ring_name, ready)
    assert ready.wait(30)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    stale = Ring.inspect(ring_name)
    assert stale.owner_pid == child.pid and stale.cursor == 1
    assert _leftovers(ring_name) == [ring_name]  # the crash left it behind
    with Ring.create(ring_name, SEQ_DTYPE, capacity=16, consumers=2) as ring:
        fresh = ring.stats()
        assert (fresh.cursor, fresh.capacity, fresh.owner_pid) == (0, 16, os.getpid())


def test_ring_restarted_producer_resumes_at_its_cursor(ring_name, children):
    with Ring.create(ring_name, SEQ_DTYPE, capacity=256, consumers=1) as ring:
        consumer = ring.consumer(0)
        child = children(workers.publish_then_die, ring_name, 100)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        producer = ring.producer()  # the dead producer's pid no longer holds the role
        assert producer.cursor == 100
        rec = producer.slot[0]
        for seq in range(100, 150):
            rec["seq"] = seq
            producer.publish(timeout=1.0)
        seen = []
        while len(batch := consumer.poll()):
            seen.extend(batch["seq"].tolist())
            consumer.commit()
        assert seen == list(range(150))


def test_ring_default_wait_idle_consumer_uses_no_cpu_and_is_woken(ring_name, children):
    ready, idle_done, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    with Ring.create(ring_name, SEQ_DTYPE, capacity=8, consumers=2) as ring:
        child = children(workers.idle_then_wake, ring_name, ready, idle_done, out)
        assert ready.wait(30)
        process = psutil.Process(child.pid)
        time.sleep(0.1)
        before = process.cpu_times()
        time.sleep(1.0)
        after = process.cpu_times()
        cpu_s = (after.user - before.user) + (after.system - before.system)
        assert cpu_s < 0.2, f"idle consumer burnt {cpu_s:.3f} s of CPU in 1 s"  # generous guard
        assert idle_done.wait(10)
        time.sleep(0.3)  # let it arm its wake flag and sleep in the kernel
        producer = ring.producer()
        producer.slot[0]["sent_ns"] = time.monotonic_ns()
        producer.publish(timeout=1.0)
        count, latency_ns = out.get(timeout=30)
        assert count == 1
        assert latency_ns < 5e9, "the producer's wake-up was lost (the 30 s slice ran out)"
