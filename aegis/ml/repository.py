"""SQL of the learning loop: experience rows in, models out (tables of ``schema/V0001``).

Functions take an open asyncpg connection (or pool: anything with ``fetch``/``fetchrow``/
``execute``/``transaction``) created by the caller in its own event loop; this module never
connects and never imports the driver.

Columns relied on:
- ``experience_buffer``: source, symbol, timeframe, decision_time_ms, features (float8[]), label
  (net %), weight, created_at_ms, exit_time_ms (V0005; NULL on older rows).
- ``ml_models``: model_version, status, model, feature_list_hash, feature_names, train_start_ms,
  train_end_ms, train_rows, metrics (jsonb), created_at_ms, updated_at_ms; its partial unique
  index allows one champion.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key serialising model writes: b"AEGISML" as an integer.
MODEL_LOCK_KEY = 0x41454749534D4C

# When a candidate was labelled by several sources, the realised trade wins over the shadow label.
_SOURCE_RANK = "CASE source WHEN 'live_trade' THEN 0 WHEN 'virtual_trade' THEN 1 ELSE 2 END"


@dataclass(frozen=True)
class ExperienceRows:
    """Training rows ordered by decision time."""

    symbol: np.ndarray  # object (str)
    decision_time_ms: np.ndarray  # int64
    horizon_end_ms: np.ndarray  # int64, exit time, or its upper bound when not stored
    features: np.ndarray  # float64 (n, n_features); NULL elements become NaN
    label: np.ndarray  # float64 net %
    weight: np.ndarray  # float64
    max_created_at_ms: int  # newest row used: rows created later are "new" for the trigger
    skipped_bad_rows: int  # feature vectors of the wrong length or non-finite labels

    def __len__(self) -> int:
        return len(self.label)


@dataclass(frozen=True)
class StoredModel:
    model_version: int
    status: str
    model: bytes
    feature_list_hash: str
    feature_names: tuple[str, ...]
    train_start_ms: int
    train_end_ms: int
    metrics: dict


async def load_experience(
    conn,
    timeframe: str,
    n_features: int,
    decision_tf_ms: int,
    max_hold_ms: int,
    max_rows: int = 200_000,
) -> ExperienceRows:
    """Load the newest ``max_rows`` labelled rows of one decision timeframe, one per candidate.

    The label horizon ends at the stored ``exit_time_ms`` when the row has one; otherwise (rows
    older than migration V0005) at its upper bound ``decision_time + decision_tf + max_hold``
    (purging with an upper bound removes more rows, never fewer).
    """
    rows = await conn.fetch(
        f"""
        SELECT * FROM (
            SELECT DISTINCT ON (symbol, decision_time_ms)
                   symbol, decision_time_ms, exit_time_ms, features, label,
                   weight, created_at_ms
              FROM experience_buffer
             WHERE timeframe = $1
             ORDER BY symbol, decision_time_ms, {_SOURCE_RANK}, created_at_ms DESC
        ) AS one_per_candidate
        ORDER BY decision_time_ms DESC, symbol
        LIMIT $2
        """,
        timeframe,
        max_rows,
    )
    rows = list(reversed(rows))
    good = [
        r
        for r in rows
        if r["features"] is not None
        and len(r["features"]) == n_features
        and np.isfinite(r["label"])
        and r["weight"] is not None
        and np.isfinite(r["weight"])
        and r["weight"] >= 0
    ]
    skipped = len(rows) - len(good)
    if skipped:
        log.warning("experience_buffer: skipped %d unusable rows of %d", skipped, len(rows))
    n = len(good)
    feats = np.array(
        [[np.nan if v is None else v for v in r["features"]] for r in good], dtype=np.float64
    ).reshape(n, n_features)
    decision = np.array([r["decision_time_ms"] for r in good], dtype=np.int64)
    bound = decision + decision_tf_ms + max_hold_ms
    stored = np.array(
        [-1 if r["exit_time_ms"] is None else r["exit_time_ms"] for r in good], np.int64
    )
    horizon = np.where(stored >= 0, np.maximum(stored, decision), bound)
    return ExperienceRows(
        symbol=np.array([r["symbol"] for r in good], dtype=object),
        decision_time_ms=decision,
        horizon_end_ms=horizon,
        features=feats,
        label=np.array([r["label"] for r in good], dtype=np.float64),
        weight=np.array([r["weight"] for r in good], dtype=np.float64),
        max_created_at_ms=max((r["created_at_ms"] for r in rows), default=0),
        skipped_bad_rows=skipped,
    )


async def count_new_experience(conn, timeframe: str, created_after_ms: int) -> tuple[int, int]:
    """Return (rows created after ``created_after_ms``, all rows) of one timeframe."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE created_at_ms > $2) AS new, count(*) AS total"
        " FROM experience_buffer WHERE timeframe = $1",
        timeframe,
        created_after_ms,
    )
    return int(row["new"]), int(row["total"])


