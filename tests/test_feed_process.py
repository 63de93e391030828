"""The feed as a real process (``aegis.processes.feed:main``) against a simulator process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import uuid

import asyncpg
import numpy as np
import pytest
import redis
from feed_support import DAY2, MINUTE, migrated, run_feed_child

from aegis.binance.sim.process import SimulatorProcess
from aegis.config import Settings
from aegis.kernel.topology import ProcessConfig, RingBinding
from aegis.records import BAR_DTYPE
from aegis.ringbuffer import Ring

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


async def _stored(dsn: str) -> dict[str, list[int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT symbol, open_time_ms FROM market_data WHERE timeframe = '1m'"
            " ORDER BY symbol, open_time_ms"
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM kernel_events WHERE process = 'feed' AND event = 'universe'"
        )
    finally:
        await conn.close()
    out: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    for r in rows:
        out.setdefault(r["symbol"], []).append(r["open_time_ms"])
    out["_events"] = [events]
    return out


@pytest.fixture
def own_dsn(pg_admin_dsn):
    """A database of this test alone: the feed asks it what is stored, so nothing else may be."""
    name = f"aegis_test_feedproc_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield pg_admin_dsn.rpartition("/")[0] + "/" + name
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _start(config: ProcessConfig):
    proc = multiprocessing.get_context("spawn").Process(target=run_feed_child, args=(config,))
    proc.start()
    return proc


def _stop(proc, timeout: float = 20.0) -> int | None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode


async def test_feed_process_publishes_stores_caches_and_resumes_local_first(
    own_dsn, redis_url, redis_prefix, tmp_path
):
    await migrated(own_dsn)
    sim = SimulatorProcess([
        "--symbols", ",".join(SYMBOLS), "--from", str(DAY2 - 60 * MINUTE),
        "--to", str(DAY2 + 90 * MINUTE), "--start", str(DAY2), "--speed", "300",
        "--updates-per-bar", "2",
    ]).start()  # fmt: skip
    ring = Ring.create(f"aegis-test-feedproc-{uuid.uuid4().hex[:8]}", BAR_DTYPE, 1 << 12, 1)
    consumer = ring.consumer(0)
    settings = Settings().replace(
        home=tmp_path, database_url=own_dsn, redis_url=redis_url, redis_prefix=redis_prefix,
        rest_url=sim.rest_url, ws_url=sim.ws_url, symbols=SYMBOLS, log_level="WARNING",
    )  # fmt: skip
    config = ProcessConfig(
        settings, "feed", 0, "", 0, (RingBinding("market", ring.name, BAR_DTYPE, None),)
    )
    proc = None
    try:
        proc = _start(config)
        read = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            batch = consumer.poll()
            if len(batch):
                read.append(batch.copy())
                consumer.commit()
            bars = np.concatenate(read) if read else np.zeros(0, BAR_DTYPE)
            if len(bars) and np.all(
                [(bars["symbol_id"] == i).any() and bars["open_time_ms"][bars["symbol_id"] == i].max()
                 >= DAY2 + 15 * MINUTE for i in (1, 2, 3)]
            ):  # fmt: skip
                break
            await asyncio.sleep(0.05)
        assert _stop(proc) == 0
        stored = await _stored(own_dsn)
        bars = np.concatenate(read)
        for sid, symbol in enumerate(SYMBOLS, start=1):
            mine = bars["open_time_ms"][bars["symbol_id"] == sid].tolist()
            assert mine == sorted(set(mine)) and mine[-1] >= DAY2 + 15 * MINUTE
            assert set(mine) <= set(stored[symbol])  # what the ring saw is in market_data
            assert mine[0] <= DAY2  # start-up history came by REST (no bar stored before)
        assert stored["_events"] == [1]  # the universe was persisted
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.exists(f"{redis_prefix}universe")
            key = f"{redis_prefix}bar:BTCUSDT:1m"
            assert 0 < client.ttl(key) <= 3600
        finally:
            client.close()

        # Restart: each symbol resumes after its newest stored bar (local first).
        last = {s: stored[s][-1] for s in SYMBOLS}
        since = time.time()
        proc = _start(config)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            klines = [e for e in sim.request_log(since) if e["path"] == "/api/v3/klines"]
            if {e["params"]["symbol"] for e in klines} >= set(SYMBOLS):
                break
            await asyncio.sleep(0.1)
        assert _stop(proc) == 0
        first = {}
        for e in klines:
            first.setdefault(e["params"]["symbol"], int(e["params"]["startTime"]))
        assert first == {s: last[s] + MINUTE for s in SYMBOLS}
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
        sim.stop()
        del consumer
        ring.close()
