"""Kernel restart time: SIGKILL of a child → its replacement's first consumed record.

A real kernel (``tests/workload.py``, the same watchdog and runtime as production) runs three
processes moving ~2,000 records/s through the market, intents and reports rings. The brain and
the executor stand-ins are SIGKILLed alternately, ``KILLS`` times; each sample is the time from
just before ``kill()`` to the monotonic stamp the replacement writes when it handles its first
record (CLOCK_MONOTONIC is shared by every process of the machine). The kills are spaced by more
than ``restart_stable_s``, so every one is a first failure: the restart path is measured, not
the backoff. The Numba cache is warm (a first kernel run precedes the samples), as in production.

Each kill waits until the victim's warm spare reports ready (the steady state: kills are rare,
a spare is made right after each start). ``cold_restart_to_first_record_s`` is a reference run
of ``COLD_KILLS`` kills with warm spares disabled: interpreter start, imports, cache loads.

Keys: ``restart_to_first_record_s`` {p50, p99, max, n} (target p99 ≤ 1 s), ``replacement_spawned_s``
(kill → new pid in the control block), ``replacement_ready_s`` (kill → runtime reported ready),
``meets_target``, ``cold_restart_to_first_record_s``, ``clean_exit``, ``loadavg_1m``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kernel_harness import KernelRun, wait_until  # noqa: E402
from workload import workload_dir  # noqa: E402

KILLS = 24
COLD_KILLS = 6
TARGET_P99_S = 1.0
VICTIMS = ("brain", "executor")
NAMES = ("feed", "brain", "executor")


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _database() -> tuple[str, str | None]:
    """(dsn, name of a scratch database to drop) — machine PostgreSQL if any, else embedded."""
    if os.environ.get("AEGIS_DATABASE_URL"):
        return os.environ["AEGIS_DATABASE_URL"], None
    if not _reachable(5432):
        return "", None  # the kernel starts an embedded PostgreSQL under its home
    import asyncpg

    name = f"aegis_bench_kernel_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return f"postgresql://postgres@127.0.0.1:5432/{name}", name


def _drop(name: str | None) -> None:
    if name is None:
        return
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def _first_record_ns(home: Path, process: str, pid: int) -> int | None:
    try:
        for line in (workload_dir(home) / f"{process}.first").read_text().splitlines():
            p, ns = line.split()
            if int(p) == pid:
                return int(ns)
    except OSError:
        pass
    return None


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 4),
        "p99": round(p99, 4),
        "max": round(ordered[-1], 4),
        "n": len(ordered),
    }


def _measure(home: Path, dsn: str, redis_url: str, kills: int, warm_spares: bool) -> dict:
    """Kill brain and executor alternately ``kills`` times; return the three series."""
    to_first, spawned, ready = [], [], []
    kernel = KernelRun.launch(
        home,
        "flow",
        database_url=dsn,
        redis_url=redis_url,
        redis_prefix=f"aegis_bench:{uuid.uuid4().hex[:8]}:",
        warm_spares=warm_spares,
        heartbeat_deadline_s=5.0,
        kill_grace_s=3.0,
    )
    try:
        kernel.wait_running(NAMES, timeout=120)
        for i in range(kills):
            name = VICTIMS[i % len(VICTIMS)]
            kernel.wait_running(NAMES, timeout=30)
            time.sleep(0.8)  # > restart_stable_s (0.5 s): a first failure, no backoff
            if warm_spares:  # steady state: the spare made after the previous kill is warm
                wait_until(lambda n=name: kernel.slots()[n].spare_ready, 30)
            old = kernel.slots()[name].pid
            t0 = time.monotonic_ns()
            os.kill(old, signal.SIGKILL)
            view = wait_until(
                lambda n=name, o=old: (v := kernel.slots().get(n)) and v.pid not in (0, o) and v,
                10,
                0.002,
            )
            if not view:
                raise RuntimeError(f"{name} not replaced\n{kernel.tail()}")
            spawned.append((time.monotonic_ns() - t0) / 1e9)
            first = wait_until(lambda n=name, p=view.pid: _first_record_ns(home, n, p), 15, 0.002)
            if not first:
                raise RuntimeError(f"{name} replacement consumed nothing\n{kernel.tail()}")
            to_first.append((first - t0) / 1e9)
            ready_ns = kernel.slots()[name].ready_ns
            if ready_ns:
                ready.append((ready_ns - t0) / 1e9)
        kernel.signal(signal.SIGTERM)
        code = kernel.wait(60)
    finally:
        kernel.kill_everything()
    return {
        "restart_to_first_record_s": _stats(to_first),
        "replacement_spawned_s": _stats(spawned),
        "replacement_ready_s": _stats(ready),
        "clean_exit": code == 0,
    }


def run() -> dict:
    dsn, scratch = _database()
    redis_url = os.environ.get("AEGIS_REDIS_URL") or (
        "redis://127.0.0.1:6379/0" if _reachable(6379) else ""
    )
    try:
        with tempfile.TemporaryDirectory(prefix="aegis-bench-kernel-") as tmp:
            warm = _measure(Path(tmp) / "warm", dsn, redis_url, KILLS, warm_spares=True)
            cold = _measure(Path(tmp) / "cold", dsn, redis_url, COLD_KILLS, warm_spares=False)
    finally:
        _drop(scratch)
    result = dict(warm)
    result |= {
        "kills": KILLS,
        "target_p99_s": TARGET_P99_S,
        "meets_target": warm["restart_to_first_record_s"]["p99"] <= TARGET_P99_S,
        "cold_restart_to_first_record_s": cold["restart_to_first_record_s"],
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"{'kernel restart (s)':<36} {'p50':>8} {'p99':>8} {'max':>8} {'n':>4}")
    rows = [
        (k, warm[k])
        for k in ("replacement_spawned_s", "replacement_ready_s", "restart_to_first_record_s")
    ]
    rows.append(("cold (no spare) to first record", cold["restart_to_first_record_s"]))
    for key, s in rows:
        print(f"{key:<36} {s['p50']:>8.3f} {s['p99']:>8.3f} {s['max']:>8.3f} {s['n']:>4}")
    print(f"target p99 <= {TARGET_P99_S} s: {'met' if result['meets_target'] else 'MISSED'}")
    return result


if __name__ == "__main__":
    run()
