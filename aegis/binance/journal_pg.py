"""``PgOrderJournal``: the ``OrderJournal`` on PostgreSQL's ``orders`` and ``trades`` tables.

Each call is one transaction (one commit, so one WAL flush), durable when it returns (the
server's ``synchronous_commit``). Rows are ``mode = 'live'``; what has no column of its own lives in
``orders.detail``: ``role`` (entry/exit), the intent or exit decision, ``mark`` (exit-rule state
of the open position) and ``closed`` (reason and time). An estimated fill (rebuilt from an order
query) is a ``trades`` row whose synthetic trade id ends in slot 999 (see ``live_book``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from aegis.binance.journal import (
    FINAL_STATUSES,
    ROLE_ENTRY,
    JournalFill,
    JournalOrder,
    JournalState,
    OrderState,
    PositionMark,
)

_FINAL = sorted(FINAL_STATUSES)

_INSERT_ORDER = """
INSERT INTO orders (client_order_id, intent_id, mode, symbol, side, order_type, quantity, status,
                    detail, created_at_ms, updated_at_ms)
VALUES ($1, $2, 'live', $3, $4, $5, $6, $7, $8::jsonb, $9, $9)
ON CONFLICT (client_order_id) DO NOTHING
RETURNING client_order_id
"""
_ACK = """
UPDATE orders SET status = $2, exchange_order_id = $3, executed_qty = $4,
                  cumulative_quote_qty = $5, updated_at_ms = $6
WHERE client_order_id = $1 AND NOT (status = ANY($7::text[]) AND NOT $2 = ANY($7::text[]))
"""
_REJECT = """
UPDATE orders SET status = 'REJECTED', reject_reason = $2, updated_at_ms = $3
WHERE client_order_id = $1
"""
_FILL = """
INSERT INTO trades (symbol, trade_id, mode, client_order_id, exchange_order_id, side, price,
                    quantity, quote_qty, commission, commission_asset, is_maker, executed_at_ms)
VALUES ($1, $2, 'live', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (symbol, trade_id) DO NOTHING
"""
_ENTRY_DETAIL = """
UPDATE orders SET detail = detail || jsonb_build_object($2::text, $3::jsonb)
WHERE intent_id = $1 AND mode = 'live' AND detail->>'role' = 'entry'
"""
_LOAD_ORDERS = """
WITH done AS (
    SELECT intent_id FROM orders
    WHERE mode = 'live' AND detail->>'role' = 'entry'
      AND (detail ? 'closed' OR (status = ANY($1::text[]) AND executed_qty = 0))
)
SELECT * FROM orders
WHERE mode = 'live' AND intent_id NOT IN (SELECT intent_id FROM done)
ORDER BY created_at_ms, client_order_id
"""
_LOAD_FILLS = """
SELECT * FROM trades WHERE mode = 'live' AND client_order_id = ANY($1::text[])
ORDER BY executed_at_ms, trade_id
"""


def _order(row: asyncpg.Record) -> JournalOrder:
    detail = orjson.loads(row["detail"])
    role = detail.pop("role", ROLE_ENTRY)
    detail.pop("mark", None)
    return JournalOrder(
        client_order_id=row["client_order_id"],
        intent_id=int(row["intent_id"]),
        role=role,
        symbol=row["symbol"],
        side=row["side"],
        order_type=row["order_type"],
        quantity=row["quantity"],
        created_at_ms=row["created_at_ms"],
        detail=detail,
        status=row["status"],
        exchange_order_id=row["exchange_order_id"],
        executed_qty=row["executed_qty"],
        cumulative_quote=row["cumulative_quote_qty"],
        reject_reason=row["reject_reason"] or "",
        updated_at_ms=row["updated_at_ms"],
    )


def _fill(row: asyncpg.Record) -> JournalFill:
    trade_id = int(row["trade_id"])
    return JournalFill(
        row["client_order_id"], row["symbol"], trade_id, row["side"], row["price"],
        row["quantity"], row["quote_qty"], row["commission"], row["commission_asset"],
        row["is_maker"], row["executed_at_ms"], row["exchange_order_id"],
        estimated=trade_id < 0 and (-trade_id) % 1000 == 999,
    )  # fmt: skip


def _fill_args(fill: JournalFill) -> tuple:
    return (
        fill.symbol, fill.trade_id, fill.client_order_id, fill.exchange_order_id, fill.side,
        fill.price, fill.quantity, fill.quote_qty, fill.commission, fill.commission_asset,
        fill.is_maker, fill.executed_at_ms,
    )  # fmt: skip


class PgOrderJournal:
    """``OrderJournal`` over an asyncpg pool (the ``orders`` / ``trades`` tables must exist)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, **pool_kwargs: Any) -> PgOrderJournal:
        """Open a small pool of its own on ``dsn``."""
        pool_kwargs.setdefault("min_size", 1)
        pool_kwargs.setdefault("max_size", 2)
        return cls(await asyncpg.create_pool(dsn, **pool_kwargs))

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def intent_written(self, order: JournalOrder) -> bool:
        detail = orjson.dumps({**order.detail, "role": order.role}).decode()
        inserted = await self._pool.fetchval(
            _INSERT_ORDER, order.client_order_id, Decimal(order.intent_id), order.symbol,
            order.side, order.order_type, order.quantity, order.status, detail,
            order.created_at_ms,
        )  # fmt: skip
        return inserted is not None

    async def order_acked(
        self, client_order_id: str, state: OrderState, fills: Sequence[JournalFill], time_ms: int
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _ACK, client_order_id, state.status, state.exchange_order_id,
                state.executed_qty, state.cumulative_quote, time_ms, _FINAL,
            )  # fmt: skip
            if fills:
                await conn.executemany(_FILL, [_fill_args(f) for f in fills])

    async def order_rejected(self, client_order_id: str, reason: str, time_ms: int) -> None:
        await self._pool.execute(_REJECT, client_order_id, reason, time_ms)

    async def positions_marked(self, marks: Mapping[int, PositionMark]) -> None:
        if not marks:
            return
        rows = [
            (Decimal(intent_id), "mark", orjson.dumps(
                {"peak_high": m.peak_high, "bars_held": m.bars_held,
                 "last_bar_ms": m.last_bar_ms, "mark_price": m.mark_price}).decode())
            for intent_id, m in marks.items()
        ]  # fmt: skip
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_ENTRY_DETAIL, rows)

    async def position_closed(self, intent_id: int, reason: str, time_ms: int) -> None:
        value = orjson.dumps({"reason": reason, "time_ms": time_ms}).decode()
        await self._pool.execute(_ENTRY_DETAIL, Decimal(intent_id), "closed", value)

    async def load_unfinished(self) -> JournalState:
        rows = await self._pool.fetch(_LOAD_ORDERS, _FINAL)
        orders = tuple(_order(r) for r in rows)
        marks = {}
        for row in rows:
            mark = orjson.loads(row["detail"]).get("mark")
            if mark is not None:
                marks[int(row["intent_id"])] = PositionMark(
                    float(mark["peak_high"]), int(mark["bars_held"]),
                    int(mark["last_bar_ms"]), float(mark["mark_price"]),
                )  # fmt: skip
        ids = [o.client_order_id for o in orders]
        fills = tuple(_fill(r) for r in await self._pool.fetch(_LOAD_FILLS, ids)) if ids else ()
        return JournalState(orders, fills, marks)
