"""Builders shared by the executor tests and benchmark: real filters, real bars, intent records."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from functools import cache
from pathlib import Path

import asyncpg
import numpy as np

from aegis.binance.filters import SymbolFilters
from aegis.config import Settings
from aegis.processes.executor_symbols import SymbolDirectory
from aegis.records import BAR_CLOSED, BAR_DTYPE, INTENT_DTYPE, N_FEATURES, REPORT_DTYPE, SIDE_BUY
from aegis.ringbuffer import Ring

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data"
WORKER = Path(__file__).with_name("executor_worker.py")
BTC, ETH = 1, 2
MIN = 60_000
BTC_FIRST = 1679004900000  # first bar of the bundled BTCUSDT recording (a 5m boundary)


@cache
def _symbol_infos() -> dict[str, dict]:
    with gzip.open(DATA / "exchange_info" / "binance_spot_exchangeInfo_20240908.json.gz") as fh:
        info = json.load(fh)
    return {s["symbol"]: s for s in info["symbols"] if s["symbol"] in ("BTCUSDT", "ETHUSDT")}


def directory() -> SymbolDirectory:
    """BTCUSDT = 1 and ETHUSDT = 2 with their real 2024 filters."""
    infos = _symbol_infos()
    names = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
    filters = {i: SymbolFilters.from_symbol_info(infos[n]) for i, n in names.items()}
    return SymbolDirectory(names, filters, "USDT", {i: infos[n] for i, n in names.items()})


@cache
def _klines(symbol: str) -> np.ndarray:
    path = DATA / "klines" / f"binance_spot_{symbol}_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = list(csv.reader(fh))[1:3001]
    return np.array([[float(x) for x in row] for row in rows])


def bars(symbol_id: int = BTC, start_ms: int = BTC_FIRST, count: int = 30) -> np.ndarray:
    """``count`` real closed 1m bars of the symbol from ``start_ms`` as BAR_DTYPE records."""
    raw = _klines("BTCUSDT" if symbol_id == BTC else "ETHUSDT")
    first = int(np.searchsorted(raw[:, 0], start_ms))
    raw = raw[first : first + count]
    out = np.zeros(len(raw), dtype=BAR_DTYPE)
    out["open_time_ms"] = raw[:, 0].astype(np.int64)
    out["symbol_id"] = symbol_id
    out["flags"] = BAR_CLOSED
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        out[name] = raw[:, i]
    return out


def intent_record(
    intent_id: int,
    symbol_id: int = BTC,
    decision_time_ms: int = BTC_FIRST - 5 * MIN,
    notional: float = 500.0,
    stop_pct: float = 1.0,
    take_pct: float = 2.0,
    confidence: float = 0.7,
    model_version: int = 3,
) -> np.ndarray:
    """One INTENT_DTYPE record (1-element array) of a BUY intent."""
    rec = np.zeros(1, dtype=INTENT_DTYPE)
    rec["intent_id"] = intent_id
    rec["symbol_id"] = symbol_id
    rec["side"] = SIDE_BUY
    rec["decision_time_ms"] = decision_time_ms
    rec["notional"] = notional
    rec["stop_pct"] = stop_pct
    rec["take_pct"] = take_pct
    rec["predicted_return_pct"] = 0.4
    rec["confidence"] = confidence
    rec["model_version"] = model_version
    rec["features"] = np.arange(N_FEATURES, dtype=np.float64) / 10.0
    return rec


def settings(dsn: str, home: Path, **changes) -> Settings:
    """Paper settings for a test: 5m decisions, a 10-minute time exit, no entry cooldown."""
    base = dict(database_url=dsn, home=home, max_hold_minutes=10, min_entry_interval_s=0.0,
                metrics_port=0, max_symbol_exposure_pct=50.0)  # fmt: skip
    base.update(changes)
    return Settings().replace(**base)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def rows(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


EXECUTOR_TABLES = ("orders", "virtual_positions", "virtual_trades", "account_state")


def create_migrated_database(admin_dsn: str) -> str:
    """A new database with every migration applied; drop it with ``drop_database``."""
    from aegis.schema.migrator import migrate_sync

    name = f"aegis_exec_{uuid.uuid4().hex[:12]}"
    _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    dsn = f"{admin_dsn.rpartition('/')[0]}/{name}"
    migrate_sync(dsn)
    return dsn


def drop_database(admin_dsn: str, dsn: str) -> None:
    _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{dsn.rpartition("/")[2]}" WITH (FORCE)')


async def empty_executor_tables(dsn: str) -> None:
    """Remove every row the executor writes (a clean book for the next test)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(EXECUTOR_TABLES)}")
    finally:
        await conn.close()


def _admin(admin_dsn: str, sql: str) -> None:
    import asyncio

    async def go() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def executor_rings():
    """The executor's three rings, made by the test (it is their producer and consumer)."""
    made = {
        "market": Ring.create(unique("aegis-test-market"), BAR_DTYPE, 256, 2),
        "intents": Ring.create(unique("aegis-test-intents"), INTENT_DTYPE, 64, 1),
        "reports": Ring.create(unique("aegis-test-reports"), REPORT_DTYPE, 64, 1),
    }
    yield made
    for ring in made.values():
        ring.close()


class Worker:
    """One executor subprocess; its stderr goes to a file read on failure."""

    def __init__(self, dsn: str, home: Path, rings: dict, **extra) -> None:
        settings = {"database_url": dsn, "home": str(home), "max_hold_minutes": 10,
                    "min_entry_interval_s": 0.0, "metrics_port": 0,
                    "max_symbol_exposure_pct": 50.0, **extra.pop("settings", {})}  # fmt: skip
        args = {
            "settings": settings,
            "rings": [["market", rings["market"].name, 1], ["intents", rings["intents"].name, 0],
                      ["reports", rings["reports"].name, None]],
            **extra,
        }  # fmt: skip
        self.log = home / f"executor-{time.monotonic_ns()}.log"
        self._err = open(self.log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(args)],
                                     stderr=self._err)  # fmt: skip

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    async def exited(self, timeout: float = 30.0) -> int:
        """Wait without blocking the event loop (a simulator may be serving in it)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "executor did not exit in time"
            await asyncio.sleep(0.05)
        return self.wait()

    async def stopped(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await self.exited()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def consumed(rings: dict) -> bool:
    intents, market = Ring.inspect(rings["intents"].name), Ring.inspect(rings["market"].name)
    return intents.consumers[0].sequence == intents.cursor and (
        market.consumers[1].sequence == market.cursor
    )
