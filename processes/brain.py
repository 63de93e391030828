"""The brain process: closed bars from the market ring → intents on the intents ring.

Wiring only; the decisions are ``aegis.risk.brain_core.BrainCore``. At start it names the
universe (explicit ``AEGIS_SYMBOLS``: ids 1..n in list order, as ``select_universe`` gives
them; top N: the same exchangeInfo selection the executor makes), loads the champion model if
there is one, restores the account view from what the executor persisted, and warms the
features up from ``market_data`` (replaying the last label horizon to rebuild the pending-label
queue). Then, in a loop:

- take a batch from the market ring, run it through the core and publish the intents; once a
  close burst is over (no bar for a moment, or a later minute's bars), queue the rows of
  every batch taken on the durable writer, and only then commit those batches (``ReadAhead``:
  building rows never holds up the rest of a burst, and a crash still redelivers every bar whose
  rows were not queued);
- take executor reports: they close positions in the account view, and a closed trade becomes
  an experience row with its realised net return (source ``virtual_trade``);
- every few seconds poll the champion and hot-swap it (``ModelRegistry`` logs the version);
  every ``RETRAIN_CHECK_S`` ask the database whether retraining is due and, if so, start it in a
  spawned process (``TrainingJob``): the loop never waits for LightGBM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Mapping

import numpy as np

from aegis.binance.universe import FIRST_ID
from aegis.config import Settings
from aegis.features.vector import FEATURE_NAMES
from aegis.ml.champion import RetrainPolicy
from aegis.ml.registry import ModelRegistry
from aegis.ml.shadow import experience_rows
from aegis.ml.training import TrainingJob, TrainingParams, retrain_decision
from aegis.processes.brain_history import load_minute_bars
from aegis.processes.ring_waiter import RingWaiter
from aegis.processes.runtime import KernelProcess, ProcessContext, run_process, settle_heap
from aegis.records import INTENT_DTYPE, REPORT_TRADE_CLOSED
from aegis.ringbuffer import ReadAhead, RingFull
from aegis.risk.brain_core import BrainConfig, BrainCore, BrainStep
from aegis.risk.decision import DECISION_ENTERED, signal_rows
from aegis.store.database import is_transient
from aegis.store.durable import DurableWriter

log = logging.getLogger(__name__)

MODEL_POLL_S = 5.0
RETRAIN_CHECK_S = 30.0
DROP_LOG_S = 60.0
IDLE_WAIT_S = 0.1  # longest sleep without a ring wake-up (stop requests); housekeeping period
PUBLISH_TIMEOUT_S = 0.05
STORE_QUIET_S = 0.005  # no bar for this long: the close burst is over, build its rows
WRITE_LINGER_S = 0.05  # signals and labels wait out the close burst (see DurableWriter)
MARKET_MAX_BATCH = 1024  # ~3 minutes of 300 symbols: one synchronous stretch stays short
VIRTUAL_TRADE_SOURCE = "virtual_trade"


async def symbol_names(settings: Settings, database) -> dict[int, str]:
    """Symbol id → name of the universe the feed publishes (its ids, never a selection of ours)."""
    if settings.symbols:
        return {FIRST_ID + i: name for i, name in enumerate(settings.symbols)}
    from aegis.processes.feed_universe import published_universe

    return {s.symbol_id: s.symbol for s in (await published_universe(database)).symbols}


class Brain(KernelProcess):
    """The brain's life cycle; ``symbols`` overrides the universe lookup (tests, backtests)."""

    uses_redis = False

    def __init__(
        self,
        symbols: Mapping[int, str] | None = None,
        warm_up_days: float = 30.0,
        training: bool = True,
        model_poll_s: float = MODEL_POLL_S,
    ) -> None:
        self._symbols = symbols
        self._warm_up_ms = int(warm_up_days * 86_400_000)
        self._training = training
        self._model_poll_s = model_poll_s
        self._pending = np.zeros(0, INTENT_DTYPE)  # published on the next loop when ring full
        self._traded: dict[int, tuple[int, int, np.ndarray, int]] = {}
        self._unstored: deque[tuple[int, BrainStep]] = deque()  # (bars, step) taken, not stored
        self._unstored_minute: int | None = None  # oldest bar open time among them
        self._drops: Counter[str] = Counter()
        self._job: TrainingJob | None = None
        self._last_attempt_s: float | None = None
        self._next_model_poll = 0.0
        self._next_retrain_check = 0.0
        self._next_drop_log = 0.0
        self.stats = Counter()

    # -- start ----------------------------------------------------------------------------------
    async def open(self, ctx: ProcessContext) -> None:
        s = ctx.settings
        names = dict(self._symbols) if self._symbols is not None else await symbol_names(s, ctx.db)
        self.timeframe = s.decision_timeframe
        self.config = BrainConfig.from_settings(s, capacity=max(512, 2 * len(names)))
        self.core = BrainCore(self.config, names)
        self.registry = ModelRegistry(FEATURE_NAMES)
        self.writer = DurableWriter(ctx.db, s.home / "spill", name="brain",
                                    linger_s=WRITE_LINGER_S)  # fmt: skip
        await self.writer.start()
        self.train_params = TrainingParams.from_settings(s, FEATURE_NAMES)
        self.retrain_policy = RetrainPolicy(s.retrain_min_rows, s.retrain_interval_s)
        async with ctx.db.acquire() as conn:
            await self.registry.refresh(conn)
            await self._restore_account(conn, s, names)
        # A bounded batch keeps one synchronous stretch short when catching up after warm-up.
        self.market = ctx.consumer("market", max_batch=MARKET_MAX_BATCH)
        self.bars = ReadAhead(self.market)
        self.reports = ctx.consumer("reports")
        self.intents = ctx.producer("intents")
        self._names = names
        log.info("brain: %d symbols, rule %s, model %d", len(names), self.config.rule.name,
                 self.registry.version)  # fmt: skip

    async def _restore_account(self, conn, s: Settings, names: Mapping[int, str]) -> None:
        ids = {n: i for i, n in names.items()}
        equity = await conn.fetchval(
            "SELECT equity FROM account_state WHERE account = $1 ORDER BY ts_ms DESC LIMIT 1",
            s.mode,
        )
        rows = await conn.fetch(
            "SELECT position_id, symbol, notional, opened_at_ms FROM virtual_positions"
            " WHERE status = 'open'"
        )
        positions = [(int(r["position_id"]), ids[r["symbol"]], float(r["notional"]),
                      int(r["opened_at_ms"])) for r in rows if r["symbol"] in ids]  # fmt: skip
        self.core.book.restore(s.starting_equity if equity is None else float(equity), positions)

    async def _warm_up(
        self, ctx: ProcessContext, conn, names: Mapping[int, str], before_ms: int
    ) -> None:
        # The window ends at each symbol's newest stored bar, not at the wall clock: replayed
        # history (demo, backtest) is warmed up the same way as live data.
        bars = 0
        for symbol_id, name in names.items():
            t, cols = await load_minute_bars(conn, name, before_ms, self._warm_up_ms)
            if len(t):
                self.core.warm_up(symbol_id, t, *cols)
                bars += len(t)
            ctx.beat()
            if ctx.stopping:
                return
        step = self.core.finish_warm_up(self.registry.active)
        self._store(step)
        log.info("brain warm-up: %d bars from market_data, %d signals replayed, %d labels,"
                 " %d pending", bars, len(step.signals), len(step.labels),
                 self.core.labeler.pending)  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------
    async def run(self, ctx: ProcessContext) -> None:
        # Warm-up runs after "ready": 300 symbols x 30 days of minutes can outlast the
        # watchdog's start timeout; the market ring buffers meanwhile (hours at 300 symbols).
        # Bars still waiting in the market ring (not committed before a restart) are decided
        # live, not absorbed by the warm-up: a decision bar that closed while the brain was
        # down is then still traded, under the same intent id (the executor drops repeats).
        waiting = self.market.poll()
        before_ms = int(waiting["open_time_ms"].min()) if len(waiting) else np.iinfo(np.int64).max
        async with ctx.db.acquire() as conn:
            await self._warm_up(ctx, conn, self._names, before_ms)
        settle_heap()
        waiter = RingWaiter((self.bars, self.reports))
        # Housekeeping awaits the database (model poll, retrain check): as its own task, so
        # that a query in flight never holds up the next bar batch.
        chores = asyncio.create_task(self._housekeeping_loop(ctx), name="brain-housekeeping")
        try:
            while not ctx.stopping:
                if chores.done():
                    chores.result()  # re-raise what stopped it
                worked = self.step()
                if worked:
                    await asyncio.sleep(0)  # let the writer and the heartbeat run
                elif self._unstored:
                    # Rows are built once the burst is over, not between two of its bars.
                    if not await waiter.wait(STORE_QUIET_S):
                        self.store_taken()
                else:
                    await waiter.wait(IDLE_WAIT_S)
        finally:
            waiter.close()
            chores.cancel()
            await asyncio.gather(chores, return_exceptions=True)

    def step(self) -> int:
        """Handle the reports waiting and one market batch; return records handled.

        The batches taken stay uncommitted until ``store_taken``: once no bar came for
        ``STORE_QUIET_S`` (``run``), once a batch holds a later minute than the first one taken
        (a replay or a catch-up is not held back), or once they fill the consumer's view.
        """
        handled = 0
        # Reports first and always: an executor blocked on a full reports ring would never
        # read the intents ring again.
        reports = self.reports.poll()
        if len(reports):
            self._on_reports(reports)
            self.reports.commit()
            handled += len(reports)
        if len(self._pending) and not self._publish(self._pending):
            return handled  # back-pressure: the executor is not reading; keep the market batch
        batch = self.bars.take()
        if not len(batch):
            if self.market.lag > self.bars.outstanding:
                self.store_taken()  # more bars wait, but a view holds no more: make room
            return handled
        step = self.core.on_bars(batch, self.registry.active)
        if len(step.intents):
            # Published before the signal rows are built: the executor waits for them.
            # A report can name these intents only after this step (same loop).
            self._publish(step.intents)
            self._remember(step)
        self._unstored.append((len(batch), step))
        minutes = batch["open_time_ms"]
        if self._unstored_minute is None:
            self._unstored_minute = int(minutes.min())
        if int(minutes.max()) > self._unstored_minute:
            self.store_taken()  # a later minute came: the close burst of the first is over
        return handled + len(batch)

    def store_taken(self) -> int:
        """Queue the rows of every batch taken, then commit those bars; return bars committed."""
        count = 0
        while self._unstored:
            bars, step = self._unstored.popleft()
            self._drops.update({k: v for k, v in step.dropped.items() if v})
            self._store(step)
            count += bars
        self._unstored_minute = None
        self.bars.commit(count)
        return count

    def _publish(self, intents: np.ndarray) -> bool:
        intents = intents.copy()
        intents["publish_ns"] = time.monotonic_ns()
        try:
            self.intents.publish_batch(intents, timeout=PUBLISH_TIMEOUT_S)
        except RingFull as exc:
            self._pending = intents[exc.published :]
            self.stats["intent_ring_full"] += 1
            return False
        self._pending = intents[:0]
        self.stats["intents"] += len(intents)
        log.info("published %d intents (model %d)", len(intents), int(intents["model_version"][0]))
        return True

    def _store(self, step: BrainStep) -> None:
        now_ms = int(time.time() * 1000)
        if len(step.signals):
            self.writer.submit("signals", signal_rows(step.signals, self.core.name_of_id,
                                                      self.timeframe, now_ms))  # fmt: skip
            self.stats["signals"] += len(step.signals)
            self.stats["entered"] += int((step.signals["decision"] == DECISION_ENTERED).sum())
        if len(step.labels):
            rows = experience_rows(step.labels, self.core.name_of_index, self.timeframe, now_ms)
            self.writer.submit("experience_buffer", rows)
            self.stats["labels"] += len(rows)

    def _remember(self, step: BrainStep) -> None:
        i = step.intents
        columns = (i["intent_id"].tolist(), i["symbol_id"].tolist(),
                   i["decision_time_ms"].tolist(), i["model_version"].tolist())  # fmt: skip
        features = i["features"].copy()
        for k, row in enumerate(zip(*columns, strict=True)):
            intent_id, symbol_id, decision_ms, version = row
            self._traded[intent_id] = (symbol_id, decision_ms, features[k], version)

    def _on_reports(self, reports: np.ndarray) -> None:
        rows = []
        now_ms = int(time.time() * 1000)
        for r in reports:
            intent_id = int(r["intent_id"])
            self.core.book.on_report(intent_id, int(r["kind"]), float(r["net_return_pct"]))
            traded = self._traded.pop(intent_id, None)
            if traded is None or int(r["kind"]) != REPORT_TRADE_CLOSED:
                continue
            symbol_id, decision_ms, features, version = traded
            net = float(r["net_return_pct"])
            if np.isfinite(net):
                rows.append((VIRTUAL_TRADE_SOURCE, self.core.name_of_id(symbol_id), self.timeframe,
                             decision_ms, features.tolist(), net, 1.0, version, now_ms,
                             int(r["exit_time_ms"])))  # fmt: skip
        self.stats["reports"] += len(reports)
        if rows:
            self.writer.submit("experience_buffer", rows)

    async def _housekeeping_loop(self, ctx: ProcessContext) -> None:
        while not ctx.stopping:
            await self._housekeeping(ctx)
            await asyncio.sleep(IDLE_WAIT_S)

    async def _housekeeping(self, ctx: ProcessContext) -> None:
        now = time.monotonic()
        if self._job is not None:
            report = self._job.poll()
            if report is not None:
                self._job = None
                log.info("training finished: %s (%s), model %s, %d rows", report.status,
                         report.reason, report.model_version, report.rows)  # fmt: skip
                self._next_model_poll = 0.0
        if now >= self._next_model_poll:
            self._next_model_poll = now + self._model_poll_s
            await self._db_call(self.registry.refresh)
        if self._training and self._job is None and now >= self._next_retrain_check:
            self._next_retrain_check = now + RETRAIN_CHECK_S
            decision = await self._db_call(
                lambda conn: retrain_decision(
                    conn,
                    self.train_params,
                    self.retrain_policy,
                    last_attempt_s=self._last_attempt_s,
                )
            )
            if decision is not None and decision.due:
                self._last_attempt_s = time.time()
                self._job = TrainingJob(ctx.settings.database_url, self.train_params)
                log.info("retraining started (pid %s): %s", self._job.pid, decision.reason)
        if now >= self._next_drop_log:
            self._next_drop_log = now + DROP_LOG_S
            if self._drops:
                log.warning("market bars dropped since last report: %s", dict(self._drops))
                self._drops.clear()
            self._forget_old_trades()

    def _forget_old_trades(self) -> None:
        newest = max((v[1] for v in self._traded.values()), default=0)
        old = [k for k, v in self._traded.items() if newest - v[1] > 2 * self.config.horizon_ms]
        for k in old:
            del self._traded[k]

    async def _db_call(self, fn):
        try:
            async with self.writer.database.acquire() as conn:
                return await fn(conn)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.stats["db_unavailable"] += 1
            return None

    # -- stop -----------------------------------------------------------------------------------
    async def drain(self, ctx: ProcessContext) -> None:
        if len(self._pending):
            self._publish(self._pending)
        self.store_taken()
        if not await self.writer.flush(timeout_s=10.0):
            log.warning("brain: writer not drained at stop; the rest is spilled to disk")

    async def close(self, ctx: ProcessContext) -> None:
        if self._job is not None:
            self._job.terminate()
            self._job = None
        writer = getattr(self, "writer", None)
        if writer is not None:
            await writer.close()


def main(config) -> int:
    """Entry point of the supervised brain process."""
    days = config.settings.brain_warm_up_days
    return run_process(Brain(warm_up_days=days), config)
