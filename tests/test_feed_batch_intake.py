"""A socket read's frames handled at once (``KlineIntake.on_frames``) end exactly as the same
frames handled one by one (``on_frame``): the same bars published in the same order, the same
duplicates, gaps, held bars, updates, rejects and shutdown notices."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from types import SimpleNamespace

import numpy as np
import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_feed_units import read_open_times

from aegis.binance.intake import FrameRejects, KlineIntake
from aegis.binance.protocol import KlineParser, build_kline_frame
from aegis.binance.sequencer import BarSequencer
from aegis.binance.sim.faults import MALFORMED_FRAMES
from aegis.processes.feed_outputs import RingPublisher
from aegis.records import BAR_CLOSED, BAR_DTYPE
from aegis.ringbuffer import Ring

T0 = 1_679_097_600_000
SYMBOLS = {"BTCUSDT": 1, "ETHUSDT": 2, "SOLUSDT": 3}
SHUTDOWN = b'{"stream":"btcusdt@kline_1m","data":{"e":"serverShutdown","E":1}}'


def _kline(symbol: str, minute: int, closed: bool, price: float = 100.0) -> bytes:
    rec = np.zeros(1, dtype=BAR_DTYPE)[0]
    rec["open_time_ms"] = T0 + minute * 60_000
    rec["flags"] = BAR_CLOSED if closed else 0
    for name in ("open", "high", "low", "close"):
        rec[name] = price
    rec["volume"], rec["quote_volume"], rec["trades"] = 2.0, 200.0, 5
    return build_kline_frame(rec, symbol, "1m", T0 + minute * 60_000 + 1)


def _python_only(frame: bytes) -> bytes:
    """A valid closed frame the compiled parser hands back: a volume of 17 digits."""
    msg = orjson.loads(frame)
    msg["data"]["k"]["v"] = msg["data"]["k"]["q"] = "12345678901234567"
    return orjson.dumps(msg)


FRAMES = st.one_of(
    st.tuples(st.sampled_from(sorted(SYMBOLS)), st.integers(0, 6), st.booleans()).map(
        lambda t: _kline(*t)
    ),
    st.tuples(st.sampled_from(sorted(SYMBOLS)), st.integers(0, 6)).map(
        lambda t: _python_only(_kline(t[0], t[1], True))
    ),
    st.sampled_from([m.encode("utf-8", "surrogateescape") for m in MALFORMED_FRAMES]),
    st.just(b'{"result":null,"id":1}'),
    st.just(SHUTDOWN),
)


class Rig:
    """Intake + sequencer recording everything published, as the feed wires them."""

    def __init__(self, batch: bool) -> None:
        self.published: list[bytes] = []
        self.requests: list[int] = []

        def one(record: np.ndarray) -> None:
            self.published.append(record[0].tobytes())

        def many(records: np.ndarray) -> None:
            self.published.extend(r.tobytes() for r in records)

        self.seq = BarSequencer(8, 60_000, one, self.requests.append,
                                publish_many=many if batch else None)  # fmt: skip
        for sid in SYMBOLS.values():
            self.seq.start_at(sid, T0 + 60_000)
        self.seq.gate(3)  # SOLUSDT waits for a backfill: its live bars are held
        self.intake = KlineIntake(KlineParser(SYMBOLS), self.seq, FrameRejects(log_every_s=60))

    def outcome(self) -> dict:
        i, q = self.intake, self.seq
        return {
            "published": self.published, "requests": self.requests,
            "duplicates": q.duplicates, "gaps": q.gaps, "held": q.held_count(),
            "updates": q.take_updates().tobytes(), "server_now": i.server_now_ms,
            "frames": i.frames, "rejects": dict(i.rejects.counts),
            "control": i.control_replies, "shutdowns": i.shutdown_notices,
        }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(FRAMES, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=6))
@example(frames=[_kline("SOLUSDT", 1, True), _kline("BTCUSDT", 1, True)], cuts=[])  # held, then out
def test_a_read_handled_at_once_ends_as_its_frames_handled_one_by_one(frames, cuts):
    one, batch = Rig(batch=False), Rig(batch=True)
    said_one = [one.intake.on_frame(f, 7) for f in frames]
    said_batch = []
    bounds = [0, *sorted(c for c in cuts if c < len(frames)), len(frames)]
    for a, b in itertools.pairwise(bounds):
        part = frames[a:b]
        if part:
            ends = np.cumsum([len(f) for f in part]).tolist()
            starts = [e - len(f) for e, f in zip(ends, part, strict=True)]
            said_batch.append(batch.intake.on_frames(b"".join(part), starts, ends, 7))
    assert batch.outcome() == one.outcome()
    assert any(said_batch) == any(said_one)  # a shutdown notice is reported either way


def test_a_close_burst_is_published_in_one_call_in_arrival_order():
    rig = Rig(batch=True)
    calls: list[int] = []
    rig.seq._publish_many = lambda records: calls.append(len(records))
    frames = [_kline(s, 1, True) for s in ("ETHUSDT", "BTCUSDT")]
    ends = np.cumsum([len(f) for f in frames]).tolist()
    starts = [0, ends[0]]
    assert rig.intake.on_frames(b"".join(frames), starts, ends, 9) is False
    assert calls == [2] and rig.seq.published == 2
    assert rig.intake.server_now_ms == T0 + 2 * 60_000


@contextlib.contextmanager
def publisher_on_small_ring(count: int):
    """A ``RingPublisher`` on a real 8-slot ring, its consumer, and ``count`` records numbered
    by open time."""
    name = f"aegis-test-pub-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with Ring.create(name, BAR_DTYPE, 8, 1) as ring:
        records = np.zeros(count, BAR_DTYPE)
        records["open_time_ms"] = np.arange(count)
        rig = SimpleNamespace(publisher=RingPublisher(ring.producer()), consumer=ring.consumer(0),
                              records=records)  # fmt: skip
        try:
            yield rig
        finally:
            del rig.consumer  # its views of the ring go before the ring closes


async def drain_until(rig, count: int, seen: list[int]) -> None:
    """Run the publisher's drain while the consumer reads until ``count`` records are seen."""
    drain = asyncio.create_task(rig.publisher.run())
    await read_open_times(rig.consumer, count, seen)
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)


async def test_ring_publisher_publishes_a_batch_at_once_and_queues_what_does_not_fit():
    with publisher_on_small_ring(13) as rig:
        publisher, records = rig.publisher, rig.records
        publisher.publish_many(records[:6])
        publisher.publish_many(records[6:10])  # 2 fit, 2 wait
        assert publisher.backlog == 2 and publisher.published == 8
        seen = rig.consumer.poll()["open_time_ms"].tolist()
        rig.consumer.commit()  # the ring has room again, but the queue is not drained yet:
        publisher.publish_many(records[10:12])  # these wait behind it, never ahead
        publisher.publish(records[12:13])
        assert publisher.backlog == 5
        await drain_until(rig, 13, seen)
    assert seen == list(range(13)) and publisher.backlog == 0 and publisher.published == 13


async def test_a_queued_chunk_larger_than_the_room_goes_out_in_parts_in_order_none_twice():
    with publisher_on_small_ring(30) as rig:
        publisher, records = rig.publisher, rig.records
        publisher.publish_many(records[:8])
        publisher.publish_many(records[8:])  # the ring is full: all 22 wait as one chunk
        assert publisher.backlog == 22 and publisher.published == 8
        seen: list[int] = []
        await drain_until(rig, 30, seen)  # room frees 8 at a time at most
    assert seen == list(range(30)) and publisher.backlog == 0 and publisher.published == 30
