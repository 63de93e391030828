"""Chaos, short form: the demo pipeline survives SIGKILL of each child, then stops on SIGTERM.

The real thing, end to end: ``python -m aegis.kernel.demo`` (simulator replaying the bundled
bars over WebSocket + REST, watchdog, feed, brain, executor in paper mode) on the machine's
PostgreSQL and Redis. While bars flow, feed, brain and executor are SIGKILLed one at a time,
each only after the previous one was restarted and the replay moved on; then the watchdog gets
SIGTERM. Afterwards the database must hold every recorded bar exactly once up to where the
feed stopped, with the recorded values; every order and position exactly once; and one
``restart`` event per kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from aegis.kernel.control import ControlBlock, ControlBlockError, ProcessState
from aegis.kernel.rings import inspect_home
from aegis.kernel.topology import control_name
from aegis.paper.backtest_inputs import load_backtest_data

pytestmark = pytest.mark.slow

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAY_FROM, DAY_TO = "2023-03-20", "2023-03-23"
SPEED = 4000.0  # one simulated day in ~22 s: room for three kills and restarts
CHILDREN = ("feed", "brain", "executor")
BARS_BETWEEN_KILLS = 300


def _demo(home: Path, dsn: str, redis_url: str, prefix: str, log) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        AEGIS_HOME=str(home), AEGIS_DATABASE_URL=dsn, AEGIS_REDIS_URL=redis_url,
        AEGIS_REDIS_PREFIX=prefix, AEGIS_METRICS_PORT="0", AEGIS_RESTART_BACKOFF_MAX_S="1",
    )  # fmt: skip
    argv = [sys.executable, "-m", "aegis.kernel.demo", "--symbols", ",".join(SYMBOLS),
            "--from", DAY_FROM, "--to", DAY_TO, "--speed", str(SPEED), "--no-report",
            "--status-every-s", "1"]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"demo exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _attach(home: Path):
    try:
        return ControlBlock.attach(control_name(home))
    except ControlBlockError:
        return None


def _bars(home: Path) -> int:
    market = [r for r in inspect_home(home) if r.ring == "market"]
    return market[0].cursor if market else 0


def _intents(home: Path) -> int:
    ring = [r for r in inspect_home(home) if r.ring == "intents"]
    return ring[0].cursor if ring else 0


def _view(block: ControlBlock, name: str):
    return block.view(block.index(name))


async def _check_database(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        bars = await conn.fetch(
            "SELECT symbol, open_time_ms, open, high, low, close, volume FROM market_data"
            " WHERE timeframe = '1m' ORDER BY symbol, open_time_ms"
        )
        dup_orders = await conn.fetchval(
            "SELECT count(*) FROM (SELECT intent_id, side FROM orders GROUP BY intent_id, side"
            " HAVING count(*) > 1) d"
        )
        positions = await conn.fetchval("SELECT count(*) FROM virtual_positions")
        orders = await conn.fetchval("SELECT count(*) FROM orders")
        orphans = await conn.fetchval(
            "SELECT count(*) FROM virtual_positions p WHERE NOT EXISTS (SELECT 1 FROM orders o"
            " WHERE o.intent_id = p.position_id AND o.side = 'BUY')"
        )
        events = await conn.fetch(
            "SELECT process, event, reason, exit_code FROM kernel_events ORDER BY ts_ms"
        )
    finally:
        await conn.close()
    return {"bars": bars, "dup_orders": dup_orders, "positions": positions, "orders": orders,
            "orphans": orphans, "events": events}  # fmt: skip


def test_chaos_sigkill_each_child_then_sigterm_loses_and_duplicates_nothing(
    tmp_path: Path, pg_fresh_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    home = tmp_path / "home"
    kernel_home = home / "demo"
    log_path = tmp_path / "demo.out"
    with open(log_path, "w") as log:
        proc = _demo(home, pg_fresh_dsn, redis_url, redis_prefix, log)
    try:
        block = _wait(lambda: _attach(kernel_home), 60, "the control block", proc)
        # Kill only once the brain trades, so that orders and positions exist to be duplicated.
        _wait(lambda: _intents(kernel_home) > 0, 90, "the first intents", proc)
        for name in CHILDREN:
            view = _wait(lambda n=name: (v := _view(block, n)).pid > 0
                         and v.state == ProcessState.RUNNING and v, 30, f"{name} running", proc)  # fmt: skip
            os.kill(view.pid, signal.SIGKILL)
            _wait(lambda n=name, v=view: (w := _view(block, n)).restarts > v.restarts
                  and w.state == ProcessState.RUNNING, 30, f"{name} restarted", proc)  # fmt: skip
            after = _bars(kernel_home) + BARS_BETWEEN_KILLS
            _wait(lambda a=after: _bars(kernel_home) >= a, 30, f"bars after {name}", proc)
        block.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert code == 0, output[-3000:]

    found = asyncio.run(_check_database(pg_fresh_dsn))
    recorded = load_backtest_data(None, list(SYMBOLS))
    stored = found["bars"]
    assert stored, "no bar reached market_data"
    for series in recorded.series:
        name = recorded.symbols[series.symbol_id]
        mine = [r for r in stored if r["symbol"] == name]
        times = np.array([r["open_time_ms"] for r in mine], dtype=np.int64)
        # Exactly once, in a contiguous run of the recording: no gap, no duplicate.
        lo = int(np.searchsorted(series.open_time_ms, times[0]))
        expect = series.open_time_ms[lo : lo + len(times)]
        assert np.array_equal(times, expect), f"{name}: stored bars are not the recorded run"
        closes = np.array([r["close"] for r in mine])
        assert np.allclose(closes, series.close[lo : lo + len(times)]), name
    assert found["orders"] > 0 and found["positions"] > 0
    assert found["dup_orders"] == 0
    assert found["orphans"] == 0
    restarts = {(e["process"], e["reason"]) for e in found["events"] if e["event"] == "restart"}
    for name in CHILDREN:
        assert (name, "signal") in restarts, (name, sorted(restarts))
    stops = [e for e in found["events"] if e["process"] == "watchdog" and e["event"] == "stop"]
    assert stops and stops[-1]["exit_code"] == 0
