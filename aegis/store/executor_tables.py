"""The executor's tables: intents as orders before anything acts on them, the paper book, equity.

Every write of one executor step (a batch of intents, or a batch of bars) is ONE SQL statement
— one data-modifying CTE per table — so it is atomic and costs one round trip. The executor
awaits it before committing the ring batch that caused it: a crash at any instant leaves either
the whole step or none of it, and the ring delivers the batch again. A table with one row in
the step (the usual case: an intent, then its fill) gets ``INSERT ... VALUES`` of scalar
parameters sent in binary; several rows travel as column arrays through ``unnest``. Both
forms are prepared once per shape and run the same conflict rules. Every statement is
idempotent, so that replay is harmless:

- ``orders``: an entry order (``client_order_id`` = ``aegis-<intent id>``, the live
  ``newClientOrderId`` too) is inserted with status NEW before the paper exchange acts on the
  intent; later transitions (FILLED, REJECTED, CANCELED) only ever move a row out of NEW, so a
  stale replay can never undo a fill. Exit orders are inserted once, FILLED.
- ``virtual_positions``: upserted while open, the newest processed bar winning (market time,
  never the wall clock); ``closed`` is final. ``state`` (migration 3) is the full position.
- ``virtual_trades``: inserted once per position (``trade_id`` = intent id).
- ``account_state``: one snapshot per (account, market ms); the latest write of that ms wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from aegis.paper.intents import PaperIntent
from aegis.paper.positions import PaperPosition
from aegis.store.database import Database
from aegis.store.executor_rows import LedgerBatch, LedgerRecordError, intent_from_detail

# (column, SQL type). In the unnest form jsonb and float8[] travel as text and are cast in the
# statement, because unnest() of a 2-D array would flatten the feature vectors; in the VALUES
# form they are ordinary binary parameters (jsonb through the orjson codec every connection of
# ``Database`` registers).
_ORDERS = (
    ("client_order_id", "text"), ("intent_id", "numeric"), ("mode", "text"), ("symbol", "text"),
    ("side", "text"), ("order_type", "text"), ("quantity", "numeric"),
    ("quote_order_qty", "numeric"), ("price", "numeric"), ("status", "text"),
    ("executed_qty", "numeric"), ("cumulative_quote_qty", "numeric"),
    ("reject_reason", "text"), ("detail", "jsonb"), ("created_at_ms", "bigint"),
    ("updated_at_ms", "bigint"),
)  # fmt: skip
_POSITIONS = (
    ("position_id", "numeric"), ("symbol", "text"), ("side", "text"), ("status", "text"),
    ("opened_at_ms", "bigint"), ("closed_at_ms", "bigint"), ("entry_price", "numeric"),
    ("quantity", "numeric"), ("notional", "numeric"), ("stop_price", "numeric"),
    ("take_price", "numeric"), ("exit_price", "numeric"), ("exit_reason", "text"),
    ("confidence", "float8"), ("predicted_return_pct", "float8"), ("model_version", "bigint"),
    ("features", "float8[]"), ("updated_at_ms", "bigint"), ("state", "jsonb"),
)  # fmt: skip
_TRADES = (
    ("trade_id", "numeric"), ("symbol", "text"), ("timeframe", "text"), ("side", "text"),
    ("entry_at_ms", "bigint"), ("exit_at_ms", "bigint"), ("duration_ms", "bigint"),
    ("entry_price", "numeric"), ("exit_price", "numeric"), ("close_price", "numeric"),
    ("quantity", "numeric"), ("notional", "numeric"), ("gross_return_pct", "float8"),
    ("net_return_pct", "float8"), ("commission_paid", "numeric"), ("commission_asset", "text"),
    ("slippage_pct", "float8"), ("exit_reason", "text"), ("stop_pct", "float8"),
    ("take_pct", "float8"), ("predicted_return_pct", "float8"), ("model_version", "bigint"),
    ("features", "float8[]"), ("confidence", "float8"), ("position_size_pct", "float8"),
    ("pnl", "numeric"), ("reward_score", "float8"), ("created_at_ms", "bigint"),
)  # fmt: skip
_ACCOUNTS = (
    ("account", "text"), ("ts_ms", "bigint"), ("equity", "numeric"), ("cash", "numeric"),
    ("peak_equity", "numeric"), ("open_positions", "integer"),
)  # fmt: skip

# A transition only ever leaves NEW; a NEW row replayed over a final one changes nothing.
_ORDERS_CONFLICT = (
    "ON CONFLICT (client_order_id) DO UPDATE SET status = EXCLUDED.status,"
    " quantity = EXCLUDED.quantity, price = EXCLUDED.price,"
    " executed_qty = EXCLUDED.executed_qty, cumulative_quote_qty = EXCLUDED.cumulative_quote_qty,"
    " reject_reason = EXCLUDED.reject_reason, updated_at_ms = EXCLUDED.updated_at_ms"
    " WHERE orders.status = 'NEW' AND EXCLUDED.status <> 'NEW'"
)
_POSITIONS_CONFLICT = (
    "ON CONFLICT (position_id) DO UPDATE SET status = EXCLUDED.status,"
    " closed_at_ms = EXCLUDED.closed_at_ms, exit_price = EXCLUDED.exit_price,"
    " exit_reason = EXCLUDED.exit_reason, state = EXCLUDED.state,"
    " updated_at_ms = EXCLUDED.updated_at_ms"
    " WHERE virtual_positions.status = 'open' AND (EXCLUDED.status = 'closed'"
    " OR (EXCLUDED.state->>'last_bar_ms')::bigint"
    " >= (virtual_positions.state->>'last_bar_ms')::bigint)"
)
_TRADES_CONFLICT = "ON CONFLICT (trade_id) DO NOTHING"
_ACCOUNTS_CONFLICT = (
    "ON CONFLICT (account, ts_ms) DO UPDATE SET equity = EXCLUDED.equity,"
    " cash = EXCLUDED.cash, peak_equity = EXCLUDED.peak_equity,"
    " open_positions = EXCLUDED.open_positions"
)
_TABLES = (
    ("orders", _ORDERS, _ORDERS_CONFLICT),
    ("virtual_positions", _POSITIONS, _POSITIONS_CONFLICT),
    ("virtual_trades", _TRADES, _TRADES_CONFLICT),
    ("account_state", _ACCOUNTS, _ACCOUNTS_CONFLICT),
)
_TEXT_CARRIED = ("jsonb", "float8[]")

# How a table's rows travel in one step's statement: absent, one row as scalar parameters
# (VALUES), or any number of rows as column arrays (unnest).
_ABSENT, _ONE, _MANY = 0, 1, 2


def _values_cte(alias: str, table: str, columns, conflict: str, first: int) -> str:
    # One row: no text rendering of arrays and JSON in Python, no unnest and text casts on the
    # server (about 0.1 ms of a step's ~0.5 ms with the unnest form, measured in
    # benchmarks/bench_executor.py).
    params = ", ".join(f"${first + i}::{kind}" for i, (_, kind) in enumerate(columns))
    names = ", ".join(name for name, _ in columns)
    return f"{alias} AS (INSERT INTO {table} ({names}) VALUES ({params}) {conflict})"


def _unnest_cte(alias: str, table: str, columns, conflict: str, first: int) -> str:
    params = ", ".join(
        f"${first + i}::{'text' if kind in _TEXT_CARRIED else kind}[]"
        for i, (_, kind) in enumerate(columns)
    )
    names = ", ".join(name for name, _ in columns)
    select = ", ".join(
        f"u.{name}::{kind}" if kind in _TEXT_CARRIED else f"u.{name}" for name, kind in columns
    )
    return (
        f"{alias} AS (INSERT INTO {table} ({names}) SELECT {select} "
        f"FROM unnest({params}) AS u({names}) {conflict})"
    )


_MARKS = (("position_id", "numeric"), ("mark", "jsonb"), ("updated_at_ms", "bigint"))


def _marks_cte(alias: str, form: int, first: int) -> str:
    # Merges the mark into the stored state; an older mark (a replayed step) and a position
    # closed meanwhile are left alone, as the full-row upsert does.
    if form == _ONE:
        source = f"(VALUES (${first}::numeric, ${first + 1}::jsonb, ${first + 2}::bigint))"
    else:
        source = f"unnest(${first}::numeric[], ${first + 1}::text[], ${first + 2}::bigint[])"
    return (
        f"{alias} AS (UPDATE virtual_positions v SET state = v.state || m.mark::jsonb,"
        f" updated_at_ms = m.updated_at_ms FROM {source} AS m(position_id, mark, updated_at_ms)"
        f" WHERE v.position_id = m.position_id AND v.status = 'open'"
        f" AND (m.mark::jsonb->>'last_bar_ms')::bigint >= (v.state->>'last_bar_ms')::bigint)"
    )


def _statement(shape: tuple[int, ...]) -> str:
    """The one statement writing a step whose tables hold ``shape`` (_ABSENT/_ONE/_MANY) rows
    (the four tables, then the position marks)."""
    parts, first = [], 1
    for i, ((table, columns, conflict), form) in enumerate(zip(_TABLES, shape, strict=False)):
        if form == _ABSENT:
            continue
        build = _values_cte if form == _ONE else _unnest_cte
        parts.append(build(f"w{i}", table, columns, conflict, first))
        first += len(columns)
    if shape[len(_TABLES)] != _ABSENT:
        parts.append(_marks_cte("wm", shape[len(_TABLES)], first))
    return "WITH " + ", ".join(parts) + " SELECT 1"


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _column_values(kind: str, values: Sequence[Any]) -> list:
    if kind == "jsonb":
        return [orjson.dumps(v).decode() for v in values]
    if kind == "float8[]":
        return ["{" + ",".join(_float_text(x) for x in v) + "}" for v in values]
    return list(values)


def _parameters(columns, rows: Sequence[tuple]) -> list:
    if len(rows) == 1:
        return list(rows[0])
    by_column = list(zip(*rows, strict=True))
    return [_column_values(kind, by_column[i]) for i, (_, kind) in enumerate(columns)]


@dataclass(frozen=True)
class RestoredBook:
    """What the executor's rows say the paper book is, for ``PaperExchange.from_records``."""

    cash: float
    positions: tuple[PaperPosition, ...]
    pending: tuple[PaperIntent, ...]
    known_intent_ids: frozenset[int]
    last_entry_ms: Mapping[str, int]  # symbol -> market time of its last accepted entry
    closed_pnl: float


