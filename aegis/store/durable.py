"""The one write path every table uses: batched, idempotent, and lossless while the DB is down.

``DurableWriter.submit(table, rows)`` never blocks and never fails because of the database.
Rows wait in a bounded in-memory queue; a background task writes them in batches
(``COPY`` into a temp table, then ``INSERT … ON CONFLICT`` — see ``tables.py``), retrying
transient failures with jittered exponential backoff. Rows go to an append-only spill file
(``<home>/spill/``, fsync'ed, see ``spill.py``) when

* the queue bound is reached, or
* the database has been unreachable for ``spill_after_s`` — then the queue is moved to disk
  and new rows go straight there, so a crash during an outage loses at most ``spill_after_s``
  of data that only ever lived in memory (a clean ``close()`` spills everything).

With ``linger_s`` the writer waits that long after the first row of an empty queue, so the
rows a burst submits go out as one batch after it rather than competing with it.

A batch is first COPY'd straight into its table (fastest); if that hits a key conflict the
transaction aborts and the batch takes the staged path (COPY into a temp table, then
``INSERT … ON CONFLICT``), so the outcome is the same either way.

When the database answers again, spill files — this process's and any left by a dead one —
are replayed and deleted. Replay is idempotent, so a file replayed twice does no harm.
If the disk refuses a spill (full, read-only), the rows stay in memory beyond the bound and
one error line says so: memory is then the last place they can live.
Rows the database rejects as bad data are isolated by bisection and written, with the error,
to ``<spill>/dead-letter/``: kept, counted, logged, never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from aegis.backoff import backoff_delays
from aegis.store.database import Database, is_transient
from aegis.store.partitions import PartitionCache
from aegis.store.spill import SpillFile, claim_spills
from aegis.store.tables import UnknownTableError, table_spec

log = logging.getLogger(__name__)

# After a batch conflicted (a replay, an overlapping backfill), the next ones of that table
# likely conflict too: send this many straight to the staged path before trying COPY again.
_STAGED_AFTER_CONFLICT = 8
_SMALL_BATCH_ROWS = 32


@dataclass(frozen=True)
class DurableWriterStats:
    """Counters of one writer since it started."""

    queued_rows: int
    written_rows: int  # rows sent and committed (conflicting duplicates included)
    # Rows that were new or updated a row; batches of <= 32 rows go through executemany,
    # which does not report conflicts, so their rows all count here (an upper bound).
    inserted_rows: int
    spilled_rows: int
    replayed_rows: int
    dead_lettered_rows: int
    failed_attempts: int
    database_up: bool


@dataclass
class _Batch:
    table: str
    rows: list[tuple]


class DurableWriter:
    """Batched, retried, spill-backed writes of (table, rows) for one process."""

    def __init__(
        self,
        database: Database,
        spill_dir: Path,
        *,
        name: str = "store",
        max_queued_rows: int = 200_000,
        batch_rows: int = 20_000,
        spill_after_s: float = 5.0,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 5.0,
        rescan_s: float = 30.0,
        linger_s: float = 0.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.spill_dir = Path(spill_dir)
        self._name = name
        self._max_rows = max_queued_rows
        self._batch_rows = batch_rows
        self._spill_after = spill_after_s
        self._backoff = (backoff_base_s, backoff_cap_s, rng or random.Random())
        self._delays = backoff_delays(*self._backoff)
        self._rescan = rescan_s
        self._linger = linger_s
        self._queued_since = 0.0  # when the queue last went from empty to not empty
        self._sleep = sleep
        self._clock = clock
        self._partitions = PartitionCache()
        self._direct_skips: dict[str, int] = {}
        self._queue: deque[_Batch] = deque()
        self._queued = 0
        self._active: SpillFile | None = None
        self._spill_seq = itertools.count()
        self._replay_pending = True  # files from an earlier run may be waiting
        self._down_since: float | None = None
        self._failures_this_outage = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set by the loop whenever it runs out of work
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False
        self._spill_failing = False
        self._counts = dict.fromkeys(
            ("written", "inserted", "spilled", "replayed", "dead", "failed"), 0
        )

    # -- public API
    async def start(self) -> None:
        """Start the background writer (inside the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self._name}-writer"
            )

    def submit(self, table: str, rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> int:
        """Queue rows for ``table`` (tuples in column order or mappings); return how many.

        Raises ``UnknownTableError`` / ``RowShapeError`` at once for rows that cannot belong
        to the table; never raises because of the database.
        """
        tuples = table_spec(table).to_tuples(rows)
        if not tuples:
            return 0
        to_disk = (
            self._closing or self._spilling_direct() or self._queued + len(tuples) > self._max_rows
        )
        if not (to_disk and self._try_spill(table, tuples)):
            if not self._queue:
                self._queued_since = self._clock()
            self._queue.append(_Batch(table, tuples))
            self._queued += len(tuples)
        self._wakeup.set()
        return len(tuples)

    @property
    def drained(self) -> bool:
        """True when every submitted row is in the database (nothing queued or spilled)."""
        return not (self._queue or self._busy or self._active or self._replay_pending)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until ``drained``; return False if ``timeout_s`` passed first."""
        if self._task is None:
            raise RuntimeError("DurableWriter.flush() before start()")
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout_s):
                while not self.drained:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to ``timeout_s``, then spill whatever is left and stop."""
        if self._task is not None:
            await self.flush(timeout_s)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._spill_queue()
        if self._active is not None:
            self._active.close()
            self._active = None
        await self.database.close()

    @property
    def stats(self) -> DurableWriterStats:
        c = self._counts
        return DurableWriterStats(
            self._queued,
            c["written"],
            c["inserted"],
            c["spilled"],
            c["replayed"],
            c["dead"],
            c["failed"],
            self._down_since is None,
        )

    # -- the loop
    async def _run(self) -> None:
        while True:
            if not (self._queue or self._replay_pending or self._active):
                self._busy = False
                self._idle.set()
                if self._closing:
                    return
                try:
                    async with asyncio.timeout(self._rescan):
                        await self._wakeup.wait()
                except TimeoutError:
                    self._replay_pending = True  # look for files a dead process left
                self._wakeup.clear()
                continue
            self._busy = True
            try:
                if self._down_since is not None:
                    await self._probe()
                    self._mark_up()
                if self._queue:
                    wait = self._queued_since + self._linger - self._clock()
                    if wait > 0 and not self._closing:
                        # Rows come in bursts (every symbol's bar closes at once); written
                        # after it, they are one batch and leave the CPU to its decisions.
                        await asyncio.sleep(wait)
                    await self._write_head()
                else:
                    if self._active is not None:  # caught up: let our own file be replayed
                        self._active.close()
                        self._active = None
                    await self._replay()
                self._mark_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("%s writer: unexpected error, will retry", self._name)
                self._mark_down(exc)
                await self._sleep(next(self._delays))

    async def _probe(self) -> None:
        async with self.database.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def _write_head(self) -> None:
        table = self._queue[0].table
        take, rows = 0, []
        for batch in self._queue:
            if batch.table != table or (rows and len(rows) + len(batch.rows) > self._batch_rows):
                break
            rows.extend(batch.rows)
            take += 1
        await self._write_isolating(table, rows)
        for _ in range(take):
            self._queued -= len(self._queue.popleft().rows)

    async def _replay(self) -> None:
        exclude = self._active.path if self._active else None
        claims = claim_spills(self.spill_dir, exclude=exclude)
        try:
            for claim in claims:
                rows = 0
                for table, batch in claim.batches():
                    await self._write_isolating(table, batch)
                    rows += len(batch)
                claim.delete()
                self._counts["replayed"] += rows
                log.info("%s writer: replayed %d rows from %s", self._name, rows, claim.path.name)
        finally:
            for claim in claims:
                claim.release()
        self._replay_pending = False

    async def _write_isolating(self, table: str, rows: list[tuple]) -> None:
        """Write rows; rows the database rejects as data errors go to the dead-letter file."""
        try:
            await self._write(table, rows)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(rows) == 1 or isinstance(exc, UnknownTableError):
                self._dead_letter(table, rows, exc)
                return
            half = len(rows) // 2
            await self._write_isolating(table, rows[:half])
            await self._write_isolating(table, rows[half:])

    async def _write(self, table: str, rows: list[tuple]) -> None:
        """One batch in one transaction: COPY straight into the table when it has no conflict,
        else COPY into a temp table + INSERT … ON CONFLICT (the idempotent path)."""
        spec = table_spec(table)
        async with self.database.acquire() as conn:
            if spec.partition_column is not None:
                col = spec.columns.index(spec.partition_column)
                await self._partitions.ensure(conn, [r[col] for r in rows])
            if len(rows) <= _SMALL_BATCH_ROWS:
                # A handful of rows (an order, an event): one prepared statement beats the
                # COPY protocol's extra round trips.
                async with conn.transaction():
                    await conn.executemany(spec.values_sql(), rows)
                self._counts["written"] += len(rows)
                self._counts["inserted"] += len(rows)  # upper bound: conflicts not reported
                return
            if self._direct_skips.get(table, 0) == 0:
                try:
                    # Fast path (~2x): most batches are new rows. A conflict aborts the whole
                    # COPY atomically, and the batch goes through the staged path instead.
                    async with conn.transaction():
                        await conn.copy_records_to_table(table, records=rows, columns=spec.columns)
                except asyncpg.UniqueViolationError:
                    self._direct_skips[table] = _STAGED_AFTER_CONFLICT
                else:
                    self._counts["written"] += len(rows)
                    self._counts["inserted"] += len(rows)
                    return
            else:
                self._direct_skips[table] -= 1
            async with conn.transaction():
                await conn.execute(spec.create_stage_sql())
                await conn.copy_records_to_table(spec.stage, records=rows, columns=spec.columns)
                status = await conn.execute(spec.insert_sql())
        self._counts["written"] += len(rows)
        self._counts["inserted"] += int(status.rsplit(" ", 1)[-1])

    # -- state changes
    def _mark_down(self, exc: BaseException) -> None:
        self._counts["failed"] += 1
        self._failures_this_outage += 1
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning(
                "%s writer: database unavailable (%s: %s); queueing %d rows in memory, "
                "spilling to %s after %.1f s",
                self._name,
                type(exc).__name__,
                exc,
                self._queued,
                self.spill_dir,
                self._spill_after,
            )
        if self._spilling_direct():
            self._spill_queue()

    def _mark_up(self) -> None:
        if self._down_since is None:
            return
        log.warning(
            "%s writer: database back after %.1f s and %d failed attempts; replaying spill",
            self._name,
            self._clock() - self._down_since,
            self._failures_this_outage,
        )
        self._down_since = None
        self._failures_this_outage = 0
        self._delays = backoff_delays(*self._backoff)
        if self._active is not None:
            self._active.close()
            self._active = None
        self._replay_pending = True

    def _spilling_direct(self) -> bool:
        return (
            self._down_since is not None and self._clock() - self._down_since >= self._spill_after
        )

    def _spill(self, table: str, rows: list[tuple]) -> None:
        if self._active is None:
            stem = f"{self._name}-{os.getpid()}-{time.time_ns()}-{next(self._spill_seq)}"
            self._active = SpillFile(self.spill_dir, stem)
            log.warning("%s writer: spilling to %s", self._name, self._active.path)
        self._active.append(table, rows)
        self._counts["spilled"] += len(rows)

    def _spill_queue(self) -> None:
        while self._queue:
            batch = self._queue[0]
            if not self._try_spill(batch.table, batch.rows):
                return  # the disk refused: the rows stay in memory
            self._queue.popleft()
            self._queued -= len(batch.rows)

    def _try_spill(self, table: str, rows: list[tuple]) -> bool:
        """Spill, or report False (logged once per failure streak) so the caller keeps the rows
        in memory: a full or broken disk must not drop data that memory can still hold."""
        try:
            self._spill(table, rows)
        except OSError as exc:
            if not self._spill_failing:
                log.error(
                    "%s writer: cannot spill to %s (%s); keeping rows in memory over the bound",
                    self._name, self.spill_dir, exc,
                )  # fmt: skip
            self._spill_failing = True
            if self._active is not None:
                self._active.close()
                self._active = None
            return False
        self._spill_failing = False
        return True

    def _dead_letter(self, table: str, rows: list[tuple], exc: BaseException) -> None:
        dead = SpillFile(self.spill_dir / "dead-letter", f"{table}-{os.getpid()}-{time.time_ns()}")
        dead.append(table, rows)
        dead.close()
        self._counts["dead"] += len(rows)
        log.error(
            "%s writer: %d %s row(s) rejected by the database (%s: %s); kept in %s",
            self._name,
            len(rows),
            table,
            type(exc).__name__,
            exc,
            dead.path,
        )
