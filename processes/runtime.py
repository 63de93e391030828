"""The runtime every supervised process shares: start, heartbeat, stop gracefully, exit.

A process plugs in as a ``KernelProcess`` subclass and exposes ``main``::

    class Feed(KernelProcess):
        async def run(self, ctx: ProcessContext) -> None:
            market = ctx.producer("market")
            while not ctx.stopping:
                ...  # take input, publish, ``ctx.beat()`` inside long synchronous stretches

    def main(config: ProcessConfig) -> int:
        return run_process(Feed(), config)

``run_process`` sets the title ``aegis: <name>``, runs a uvloop event loop, gives the process
its **own** ``Database`` (an asyncpg pool created lazily inside this loop, never shared across
processes) and Redis client, attaches its rings by name, writes a heartbeat into the control
block every 100 ms, and marks the process ready. On SIGTERM (sent by
the watchdog, or by Linux when the watchdog dies — see ``aegis.kernel.child``) or when the
watchdog's pid goes away, ``ctx.stopping`` turns true: ``run`` finishes and commits its current
batch and returns, then ``drain`` flushes pending writes, connections close and the process
exits 0. A ``ConfigError`` while starting exits with ``BOOT_ERROR`` so the kernel does not
restart it in a loop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any, ClassVar

import asyncpg
import setproctitle
import uvloop

from aegis.config import ConfigError, Settings
from aegis.cpu_affinity import AffinityError, cpus_for
from aegis.kernel import exitcodes
from aegis.kernel.control import ControlBlock, HeartbeatWriter
from aegis.kernel.topology import ProcessConfig
from aegis.store.database import Database

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 0.1  # well under the 250 ms promise, and far under any deadline
PARENT_POLL_S = 0.25  # fallback of PR_SET_PDEATHSIG: notice a dead watchdog within 2 s
CLOSE_TIMEOUT_S = 5.0

# Start-up failures that no restart can fix: the configuration names something wrong.
_BOOT_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
)


class KernelProcess(abc.ABC):
    """The work of one supervised process; the runtime drives its life cycle.

    Class attributes say which connections the runtime opens for it.
    """

    uses_database: ClassVar[bool] = True
    uses_redis: ClassVar[bool] = True

    async def open(self, ctx: ProcessContext) -> None:  # noqa: B027 - optional hook
        """Prepare (load models, restore state); runs before the process is marked ready."""

    @abc.abstractmethod
    async def run(self, ctx: ProcessContext) -> None:
        """Work until ``ctx.stopping``; then finish and commit the current batch and return."""

    async def drain(self, ctx: ProcessContext) -> None:  # noqa: B027 - optional hook
        """After ``run`` returned on a stop: flush pending writes (connections still open)."""

    async def close(self, ctx: ProcessContext) -> None:  # noqa: B027 - optional hook
        """Release what ``open`` took; runs on every exit path."""


class ProcessContext:
    """What a running process can use: settings, connections, rings, heartbeat, stop flag."""

    def __init__(self, config: ProcessConfig, heartbeat: HeartbeatWriter | None) -> None:
        self.config = config
        self.settings: Settings = config.settings
        self.name = config.name
        self.db: Database | None = None  # this process's own pool (created lazily, in this loop)
        self.redis: Any = None  # redis.asyncio.Redis of this process, when it uses Redis
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._heartbeat = heartbeat
        self._rings: dict[str, Any] = {}
        self._producers: dict[str, Any] = {}
        self._consumers: dict[str, Any] = {}

    # -- stop -------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """True once the process was asked to stop."""
        return self._stop.is_set()

    def request_stop(self, reason: str) -> None:
        """Ask ``run`` to finish (idempotent; the first reason is kept)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def wait_stop(self, timeout: float | None = None) -> bool:
        """Sleep until stopped or ``timeout`` s passed; return True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout)
        return self._stop.is_set()

    # -- liveness ---------------------------------------------------------------------------
    def beat(self) -> None:
        """Prove liveness now; call it inside any synchronous stretch longer than ~250 ms."""
        if self._heartbeat is not None:
            self._heartbeat.beat()
        for consumer in self._consumers.values():
            consumer.beat()

    # -- rings ------------------------------------------------------------------------------
    def producer(self, ring: str, **kwargs: Any) -> Any:
        """This process's producer of ``ring`` (resumes at the cursor in shared memory)."""
        if ring not in self._producers:
            binding = self.config.binding(ring, producer=True)
            self._producers[ring] = self._ring(binding).producer(**kwargs)
        return self._producers[ring]

    def consumer(self, ring: str, **kwargs: Any) -> Any:
        """This process's consumer of ``ring`` (resumes at its committed sequence)."""
        if ring not in self._consumers:
            binding = self.config.binding(ring, producer=False)
            ring_obj = self._ring(binding)
            kwargs.setdefault("after", binding.after)
            kwargs.setdefault("wakes", binding.wakes)
            self._consumers[ring] = ring_obj.consumer(binding.consumer_index, **kwargs)
        return self._consumers[ring]

    def _ring(self, binding: Any) -> Any:
        if binding.ring not in self._rings:
            from aegis.ringbuffer import Ring

            self._rings[binding.ring] = Ring.attach(binding.shm_name, binding.dtype)
        return self._rings[binding.ring]

    def _close_rings(self) -> None:
        for obj in (*self._producers.values(), *self._consumers.values(), *self._rings.values()):
            with contextlib.suppress(Exception):
                obj.close()
        self._producers.clear()
        self._consumers.clear()
        self._rings.clear()