# metrics read as text: independent of any jsonb codec the caller's pool may have registered
_MODEL_COLUMNS = (
    "model_version, status, model, feature_list_hash, feature_names, train_start_ms,"
    " train_end_ms, metrics::text AS metrics"
)


def _stored(row) -> StoredModel:
    metrics = row["metrics"]
    return StoredModel(
        model_version=row["model_version"],
        status=row["status"],
        model=bytes(row["model"]),
        feature_list_hash=row["feature_list_hash"],
        feature_names=tuple(row["feature_names"]),
        train_start_ms=row["train_start_ms"],
        train_end_ms=row["train_end_ms"],
        metrics=json.loads(metrics) if isinstance(metrics, str) else dict(metrics),
    )


async def champion_version(conn) -> tuple[int, str] | None:
    """Return (version, feature hash) of the champion, without its bytes (cheap to poll)."""
    row = await conn.fetchrow(
        "SELECT model_version, feature_list_hash FROM ml_models WHERE status = 'champion'"
    )
    return None if row is None else (row["model_version"], row["feature_list_hash"])


async def load_model(conn, model_version: int) -> StoredModel | None:
    row = await conn.fetchrow(
        f"SELECT {_MODEL_COLUMNS} FROM ml_models WHERE model_version = $1", model_version
    )
    return None if row is None else _stored(row)


async def load_champion(conn) -> StoredModel | None:
    row = await conn.fetchrow(f"SELECT {_MODEL_COLUMNS} FROM ml_models WHERE status = 'champion'")
    return None if row is None else _stored(row)


async def last_training(conn) -> tuple[int, int] | None:
    """Return (created_at_ms, rows-through created_at_ms) of the newest model, if any."""
    row = await conn.fetchrow(
        "SELECT created_at_ms, metrics::text AS metrics FROM ml_models"
        " ORDER BY model_version DESC LIMIT 1"
    )
    if row is None:
        return None
    metrics = row["metrics"]
    metrics = json.loads(metrics) if isinstance(metrics, str) else dict(metrics)
    return row["created_at_ms"], int(metrics.get("rows_created_through_ms", 0))


async def store_model(
    conn,
    *,
    model: bytes,
    feature_list_hash: str,
    feature_names: tuple[str, ...],
    train_start_ms: int,
    train_end_ms: int,
    train_rows: int,
    metrics: dict,
    promote: bool,
    expected_champion: int | None,
    now_ms: int,
) -> tuple[int, str, str]:
    """Insert a model, as champion or challenger, in one transaction; return (version, status, note).

    Promotion retires the old champion in the same transaction. If the champion changed since
    the caller compared against ``expected_champion`` (another training run won the race), the
    new model is stored as a challenger instead: its comparison is stale.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MODEL_LOCK_KEY)
        current = await conn.fetchval(
            "SELECT model_version FROM ml_models WHERE status = 'champion' FOR UPDATE"
        )
        note = ""
        if promote and current != expected_champion:
            promote = False
            note = f"champion changed to {current} during training; kept as challenger"
        version = await conn.fetchval("SELECT COALESCE(MAX(model_version), 0) + 1 FROM ml_models")
        status = "champion" if promote else "challenger"
        if promote and current is not None:
            await conn.execute(
                "UPDATE ml_models SET status = 'retired', updated_at_ms = $2"
                " WHERE model_version = $1",
                current,
                now_ms,
            )
        await conn.execute(
            """
            INSERT INTO ml_models (model_version, status, model, feature_list_hash, feature_names,
                                   train_start_ms, train_end_ms, train_rows, metrics,
                                   created_at_ms, updated_at_ms)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $10)
            """,
            version,
            status,
            model,
            feature_list_hash,
            list(feature_names),
            train_start_ms,
            train_end_ms,
            train_rows,
            json.dumps(metrics),
            now_ms,
        )
    return version, status, note
