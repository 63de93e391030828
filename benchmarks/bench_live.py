"""Live executor path against the Binance simulator over loopback: intent → order filled and
journaled.

- ``submit_memory_journal``: one ``LiveExchange.submit`` of a BTCUSDT intent: ``SymbolFilters.fit``
  of the MARKET BUY (sized from the last closed bar, as in operation: one bar is handled
  first) and the sellable-at-stop check, the journal write before sending, a signed
  ``POST /api/v3/order`` (newOrderRespType FULL) to the in-process simulator over a real loopback
  socket, then the order state with its fill journaled. In-memory journal. The order is the only
  REST request of a sample: the crash guard, which follows a fill with a second order in
  operation, is off here (its cost is one more such request).
- ``submit_pg_journal``: the same with ``PgOrderJournal`` on the local PostgreSQL (a scratch
  database, dropped afterwards): two durable transactions per intent (the intent before
  sending; the answer with its fill).

The simulator shares the benchmark's event loop and core, so its own request handling is part
of every sample; a real exchange adds the network round trip (typically 1–50 ms) instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np

from aegis.binance.journal import MemoryOrderJournal
from aegis.binance.live import LiveConfig, LiveExchange
from aegis.binance.live_book import LiveMarket
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, AccountSpec, SimConfig
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.weight import WeightBudget
from aegis.paper.intents import PaperIntent

DAY2 = 1679097600000
PG_ADMIN = os.environ.get("AEGIS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
N = 300


def _stats_ms(seconds: list[float]) -> dict:
    a = np.array(seconds[len(seconds) // 10 :]) * 1e3  # first tenth dropped as warm-up
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "n": len(a)}  # fmt: skip


async def _submit_series(sim, journal, home: Path, first_id: int) -> dict:
    with WeightBudget.for_home(home) as budget:
        async with BinanceRestClient(
            sim.rest_url, budget, api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET,
            time_samples=1,
        ) as rest:  # fmt: skip
            info = await rest.exchange_info(["BTCUSDT"])
            market = LiveMarket.from_symbol_info(info["symbols"][0])
            ex = LiveExchange(
                rest, journal, {0: market}, LiveConfig(unknown_grace_s=0.1, crash_guard=None)
            )
            await ex.start()
            price = float(await rest.avg_price("BTCUSDT"))
            await ex.on_bar(0, DAY2 - 60_000, price, price, price, price)
            samples = []
            for i in range(N):
                intent = PaperIntent(first_id + i, 0, DAY2, 20.0, 1.0, 2.0)
                t0 = time.perf_counter()
                outcome = await ex.submit(intent)
                samples.append(time.perf_counter() - t0)
                if outcome.status != "filled":
                    raise RuntimeError(f"benchmark intent not filled: {outcome}")
                ex.drain_events()
    return _stats_ms(samples)


async def _run() -> dict:
    # Real-time clock: a frozen server clock would refuse timestamps a second ahead (-1021).
    config = SimConfig(
        symbols=("BTCUSDT",), speed=1.0, start_paused=False, updates_per_bar=2, start_ms=DAY2,
        orders_limit_10s=1_000_000,
        accounts=(AccountSpec(balances=(("USDT", Decimal("1000000")),)),),
    )  # fmt: skip
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with BinanceSimulator(config) as sim:
            results["submit_memory_journal"] = await _submit_series(
                sim, MemoryOrderJournal(), Path(tmp) / "a", 1
            )
        async with BinanceSimulator(replace(config)) as sim:
            results["submit_pg_journal"] = await _with_pg(sim, Path(tmp) / "b")
    return results


async def _with_pg(sim, home: Path) -> dict:
    import asyncpg

    from aegis.binance.journal_pg import PgOrderJournal
    from aegis.schema.migrator import migrate

    name = f"aegis_bench_live_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        await migrate(dsn)
        journal = await PgOrderJournal.connect(dsn)
        try:
            return await _submit_series(sim, journal, home, 1_000_001)
        finally:
            await journal.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def run() -> dict:
    results = asyncio.run(_run())
    print("live executor: intent -> MARKET order filled and journaled (simulator, loopback)")
    for key, s in results.items():
        print(f"  {key:<24} p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
              f"max {s['max_ms']:7.2f} ms  (n={s['n']})")  # fmt: skip
    return results


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
