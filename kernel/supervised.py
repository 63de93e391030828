"""One supervised child: its process handle, its state and its slot in the control block.

This class only *does* things (spawn, signal, reap, sample); the watchdog decides when.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess

import psutil

from aegis.backoff import backoff_delays
from aegis.kernel.child import SPARE_READY, standby
from aegis.kernel.control import ControlBlock, ProcessState
from aegis.kernel.topology import ProcessConfig, ProcessSpec

SPARE_PREPARE_BOUND_S = 30.0  # see keep_spares


class SupervisedChild:
    """The watchdog's record of one process of the table (one instance per slot)."""

    def __init__(
        self,
        spec: ProcessSpec,
        slot: int,
        block: ControlBlock,
        make_config: Callable[[ProcessSpec, int], ProcessConfig],
        context: SpawnContext | None = None,
        *,
        warm_spare: bool = True,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.slot = slot
        self._block = block
        self._make_config = make_config
        self._ctx = context or multiprocessing.get_context("spawn")
        self.process: SpawnProcess | None = None
        self.pid = 0
        self.state = ProcessState.STOPPED
        self.started_at = 0.0  # monotonic seconds of the current child's start
        self.starts = 0
        self.failures = 0  # consecutive failures; 0 once the child stayed up restart_stable_s
        self.restart_times: collections.deque[float] = collections.deque()
        self.backoff_until = 0.0
        self._delays: Iterator[float] | None = None
        self.stop_reason: str | None = None  # why we asked the current child to stop
        self.restart_after_stop = False
        self.kill_at: float | None = None
        self.killed = False
        self._psutil: psutil.Process | None = None
        self._warm_spare = warm_spare
        self.spare: tuple[SpawnProcess, Connection] | None = None
        self.retired: list[SpawnProcess] = []
        self._spare_after = 0.0  # no respawn of a dying spare more often than once a second
        self._spare_since = 0.0  # when the current spare was spawned
        self._write("state", self.state)

    # -- control block ------------------------------------------------------------------------
    def _write(self, field: str, value: object) -> None:
        self._block.slots[self.slot][field] = value

    def set_state(self, state: ProcessState) -> None:
        self.state = state
        self._write("state", state)

    def slot_view(self):
        return self._block.view(self.slot)

    # -- actions ------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None

    def _spawn(self) -> tuple[SpawnProcess, Connection]:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=standby, args=(self.spec, os.getpid(), theirs), name=f"aegis: {self.name}"
        )
        proc.start()
        theirs.close()
        return proc, ours

    def keep_spare(self, now: float, *, spawn: bool = True) -> None:
        """Have one warm spare waiting (respawn one that died, at most once a second).

        ``spawn=False`` only follows the current spare (the watchdog makes one spare at a
        time: see ``spare_preparing``).
        """
        if not self._warm_spare:
            return
        self.reap_retired()
        if self.spare is not None and self.spare[0].exitcode is not None:
            self.drop_spare()
            self._spare_after = now + 1.0
        if self.spare is None and spawn and now >= self._spare_after:
            self.spare = self._spawn()
            self._spare_since = now
            self._write("spare_pid", self.spare[0].pid)
            self._write("spare_ready", 0)
        if self.spare is not None and not self._block.slots[self.slot]["spare_ready"]:
            with contextlib.suppress(EOFError, OSError):
                if self.spare[1].poll() and self.spare[1].recv() == SPARE_READY:
                    self._write("spare_ready", 1)

    def spare_preparing(self, now: float) -> bool:
        """True while this child's spare imports and loads kernels, for at most
        ``SPARE_PREPARE_BOUND_S`` (a spare stuck preparing stops holding the others back)."""
        return (
            self.spare is not None
            and not self._block.slots[self.slot]["spare_ready"]
            and now - self._spare_since < SPARE_PREPARE_BOUND_S
        )

    def drop_spare(self) -> None:
        """Dismiss the spare: EOF on its pipe makes it leave once it has finished preparing.

        It is not killed (a kill mid-prepare would strand its warm-up ring in /dev/shm);
        ``reap_retired`` collects it, and ``close`` kills it only if it lingers.
        """
        if self.spare is None:
            return
        proc, send = self.spare
        self.spare = None
        self._write("spare_pid", 0)
        self._write("spare_ready", 0)
        send.close()
        self.retired.append(proc)

    def reap_retired(self) -> None:
        """Collect dismissed spares that have left."""
        for proc in list(self.retired):
            if proc.exitcode is not None:
                proc.close()
                self.retired.remove(proc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Dismiss the spare and wait for every dismissed one (SIGKILL after ``timeout_s``)."""
        self.drop_spare()
        deadline = time.monotonic() + timeout_s
        for proc in self.retired:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join(2.0)
            proc.close()
        self.retired.clear()

    def start(self, now: float) -> int:
        """Activate the warm spare (or spawn a child cold) with a fresh config; return its pid."""
        config = self._make_config(self.spec, self.slot)
        spare = self.spare if self.spare is not None and self.spare[0].exitcode is None else None
        if spare is None:
            self.drop_spare()
            spare = self._spawn()
        self.spare = None
        self._write("spare_pid", 0)
        self._write("spare_ready", 0)
        proc, send = spare
        # Everything the watchdog judges the new child by is written *before* it is activated:
        # an activated spare reports ready within milliseconds, and its ready_ns must be later
        # than started_mono_ns to count (a stale value of the previous child never does).
        self._write("ready_ns", 0)
        self._write("heartbeat_ns", 0)
        self.process = proc
        self.pid = proc.pid or 0
        self.started_at = now
        self.starts += 1
        self.stop_reason = None
        self.restart_after_stop = False
        self.kill_at = None
        self.killed = False
        self._psutil = None
        self._write("pid", self.pid)
        self._write("started_mono_ns", time.monotonic_ns())
        self._write("started_wall_ns", time.time_ns())
        self._write("rss_bytes", 0)
        self._write("cpu_pct", 0.0)
        if self.starts > 1:
            self._write("restarts", self.starts - 1)
        self.set_state(ProcessState.STARTING)
        # If the spare died just now, its exit is reaped like any child's, then restarted.
        with contextlib.suppress(OSError):
            send.send(config)
        send.close()
        return self.pid

    def request_stop(self, now: float, reason: str, grace_s: float, *, restart: bool) -> None:
        """SIGTERM (plus SIGCONT, so a stopped child can act on it); SIGKILL due at now+grace."""
        if self.process is None:
            return
        self.stop_reason = reason
        self.restart_after_stop = restart
        self.kill_at = now + grace_s
        self.set_state(ProcessState.STOPPING)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
            os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the current child (reaped later like any exit)."""
        if self.process is None:
            return
        self.killed = True
        self.kill_at = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def poll_exit(self) -> int | None:
        """Exit code of the current child if it ended (negative = signal), reaping it."""
        if self.process is None:
            return None
        code = self.process.exitcode  # waitpid(WNOHANG) underneath
        if code is None:
            return None
        self.process.close()
        self.process = None
        self._write("pid", 0)
        self._write("last_exit_code", code)
        self._write("rss_bytes", 0)
        self._write("cpu_pct", 0.0)
        return code

    def sentinel(self) -> int | None:
        return self.process.sentinel if self.process is not None else None

    def sample(self) -> tuple[int, float] | None:
        """RSS bytes and CPU % of the current child (into the control block), if alive."""
        if self.process is None:
            return None
        try:
            if self._psutil is None or self._psutil.pid != self.pid:
                self._psutil = psutil.Process(self.pid)
                self._psutil.cpu_percent(None)  # first call only primes the counter
            rss = int(self._psutil.memory_info().rss)
            cpu = float(self._psutil.cpu_percent(None))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        self._write("rss_bytes", rss)
        self._write("cpu_pct", cpu)
        return rss, cpu

    def note_failure(self, now: float, *, stable_s: float, window_s: float) -> int:
        """Count a restart-worthy exit; return the restarts within the crash-loop window."""
        uptime = now - self.started_at
        self.failures = 1 if uptime >= stable_s else self.failures + 1
        self.restart_times.append(now)
        while self.restart_times and now - self.restart_times[0] > window_s:
            self.restart_times.popleft()
        self._write("failures", self.failures)
        return len(self.restart_times)

    def reset_failures(self) -> None:
        self.failures = 0
        self._write("failures", 0)

    def note_stall(self) -> None:
        slot = self._block.slots[self.slot]
        slot["stalls"] = int(slot["stalls"]) + 1

    def next_delay(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
        """Delay before restarting after failure number ``self.failures`` in a row.

        The first failure restarts at once (a one-off crash should cost no downtime); then
        ``aegis.backoff.backoff_delays`` — exponential from ``base_s`` to ``cap_s`` with full
        jitter, so children failing together do not restart in lock step. The series starts
        over once the child stayed up ``restart_stable_s`` (``failures`` back to 1).
        """
        if cap_s <= 0:
            return 0.0
        if self.failures <= 1 or self._delays is None:
            self._delays = backoff_delays(min(base_s, cap_s), cap_s, rng)
        if self.failures <= 1:
            return 0.0
        return next(self._delays)

    def set_backoff(self, until: float, delay_s: float) -> None:
        self.backoff_until = until
        self._write("backoff_until_ns", time.monotonic_ns() + int(delay_s * 1e9))
        self.set_state(ProcessState.BACKOFF)


def keep_spares(children: list[SupervisedChild], now: float) -> None:
    """One warm spare per running child, made one at a time.

    A spare is made once its child runs, so it never competes with that start for the CPU,
    and only while no other spare is preparing, so their start-up peaks (a core each, and
    well above their idle resident size while LLVM initialises) never add
    up: at boot the three spares come one after another instead of all at once.
    """
    preparing = any(child.spare_preparing(now) for child in children)
    for child in children:
        child.reap_retired()
        if child.state == ProcessState.RUNNING:
            child.keep_spare(now, spawn=not preparing)
            preparing = preparing or child.spare_preparing(now)


WARM_UP_PREFIX = "aegis-warm-"  # private rings of aegis.processes.runtime.warm_ring_kernels


def sweep_warm_up_segments() -> list[str]:
    """Unlink warm-up rings left in /dev/shm by children killed mid-prepare; return them."""
    removed = []
    for name in os.listdir("/dev/shm"):
        if not name.startswith(WARM_UP_PREFIX):
            continue
        digits = name[len(WARM_UP_PREFIX) :].split(".")[0]
        if digits.isdigit() and not psutil.pid_exists(int(digits)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join("/dev/shm", name))
                removed.append(name)
    return removed
