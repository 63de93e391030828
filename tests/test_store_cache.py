"""Specification of the three-tier hot cache, with a real Redis that dies and comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis

from aegis.store import AccountSnapshot, Database, HotCache, LatestBar
from aegis.store.embedded import EmbeddedRedis

T0 = 1_679_000_040_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _symbol() -> str:
    return "C" + uuid.uuid4().hex[:8].upper() + "USDT"


async def _insert_bar(dsn: str, symbol: str, open_time_ms: int, close: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO market_data (symbol, timeframe, open_time_ms, open, high, low, close, volume)"
            " VALUES ($1, '1m', $2, $3, $3, $3, $3, 1)",
            symbol, open_time_ms, close,
        )  # fmt: skip
    finally:
        await conn.close()


async def test_hot_cache_latest_bar_fills_l1_then_l2_from_postgres(
    pg_migrated_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    symbol = _symbol()
    await _insert_bar(pg_migrated_dsn, symbol, T0, 10.0)
    await _insert_bar(pg_migrated_dsn, symbol, T0 + 60_000, 11.0)
    clock = FakeClock()
    first = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix, clock=clock)
    bar = await first.latest_bar(symbol, "1m")
    again = await first.latest_bar(symbol, "1m")
    assert (
        bar == again and bar is not None and bar.open_time_ms == T0 + 60_000 and bar.close == 11.0
    )
    assert (first.stats.l3_hits, first.stats.l1_hits) == (1, 1)
    second = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix, clock=clock)
    assert await second.latest_bar(symbol, "1m") == bar
    assert (second.stats.l2_hits, second.stats.l3_hits) == (1, 0)
    ttl = redis.Redis.from_url(redis_url).ttl(f"{redis_prefix}bar:{symbol}:1m")
    assert 3500 < ttl <= 3600
    assert await first.latest_bar("NOSUCHUSDT", "1m") is None and first.stats.misses == 1
    for cache in (first, second):
        await cache.close()
        await cache.database.close()


async def test_hot_cache_account_state_roundtrips_decimals_exactly_through_redis(
    pg_migrated_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    snap = AccountSnapshot(
        "paper", T0, Decimal("10000.12345678"), Decimal("9000.1"), Decimal("10001"), 2,
        {"USDT": {"free": "9000.1", "locked": "0"}},
    )  # fmt: skip
    writer = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix)
    await writer.put_account_state(snap)
    reader = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix)
    assert await reader.account_state("paper") == snap and reader.stats.l2_hits == 1
    account = "acct-" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(pg_migrated_dsn)
    try:
        await conn.execute(
            "INSERT INTO account_state (account, ts_ms, equity, cash, peak_equity, open_positions)"
            " VALUES ($1, 1, 5.5, 5.5, 6, 0), ($1, 2, 7.25, 7.25, 7.25, 1)",
            account,
        )
    finally:
        await conn.close()
    from_db = await reader.account_state(account)  # L3: the newest snapshot
    assert from_db is not None and (from_db.ts_ms, from_db.equity) == (2, Decimal("7.25"))
    assert reader.stats.l3_hits == 1
    for cache in (writer, reader):
        await cache.close()
        await cache.database.close()


async def test_hot_cache_redis_killed_keeps_serving_then_recovers_by_itself(
    pg_migrated_dsn: str, server_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(server_home / "redis")
    url = server.start()
    symbol = _symbol()
    await _insert_bar(pg_migrated_dsn, symbol, T0, 10.0)
    clock = FakeClock()
    cache = HotCache(Database(pg_migrated_dsn), url, prefix="t:", clock=clock, redis_retry_s=1.0)
    try:
        assert (await cache.latest_bar(symbol, "1m")).close == 10.0  # L3, then cached
        pid = server.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await _insert_bar(pg_migrated_dsn, symbol, T0 + 60_000, 11.0)
        clock.now += 5  # L1 expired: the read must reach past the dead Redis
        with caplog.at_level(logging.WARNING, logger="aegis.store.cache"):
            served = [await cache.latest_bar(symbol, "1m") for _ in range(3)]
            clock.now += 5
            await cache.put_bar(LatestBar(symbol, "1m", T0 + 120_000, 12.0, 12.0, 12.0, 12.0, 1.0))
        assert served[0].close == 11.0  # from PostgreSQL
        assert all(b == served[0] for b in served)
        assert caplog.text.count("redis unavailable") == 1  # logged once, not per call
        assert cache.stats.redis_failures >= 2 and not cache.stats.redis_up

        server.start()
        clock.now += 5  # past the retry interval
        with caplog.at_level(logging.WARNING, logger="aegis.store.cache"):
            latest = LatestBar(symbol, "1m", T0 + 180_000, 13.0, 13.0, 13.0, 13.0, 1.0)
            await cache.put_bar(latest)
        assert cache.stats.redis_up and "redis back" in caplog.text
        raw = redis.Redis.from_url(url).get(f"t:bar:{symbol}:1m")
        assert raw is not None and b"13.0" in raw
    finally:
        await cache.close()
        await cache.database.close()
        server.stop()


async def test_hot_cache_writer_task_cancelled_mid_command_always_stops(
    pg_migrated_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    # redis-py sometimes finishes a command whose task was cancelled, or reports a timeout
    # instead: the feed's bar store then never stopped at shutdown. Cancel at many instants.
    cache = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix)

    async def keep_writing() -> None:
        i = 0
        while True:
            i += 1
            await cache.put_bar(LatestBar(f"S{i % 300}USDT", "1m", T0 + i, 1.0, 1.0, 1.0, 1.0, 1.0))

    still_running = 0
    for trial in range(400):
        task = asyncio.ensure_future(keep_writing())
        await asyncio.sleep(0.0002 * (trial % 13))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            still_running += 1
            break  # a task that swallowed its cancellation: the failure this test is about
        assert task.cancelled()
    assert still_running == 0
    await cache.close()
    await cache.database.close()


async def test_hot_cache_put_bars_sends_many_in_one_round_trip_and_skips_older_ones_like_put_bar(
    pg_migrated_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    cache = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix)
    newer = LatestBar("AUSDT", "1m", T0 + 60_000, 2.0, 2.0, 2.0, 2.0, 1.0)
    await cache.put_bar(newer)
    bars = [LatestBar(f"S{i}USDT", "1m", T0, 1.0, 1.0, 1.0, float(i), 1.0) for i in range(50)]
    older = LatestBar("AUSDT", "1m", T0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert await cache.put_bars([*bars, older]) == 50
    await cache.put_bar(older)  # one bar takes the same path
    assert await cache.latest_bar("AUSDT", "1m") == newer
    other = HotCache(Database(pg_migrated_dsn), redis_url, prefix=redis_prefix)  # empty L1
    assert await other.latest_bar("S49USDT", "1m") == bars[49]
    assert await other.latest_bar("AUSDT", "1m") == newer
    assert (other.stats.l2_hits, other.stats.l3_hits) == (2, 0)
    for c in (cache, other):
        await c.close()
        await c.database.close()
