"""Backtest engine on real bundled data: trade arithmetic, shadow labels, the EMA-crossover rule
against a slow obvious loop, and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from aegis.config import Settings
from aegis.features.candidates import ema_crossover
from aegis.ml.labels import ExitRules
from aegis.paper.backtest import BacktestConfig, BacktestConfigError, run_backtest
from aegis.paper.backtest_cli import EXIT_BAD_INPUT, backtest_main
from aegis.paper.backtest_inputs import (
    BacktestInputError,
    load_backtest_data,
    symbol_candidates,
    window_ms,
)
from aegis.paper.exchange import PaperConfig
from aegis.paper.exits import EXIT_FORCED, trade_return_pct
from aegis.risk.brain_core import BrainConfig
from aegis.risk.decision import DecisionPolicy
from aegis.risk.guards import RiskLimits
from aegis.risk.sizing import SizingPolicy


@pytest.fixture(scope="module")
def smc_run():
    start, end = window_ms("2023-03-20", "2023-03-25")
    data = load_backtest_data(None, ["BTCUSDT", "ETHUSDT"], start, end)
    return data, run_backtest(data, BacktestConfig())


def test_backtest_short_window_trades_net_return_equals_trade_return_of_fills(smc_run):
    _, result = smc_run
    assert len(result.trades) > 20
    for t in result.trades:
        gross, net = trade_return_pct(t.entry_price, t.close_price, t.commission_pct,
                                         t.slippage_pct)  # fmt: skip
        assert (t.gross_return_pct, t.net_return_pct) == (gross, net)
        assert t.entry_fill_price == pytest.approx(t.entry_price * (1 + t.slippage_pct / 100))
        cost = t.notional * (1 + t.commission_pct / 100)  # the entry took notional + commission
        assert t.pnl == pytest.approx(cost * t.net_return_pct / 100, rel=1e-9, abs=1e-12)


def test_backtest_trades_equal_shadow_labels_of_their_candidates(smc_run):
    _, result = smc_run
    labels = result.labels
    by_candidate = {
        (int(labels.symbol_index[i]), int(labels.decision_time_ms[i])): i
        for i in range(len(labels))
    }
    compared = 0
    for t in result.trades:
        if t.exit_code == EXIT_FORCED:
            continue
        i = by_candidate[(t.symbol_id, t.decision_time_ms)]
        assert labels.entry_time_ms[i] == t.entry_at_ms
        assert labels.exit_time_ms[i] == t.exit_at_ms
        assert labels.net_pct[i] == t.net_return_pct
        assert labels.reason[i] == t.exit_code
        compared += 1
    assert compared == len(result.trades) > 20


def test_backtest_every_candidate_is_a_signal_and_every_intent_a_signal(smc_run):
    _, result = smc_run
    assert len(result.signals) == len(np.unique(result.signals["intent_id"]))
    assert set(result.intents["intent_id"]) <= set(result.signals["intent_id"])
    traded = {t.intent_id for t in result.trades}
    assert traded <= set(result.intents["intent_id"].tolist())
    # cold start: rule-only, minimum size
    assert (result.signals["model_version"] == 0).all()
    assert (result.intents["notional"] <= DecisionPolicy().cold_start_notional).all()


def test_backtest_equity_curve_ends_at_cash_plus_open_positions(smc_run):
    _, result = smc_run
    assert len(result.equity) == len(result.equity_time_ms)
    realised = sum(t.pnl for t in result.trades)
    if result.open_positions == 0:
        assert result.final_equity == pytest.approx(result.starting_equity + realised, abs=1e-6)


def _ema_config() -> BacktestConfig:
    rules = ExitRules(stop_pct=1.0, take_pct=2.0, max_hold_minutes=120, slippage_pct=0.0)
    policy = DecisionPolicy(
        decision_timeframe="1m", stop_pct=1.0, take_pct=2.0, cold_start_notional=100.0,
        cold_start_min_confidence=0.0,
        sizing=SizingPolicy(max_open_positions=10_000, max_position_pct=100.0,
                            max_symbol_exposure_pct=100.0),
    )  # fmt: skip
    return BacktestConfig(
        brain=BrainConfig(policy=policy, exit_rules=rules, rule=ema_crossover(10, 30),
                          starting_equity=1e7),
        paper=PaperConfig(slippage_pct=0.0, max_hold_minutes=120, decision_interval_ms=60_000),
        limits=RiskLimits(max_daily_loss_pct=0.0, max_drawdown_pct=0.0,
                          max_open_positions=10_000, max_symbol_exposure_pct=100.0,
                          min_entry_interval_ms=0),
    )  # fmt: skip


def _slow_ema_crossover_trades(t, o, h, lo, c, stop, take, max_hold):
    """Obvious loop: cross up at bar i → buy at bar i+1's open → walk stop/take/time bar by bar."""
    fast, slow = talib.EMA(c, 10), talib.EMA(c, 30)
    trades = []
    for i in range(1, len(c) - 1):
        if not (fast[i - 1] <= slow[i - 1] and fast[i] > slow[i]):
            continue
        e = i + 1
        entry = o[e]
        stop_px, take_px = entry * (1 - stop / 100), entry * (1 + take / 100)
        for j in range(e, len(c)):
            held = (t[j] - t[e]) // 60_000 + 1
            if o[j] <= stop_px:
                trades.append((t[e], t[j] + 60_000, o[j]))
            elif lo[j] <= stop_px:
                trades.append((t[e], t[j] + 60_000, stop_px))
            elif o[j] >= take_px:
                trades.append((t[e], t[j] + 60_000, o[j]))
            elif h[j] >= take_px:
                trades.append((t[e], t[j] + 60_000, take_px))
            elif held >= max_hold:
                trades.append((t[e], t[j] + 60_000, c[j]))
            else:
                continue
            break
    return trades


