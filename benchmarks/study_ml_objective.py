"""Study: regression of the net % return vs a P(win) classifier, on real recorded data.

Candidates are every closed 5m bar of the five bundled 1m series (BTC, ETH, SOL, ADA, DOGE,
2023-03-16 .. 2023-05-01), features from ``aegis.features.feature_matrix``, labels from
``aegis.ml.labels`` with the default exit rules and fees. Walk-forward (4 folds, purge, 1 h
embargo): for each fold both objectives are trained on the same rows with the same
hyper-parameters, and scored on the window: rank correlation with the realised net return,
mean net of the top decile, and for the classifier its Brier score against the constant
base-rate forecast and its calibration where Kelly would bet (p > 1 / (1 + b), b = take/stop).
Not part of the test suite; ``run()`` returns the numbers, the module docstring of
``aegis.ml.model`` records the conclusion.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import lightgbm as lgb
import numpy as np

from aegis.features import feature_matrix
from aegis.ml.labels import ExitRules, entry_times_for, label_candidates
from aegis.ml.model import ModelParams, ReturnModel
from aegis.ml.validation import selection_metrics, spearman, walk_forward_splits

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
SYMBOLS = ("BTC", "ETH", "SOL", "ADA", "DOGE")


def _rows(rules: ExitRules):
    xs, ys, es, exs = [], [], [], []
    for sym in SYMBOLS:
        with gzip.open(DATA / f"binance_spot_{sym}USDT_1m_20230316_20230501.csv.gz", "rt") as f:
            b = np.loadtxt(f, delimiter=",", skiprows=1)
        t = b[:, 0].astype(np.int64)
        dt, feats, names = feature_matrix(t, b[:, 1], b[:, 2], b[:, 3], b[:, 4], b[:, 5], "5m")
        lab = label_candidates(
            t, b[:, 1], b[:, 2], b[:, 3], b[:, 4], entry_times_for(dt, "5m"), rules
        )
        ok = lab.complete
        xs.append(feats[ok])
        ys.append(lab.net_pct[ok])
        es.append(dt[ok])
        exs.append(lab.exit_time_ms[ok])
    order = np.argsort(np.concatenate(es), kind="stable")
    return (np.concatenate(xs)[order], np.concatenate(ys)[order], np.concatenate(es)[order],
            np.concatenate(exs)[order], names)  # fmt: skip


def run() -> dict:
    rules = ExitRules()
    x, y, entry, exit_, names = _rows(rules)
    params = ModelParams()
    clf_params = {**params.lightgbm_params(), "objective": "binary"}
    kelly_p = 1.0 / (1.0 + rules.take_pct / rules.stop_pct)
    folds = []
    for s in walk_forward_splits(entry, exit_, 4, 3_600_000):
        reg = ReturnModel.fit(x[s.train], y[s.train], names, params)
        data = lgb.Dataset(x[s.train], (y[s.train] > 0).astype(float))
        clf = lgb.train(clf_params, data, num_boost_round=params.num_boost_round)
        pr, pc, yv = reg.predict(x[s.valid]), clf.predict(x[s.valid]), y[s.valid]
        win = yv > 0
        top = max(1, len(yv) // 10)
        bet = pc > kelly_p
        taken = selection_metrics(pr, yv, 0.05)
        folds.append({
            "window_start_ms": s.window_start_ms,
            "mean_net_all": float(yv.mean()),
            "reg_spearman": spearman(pr, yv),
            "clf_spearman": spearman(pc, yv),
            "reg_top_decile_net": float(yv[np.argsort(-pr)[:top]].mean()),
            "clf_top_decile_net": float(yv[np.argsort(-pc)[:top]].mean()),
            "reg_taken": taken.n_taken,
            "reg_taken_mean_net": taken.mean_net_taken,
            "clf_brier": float(np.mean((pc - win) ** 2)),
            "base_rate_brier": float(np.mean((win.mean() - win) ** 2)),
            "clf_kelly_bets": int(bet.sum()),
            "clf_kelly_mean_p": float(pc[bet].mean()) if bet.any() else float("nan"),
            "clf_kelly_realised_hit": float(win[bet].mean()) if bet.any() else float("nan"),
        })  # fmt: skip
    out = {"rows": len(y), "mean_net_all": float(y.mean()), "win_rate": float((y > 0).mean()),
           "folds": folds}  # fmt: skip
    print(f"{len(y)} labelled candidates, mean net {y.mean():+.4f}%, win rate {(y > 0).mean():.3f}")
    print("fold  all      reg rho  clf rho  reg top10  clf top10  brier clf/base   p(bet)/hit")
    for i, f in enumerate(folds):
        print(f"{i:>4}  {f['mean_net_all']:+.3f}  {f['reg_spearman']:+.3f}   {f['clf_spearman']:+.3f}"
              f"   {f['reg_top_decile_net']:+.3f}     {f['clf_top_decile_net']:+.3f}"
              f"     {f['clf_brier']:.4f}/{f['base_rate_brier']:.4f}"
              f"  {f['clf_kelly_mean_p']:.3f}/{f['clf_kelly_realised_hit']:.3f}")  # fmt: skip
    return out


if __name__ == "__main__":
    run()
