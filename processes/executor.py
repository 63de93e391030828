"""The executor process: brain intents and closed 1m bars in, paper orders and trades out.

Supervised by the kernel (``aegis.kernel``) through ``processes.runtime``: ``main(config)`` runs
``ExecutorProcess``. On start it rebuilds the paper book from PostgreSQL (open positions, pending
intents, every intent id already seen, cash) before reading any ring, so a restart continues
where the last life's committed writes stopped. It reads the ``market`` ring (consumer 1 of the
feed) after the brain (a pipeline: a bar reaches the executor once the brain has decided on it,
unless the brain stalls ``AEGIS_BRAIN_PATIENCE_S``) and the ``intents`` ring; intents first. It
sleeps on the rings' wake-ups (``RingWaiter``) and hands each batch to ``ExecutorService``; a
ring batch is committed only once its rows are. Intents are decided as soon as they are
published, and written once no more came for a few ms, so that PostgreSQL's work does not
delay the rest of a minute's intents (``executor_intents``). SIGTERM lets
the batches in hand be written, then ``drain`` takes what is left in both rings, persists it
and the process exits 0.

Live mode (``AEGIS_MODE=live``): orders go to ``AEGIS_REST_URL`` through
``aegis.binance.live.LiveExchange`` (see ``executor_live``), which journals each order before
sending it and is reconciled with the exchange before the first intent is taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from aegis.kernel.topology import ProcessConfig
from aegis.notify.notifier import DeliveryPolicy, Notifier
from aegis.processes.executor_intents import IntentPipeline
from aegis.processes.executor_live import LiveSession, open_live
from aegis.processes.executor_service import ExecutorService, PersistAborted
from aegis.processes.executor_symbols import SymbolDirectory, kernel_symbol_directory
from aegis.processes.ring_waiter import RingWaiter
from aegis.processes.runtime import KernelProcess, ProcessContext, run_process
from aegis.ringbuffer import ReadAhead
from aegis.store.executor_rows import LedgerBatch
from aegis.store.executor_tables import ExecutorTables, RestoredBook

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # records per ring batch: bounds one synchronous stretch well under 250 ms
IDLE_WAIT_S = 0.1  # longest sleep without a wake-up: bounds the reaction to a stop request
HELD_POLL_S = 0.005  # longest sleep while bars are held (``BarHold``) for intents to come first
BAR_QUIET_S = 0.005  # a bar batch waits until its newest bar was received this long ago...
BAR_HOLD_MAX_S = 0.05  # ...but never longer than this after the executor first saw it


class BarHold:
    """Holds bars while a minute's close burst is still arriving, so intents go first.

    At each minute's close hundreds of bars arrive within a few ms, and the brain publishes
    its intents on them meanwhile. Running the bars through the paper book is the executor's
    longest synchronous stretch (milliseconds at hundreds of open positions) and nothing in it
    is urgent at that scale: fills and exits are priced from the bars themselves. So a bar
    batch starts once no published bar waits for the brain and its newest bar is ``quiet_s``
    old (the feed's receive stamp), and at the latest ``max_s`` after the executor first saw
    bars waiting.
    """

    def __init__(self, quiet_s: float = BAR_QUIET_S, max_s: float = BAR_HOLD_MAX_S,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:  # fmt: skip
        self._quiet_ns = round(quiet_s * 1e9)
        self._max_ns = round(max_s * 1e9)
        self._clock = clock
        self._since: int | None = None  # when bars were first seen waiting

    def remaining_s(self, bars: np.ndarray, behind: bool) -> float:
        """Seconds to hold ``bars`` (a non-empty batch) before handling them; 0 to go now.

        ``behind``: more bars are published that the brain has not decided yet (the burst
        goes on); the answer is then the time left until ``max_s``. A batch of more than one
        market minute is a backlog (a replay, a restart), not a close burst: it goes at once.
        """
        if bars["open_time_ms"][0] != bars["open_time_ms"][-1]:
            self._since = None
            return 0.0
        now = self._clock()
        if self._since is None:
            self._since = now
        until = self._since + self._max_ns
        if not behind:
            # Not the last bar's: two connections' frames read in one loop turn are handled
            # one connection after the other, so ring order is not quite read order.
            newest = int(bars["recv_ns"].max())
            until = min(until, newest + self._quiet_ns)
        remaining = until - now
        if remaining <= 0:
            self._since = None
            return 0.0
        return remaining / 1e9


class LaneTables:
    """``ExecutorTables`` on two connections: a write takes whichever is idle.

    The executor writes an intent batch while a bar batch's write is in flight (``run``);
    every executor write is idempotent and only moves rows forward (``executor_tables``), so
    two in flight commit correctly in either order.
    """

    def __init__(self, database, *, mode: str) -> None:
        self._lanes = [ExecutorTables(database, mode=mode) for _ in range(2)]
        self._idle = list(self._lanes)
        self._freed = asyncio.Condition()

    @property
    def transactions(self) -> int:
        return sum(lane.transactions for lane in self._lanes)

    async def write(self, batch: LedgerBatch) -> None:
        async with self._freed:
            await self._freed.wait_for(lambda: self._idle)
            lane = self._idle.pop()
        try:
            await lane.write(batch)
        finally:
            async with self._freed:
                self._idle.append(lane)
                self._freed.notify()

    async def load(self, starting_cash: float) -> RestoredBook:
        return await self._lanes[0].load(starting_cash)

    async def load_known(self, starting_cash: float) -> RestoredBook:
        return await self._lanes[0].load_known(starting_cash)

    async def close(self) -> None:
        for lane in self._lanes:
            await lane.close()


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
        self._pipeline: IntentPipeline | None = None

    async def open(self, ctx: ProcessContext) -> None:
        settings = ctx.settings
        directory = self._directory or await kernel_symbol_directory(settings, ctx.db)
        policy = DeliveryPolicy(queue_size=settings.notify_queue_size,
                                timeout_s=settings.notify_timeout_s)  # fmt: skip
        self.notifier = Notifier.from_settings(settings, policy)
        await self.notifier.start()
        self.tables = LaneTables(ctx.db, mode=settings.mode)
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
        # The kernel's topology pipelines this consumer after the brain's (``after``).
        self._market = ctx.consumer(
            "market", max_batch=self._max_batch, patience_s=settings.brain_patience_s
        )

    async def run(self, ctx: ProcessContext) -> None:
        """Intents never wait for a database write (see ``executor_intents``).

        Intents are decided as they arrive while earlier ones are written; a bar batch's write
        runs as a task on its own connection while new intents are decided and written on the
        other. A new bar batch starts only when the last one is committed and every intent
        decided so far is written, so a fill can never be written before the NEW order row it
        fills, and not while a close burst is still arriving (``BarHold``).
        """
        intents = self._intent_pipeline()
        hold = BarHold()
        waiter = RingWaiter((intents.reader, self._market))
        bar_write: asyncio.Task | None = None
        try:
            while not ctx.stopping:
                worked = await intents.take()
                worked = intents.settle() or worked
                if bar_write is not None and bar_write.done():
                    handled, bar_write = bar_write.result(), None  # re-raises its failure
                    self._market.commit()
                    worked = worked or handled
                hold_s = 0.0
                if bar_write is None and intents.idle:
                    bars = self._market.poll()
                    if len(bars):
                        if intents.reader.ready:
                            continue  # intents decided on these bars go first
                        # More bars published than readable: the brain is still on the burst.
                        behind = self._market.lag > len(bars) and len(bars) < self._max_batch
                        hold_s = hold.remaining_s(bars, behind)
                        if not hold_s:
                            bar_write = asyncio.create_task(self.service.handle_bars(bars))
                            worked = True
                if worked:
                    await asyncio.sleep(0)
                    continue
                if hold_s:
                    # The loop's timers tick in ms: a shorter timeout would return at once.
                    await waiter.wait(min(max(hold_s, 0.001), HELD_POLL_S), (intents.reader,))
                elif bar_write is None and intents.idle:
                    # The brain's commit (``RingBinding.wakes``) wakes us, and the feed's
                    # publish only when no brain holds the bars: during a close burst the
                    # feed's publishes leave us asleep while the brain needs the CPU.
                    await waiter.wait(IDLE_WAIT_S)
                else:  # a batch's bars and intents stay readable until committed
                    due_s = intents.write_due_in_s()  # intents wait out the brain's burst
                    await waiter.wait(max(due_s, 0.001) if due_s else IDLE_WAIT_S,
                                      (intents.reader,), also=(bar_write, intents.writing))  # fmt: skip
        except PersistAborted:
            log.error("executor stopping with an unwritten batch; it stays in the ring")
        finally:
            waiter.close()
            # Stopping: decided intents and the bar batch are written (or given up) first.
            pending = [intents.finish()] if bar_write is None else [intents.finish(), bar_write]
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            if bar_write is not None and not isinstance(outcomes[1], BaseException):
                self._market.commit()
            if isinstance(outcomes[0], PersistAborted):
                log.error("executor stopping with unwritten intents; they stay in the ring")

    def _intent_pipeline(self) -> IntentPipeline:
        if self._pipeline is None:
            self._pipeline = IntentPipeline(self.service, ReadAhead(self._intents))
        return self._pipeline

    async def step(self) -> int:
        """Handle at most one batch of each ring, intents first; return records handled.

        The market batch is taken first: the brain has committed it (pipeline), so every
        intent it decided on those bars is on the intents ring by now, and is handled before
        the bars that may fill it. (``run`` does the same with the writes overlapped.)
        """
        handled = 0
        bars = self._market.poll()
        intents = self._intent_pipeline()
        taken = await intents.take()
        if taken:
            await intents.finish()
            handled += taken
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
