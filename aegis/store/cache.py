"""``HotCache``: three tiers for the hot reads — latest bar per symbol/timeframe, account state.

L1 is a dict in this process (entries live ``l1_ttl_s``, default 1 s, so a reader sees another
process's update within that time), L2 is Redis (orjson values, 1 h TTL, keys under the
configured prefix), L3 is PostgreSQL, the source of truth. A miss fills the tiers above it.

Redis may vanish: the first failure is logged once, Redis is then skipped (L1/L3 serve) and
retried every ``redis_retry_s``; when it answers again one line reports how many operations
failed or were skipped meanwhile. Nothing here ever raises because Redis is down.
The client is created on first use, inside the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aegis.store.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
_SKIPPED = object()


def _raise_if_cancelled(cause: BaseException | None) -> None:
    """Re-raise a cancellation redis-py lost.

    A task cancelled while a command is in flight may see the command finish normally or fail
    with a timeout or a lost connection instead of ``CancelledError`` (redis-py 8 shields parts
    of a command). Carrying on would keep a task that was told to stop (``ClosedBarStore`` at
    shutdown) running forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


@dataclass(frozen=True)
class LatestBar:
    """The newest stored bar of one symbol and timeframe (a ``market_data`` row)."""

    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None = None
    trade_count: int | None = None
    taker_buy_volume: float | None = None
    taker_buy_quote_volume: float | None = None
    flags: int = 0

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> LatestBar:
        return cls(**dict(m))


@dataclass(frozen=True)
class AccountSnapshot:
    """One ``account_state`` row; money is Decimal."""

    account: str
    ts_ms: int
    equity: Decimal
    cash: Decimal
    peak_equity: Decimal
    open_positions: int
    balances: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> AccountSnapshot:
        return cls(
            m["account"], int(m["ts_ms"]), Decimal(str(m["equity"])), Decimal(str(m["cash"])),
            Decimal(str(m["peak_equity"])), int(m["open_positions"]), dict(m["balances"] or {}),
        )  # fmt: skip


@dataclass(frozen=True)
class CacheStats:
    l1_hits: int
    l2_hits: int
    l3_hits: int
    misses: int
    redis_failures: int  # failed or skipped Redis operations since start
    redis_up: bool


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str)  # Decimal -> exact string


