"""The whole feed pipeline over real sockets: simulator → feed → real ring + PostgreSQL.

The simulator replays recorded 1m bars (300 symbols, five real series and derived ones) at 1200x
real time while faults are injected; the assertions compare what
reached the ring and ``market_data`` with the simulator's own series, bar for bar.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import asyncpg
import numpy as np
from feed_support import DAY2, MINUTE, fast_options, feed_rig, sim_config

from aegis.records import BAR_BACKFILLED, BAR_CLOSED

WINDOW_MIN = 120  # bars checked per symbol, on top of the 30 bars of initial history
TAIL_MIN = 15  # recorded bars served after the window, so the stream keeps flowing


def expected_times(rig, symbol: str, first_ms: int, last_ms: int) -> list[int]:
    times = rig.sim.market.series[symbol].open_time
    return [int(t) for t in times if first_ms <= t <= last_ms]


def assert_ring_exactly_once_in_order(rig, last_ms: int) -> dict[int, list[int]]:
    pairs = rig.ring_pairs()
    per_symbol: dict[int, list[int]] = {}
    for sid, open_ms in pairs.tolist():
        per_symbol.setdefault(sid, []).append(open_ms)
    assert set(per_symbol) == set(rig.ids.values())
    for symbol, sid in rig.ids.items():
        times = per_symbol[sid]
        assert all(b > a for a, b in itertools.pairwise(times)), symbol  # in order, once each
        window = [t for t in times if t <= last_ms]
        assert window == expected_times(rig, symbol, times[0], last_ms), symbol
    return per_symbol


async def stored_times(dsn: str, symbol: str, first_ms: int, last_ms: int) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT open_time_ms FROM market_data WHERE symbol = $1 AND timeframe = '1m'"
            " AND open_time_ms BETWEEN $2 AND $3 ORDER BY open_time_ms",
            symbol, first_ms, last_ms,
        )  # fmt: skip
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def drop_random_connections(
    sim, count: int, rng: random.Random, hold: asyncio.Event | None = None
) -> int:
    """Abort ``count`` live stream connections (no close frame), one at a random moment each.

    No drop happens while ``hold`` is set: a drop during a stall would reconnect the shard and
    restart its silence clock, so the stall could never be seen as silence.
    """
    dropped = 0
    while dropped < count:
        await asyncio.sleep(rng.uniform(0.02, 0.15))
        if hold is not None and hold.is_set():
            continue
        live = [c for c in sim.streams.connections if not c.closed]
        if live:
            rng.choice(live).abort("test: random drop")
            dropped += 1
    return dropped


async def test_feed_300_symbols_with_drops_stall_and_24h_cut_stores_every_closed_bar_once(
    pg_dsn, tmp_path
):
    # The simulator cuts connections after 40 simulated minutes (its 24 h lifetime, scaled);
    # the feed replaces them with overlap at 30, measured on the simulator's clock.
    # 50 drops in ~6 s of wall time need ~1,500 klines requests: the REST weight limit is
    # scaled up like the clock (real Binance: 6,000 per minute for a whole day of this).
    config = sim_config(
        300, WINDOW_MIN + TAIL_MIN, connection_lifetime_ms=40 * MINUTE, weight_limit_1m=20_000
    )
    last_ms = DAY2 + (WINDOW_MIN - 1) * MINUTE
    options = fast_options(max_connection_age_s=30 * 60)
    async with feed_rig(config, pg_dsn, tmp_path, options=options, sim_clock_ages=True) as rig:
        hold = asyncio.Event()
        drops = asyncio.create_task(drop_random_connections(rig.sim, 50, random.Random(3), hold))
        rig.sim.clock.resume()
        while rig.sim.clock.now_ms() < DAY2 + 50 * MINUTE:
            await asyncio.sleep(0.01)
        hold.set()
        rig.sim.faults.stall(2.0)  # longer than the 1 s silence deadline
        await asyncio.sleep(2.2)
        hold.clear()
        assert await rig.wait_published_through(last_ms, timeout=60)
        assert await asyncio.wait_for(drops, 30) == 50
        stats = rig.feed.stats()
    assert rig.sim.faults.injected["stall"] == 1
    assert stats["silences"] >= 1
    assert stats["replacements"] >= 1
    assert stats["losses"] >= 50
    assert stats["rejected"] == {}
    per_symbol = assert_ring_exactly_once_in_order(rig, last_ms)
    for symbol, sid in rig.ids.items():
        first = per_symbol[sid][0]
        stored = await stored_times(pg_dsn, symbol, first, last_ms)
        assert stored == expected_times(rig, symbol, first, last_ms), symbol
    assert rig.writer.stats.dead_lettered_rows == 0
    # Drops, the stall and the cut all needed REST backfills, within the weight budget.
    assert stats["backfill_bars"] > 0
    klines = rig.sim.request_log.entries("/api/v3/klines")
    assert klines and all(e.status == 200 for e in klines)
    assert max(e.used_weight for e in rig.sim.request_log.entries()) <= rig.budget.cap


async def test_feed_connection_cut_without_replacement_is_backfilled(pg_dsn, tmp_path):
    config = sim_config(20, 60 + TAIL_MIN, connection_lifetime_ms=15 * MINUTE)
    last_ms = DAY2 + 59 * MINUTE
    async with feed_rig(config, pg_dsn, tmp_path) as rig:  # replacement never due: 23.5 h
        rig.sim.clock.resume()
        assert await rig.wait_published_through(last_ms, timeout=30)
        stats = rig.feed.stats()
    assert stats["replacements"] == 0
    assert stats["losses"] >= 3  # cut at 15, 30, 45 simulated minutes
    assert_ring_exactly_once_in_order(rig, last_ms)


async def test_feed_backfilled_and_streamed_bars_carry_their_flags(pg_dsn, tmp_path):
    async with feed_rig(sim_config(2, 10 + TAIL_MIN), pg_dsn, tmp_path) as rig:
        rig.sim.clock.resume()
        assert await rig.wait_published_through(DAY2 + 9 * MINUTE, timeout=20)
    bars = np.concatenate(rig.read)
    assert np.all(bars["flags"] & BAR_CLOSED)
    history = bars[bars["open_time_ms"] < DAY2 - MINUTE]
    assert len(history) and np.all(history["flags"] & BAR_BACKFILLED)
    live = bars[(bars["flags"] & BAR_BACKFILLED) == 0]
    assert len(live) and np.all(live["recv_ns"] > 0)
