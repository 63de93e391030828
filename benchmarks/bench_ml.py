"""Benchmark of the learning and decision maths: predict, size, label, train.

- predict: one batched prediction for 300 symbols (the brain's per-bar call), model loaded from
  its stored bytes as the brain does, production hyper-parameters; the compiled forest the
  brain uses, beside LightGBM's own ``Booster.predict`` (default threads, and num_threads=1);
- sizing: ``size_positions`` over the same 300 candidates;
- labels: candidates labelled per second over real recorded BTCUSDT 1m bars (one candidate
  every 5 minutes, default exit rules);
- training: one walk-forward training (4 folds + the stored model) on 20,000 rows.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np

from aegis.ml.labels import ExitRules, entry_times_for, label_candidates
from aegis.ml.model import ReturnModel
from aegis.ml.validation import walk_forward_evaluate
from aegis.risk.sizing import SizingPolicy, size_positions

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
NAMES = tuple(f"f{i}" for i in range(12))


def _percentiles(times: list[float]) -> dict:
    a = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "n": len(a)}  # fmt: skip


def _timed(fn, n: int, warmup: int = 20) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _percentiles(times)


def run() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 12))
    y = np.clip(0.5 * x[:, 0] - 0.3 + rng.normal(scale=0.7, size=len(x)), -1.25, 1.75)
    entry = 1_680_000_000_000 + np.arange(len(x), dtype=np.int64) * 300_000
    exit_ = entry + 4 * 3_600_000

    t = time.perf_counter()
    res = walk_forward_evaluate(x, y, entry, exit_, NAMES, 0.05, n_folds=4, embargo_ms=3_600_000)
    train_s = time.perf_counter() - t

    model = ReturnModel.from_bytes(res.model.to_bytes())
    batch = rng.normal(size=(300, 12))
    predict = _timed(lambda: model.predict(batch), 2000)
    lgb_default = _timed(lambda: model.booster.predict(batch), 2000)
    lgb_one = _timed(lambda: model.booster.predict(batch, num_threads=1), 2000)

    pred = model.predict(batch)
    policy = SizingPolicy()
    ids = np.arange(300)
    exposure = np.zeros(300)
    sizing = _timed(lambda: size_positions(10_000.0, pred, ids, exposure, 2, policy), 2000)

    with gzip.open(DATA / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz", "rt") as f:
        bars = np.loadtxt(f, delimiter=",", skiprows=1)
    ot = bars[:, 0].astype(np.int64)
    decisions = entry_times_for(ot[ot % 300_000 == 0], "5m")
    cols = (ot, bars[:, 1], bars[:, 2], bars[:, 3], bars[:, 4])
    label_candidates(*cols, decisions[:10], ExitRules())  # compile / load the Numba cache
    t = time.perf_counter()
    lab = label_candidates(*cols, decisions, ExitRules())
    label_s = time.perf_counter() - t

    out = {
        "predict_300_rows": predict,
        "lightgbm_predict_300_rows": lgb_default,
        "lightgbm_predict_300_rows_num_threads_1": lgb_one,
        "sizing_300_candidates": sizing,
        "labels": {
            "candidates": len(decisions),
            "complete": int(lab.complete.sum()),
            "seconds": label_s,
            "labels_per_s": len(decisions) / label_s,
        },
        "training_20k_rows_walk_forward_s": train_s,
    }
    print("AEGIS ML benchmark")
    for name, r in (("predict 300 rows", predict), ("  LightGBM predict", lgb_default),
                    ("  LightGBM 1 thread", lgb_one)):  # fmt: skip
        print(f"  {name:<21} p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms")
    print(f"  sizing 300 candidates p50 {sizing['p50_ms']:.3f} ms   p99 {sizing['p99_ms']:.3f} ms")
    print(f"  labels                {out['labels']['labels_per_s']:,.0f} candidates/s "
          f"({len(decisions)} over {len(ot)} real 1m bars)")  # fmt: skip
    print(f"  training 20k rows     {train_s:.2f} s (5 LightGBM fits, walk-forward)")
    return out


if __name__ == "__main__":
    run()