def run_process(process: KernelProcess, config: ProcessConfig) -> int:
    """Run ``process`` as the supervised process ``config.name``; return its exit code."""
    setproctitle.setproctitle(f"aegis: {config.name}")
    _configure_logging(config)
    pin_cpus(config.name, config.settings.cpu_affinity)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_lifecycle(process, config))


async def _lifecycle(process: KernelProcess, config: ProcessConfig) -> int:
    block, heartbeat = _attach_control(config)
    ctx = ProcessContext(config, heartbeat)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, ctx.request_stop, "SIGTERM")
    # Never run orphaned: watch the kernel, or whoever launched us when run outside one.
    parent = config.kernel_pid or os.getppid()
    watchers = [
        asyncio.create_task(_heartbeat(ctx), name="heartbeat"),
        asyncio.create_task(_watch_parent(ctx, parent), name="parent"),
    ]
    code = exitcodes.CLEAN
    try:
        code = await _serve(process, ctx, heartbeat)
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.close(ctx), CLOSE_TIMEOUT_S)
        ctx._close_rings()
        await _close_connections(ctx)
        if heartbeat is not None:
            heartbeat.release()
        if block is not None:
            block.close()
    log.info("%s exiting with code %d (%s)", config.name, code, ctx.stop_reason or "done")
    return code


