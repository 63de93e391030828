"""AEGIS storage: PostgreSQL as the source of truth, Redis as a cache that may vanish.

Each process opens its own ``Store`` inside its own event loop (``open_store``); nothing here
connects at import time. Timestamps are epoch milliseconds (UTC) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aegis.store.bars import BarBatch, BarRejection, RejectReason, validate_bars
from aegis.store.cache import AccountSnapshot, CacheStats, HotCache, LatestBar
from aegis.store.database import Database, is_transient
from aegis.store.durable import DurableWriter, DurableWriterStats
from aegis.store.events import EventLog, KernelEvent, recent_events
from aegis.store.market_data import BarWriteResult, MarketDataWriter
from aegis.store.partitions import ensure_partitions
from aegis.store.tables import TABLES, RowShapeError, TableSpec, UnknownTableError

__all__ = [
    "TABLES", "AccountSnapshot", "BarBatch", "BarRejection", "BarWriteResult", "CacheStats",
    "Database", "DurableWriter", "DurableWriterStats", "EventLog", "HotCache", "KernelEvent",
    "LatestBar", "MarketDataWriter", "RejectReason", "RowShapeError", "Store", "TableSpec",
    "UnknownTableError", "ensure_partitions", "is_transient", "open_store", "recent_events",
    "validate_bars",
]  # fmt: skip


@dataclass(frozen=True)
class Store:
    """One process's storage handles; ``close()`` flushes (or spills) and disconnects."""

    database: Database
    writer: DurableWriter
    market_data: MarketDataWriter
    events: EventLog
    cache: HotCache

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.cache.close()
        await self.writer.close(timeout_s)


async def open_store(
    dsn: str, redis_url: str, home: Path, *, process: str, redis_prefix: str = "aegis:"
) -> Store:
    """Open a process's store: pool, durable writer (spill under ``home/spill``), cache.

    Call inside the process's running event loop. Does not migrate: the kernel runs
    ``aegis.store.setup.prepare_database`` once before starting its children.
    """
    database = Database(dsn)
    writer = DurableWriter(database, Path(home) / "spill", name=process)
    await writer.start()
    cache = HotCache(database, redis_url, prefix=redis_prefix)
    return Store(database, writer, MarketDataWriter(writer), EventLog(writer), cache)
