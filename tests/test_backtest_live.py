"""Live == backtest: the same bars through the kernel's live path (``BrainCore`` bar by bar and a
``PaperExchange`` given every bar, see ``tests/backtest_reference.py``) and through the
event-skipping backtest give the same signals, intents, trades, labels and equity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from backtest_reference import live_reference

from aegis.features.vector import FEATURE_NAMES
from aegis.ml.labels import ExitRules
from aegis.paper.backtest import BacktestConfig, run_backtest
from aegis.paper.backtest_inputs import load_backtest_data, window_ms
from aegis.paper.exchange import PaperConfig
from aegis.risk.brain_core import BrainConfig
from aegis.risk.decision import DecisionPolicy
from aegis.risk.guards import RiskLimits


@pytest.fixture(scope="module")
def data():
    start, end = window_ms("2023-03-22", "2023-03-25")  # spans the real 2023-03-24 gap
    return load_backtest_data(None, ["SOLUSDT", "BTCUSDT", "ETHUSDT"], start, end)


class _AtrModel:
    """A fixed scoring function of the features: enough to exercise the model branch."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        atr = x[:, FEATURE_NAMES.index("atr_pct")]
        rsi = np.nan_to_num(x[:, FEATURE_NAMES.index("rsi_14")], nan=50.0)
        return 0.4 * atr - 0.004 * (rsi - 50.0) - 0.02


@dataclass
class _Predictor:
    version: int = 7
    win_probability: float = 0.45
    model: object = None


def _same_records(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _rows(trades) -> list[dict]:
    out = []
    for t in trades:
        row = t.to_record()
        row["predicted_return_pct"] = repr(row["predicted_return_pct"])  # NaN == NaN
        row["features"] = [repr(x) for x in row["features"]]
        out.append(row)
    return out


def _check(data, config, model=None) -> None:
    result = run_backtest(data, config, model)
    live = live_reference(data, config, model)
    _same_records(result.signals, live.signals)
    _same_records(result.intents, live.intents)
    assert _rows(result.trades) == _rows(live.trades)
    assert dict(result.rejections) == live.rejections
    # quiet minutes are marked with one matrix product: same numbers, another summation order
    np.testing.assert_allclose(result.equity, live.equity, rtol=1e-13, atol=0)
    got = {(int(s), int(d)): n for s, d, n in zip(result.labels.symbol_index,
           result.labels.decision_time_ms, result.labels.net_pct, strict=True)}  # fmt: skip
    ids = list(data.symbols)  # the live core numbers symbols 0.. in id order
    want = {(ids[int(s)], int(d)): n for s, d, n in zip(live.labels.symbol_index,
            live.labels.decision_time_ms, live.labels.net_pct, strict=True)}  # fmt: skip
    assert got == want
    return result


def test_backtest_cold_start_equals_live_path(data):
    result = _check(data, BacktestConfig())
    assert len(result.trades) > 20 and result.rejections  # positions capped: guards at work


def test_backtest_with_model_equals_live_path(data):
    # the guard's symbol cap above the brain's sizing cap: entries are not refused for a mark
    # that rose since the last entry (which the default equal caps do, live as in backtest)
    config = BacktestConfig(limits=RiskLimits(max_symbol_exposure_pct=25.0))
    result = _check(data, config, _Predictor(model=_AtrModel()))
    assert (result.signals["model_version"] == 7).all()
    assert len(result.trades) > 5


def test_backtest_kill_switch_flatten_equals_live_path(data):
    config = BacktestConfig(
        brain=BrainConfig(policy=DecisionPolicy(cold_start_notional=800.0)),
        limits=RiskLimits(max_daily_loss_pct=0.3),
    )
    result = _check(data, config)
    assert result.kill_switch is not None
    assert any(t.exit_reason == "forced" for t in result.trades)
    assert result.rejections.get("risk:kill_switch", 0) > 0


def test_backtest_trailing_stop_equals_live_path(data):
    config = BacktestConfig(
        brain=BrainConfig(exit_rules=ExitRules(trailing_pct=0.4)),
        paper=PaperConfig(trailing_pct=0.4),
    )
    result = _check(data, config)
    assert any(t.exit_reason == "trailing_stop" for t in result.trades)


def test_backtest_small_price_symbols_equal_live_path():
    # whole-unit lot steps (DOGE, XRP) and a 6 USDT entry close to the 5 USDT minimum notional
    start, end = window_ms("2023-04-10", "2023-04-12")
    small = load_backtest_data(None, ["DOGEUSDT", "XRPUSDT"], start, end)
    config = BacktestConfig(brain=BrainConfig(policy=DecisionPolicy(cold_start_notional=6.0)))
    result = _check(small, config)
    assert len(result.trades) > 10
