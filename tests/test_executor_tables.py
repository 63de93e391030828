"""ExecutorTables over real PostgreSQL: one step is one atomic, idempotent statement, whatever the
number of rows per table (one row travels as VALUES parameters, several as unnest arrays)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import asyncpg
import pytest
from executor_support import empty_executor_tables, rows

from aegis.paper.exits import EXIT_REASONS, EXIT_TIME
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import EquitySnapshot, PaperPosition
from aegis.paper.pricing import close_position
from aegis.store.database import Database, is_transient
from aegis.store.executor_rows import (
    STATUS_FILLED,
    STATUS_NEW,
    LedgerBatch,
    account_row,
    entry_order_row,
    entry_transition_row,
    position_mark_row,
    position_row,
    trade_row,
)
from aegis.store.executor_tables import ExecutorTables

T0 = 1_679_616_000_000
MIN = 60_000
# Non-finite values must survive both forms: float8 columns keep them, JSON keeps them as text.
FEATURES = (0.5, float("nan"), float("inf"), float("-inf"), -1.25, 0.0, 1e-300, 3.0, 4.0, 5.0,
            6.0, 0.1)  # fmt: skip


@pytest.fixture
async def tables(module_dsn):
    await empty_executor_tables(module_dsn)
    database = Database(module_dsn)
    ledger = ExecutorTables(database)
    yield ledger
    await ledger.close()
    await database.close()


def intent(intent_id: int) -> PaperIntent:
    return PaperIntent(intent_id, 1, T0 - 5 * MIN, 500.0, 1.0, 2.0, float("nan"), 0.1, 7, FEATURES)


def position(intent_id: int, last_bar_ms: int = T0) -> PaperPosition:
    return PaperPosition(
        intent_id=intent_id, symbol_id=1, quantity=Decimal("0.01666"), entry_at_ms=T0,
        entry_price=30_000.1, entry_fill_price=30_006.1, notional=499.9, entry_commission=0.4999,
        commission_pct=0.1, slippage_pct=0.02, stop_pct=1.0, take_pct=2.0, trailing_pct=0.0,
        max_hold_bars=10, peak_high=30_010.0, bars_held=(last_bar_ms - T0) // MIN + 1,
        last_bar_ms=last_bar_ms, mark_price=30_002.5, decision_time_ms=T0 - 5 * MIN,
        predicted_return_pct=float("nan"), confidence=0.1, model_version=7,
        position_size_pct=5.0, features=FEATURES,
    )  # fmt: skip


def step_rows(intent_id: int) -> dict[str, tuple]:
    """The rows of one intent's life: its order NEW and FILLED, position, trade, snapshot."""
    pos = position(intent_id)
    trade, _ = close_position(pos, EXIT_TIME, EXIT_REASONS[EXIT_TIME], 30_100.7, T0 + 2 * MIN, 2)
    return {
        "new": entry_order_row(intent(intent_id), "BTCUSDT", "paper", STATUS_NEW, "", 5),
        "filled": entry_transition_row(
            intent_id,
            "BTCUSDT",
            "paper",
            STATUS_FILLED,
            6,
            quantity=pos.quantity,
            price=pos.entry_fill_price,
            quote=pos.notional,
        ),
        "position": position_row(pos, "BTCUSDT", 6),
        "trade": trade_row(trade, "BTCUSDT", "5m", "USDT", 7, (pos.stop_pct, pos.take_pct)),
        "account": account_row(
            "paper", EquitySnapshot(T0 + intent_id, 9_500.5, 500.25, 10_000.75, 1, 0), 10_001.0
        ),
    }


def batch_of(*lives: dict[str, tuple], orders=("new",)) -> LedgerBatch:
    batch = LedgerBatch()
    for life in lives:
        batch.orders.extend(life[kind] for kind in orders)
        batch.positions[life["position"][0]] = life["position"]
        batch.trades.append(life["trade"])
        batch.accounts.append(life["account"])
    return batch


def comparable(record: asyncpg.Record, keys: tuple[str, ...]) -> dict:
    """A stored row without its key columns and ids, NaN made comparable."""
    out = {}
    for name, value in record.items():
        if name in keys:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "intent_id"}
        out[name] = repr(value)  # repr: nan == nan, and Decimal('0.1') != Decimal('0.10')
    return out


async def stored(tables: ExecutorTables, table: str, key: str, value) -> asyncpg.Record:
    found = await rows(tables.database.dsn, f"SELECT * FROM {table} WHERE {key} = $1", value)
    assert len(found) == 1, f"{table} {key}={value}: {len(found)} rows"
    return found[0]


# table -> (its key for intent i, columns that hold the key or the id)
KEYS = {
    "orders": (lambda i: ("client_order_id", f"aegis-{i}"), ("client_order_id", "intent_id")),
    "virtual_positions": (lambda i: ("position_id", Decimal(i)), ("position_id",)),
    "virtual_trades": (lambda i: ("trade_id", Decimal(i)), ("trade_id",)),
    "account_state": (lambda i: ("ts_ms", T0 + i), ("ts_ms",)),
}


