"""Monthly partitions of ``market_data``: created ahead of time and on demand.

Policy: the kernel calls ``ensure_partitions(conn, through=...)`` at start and daily to keep
the current month and the next ones ready; the durable writer additionally ensures the months
of every market_data batch it writes (cached, so this costs one lookup per new month). A bar
whose month has no partition yet would still land in ``market_data_default`` rather than be
lost, and creating that month later moves it into place (see V0002).
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
import numpy as np

log = logging.getLogger(__name__)


def month_start(epoch_ms: int) -> dt.date:
    """First day (UTC) of the month containing ``epoch_ms``."""
    day = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC).date()
    return day.replace(day=1)


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every month start from ``first``'s month through ``last``'s month, inclusive."""
    months = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(dt.date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


async def ensure_partitions(
    conn: asyncpg.Connection,
    *,
    through: dt.date | None = None,
    since: dt.date | None = None,
    months_ahead: int = 2,
) -> list[dt.date]:
    """Create the monthly partitions from ``since`` (default: this month) through ``through``
    (default: ``months_ahead`` months after this month); return the months created."""
    today = dt.datetime.now(tz=dt.UTC).date()
    first = (since or today).replace(day=1)
    if through is None:
        through = today.replace(day=1)
        for _ in range(months_ahead):
            through = months_between(through, through + dt.timedelta(days=32))[-1]
    created = []
    for month in months_between(first, through):
        if await conn.fetchval("SELECT aegis_ensure_market_data_month($1)", month):
            created.append(month)
    if created:
        log.info(
            "market_data partitions created: %s", ", ".join(m.strftime("%Y-%m") for m in created)
        )
    return created


class PartitionCache:
    """Remembers months known to have a partition, so writes check each month once."""

    def __init__(self) -> None:
        self._ready: set[dt.date] = set()

    def missing(self, open_times_ms: list[int] | np.ndarray) -> list[dt.date]:
        if len(open_times_ms) == 0:
            return []
        stamps = np.asarray(open_times_ms, dtype=np.int64).astype("datetime64[ms]")
        months = np.unique(stamps.astype("datetime64[M]")).astype("datetime64[D]").tolist()
        return [m for m in months if m not in self._ready]

    async def ensure(self, conn: asyncpg.Connection, open_times_ms: list[int] | np.ndarray) -> None:
        for month in self.missing(open_times_ms):
            if await conn.fetchval("SELECT aegis_ensure_market_data_month($1)", month):
                log.info("market_data partition created for %s", month.strftime("%Y-%m"))
            self._ready.add(month)
