"""Child-process sides of the ring benchmark: one sender and one receiver per transport.

Every transport moves the same 64-byte record (seq, send time, symbol id, OHLCV). The ring
moves it as a numpy record of ``BENCH_DTYPE``; the peers move it as 64 bytes packed with
``struct`` (what a user of those queues would send), one message per record. Children are
started with ``spawn`` and rebuild their endpoint from a picklable spec.
"""

from __future__ import annotations

import functools
import queue
import struct
import time

import numpy as np

BENCH_DTYPE = np.dtype(
    [
        ("seq", np.int64),
        ("send_ns", np.int64),  # time.perf_counter_ns() == CLOCK_MONOTONIC, shared by processes
        ("symbol_id", np.int64),
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
    ],
    align=True,
)
assert BENCH_DTYPE.itemsize == 64
PACK = struct.Struct("<qqq5d")
HEAD = struct.Struct("<qq")
OHLCV = (42, 27_000.5, 27_010.0, 26_990.25, 27_005.75, 12.5)
RING_TIMEOUT_S = 30.0


def _wait(name: str):
    from aegis.ringbuffer import BlockingWait, BusySpinWait, SleepingWait, YieldingWait

    return {"BusySpinWait": BusySpinWait, "YieldingWait": YieldingWait,
            "SleepingWait": SleepingWait, "BlockingWait": BlockingWait}[name]()  # fmt: skip


# -- senders ---------------------------------------------------------------------------------


class RingSender:
    """Per-record API (fields written into ``producer.slot``) or batch API (``publish_batch``)."""

    def __init__(self, name: str, wait: str, batch: bool) -> None:
        from aegis.ringbuffer import Ring

        self.ring = Ring.attach(name, BENCH_DTYPE)
        self.producer = self.ring.producer(wait=_wait(wait))
        self.batch = batch
        self.rec = self.producer.slot[0]
        for field, value in zip(BENCH_DTYPE.names[2:], OHLCV, strict=True):
            self.rec[field] = value
        # seq and send_ns are words 0 and 1 of the record: writing them through an int64 view
        # of the slot costs ~60 ns instead of ~300 ns for np.void field assignment.
        self.words = self.producer.slot.view(np.int64)

    def send(self, seq: int, send_ns: int) -> None:
        words = self.words
        words[0] = seq
        words[1] = send_ns
        if self.batch:
            self.producer.publish_batch(self.producer.slot, timeout=RING_TIMEOUT_S)
        else:
            self.producer.publish(timeout=RING_TIMEOUT_S)

    def flood(self, count: int, chunk: int = 1024) -> None:
        if not self.batch:
            publish, words = self.producer.publish, self.words
            for seq in range(count):
                words[0] = seq
                publish(timeout=RING_TIMEOUT_S)
            return
        block = np.repeat(self.producer.slot, chunk)
        steps = np.arange(chunk, dtype=np.int64)
        for start in range(0, count, chunk):
            part = block[: min(chunk, count - start)]
            part["seq"] = steps[: len(part)] + start
            self.producer.publish_batch(part, timeout=RING_TIMEOUT_S)

    def echo_from(self, view: np.ndarray) -> None:
        if self.batch:
            self.producer.publish_batch(view, timeout=RING_TIMEOUT_S)
        else:
            for i in range(len(view)):
                self.producer.publish(view[i], timeout=RING_TIMEOUT_S)

    def close(self) -> None:
        self.ring.close()


class MessageSender:
    """A peer transport sending one 64-byte message per record."""

    def __init__(self, put, closer=None) -> None:
        self.put = put
        self.closer = closer

    def send(self, seq: int, send_ns: int) -> None:
        self.put(PACK.pack(seq, send_ns, *OHLCV))

    def flood(self, count: int) -> None:
        put, pack = self.put, PACK.pack
        symbol, o, h, low, c, v = OHLCV
        for seq in range(count):
            put(pack(seq, 0, symbol, o, h, low, c, v))

    def echo(self, message: bytes) -> None:
        self.put(message)

    def close(self) -> None:
        if self.closer:
            self.closer()


# -- receivers -------------------------------------------------------------------------------