async def test_tables_one_row_and_many_rows_per_table_store_the_same_values(tables):
    await tables.write(batch_of(step_rows(1)))  # every table with one row: VALUES form
    await tables.write(batch_of(step_rows(2), step_rows(3)))  # two rows each: unnest form
    for table, (key_of, id_columns) in KEYS.items():
        one = await stored(tables, table, *key_of(1))
        many = await stored(tables, table, *key_of(2))
        assert comparable(one, id_columns) == comparable(many, id_columns), table
    held = await stored(tables, "virtual_positions", "position_id", Decimal(1))
    assert repr(PaperPosition.from_record(held["state"])) == repr(position(1))
    assert str(held["quantity"]) == "0.01666" and str(held["entry_price"]) == "30000.1"
    trade = await stored(tables, "virtual_trades", "trade_id", Decimal(1))
    assert repr(trade["features"]) == repr(list(FEATURES))


@pytest.mark.parametrize("rows_per_table", [1, 2])
async def test_tables_replayed_older_rows_never_move_a_row_back(tables, rows_per_table):
    lives = [step_rows(10 + i) for i in range(rows_per_table)]
    await tables.write(batch_of(*lives, orders=("new",)))
    newer = LedgerBatch()
    for life in lives:
        newer.orders.append(life["filled"])
        pos_id = life["position"][0]
        newer.positions[pos_id] = position_row(position(pos_id, T0 + 3 * MIN), "BTCUSDT", 9)
    await tables.write(newer)
    # The ring delivers the first step again (at-least-once): NEW and an older bar state.
    await tables.write(batch_of(*lives, orders=("new",)))
    for life in lives:
        pos_id = life["position"][0]
        order = await stored(tables, "orders", "client_order_id", f"aegis-{pos_id}")
        assert order["status"] == STATUS_FILLED
        held = await stored(tables, "virtual_positions", "position_id", Decimal(pos_id))
        assert held["state"]["last_bar_ms"] == T0 + 3 * MIN
    assert len(await rows(tables.database.dsn, "SELECT * FROM virtual_trades")) == rows_per_table


@pytest.mark.parametrize("rows_per_table", [1, 2])
async def test_tables_a_refused_row_writes_nothing_of_its_step(tables, rows_per_table):
    lives = [step_rows(20 + i) for i in range(rows_per_table)]
    batch = batch_of(*lives)
    bad = lives[-1]["position"]
    batch.positions[bad[0]] = (*bad[:2], "SHORT", *bad[3:])  # violates the side CHECK
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await tables.write(batch)
    assert not is_transient(caught.value)  # the executor stops on it instead of retrying
    for table in ("orders", "virtual_positions", "virtual_trades", "account_state"):
        assert await rows(tables.database.dsn, f"SELECT * FROM {table}") == [], table
    await tables.write(batch_of(*lives))  # the connection is still usable afterwards
    assert len(await rows(tables.database.dsn, "SELECT * FROM orders")) == rows_per_table


@pytest.mark.parametrize("marked", [1, 3])
async def test_tables_a_mark_moves_only_the_bar_fields_of_a_stored_open_position(tables, marked):
    ids = [40 + i for i in range(marked)]
    first = LedgerBatch()
    for pos_id in ids:
        first.positions[pos_id] = position_row(position(pos_id), "BTCUSDT", 5)
    await tables.write(first)
    later = replace(position(ids[0], T0 + 4 * MIN), peak_high=30_050.0, mark_price=30_040.0)
    marks = LedgerBatch()
    for pos_id in ids:
        marks.marks[pos_id] = position_mark_row(replace(later, intent_id=pos_id), 9)
    await tables.write(marks)
    stale = LedgerBatch()  # a replayed older step: must not move the position back
    for pos_id in ids:
        stale.marks[pos_id] = position_mark_row(position(pos_id, T0 + MIN), 10)
    await tables.write(stale)
    for pos_id in ids:
        held = await stored(tables, "virtual_positions", "position_id", Decimal(pos_id))
        restored = PaperPosition.from_record(held["state"])
        assert repr(restored) == repr(replace(later, intent_id=pos_id))  # the rest kept
        assert held["updated_at_ms"] == 9 and held["status"] == "open"


async def test_tables_a_mark_never_reopens_or_changes_a_closed_position(tables):
    life = step_rows(50)
    opened = LedgerBatch()
    opened.positions[50] = life["position"]
    await tables.write(opened)
    pos = position(50)
    trade, _ = close_position(pos, EXIT_TIME, EXIT_REASONS[EXIT_TIME], 30_100.7, T0 + 2 * MIN, 2)
    closed = LedgerBatch()
    closed.positions[50] = position_row(pos, "BTCUSDT", 8, closed=trade)
    await tables.write(closed)
    late = LedgerBatch()
    late.marks[50] = position_mark_row(position(50, T0 + 9 * MIN), 11)
    await tables.write(late)
    held = await stored(tables, "virtual_positions", "position_id", Decimal(50))
    assert held["status"] == "closed" and held["updated_at_ms"] == 8
    assert held["state"]["last_bar_ms"] == T0


async def test_tables_a_position_both_marked_and_written_in_one_step_is_refused(tables):
    batch = LedgerBatch()
    batch.positions[60] = position_row(position(60), "BTCUSDT", 5)
    batch.marks[60] = position_mark_row(position(60), 5)
    with pytest.raises(ValueError, match="either marked or written"):
        await tables.write(batch)