class ExecutorTables:
    """asyncpg implementation of the executor's ledger: one atomic statement per step.

    Holds one connection of ``database``'s pool for its whole life (no acquire/reset round
    trips per step); a broken connection is dropped and the next write takes a new one.
    ``close()`` gives it back.
    """

    def __init__(
        self, database: Database, *, mode: str = "paper", synchronous_commit: bool = True
    ) -> None:
        """``synchronous_commit=False`` makes each commit return before its WAL is flushed.

        A crash of the executor loses nothing either way (the commit is in PostgreSQL); a crash
        of the PostgreSQL server or of the machine may lose the last ~0.6 s of commits whose
        ring batches were already committed. The default waits for the flush.
        """
        if mode not in ("paper", "live"):
            raise ValueError(f"mode must be paper or live, got {mode!r}")
        self.database = database
        self.mode = mode
        self.synchronous_commit = synchronous_commit
        self.transactions = 0
        self._conn: asyncpg.Connection | None = None
        self._statements: dict[tuple[int, ...], str] = {}

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            await self._drop()
            pool = await self.database.pool()
            conn = await pool.acquire()
            if not self.synchronous_commit:
                await conn.execute("SET synchronous_commit TO off")
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            pool = await self.database.pool()
            await pool.release(conn)

    async def close(self) -> None:
        """Give the held connection back to the pool (before the pool closes)."""
        await self._drop()

    async def write(self, batch: LedgerBatch) -> None:
        """Write every row of ``batch`` atomically; returns once PostgreSQL committed it."""
        if batch.marks.keys() & batch.positions.keys():
            raise ValueError("a position is either marked or written in full in one step")
        groups = (batch.orders, list(batch.positions.values()), batch.trades, batch.accounts,
                  list(batch.marks.values()))  # fmt: skip
        shape = tuple(_ABSENT if not g else _ONE if len(g) == 1 else _MANY for g in groups)
        if not any(shape):
            return
        sql = self._statements.get(shape)
        if sql is None:
            sql = self._statements[shape] = _statement(shape)
        args: list = []
        for columns, rows in zip((*(t[1] for t in _TABLES), _MARKS), groups, strict=True):
            if rows:
                args.extend(_parameters(columns, rows))
        conn = await self._connection()
        try:
            await conn.execute(sql, *args)
        except BaseException:
            if conn.is_closed():
                await self._drop()
            raise
        self.transactions += 1

    async def load_known(self, starting_cash: float) -> RestoredBook:
        """Only the intent ids of ``mode`` already in ``orders`` and the last entry per symbol.

        For live mode, whose book ``LiveExchange`` rebuilds from its own journal.
        """
        async with self.database.acquire() as conn:
            ids, entries = await self._known(conn)
        return RestoredBook(
            cash=float(starting_cash), positions=(), pending=(), known_intent_ids=ids,
            last_entry_ms=entries, closed_pnl=0.0,
        )  # fmt: skip

    async def _known(self, conn) -> tuple[frozenset[int], dict[str, int]]:
        ids = await conn.fetch("SELECT DISTINCT intent_id FROM orders WHERE mode = $1", self.mode)
        entries = await conn.fetch(
            "SELECT symbol, max((detail->>'decision_time_ms')::bigint) AS at FROM orders"
            " WHERE mode = $1 AND side = 'BUY' AND detail ? 'decision_time_ms'"
            " AND (reject_reason IS NULL OR reject_reason NOT LIKE 'risk:%') GROUP BY symbol",
            self.mode,
        )
        known = frozenset(int(r["intent_id"]) for r in ids)
        return known, {r["symbol"]: int(r["at"]) for r in entries if r["at"] is not None}

    async def load(self, starting_cash: float) -> RestoredBook:
        """Rebuild the paper book: open positions, pending intents, every known intent id, cash.

        Cash is ``starting_cash`` + Σ pnl of closed trades − Σ cost of open positions, the same
        arithmetic the paper exchange did, from the rows it wrote.
        """
        async with self.database.acquire() as conn:
            open_rows = await conn.fetch(
                "SELECT position_id, state FROM virtual_positions WHERE status = 'open'"
            )
            pending_rows = await conn.fetch(
                "SELECT client_order_id, detail FROM orders WHERE mode = $1 AND side = 'BUY'"
                " AND status = 'NEW' ORDER BY created_at_ms, client_order_id",
                self.mode,
            )
            known, entries = await self._known(conn)
            pnl = await conn.fetchval("SELECT coalesce(sum(pnl), 0) FROM virtual_trades")
        positions = tuple(_position_from_row(r) for r in open_rows)
        held = {p.intent_id for p in positions}
        pending = tuple(
            intent
            for intent in (_intent_from_row(r) for r in pending_rows)
            if intent.intent_id not in held
        )
        cost = sum(p.cost for p in positions)
        return RestoredBook(
            cash=float(starting_cash) + float(pnl) - cost,
            positions=positions,
            pending=pending,
            known_intent_ids=known,
            last_entry_ms=entries,
            closed_pnl=float(pnl),
        )


def _position_from_row(row: Mapping[str, Any]) -> PaperPosition:
    try:
        return PaperPosition.from_record(row["state"])
    except (ValueError, TypeError) as exc:
        raise LedgerRecordError(f"virtual_positions {row['position_id']}: {exc}") from exc


def _intent_from_row(row: Mapping[str, Any]) -> PaperIntent:
    try:
        return intent_from_detail(row["detail"])
    except (LedgerRecordError, ValueError) as exc:
        raise LedgerRecordError(f"orders {row['client_order_id']}: {exc}") from exc
