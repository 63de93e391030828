"""``EventLog``: the kernel's crash history (starts, exits, restarts, stalls) in ``kernel_events``.

Recording never blocks and never fails because of the database: events go through the
process's ``DurableWriter`` with a client-made UUID, so a replayed event is stored once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aegis.store.database import Database
from aegis.store.durable import DurableWriter


@dataclass(frozen=True)
class KernelEvent:
    """One row of ``kernel_events``."""

    event_id: uuid.UUID
    ts_ms: int
    process: str
    pid: int | None
    event: str
    reason: str
    exit_code: int | None
    detail: Mapping[str, Any]


class EventLog:
    """Append-only log of process lifecycle events."""

    def __init__(self, writer: DurableWriter, *, clock_ms: Callable[[], int] | None = None) -> None:
        self._writer = writer
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def record(
        self,
        process: str,
        event: str,
        reason: str,
        pid: int | None = None,
        exit_code: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> KernelEvent:
        """Queue one event (e.g. ``record("feed", "exit", "crash", pid, -9)``); return it."""
        if not process or not event or not reason:
            raise ValueError("process, event and reason must be non-empty")
        row = KernelEvent(
            uuid.uuid4(),
            self._clock_ms(),
            process,
            pid,
            event,
            reason,
            exit_code,
            dict(detail or {}),
        )
        self._writer.submit(
            "kernel_events",
            [(row.event_id, row.ts_ms, process, pid, event, reason, exit_code, row.detail)],
        )
        return row


async def recent_events(
    database: Database, *, process: str | None = None, limit: int = 100
) -> list[KernelEvent]:
    """The newest events (optionally of one process), newest first."""
    async with database.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, ts_ms, process, pid, event, reason, exit_code, detail "
            "FROM kernel_events WHERE ($1::text IS NULL OR process = $1) "
            "ORDER BY ts_ms DESC LIMIT $2",
            process,
            limit,
        )
    return [KernelEvent(**dict(r)) for r in rows]