async def _serve(
    process: KernelProcess, ctx: ProcessContext, heartbeat: HeartbeatWriter | None
) -> int:
    try:
        starting = asyncio.ensure_future(_start(process, ctx))
        stopped = asyncio.ensure_future(ctx._stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Stopped while still connecting: nothing was taken in, nothing to drain.
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return exitcodes.CLEAN
        stopped.cancel()
        starting.result()
    except _BOOT_ERRORS as exc:
        log.critical("%s cannot start: %s", ctx.name, exc)
        return exitcodes.BOOT_ERROR
    except Exception:
        log.exception("%s failed while starting", ctx.name)
        return exitcodes.FAILURE
    settle_heap()
    if heartbeat is not None:
        heartbeat.mark_ready()
    log.info("%s ready (pid %d)", ctx.name, os.getpid())
    try:
        await process.run(ctx)
        if ctx.stopping:
            log.info("%s stopping (%s): draining", ctx.name, ctx.stop_reason)
        await process.drain(ctx)
    except Exception:
        log.exception("%s failed", ctx.name)
        return exitcodes.FAILURE
    return exitcodes.CLEAN


async def _start(process: KernelProcess, ctx: ProcessContext) -> None:
    settings = ctx.settings
    # Neither connection is probed here: a database or Redis that is down is a transient
    # condition the process's writers ride out (spill, retry), not a reason to crash-loop.
    if process.uses_database:
        if not settings.database_url:
            raise ConfigError("AEGIS_DATABASE_URL: empty in a child (the watchdog resolves it)")
        ctx.db = Database(settings.database_url)
    if process.uses_redis:
        import redis.asyncio as aioredis

        if not settings.redis_url:
            raise ConfigError("AEGIS_REDIS_URL: empty in a child (the watchdog resolves it)")
        try:
            ctx.redis = aioredis.Redis.from_url(settings.redis_url)
        except ValueError as exc:
            raise ConfigError(f"AEGIS_REDIS_URL: {exc}") from None
    for binding in ctx.config.rings:
        ctx._ring(binding)
    if ctx.config.rings:
        warm_ring_kernels()
    await process.open(ctx)


def prepare() -> None:
    """Warm-spare hook (``ProcessSpec.prepare``): import and load everything config-free."""
    import redis.asyncio  # noqa: F401 - imported for its import time, not its names

    warm_ring_kernels()


def pin_cpus(name: str, spec: str) -> frozenset[int] | None:
    """Pin this process per ``AEGIS_CPU_AFFINITY`` (``aegis.cpu_affinity``); return the CPUs.

    Applied at each start, so a restarted or promoted spare is pinned like the first life. A
    plan the OS refuses (a CPU taken away since the kernel started) is logged, not fatal.
    """
    try:
        cpus = cpus_for(name, spec, os.sched_getaffinity(0))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
            log.info("%s pinned to CPU %s", name, ",".join(map(str, sorted(cpus))))
        return cpus
    except (AffinityError, OSError) as exc:
        log.warning("%s: CPU affinity %r not applied (%s); the OS schedules it", name, spec, exc)
        return None


def settle_heap() -> None:
    """Put every object alive now beyond the cyclic collector's reach (``gc.freeze``).

    Imports and start-up leave 80-90k tracked objects; a full collection walks them all, about
    40 ms here, at whatever moment allocations trigger it, possibly in the middle of a close
    burst. Frozen objects are never scanned again; what is allocated later is collected as
    usual. (A cycle among frozen objects that becomes garbage later is never reclaimed: what
    exists at start-up lives as long as the process anyway.) Call it again after a large
    warm-up.
    """
    gc.collect()
    gc.freeze()


def warm_ring_kernels() -> float:
    """Load the ring's compiled kernels now, on a private 8-slot ring; return seconds.

    On the ahead-of-time kernels this takes milliseconds; on the JIT fallback each kernel is
    loaded from Numba's cache on its first call, a few hundred ms in all. Paying that before
    the process reports ready keeps it out of the first hot-loop iteration, where it would
    stall the heartbeat. The kernels see the records as 8-byte words, so one private ring of
    any dtype loads the very specialisations the real rings use.
    """
    import time

    import numpy as np

    from aegis.records import BAR_DTYPE
    from aegis.ringbuffer import Ring

    t0 = time.monotonic()
    with Ring.create(f"aegis-warm-{os.getpid()}", BAR_DTYPE, 8, 1) as ring:
        producer, consumer = ring.producer(), ring.consumer(0)
        producer.publish_batch(np.zeros(2, dtype=BAR_DTYPE), timeout=0.0)
        producer.try_publish(np.zeros(1, dtype=BAR_DTYPE))
        consumer.poll()
        consumer.commit()
        consumer.wait_for(0.0)
    return time.monotonic() - t0


async def _close_connections(ctx: ProcessContext) -> None:
    if ctx.redis is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.redis.aclose(), CLOSE_TIMEOUT_S)
        ctx.redis = None
    if ctx.db is not None:
        with contextlib.suppress(Exception):
            await ctx.db.close()
        ctx.db = None


async def _heartbeat(ctx: ProcessContext) -> None:
    while True:
        ctx.beat()
        await asyncio.sleep(HEARTBEAT_PERIOD_S)


async def _watch_parent(ctx: ProcessContext, kernel_pid: int) -> None:
    while not ctx.stopping:
        if os.getppid() != kernel_pid:
            log.error("%s: parent (pid %d) is gone: stopping", ctx.name, kernel_pid)
            ctx.request_stop("watchdog gone")
            return
        await asyncio.sleep(PARENT_POLL_S)


def _attach_control(config: ProcessConfig) -> tuple[ControlBlock | None, HeartbeatWriter | None]:
    if not config.control_name:
        return None, None  # run by hand, outside a kernel
    block = ControlBlock.attach(config.control_name, writable=True)
    writer = block.heartbeat_writer(config.name)
    writer.beat()
    return block, writer


def _configure_logging(config: ProcessConfig) -> None:
    logging.basicConfig(
        level=config.settings.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s {config.name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