class HotCache:
    """L1 dict → L2 Redis → L3 PostgreSQL for latest bars and account state."""

    def __init__(
        self,
        database: Database,
        redis_url: str,
        *,
        prefix: str = "aegis:",
        ttl_s: int = 3600,
        l1_ttl_s: float = 1.0,
        redis_timeout_s: float = 0.5,
        redis_retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self._url = redis_url
        self._prefix = prefix
        self._ttl = ttl_s
        self._l1_ttl = l1_ttl_s
        self._timeout = redis_timeout_s
        self._retry = redis_retry_s
        self._clock = clock
        self._l1: dict[str, tuple[float, Any]] = {}
        self._redis: aioredis.Redis | None = None
        self._skip_until = 0.0
        self._down = False
        self._outage_failures = 0
        self._n = dict.fromkeys(("l1", "l2", "l3", "miss", "redis_failures"), 0)

    # -- latest bar
    async def latest_bar(self, symbol: str, timeframe: str) -> LatestBar | None:
        """Newest bar of ``symbol``/``timeframe`` from the fastest tier that has it."""
        key = f"{self._prefix}bar:{symbol}:{timeframe}"
        return await self._read(
            key, LatestBar.from_mapping, lambda: self._bar_from_db(symbol, timeframe)
        )

    async def put_bar(self, bar: LatestBar) -> None:
        """Publish ``bar`` to L1 and L2 unless an equal or newer bar is already in L1."""
        await self.put_bars((bar,))

    async def put_bars(self, bars: Iterable[LatestBar]) -> int:
        """``put_bar`` for many bars in one Redis round trip (a pipeline); return how many
        were newer than L1 and sent."""
        fresh = []
        for bar in bars:
            key = f"{self._prefix}bar:{bar.symbol}:{bar.timeframe}"
            cached = self._l1.get(key)
            if cached is None or cached[1].open_time_ms <= bar.open_time_ms:
                self._l1[key] = (self._clock() + self._l1_ttl, bar)
                # orjson encodes the flat dataclass itself, 25x faster than via asdict (a
                # deep copy): 300 bars per flush ran ~7 ms of the feed's loop.
                fresh.append((key, _dumps(bar)))
        if fresh:

            async def send(r: aioredis.Redis) -> None:
                async with r.pipeline(transaction=False) as pipe:
                    for key, payload in fresh:
                        pipe.set(key, payload, ex=self._ttl)
                    await pipe.execute()

            await self._redis_op(send)
        return len(fresh)

    # -- account state
    async def account_state(self, account: str) -> AccountSnapshot | None:
        """Latest ``account_state`` snapshot of ``account`` (paper / live)."""
        key = f"{self._prefix}account:{account}"
        return await self._read(
            key, AccountSnapshot.from_mapping, lambda: self._account_from_db(account)
        )

    async def put_account_state(self, snapshot: AccountSnapshot) -> None:
        await self._fill(f"{self._prefix}account:{snapshot.account}", snapshot)

    @property
    def stats(self) -> CacheStats:
        n = self._n
        return CacheStats(n["l1"], n["l2"], n["l3"], n["miss"], n["redis_failures"], not self._down)

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    # -- tiers
    async def _read(
        self,
        key: str,
        build: Callable[[Mapping[str, Any]], T],
        from_db: Callable[[], Awaitable[T | None]],
    ) -> T | None:
        now = self._clock()
        cached = self._l1.get(key)
        if cached is not None and cached[0] > now:
            self._n["l1"] += 1
            return cached[1]
        raw = await self._redis_op(lambda r: r.get(key))
        if raw is not _SKIPPED and raw is not None:
            value = build(orjson.loads(raw))
            self._l1[key] = (now + self._l1_ttl, value)
            self._n["l2"] += 1
            return value
        value = await from_db()
        if value is None:
            self._n["miss"] += 1
            return None
        self._n["l3"] += 1
        await self._fill(key, value)
        return value

    async def _fill(self, key: str, value: Any) -> None:
        self._l1[key] = (self._clock() + self._l1_ttl, value)
        payload = _dumps(asdict(value))
        await self._redis_op(lambda r: r.set(key, payload, ex=self._ttl))

    async def _redis_op(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T | object:
        if self._down and self._clock() < self._skip_until:
            self._n["redis_failures"] += 1
            self._outage_failures += 1
            return _SKIPPED
        try:
            result = await op(self._client())
        except _REDIS_DOWN as exc:
            _raise_if_cancelled(exc)
            self._n["redis_failures"] += 1
            self._outage_failures += 1
            self._skip_until = self._clock() + self._retry
            if not self._down:
                self._down = True
                log.warning(
                    "redis unavailable (%s: %s): serving from L1/PostgreSQL, retrying every %.1f s",
                    type(exc).__name__,
                    exc,
                    self._retry,
                )
            return _SKIPPED
        if self._down:
            log.warning(
                "redis back: %d operations failed or skipped while it was away",
                self._outage_failures,
            )
            self._down = False
            self._outage_failures = 0
        _raise_if_cancelled(None)
        return result

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),  # our own skip-and-retry policy, not redis-py's
            )
        return self._redis

    async def _bar_from_db(self, symbol: str, timeframe: str) -> LatestBar | None:
        async with self.database.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT symbol, timeframe, open_time_ms, open, high, low, close, volume, "
                "quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, flags "
                "FROM market_data WHERE symbol = $1 AND timeframe = $2 "
                "ORDER BY open_time_ms DESC LIMIT 1",
                symbol,
                timeframe,
            )
        return None if row is None else LatestBar.from_mapping(row)

    async def _account_from_db(self, account: str) -> AccountSnapshot | None:
        async with self.database.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT account, ts_ms, equity, cash, peak_equity, open_positions, balances "
                "FROM account_state WHERE account = $1 ORDER BY ts_ms DESC LIMIT 1",
                account,
            )
        return None if row is None else AccountSnapshot.from_mapping(row)
