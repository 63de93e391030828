"""Feature benchmarks: batch throughput over recorded 1m bars, and the live 300-symbol update.

* Batch: `feature_matrix` over each bundled 1m file (one series per symbol, its real gaps kept,
  never glued to another file), repeated until at least 1M bars were processed (one pass); the
  figure is bars per second of this process's CPU time, median (and worst) of 3 passes,
  compilation and first-touch excluded by a warm-up pass.
* Live: a `FeatureEngine` of 300 symbols (real series, recycled over the five symbols that share
  one time axis), warmed up with 3 days of minutes, then fed one `update` call per minute with
  all 300 symbols' closed 1m bar. The calls on the minute that closes a 5m bar (all 300 symbols
  emit their 12-vector) are the brain's hot path; their wall-clock latency is reported
  (p50/p99/max), plus the latency of the other minutes (aggregation only).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from aegis.features import FeatureEngine, feature_matrix

KLINES = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
COLS = ("open_time", "open", "high", "low", "close", "volume")
N_SYMBOLS = 300
WARM_MINUTES = 3 * 1440
LIVE_MINUTES = 1500  # 300 five-minute closes


def _series() -> dict[str, list[np.ndarray]]:
    out = {}
    for path in sorted(KLINES.glob("binance_spot_*_1m_*.csv.gz")):
        df = pd.read_csv(path)
        out[path.name.split("_")[2]] = [
            df[c].to_numpy(np.int64 if c == "open_time" else np.float64) for c in COLS
        ]
    return out


def _batch_pass(series: dict[str, list[np.ndarray]]) -> tuple[int, int, float, float]:
    bars = rows = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while bars < 1_000_000:
        for cols in series.values():
            t, _, _ = feature_matrix(*cols)
            bars += cols[0].size
            rows += t.size
    return bars, rows, time.process_time() - cpu0, time.perf_counter() - wall0


def _batch(series: dict[str, list[np.ndarray]], repeats: int = 3) -> dict:
    for cols in series.values():  # compile / load the cache and touch memory outside the timing
        feature_matrix(*cols)
    passes = [_batch_pass(series) for _ in range(repeats)]
    rates = sorted(bars / cpu for bars, _, cpu, _ in passes)
    bars, rows, _, wall = passes[-1]
    return {
        "batch_bars_per_pass": bars,
        "batch_rows_5m_per_pass": rows,
        "batch_passes": repeats,
        "batch_bars_per_cpu_s": rates[len(rates) // 2],
        "batch_bars_per_cpu_s_worst": rates[0],
        "batch_bars_per_wall_s_last": bars / wall,
    }


def _live(series: dict[str, list[np.ndarray]]) -> dict:
    same_axis = [cols for cols in series.values() if cols[0].size >= 66_000]
    n_axis = min(c[0].size for c in same_axis)
    engine = FeatureEngine(N_SYMBOLS)
    src = [same_axis[s % len(same_axis)] for s in range(N_SYMBOLS)]
    for s in range(N_SYMBOLS):
        engine.warm_up(s, *(c[:WARM_MINUTES] for c in src[s]))
    sym = np.arange(N_SYMBOLS, dtype=np.int64)
    stacked = [np.stack([c[:n_axis] for c in (s_cols[j] for s_cols in src)]) for j in range(6)]
    closing, other = [], []
    for i in range(WARM_MINUTES, WARM_MINUTES + LIVE_MINUTES):
        args = [col[:, i] for col in stacked]
        t0 = time.perf_counter_ns()
        rows = engine.update(sym, *args)
        dt = (time.perf_counter_ns() - t0) / 1e6
        (closing if rows.features.shape[0] else other).append(dt)
        if rows.features.shape[0]:
            assert rows.features.shape[0] == N_SYMBOLS
    closing_a, other_a = np.array(closing), np.array(other)
    return {
        "live_symbols": N_SYMBOLS,
        "live_5m_closes": int(closing_a.size),
        "live_5m_close_ms_p50": float(np.percentile(closing_a, 50)),
        "live_5m_close_ms_p99": float(np.percentile(closing_a, 99)),
        "live_5m_close_ms_max": float(closing_a.max()),
        "live_minute_ms_p50": float(np.percentile(other_a, 50)),
        "live_minute_ms_p99": float(np.percentile(other_a, 99)),
        "live_per_symbol_us_p50": float(np.percentile(closing_a, 50)) * 1000 / N_SYMBOLS,
    }


def run() -> dict:
    """Run both benchmarks, print a table, return the figures."""
    series = _series()
    result = {**_batch(series), **_live(series)}
    print("features benchmark")
    for key, value in result.items():
        print(
            f"  {key:<28} {value:>14,.3f}"
            if isinstance(value, float)
            else f"  {key:<28} {value:>14,}"
        )
    return result


if __name__ == "__main__":
    run()
