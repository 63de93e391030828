"""PostgreSQL edge of the backtest: the champion model in, signals and experience out.

A backtest writes what the live brain and executor would have written, through the same
durable writer and row builders, so that ``aegis-kernel train`` learns from it:

- ``signals``: every candidate with its decision;
- ``experience_buffer``: the shadow label of every candidate whose horizon passed (source
  ``shadow``) and the realised net return of every closed trade (source ``virtual_trade``);
- ``virtual_trades``: every closed paper trade.

Every table is keyed on the deterministic intent id (or candidate), so running the same
backtest twice, or over a window the kernel also traded, never duplicates a row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aegis.features.vector import FEATURE_NAMES
from aegis.ml.model import ModelError, ReturnModel, feature_list_hash
from aegis.ml.registry import ActiveModel
from aegis.ml.repository import load_champion
from aegis.ml.shadow import experience_rows
from aegis.paper.backtest import BacktestResult
from aegis.risk.decision import signal_rows
from aegis.store.database import Database
from aegis.store.durable import DurableWriter
from aegis.store.executor_rows import trade_row
from aegis.store.setup import prepare_database

log = logging.getLogger(__name__)

VIRTUAL_TRADE_SOURCE = "virtual_trade"


@dataclass(frozen=True)
class StoredCounts:
    signals: int
    experience: int
    virtual_trades: int
    spilled: int  # rows the writer had to keep on disk (database unreachable)


@dataclass(frozen=True)
class Champion:
    """The model a backtest trades with, and the window it was trained on."""

    active: ActiveModel
    train_start_ms: int
    train_end_ms: int


async def load_champion_model(dsn: str) -> Champion | None:
    """The champion of ``ml_models`` for the brain's feature list, or None (cold start)."""
    db = Database(dsn, max_size=1)
    try:
        async with db.acquire() as conn:
            stored = await load_champion(conn)
    finally:
        await db.close()
    if stored is None:
        return None
    try:
        model = ReturnModel.from_bytes(stored.model, feature_list_hash(FEATURE_NAMES))
    except ModelError as exc:
        log.error("champion %d refused, backtest runs rule-only: %s", stored.model_version, exc)
        return None
    active = ActiveModel(version=stored.model_version, model=model, metrics=stored.metrics)
    return Champion(active, int(stored.train_start_ms), int(stored.train_end_ms))


def result_rows(
    result: BacktestResult, timeframe: str, quote_asset: str, now_ms: int
) -> dict[str, list[tuple]]:
    """Rows per table, built by the kernel's own row builders."""
    name = result.symbols.__getitem__
    exits = {int(r["intent_id"]): (float(r["stop_pct"]), float(r["take_pct"]))
             for r in result.intents}  # fmt: skip
    experience = experience_rows(result.labels, name, timeframe, now_ms)
    experience += [
        (VIRTUAL_TRADE_SOURCE, name(t.symbol_id), timeframe, t.decision_time_ms,
         list(t.features), t.net_return_pct, 1.0, t.model_version, now_ms, t.exit_at_ms)
        for t in result.trades
    ]  # fmt: skip
    trades = [trade_row(t, name(t.symbol_id), timeframe, quote_asset, now_ms,
                        exits.get(t.intent_id)) for t in result.trades]  # fmt: skip
    return {
        "signals": signal_rows(result.signals, name, timeframe, now_ms),
        "experience_buffer": experience,
        "virtual_trades": trades,
    }


async def store_result(
    dsn: str, result: BacktestResult, timeframe: str, home: Path, quote_asset: str = "USDT"
) -> StoredCounts:
    """Migrate if needed, then write the result durably; return the rows per table."""
    await prepare_database(dsn)
    rows = result_rows(result, timeframe, quote_asset, int(time.time() * 1000))
    db = Database(dsn)
    writer = DurableWriter(db, Path(home) / "spill", name="backtest")
    await writer.start()
    try:
        for table, batch in rows.items():
            if batch:
                writer.submit(table, batch)
        await writer.flush(timeout_s=120.0)
    finally:
        await writer.close()
        await db.close()
    spilled = writer.stats.spilled_rows
    if spilled:
        log.warning("backtest: %d rows spilled to %s (database unreachable); the next writer "
                    "replays them", spilled, Path(home) / "spill")  # fmt: skip
    return StoredCounts(len(rows["signals"]), len(rows["experience_buffer"]),
                        len(rows["virtual_trades"]), spilled)  # fmt: skip
