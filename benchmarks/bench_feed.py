"""Feed hot path: kline frames parsed, validated, sequenced and published into a real ring.

* ``pipeline_frames_per_s``: one process, one core, no network. Combined-stream kline frames for
  300 symbols (recorded 1m bars, prices scaled per symbol; 29 in-progress updates then the
  closing one per bar, Binance's 2 s cadence) go through ``KlineIntake.on_frame`` →
  ``BarSequencer`` → ``RingPublisher`` → a real shared-memory ``aegis.ringbuffer`` ring
  (in-progress updates conflated, closed bars published). A consumer drains the ring between
  chunks; its time is included. Median of 3 passes.
* ``burst_*``: one process, no network. A minute's close burst, the 300 closing frames read in
  one chunk of server frames, handed to a ``StampedConnection`` (past a real handshake) the way
  the socket does: frame splitting, the frames handed on in groups (``MAX_GROUP``, 16, first,
  each next group of the read twice as large up to ``LATER_GROUP_MAX``, 32), one
  compiled parse per group (``KlineIntake.on_frames``), sequencing, one ring publish per group,
  timed from the read to the last bar in the ring; and the same
  bursts through the per-frame path (``on_frame``) for comparison. 57 bursts, the first 3 left
  out.
* ``ws_*``: end to end over real sockets. The simulator runs in its own process at full speed
  (speed 0) with 300 symbols; ``MarketFeed`` in this process receives over WebSocket, parses,
  sequences and publishes closed bars into a real ring. ``ws_frames_per_s`` is frames received
  and handled per second (bounded by how fast the simulator process sends). Two latencies per
  closed bar published live, both ending at ``time.monotonic_ns()`` after the ring publish
  (recording starts once the start-up backfill is done: bars held for it wait by design):
  ``ws_recv_to_publish`` starts at the bar's receive stamp, when its frame's bytes were read
  from the socket, so it includes the wait behind the frames read with it (at full speed the
  feed is saturated and that wait is queueing, growing with the backlog);
  ``ws_handled_to_publish`` starts when the feed's handler got the frame (or, for the frames
  of one read handed on together, got them): the feed's own work (parse, validation,
  sequencing, publish).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from aegis.binance.intake import KlineIntake
from aegis.binance.market_feed import FeedOptions, MarketFeed
from aegis.binance.protocol import KlineParser, build_kline_frame
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sequencer import BarSequencer
from aegis.binance.sim.process import SimulatorProcess
from aegis.binance.sim.ws_connection import text_frame
from aegis.binance.streams import StreamSettings, _Connection
from aegis.binance.universe import select_universe
from aegis.binance.weight import WeightBudget
from aegis.binance.ws_reader import StampedConnection
from aegis.processes.feed_outputs import LatencyRecorder, RingPublisher
from aegis.records import BAR_CLOSED, BAR_DTYPE
from aegis.ringbuffer import Ring

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data"
N_SYMBOLS = 300
UPDATES_PER_BAR = 30
DAY2 = 1679097600000
MINUTE = 60_000


def _recorded(coin: str, n: int) -> np.ndarray:
    path = DATA / "klines" / f"binance_spot_{coin}USDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        next(fh)
        rows = [[float(x) for x in line.split(",")] for _, line in zip(range(n), fh, strict=False)]
    return np.array(rows)


def _frames(
    minutes: int, updates_per_bar: int = UPDATES_PER_BAR
) -> tuple[list[bytes], dict[str, int]]:
    names = [f"S{i:03d}USDT" for i in range(N_SYMBOLS)]
    ids = {name: i + 1 for i, name in enumerate(names)}
    sources = [_recorded(c, minutes) for c in ("BTC", "ETH", "SOL", "ADA", "DOGE")]
    rec = np.zeros(1, dtype=BAR_DTYPE)[0]
    frames = []
    for m in range(minutes):
        for k in range(1, updates_per_bar + 1):
            for i, name in enumerate(names):
                t, o, h, lo, c, v = sources[i % 5][m]
                scale = 1 + i / 1000
                rec["open_time_ms"] = int(t)
                rec["open"], rec["high"], rec["low"], rec["close"] = (
                    o * scale, h * scale, lo * scale, c * scale,
                )  # fmt: skip
                rec["volume"], rec["quote_volume"] = v, v * c * scale
                rec["taker_buy_volume"], rec["taker_buy_quote_volume"] = v / 2, v * c * scale / 2
                rec["trades"] = 100
                rec["flags"] = BAR_CLOSED if k == updates_per_bar else 0
                frames.append(build_kline_frame(rec, name, "1m", int(t) + k * 2000 - 1))
    return frames, ids


def bench_pipeline(minutes: int = 6, passes: int = 3) -> dict:
    frames, ids = _frames(minutes)
    first_open = int(_recorded("BTC", 1)[0, 0])
    rates = []
    closed = 0
    for p in range(passes):
        with Ring.create(f"aegis-bench-feed-{os.getpid()}-{p}", BAR_DTYPE, 1 << 16, 1) as ring:
            producer, consumer = ring.producer(), ring.consumer(0)
            publisher = RingPublisher(producer)
            sequencer = BarSequencer(N_SYMBOLS + 1, MINUTE, publisher.publish, lambda sid: None)
            for sid in ids.values():
                sequencer.start_at(sid, first_open)
            intake = KlineIntake(KlineParser(ids), sequencer)
            on_frame, clock = intake.on_frame, time.monotonic_ns
            chunk = 9000
            t0 = time.perf_counter()
            for start in range(0, len(frames), chunk):
                for frame in frames[start : start + chunk]:
                    on_frame(frame, clock())
                if len(consumer.poll()):
                    consumer.commit()
            rates.append(len(frames) / (time.perf_counter() - t0))
            closed = publisher.published
            assert publisher.backlog == 0 and intake.rejects.total == 0
            assert closed == minutes * N_SYMBOLS
            del producer, consumer
    return {
        "pipeline_frames_per_s": statistics.median(rates),
        "pipeline_frames_per_s_best": max(rates),
        "pipeline_us_per_frame": 1e6 / statistics.median(rates),
        "pipeline_closed_bars_per_pass": closed,
    }


async def _ws_run(seconds: float) -> dict:
    sim = SimulatorProcess([
        "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT,ADAUSDT,DOGEUSDT", "--symbol-count", str(N_SYMBOLS),
        "--from", str(DAY2 - 60 * MINUTE), "--to", str(DAY2 + 24 * 60 * MINUTE),
        "--start", str(DAY2), "--speed", "0", "--updates-per-bar", str(UPDATES_PER_BAR),
        "--weight-limit", "60000",
    ]).start()  # fmt: skip
    home = tempfile.mkdtemp(prefix="aegis-bench-feed-")
    ring = Ring.create(f"aegis-bench-feedws-{os.getpid()}", BAR_DTYPE, 1 << 16, 1)
    producer, consumer = ring.producer(), ring.consumer(0)
    budget = WeightBudget.for_home(home, limit=60000)
    rest = BinanceRestClient(sim.rest_url, budget)
    try:
        info, tickers = await rest.exchange_info(), await rest.ticker_24hr()
        universe = select_universe(info, tickers, top_n=N_SYMBOLS)
        latency = LatencyRecorder(1 << 18)
        publisher = RingPublisher(producer, latency=latency)
        options = FeedOptions(
            streams=StreamSettings(silence_deadline_s=30), initial_history_bars=10
        )
        handled = LatencyRecorder(1 << 18)
        handed_ns = [0]

        def publish(record: np.ndarray) -> None:
            publisher.publish(record)
            handled.add(time.monotonic_ns() - handed_ns[0])

        def publish_many(records: np.ndarray) -> None:  # as the feed process wires it
            publisher.publish_many(records)
            done_ns = time.monotonic_ns()
            for _ in range(len(records)):
                handled.add(done_ns - handed_ns[0])

        feed = MarketFeed(sim.ws_url, rest, universe.ids(), publish, on_closed_many=publish_many,
                          options=options)  # fmt: skip
        for shard in feed.streams.shards:  # measuring only: the feed offers no hook there
            shard._on_frame = _timed_handler(shard._on_frame, handed_ns)
            shard._on_frames = _timed_handler(shard._on_frames, handed_ns)

        async def drain() -> None:
            while True:
                if len(consumer.poll()):
                    consumer.commit()
                await asyncio.sleep(0.001)

        tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(drain())]
        feed.start({})
        await feed.streams.wait_connected(30)
        await asyncio.sleep(0.5)
        await feed.backfill.wait_idle(60)
        latency.count = handled.count = 0  # start-up bars waited for the backfill by design
        frames0, t0 = feed.intake.frames, time.perf_counter()
        await asyncio.sleep(seconds)
        frames, elapsed = feed.intake.frames - frames0, time.perf_counter() - t0
        stats = feed.stats()
        await feed.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        lat_us = latency.values() / 1000.0
        handled_us = handled.values() / 1000.0
    finally:
        await rest.close()
        budget.close()
        sim.stop()
        ring.close()
    return {
        "ws_frames_per_s": frames / elapsed,
        "ws_symbols": len(universe),
        "ws_closed_bars_timed": len(lat_us),
        "ws_recv_to_publish_us_p50": _pct(lat_us, 50),
        "ws_recv_to_publish_us_p99": _pct(lat_us, 99),
        "ws_recv_to_publish_us_max": _pct(lat_us, 100),
        "ws_handled_to_publish_us_p50": _pct(handled_us, 50),
        "ws_handled_to_publish_us_p99": _pct(handled_us, 99),
        "ws_rejected_frames": sum(stats["rejected"].values()),
        "ws_connection_losses": stats["losses"],
    }


def _timed_handler(handler, handed_ns: list[int]):
    """``on_frame`` or ``on_frames`` that first notes when it was handed its frames (into
    ``handed_ns[0]``): for the frames of one read, every bar counts from that moment."""

    def timed(*args) -> bool:
        handed_ns[0] = time.monotonic_ns()
        return handler(*args)

    return timed


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _closed_bursts(minutes: int) -> tuple[list[bytes], dict[str, int], int]:
    """Per minute, the closing frames of all symbols as one chunk of server frames."""
    frames, ids = _frames(minutes, updates_per_bar=1)
    chunks = [b"".join(text_frame(f.decode()) for f in frames[i : i + N_SYMBOLS])
              for i in range(0, len(frames), N_SYMBOLS)]  # fmt: skip
    return chunks, ids, int(_recorded("BTC", 1)[0, 0])


def _stamped_after_handshake(on_messages) -> StampedConnection:
    """A ``StampedConnection`` past a real handshake, fed by hand (no socket)."""
    protocol = ClientProtocol(parse_uri("ws://bench.invalid/stream"))
    request = protocol.connect()
    protocol.send_request(request)
    protocol.data_to_send()  # the request is not sent anywhere
    ws = StampedConnection(protocol, on_messages=on_messages)
    accept = base64.b64encode(hashlib.sha1(
        request.headers["Sec-WebSocket-Key"].encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    ).digest())  # fmt: skip
    ws.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
    return ws


async def _burst_run(chunks: list[bytes], ids: dict[str, int], first_open: int,
                     batched: bool) -> list[float]:  # fmt: skip
    with Ring.create(f"aegis-bench-burst-{os.getpid()}-{int(batched)}", BAR_DTYPE, 1 << 12,
                     1) as ring:  # fmt: skip
        producer, consumer = ring.producer(), ring.consumer(0)
        publisher = RingPublisher(producer)
        sequencer = BarSequencer(N_SYMBOLS + 1, MINUTE, publisher.publish, lambda sid: None,
                                 publish_many=publisher.publish_many if batched else None)  # fmt: skip
        for sid in ids.values():
            sequencer.start_at(sid, first_open)
        intake = KlineIntake(KlineParser(ids), sequencer)
        KlineParser(ids).warm()
        # What a shard hands its connection (``on_frames`` only where the feed uses it).
        conn = _Connection(intake.on_frame, intake.on_frames if batched else None,
                           lambda: None, 0.0)  # fmt: skip
        ws = _stamped_after_handshake(conn.deliver)
        burst_ms = []
        for chunk in chunks:
            t0 = time.perf_counter_ns()
            ws.data_received(chunk)
            burst_ms.append((time.perf_counter_ns() - t0) / 1e6)
            taken = 0
            while taken < N_SYMBOLS:  # a read stops at the ring buffer's end
                taken += len(consumer.poll())
                consumer.commit()
            assert taken == N_SYMBOLS
        assert publisher.published == len(chunks) * N_SYMBOLS and intake.rejects.total == 0
        del producer, consumer
    return burst_ms[3:]  # the first bursts warm caches


def bench_burst(minutes: int = 60) -> dict:
    """A minute's close burst (300 closed frames read in one chunk) through the feed's path:
    frame splitting, one compiled parse and one ring publish per group of frames; and, for
    comparison in the same run, the same bursts through the per-frame path (``on_frame``, what
    a frame read alone takes). Before 2026-12-07 every frame took that path, after websockets'
    own frame parsing (~5 µs a frame, not in this figure)."""
    chunks, ids, first_open = _closed_bursts(minutes)
    out = {"burst_frames": N_SYMBOLS}
    for label, batched in (("burst", True), ("burst_frame_by_frame", False)):
        ms = np.array(asyncio.run(_burst_run(chunks, ids, first_open, batched)))
        out[f"{label}_ms_p50"] = float(np.percentile(ms, 50))
        out[f"{label}_ms_p99"] = float(np.percentile(ms, 99))
        out[f"{label}_us_per_frame"] = float(np.percentile(ms, 50)) * 1000 / N_SYMBOLS
    return out


def bench_ws(seconds: float = 8.0) -> dict:
    return asyncio.run(_ws_run(seconds))


def run() -> dict:
    results = {**bench_pipeline(), **bench_burst(), **bench_ws()}
    print("feed (300 symbols)")
    print(f"  pipeline frames/s (parse+validate+sequence+ring)  {results['pipeline_frames_per_s']:>10,.0f}"
          "  (target >= 50,000)")  # fmt: skip
    print(
        f"  pipeline per frame                                {results['pipeline_us_per_frame']:>10.2f} us"
    )
    for label, name in (("burst", "close burst of 300 in one read"),
                        ("burst_frame_by_frame", "same, frame by frame (on_frame)")):  # fmt: skip
        print(f"  {name:<34}p50 {results[f'{label}_ms_p50']:>6.3f} ms  p99 "
              f"{results[f'{label}_ms_p99']:>6.3f} ms  ({results[f'{label}_us_per_frame']:.2f} us/frame)")  # fmt: skip
    print(
        f"  websocket frames/s received and handled           {results['ws_frames_per_s']:>10,.0f}"
    )
    print(f"  ws handed to feed -> ring publish p50             {results['ws_handled_to_publish_us_p50']:>10.1f} us")  # fmt: skip
    print(f"  ws handed to feed -> ring publish p99             {results['ws_handled_to_publish_us_p99']:>10.1f} us"
          "  (target <= 200)")  # fmt: skip
    print(f"  ws socket read -> ring publish p50 (saturated)    {results['ws_recv_to_publish_us_p50']:>10.1f} us")  # fmt: skip
    print(f"  ws socket read -> ring publish p99 (saturated)    {results['ws_recv_to_publish_us_p99']:>10.1f} us")  # fmt: skip
    print(
        f"  closed bars timed                                 {results['ws_closed_bars_timed']:>10,d}"
    )
    return results


if __name__ == "__main__":
    run()
