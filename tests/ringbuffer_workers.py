"""Child-process bodies for the ring tests (spawned, so they attach to rings by name only)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from aegis.ringbuffer import BlockingWait, Ring, YieldingWait

SEQ_DTYPE = np.dtype([("seq", np.int64), ("sent_ns", np.int64)], align=True)
# 512-byte records: the longer the producer's copy, the wider the window a reordering opens.
STRESS_WORDS = 63
STRESS_DTYPE = np.dtype([("seq", np.int64), ("words", np.uint64, (STRESS_WORDS,))], align=True)
STRESS_KEY = np.uint64(0x9E3779B97F4A7C15)


def stress_words(sequences: np.ndarray) -> np.ndarray:
    """The payload words every stress record must carry, derived from its sequence."""
    base = sequences.astype(np.uint64)[:, None] * STRESS_KEY
    return base + np.arange(1, STRESS_WORDS + 1, dtype=np.uint64)[None, :]


def consume_at_speed(name: str, index: int, total: int, delay_s: float, out) -> None:
    """Read ``total`` records, sleeping ``delay_s`` per batch; report order problems."""
    ring = Ring.attach(name, SEQ_DTYPE)
    consumer = ring.consumer(index, wait=YieldingWait(), max_batch=16)
    expected = 0
    problems = 0
    while expected < total:
        batch = consumer.wait_for(timeout=10.0)
        if len(batch) == 0:
            break
        sequences = batch["seq"]
        problems += int(np.count_nonzero(sequences != np.arange(expected, expected + len(batch))))
        expected += len(batch)
        if delay_s:
            time.sleep(delay_s)
        consumer.commit()
    out.put((index, expected, problems))
    ring.close()


def consume_to_file(name: str, path: str, life: int, total: int, per_record_s: float) -> None:
    """Handle records one by one, appending ``life seq`` lines, committing once per batch."""
    ring = Ring.attach(name, SEQ_DTYPE)
    consumer = ring.consumer(0, max_batch=50)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while consumer.sequence < total:
        batch = consumer.wait_for(timeout=10.0)
        if len(batch) == 0:
            break
        for seq in batch["seq"]:
            os.write(fd, f"{life} {int(seq)}\n".encode())
            time.sleep(per_record_s)
        consumer.commit()
    os.close(fd)
    ring.close()


def attach_consume_then_hang(name: str, index: int, count: int, ready) -> None:
    """Consume ``count`` records as consumer ``index`` then hang until killed."""
    ring = Ring.attach(name, SEQ_DTYPE)
    consumer = ring.consumer(index)
    seen = 0
    while seen < count:
        batch = consumer.wait_for(timeout=10.0)
        take = min(len(batch), count - seen)
        seen += take
        consumer.commit(take)
    ready.set()
    time.sleep(60)


def create_then_die(name: str, ready) -> None:
    """Create a ring, publish a little, then die by SIGKILL without any cleanup."""
    ring = Ring.create(name, SEQ_DTYPE, capacity=8, consumers=1)
    ring.producer().publish(np.zeros(1, SEQ_DTYPE), timeout=1.0)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def publish_then_die(name: str, count: int) -> None:
    """Publish ``count`` numbered records as the producer, then die by SIGKILL."""
    ring = Ring.attach(name, SEQ_DTYPE)
    producer = ring.producer()
    rec = producer.slot[0]
    for seq in range(count):
        rec["seq"] = seq
        producer.publish(timeout=5.0)
    os.kill(os.getpid(), signal.SIGKILL)


def idle_then_wake(name: str, ready, idle_done, out) -> None:
    """Idle with the default strategy on consumer 0, then block on consumer 1 until woken."""
    ring = Ring.attach(name, SEQ_DTYPE)
    idle = ring.consumer(0)
    ready.set()
    idle.wait_for(timeout=1.5)
    idle_done.set()
    # A huge slice: if the producer's wake-up were lost, this would take 30 s, not ~0.
    sleeper = ring.consumer(1, wait=BlockingWait(spins=0, slice_s=30.0))
    batch = sleeper.wait_for(timeout=30.0)
    received_ns = time.monotonic_ns()
    out.put((len(batch), received_ns - int(batch["sent_ns"][0]) if len(batch) else -1))
    ring.close()


def stress_produce(name: str, total: int) -> None:
    """Publish ``total`` stress records as fast as the ring allows."""
    ring = Ring.attach(name, STRESS_DTYPE)
    producer = ring.producer(wait=YieldingWait())  # yields the core to the consumer when full
    slot_words = producer.slot.view(np.uint64)
    for seq in range(total):
        slot_words[0] = seq
        slot_words[1:] = stress_words(np.array([seq]))[0]
        producer.publish(timeout=30.0)
    ring.close()
