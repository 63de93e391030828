"""Benchmark of the store: market_data ingest and the Redis tier of the hot cache.

Data: the bundled real 1m klines of BTC, ETH and SOL (~198k bars), as BAR_DTYPE arrays.
Every figure goes through the production code over real servers (the machine's PostgreSQL
and Redis when reachable, else the embedded ones), into a scratch database that is dropped.

- ``copy``: ``MarketDataWriter.write`` (validation) → ``DurableWriter`` (COPY straight into the
  partitioned table) → committed, timed from the first submit until ``flush`` returns.
- ``replay``: the same bars again: every batch conflicts, so each goes through the idempotent
  staged path (COPY into a temp table + INSERT … ON CONFLICT DO NOTHING); nothing is inserted.
- ``executemany``: the plain alternative, asyncpg ``executemany`` of
  ``INSERT … ON CONFLICT DO NOTHING`` with the same validated row tuples, into an emptied
  table (on a subset, it is slow).
- cache: ``HotCache.put_bar`` (L1 + Redis SET) and ``HotCache.latest_bar`` with L1 disabled
  (Redis GET + decode); per-call latency in µs.
- ``order_write``: one ``orders`` row submitted to a running ``DurableWriter`` until committed.

Run alone: ``python -m benchmarks.bench_store``; ``AEGIS_BENCH_QUICK=1`` uses fewer rows.
Keys are documented in ``benchmarks/README.md`` (section "store").
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import numpy as np

from aegis.records import BAR_DTYPE
from aegis.schema.migrator import migrate
from aegis.store import BarBatch, Database, DurableWriter, HotCache, LatestBar, MarketDataWriter
from aegis.store.bars import validate_bars
from aegis.store.embedded import EmbeddedPostgres, EmbeddedRedis
from aegis.store.tables import table_spec

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CHUNK = 5_000  # bars per MarketDataWriter.write call, like a feed flushing every few seconds


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _load(symbol: str) -> np.ndarray:
    path = DATA / f"binance_spot_{symbol}_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1)
    bars = np.zeros(len(table), dtype=BAR_DTYPE)
    bars["open_time_ms"] = table[:, 0].astype(np.int64)
    for j, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        bars[name] = table[:, j]
    for name in ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
        bars[name] = np.nan
    bars["trades"] = -1
    return bars


def _pct(samples_ns: list[int]) -> dict:
    a = np.asarray(samples_ns[len(samples_ns) // 10 :], dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max()), "n": int(a.size)}  # fmt: skip


async def _ingest(dsn: str, spill: Path, batches: list[BarBatch]) -> tuple[float, object]:
    writer = DurableWriter(Database(dsn), spill, batch_rows=20_000, max_queued_rows=1_000_000)
    await writer.start()
    md = MarketDataWriter(writer)
    t0 = time.perf_counter()
    for batch in batches:
        for k in range(0, len(batch.bars), CHUNK):
            md.write(BarBatch(batch.symbol, batch.timeframe, batch.bars[k : k + CHUNK]))
            await asyncio.sleep(0)  # let the writer run, as a live feed would
    assert await writer.flush(600), "ingest did not finish"
    elapsed = time.perf_counter() - t0
    stats = writer.stats
    await writer.close()
    return elapsed, stats


async def _executemany(dsn: str, rows: list[tuple]) -> float:
    spec = table_spec("market_data")
    cols = ", ".join(spec.columns)
    marks = ", ".join(f"${i + 1}" for i in range(len(spec.columns)))
    sql = f"INSERT INTO market_data ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE market_data")
        t0 = time.perf_counter()
        for k in range(0, len(rows), 20_000):
            async with conn.transaction():
                await conn.executemany(sql, rows[k : k + 20_000])
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def _cache(dsn: str, redis_url: str, n: int) -> dict:
    prefix = f"aegis_bench:{uuid.uuid4().hex[:8]}:"
    cache = HotCache(Database(dsn), redis_url, prefix=prefix, l1_ttl_s=0.0)
    bars = [LatestBar(f"S{i % 300}USDT", "1m", 1_679_000_040_000 + 60_000 * i, 1.5, 2.0, 1.0,
                      1.75, 10.0, 20.0, 5, 4.0, 8.0) for i in range(n)]  # fmt: skip
    sets, gets = [], []
    for bar in bars:
        t = time.perf_counter_ns()
        await cache.put_bar(bar)
        sets.append(time.perf_counter_ns() - t)
    for bar in bars:
        t = time.perf_counter_ns()
        got = await cache.latest_bar(bar.symbol, "1m")
        gets.append(time.perf_counter_ns() - t)
        assert got is not None
    stats = cache.stats
    client = cache._client()
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await cache.close()
    await cache.database.close()
    assert stats.l2_hits == n and stats.l3_hits == 0, stats
    return {"set": _pct(sets), "get": _pct(gets)}


async def _order_latency(dsn: str, spill: Path, n: int) -> dict:
    writer = DurableWriter(Database(dsn), spill)
    await writer.start()
    samples = []
    for i in range(n):
        row = {"client_order_id": f"bench-{uuid.uuid4().hex[:16]}", "intent_id": i, "mode": "paper",
               "symbol": "BTCUSDT", "side": "BUY", "order_type": "MARKET", "status": "FILLED",
               "quantity": Decimal("0.001"), "created_at_ms": i, "updated_at_ms": i}  # fmt: skip
        t = time.perf_counter_ns()
        writer.submit("orders", [row])
        await writer.flush(10)
        samples.append(time.perf_counter_ns() - t)
    await writer.close()
    return _pct(samples)


async def _main(admin_dsn: str, redis_url: str, quick: bool) -> dict:
    name = f"aegis_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = f"{admin_dsn.rpartition('/')[0]}/{name}"
    spill = Path(tempfile.mkdtemp(prefix="aegis-bench-spill-"))
    try:
        await migrate(dsn)
        batches = [BarBatch(s, "1m", _load(s)) for s in SYMBOLS]
        if quick:
            batches = [BarBatch(b.symbol, b.timeframe, b.bars[:10_000]) for b in batches]
        n_rows = sum(len(b.bars) for b in batches)
        t0 = time.perf_counter()
        rows = [r for b in batches for r in validate_bars(b).rows]
        validate_s = time.perf_counter() - t0
        copy_s, copy_stats = await _ingest(dsn, spill, batches)
        replay_s, replay_stats = await _ingest(dsn, spill, batches)
        subset = rows[: 20_000 if quick else 60_000]
        many_s = await _executemany(dsn, subset)
        cache = await _cache(dsn, redis_url, 2_000 if quick else 10_000)
        order = await _order_latency(dsn, spill, 200 if quick else 1_000)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
        shutil.rmtree(spill, ignore_errors=True)
    return {
        "rows": n_rows,
        "copy_rows_per_s": n_rows / copy_s,
        "copy_inserted_rows": copy_stats.inserted_rows,
        "replay_rows_per_s": n_rows / replay_s,
        "replay_inserted_rows": replay_stats.inserted_rows,
        "executemany_rows_per_s": len(subset) / many_s,
        "executemany_rows": len(subset),
        "copy_vs_executemany": (n_rows / copy_s) / (len(subset) / many_s),
        "validate_rows_per_s": n_rows / validate_s,
        "target_rows_per_s": 100_000,
        "cache_set": cache["set"],
        "cache_get_l2": cache["get"],
        "order_write": order,
        "load_avg_1m": os.getloadavg()[0],
        "quick": quick,
    }


def run() -> dict:
    quick = os.environ.get("AEGIS_BENCH_QUICK") == "1"
    started = []
    admin_dsn = os.environ.get("AEGIS_BENCH_PG_ADMIN_DSN", "")
    redis_url = os.environ.get("AEGIS_BENCH_REDIS_URL", "")
    home = Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    if not admin_dsn:
        if _reachable("127.0.0.1", 5432):
            admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
        else:
            pg = EmbeddedPostgres(home / "pg")
            admin_dsn = pg.start()
            started.append(pg)
    if not redis_url:
        if _reachable("127.0.0.1", 6379):
            redis_url = "redis://127.0.0.1:6379/0"
        else:
            rs = EmbeddedRedis(home / "redis")
            redis_url = rs.start()
            started.append(rs)
    try:
        out = asyncio.run(_main(admin_dsn, redis_url, quick))
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"AEGIS store benchmark ({out['rows']:,} real 1m bars, load avg {out['load_avg_1m']:.1f})"
    )
    print(f"  market_data COPY path      {out['copy_rows_per_s']:>12,.0f} rows/s  (target 100,000)")
    print(
        f"  market_data replay (staged){out['replay_rows_per_s']:>12,.0f} rows/s  (all conflicts)"
    )
    print(f"  market_data executemany    {out['executemany_rows_per_s']:>12,.0f} rows/s  "
          f"({out['copy_vs_executemany']:.1f}x slower than COPY)")  # fmt: skip
    print(f"  validation only            {out['validate_rows_per_s']:>12,.0f} rows/s")
    for key in ("cache_set", "cache_get_l2", "order_write"):
        s = out[key]
        print(f"  {key:26s} p50 {s['p50_us']:8.1f} us  p99 {s['p99_us']:8.1f} us  (n={s['n']})")
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
