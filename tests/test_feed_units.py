"""Small parts of the feed: sharding, connect limiter, message pacer, frame intake and rejects."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from aegis.binance.intake import FrameRejects, KlineIntake
from aegis.binance.protocol import KlineParser, build_kline_frame
from aegis.binance.sequencer import BarSequencer
from aegis.binance.sim.faults import MALFORMED_FRAMES
from aegis.binance.streams import StreamConfigError, StreamSettings, shard_streams, stream_names
from aegis.binance.ws_limits import ConnectLimiter, MessagePacer
from aegis.records import BAR_CLOSED, BAR_DTYPE

T0 = 1_679_097_600_000


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_stream_names_are_lower_case_kline_streams_and_bad_symbols_are_refused():
    assert stream_names(["BTCUSDT", "EthUsdt"]) == ["btcusdt@kline_1m", "ethusdt@kline_1m"]
    with pytest.raises(StreamConfigError):
        stream_names(["BTC/USDT"])


def test_shard_streams_300_at_200_gives_two_even_shards_never_over_the_limit():
    names = [f"s{i}@kline_1m" for i in range(300)]
    shards = shard_streams(names, 200)
    assert [len(s) for s in shards] == [150, 150]
    assert [n for s in shards for n in s] == names
    more = [f"s{i}@kline_1m" for i in range(401)]
    assert [len(s) for s in shard_streams(more, 200)] == [134, 134, 133]


def test_stream_settings_refuse_more_streams_than_binance_allows():
    with pytest.raises(StreamConfigError):
        StreamSettings(max_streams_per_connection=1025)


async def test_connect_limiter_never_allows_more_than_300_attempts_in_5_minutes():
    t = FakeTime()
    limiter = ConnectLimiter(clock=t.clock, sleep=t.sleep)
    stamps = []
    for _ in range(650):
        await limiter.acquire()
        stamps.append(t.now)
        t.now += 0.01
    stamps = np.array(stamps)
    for i, s in enumerate(stamps):
        assert np.sum((stamps >= s) & (stamps < s + 300.0)) <= 300, i
    assert limiter.waited_s > 0


async def test_message_pacer_spaces_messages_under_five_per_second():
    t = FakeTime()
    pacer = MessagePacer(3.0, clock=t.clock, sleep=t.sleep)
    sent = []
    for _ in range(10):
        await pacer.wait()
        sent.append(t.now)
    gaps = np.diff(sent)
    assert np.all(gaps >= 1 / 3 - 1e-9)
    with pytest.raises(ValueError):
        MessagePacer(5.0)


def _intake():
    published = []
    seq = BarSequencer(4, 60_000, lambda r: published.append(r.copy()), lambda sid: None)
    parser = KlineParser({"BTCUSDT": 1})
    return KlineIntake(parser, seq, FrameRejects(log_every_s=60.0)), seq, published


def _frame(minute: int, closed: bool) -> bytes:
    rec = np.zeros(1, dtype=BAR_DTYPE)[0]
    rec["open_time_ms"] = T0 + minute * 60_000
    rec["flags"] = BAR_CLOSED if closed else 0
    for name in ("open", "high", "low", "close"):
        rec[name] = 100.0
    rec["volume"], rec["quote_volume"], rec["trades"] = 2.0, 200.0, 5
    return build_kline_frame(rec, "BTCUSDT", "1m", T0 + minute * 60_000 + 1)


def test_intake_closed_bar_is_sequenced_and_update_is_conflated(caplog):
    intake, seq, published = _intake()
    seq.start_at(1, T0)
    assert intake.on_frame(_frame(0, False), 11) is False
    assert intake.on_frame(_frame(0, True), 12) is False
    assert len(published) == 1 and int(published[0][0]["recv_ns"]) == 12
    assert len(seq.take_updates()) == 1
    assert intake.server_now_ms == T0 + 60_000  # a closing update proves the minute ended


def test_intake_malformed_frames_are_counted_by_reason_logged_rate_limited_and_never_raise(caplog):
    intake, seq, published = _intake()
    seq.start_at(1, T0)
    caplog.set_level(logging.WARNING, logger="aegis.binance.intake")
    for _ in range(3):
        for frame in MALFORMED_FRAMES:
            assert intake.on_frame(frame.encode("utf-8", "surrogateescape"), 1) is False
    assert intake.rejects.total == 12 and published == []
    assert set(intake.rejects.counts) == {
        "not JSON", "open is not finite and positive", "high below open or close",
    } or len(intake.rejects.counts) >= 3  # fmt: skip
    lines = [r for r in caplog.records if r.name == "aegis.binance.intake"]
    assert len(lines) == len(intake.rejects.counts)  # one line per reason within the period
    assert "sample" in lines[0].getMessage()


def test_intake_control_reply_is_no_market_data_and_shutdown_notice_is_reported():
    intake, _, published = _intake()
    assert intake.on_frame(b'{"result":null,"id":1}', 1) is False
    assert intake.control_replies == 1
    notice = b'{"stream":"btcusdt@kline_1m","data":{"e":"serverShutdown","E":1}}'
    assert intake.on_frame(notice, 2) is True
    assert intake.rejects.total == 0 and published == []


async def read_open_times(consumer, count: int, seen: list[int] | None = None) -> list[int]:
    """Open times read off a BAR_DTYPE ring until ``count`` (1 s at most)."""
    import asyncio

    seen = [] if seen is None else seen
    for _ in range(500):
        seen += consumer.poll()["open_time_ms"].tolist()
        consumer.commit()
        if len(seen) >= count:
            break
        await asyncio.sleep(0.002)
    return seen


async def test_ring_publisher_full_ring_queues_in_order_and_drains_without_blocking():
    import asyncio
    import os
    import uuid

    from aegis.processes.feed_outputs import RingPublisher
    from aegis.ringbuffer import Ring

    with Ring.create(
        f"aegis-test-pub-{os.getpid()}-{uuid.uuid4().hex[:6]}", BAR_DTYPE, 8, 1
    ) as ring:
        publisher = RingPublisher(ring.producer())
        consumer = ring.consumer(0)
        drain = asyncio.create_task(publisher.run())
        rec = np.zeros(1, dtype=BAR_DTYPE)
        for i in range(20):  # 8 fit, 12 wait; publish() returns at once either way
            rec[0]["open_time_ms"] = i
            publisher.publish(rec)
        assert publisher.backlog == 12
        seen = await read_open_times(consumer, 20)
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        del consumer
    assert seen == list(range(20)) and publisher.backlog == 0 and publisher.published == 20


class BarSink:
    """Stands in for MarketDataWriter where only the hand-over is under test: the open times of
    each batch handed over."""

    def __init__(self):
        self.flushed: list[list[int]] = []

    def write_symbols(self, names, timeframe, bars):
        self.flushed.append(bars["open_time_ms"].tolist())


def test_closed_bar_store_waits_for_the_close_burst_to_end_but_never_past_its_deadline():
    from aegis.processes.feed_outputs import ClosedBarStore

    now, sink = [100.0], BarSink()
    store = ClosedBarStore(sink, {1: "BTCUSDT"}, flush_every_s=0.25, quiet_s=0.02,
                           clock=lambda: now[0])  # fmt: skip
    assert store.due_in() is None  # nothing buffered, nothing due
    rec = np.zeros(1, dtype=BAR_DTYPE)
    store.add(rec)
    assert store.due_in() == pytest.approx(0.02)
    for _ in range(10):  # closes still arriving every 10 ms: the burst is not over
        now[0] += 0.01
        store.add(rec)
        assert store.due_in() == pytest.approx(0.02)
    now[0] += 0.015
    assert store.due_in() == pytest.approx(0.005)
    now[0] += 0.005
    assert store.due_in() == 0.0  # quiet for 20 ms: flush now
    assert store.flush() == 11 and len(sink.flushed[0]) == 11 and store.due_in() is None
    now[0] += 0.1
    for i in range(30):  # a replay that never pauses: the oldest bar bounds the wait
        store.add(rec)
        assert store.due_in() == pytest.approx(max(0.0, min(0.02, 0.25 - i * 0.01)))
        now[0] += 0.01
    assert store.due_in() == 0.0


def test_closed_bar_store_takes_a_batch_larger_than_its_buffer_in_order():
    from aegis.processes.feed_outputs import ClosedBarStore

    sink = BarSink()
    store = ClosedBarStore(sink, {1: "BTCUSDT"}, capacity=4)
    records = np.zeros(10, BAR_DTYPE)
    records["open_time_ms"] = np.arange(10)
    store.add_many(records)
    assert sink.flushed == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert store.flush() == 2 and sink.flushed[-1] == [8, 9]


@pytest.mark.parametrize("size", [0, 1])
def test_closed_bar_store_batch_of_nothing_or_one_is_like_add(size):
    from aegis.processes.feed_outputs import ClosedBarStore

    store = ClosedBarStore(BarSink(), {1: "BTCUSDT"})
    store.add_many(np.zeros(size, BAR_DTYPE))
    assert (store.due_in() is None) == (size == 0)
