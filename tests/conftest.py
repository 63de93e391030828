"""Shared fixtures: a real PostgreSQL database and a real Redis namespace per test session.

The machine's servers (127.0.0.1:5432, 127.0.0.1:6379) are used when reachable; otherwise the
embedded ones AEGIS itself starts. Each session gets a freshly created database that is dropped
afterwards, and its own Redis key prefix, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST = os.environ.get("AEGIS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AEGIS_TEST_PG_PORT", "5432"))
REDIS_HOST = os.environ.get("AEGIS_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("AEGIS_TEST_REDIS_PORT", "6379"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a PostgreSQL server's maintenance database (machine's, else embedded)."""
    if _reachable(PG_HOST, PG_PORT):
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
        return
    from aegis.store.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A freshly created, empty database for this test session, dropped afterwards."""
    import asyncio

    import asyncpg

    name = f"aegis_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = pg_admin_dsn.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis (machine's, else embedded)."""
    if _reachable(REDIS_HOST, REDIS_PORT):
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        return
    from aegis.store.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix owned by one test; its keys are deleted afterwards."""
    import redis

    prefix = f"aegis_test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real recorded Binance data bundled with the package."""
    return Path(__file__).resolve().parents[1] / "aegis" / "data"
