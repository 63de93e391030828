"""The training job over a real PostgreSQL: rows in, champion/challenger out, hot-swap in the brain."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import asyncpg
import lightgbm as lgb
import numpy as np
import pytest
from ml_synthetic import NAMES, synthetic_rows

from aegis.ml.champion import RetrainPolicy
from aegis.ml.model import ModelParams, ReturnModel, feature_list_hash
from aegis.ml.registry import ModelRegistry
from aegis.ml.repository import (
    champion_version,
    count_new_experience,
    last_training,
    load_champion,
    load_experience,
    store_model,
)
from aegis.ml.training import TrainingJob, TrainingParams, retrain_decision, train_from_database
from aegis.schema.migrator import migrate

PARAMS = TrainingParams(feature_names=NAMES, model=ModelParams(num_boost_round=80))
# On the planted (linear) signal, boosted stumps select better trades than deeper trees:
# a genuinely better challenger for the swap tests.
STUMPS = TrainingParams(
    feature_names=NAMES, model=ModelParams(num_boost_round=10, num_leaves=2, learning_rate=0.2)
)


@pytest.fixture(scope="module")
def dsn(pg_admin_dsn):
    """A database of this module's own (migrated with the project's migrations), dropped after."""
    name = f"aegis_ml_{uuid.uuid4().hex[:12]}"

    async def admin(sql):
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = pg_admin_dsn.rpartition("/")[0] + "/" + name
    asyncio.run(migrate(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(dsn, fn):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def reset(dsn, rows=None, source="shadow", created_at_ms=1):
    async def fn(conn):
        await conn.execute("TRUNCATE experience_buffer, ml_models")
        if rows is not None:
            await insert(conn, rows, source, created_at_ms)

    run(dsn, fn)


async def insert(conn, rows, source, created_at_ms, timeframe="5m"):
    x, y, entry, _ = rows
    decision = entry - 300_000  # the 5m decision bar opened one bar before the entry
    records = [
        (
            source,
            "BTCUSDT",
            timeframe,
            int(d),
            [float(v) for v in f],
            float(lab),
            1.0,
            None,
            created_at_ms,
        )
        for d, f, lab in zip(decision, x, y, strict=True)
    ]
    await conn.copy_records_to_table(
        "experience_buffer",
        records=records,
        columns=[
            "source", "symbol", "timeframe", "decision_time_ms", "features", "label", "weight",
            "model_version", "created_at_ms",
        ],
    )  # fmt: skip


def test_training_params_from_settings():
    from aegis.config import Settings

    s = Settings().replace(decision_timeframe="15m", entry_threshold_pct=0.2, max_hold_minutes=60)
    p = TrainingParams.from_settings(s, NAMES, n_folds=3)
    assert (p.decision_timeframe, p.threshold_pct, p.max_hold_minutes, p.n_folds) == (
        "15m", 0.2, 60, 3,
    )  # fmt: skip
    assert p.feature_hash == feature_list_hash(NAMES)


def test_training_planted_signal_becomes_champion_and_round_trips(dsn):
    rows = synthetic_rows(3000, seed=21, signal=True)
    reset(dsn, rows)
    report = train_from_database(dsn, PARAMS)
    assert report.status == "champion", report.reason
    assert report.rows == 3000 and report.previous_champion is None
    assert report.holdout["mean_net_taken"] > report.holdout["mean_net_all"]

    stored = run(dsn, load_champion)
    assert stored.model_version == report.model_version
    assert stored.feature_list_hash == feature_list_hash(NAMES)
    assert stored.feature_names == NAMES
    assert stored.metrics["holdout"]["n_taken"] == report.holdout["n_taken"]
    assert stored.metrics["decision"].startswith("beats rule-only baseline")
    assert stored.train_start_ms < stored.train_end_ms
    model = ReturnModel.from_bytes(stored.model, feature_list_hash(NAMES))
    # the stored model is the one scored: re-scoring it on the held-out rows gives its metrics
    x, y, _, _ = rows
    hold = x[-600:]
    pred = model.predict(hold)
    assert int((pred > PARAMS.threshold_pct).sum()) == report.holdout["n_taken"]
    assert np.mean(y[-600:][pred > PARAMS.threshold_pct]) == pytest.approx(
        report.holdout["mean_net_taken"]
    )


def test_training_on_noise_stays_challenger(dsn):
    reset(dsn, synthetic_rows(3000, seed=22, signal=False))
    report = train_from_database(dsn, PARAMS)
    assert report.status == "challenger", report.reason
    assert run(dsn, champion_version) is None
    status = run(dsn, lambda c: c.fetchval("SELECT status FROM ml_models"))
    assert status == "challenger"


def test_training_rerun_without_improvement_keeps_the_champion(dsn):
    reset(dsn, synthetic_rows(3000, seed=21, signal=True))
    first = train_from_database(dsn, PARAMS)
    second = train_from_database(dsn, PARAMS)
    assert first.status == "champion"
    assert second.status == "challenger" and "does not beat champion" in second.reason
    assert second.champion_holdout == second.holdout  # same rows, same deterministic model
    assert run(dsn, champion_version)[0] == first.model_version
    n = run(dsn, lambda c: c.fetchval("SELECT count(*) FROM ml_models WHERE status='champion'"))
    assert n == 1


def test_training_better_model_replaces_champion_in_one_swap(dsn):
    rows = synthetic_rows(3000, seed=21, signal=True)
    reset(dsn, rows)
    first = train_from_database(dsn, PARAMS)
    second = train_from_database(dsn, STUMPS)
    assert first.status == "champion", first.reason
    assert second.status == "champion", second.reason
    assert second.previous_champion == first.model_version
    statuses = run(dsn, lambda c: c.fetch("SELECT model_version, status FROM ml_models ORDER BY 1"))
    assert [(r[0], r[1]) for r in statuses] == [
        (first.model_version, "retired"),
        (second.model_version, "champion"),
    ]


def test_training_too_few_rows_is_skipped_and_stores_nothing(dsn):
    x, y, e, ex = synthetic_rows(150, seed=3, signal=True)
    reset(dsn, (x, y, e, ex))
    report = train_from_database(dsn, PARAMS)
    assert report.status == "skipped" and "minimum" in report.reason
    assert run(dsn, lambda c: c.fetchval("SELECT count(*) FROM ml_models")) == 0


def test_load_experience_skips_bad_rows_dedupes_and_bounds_horizon(dsn):
    x, y, e, ex = synthetic_rows(50, seed=4, signal=True)
    reset(dsn, (x, y, e, ex), source="shadow", created_at_ms=10)

    async def fn(conn):
        # the same candidates as realised trades: the realised label wins
        await insert(conn, (x[:5], y[:5] + 100.0, e[:5], ex[:5]), "virtual_trade", 20)
        # a row with a feature vector of the wrong length and one with NULL features inside
        await conn.execute(
            "INSERT INTO experience_buffer (source, symbol, timeframe, decision_time_ms, features,"
            " label, created_at_ms) VALUES ('shadow', 'ETHUSDT', '5m', 1, '{1,2,3}', 0.1, 30),"
            " ('shadow', 'ETHUSDT', '5m', 2, $1, 0.2, 30)",
            [None] + [1.0] * 11,
        )
        # another timeframe is not mixed in
        await insert(conn, (x[:3], y[:3], e[:3], ex[:3]), "shadow", 40, timeframe="1m")
        return await load_experience(conn, "5m", 12, 300_000, 240 * 60_000)

    rows = run(dsn, fn)
    assert len(rows) == 51 and rows.skipped_bad_rows == 1
    assert np.isnan(rows.features[rows.decision_time_ms == 2][0, 0])
    btc = rows.symbol == "BTCUSDT"
    np.testing.assert_allclose(rows.label[btc][:5], y[:5] + 100.0)
    np.testing.assert_allclose(rows.label[btc][5:], y[5:])
    # without a stored exit time the horizon is its upper bound: decision bar + time exit
    np.testing.assert_array_equal(
        rows.horizon_end_ms, rows.decision_time_ms + 300_000 + 240 * 60_000
    )
    assert rows.max_created_at_ms == 30
    new, total = run(dsn, lambda c: count_new_experience(c, "5m", 15))
    assert (new, total) == (7, 57)


def test_load_experience_uses_the_stored_exit_time_as_the_label_horizon(dsn):
    reset(dsn)

    async def fn(conn):
        await conn.execute(
            "INSERT INTO experience_buffer (source, symbol, timeframe, decision_time_ms, features,"
            " label, created_at_ms, exit_time_ms) VALUES"
            " ('shadow', 'BTCUSDT', '5m', 0, $1, 0.1, 1, 900000),"
            " ('shadow', 'BTCUSDT', '5m', 300000, $1, 0.2, 1, NULL)",
            [1.0] * 12,
        )
        return await load_experience(conn, "5m", 12, 300_000, 240 * 60_000)

    rows = run(dsn, fn)
    by_time = dict(zip(rows.decision_time_ms.tolist(), rows.horizon_end_ms.tolist(), strict=True))
    # a trade that exited early purges only up to its exit; an older row keeps the upper bound
    assert by_time == {0: 900_000, 300_000: 300_000 + 300_000 + 240 * 60_000}


def test_store_model_stale_promotion_is_kept_as_challenger(dsn):
    reset(dsn)

    async def fn(conn):
        kw = dict(
            model=b"m", feature_list_hash="h", feature_names=NAMES, train_start_ms=1,
            train_end_ms=2, train_rows=10, metrics={"rows_created_through_ms": 5},
        )  # fmt: skip
        v1 = await store_model(conn, promote=True, expected_champion=None, now_ms=100, **kw)
        # a second run compared against "no champion", but v1 won the race meanwhile
        v2 = await store_model(conn, promote=True, expected_champion=None, now_ms=200, **kw)
        return v1, v2, await last_training(conn)

    v1, v2, last = run(dsn, fn)
    assert v1[:2] == (1, "champion")
    assert v2[:2] == (2, "challenger") and "changed" in v2[2]
    assert last == (200, 5)


def test_retrain_decision_counts_rows_created_after_the_last_run(dsn):
    reset(dsn, synthetic_rows(600, seed=5, signal=True), created_at_ms=1_000)
    policy = RetrainPolicy(min_new_rows=100, interval_s=3600, min_total_rows=200)

    async def decide(conn):
        return await retrain_decision(conn, PARAMS, policy, now_s=10_000.0)

    assert run(dsn, decide).reason == "never trained"
    assert train_from_database(dsn, PARAMS).model_version is not None
    assert not run(dsn, decide).due  # nothing new since the stored run

    async def more(conn):
        x, y, e, ex = synthetic_rows(100, seed=6, signal=True)
        await insert(conn, (x, y, e + 10**9, ex + 10**9), "shadow", 2_000)

    run(dsn, more)
    d = run(dsn, decide)
    assert d.due and "100 new" in d.reason


def test_retrain_decision_after_a_run_that_stored_nothing_waits(dsn):
    reset(dsn, synthetic_rows(300, seed=5, signal=True), created_at_ms=1_000)
    policy = RetrainPolicy(min_new_rows=500, interval_s=3600, min_total_rows=200)
    young = TrainingParams(feature_names=NAMES, min_rows=1000)
    assert train_from_database(dsn, young).status == "skipped"

    def decide(now_s, last_attempt_s):
        return run(dsn, lambda c: retrain_decision(c, PARAMS, policy, now_s, last_attempt_s))

    assert decide(100.0, None).due  # the database alone cannot know about the attempt
    assert not decide(100.0, 50.0).due
    assert decide(50.0 + 3600, 50.0).due


def test_training_job_runs_in_a_spawned_process(dsn):
    reset(dsn, synthetic_rows(3000, seed=21, signal=True))
    job = TrainingJob(dsn, PARAMS)
    assert job.pid != os.getpid()
    report = job.wait(timeout=120)
    assert report is not None and report.status == "champion", report
    assert run(dsn, champion_version)[0] == report.model_version


def test_training_job_failure_is_reported_not_raised(dsn):
    bad = "postgresql://postgres@127.0.0.1:1/nowhere"
    report = TrainingJob(bad, PARAMS).wait(timeout=120)
    assert report is not None and report.status == "failed"


def test_registry_hot_swaps_a_newly_promoted_champion(dsn):
    rows = synthetic_rows(3000, seed=21, signal=True)
    reset(dsn, rows)
    registry = ModelRegistry(NAMES)

    async def refresh(conn):
        return await registry.refresh(conn)

    assert run(dsn, refresh) is False and registry.version == 0 and registry.active is None
    first = train_from_database(dsn, PARAMS)
    assert run(dsn, refresh) is True and registry.version == first.model_version
    assert run(dsn, refresh) is False  # unchanged: no reload
    old = registry.active
    second = train_from_database(dsn, STUMPS)
    assert second.status == "champion"
    assert run(dsn, refresh) is True and registry.version == second.model_version
    assert registry.active is not old
    assert 0.0 < registry.active.win_probability <= 1.0
    x = rows[0][:300]
    stored = run(dsn, load_champion)
    np.testing.assert_array_equal(
        registry.active.model.predict(x), ReturnModel.from_bytes(stored.model).predict(x)
    )


# The brain's run-time load path in a fresh interpreter: its imports, then the registry's
# poll and load of the champion, then a prediction.
BRAIN_LOADS_CHAMPION = """
import asyncio, json, sys
import asyncpg, numpy as np
import aegis.processes.brain
from aegis.ml.registry import ModelRegistry

