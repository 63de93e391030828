"""Bring a database to the expected schema: the kernel's start-up step and ``aegis-kernel migrate``."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from aegis.schema.migrator import MigrationReport, migrate
from aegis.store.embedded import resolve_database_url
from aegis.store.partitions import ensure_partitions

log = logging.getLogger(__name__)


async def prepare_database(dsn: str, *, months_ahead: int = 2) -> MigrationReport:
    """Migrate (under the advisory lock), then create market_data partitions ahead."""
    report = await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_partitions(conn, months_ahead=months_ahead)
    finally:
        await conn.close()
    return report


def migrate_for_settings(settings) -> MigrationReport:  # settings: aegis.config.Settings
    """Blocking: migrate ``settings.database_url``, or the embedded server under ``settings.home``
    (started for the occasion and stopped again unless it was already running)."""
    dsn, started = resolve_database_url(settings)
    try:
        return asyncio.run(prepare_database(dsn))
    finally:
        if started is not None:
            started.stop()
