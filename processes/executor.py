"""The executor process: brain intents and closed 1m bars in, paper orders and trades out.

Supervised by the kernel (``aegis.kernel``) through ``processes.runtime``: ``main(config)`` runs
``ExecutorProcess``. On start it rebuilds the paper book from PostgreSQL (open positions, pending
intents, every intent id already seen, cash) before reading any ring, so a restart continues
where the last life's committed writes stopped. Its loop polls the ``intents`` ring (consumer of
the brain) before the ``market`` ring (consumer 1 of the feed), hands each batch to
``ExecutorService`` — which returns once the batch's rows are committed — and only then
commits the ring batch. SIGTERM lets the current batch finish, then ``drain`` takes what is
left in both rings, persists it and the process exits 0.

Live mode (``AEGIS_MODE=live``): orders go to ``AEGIS_REST_URL`` through
``aegis.binance.live.LiveExchange`` (see ``executor_live``), which journals each order before
sending it and is reconciled with the exchange before the first intent is taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aegis.kernel.topology import ProcessConfig
from aegis.notify.notifier import DeliveryPolicy, Notifier
from aegis.processes.executor_live import LiveSession, open_live
from aegis.processes.executor_service import ExecutorService, PersistAborted
from aegis.processes.executor_symbols import SymbolDirectory, kernel_symbol_directory
from aegis.processes.runtime import KernelProcess, ProcessContext, run_process
from aegis.store.executor_tables import ExecutorTables

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # records per ring batch: bounds one synchronous stretch well under 250 ms
IDLE_SLEEP_S = 0.0005  # poll period while records keep coming
SLOW_IDLE_SLEEP_S = 0.005  # after ~1 s without records
SLOW_AFTER_IDLE_POLLS = 2000


class ExecutorProcess(KernelProcess):
    """The supervised executor.

    ``directory`` skips the REST universe load; ``checkpoint(name)`` is called at each
    ``CHECKPOINT_*`` of ``ExecutorService`` (crash tests kill the process there).
    """

    uses_database = True
    uses_redis = False

    def __init__(
        self,
        directory: SymbolDirectory | None = None,
        checkpoint: Callable[[str], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._directory = directory
        self._max_batch = max_batch
        self.live: LiveSession | None = None
        self._checkpoint = checkpoint
        self.service: ExecutorService | None = None
        self.notifier: Notifier | None = None
        self.tables: ExecutorTables | None = None
        self._intents = None
        self._market = None

    async def open(self, ctx: ProcessContext) -> None:
        settings = ctx.settings
        directory = self._directory or await kernel_symbol_directory(settings, ctx.db)
        policy = DeliveryPolicy(queue_size=settings.notify_queue_size,
                                timeout_s=settings.notify_timeout_s)  # fmt: skip
        self.notifier = Notifier.from_settings(settings, policy)
        await self.notifier.start()
        self.tables = ExecutorTables(ctx.db, mode=settings.mode)
        extra = {}
        if settings.mode == "live":
            self.live = await open_live(
                settings, directory, on_halt=ctx.request_stop, checkpoint=self._checkpoint
            )
            extra["live"] = self.live.exchange
        self.service = await ExecutorService.restore(
            self.tables,
            directory,
            settings,
            reports=ctx.producer("reports"),
            notifier=self.notifier,
            checkpoint=self._checkpoint,
            should_stop=lambda: ctx.stopping,
            **extra,
        )
        self._intents = ctx.consumer("intents", max_batch=self._max_batch)
        self._market = ctx.consumer("market", max_batch=self._max_batch)

    async def run(self, ctx: ProcessContext) -> None:
        idle = 0
        try:
            while not ctx.stopping:
                if await self.step():
                    idle = 0
                    continue
                idle += 1
                slow = idle > SLOW_AFTER_IDLE_POLLS
                await asyncio.sleep(SLOW_IDLE_SLEEP_S if slow else IDLE_SLEEP_S)
        except PersistAborted:
            log.error("executor stopping with an unwritten batch; it stays in the ring")

    async def step(self) -> int:
        """Handle at most one batch of each ring (intents first); return records handled."""
        handled = 0
        intents = self._intents.poll()
        if len(intents):
            handled += await self.service.handle_intents(intents)
            self._intents.commit()
        bars = self._market.poll()
        if len(bars):
            handled += await self.service.handle_bars(bars)
            self._market.commit()
        return handled

    async def drain(self, ctx: ProcessContext) -> None:
        if self.service is None:
            return
        try:
            while await self.step():
                pass
        except PersistAborted:
            log.error("executor drain stopped: database unreachable; the rest stays in the ring")
        svc = self.service
        log.info(
            "executor drained: %d intents (%d accepted, %d duplicates), %d bars, %d trades "
            "closed, rejections %s", svc.counters["intents"], svc.counters["intents_accepted"],
            svc.counters["intents_duplicate"], svc.counters["bars"],
            svc.counters["trades_closed"], dict(svc.rejections),
        )  # fmt: skip

    async def close(self, ctx: ProcessContext) -> None:
        if self.live is not None:
            await self.live.close()
        if self.tables is not None:
            await self.tables.close()
        if self.notifier is not None:
            await self.notifier.stop()


def main(config: ProcessConfig) -> int:
    """Entry point named in the kernel's process table (``aegis.processes.executor:main``)."""
    return run_process(ExecutorProcess(), config)