class RingReceiver:
    """Consumer 0 of the ring: zero-copy batches, one commit per batch."""

    def __init__(self, name: str, wait: str) -> None:
        from aegis.ringbuffer import Ring

        self.ring = Ring.attach(name, BENCH_DTYPE)
        self.consumer = self.ring.consumer(0, wait=_wait(wait))
        self.steps = np.arange(self.ring.capacity, dtype=np.int64)

    def idle(self, seconds: float) -> None:
        if len(self.consumer.wait_for(timeout=seconds)):
            raise RuntimeError("records arrived during the idle measurement")

    def _next(self) -> np.ndarray:
        view = self.consumer.wait_for(timeout=RING_TIMEOUT_S)
        if not len(view):
            raise TimeoutError(f"no record for {RING_TIMEOUT_S}s (lost?)")
        return view

    def latency(self, latencies: np.ndarray) -> int:
        received = disorder = 0
        now, steps = time.perf_counter_ns, self.steps
        while received < len(latencies):
            view = self._next()
            arrived = now()
            count = len(view)
            latencies[received : received + count] = arrived - view["send_ns"]
            disorder += int(np.count_nonzero(view["seq"] - received != steps[:count]))
            received += count
            self.consumer.commit()
        return disorder

    def flood(self, count: int) -> int:
        received = disorder = 0
        steps = self.steps
        while received < count:
            view = self._next()
            size = len(view)
            disorder += int(np.count_nonzero(view["seq"] - received != steps[:size]))
            received += size
            self.consumer.commit()
        return disorder

    def round_trip(self) -> tuple[int, int]:
        view = self._next()
        result = int(view["seq"][0]), int(view["send_ns"][0])
        self.consumer.commit()
        return result

    def echo_to(self, sender: RingSender, count: int) -> None:
        echoed = 0
        while echoed < count:
            view = self._next()
            sender.echo_from(view)
            echoed += len(view)
            self.consumer.commit()

    def close(self) -> None:
        self.ring.close()


class MessageReceiver:
    """A peer transport receiving one message per record."""

    def __init__(self, get, idle, closer=None) -> None:
        self.get = get
        self.idle = idle
        self.closer = closer

    def latency(self, latencies: np.ndarray) -> int:
        get, unpack, now = self.get, HEAD.unpack_from, time.perf_counter_ns
        disorder = 0
        for i in range(len(latencies)):
            message = get()
            arrived = now()
            seq, sent = unpack(message)
            latencies[i] = arrived - sent
            disorder += seq != i
        return disorder

    def flood(self, count: int) -> int:
        get, unpack = self.get, HEAD.unpack_from
        disorder = 0
        for i in range(count):
            disorder += unpack(get())[0] != i
        return disorder

    def round_trip(self) -> tuple[int, int]:
        return HEAD.unpack_from(self.get())

    def echo_to(self, sender: MessageSender, count: int) -> None:
        get, put = self.get, sender.echo
        for _ in range(count):
            put(get())

    def close(self) -> None:
        if self.closer:
            self.closer()


# -- building endpoints from specs -----------------------------------------------------------


def _queue_idle(get_timeout, seconds: float) -> None:
    try:
        get_timeout(timeout=seconds)
    except queue.Empty:
        return
    raise RuntimeError("a message arrived during the idle measurement")


def _pipe_idle(connection, seconds: float) -> None:
    if connection.poll(seconds):
        raise RuntimeError("a message arrived during the idle measurement")


def _zmq_socket(kind: str, address: str, bind: bool):
    import zmq

    context = zmq.Context()  # one per socket: term() of a sender must not wait on a receiver
    sock = context.socket(zmq.PUSH if kind == "push" else zmq.PULL)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.RCVTIMEO, int(RING_TIMEOUT_S * 1000))  # a lost message raises, not hangs
    if bind:
        sock.bind(address)
    else:
        sock.connect(address)
    return sock


def _zmq_flush_and_close(sock) -> None:
    """Deliver every queued message, then stop zmq's I/O thread.

    multiprocessing ends a child with ``os._exit``, which would kill the I/O thread with the
    tail of the stream still queued; ``linger=-1`` plus ``term()`` waits for delivery.
    """
    context = sock.context
    sock.close(linger=-1)
    context.term()


def _zmq_idle(sock, seconds: float) -> None:
    if sock.poll(int(seconds * 1000)):
        raise RuntimeError("a message arrived during the idle measurement")


def open_sender(spec: tuple):
    """Build the sending endpoint described by ``spec`` (see ``bench_ring.channel``)."""
    kind = spec[0]
    if kind == "ring":
        return RingSender(spec[1], spec[2], spec[3])
    if kind == "mp_queue":
        return MessageSender(spec[1].put)
    if kind == "mp_pipe":
        return MessageSender(spec[1].send_bytes, spec[1].close)
    if kind == "faster_fifo":
        return MessageSender(functools.partial(spec[1].put, timeout=RING_TIMEOUT_S))
    if kind == "zmq":
        sock = _zmq_socket("push", spec[1], bind=False)
        return MessageSender(sock.send, functools.partial(_zmq_flush_and_close, sock))
    raise ValueError(f"unknown transport {kind!r}")


