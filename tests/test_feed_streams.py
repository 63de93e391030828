"""Stream connections and REST discipline of the feed, over real sockets against the simulator."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
from aiohttp import WSMsgType
from feed_support import DAY2, MINUTE, feed_rig, sim_config
from test_feed_pipeline import assert_ring_exactly_once_in_order
from ws_support import run_shard_on, server_frame

from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.streams import StreamSettings, StreamShard
from aegis.binance.ws_limits import ConnectLimiter

TAIL = 20


def _frames_sink():
    frames: list[bytes] = []
    return frames, lambda frame, recv_ns: frames.append(frame) and False


async def test_shard_answers_server_pings_with_echoed_pongs_and_keeps_its_connection():
    # Pings every 0.5 s (wall), 1.5 s to answer each: the test spans several of them.
    config = sim_config(2, 30, ping_interval_s=0.5, pong_timeout_s=1.5)
    async with BinanceSimulator(config) as sim:
        frames, on_frame = _frames_sink()
        shard = StreamShard(
            sim.ws_url, ["btcusdt@kline_1m"], on_frame, lambda s: None, ConnectLimiter(),
            StreamSettings(silence_deadline_s=30),
        )  # fmt: skip
        task = asyncio.create_task(shard.run())
        await asyncio.wait_for(shard.connected.wait(), 10)
        # Control: a client that does not answer pings is closed by the simulator with 1008.
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(sim.stream_url(["ethusdt@kline_1m"]), autoping=False) as mute,
        ):
            sim.clock.resume()
            closed_code = None
            pings = 0
            async for msg in mute:
                if msg.type == WSMsgType.PING:
                    pings += 1
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    closed_code = mute.close_code
                    break
            closed_code = closed_code or mute.close_code
        await asyncio.sleep(1.0)
        conns = list(sim.streams.connections)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert pings >= 1 and closed_code == 1008
    assert shard.connects == 1 and shard.losses == 0  # its pongs echoed every ping
    assert len(conns) == 1 and conns[0].frames_sent > 0 and frames


async def test_frames_are_stamped_when_read_from_the_socket_not_when_handed_on():
    # B and C arrive in one TCP write 0.1 s after A; the handler is slow (40 ms per frame).
    # Stamped when handed on, C would be 40 ms after B; its bytes came in with B's.
    async def script(reader, writer):
        writer.write(server_frame(b'"A"'))
        await asyncio.sleep(0.1)
        writer.write(server_frame(b'"B"') + server_frame(b'"C"'))

    stamps: dict[bytes, int] = {}

    def on_frame(frame: bytes, recv_ns: int) -> bool:
        stamps[frame] = recv_ns
        time.sleep(0.04)
        return False

    await run_shard_on(script, on_frame, lambda: len(stamps) >= 3)
    assert sorted(stamps) == [b'"A"', b'"B"', b'"C"']
    assert stamps[b'"C"'] == stamps[b'"B"']
    assert stamps[b'"B"'] - stamps[b'"A"'] >= 90_000_000


async def test_fragmented_message_is_handed_on_whole_and_in_order():
    async def script(reader, writer):
        first, last = bytes([0x01, 3]) + b'"B1', bytes([0x80, 3]) + b'B2"'  # text, continuation
        writer.write(server_frame(b'"A"') + first)
        await asyncio.sleep(0.05)
        writer.write(last + server_frame(b'"C"'))

    frames, on_frame = _frames_sink()
    shard = await run_shard_on(script, on_frame, lambda: len(frames) >= 3)
    assert frames == [b'"A"', b'"B1B2"', b'"C"']
    assert shard.losses == 0


async def test_a_failing_frame_handler_is_counted_and_the_stream_goes_on():
    async def script(reader, writer):
        writer.write(b"".join(server_frame(f'"{i}"'.encode()) for i in range(6)))

    handed: list[bytes] = []

    def on_frame(frame: bytes, recv_ns: int) -> bool:
        handed.append(frame)
        if frame in (b'"1"', b'"4"'):
            raise RuntimeError("a bug in the handler")
        return False

    shard = await run_shard_on(script, on_frame, lambda: len(handed) >= 6)
    assert len(handed) == 6 and shard.handler_errors == 2 and shard.losses == 0


async def test_shard_subscribe_is_paced_under_binance_message_limit():
    async with BinanceSimulator(sim_config(5, 30)) as sim:
        _, on_frame = _frames_sink()
        shard = StreamShard(
            sim.ws_url, ["btcusdt@kline_1m"], on_frame, lambda s: None, ConnectLimiter(),
            StreamSettings(silence_deadline_s=30),
        )  # fmt: skip
        task = asyncio.create_task(shard.run())
        await asyncio.wait_for(shard.connected.wait(), 10)
        names = ["ethusdt@kline_1m", "solusdt@kline_1m", "adausdt@kline_1m", "dogeusdt@kline_1m"]
        started = time.monotonic()
        sent = await shard.subscribe(names * 2 + names, per_message=1)  # 4 new, one per message
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)
        subscribed = sorted(sim.streams.listeners)
        # Control: the same messages unpaced get a connection closed for "Too many requests".
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(sim.stream_url(["btcusdt@kline_1m"])) as burst,
        ):
            for i in range(8):
                message = {"method": "SUBSCRIBE", "params": [names[i % 4]], "id": i}
                await burst.send_str(orjson.dumps(message).decode())
            async for msg in burst:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    break
            burst_code = burst.close_code
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sent == 4 and elapsed >= 3 / 3.0 - 0.05  # 3.0 messages/s at most
    assert shard.losses == 0 and set(names) <= set(subscribed)
    assert burst_code == 1008


async def test_feed_malformed_frames_are_counted_and_the_feed_stays_alive(pg_dsn, tmp_path):
    config = sim_config(5, 40 + TAIL)
    async with feed_rig(config, pg_dsn, tmp_path) as rig:
        rig.sim.faults.malformed_every_n_frames = 25
        rig.sim.clock.resume()
        assert await rig.wait_published_through(DAY2 + 39 * MINUTE, timeout=30)
        stats = rig.feed.stats()
    injected = rig.sim.faults.injected["malformed"]
    assert injected >= 8
    assert sum(stats["rejected"].values()) == injected
    assert {"not JSON", "open is not finite and positive", "high below open or close"} <= set(
        stats["rejected"]
    )
    assert stats["losses"] == 0 and stats["handler_errors"] == 0
    assert_ring_exactly_once_in_order(rig, DAY2 + 39 * MINUTE)


async def test_feed_silence_reconnects_and_backfills_what_closed_meanwhile(pg_dsn, tmp_path):
    config = sim_config(5, 90 + TAIL)
    async with feed_rig(config, pg_dsn, tmp_path) as rig:
        rig.sim.clock.resume()
        assert await rig.wait_published_through(DAY2 + 10 * MINUTE, timeout=30)
        before = rig.feed.backfill.requests_sent
        rig.sim.faults.stall(2.0)  # 40 simulated minutes of nothing; deadline 1 s
        assert await rig.wait_published_through(DAY2 + 89 * MINUTE, timeout=30)
        stats = rig.feed.stats()
    assert stats["silences"] >= 1 and stats["losses"] >= 1
    assert rig.feed.backfill.requests_sent > before
    assert_ring_exactly_once_in_order(rig, DAY2 + 89 * MINUTE)


async def test_feed_sends_no_rest_request_during_a_418_ban(pg_dsn, tmp_path):
    config = sim_config(5, 60 + TAIL)
    async with feed_rig(config, pg_dsn, tmp_path) as rig:
        rig.sim.clock.resume()
        assert await rig.wait_published_through(DAY2 + 5 * MINUTE, timeout=30)
        banned_at = time.time()
        rig.sim.faults.ban(4.0)
        ban_end = banned_at + 4.0
        rig.sim.faults.stall(1.5)  # a silent hole of ~30 simulated minutes: backfill needed
        assert await rig.wait_published_through(DAY2 + 59 * MINUTE, timeout=30)
        log = rig.sim.request_log.entries(since=banned_at)
    answered_418 = [e for e in log if e.status == 418]
    assert answered_418
    first = answered_418[0].wall_time
    # Only requests already in flight together (one per backfill worker) meet the ban; once
    # the first 418 is known, no process sends anything until the ban has ended.
    assert len(answered_418) <= 4
    assert all(e.wall_time - first < 0.25 for e in answered_418)
    during = [e for e in log if first + 0.25 <= e.wall_time < ban_end - 0.01]
    assert during == []
    assert any(e.wall_time >= ban_end - 0.01 and e.status == 200 for e in log)
    assert_ring_exactly_once_in_order(rig, DAY2 + 59 * MINUTE)


async def test_feed_weight_budget_binds_and_is_never_exceeded(pg_dsn, tmp_path):
    # A tiny budget: 100 weight per 5 s window (the simulator's window is 5 s too).
    config = sim_config(40, 30 + TAIL, weight_limit_1m=200, rate_window_s=5.0)
    async with feed_rig(
        config, pg_dsn, tmp_path, budget_share=0.5, budget_window_s=5.0
    ) as rig:  # fmt: skip
        rig.sim.clock.resume()
        await asyncio.sleep(0.5)
        rig.sim.drop_stream_connections()
        assert await rig.wait_published_through(DAY2 + 29 * MINUTE, timeout=40)
    log = rig.sim.request_log.entries()
    assert all(e.status == 200 for e in log)
    assert max(e.used_weight for e in log) <= rig.budget.cap == 100
    windows = {int(e.wall_time // 5) for e in log}
    assert len(windows) >= 2  # the budget made the backfill wait for a new window
    assert_ring_exactly_once_in_order(rig, DAY2 + 29 * MINUTE)
