"""The demo's live status line, its start signal to the simulator and its end-of-data stop.

A thread of the watchdog's process, reading only what anyone may read: the control block
(read-only), the rings by name, the simulator's ``/_sim/status`` and a few cheap queries on
PostgreSQL. It never touches the kernel's loop. Four jobs:

1. resume the simulator (started paused) once feed, brain and executor run and the feed's
   stream is connected, so the replay starts with everyone listening;
2. show progress: rewritten in place on a terminal, one plain line every ``status_every_s``
   otherwise — simulated date, bars through the kernel, signals, trades, open positions,
   equity, champion model;
3. pace the replay: while the slowest consumer of the market ring lags more than
   ``max_lag_minutes`` of market (all symbols), the simulator's clock is held, and it runs
   again once the lag is under a minute. The speed factor is then a ceiling: a slower machine
   gets a slower replay instead of a brain hours behind an executor that already saw the bars;
4. once the replay finished and every ring stayed drained for ``drain_quiet_s``, send this
   process SIGTERM: the kernel then stops exactly as on any SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from aegis.kernel.control import ControlBlock, ControlBlockError, KernelState, ProcessState
from aegis.kernel.rings import inspect_home
from aegis.kernel.topology import control_name, ring_shm_name

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
GIVE_UP_S = 30.0
# The newest stored bar trails the simulated clock by the feed's store flush (~0.25 s, hours
# of market at 20,000x); only a lag well beyond that means the stream was lost.
FEED_PAUSE_MS = 6 * 3_600_000  # replay over, rings drained, bars still missing: stop and say which
TICK_S = 0.02  # pacing reacts within ~20 ms (40 bars at 2,000 bars/s)
SIM_POLL_S = 0.5
TTY_REFRESH_S = 1.0

_COUNTS_SQL = """
SELECT (SELECT count(*) FROM signals) AS signals,
       (SELECT count(*) FROM virtual_trades) AS trades,
       (SELECT count(*) FROM ml_models) AS models,
       (SELECT model_version FROM ml_models WHERE status = 'champion') AS champion,
       (SELECT equity FROM account_state WHERE account = 'paper'
         ORDER BY ts_ms DESC LIMIT 1) AS equity,
       (SELECT open_positions FROM account_state WHERE account = 'paper'
         ORDER BY ts_ms DESC LIMIT 1) AS open_positions
"""


_NEWEST_SQL = """
SELECT s.symbol, (SELECT m.open_time_ms FROM market_data m
                  WHERE m.symbol = s.symbol AND m.timeframe = '1m'
                  ORDER BY m.open_time_ms DESC LIMIT 1) AS last_open
