"""``aegis-kernel status``: a read-only view of a running kernel, and its health verdict.

It attaches the control block read-only and inspects the rings by name; it never takes the
lock and never writes, so it is safe to run at any time, as often as wanted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from aegis.config import Settings
from aegis.kernel.control import ControlBlock, ControlBlockError, KernelState, ProcessState
from aegis.kernel.rings import RingReport, inspect_home
from aegis.kernel.topology import control_name
from aegis.ringbuffer.segment import pid_alive

# Exit codes of `status` (LSB convention for status actions).
STATUS_RUNNING = 0
STATUS_DEAD = 1  # a control block exists but its kernel is gone
STATUS_NOT_RUNNING = 3


@dataclass(frozen=True)
class ProcessRow:
    """One process as status shows it."""

    name: str
    pid: int
    state: str
    uptime_s: float | None
    restarts: int
    stalls: int
    heartbeat_age_s: float | None
    rss_mb: float
    cpu_pct: float
    last_exit_code: int | None
    spare: str  # "ready", "warming" or "none"
    ring_lag: dict[str, int]  # ring -> lag of this process as its consumer


@dataclass(frozen=True)
class KernelSnapshot:
    """The whole kernel at one instant."""

    kernel_pid: int
    kernel_state: str
    loop_age_s: float
    heartbeat_deadline_s: float
    processes: tuple[ProcessRow, ...]
    rings: tuple[RingReport, ...]


def snapshot(block: ControlBlock, rings: list[RingReport]) -> KernelSnapshot:
    """Read the control block and ring reports into one snapshot."""
    now = time.monotonic_ns()
    rows = []
    for v in block.views():
        lag = {c.ring: c.lag for r in rings for c in r.consumers if c.consumer == v.name}
        alive = v.state in (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING)
        rows.append(
            ProcessRow(
                name=v.name,
                pid=v.pid,
                state=v.state.name,
                uptime_s=v.uptime_s(now),
                restarts=v.restarts,
                stalls=v.stalls,
                heartbeat_age_s=v.heartbeat_age_s(now) if alive else None,
                rss_mb=round(v.rss_bytes / 1024 / 1024, 1),
                cpu_pct=round(v.cpu_pct, 1),
                last_exit_code=v.last_exit_code,
                spare="none" if not v.spare_pid else ("ready" if v.spare_ready else "warming"),
                ring_lag=lag,
            )
        )
    loop_ns = int(block.header["loop_ns"])
    return KernelSnapshot(
        kernel_pid=block.kernel_pid,
        kernel_state=block.kernel_state.name,
        loop_age_s=(now - loop_ns) / 1e9 if loop_ns else 0.0,
        heartbeat_deadline_s=int(block.header["heartbeat_deadline_ns"]) / 1e9,
        processes=tuple(rows),
        rings=tuple(rings),
    )


def health(snap: KernelSnapshot) -> list[str]:
    """Reasons the kernel is unhealthy (empty = healthy): crash loop, FATAL, stale heartbeat."""
    problems = []
    if snap.kernel_state in (KernelState.CRASH_LOOP.name, KernelState.FATAL.name):
        problems.append(f"kernel is {snap.kernel_state}")
    if snap.loop_age_s > max(snap.heartbeat_deadline_s, 1.0):
        problems.append(f"watchdog loop stalled for {snap.loop_age_s:.1f} s")
    for p in snap.processes:
        if p.state == ProcessState.FATAL.name:
            problems.append(f"{p.name} is FATAL")
        elif (
            p.state == ProcessState.RUNNING.name
            and p.heartbeat_age_s is not None
            and p.heartbeat_age_s > snap.heartbeat_deadline_s
        ):
            problems.append(f"{p.name} heartbeat is {p.heartbeat_age_s:.1f} s old")
    return problems


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def format_table(snap: KernelSnapshot) -> str:
    """Human table: one line per process, then one per ring consumer."""
    lines = [f"kernel pid {snap.kernel_pid} {snap.kernel_state}"]
    head = (
        f"{'process':<10} {'pid':>7} {'state':<9} {'uptime':>9} {'restarts':>8} "
        f"{'heartbeat':>9} {'rss':>9} {'cpu':>6} {'spare':<7}  lag"
    )
    lines.append(head)
    for p in snap.processes:
        lag = " ".join(f"{r}={n}" for r, n in p.ring_lag.items()) or "-"
        lines.append(
            f"{p.name:<10} {p.pid or '-':>7} {p.state:<9} {_fmt(p.uptime_s):>9} {p.restarts:>8} "
            f"{_fmt(p.heartbeat_age_s):>9} {p.rss_mb:>7.1f}MB {p.cpu_pct:>5.1f}% {p.spare:<7}  {lag}"
        )
    for r in snap.rings:
        consumers = ", ".join(f"{c.consumer} seq {c.sequence} lag {c.lag}" for c in r.consumers)
        lines.append(f"ring {r.ring}: cursor {r.cursor}, stalls {r.stalls}; {consumers}")
    problems = health(snap)
    lines.append("health: " + ("ok" if not problems else "UNHEALTHY: " + "; ".join(problems)))
    return "\n".join(lines)


def status_main(settings: Settings, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the status of the kernel on ``settings.home``; return an LSB status code."""
    out = out or sys.stdout
    home = Path(settings.home)
    try:
        block = ControlBlock.attach(control_name(home))
    except ControlBlockError:
        _say(out, as_json, {"running": False, "home": str(home)}, f"no kernel running on {home}")
        return STATUS_NOT_RUNNING
    try:
        if not pid_alive(block.kernel_pid):
            msg = (
                f"no kernel running on {home}: control block of dead kernel pid "
                f"{block.kernel_pid} is left (the next run removes it)"
            )
            _say(
                out,
                as_json,
                {"running": False, "home": str(home), "dead_pid": block.kernel_pid},
                msg,
            )
            return STATUS_DEAD
        snap = snapshot(block, inspect_home(home))
    finally:
        block.close()
    if as_json:
        doc = asdict(snap) | {
            "running": True,
            "home": str(home),
            "problems": health(snap),
            "checked_by_pid": os.getpid(),
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(format_table(snap) + "\n")
    return STATUS_RUNNING


def _say(out: TextIO, as_json: bool, doc: dict, text: str) -> None:
    out.write((json.dumps(doc) if as_json else text) + "\n")
