"""Run a real kernel (``tests/workload.py``) in a subprocess and observe it from outside.

Shared by the kernel tests and ``benchmarks/bench_kernel.py``: everything is observed the way
an operator would — process table (psutil), the control block attached read-only, /dev/shm,
``kernel_events`` rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from aegis.kernel.control import ControlBlock, ControlBlockError, ProcessState, SlotView
from aegis.kernel.topology import control_name, home_tag

WORKLOAD = Path(__file__).resolve().parent / "workload.py"
REPO = WORKLOAD.parents[1]

FAST_SETTINGS = {
    "ring_capacity": 16384,
    "heartbeat_deadline_s": 2.0,  # short, yet not tripped by a busy CI box's scheduling
    "kill_grace_s": 1.0,
    "shutdown_deadline_s": 10.0,
    "restart_stable_s": 0.5,
    "restart_backoff_max_s": 2.0,
    "crash_loop_restarts": 50,
    "crash_loop_window_s": 60.0,
    "metrics_port": 0,
    "log_level": "INFO",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float, step: float = 0.02) -> Any:
    """Poll ``pred`` until truthy; return its value, or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


class KernelRun:
    """One ``aegis: watchdog`` subprocess running a workload table on ``home``."""

    def __init__(self, home: Path, table: str, env: dict[str, str], log_path: Path) -> None:
        self.home = home
        self.table = table
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.started_ms = int(time.time() * 1000)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKLOAD), table],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.seen_pids: set[int] = set()

    @classmethod
    def launch(
        cls,
        home: Path,
        table: str,
        *,
        database_url: str,
        redis_url: str,
        redis_prefix: str,
        log_name: str = "kernel.log",
        warm_spares: bool = True,
        **settings: Any,
    ) -> KernelRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        env["WORKLOAD_WARM_SPARES"] = "1" if warm_spares else "0"
        merged = FAST_SETTINGS | settings
        env.update({f"AEGIS_{k.upper()}": str(v) for k, v in merged.items()})
        env.update(
            {
                "AEGIS_HOME": str(home),
                "AEGIS_DATABASE_URL": database_url,
                "AEGIS_REDIS_URL": redis_url,
                "AEGIS_REDIS_PREFIX": redis_prefix,
            }
        )
        home.mkdir(parents=True, exist_ok=True)
        return cls(home, table, env, home / log_name)

    # -- observation --------------------------------------------------------------------------
    def slots(self) -> dict[str, SlotView]:
        try:
            block = ControlBlock.attach(control_name(self.home))
        except ControlBlockError:
            return {}
        try:
            if block.kernel_pid != self.pid:
                return {}  # a dead kernel's block, or another kernel's
            views = {v.name: v for v in block.views()}
        finally:
            block.close()
        self.seen_pids.update(v.pid for v in views.values() if v.pid)
        return views

    def all_running(self, names: tuple[str, ...]) -> dict[str, SlotView] | None:
        views = self.slots()
        ok = all(n in views and views[n].state == ProcessState.RUNNING for n in names)
        return views if ok else None

    def wait_running(self, names: tuple[str, ...], timeout: float = 30.0) -> dict[str, SlotView]:
        views = wait_until(lambda: self.all_running(names), timeout)
        assert views, f"not all of {names} RUNNING within {timeout}s: {self.slots()}\n{self.tail()}"
        return views

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.returncode is not None:
                self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def shm_names(self) -> list[str]:
        tag = home_tag(self.home)
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"aegis-{tag}-"))

    def kill_everything(self) -> None:
        """Test cleanup: leave no process and no segment behind, whatever happened."""
        for p in [*self.children(), *self._seen_alive()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        for name in self.shm_names():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")

    def _seen_alive(self) -> list[psutil.Process]:
        out = []
        for pid in self.seen_pids:
            try:
                p = psutil.Process(pid)
                if p.name() and "aegis" in " ".join(p.cmdline() or [p.name()]):
                    out.append(p)
            except psutil.Error:
                pass
        return out


def alive_pids(pids: set[int]) -> set[int]:
    """The pids among ``pids`` that still run (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_and_time_replacement(
    run: KernelRun, name: str, timeout: float = 5.0
) -> tuple[int, int, float]:
    """SIGKILL ``name``; return (old pid, new pid, seconds until the replacement is RUNNING)."""
    old = run.slots()[name].pid
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    view = wait_until(
        lambda: (
            (v := run.slots().get(name))
            and v.pid not in (0, old)
            and v.state == ProcessState.RUNNING
            and v
        ),
        timeout,
        0.005,
    )
    assert view, f"{name} not replaced within {timeout}s\n{run.tail()}"
    return old, view.pid, time.monotonic() - t0
