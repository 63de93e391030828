"""Shared fixtures: a real PostgreSQL database and a real Redis namespace per test session.

The machine's servers (127.0.0.1:5432, 127.0.0.1:6379) are used when reachable; otherwise the
embedded ones AEGIS itself starts. Each session gets a freshly created database that is dropped
afterwards, and its own Redis key prefix, so parallel runs never see each other's rows.
Tests that must break a schema take ``pg_fresh_dsn`` (one database per test); tests that need
the AEGIS tables take ``pg_migrated_dsn`` (one migrated database per session).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
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


@contextlib.contextmanager
def _server_home(name: str) -> Iterator[Path]:
    """A private directory for an embedded server, outside pytest's tmp tree.

    As root, PostgreSQL runs as a service user that must traverse the path to its data; pytest
    resets /tmp/pytest-of-root to 0700 whenever any (concurrent) session starts, which would
    cut a running server off its files.
    """
    home = Path(tempfile.mkdtemp(prefix=f"aegis-test-{name}-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def server_home() -> Iterator[Path]:
    """A fresh directory for embedded servers a test starts (see ``_server_home``)."""
    with _server_home("srv") as home:
        yield home


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server's maintenance database (machine's, else embedded)."""
    if _reachable(PG_HOST, PG_PORT):
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
        return
    from aegis.store.embedded import EmbeddedPostgres

    with _server_home("pg") as home:
        server = EmbeddedPostgres(home)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture(scope="module")
def module_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A migrated database of its own for one test module, dropped after it."""
    from executor_support import create_migrated_database, drop_database

    dsn = create_migrated_database(pg_admin_dsn)
    yield dsn
    drop_database(pg_admin_dsn, dsn)


def _admin(admin_dsn: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def _scratch_database(admin_dsn: str) -> Iterator[str]:
    name = f"aegis_test_{uuid.uuid4().hex[:12]}"
    _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A freshly created, empty database for this test session, dropped afterwards."""
    with _scratch_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture
def pg_fresh_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A freshly created, empty database for ONE test (e.g. to break its schema on purpose)."""
    with _scratch_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def pg_migrated_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A session database with every AEGIS migration applied (shared: use unique symbols/ids)."""
    from aegis.schema.migrator import migrate_sync

    with _scratch_database(pg_admin_dsn) as dsn:
        migrate_sync(dsn)
        yield dsn


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis (machine's, else embedded)."""
    if _reachable(REDIS_HOST, REDIS_PORT):
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        return
    from aegis.store.embedded import EmbeddedRedis

    with _server_home("redis") as home:
        server = EmbeddedRedis(home)
        try:
            yield server.start()
        finally:
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


@pytest.fixture(scope="session")
def samples(data_dir):
    """Real Binance WebSocket market messages, by kind (``binance_ws_market_examples_real``)."""
    return json.loads((data_dir / "samples" / "binance_ws_market_examples_real.json").read_text())


@pytest.fixture(scope="session")
def closed_msg(samples):
    """A real closing kline message of the combined stream (BTCUSDT, 2021-04-04)."""
    return samples["kline_closed_combined"]["msg"]
