"""A test workload for the kernel: three processes moving numbered records through real rings.

It stands in for feed, brain and executor in the kernel tests and the restart benchmark (the
real processes live in ``aegis.processes``). Every record carries its own ring sequence
(market: ``open_time_ms``; intents: ``decision_time_ms``; reports: ``entry_time_ms``), so a
consumer can prove that what it reads continues exactly where its committed sequence says.

Each consumer appends ``<first> <last> <pid>`` to ``<home>/workload/<process>.<ring>.log``
*before* committing a batch, so after any number of kills the log must cover 0..N without a
gap (a batch handled but not committed before a SIGKILL legitimately appears twice). The first
record a fresh process consumes is stamped in ``<process>.first`` (pid and monotonic ns), which
the restart benchmark reads.

Run as a script, it is a kernel: ``python tests/workload.py <table>`` with ``AEGIS_*`` settings.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from aegis.config import ConfigError, Settings
from aegis.kernel.topology import ProcessConfig, ProcessSpec, ProcessTable, RingSpec
from aegis.processes.runtime import KernelProcess, ProcessContext, run_process
from aegis.records import BAR_DTYPE, INTENT_DTYPE, REPORT_DTYPE
from aegis.ringbuffer import RingFull

BATCH = 10
PERIOD_S = 0.005  # ~2000 market records per second
INTENT_EVERY = 5  # one intent per 5 market records
DRAIN_LIMIT_S = 2.0


def workload_dir(home: Path) -> Path:
    path = Path(home) / "workload"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Journal:
    """Append-only batch log of one process on one ring (one write() per line: atomic)."""

    def __init__(self, home: Path, process: str, ring: str) -> None:
        path = workload_dir(home) / f"{process}.{ring}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def batch(self, first: int, last: int) -> None:
        os.write(self._fd, f"{first} {last} {os.getpid()}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


def _stamp_first(home: Path, process: str) -> None:
    with open(workload_dir(home) / f"{process}.first", "a") as f:
        f.write(f"{os.getpid()} {time.monotonic_ns()}\n")


class _Checked:
    """A consumer whose batches must continue its committed sequence exactly."""

    def __init__(self, ctx: ProcessContext, ring: str, field: str) -> None:
        self.consumer = ctx.consumer(ring)
        self.field = field
        self.ring = ring
        self.journal = _Journal(ctx.settings.home, ctx.name, ring)

    def take(self) -> np.ndarray:
        batch = self.consumer.poll()
        if len(batch):
            expected = np.arange(self.consumer.sequence, self.consumer.sequence + len(batch))
            got = batch[self.field]
            if not np.array_equal(got, expected):
                raise AssertionError(
                    f"{self.ring}: records {got[:5]}... where sequence {expected[:5]}... expected"
                )
        return batch

    def commit(self, batch: np.ndarray) -> None:
        if len(batch):
            seq = self.consumer.sequence
            self.journal.batch(seq, seq + len(batch) - 1)
            self.consumer.commit()


class Source(KernelProcess):
    """Stands in for the feed: publishes numbered bars until told to stop."""

    uses_database = False
    uses_redis = False

    async def run(self, ctx: ProcessContext) -> None:
        market = ctx.producer("market")
        journal = _Journal(ctx.settings.home, ctx.name, "market")
        pending = np.zeros(0, dtype=BAR_DTYPE)
        while not ctx.stopping:
            if not len(pending):
                pending = np.zeros(BATCH, dtype=BAR_DTYPE)
                pending["open_time_ms"] = market.cursor + np.arange(BATCH)
                pending["recv_ns"] = time.monotonic_ns()
                pending["close"] = 100.0
            first = market.cursor
            try:
                market.publish_batch(pending, timeout=0.0)
                pending = pending[:0]
            except RingFull as exc:  # a consumer is slow or down: keep the rest, try later
                pending = pending[exc.published :]
            if market.cursor > first:
                journal.batch(first, market.cursor - 1)
            await asyncio.sleep(PERIOD_S)


class Decider(KernelProcess):
    """Stands in for the brain: market → intents; also consumes reports."""

    uses_database = False

    async def run(self, ctx: ProcessContext) -> None:
        self.market = _Checked(ctx, "market", "open_time_ms")
        self.reports = _Checked(ctx, "reports", "entry_time_ms")
        self.intents = ctx.producer("intents")
        first = True
        while not ctx.stopping:
            n = self._step()
            if n and first:
                _stamp_first(ctx.settings.home, ctx.name)
                first = False
            await asyncio.sleep(PERIOD_S)

    def _step(self) -> int:
        batch = self.market.take()
        if len(batch):
            picked = batch[batch["open_time_ms"] % INTENT_EVERY == 0]
            if len(picked):
                out = np.zeros(len(picked), dtype=INTENT_DTYPE)
                out["intent_id"] = picked["open_time_ms"]
                out["decision_time_ms"] = self.intents.cursor + np.arange(len(picked))
                out["publish_ns"] = time.monotonic_ns()
                self.intents.publish_batch(out, timeout=1.0)
            self.market.commit(batch)
        reports = self.reports.take()
        self.reports.commit(reports)
        return len(batch)

    async def drain(self, ctx: ProcessContext) -> None:
        # The feed stopped first: consume what is left of the market ring, then stop.
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while self.market.consumer.lag and time.monotonic() < deadline:
            self._step()
            ctx.beat()


class Executor(KernelProcess):
    """Stands in for the executor: market + intents → reports; persists its progress."""

    async def open(self, ctx: ProcessContext) -> None:
        async with ctx.db.acquire() as conn:  # its own pool, in its own loop
            self.backend_pid = await conn.fetchval("SELECT pg_backend_pid()")

    async def run(self, ctx: ProcessContext) -> None:
        self.market = _Checked(ctx, "market", "open_time_ms")
        self.intents = _Checked(ctx, "intents", "decision_time_ms")
        self.reports = ctx.producer("reports")
        first = True
        while not ctx.stopping:
            n = self._step()
            if n and first:
                _stamp_first(ctx.settings.home, ctx.name)
                first = False
            await asyncio.sleep(PERIOD_S)

    def _step(self) -> int:
        bars = self.market.take()
        self.market.commit(bars)
        intents = self.intents.take()
        if len(intents):
            out = np.zeros(len(intents), dtype=REPORT_DTYPE)
            out["intent_id"] = intents["intent_id"]
            out["entry_time_ms"] = self.reports.cursor + np.arange(len(intents))
            self.reports.publish_batch(out, timeout=1.0)
            self.intents.commit(intents)
        return len(bars)

    async def drain(self, ctx: ProcessContext) -> None:
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while (self.intents.consumer.lag or self.market.consumer.lag) and (
            time.monotonic() < deadline
        ):
            self._step()
            ctx.beat()
        key = f"{ctx.settings.redis_prefix}executor:persisted"
        await ctx.redis.set(key, f"{self.intents.consumer.sequence} {self.backend_pid}")


class Idle(KernelProcess):
    """Only heartbeats: drives the memory guard."""

    uses_database = False
    uses_redis = False

    async def run(self, ctx: ProcessContext) -> None:
        await ctx.wait_stop()


class Stubborn(KernelProcess):
    """Heartbeats but never honours a stop: drives the shutdown deadline."""

    uses_database = False
    uses_redis = False

    async def run(self, ctx: ProcessContext) -> None:
        while True:
            await asyncio.sleep(0.05)


class FailingDrain(KernelProcess):
    """Stops on request but its drain fails: a shutdown that is not clean."""

    uses_database = False
    uses_redis = False

    async def run(self, ctx: ProcessContext) -> None:
        await ctx.wait_stop()

    async def drain(self, ctx: ProcessContext) -> None:
        raise OSError("workload: pending writes could not be flushed")


class Crashing(KernelProcess):
    """Exits with an error shortly after start: drives the crash-loop detection."""

    uses_database = False
    uses_redis = False

    async def run(self, ctx: ProcessContext) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("workload: crashing on purpose")


class BadConfig(KernelProcess):
    """Fails its start with a configuration error: must end FATAL, never restarted in a loop."""

    uses_database = False
    uses_redis = False

    async def open(self, ctx: ProcessContext) -> None:
        raise ConfigError("AEGIS_SYMBOLS: workload cannot use this configuration")

    async def run(self, ctx: ProcessContext) -> None:  # pragma: no cover - never reached
        raise AssertionError("unreachable")


def feed_main(config: ProcessConfig) -> int:
    return run_process(Source(), config)


def brain_main(config: ProcessConfig) -> int:
    return run_process(Decider(), config)


def executor_main(config: ProcessConfig) -> int:
    return run_process(Executor(), config)


def idle_main(config: ProcessConfig) -> int:
    return run_process(Idle(), config)


def stubborn_main(config: ProcessConfig) -> int:
    return run_process(Stubborn(), config)


def failing_drain_main(config: ProcessConfig) -> int:
    return run_process(FailingDrain(), config)


def crashing_main(config: ProcessConfig) -> int:
    return run_process(Crashing(), config)


def bad_config_main(config: ProcessConfig) -> int:
    return run_process(BadConfig(), config)


RINGS = (
    RingSpec("market", BAR_DTYPE, producer="feed", consumers=("brain", "executor")),
    RingSpec("intents", INTENT_DTYPE, producer="brain", consumers=("executor",)),
    RingSpec("reports", REPORT_DTYPE, producer="executor", consumers=("brain",)),
)

TABLES = {
    "flow": ProcessTable(
        processes=(
            ProcessSpec("feed", "workload:feed_main"),
            ProcessSpec("brain", "workload:brain_main"),
            ProcessSpec("executor", "workload:executor_main"),
        ),
        rings=RINGS,
    ),
    "idle": ProcessTable(processes=(ProcessSpec("idle", "workload:idle_main"),)),
    "stubborn": ProcessTable(processes=(ProcessSpec("stubborn", "workload:stubborn_main"),)),
    "failing_drain": ProcessTable(
        processes=(ProcessSpec("failing", "workload:failing_drain_main"),)
    ),
    "crashing": ProcessTable(
        processes=(
            ProcessSpec("feed", "workload:feed_main"),
            ProcessSpec("crasher", "workload:crashing_main"),
        ),
        rings=(RingSpec("market", BAR_DTYPE, producer="feed", consumers=("crasher",)),),
    ),
    "bad_config": ProcessTable(
        processes=(
            ProcessSpec("feed", "workload:feed_main"),
            ProcessSpec("broken", "workload:bad_config_main"),
        ),
        rings=(RingSpec("market", BAR_DTYPE, producer="feed", consumers=("broken",)),),
    ),
}


def coverage(home: Path, process: str, ring: str) -> tuple[int, list[tuple[int, int]]]:
    """(records covered from 0 without a gap, gaps found) of one consumer's journal."""
    path = workload_dir(home) / f"{process}.{ring}.log"
    spans = sorted(
        (int(a), int(b)) for a, b, _ in (line.split() for line in path.read_text().splitlines())
    )
    covered, gaps = 0, []
    for first, last in spans:
        if first > covered:
            gaps.append((covered, first - 1))
        covered = max(covered, last + 1)
    return covered, gaps


def published_count(home: Path, process: str, ring: str) -> int:
    """Records a producer published (sequence after its highest journaled batch)."""
    path = workload_dir(home) / f"{process}.{ring}.log"
    return max((int(line.split()[1]) + 1 for line in path.read_text().splitlines()), default=0)


if __name__ == "__main__":
    from aegis.kernel.run import run_main

    sys.exit(
        run_main(
            Settings.load(),
            TABLES[sys.argv[1]],
            reload=Settings.load,
            start_timeout_s=float(os.environ.get("WORKLOAD_START_TIMEOUT_S", "20")),
            warm_spares=os.environ.get("WORKLOAD_WARM_SPARES", "1") == "1",
        )
    )
