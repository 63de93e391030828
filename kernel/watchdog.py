"""The arbiter: start the children, keep them alive, stop them in order.

One loop, gunicorn-style: sleep until a child exits, a signal arrives or a tick passes → drain
the signal queue and dispatch ``handle_<signame>`` → reap exits → check heartbeats, start
timeouts and memory → escalate overdue SIGTERMs to SIGKILL → advance a rolling restart → start
what is missing. Signal handlers only enqueue (``SimpleQueue.put_nowait``); the wake-up fd makes
the sleep return at once.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aegis.config import ConfigError, Settings
from aegis.kernel import exitcodes
from aegis.kernel.control import ControlBlock, KernelState, ProcessState
from aegis.kernel.control import unlink as unlink_shm
from aegis.kernel.events import EventRecorder, KernelEvent
from aegis.kernel.rings import RingHost
from aegis.kernel.signals import SignalQueue
from aegis.kernel.status import format_table, snapshot
from aegis.kernel.supervised import SupervisedChild, keep_spares, sweep_warm_up_segments
from aegis.kernel.topology import (
    ProcessConfig,
    ProcessSpec,
    ProcessTable,
    bindings_for,
    control_name,
)

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5


@dataclass
class _Shutdown:
    reason: str
    code: int  # exit code when every child stops within the deadline
    deadline: float
    order: collections.deque[SupervisedChild] = field(default_factory=collections.deque)
    forced: bool = False
    unclean: list[str] = field(default_factory=list)  # children that failed while stopping


class Watchdog:
    """Supervise the processes of ``table`` on ``settings.home`` until shut down; see ``run``."""

    def __init__(
        self,
        settings: Settings,
        table: ProcessTable,
        *,
        rings: RingHost,
        events: EventRecorder,
        reload: Callable[[], Settings] | None = None,
        start_timeout_s: float = 30.0,
        warm_spares: bool = True,
        tick_s: float = 0.05,
        sample_every_s: float = 0.5,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.table = table
        self._rings = rings
        self._events = events
        self._reload = reload
        self._start_timeout_s = start_timeout_s
        self._warm_spares = warm_spares
        self._tick_s = tick_s
        self._sample_every_s = sample_every_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._signal_queue = SignalQueue()
        self.block: ControlBlock | None = None
        self.children: list[SupervisedChild] = []
        self._shutdown: _Shutdown | None = None
        self._rolling: collections.deque[SupervisedChild] = collections.deque()
        self._rolling_current: SupervisedChild | None = None
        self._next_sample = 0.0

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Create the control block and the rings, install the signal handlers."""
        name = control_name(self.settings.home)
        try:
            self.block = ControlBlock.create(name, self.table.names())
        except FileExistsError:
            # We hold the home's lock, so whoever made it is dead: it is stale.
            unlink_shm(name)
            log.warning("removed stale control block %s left by a dead kernel", name)
            self.block = ControlBlock.create(name, self.table.names())
        self.block.header["heartbeat_deadline_ns"] = int(self.settings.heartbeat_deadline_s * 1e9)
        self.block.header["kernel_state"] = KernelState.STARTING
        sweep_warm_up_segments()
        self._rings.create(self.table, self.settings)
        self.children = [
            SupervisedChild(spec, i, self.block, self._config_for, warm_spare=self._warm_spares)
            for i, spec in enumerate(self.table.processes)
        ]
        self._signal_queue.install()

    def close(self) -> None:
        """Kill leftovers, restore signals, unlink the rings and the control block."""
        for child in self.children:
            child.close()
        for child in self.children:
            if child.alive:
                child.kill()
                if child.process is not None:
                    child.process.join(2.0)
                child.poll_exit()
        self._signal_queue.restore()
        _stop_resource_tracker()
        self._rings.close()
        if self.block is not None:
            self.block.header["kernel_state"] = KernelState.STOPPED
            self.block.close()
            self.block = None

    def run(self) -> int:
        """Loop until shutdown; return the kernel's exit code (see ``aegis.kernel.exitcodes``)."""
        assert self.block is not None, "call open() first"
        self._record(
            logging.INFO,
            "watchdog",
            "start",
            "boot",
            pid=os.getpid(),
            message=f"watchdog started (pid {os.getpid()}) on {self.settings.home}",
        )
        self.block.header["kernel_state"] = KernelState.RUNNING
        while True:
            self._signal_queue.sleep(
                [s for c in self.children if (s := c.sentinel()) is not None], self._tick_s
            )
            now = self._clock()
            self._dispatch_signals(now)
            self._reap(now)
            if self._shutdown is not None:
                code = self._advance_shutdown(now)
                if code is not None:
                    return code
            else:
                self._check_children(now)
                self._escalate_kills(now)
                self._advance_rolling(now)
                self._start_missing(now)
            self.block.header["loop_ns"] = time.monotonic_ns()

    # -- signals ------------------------------------------------------------------------------
    def _dispatch_signals(self, now: float) -> None:
        for sig in self._signal_queue.drain():
            getattr(self, f"handle_{sig.name.lower()}")(now)

    def handle_sigterm(self, now: float) -> None:
        """Graceful ordered shutdown; a second SIGTERM/SIGINT kills what is left at once."""
        if self._shutdown is not None:
            log.warning("second stop signal: killing remaining children now")
            self._shutdown.deadline = now
            return
        self._begin_shutdown(now, "signal", exitcodes.CLEAN)

    handle_sigint = handle_sigterm

    def handle_sighup(self, now: float) -> None:
        """Rolling restart of every child (configuration and model reload), one at a time."""
        if self._shutdown is not None or self._rolling or self._rolling_current is not None:
            log.warning(
                "SIGHUP ignored: %s in progress",
                "shutdown" if self._shutdown else "a rolling restart",
            )
            return
        if self._reload is not None:
            try:
                fresh = self._reload()
            except ConfigError as exc:
                self._record(
                    logging.ERROR,
                    "watchdog",
                    "reload",
                    "config_error",
                    detail={"error": str(exc)},
                    message=f"reload refused, keeping the running configuration: {exc}",
                )
                return
            # The store endpoints were resolved (maybe embedded servers started) and migrated
            # at boot; the rings and the port exist already. Changing them needs a new run.
            # The symbol list fixes the symbol ids: during a rolling restart old and new
            # processes would disagree on what an id means, and an intent could name the
            # wrong symbol. A new list needs a full stop and start.
            fixed = ("home", "ring_capacity", "metrics_port", "database_url", "redis_url",
                     "symbols", "top_n", "quote_asset", "mode")  # fmt: skip
            ignored = [f for f in fixed if getattr(fresh, f) != getattr(self.settings, f)]
            if ignored:
                log.warning(
                    "reload cannot change %s without a kernel restart; kept", ", ".join(ignored)
                )
                fresh = fresh.replace(**{f: getattr(self.settings, f) for f in ignored})
            self.settings = fresh
        self._record(
            logging.INFO,
            "watchdog",
            "reload",
            "sighup",
            message="rolling restart of " + ", ".join(self.table.names()),
        )
        self.block.header["kernel_state"] = KernelState.RELOADING
        for child in self.children:
            child.drop_spare()  # spares imported the old code; new ones import the current one
        self._rolling.extend(self.children)

    def handle_sigusr1(self, now: float) -> None:
        """Log one status snapshot."""
        for line in format_table(snapshot(self.block, self._rings.inspect())).splitlines():
            log.info("status: %s", line)

    # -- children -----------------------------------------------------------------------------
    def _config_for(self, spec: ProcessSpec, slot: int) -> ProcessConfig:
        return ProcessConfig(
            settings=self.settings,
            name=spec.name,
            slot=slot,
            control_name=self.block.name,
            kernel_pid=os.getpid(),
            rings=bindings_for(self.table, self.settings.home, spec.name),
        )

    def _start(self, child: SupervisedChild, now: float, reason: str) -> None:
        pid = child.start(now)
        self._record(
            logging.INFO,
            child.name,
            "start",
            reason,
            pid=pid,
            detail={"start": child.starts},
            message=f"{child.name} started (pid {pid}, {reason}, start #{child.starts})",
        )

    def _start_missing(self, now: float) -> None:
        for child in self.children:
            if child.state == ProcessState.STOPPED and child.starts == 0:
                self._start(child, now, "boot")
            elif child.state == ProcessState.BACKOFF and now >= child.backoff_until:
                self._start(child, now, child.stop_reason or "restart")
        keep_spares(self.children, now)

    def _reap(self, now: float) -> None:
        for child in self.children:
            pid = child.pid
            code = child.poll_exit()
            if code is None:
                continue
            self._on_exit(child, pid, code, now)

    def _on_exit(self, child: SupervisedChild, pid: int, code: int, now: float) -> None:
        asked = child.state == ProcessState.STOPPING
        uptime = now - child.started_at
        what = exitcodes.describe(code)
        if asked:
            level = logging.INFO if code == 0 else logging.WARNING
            reason = child.stop_reason or "stop"
        else:
            level = logging.WARNING if code == 0 else logging.ERROR
            reason = "signal" if code < 0 else ("clean_exit" if code == 0 else "exit_code")
        self._record(
            level,
            child.name,
            "exit",
            reason,
            pid=pid,
            exit_code=code,
            detail={"uptime_s": round(uptime, 3), "asked": asked},
            message=f"{child.name} (pid {pid}) exited: {what} after {uptime:.2f} s"
            + ("" if asked else ", unexpectedly"),
        )
        if self._shutdown is not None:
            if asked and code > 0:
                self._shutdown.unclean.append(child.name)
            if child.state != ProcessState.FATAL:
                child.set_state(ProcessState.EXITED)
            return
        if code == exitcodes.BOOT_ERROR:
            child.set_state(ProcessState.FATAL)
            self._record(
                logging.CRITICAL,
                child.name,
                "fatal",
                "boot_error",
                pid=pid,
                exit_code=code,
                message=f"{child.name} cannot boot (bad configuration): not restarting; "
                "stopping the kernel",
            )
            self._begin_shutdown(now, "boot_error", exitcodes.BOOT_ERROR)
            return
        if asked and child.stop_reason == "reload":
            child.set_backoff(now, 0.0)  # a planned restart: no failure, no delay
            return
        reason = child.stop_reason if asked and child.stop_reason else reason
        s = self.settings
        recent = child.note_failure(
            now, stable_s=s.restart_stable_s, window_s=s.crash_loop_window_s
        )
        if recent > s.crash_loop_restarts:
            child.set_state(ProcessState.FATAL)
            self._record(
                logging.CRITICAL,
                child.name,
                "crash_loop",
                reason,
                pid=pid,
                exit_code=code,
                detail={"restarts_in_window": recent},
                message=f"{child.name} crash loop: {recent} restarts within "
                f"{s.crash_loop_window_s:g} s; stopping the kernel",
            )
            self._begin_shutdown(now, "crash_loop", exitcodes.CRASH_LOOP)
            return
        delay = child.next_delay(BACKOFF_BASE_S, s.restart_backoff_max_s, self._rng)
        child.stop_reason = reason
        child.set_backoff(now + delay, delay)
        self._record(
            logging.WARNING,
            child.name,
            "restart",
            reason,
            pid=pid,
            exit_code=code,
            detail={"delay_s": round(delay, 3), "failures": child.failures},
            message=f"{child.name} restarting in {delay:.2f} s ({reason}, "
            f"failure {child.failures} in a row)",
        )

    def _check_children(self, now: float) -> None:
        s = self.settings
        now_ns = time.monotonic_ns()
        sample = now >= self._next_sample
        if sample:
            self._next_sample = now + self._sample_every_s
        for child in self.children:
            if not child.alive or child.state == ProcessState.STOPPING:
                continue
            view = child.slot_view()
            if child.state == ProcessState.STARTING:
                if view.ready_ns and view.ready_ns >= view.started_mono_ns:
                    child.set_state(ProcessState.RUNNING)
                    log.info("%s ready in %.2f s", child.name, now - child.started_at)
                elif now - child.started_at > self._start_timeout_s:
                    self._stall(
                        child,
                        now,
                        "start_timeout",
                        f"not ready {now - child.started_at:.1f} s after start",
                    )
                continue
            if child.failures and now - child.started_at >= s.restart_stable_s:
                child.reset_failures()
            age = (now_ns - view.heartbeat_ns) / 1e9
            if age > s.heartbeat_deadline_s:
                self._stall(child, now, "heartbeat", f"no heartbeat for {age:.2f} s")
                continue
            if sample:
                measured = child.sample()
                if measured and measured[0] > s.memory_ceiling_mb * 1024 * 1024:
                    rss_mb = measured[0] / 1024 / 1024
                    self._record(
                        logging.WARNING,
                        child.name,
                        "memory",
                        "memory",
                        pid=child.pid,
                        detail={"rss_mb": round(rss_mb, 1), "ceiling_mb": s.memory_ceiling_mb},
                        message=f"{child.name} (pid {child.pid}) uses {rss_mb:.0f} MB, "
                        f"over the {s.memory_ceiling_mb} MB ceiling: restarting",
                    )
                    child.request_stop(now, "memory", s.kill_grace_s, restart=True)

    def _stall(self, child: SupervisedChild, now: float, reason: str, what: str) -> None:
        child.note_stall()
        self._record(
            logging.ERROR,
            child.name,
            "stall",
            reason,
            pid=child.pid,
            message=f"{child.name} (pid {child.pid}) hung: {what}; SIGTERM, SIGKILL in "
            f"{self.settings.kill_grace_s:g} s",
        )
        child.request_stop(now, reason, self.settings.kill_grace_s, restart=True)

    def _escalate_kills(self, now: float) -> None:
        for child in self.children:
            if child.alive and child.kill_at is not None and now >= child.kill_at:
                self._record(
                    logging.WARNING,
                    child.name,
                    "kill",
                    child.stop_reason or "grace",
                    pid=child.pid,
                    message=f"{child.name} (pid {child.pid}) ignored SIGTERM: SIGKILL",
                )
                child.kill()

    def _advance_rolling(self, now: float) -> None:
        current = self._rolling_current
        if current is not None:
            if current.state == ProcessState.RUNNING and current.stop_reason != "reload":
                self._rolling_current = current = None
            elif current.state == ProcessState.FATAL:
                self._rolling.clear()
                self._rolling_current = current = None
        if current is None and self._rolling:
            current = self._rolling.popleft()
            self._rolling_current = current
            if current.alive:
                current.request_stop(now, "reload", self.settings.shutdown_deadline_s, restart=True)
            # a child in backoff simply restarts with the new configuration when due
        reloading = self.block.header["kernel_state"] == KernelState.RELOADING
        if current is None and not self._rolling and reloading:
            self.block.header["kernel_state"] = KernelState.RUNNING
            log.info("rolling restart finished")

    # -- shutdown -----------------------------------------------------------------------------
    def _begin_shutdown(self, now: float, reason: str, code: int) -> None:
        state = {
            exitcodes.CRASH_LOOP: KernelState.CRASH_LOOP,
            exitcodes.BOOT_ERROR: KernelState.FATAL,
        }.get(code, KernelState.STOPPING)
        self.block.header["kernel_state"] = state
        self._rolling.clear()
        self._rolling_current = None
        deadline = now + self.settings.shutdown_deadline_s
        self._shutdown = _Shutdown(reason, code, deadline, collections.deque(self.children))
        for child in self.children:
            child.drop_spare()
        log.info(
            "shutting down (%s): stopping %s in order within %g s",
            reason,
            ", ".join(self.table.names()),
            self.settings.shutdown_deadline_s,
        )

    def _advance_shutdown(self, now: float) -> int | None:
        plan = self._shutdown
        if now >= plan.deadline and any(c.alive for c in self.children):
            if not plan.forced:
                plan.forced = True
                left = [c.name for c in self.children if c.alive]
                log.error("shutdown deadline missed: SIGKILL %s", ", ".join(left))
            for child in self.children:
                if child.alive and not child.killed:
                    child.kill()
        self._escalate_kills(now)  # a child that hung before the shutdown began
        while plan.order:
            child = plan.order[0]
            if not child.alive:
                if child.state not in (ProcessState.FATAL, ProcessState.EXITED):
                    child.set_state(ProcessState.STOPPED)
                plan.order.popleft()
                continue
            if child.state != ProcessState.STOPPING:
                child.request_stop(now, "shutdown", plan.deadline - now, restart=False)
            break
        if plan.order or any(c.alive for c in self.children):
            return None
        code = plan.code
        if plan.forced and code == exitcodes.CLEAN:
            code = exitcodes.SHUTDOWN_FORCED
        elif plan.unclean and code == exitcodes.CLEAN:
            code = exitcodes.SHUTDOWN_UNCLEAN
            log.error("%s failed while stopping", ", ".join(plan.unclean))
        self._record(
            logging.INFO if code == exitcodes.CLEAN else logging.ERROR,
            "watchdog",
            "stop",
            plan.reason,
            pid=os.getpid(),
            exit_code=code,
            message=f"watchdog stopped: {exitcodes.describe(code)}",
        )
        return code

    # -- events -------------------------------------------------------------------------------
    def _record(
        self,
        level: int,
        process: str,
        event: str,
        reason: str,
        *,
        message: str,
        pid: int | None = None,
        exit_code: int | None = None,
        detail: dict | None = None,
    ) -> None:
        self._events.record(
            level,
            message,
            KernelEvent(process, event, reason, pid=pid, exit_code=exit_code, detail=detail),
        )


def _stop_resource_tracker() -> None:
    """Stop the helper process the spawn context starts, so the kernel leaves none behind."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()
