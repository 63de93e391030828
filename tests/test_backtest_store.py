"""Backtest → PostgreSQL → training: a backtest fills signals, experience_buffer and
virtual_trades (idempotently) on a real database, and ``train`` learns from those rows."""

from __future__ import annotations

import asyncio

import asyncpg

from aegis.config import Settings
from aegis.features.vector import FEATURE_NAMES
from aegis.ml.model import ReturnModel, feature_list_hash
from aegis.ml.repository import store_model
from aegis.ml.training import TrainingParams, train_from_database
from aegis.paper.backtest import BacktestConfig, run_backtest
from aegis.paper.backtest_cli import backtest_main
from aegis.paper.backtest_inputs import load_backtest_data, window_ms
from aegis.paper.backtest_store import load_champion_model, result_rows
from aegis.store.setup import prepare_database

TABLES = ("signals", "experience_buffer", "virtual_trades")


def _counts(dsn: str) -> dict[str, int]:
    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        finally:
            await conn.close()

    return asyncio.run(run())


def test_backtest_main_stores_rows_once_and_training_learns_from_them(pg_fresh_dsn, tmp_path,
                                                                      capsys):  # fmt: skip
    env = {"AEGIS_HOME": str(tmp_path), "AEGIS_DATABASE_URL": pg_fresh_dsn}
    settings = Settings.load(env)
    args = (None, "ETHUSDT,BTCUSDT", "2023-03-18", "2023-03-31")
    assert backtest_main(settings, *args) == 0
    assert "stored:" in capsys.readouterr().out

    start, end = window_ms(*args[2:])
    month = 30 * 86_400_000  # backtest_main warms the features up as the kernel does
    data = load_backtest_data(None, ["ETHUSDT", "BTCUSDT"], start, end, warm_up_ms=month)
    result = run_backtest(data, BacktestConfig.from_settings(settings))
    expected = {t: len(rows) for t, rows in result_rows(result, "5m", "USDT", 0).items()}
    assert _counts(pg_fresh_dsn) == expected
    assert expected["virtual_trades"] == len(result.trades) > 0

    assert backtest_main(settings, *args) == 0  # the same backtest again: nothing doubles
    assert _counts(pg_fresh_dsn) == expected

    report = train_from_database(pg_fresh_dsn, TrainingParams(FEATURE_NAMES))
    assert report.rows >= len(result.labels) // 2, report  # it learned from the backtest's rows
    champion = asyncio.run(load_champion_model(pg_fresh_dsn))
    assert (champion is not None) == report.promoted


def _store_champion(dsn: str, result) -> int:
    labels = result.labels
    model = ReturnModel.fit(labels.features, labels.net_pct, FEATURE_NAMES)

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            version, status, _ = await store_model(
                conn, model=model.to_bytes(), feature_list_hash=feature_list_hash(FEATURE_NAMES),
                feature_names=FEATURE_NAMES, train_start_ms=int(labels.decision_time_ms.min()),
                train_end_ms=int(labels.exit_time_ms.max()), train_rows=len(labels),
                metrics={"holdout": {"hit_rate_taken": 0.4}}, promote=True,
                expected_champion=None, now_ms=0,
            )  # fmt: skip
            assert status == "champion"
            return version
        finally:
            await conn.close()

    return asyncio.run(run())


def test_backtest_main_with_champion_compares_with_rule_only_and_flags_in_sample(
    pg_fresh_dsn, tmp_path, capsys
):
    settings = Settings.load({"AEGIS_HOME": str(tmp_path), "AEGIS_DATABASE_URL": pg_fresh_dsn})
    start, end = window_ms("2023-03-18", "2023-03-28")
    data = load_backtest_data(None, ["ETHUSDT", "BTCUSDT"], start, end)
    asyncio.run(prepare_database(pg_fresh_dsn))
    version = _store_champion(pg_fresh_dsn, run_backtest(data, BacktestConfig()))
    assert backtest_main(settings, None, "ETHUSDT,BTCUSDT", "2023-03-18", "2023-03-28") == 0
    out = capsys.readouterr().out
    assert f"smc_long + model {version}" in out
    assert "smc_long (rule-only)" in out and "buy & hold" in out
    assert "NOT out of sample" in out  # the model was trained on this very window, and it says so
    rows = _model_versions(pg_fresh_dsn)
    assert rows == {version}  # every signal of this run was scored by the champion


def _model_versions(dsn: str) -> set[int]:
    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return {r[0] for r in await conn.fetch("SELECT DISTINCT model_version FROM signals")}
        finally:
            await conn.close()

    return asyncio.run(run())
