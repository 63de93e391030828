"""Intents first: IntentPipeline (decided at once, written in order after the burst) and BarHold.

The pipeline runs over real PostgreSQL and a real intents ring. The ledger is the real
``ExecutorTables``; ``HeldLedger`` only holds each write until the test lets it go, so that what
happens while a write is in flight can be observed.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from executor_support import (
    BTC_FIRST,
    MIN,
    directory,
    empty_executor_tables,
    intent_record,
    rows,
    settings,
    unique,
)

from aegis.processes.executor import BarHold
from aegis.processes.executor_intents import IntentPipeline
from aegis.processes.executor_service import ExecutorService, PersistAborted
from aegis.records import BAR_DTYPE, INTENT_DTYPE
from aegis.ringbuffer import ReadAhead, Ring
from aegis.store.database import Database
from aegis.store.executor_tables import ExecutorTables


class HeldLedger:
    """``ExecutorTables`` whose writes wait for ``release()``; ``started`` counts writes begun."""

    def __init__(self, tables: ExecutorTables) -> None:
        self.tables = tables
        self.started = 0
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def write(self, batch) -> None:
        self.started += 1
        await self._gate.wait()
        self._gate.clear()  # one write per release
        await self.tables.write(batch)

    async def load(self, starting_cash: float):
        return await self.tables.load(starting_cash)


@pytest.fixture
async def database(module_dsn):
    await empty_executor_tables(module_dsn)
    db = Database(module_dsn)
    yield db
    await db.close()


@pytest.fixture
def intents_ring():
    ring = Ring.create(unique("aegis-test-intents"), INTENT_DTYPE, 64, 1)
    yield ring
    ring.close()


async def pipeline_for(database, tmp_path, ring, ledger=None, quiet_s=0.0, clock=None,
                       **service_args):  # fmt: skip
    """A pipeline whose writes start at once unless ``quiet_s`` says otherwise."""
    tables = ExecutorTables(database)
    ledger = ledger or HeldLedger(tables)
    s = settings(database.dsn, tmp_path)
    service = await ExecutorService.restore(ledger, directory(), s, **service_args)
    timing = {"quiet_s": quiet_s, "max_s": 0.01} | ({"clock": clock} if clock else {})
    return IntentPipeline(service, ReadAhead(ring.consumer(0)), **timing), ledger, tables


async def quiet_pipeline(database, tmp_path, ring):
    """A pipeline whose writes wait 3 ms without intents (10 ms at most), on a test clock."""
    clock = Clock()
    pipeline, ledger, tables = await pipeline_for(database, tmp_path, ring, quiet_s=0.003,
                                                  clock=clock)  # fmt: skip
    return pipeline, ledger, tables, clock


def committed(ring) -> int:
    return ring.stats().consumers[0].sequence


def intent(i: int) -> np.ndarray:
    return intent_record(i, decision_time_ms=BTC_FIRST + i * 5 * MIN)


async def order_ids(dsn) -> list[int]:
    return [int(r["intent_id"]) for r in await rows(dsn, "SELECT intent_id FROM orders ORDER BY 1")]


async def write_the_rest(pipeline, ledger) -> None:
    """``finish`` with every held write let go."""
    finishing = asyncio.ensure_future(pipeline.finish())
    while not finishing.done():
        ledger.release()
        await asyncio.sleep(0.01)
    await finishing


async def settled(pipeline) -> int:
    await asyncio.wait({pipeline.writing})
    return pipeline.settle()


async def test_intents_published_while_a_write_is_in_flight_are_decided_before_it_commits(
    database, tmp_path, intents_ring
):
    pipeline, ledger, tables = await pipeline_for(database, tmp_path, intents_ring)
    producer = intents_ring.producer()
    producer.publish_batch(intent(1))
    assert await pipeline.take() == 1
    await asyncio.sleep(0)  # the first write starts and is held
    producer.publish_batch(np.concatenate([intent(2), intent(3)]))

    assert await pipeline.take() == 2
    assert pipeline.service.counters["intents_accepted"] == 3  # all decided, one write begun
    assert ledger.started == 1 and pipeline.settle() == 0
    assert committed(intents_ring) == 0 and await order_ids(database.dsn) == []

    ledger.release()
    assert await settled(pipeline) == 1  # the ring commits the first batch only, once written
    assert committed(intents_ring) == 1 and await order_ids(database.dsn) == [1]
    ledger.release()
    assert await settled(pipeline) == 2 and pipeline.idle
    assert committed(intents_ring) == 3 and await order_ids(database.dsn) == [1, 2, 3]
    await tables.close()


async def test_a_write_waits_until_no_intent_came_for_the_quiet_time(
    database, tmp_path, intents_ring
):
    pipeline, ledger, tables, clock = await quiet_pipeline(database, tmp_path, intents_ring)
    producer = intents_ring.producer()
    producer.publish_batch(intent(31))
    await pipeline.take()
    assert pipeline.writing is None and pipeline.write_due_in_s() == pytest.approx(0.003)
    clock.advance_ms(2)
    producer.publish_batch(intent(32))  # the brain's next step of the same burst
    await pipeline.take()
    clock.advance_ms(2)
    assert pipeline.settle() == 0 and pipeline.writing is None  # 2 ms since the last intent
    assert pipeline.write_due_in_s() == pytest.approx(0.001)
    clock.advance_ms(1)
    pipeline.settle()
    assert pipeline.writing is not None and pipeline.write_due_in_s() == 0.0
    ledger.release()
    assert await settled(pipeline) == 1  # the next batch, quiet too, is written at once
    assert pipeline.writing is not None
    ledger.release()
    assert await settled(pipeline) == 1 and pipeline.idle
    assert await order_ids(database.dsn) == [31, 32] and committed(intents_ring) == 2
    await tables.close()


async def test_intents_that_keep_coming_are_written_at_most_max_s_after_the_oldest(
    database, tmp_path, intents_ring
):
    pipeline, ledger, tables, clock = await quiet_pipeline(database, tmp_path, intents_ring)
    producer = intents_ring.producer()
    for i in range(5):  # an intent every 2 ms: never quiet for 3 ms
        producer.publish_batch(intent(40 + i))
        await pipeline.take()
        assert pipeline.writing is None
        clock.advance_ms(2)
    pipeline.settle()  # 10 ms (max_s) after the first was decided
    assert pipeline.writing is not None
    ledger.release()
    assert await settled(pipeline) == 1 and committed(intents_ring) == 1
    await write_the_rest(pipeline, ledger)
    assert await order_ids(database.dsn) == [40, 41, 42, 43, 44]
    await tables.close()


async def test_finish_writes_every_decided_batch_in_order_then_commits_it(
    database, tmp_path, intents_ring
):
    pipeline, ledger, tables = await pipeline_for(database, tmp_path, intents_ring)
    producer = intents_ring.producer()
    for i in (11, 12, 13):
        producer.publish_batch(intent(i))
        await pipeline.take()
    await write_the_rest(pipeline, ledger)
    assert pipeline.idle and committed(intents_ring) == 3
    assert await order_ids(database.dsn) == [11, 12, 13]
    await tables.close()


async def test_a_write_given_up_leaves_its_batch_and_every_later_one_uncommitted(
    database, tmp_path, intents_ring
):
    down = Database("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=0.2)
    up_tables = ExecutorTables(database)
    service = await ExecutorService.restore(up_tables, directory(),
                                            settings(database.dsn, tmp_path))  # fmt: skip
    down_tables = ExecutorTables(down)
    failing = ExecutorService(service.venue, service.guards, down_tables, directory(),
                              should_stop=lambda: True, retry_delays=(0.001, 0.001))  # fmt: skip
    pipeline = IntentPipeline(failing, ReadAhead(intents_ring.consumer(0)), quiet_s=0.0)
    producer = intents_ring.producer()
    producer.publish_batch(intent(21))
    await pipeline.take()
    producer.publish_batch(intent(22))
    await pipeline.take()  # decided while the first write fails

    with pytest.raises(PersistAborted):
        await settled(pipeline)
    # The book holds both decisions, the database neither: nothing more is taken or committed.
    producer.publish_batch(intent(23))
    with pytest.raises(PersistAborted, match="decided but never written"):
        await pipeline.take()
    assert committed(intents_ring) == 0 and await order_ids(database.dsn) == []
    await up_tables.close()
    await down_tables.close()
    await down.close()


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: float) -> None:
        self.ns += round(ms * 1e6)


def bars_received_at(*recv_ns: int, minutes: tuple[int, ...] = ()) -> np.ndarray:
    out = np.zeros(len(recv_ns), BAR_DTYPE)
    out["recv_ns"] = recv_ns
    out["open_time_ms"] = [m * 60_000 for m in minutes] if minutes else 60_000
    return out


def test_bar_hold_waits_until_the_newest_bar_is_quiet_then_lets_the_batch_go():
    clock = Clock()
    hold = BarHold(quiet_s=0.005, max_s=0.05, clock=clock)
    waiting = bars_received_at(clock.ns - 3_000_000, clock.ns - 1_000_000)
    assert hold.remaining_s(waiting, behind=False) == pytest.approx(0.004)
    clock.advance_ms(4)
    assert hold.remaining_s(waiting, behind=False) == 0.0


def test_bar_hold_times_the_quiet_from_the_newest_stamp_not_the_last_bar():
    # Two connections' frames read in one loop turn reach the ring one connection after the
    # other: the last bar in ring order may carry the older stamp.
    clock = Clock()
    hold = BarHold(quiet_s=0.005, max_s=0.05, clock=clock)
    waiting = bars_received_at(clock.ns - 1_000_000, clock.ns - 4_000_000)
    assert hold.remaining_s(waiting, behind=False) == pytest.approx(0.004)


def test_bar_hold_lets_old_bars_go_at_once():
    clock = Clock()
    hold = BarHold(quiet_s=0.005, max_s=0.05, clock=clock)
    assert hold.remaining_s(bars_received_at(0, 0), behind=False) == 0.0  # backfilled: no stamp


def test_bar_hold_holds_while_the_brain_is_behind_but_never_past_the_maximum():
    clock = Clock()
    hold = BarHold(quiet_s=0.005, max_s=0.05, clock=clock)
    old = bars_received_at(0)
    assert hold.remaining_s(old, behind=True) == pytest.approx(0.05)
    clock.advance_ms(30)
    assert hold.remaining_s(old, behind=True) == pytest.approx(0.02)
    clock.advance_ms(20)
    assert hold.remaining_s(old, behind=True) == 0.0
    # The next batch is timed from when it is first seen, not from the last one.
    assert hold.remaining_s(old, behind=True) == pytest.approx(0.05)


def test_bar_hold_lets_a_backlog_of_several_minutes_go_at_once():
    clock = Clock()
    hold = BarHold(quiet_s=0.005, max_s=0.05, clock=clock)
    backlog = bars_received_at(clock.ns, clock.ns, minutes=(7, 8))  # a replay, not a burst
    assert hold.remaining_s(backlog, behind=True) == 0.0
