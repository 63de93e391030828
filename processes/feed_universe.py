"""The feed's universe: selected from Binance, kept in Redis and PostgreSQL, ids stable for good.

``UniverseStore.load`` returns the last universe the feed persisted (Redis first, then
PostgreSQL); ``select_current`` selects today's from ``exchangeInfo`` and the 24 h tickers with
that one as ``previous``, so a symbol keeps its ring id across refreshes and restarts.
PostgreSQL keeps each selection as a ``kernel_events`` row (process ``feed``, event
``universe``, the symbols and ids in ``detail``): an append-only history of what the ids meant.

Also here: ``last_stored_open_times``, the local-first question the feed asks at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from aegis.binance.rest import BinanceRestClient
from aegis.binance.universe import Universe, UniverseSymbol, select_universe
from aegis.config import Settings
from aegis.store.database import Database

log = logging.getLogger(__name__)

UNIVERSE_EVENT = "universe"
REDIS_KEY = "universe"


def universe_to_json(universe: Universe) -> dict[str, Any]:
    """A JSON-able form of ``universe`` (ids, assets, volumes, every id ever assigned)."""
    return {
        "symbols": [
            [s.symbol, s.symbol_id, s.base_asset, s.quote_asset, str(s.quote_volume)]
            for s in universe.symbols
        ],
        "next_id": universe.next_id,
        "assigned": dict(universe.assigned),
    }


def universe_from_json(data: dict[str, Any]) -> Universe:
    """Inverse of ``universe_to_json``."""
    symbols = tuple(
        UniverseSymbol(name, int(sid), base, quote, Decimal(volume))
        for name, sid, base, quote, volume in data["symbols"]
    )
    assigned = {k: int(v) for k, v in data.get("assigned", {}).items()}
    return Universe(symbols, int(data["next_id"]), assigned)


class UniverseStore:
    """Persist and reload the feed's universe (Redis for speed, PostgreSQL for truth)."""

    def __init__(self, database: Database, redis: Any | None, prefix: str) -> None:
        self._db = database
        self._redis = redis
        self._key = f"{prefix}{REDIS_KEY}"

    async def load(self) -> Universe | None:
        """The last persisted universe, or None."""
        if self._redis is not None:
            try:
                raw = await self._redis.get(self._key)
            except Exception as exc:  # Redis is a cache: fall through to PostgreSQL
                log.warning("universe: redis unavailable (%s); reading PostgreSQL", exc)
                raw = None
            if raw:
                return universe_from_json(orjson.loads(raw))
        async with self._db.acquire() as conn:
            detail = await conn.fetchval(
                "SELECT detail FROM kernel_events WHERE process = 'feed' AND event = $1"
                " ORDER BY ts_ms DESC LIMIT 1",
                UNIVERSE_EVENT,
            )
        return universe_from_json(detail) if detail else None

    async def save(self, universe: Universe, reason: str) -> None:
        """Record ``universe`` in PostgreSQL (history) and Redis (latest)."""
        data = universe_to_json(universe)
        async with self._db.acquire() as conn:
            await conn.execute(
                "INSERT INTO kernel_events (event_id, ts_ms, process, pid, event, reason, detail)"
                " VALUES ($1, $2, 'feed', $3, $4, $5, $6)",
                uuid.uuid4(), int(time.time() * 1000), _pid(), UNIVERSE_EVENT, reason, data,
            )  # fmt: skip
        if self._redis is not None:
            try:
                await self._redis.set(self._key, orjson.dumps(data))
            except Exception as exc:
                log.warning("universe: not cached in redis (%s)", exc)


def _pid() -> int:
    import os

    return os.getpid()


async def select_current(
    rest: BinanceRestClient, settings: Settings, previous: Universe | None
) -> Universe:
    """Select the universe now (explicit symbols, or top N by 24 h quote volume).

    An explicit list gets ids 1..n in list order, ignoring ``previous``: brain and executor
    derive the same ids from the same list, so the three agree without asking anyone.
    """
    if settings.symbols:
        previous = None
    info = await rest.exchange_info()
    tickers = [] if settings.symbols else await rest.ticker_24hr()
    return select_universe(
        info, tickers, quote_asset=settings.quote_asset, top_n=settings.top_n,
        symbols=settings.symbols, previous=previous,
    )  # fmt: skip


async def last_stored_open_times(
    database: Database, symbols: Sequence[str], timeframe: str = "1m"
) -> dict[str, int]:
    """Open time of the newest ``market_data`` bar per symbol (symbols with none are absent)."""
    async with database.acquire() as conn:
        # One index probe per symbol (primary key, newest first) instead of a scan per symbol.
        rows = await conn.fetch(
            "SELECT s.symbol, (SELECT m.open_time_ms FROM market_data m"
            "   WHERE m.symbol = s.symbol AND m.timeframe = $2"
            "   ORDER BY m.open_time_ms DESC LIMIT 1) AS last_open"
            " FROM unnest($1::text[]) AS s(symbol)",
            list(symbols), timeframe,
        )  # fmt: skip
    return {r["symbol"]: int(r["last_open"]) for r in rows if r["last_open"] is not None}


class UniverseNotPublished(RuntimeError):
    """The feed has not persisted a universe yet (brain and executor start after it)."""


async def published_universe(
    database: Database, *, timeout_s: float = 60.0, poll_s: float = 0.5
) -> Universe:
    """The universe the feed persisted last, waiting up to ``timeout_s`` for its first one.

    With top-N selection the brain and the executor must use the feed's ids, never select their
    own: a ranking taken a moment later can differ, and a symbol id that means another symbol in
    another process is a wrong order. Ids are never reused, so a later refresh by the feed only
    adds ids the others do not know yet (their bars and intents are dropped and counted).
    """
    store = UniverseStore(database, None, "")
    deadline = time.monotonic() + timeout_s
    while True:
        universe = await store.load()
        if universe is not None:
            return universe
        if time.monotonic() >= deadline:
            raise UniverseNotPublished(f"the feed has published no universe within {timeout_s:g} s")
        await asyncio.sleep(poll_s)
