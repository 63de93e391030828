"""What the durable writer knows about each table: columns, natural key, conflict rule.

Every write is ``COPY`` into a per-connection temp table, then ``INSERT … SELECT … ON CONFLICT``
on the table's natural key, so replaying a batch (after a retry or from a spill file) never
duplicates a row. Append-only tables use ``DO NOTHING``; tables whose rows evolve (orders,
virtual positions, models) use ``DO UPDATE … WHERE stored.updated_at_ms <= new.updated_at_ms``,
so an older copy replayed late never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class UnknownTableError(KeyError):
    """A batch names a table the store does not write."""


class RowShapeError(ValueError):
    """A row does not fit its table (wrong length, unknown column)."""


@dataclass(frozen=True)
class TableSpec:
    """One writable table."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    version_column: str | None = None  # set: upsert, the newer version wins
    partition_column: str | None = None  # set: monthly partitions ensured before writes
    defaults: Mapping[str, Any] = field(default_factory=dict)  # for mapping rows

    @property
    def stage(self) -> str:
        return f"_aegis_stage_{self.name}"

    def create_stage_sql(self) -> str:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (LIKE {self.name}) ON COMMIT DELETE ROWS"
        )

    def insert_sql(self) -> str:
        cols = ", ".join(self.columns)
        key = ", ".join(self.key)
        if self.version_column is None:
            return (
                f"INSERT INTO {self.name} ({cols}) SELECT {cols} FROM {self.stage} "
                f"ON CONFLICT ({key}) DO NOTHING"
            )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns if c not in self.key)
        # DISTINCT ON: one batch may carry several versions of a row; keep the newest.
        return (
            f"INSERT INTO {self.name} ({cols}) SELECT DISTINCT ON ({key}) {cols} "
            f"FROM {self.stage} ORDER BY {key}, {self.version_column} DESC "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates} "
            f"WHERE {self.name}.{self.version_column} <= EXCLUDED.{self.version_column}"
        )

    def values_sql(self) -> str:
        """Row-at-a-time idempotent INSERT (for ``executemany`` of small batches)."""
        cols = ", ".join(self.columns)
        marks = ", ".join(f"${i + 1}" for i in range(len(self.columns)))
        key = ", ".join(self.key)
        head = f"INSERT INTO {self.name} ({cols}) VALUES ({marks}) ON CONFLICT ({key}) "
        if self.version_column is None:
            return head + "DO NOTHING"
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns if c not in self.key)
        return (
            f"{head}DO UPDATE SET {updates} "
            f"WHERE {self.name}.{self.version_column} <= EXCLUDED.{self.version_column}"
        )

    def to_tuples(self, rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> list[tuple]:
        """Normalise rows (tuples in column order, or mappings by column name)."""
        width = len(self.columns)
        out: list[tuple] = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                unknown = set(row) - set(self.columns)
                if unknown:
                    raise RowShapeError(f"{self.name} row {i}: unknown columns {sorted(unknown)}")
                out.append(tuple(row.get(c, self.defaults.get(c)) for c in self.columns))
            else:
                if len(row) != width:
                    raise RowShapeError(
                        f"{self.name} row {i}: {len(row)} values, expected {width} "
                        f"({', '.join(self.columns)})"
                    )
                out.append(tuple(row))
        return out


def _spec(name: str, columns: str, key: str, **kw: Any) -> TableSpec:
    return TableSpec(name, tuple(columns.split()), tuple(key.split()), **kw)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "market_data",
            "symbol timeframe open_time_ms open high low close volume quote_volume "
            "trade_count taker_buy_volume taker_buy_quote_volume flags",
            "symbol timeframe open_time_ms",
            partition_column="open_time_ms",
            defaults={"flags": 0},
        ),
        _spec(
            "signals",
            "intent_id symbol timeframe decision_time_ms direction confidence "
            "predicted_return_pct model_version decision htf_trend structure_break "
            "fvg_distance_pct order_block_distance_pct liquidity_sweep atr_pct volume_zscore "
            "features created_at_ms",
            "intent_id",
        ),
        _spec(
            "virtual_positions",
            "position_id symbol side status opened_at_ms closed_at_ms entry_price quantity "
            "notional stop_price take_price exit_price exit_reason confidence "
            "predicted_return_pct model_version features updated_at_ms state",
            "position_id",
            version_column="updated_at_ms",
            defaults={"state": {}},
        ),
        _spec(
            "virtual_trades",
            "trade_id symbol timeframe side entry_at_ms exit_at_ms duration_ms entry_price "
            "exit_price close_price quantity notional gross_return_pct net_return_pct "
            "commission_paid commission_asset slippage_pct exit_reason stop_pct take_pct "
            "predicted_return_pct model_version features confidence position_size_pct pnl "
            "reward_score created_at_ms",
            "trade_id",
        ),
        _spec(
            "orders",
            "client_order_id intent_id mode symbol side order_type time_in_force quantity "
            "quote_order_qty price stop_price status exchange_order_id executed_qty "
            "cumulative_quote_qty reject_reason detail created_at_ms updated_at_ms",
            "client_order_id",
            version_column="updated_at_ms",
            defaults={"executed_qty": 0, "cumulative_quote_qty": 0, "detail": {}},
        ),
        _spec(
            "trades",
            "symbol trade_id mode client_order_id exchange_order_id side price quantity "
            "quote_qty commission commission_asset is_maker executed_at_ms",
            "symbol trade_id",
        ),
        _spec(
            "ml_models",
            "model_version status model feature_list_hash feature_names train_start_ms "
            "train_end_ms train_rows metrics created_at_ms updated_at_ms",
            "model_version",
            version_column="updated_at_ms",
            defaults={"metrics": {}},
        ),
        _spec(
            "experience_buffer",
            "source symbol timeframe decision_time_ms features label weight model_version "
            "created_at_ms exit_time_ms",
            "source symbol timeframe decision_time_ms",
            defaults={"weight": 1.0},
        ),
        _spec(
            "account_state",
            "account ts_ms equity cash peak_equity open_positions balances",
            "account ts_ms",
            defaults={"balances": {}},
        ),
        _spec(
            "kernel_events",
            "event_id ts_ms process pid event reason exit_code detail",
            "event_id",
            defaults={"detail": {}},
        ),
    )
}


def table_spec(name: str) -> TableSpec:
    """Return the spec of ``name`` or raise ``UnknownTableError``."""
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(f"no durable writer spec for table {name!r}") from None