def open_receiver(spec: tuple):
    """Build the receiving endpoint described by ``spec``."""
    kind = spec[0]
    if kind == "ring":
        return RingReceiver(spec[1], spec[2])
    if kind == "mp_queue":
        q = spec[1]
        return MessageReceiver(q.get, functools.partial(_queue_idle, q.get))
    if kind == "mp_pipe":
        conn = spec[1]
        return MessageReceiver(conn.recv_bytes, functools.partial(_pipe_idle, conn), conn.close)
    if kind == "faster_fifo":
        q = spec[1]
        get = functools.partial(q.get, timeout=RING_TIMEOUT_S)
        return MessageReceiver(get, functools.partial(_queue_idle, q.get))
    if kind == "zmq":
        sock = _zmq_socket("pull", spec[1], bind=True)
        closer = functools.partial(_zmq_flush_and_close, sock)
        return MessageReceiver(sock.recv, functools.partial(_zmq_idle, sock), closer)
    raise ValueError(f"unknown transport {kind!r}")


# -- child process roles ---------------------------------------------------------------------


def latency_receiver(spec, samples: int, idle_s: float, ready, results) -> None:
    """Measure idle CPU for ``idle_s``, then one-way latency of ``samples`` paced records."""
    receiver = open_receiver(spec)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    receiver.idle(idle_s)
    idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100.0
    latencies = np.empty(samples, dtype=np.int64)
    ready.set()
    disorder = receiver.latency(latencies)
    receiver.close()
    results.put(("receiver", {"latencies_ns": latencies, "disorder": disorder,
                              "idle_cpu_pct": idle_cpu}))  # fmt: skip


def paced_sender(spec, samples: int, rate: float, ready, results) -> None:
    """Send ``samples`` records at ``rate`` per second, stamping each just before sending."""
    sender = open_sender(spec)
    if not ready.wait(120):
        raise TimeoutError("receiver never became ready")
    now = time.perf_counter_ns
    interval = int(1e9 / rate)
    start = now() + 1_000_000
    late = 0
    nap = time.sleep
    for seq in range(samples):
        due = start + seq * interval
        # Wait with sleep(0), not a bare spin: it releases the GIL, so transports that send
        # from a helper thread (multiprocessing.Queue's feeder) are not starved by the pacer.
        while now() < due:
            nap(0)
        stamp = now()
        late += stamp - due > 20_000
        sender.send(seq, stamp)
    elapsed = (now() - start) / 1e9
    sender.close()
    results.put(("sender", {"achieved_rate_per_s": samples / elapsed, "late_over_20us": late}))


def flood_receiver(spec, count: int, ready, results) -> None:
    """Receive ``count`` records as fast as they come; report when the last one arrived."""
    receiver = open_receiver(spec)
    ready.set()
    disorder = receiver.flood(count)
    finished = time.perf_counter_ns()
    receiver.close()
    results.put(("receiver", {"finished_ns": finished, "disorder": disorder}))


def flood_sender(spec, count: int, ready, results) -> None:
    """Send ``count`` records back to back; report when the first one left."""
    sender = open_sender(spec)
    if not ready.wait(120):
        raise TimeoutError("receiver never became ready")
    time.sleep(0.05)
    started = time.perf_counter_ns()
    sender.flood(count)
    sender.close()
    results.put(("sender", {"started_ns": started}))


def pinger(out_spec, back_spec, count: int, ready, results) -> None:
    """Send one record, wait for its echo, ``count`` times; report round-trip times."""
    sender, receiver = open_sender(out_spec), open_receiver(back_spec)
    if not ready.wait(120):
        raise TimeoutError("echo never became ready")
    now = time.perf_counter_ns
    trips = np.empty(count, dtype=np.int64)
    disorder = 0
    for seq in range(count):
        sender.send(seq, now())
        echoed_seq, sent = receiver.round_trip()
        trips[seq] = now() - sent
        disorder += echoed_seq != seq
    sender.close()
    receiver.close()
    results.put(("sender", {"round_trips_ns": trips, "disorder": disorder}))


def echoer(in_spec, out_spec, count: int, ready, results) -> None:
    """Send every record received on ``in_spec`` back on ``out_spec``."""
    receiver, sender = open_receiver(in_spec), open_sender(out_spec)
    ready.set()
    receiver.echo_to(sender, count)
    receiver.close()
    sender.close()
    results.put(("receiver", {}))