FROM unnest($1::text[]) AS s(symbol)
"""


@dataclass(frozen=True)
class Progress:
    """One reading of the demo's state."""

    wall_s: float
    sim_time_ms: int | None
    bars: int
    signals: int
    trades: int
    open_positions: int
    equity: float | None
    champion: int | None
    models: int
    restarts: int

    def line(self, starting_equity: float) -> str:
        when = "-" if not self.sim_time_ms else datetime.fromtimestamp(
            self.sim_time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")  # fmt: skip
        equity = "-" if self.equity is None else (
            f"{self.equity:,.2f} ({(self.equity / starting_equity - 1) * 100:+.2f}%)")  # fmt: skip
        model = "rule-only" if not self.champion else f"champion v{self.champion}"
        extra = f" | restarts {self.restarts}" if self.restarts else ""
        return (f"[{self.wall_s:5.0f}s] sim {when} | bars {self.bars:,} | signals {self.signals:,}"
                f" | trades {self.trades:,} | open {self.open_positions} | equity {equity}"
                f" | model {model} ({self.models} trained){extra}")  # fmt: skip


class ReplayPacer:
    """Hold the simulator's clock while the market ring's slowest consumer lags too far."""

    def __init__(self, sim, pause_lag: int, resume_lag: int, feed_pause_ms: int) -> None:
        self._sim = sim
        self.pause_lag = pause_lag
        self.resume_lag = resume_lag
        self.feed_pause_ms = feed_pause_ms
        self.paused = False
        self.holds = 0
        self.held_s = 0.0
        self._since = 0.0

    def update(self, lag: int, feed_lag_ms: int, finished: bool) -> None:
        """Pause or resume (a blocking HTTP call to the simulator, ~ms).

        ``lag``: records the market ring's slowest consumer is behind; ``feed_lag_ms``: how far
        the newest stored bar is behind the simulated clock (the feed lost its stream).
        """
        behind = lag > self.pause_lag or feed_lag_ms > self.feed_pause_ms
        caught_up = lag <= self.resume_lag and feed_lag_ms <= self.feed_pause_ms // 3
        if not self.paused and behind and not finished:
            self._sim.pause()
            self.paused, self.holds, self._since = True, self.holds + 1, time.monotonic()
        elif self.paused and (caught_up or finished):
            self._sim.resume()
            self.paused = False
            self.held_s += time.monotonic() - self._since


class DemoProgress(threading.Thread):
    """See the module docstring; ``finished`` tells whether the end of data was reached."""

    def __init__(self, settings, sim, plan, out: TextIO, expected_last: dict[str, int]) -> None:
        super().__init__(name="demo-progress", daemon=True)
        self._settings = settings
        self._sim = sim
        self._plan = plan
        self._out = out
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._halt = threading.Event()
        self._t0 = time.monotonic()
        self.resumed_at: float | None = None
        self.finished = False
        self.last: Progress | None = None
        self.error: str | None = None
        n = len(settings.symbols) or settings.top_n
        self.pacer = ReplayPacer(sim, plan.max_lag_minutes * n, n, FEED_PAUSE_MS)
        self._expected_last = dict(expected_last)  # symbol -> open time of its last bar
        self.missing: dict[str, int] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(10.0)

    def final_line(self) -> str:
        end = "end of data" if self.finished else "stopped before the end of data"
        if self.missing:
            end += " (bars never stored: " + ", ".join(sorted(self.missing)) + ")"
        p = self.pacer
        if p.holds:
            end += (f"; replay held {p.holds} times ({p.held_s:.0f} s) while the kernel lagged"
                    f" more than {self._plan.max_lag_minutes} min of market")  # fmt: skip
        body = self.last.line(self._settings.starting_equity) if self.last else "no progress read"
        return ("\n" if self._tty else "") + f"{body}\n{end}"

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # the thread must never take the demo down
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("demo progress failed")

    async def _main(self) -> None:
        import asyncpg

        home = Path(self._settings.home)
        block = await self._attach(home)
        if block is None:
            return
        conn = None
        try:
            conn = await asyncpg.connect(self._settings.database_url)
            await self._wait_and_resume(block)
            await self._watch(block, home, conn)
        finally:
            block.close()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _attach(self, home: Path) -> ControlBlock | None:
        while not self._halt.is_set():
            try:
                return ControlBlock.attach(control_name(home))
            except ControlBlockError:
                await asyncio.sleep(0.1)
        return None

    def _kernel_running(self, block: ControlBlock) -> bool:
        return block.kernel_state in (KernelState.STARTING, KernelState.RUNNING,
                                      KernelState.RELOADING)  # fmt: skip

    async def _wait_and_resume(self, block: ControlBlock) -> None:
        while not self._halt.is_set() and self._kernel_running(block):
            ready = all(v.state == ProcessState.RUNNING for v in block.views())
            if ready and (await self._sim_status()).get("stream_connections", 0) > 0:
                await asyncio.to_thread(self._sim.resume)
                self.resumed_at = time.monotonic()
                return
            await asyncio.sleep(0.1)

    async def _sim_status(self) -> dict:
        try:
            return await asyncio.to_thread(self._sim.status)
        except OSError:
            return {}

    async def _watch(self, block: ControlBlock, home: Path, conn) -> None:
        from aegis.records import BAR_DTYPE
        from aegis.ringbuffer import Ring

        market = Ring.attach(ring_shm_name(home, "market"), BAR_DTYPE)
        try:
            await self._loop(block, home, conn, market)
        finally:
            market.close()

    async def _loop(self, block: ControlBlock, home: Path, conn, market) -> None:
        every = TTY_REFRESH_S if self._tty else self._plan.status_every_s
        next_show = next_status = 0.0
        quiet_since: float | None = None
        status: dict = {}
        feed_lag_ms = 0
        while not self._halt.is_set() and self._kernel_running(block):
            now = time.monotonic()
            lag = max((c.lag for c in market.stats().consumers), default=0)
            polled = now >= next_status
            if polled:
                next_status = now + SIM_POLL_S
                status = await self._sim_status() or status
                newest = await self._newest(conn)
                if newest and status.get("sim_time_ms"):
                    feed_lag_ms = status["sim_time_ms"] - max(newest.values()) - MINUTE_MS
            finished = bool(status.get("replay_finished"))
            await asyncio.to_thread(self.pacer.update, lag, feed_lag_ms, finished)
            if now >= next_show:
                next_show = now + every
                self.last = await self._read(block, inspect_home(home), status, conn)
                self._show(self.last.line(self._settings.starting_equity))
            if finished and polled:  # end of data: every bar stored and every ring drained
                rings = inspect_home(home)
                drained = all(c.lag == 0 for r in rings for c in r.consumers)
                quiet_since = (quiet_since or now) if drained else None
                complete = all(newest.get(k, -1) >= v for k, v in self._expected_last.items())
                waited = 0.0 if quiet_since is None else now - quiet_since
                if (complete and waited >= self._plan.drain_quiet_s) or waited >= GIVE_UP_S:
                    self.missing = {k: v for k, v in self._expected_last.items()
                                    if newest.get(k, -1) < v}  # fmt: skip
                    self.last = await self._read(block, rings, status, conn)
                    self.finished = True
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            await asyncio.sleep(TICK_S)

    async def _newest(self, conn) -> dict[str, int]:
        """Open time of the newest stored 1m bar per symbol of the demo."""
        try:
            rows = await conn.fetch(_NEWEST_SQL, list(self._expected_last))
        except Exception as exc:
            log.debug("newest-bar query failed: %s", exc)
            return {}
        return {r["symbol"]: int(r["last_open"]) for r in rows if r["last_open"] is not None}

    async def _read(self, block: ControlBlock, rings, status: dict, conn) -> Progress:
        market = next((r for r in rings if r.ring == "market"), None)
        try:
            row = await conn.fetchrow(_COUNTS_SQL)
        except Exception as exc:  # PostgreSQL restarting: show what we have
            log.debug("progress query failed: %s", exc)
            row = None
        get = (lambda k: row[k]) if row is not None else (lambda k: None)
        return Progress(
            wall_s=time.monotonic() - self._t0,
            sim_time_ms=status.get("sim_time_ms"),
            bars=0 if market is None else market.cursor,
            signals=int(get("signals") or 0),
            trades=int(get("trades") or 0),
            open_positions=int(get("open_positions") or 0),
            equity=None if get("equity") is None else float(get("equity")),
            champion=get("champion"),
            models=int(get("models") or 0),
            restarts=sum(v.restarts for v in block.views()),
        )

    def _show(self, text: str) -> None:
        if self._tty:
            self._out.write("\r\x1b[2K" + text)
        else:
            self._out.write(text + "\n")
        self._out.flush()