async def load(dsn, names):
    conn = await asyncpg.connect(dsn)
    try:
        registry = ModelRegistry(names)
        await registry.refresh(conn)
        return registry
    finally:
        await conn.close()

dsn, names, rows, out = sys.argv[1], tuple(json.loads(sys.argv[2])), sys.argv[3], sys.argv[4]
registry = asyncio.run(load(dsn, names))
np.save(out, registry.active.model.predict(np.load(rows)))
print(json.dumps({"version": registry.version, "modules": sorted(sys.modules)}))
"""


def test_registry_loads_and_predicts_in_a_brain_process_without_lightgbm(dsn, tmp_path):
    rows = synthetic_rows(3000, seed=21, signal=True)
    reset(dsn, rows)
    report = train_from_database(dsn, PARAMS)
    assert report.status == "champion"
    x = rows[0][:500].copy()
    x[::4, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [sys.executable, "-c", BRAIN_LOADS_CHAMPION, dsn, json.dumps(NAMES),
         str(tmp_path / "x.npy"), str(tmp_path / "pred.npy")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["version"] == report.model_version
    assert not {"lightgbm", "pandas", "scipy.sparse"} & set(out["modules"])
    # what LightGBM itself predicts from the stored bytes, bit for bit
    stored = run(dsn, load_champion)
    booster = lgb.Booster(model_str=stored.model.decode())
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), booster.predict(x))


def test_registry_refuses_champion_with_other_features(dsn, caplog):
    reset(dsn, synthetic_rows(3000, seed=21, signal=True))
    other = tuple(reversed(NAMES))
    report = train_from_database(dsn, TrainingParams(feature_names=other, model=PARAMS.model))
    assert report.status == "champion"
    registry = ModelRegistry(NAMES)
    assert run(dsn, registry.refresh) is False
    assert registry.active is None and "refused" in caplog.text
    caplog.clear()
    assert run(dsn, registry.refresh) is False
    assert "refused" not in caplog.text  # logged once per version, not on every poll


def test_training_on_real_candidates_without_edge_is_not_promoted(dsn, data_dir):
    """Real bars → real features → executor-rule labels → PostgreSQL → training.

    Every closed 5m bar of BTC and ETH as a candidate (no rule filter) loses the fees on
    average (about -0.2% net): whatever the model picks must not become champion.
    """
    import gzip

    from aegis.features import FEATURE_NAMES, feature_matrix
    from aegis.ml.labels import ExitRules, entry_times_for, label_candidates

    records = []
    for sym in ("BTCUSDT", "ETHUSDT"):
        path = data_dir / "klines" / f"binance_spot_{sym}_1m_20230316_20230501.csv.gz"
        with gzip.open(path, "rt") as f:
            b = np.loadtxt(f, delimiter=",", skiprows=1)
        t = b[:, 0].astype(np.int64)
        dt, feats, _ = feature_matrix(t, b[:, 1], b[:, 2], b[:, 3], b[:, 4], b[:, 5], "5m")
        lab = label_candidates(t, *b[:, 1:5].T, entry_times_for(dt, "5m"), ExitRules())
        for i in np.flatnonzero(lab.complete):
            f = [None if np.isnan(v) else float(v) for v in feats[i]]
            records.append(
                ("backfill", sym, "5m", int(dt[i]), f, float(lab.net_pct[i]), 1.0, None, 1)
            )
    reset(dsn)

    async def fill(conn):
        await conn.copy_records_to_table(
            "experience_buffer",
            records=records,
            columns=[
                "source", "symbol", "timeframe", "decision_time_ms", "features", "label",
                "weight", "model_version", "created_at_ms",
            ],
        )  # fmt: skip

    run(dsn, fill)
    params = TrainingParams(feature_names=FEATURE_NAMES, model=ModelParams(num_boost_round=80))
    report = train_from_database(dsn, params)
    assert report.rows == len(records) > 20_000
    assert report.holdout["mean_net_all"] < 0
    assert report.status == "challenger", report.reason
    assert run(dsn, champion_version) is None
