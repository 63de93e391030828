"""Benchmark of the brain's decision path: 300 symbols closing a 5m bar at once.

One sample = one ``BrainCore.on_bars`` call carrying the closed 1m bar of all 300 symbols on
the minute that closes their 5m bar: feature update (300 rows of 12), decision-bar closes, the
candidate rule, ONE batched prediction of a champion model (production hyper-parameters,
loaded from its stored bytes), sizing with caps, intent and signal records, and the shadow
labeller's step. Everything but the ring and the database writes (queued, not awaited).

Data: the five bundled 1m series, each cut at 60 different offsets and re-timed onto one
common clock, so the 300 symbols are real price paths that close their bars together; each
warmed up with 3 days of minutes. Two rule settings: the default SMC rule (the realistic case,
a few candidates per close) and a rule that makes every row a candidate (the worst case: the
prediction and sizing run on all 300 rows).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aegis.features import feature_matrix
from aegis.features.candidates import CandidateRule, smc_long
from aegis.ml.model import ReturnModel
from aegis.ml.registry import ActiveModel
from aegis.records import BAR_CLOSED, BAR_DTYPE
from aegis.risk.brain_core import BrainConfig, BrainCore

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
SOURCES = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "DOGEUSDT")
N_SYMBOLS = 300
WARM_MIN = 3 * 1440
MEASURED_CLOSES = 300
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000


def _load(symbol: str) -> np.ndarray:
    (path,) = DATA.glob(f"binance_spot_{symbol}_1m_*.csv.gz")
    df = pd.read_csv(path)
    return df[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)


def _universe(n_minutes: int) -> np.ndarray:
    """(N_SYMBOLS, n_minutes, 5) OHLCV, real paths re-timed onto one clock."""
    series = [_load(s) for s in SOURCES]
    out = np.empty((N_SYMBOLS, n_minutes, 5))
    for k in range(N_SYMBOLS):
        src = series[k % len(SOURCES)]
        start = (k // len(SOURCES)) * 397 % (len(src) - n_minutes)
        out[k] = src[start : start + n_minutes]
    return out


def _model() -> ActiveModel:
    rng = np.random.default_rng(0)
    ohlcv = _load("BTCUSDT")
    t = T0 + np.arange(len(ohlcv), dtype=np.int64) * 60_000
    _, feats, names = feature_matrix(t, *ohlcv.T)
    label = np.clip(np.nan_to_num(feats[:, 6]) * 0.3 + rng.normal(0, 0.8, len(feats)), -1.2, 2.0)
    fitted = ReturnModel.fit(feats, label, names)  # production hyper-parameters
    model = ReturnModel.from_bytes(fitted.to_bytes(), fitted.feature_hash)
    return ActiveModel(version=1, model=model, metrics={"holdout": {"hit_rate_taken": 0.5}})


def _every_row(features, names, ema):
    return np.ones(len(features), bool), np.full(len(features), 0.6)


def _measure(rule: CandidateRule, data: np.ndarray, model: ActiveModel) -> dict:
    core = BrainCore(
        BrainConfig(rule=rule, capacity=N_SYMBOLS), {i + 1: f"S{i}" for i in range(N_SYMBOLS)}
    )
    times = T0 + np.arange(data.shape[1], dtype=np.int64) * 60_000
    for k in range(N_SYMBOLS):
        core.warm_up(k + 1, times[:WARM_MIN], *data[k, :WARM_MIN].T)
    core.finish_warm_up(model)
    bars = np.zeros(N_SYMBOLS, BAR_DTYPE)
    bars["symbol_id"] = np.arange(1, N_SYMBOLS + 1)
    bars["flags"] = BAR_CLOSED
    close_ms, other_ms, candidates, intents = [], [], [], []
    for m in range(WARM_MIN, data.shape[1]):
        bars["open_time_ms"] = times[m]
        for j, name in enumerate(("open", "high", "low", "close", "volume")):
            bars[name] = data[:, m, j]
        start = time.perf_counter()
        step = core.on_bars(bars, model)
        elapsed = (time.perf_counter() - start) * 1e3
        closes = (times[m] + 60_000) % 300_000 == 0
        if closes and m >= WARM_MIN + 25:  # the first closes warm the caches
            close_ms.append(elapsed)
            candidates.append(len(step.signals))
            intents.append(len(step.intents))
        elif not closes:
            other_ms.append(elapsed)
    c, o = np.array(close_ms), np.array(other_ms)
    return {
        "close_ms_p50": float(np.percentile(c, 50)),
        "close_ms_p99": float(np.percentile(c, 99)),
        "close_ms_max": float(c.max()),
        "minute_ms_p50": float(np.percentile(o, 50)),
        "minute_ms_p99": float(np.percentile(o, 99)),
        "candidates_per_close_mean": float(np.mean(candidates)),
        "intents_per_close_mean": float(np.mean(intents)),
        "closes": len(c),
    }


def run() -> dict:
    n_minutes = WARM_MIN + 30 + MEASURED_CLOSES * 5
    data = _universe(n_minutes)
    model = _model()
    out = {"symbols": N_SYMBOLS, "target_close_ms_p99": 20.0}
    for label, rule in (("smc", smc_long()), ("all_candidates", CandidateRule("all", _every_row))):
        for key, value in _measure(rule, data, model).items():
            out[f"{label}_{key}"] = value
    print(f"brain: {N_SYMBOLS} symbols closing a 5m bar at once (features + rule + one batched "
          f"prediction + sizing + labels), {out['smc_closes']} closes")  # fmt: skip
    print(
        f"{'rule':<16}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cand/close':>12}{'minute p99':>12}"
    )
    for label in ("smc", "all_candidates"):
        print(f"{label:<16}{out[f'{label}_close_ms_p50']:>9.2f}{out[f'{label}_close_ms_p99']:>9.2f}"
              f"{out[f'{label}_close_ms_max']:>9.2f}{out[f'{label}_candidates_per_close_mean']:>12.1f}"
              f"{out[f'{label}_minute_ms_p99']:>12.2f}")  # fmt: skip
    out["load_avg_1m"] = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {out['load_avg_1m']:.1f}")
    return out


if __name__ == "__main__":
    run()
