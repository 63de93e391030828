"""Brain and executor use the universe the feed published, never a selection of their own.

With top-N selection a second ranking taken a moment later can differ; a symbol id meaning one
symbol in the feed and another in the executor would be a wrong order. These tests use a real
PostgreSQL and the feed's own persistence.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest

from aegis.binance.universe import Universe, UniverseSymbol
from aegis.processes.feed_universe import UniverseNotPublished, UniverseStore, published_universe
from aegis.store.database import Database


def _universe(names: list[str], first_id: int) -> Universe:
    symbols = tuple(
        UniverseSymbol(name, first_id + i, name.removesuffix("USDT"), "USDT", Decimal(1000 - i))
        for i, name in enumerate(names)
    )
    return Universe(symbols, next_id=first_id + len(names),
                    assigned={s.symbol: s.symbol_id for s in symbols})  # fmt: skip


async def test_published_universe_returns_the_feeds_ids_once_it_is_saved(pg_fresh_dsn):
    from aegis.schema.migrator import migrate

    await migrate(pg_fresh_dsn)
    db = Database(pg_fresh_dsn)
    try:
        feed = UniverseStore(db, None, f"t{uuid.uuid4().hex[:6]}:")
        wanted = _universe(["ETHUSDT", "BTCUSDT", "SOLUSDT"], first_id=7)

        async def feed_saves_later() -> None:
            await asyncio.sleep(0.3)
            await feed.save(wanted, "test")

        saver = asyncio.create_task(feed_saves_later())
        got = await published_universe(db, timeout_s=10, poll_s=0.05)
        await saver
        assert {s.symbol: s.symbol_id for s in got.symbols} == {
            "ETHUSDT": 7, "BTCUSDT": 8, "SOLUSDT": 9,
        }  # fmt: skip
    finally:
        await db.close()


async def test_published_universe_without_a_feed_fails_clearly_after_its_timeout(pg_fresh_dsn):
    from aegis.schema.migrator import migrate

    await migrate(pg_fresh_dsn)
    db = Database(pg_fresh_dsn)
    try:
        t0 = time.monotonic()
        with pytest.raises(UniverseNotPublished, match="no universe"):
            await published_universe(db, timeout_s=0.3, poll_s=0.05)
        assert time.monotonic() - t0 < 5
    finally:
        await db.close()
