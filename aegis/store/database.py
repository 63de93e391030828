"""One lazily created asyncpg pool per process, and the line between transient and bad-data errors.

The pool is created on first use inside the running event loop (never at import, never shared
across processes) with ``min_size=0``, so creating it never needs the server: a database that is
down shows up as a transient error on ``acquire``, which the durable writer retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson

# SQLSTATE classes that mean "try again later": connection exception, insufficient resources,
# operator intervention (shutdown, cannot connect now), transaction rollback (deadlock),
# and syntax/undefined-object (schema not migrated yet: keep the data, don't drop it).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40", "42", "55")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same write later may succeed (the data itself is not at fault)."""
    if isinstance(exc, asyncpg.DataError):  # SQLSTATE 22: the data is at fault
        return False
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError | asyncpg.InterfaceError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON(B) columns take and return Python objects (orjson), not pre-encoded strings.
    # Binary format, because COPY ... (FORMAT binary) is how batches are written.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "json",
        encoder=lambda v: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="binary",
    )


class Database:
    """A process's connection pool to the AEGIS database."""

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 4,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 60.0,
    ) -> None:
        self.dsn = dsn
        self._max_size = max_size
        self._connect_timeout = connect_timeout_s
        self._command_timeout = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    @property
    def max_size(self) -> int:
        """Most connections this pool opens at once."""
        return self._max_size

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                init=_init_connection,
                max_inactive_connection_lifetime=60.0,
            )
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """Yield a pooled connection; raises a transient error when the server is away."""
        pool = await self.pool()
        async with pool.acquire(timeout=self._connect_timeout) as conn:
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()
