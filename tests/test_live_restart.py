"""Restart safety: a live-exchange *process* is SIGKILLed at each dangerous point, restarted, and
must then have sent no order twice, lost none, and hold exactly what the exchange holds.

The simulator runs in the test process (real sockets); each live exchange is
``tests/live_child.py`` in its own OS process, journaling to a real PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from live_support import posts_for, sim_orders
from sim_support import quick_config

from aegis.binance.sim.server import BinanceSimulator

CHILD = Path(__file__).parent / "live_child.py"


@pytest.fixture
async def journal_dsn(pg_dsn):
    """The session database, migrated, without live rows of earlier tests (each test has a
    fresh simulator, so older journal entries would name orders it never saw)."""
    import asyncpg

    from aegis.schema.migrator import migrate

    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DELETE FROM orders WHERE mode = 'live'")
        await conn.execute("DELETE FROM trades WHERE mode = 'live'")
    finally:
        await conn.close()
    return pg_dsn


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config()) as s:
        yield s


async def run_child(sim, dsn, home, action, intent_id, crash_at=""):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), sim.rest_url, dsn, str(home), action, str(intent_id),
        crash_at, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if crash_at:
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        return None
    assert proc.returncode == 0, err.decode()[-2000:]
    return orjson.loads(out.splitlines()[-1])


def btc_held(sim) -> Decimal:
    bal = sim.account().balance("BTC")
    return bal.free + bal.locked


@pytest.mark.parametrize("crash_at", ["after_send", "after_fill", "after_ack"])
async def test_entry_killed_after_the_order_reached_the_exchange_is_recovered_once(
    sim, journal_dsn, tmp_path, crash_at
):
    await run_child(sim, journal_dsn, tmp_path, "enter", 501, crash_at)
    assert len(sim_orders(sim, "aegis-501")) == 1
    state = await run_child(sim, journal_dsn, tmp_path, "status", 0)
    # Killed before the answer was journaled, the order is looked up; after, it is rebuilt.
    assert state["report"]["resolved"] == (0 if crash_at == "after_ack" else 1)
    assert state["positions"] == [[501, str(btc_held(sim))]]
    # Announced by the life that journals the fill: killed after that write, the position is
    # rebuilt silently (its announcement died with the process); before it, the restart is the
    # life that journals the fill.
    assert state["events"] == ([] if crash_at == "after_ack" else [["PositionOpened", 501, ""]])
    again = await run_child(sim, journal_dsn, tmp_path, "enter", 501)
    assert again["outcome"] == "duplicate" and again["report"]["drift"] == []
    assert len(posts_for(sim, "aegis-501")) == 1 and len(sim_orders(sim, "aegis-501")) == 1


async def test_restart_rebuilds_an_open_position_without_announcing_it_again(
    sim, journal_dsn, tmp_path
):
    opened = await run_child(sim, journal_dsn, tmp_path, "enter", 505)
    assert opened["events"] == [["PositionOpened", 505, ""]]
    for _ in range(2):
        state = await run_child(sim, journal_dsn, tmp_path, "status", 0)
        assert state["positions"] == [[505, str(btc_held(sim))]]
        assert state["events"] == [] and state["report"]["drift"] == []


async def test_entry_killed_before_send_is_rejected_as_not_sent_and_never_sent(
    sim, journal_dsn, tmp_path
):
    await run_child(sim, journal_dsn, tmp_path, "enter", 502, "before_send")
    state = await run_child(sim, journal_dsn, tmp_path, "status", 0)
    assert state["report"]["not_sent"] == 1 and state["positions"] == []
    assert state["events"] == [["IntentRejected", 502, "not_sent"]]
    again = await run_child(sim, journal_dsn, tmp_path, "enter", 502)
    assert again["outcome"] == "duplicate"
    assert posts_for(sim, "aegis-502") == [] and btc_held(sim) == 0


async def test_entry_answered_5xx_then_killed_is_recovered_from_the_placed_order(
    sim, journal_dsn, tmp_path
):
    sim.faults.fail_orders_after_placing(1)
    # The client's own lookup by client id would find it; die before that can happen.
    await run_child(sim, journal_dsn, tmp_path, "enter", 503, "after_send")
    assert sim.faults.injected["order_5xx"] == 1
    state = await run_child(sim, journal_dsn, tmp_path, "status", 0)
    assert state["positions"] == [[503, str(btc_held(sim))]]
    assert len(posts_for(sim, "aegis-503")) == 1


@pytest.mark.parametrize("crash_at", ["after_send", "after_ack"])
async def test_exit_killed_after_the_sale_closes_the_trade_once_on_restart(
    sim, journal_dsn, tmp_path, crash_at
):
    opened = await run_child(sim, journal_dsn, tmp_path, "enter", 504)
    assert opened["outcome"] == "filled"
    await run_child(sim, journal_dsn, tmp_path, "flatten", 0, crash_at)
    state = await run_child(sim, journal_dsn, tmp_path, "status", 0)
    assert state["positions"] == []
    assert state["events"] == [["TradeClosed", 504, "forced"]]
    assert len(posts_for(sim, "aegis-504-x1")) == 1 and posts_for(sim, "aegis-504-x2") == []
    assert btc_held(sim) < Decimal("0.00001")
    quiet = await run_child(sim, journal_dsn, tmp_path, "status", 0)
    assert quiet["events"] == [] and quiet["report"]["drift"] == []
