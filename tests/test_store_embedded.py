"""Specification of the embedded servers: real PostgreSQL and Redis under the data directory,
reused across runs, working when we are root (PostgreSQL then runs as a service user)."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

import asyncpg
import pytest
import redis

from aegis.config import Settings
from aegis.store.embedded import EmbeddedPostgres, EmbeddedRedis, resolve_endpoints
from aegis.store.setup import migrate_for_settings


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_embedded_redis_start_reuse_stop(server_home: Path) -> None:
    server = EmbeddedRedis(server_home / "r")
    try:
        url = server.start()
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        pid = server.pid()
        assert server.start() == url and server.pid() == pid
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
    assert server.pid() is None


def test_resolve_endpoints_configured_urls_start_nothing(server_home: Path) -> None:
    settings = Settings(
        home=server_home, database_url="postgresql://x@h/db", redis_url="redis://h:1/0"
    )
    endpoints = resolve_endpoints(settings)
    assert (endpoints.database_url, endpoints.redis_url, endpoints.started) == (
        "postgresql://x@h/db", "redis://h:1/0", ()
    )  # fmt: skip
    assert not (server_home / "postgres").exists()


@pytest.mark.slow
def test_resolve_endpoints_and_migrate_embedded_under_home(server_home: Path) -> None:
    settings = Settings(home=server_home)
    report = migrate_for_settings(settings)  # starts, migrates, stops again
    assert report.version >= 2
    pg = EmbeddedPostgres(server_home / "postgres")
    assert not pg.is_running()
    endpoints = resolve_endpoints(settings)
    try:
        assert len(endpoints.started) == 2
        assert endpoints.database_url == pg.dsn("aegis")
        version = asyncio.run(
            _query(endpoints.database_url, "SELECT max(version) FROM schema_version")
        )
        assert version == report.version  # the cluster and its data were reused
        pid = pg.postmaster_pid()
        assert pg.start() == pg.dsn() and pg.postmaster_pid() == pid  # adopted, not restarted
        if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster runs as a service user
            assert pwd.getpwuid(pg.pgdata.stat().st_uid).pw_name == "pgserver"
        listen = asyncio.run(_query(pg.dsn(), "SELECT current_setting('listen_addresses')"))
        assert listen == ""  # Unix socket only: no port to collide with
        assert redis.Redis.from_url(endpoints.redis_url).ping()
    finally:
        endpoints.stop()
    assert not pg.is_running()


def test_make_traversable_opens_every_private_parent_for_the_service_user(tmp_path):
    from aegis.store.embedded import _make_traversable

    private = tmp_path / "private"
    leaf = private / "venv" / "pginstall"
    leaf.mkdir(parents=True)
    private.chmod(0o700)
    _make_traversable(leaf)
    for directory in (leaf, leaf.parent, private):
        assert directory.stat().st_mode & 0o055 == 0o055, directory