def test_backtest_ema_crossover_trades_equal_slow_reference_loop():
    start, end = window_ms("2023-03-22", "2023-03-26")  # spans the real 2023-03-24 gap
    data = load_backtest_data(None, ["BTCUSDT"], start, end)
    result = run_backtest(data, _ema_config())
    s = data.series[0]
    expected = _slow_ema_crossover_trades(s.open_time_ms, s.open, s.high, s.low, s.close,
                                          1.0, 2.0, 120)  # fmt: skip
    got = sorted((t.entry_at_ms, t.exit_at_ms, t.close_price) for t in result.trades)
    assert len(got) > 50
    assert got == sorted(expected)[: len(got)]
    assert len(expected) - len(got) == result.open_positions


def test_backtest_config_with_labels_unlike_executor_raises():
    with pytest.raises(BacktestConfigError, match="label rules"):
        BacktestConfig(paper=PaperConfig(commission_pct=0.2))
    with pytest.raises(BacktestConfigError, match="decision"):
        BacktestConfig(paper=PaperConfig(decision_interval_ms=60_000))


def test_load_backtest_data_unknown_symbol_raises_naming_it():
    with pytest.raises(BacktestInputError, match="NOPEUSDT"):
        load_backtest_data(None, ["BTCUSDT", "NOPEUSDT"])


def test_load_backtest_data_window_without_bars_raises():
    start, end = window_ms("2024-01-01", "2024-01-02")
    with pytest.raises(BacktestInputError, match="no bars"):
        load_backtest_data(None, ["BTCUSDT"], start, end)


def test_window_from_after_to_raises():
    with pytest.raises(BacktestInputError, match="after"):
        window_ms("2023-04-02", "2023-04-01")


def test_window_bad_date_raises_naming_flag():
    with pytest.raises(BacktestInputError, match="--from"):
        window_ms("2023/04/01", None)


def test_window_to_covers_its_whole_day():
    start, end = window_ms("2023-04-01", "2023-04-01")
    assert end - start == 86_400_000


def test_backtest_main_bad_input_returns_exit_code_and_says_why(tmp_path, capsys):
    settings = Settings.load({"AEGIS_HOME": str(tmp_path)})
    assert backtest_main(settings, None, "BTCUSDT", "2023-04-02", "2023-04-01",
                         store=False) == EXIT_BAD_INPUT  # fmt: skip
    assert "after" in capsys.readouterr().err
    assert backtest_main(settings, None, "FOOUSDT", None, None, store=False) == EXIT_BAD_INPUT
    assert "FOOUSDT" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_backtest_main_without_store_prints_table_and_writes_report(tmp_path, capsys):
    settings = Settings.load({"AEGIS_HOME": str(tmp_path)})
    rc = backtest_main(settings, None, "ETHUSDT", "2023-03-20", "2023-03-22", store=False)
    out = capsys.readouterr().out
    assert rc == 0
    assert "smc_long (rule-only)" in out and "buy & hold" in out
    html = list((tmp_path / "reports").glob("backtest_*.html"))
    png = list((tmp_path / "reports").glob("backtest_*.png"))
    assert len(html) == 1 and len(png) == 1
    assert png[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[0].name in html[0].read_text()
    assert math.isfinite(float(out.split("buy & hold")[1].split()[2]))


def test_symbol_candidates_after_warm_up_equal_full_series_candidates_of_the_window():
    data = load_backtest_data(None, ["ETHUSDT"], *window_ms("2023-03-20", "2023-03-30"))
    start, _ = window_ms("2023-03-27", None)
    full = symbol_candidates(data.series[0], BrainConfig())
    warm = symbol_candidates(data.series[0], BrainConfig(), start)
    keep = full.emit_ms >= start
    assert len(warm.emit_ms) == keep.sum() > 20
    np.testing.assert_array_equal(warm.decision_time_ms, full.decision_time_ms[keep])
    np.testing.assert_array_equal(warm.features, full.features[keep])
    np.testing.assert_array_equal(warm.labels.net_pct, full.labels.net_pct[keep])


def test_backtest_short_window_with_warm_up_trades_only_inside_it():
    start, end = window_ms("2023-04-01", "2023-04-03")
    cold = load_backtest_data(None, ["BTCUSDT", "ETHUSDT"], start, end)
    warm = load_backtest_data(None, ["BTCUSDT", "ETHUSDT"], start, end, warm_up_ms=30 * 86_400_000)
    assert warm.bars == cold.bars and warm.warm_up_bars > 20_000
    result = run_backtest(warm, BacktestConfig())
    assert result.start_ms == start and result.equity_time_ms[0] == start + 60_000
    assert len(result.equity) == len(
        np.unique(np.concatenate([s.open_time_ms for s in cold.series]))
    )
    assert len(result.signals) > len(run_backtest(cold, BacktestConfig()).signals)
    assert all(t.entry_at_ms >= start for t in result.trades)
    assert (result.labels.entry_time_ms >= start).all()
