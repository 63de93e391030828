"""Walk-forward validation with purge and embargo, and the metrics a trading model is judged by.

A label is not a point in time: it covers the trade's horizon ``[entry_time, exit_time]``. A
training row whose horizon overlaps the validation window shares price path with validation
labels, so it leaks the answer; it is *purged*. Rows that start just after the window are
correlated with its last labels through overlapping features; they are *embargoed* for
``embargo_ms`` after the window's last exit. In pure walk-forward (the default) training only
uses rows before the window, so the purge does the work; with ``use_future_rows=True`` the splits
become purged k-fold cross-validation and the embargo guards the rows after the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from aegis.ml.model import ModelParams, ReturnModel


class ValidationError(ValueError):
    """Rows cannot be split or scored (bad shapes, horizons that end before they start)."""


@dataclass(frozen=True)
class Split:
    """Row indices of one fold; the window spans the validation rows' whole label horizons."""

    train: np.ndarray
    valid: np.ndarray
    window_start_ms: int
    window_end_ms: int


def _check_horizons(
    entry_time_ms: np.ndarray, exit_time_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    entry = np.asarray(entry_time_ms, dtype=np.int64)
    exit_ = np.asarray(exit_time_ms, dtype=np.int64)
    if entry.shape != exit_.shape or entry.ndim != 1:
        raise ValidationError("entry_time_ms and exit_time_ms must be 1-d and the same length")
    if np.any(exit_ < entry):
        raise ValidationError("a label's exit time is before its entry time")
    return entry, exit_


def purged_train_mask(
    entry_time_ms: np.ndarray,
    exit_time_ms: np.ndarray,
    window_start_ms: int,
    window_end_ms: int,
    embargo_ms: int = 0,
) -> np.ndarray:
    """Return which rows may train against a window: no horizon overlap, none in the embargo."""
    entry, exit_ = _check_horizons(entry_time_ms, exit_time_ms)
    overlaps = (entry <= window_end_ms) & (exit_ >= window_start_ms)
    embargoed = (entry > window_end_ms) & (entry <= window_end_ms + embargo_ms)
    return ~(overlaps | embargoed)


def walk_forward_splits(
    entry_time_ms: np.ndarray,
    exit_time_ms: np.ndarray,
    n_folds: int = 4,
    embargo_ms: int = 0,
    use_future_rows: bool = False,
) -> list[Split]:
    """Split rows into ``n_folds + 1`` consecutive blocks by entry time; fold k validates block k.

    Blocks never cut between rows with the same entry time. The last split is the most recent
    held-out window. Folds whose training set would be empty are left out.
    """
    entry, exit_ = _check_horizons(entry_time_ms, exit_time_ms)
    if n_folds < 1:
        raise ValidationError("n_folds must be >= 1")
    n = len(entry)
    if n < n_folds + 1:
        raise ValidationError(f"{n} rows cannot make {n_folds} folds")
    order = np.argsort(entry, kind="stable")
    sorted_entry = entry[order]
    cuts = [sorted_entry[(n * k) // (n_folds + 1)] for k in range(1, n_folds + 1)]
    splits = []
    for k in range(n_folds):
        lo = cuts[k]
        hi = cuts[k + 1] if k + 1 < n_folds else None
        in_block = entry >= lo if hi is None else (entry >= lo) & (entry < hi)
        valid = np.flatnonzero(in_block)
        if len(valid) == 0:
            continue
        w_start = int(entry[valid].min())
        w_end = int(exit_[valid].max())
        allowed = purged_train_mask(entry, exit_, w_start, w_end, embargo_ms) & ~in_block
        if not use_future_rows:
            allowed &= entry < w_start
        train = np.flatnonzero(allowed)
        if len(train):
            splits.append(Split(train, valid, w_start, w_end))
    return splits


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when either side is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class ValidationMetrics:
    """How the trades a model would take (prediction > threshold) did, net of fees."""

    threshold_pct: float
    n_candidates: int
    n_taken: int
    mean_net_all: float
    mean_net_taken: float
    sum_net_taken: float
    std_net_taken: float
    t_stat_taken: float
    hit_rate_all: float
    hit_rate_taken: float
    spearman: float

    def to_dict(self) -> dict:
        """Return JSON-able values (NaN and infinities become None)."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict) -> ValidationMetrics:
        return cls(
            **{k: (float("nan") if data[k] is None else data[k]) for k in cls.__dataclass_fields__}
        )


def selection_metrics(
    pred_pct: np.ndarray, net_pct: np.ndarray, threshold_pct: float
) -> ValidationMetrics:
    """Score predictions against realised net % returns."""
    pred = np.asarray(pred_pct, dtype=np.float64)
    net = np.asarray(net_pct, dtype=np.float64)
    if pred.shape != net.shape:
        raise ValidationError("predictions and labels must have the same shape")
    taken = net[pred > threshold_pct]
    nan = float("nan")
    n_t = len(taken)
    std = float(taken.std(ddof=1)) if n_t > 1 else nan
    mean_t = float(taken.mean()) if n_t else nan
    if n_t > 1 and std > 0:
        t_stat = mean_t / (std / np.sqrt(n_t))
    elif n_t > 1:
        t_stat = float(np.sign(mean_t)) * float("inf")
    else:
        t_stat = nan
    return ValidationMetrics(
        threshold_pct=float(threshold_pct),
        n_candidates=len(net),
        n_taken=n_t,
        mean_net_all=float(net.mean()) if len(net) else nan,
        mean_net_taken=mean_t,
        sum_net_taken=float(taken.sum()),
        std_net_taken=std,
        t_stat_taken=float(t_stat),
        hit_rate_all=float((net > 0).mean()) if len(net) else nan,
        hit_rate_taken=float((taken > 0).mean()) if n_t else nan,
        spearman=spearman(pred, net),
    )


@dataclass(frozen=True)
class FoldResult:
    window_start_ms: int
    window_end_ms: int
    n_train: int
    metrics: ValidationMetrics


@dataclass(frozen=True)
class WalkForwardResult:
    """Per-fold scores, the pooled out-of-sample score, and the model of the last fold.

    ``model`` never saw the most recent window (``holdout_index``), so ``folds[-1].metrics`` are
    honest held-out numbers for exactly the model that may be promoted.
    """

    folds: tuple[FoldResult, ...]
    pooled: ValidationMetrics
    model: ReturnModel
    holdout_index: np.ndarray
    train_start_ms: int
    train_end_ms: int

    @property
    def holdout(self) -> ValidationMetrics:
        return self.folds[-1].metrics


def walk_forward_evaluate(
    features: np.ndarray,
    net_pct: np.ndarray,
    entry_time_ms: np.ndarray,
    exit_time_ms: np.ndarray,
    feature_names: Sequence[str],
    threshold_pct: float,
    params: ModelParams | None = None,
    n_folds: int = 4,
    embargo_ms: int = 0,
    weight: np.ndarray | None = None,
) -> WalkForwardResult:
    """Train one model per fold on purged past rows and score it on the fold's window.

    Folds with fewer than ``2 * min_data_in_leaf`` training rows are left out; raises
    ``ValidationError`` if that leaves out the most recent window.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(net_pct, dtype=np.float64)
    entry = np.asarray(entry_time_ms, dtype=np.int64)
    exit_ = np.asarray(exit_time_ms, dtype=np.int64)
    params = params or ModelParams()
    splits = walk_forward_splits(entry, exit_, n_folds, embargo_ms)
    # early folds of a young buffer may be too small to fit: score the folds that can be
    # fitted, but the most recent window must be among them (it decides promotion)
    min_rows = 2 * params.min_data_in_leaf
    if not splits or len(splits[-1].train) < min_rows:
        have = len(splits[-1].train) if splits else 0
        raise ValidationError(f"the last fold has {have} training rows (need {min_rows})")
    splits = [s for s in splits if len(s.train) >= min_rows]
    folds, oos_pred, oos_net = [], [], []
    model = None
    split = splits[-1]
    for split in splits:
        w = None if weight is None else np.asarray(weight)[split.train]
        model = ReturnModel.fit(x[split.train], y[split.train], feature_names, params, w)
        pred = model.predict(x[split.valid])
        metrics = selection_metrics(pred, y[split.valid], threshold_pct)
        folds.append(
            FoldResult(split.window_start_ms, split.window_end_ms, len(split.train), metrics)
        )
        oos_pred.append(pred)
        oos_net.append(y[split.valid])
    assert model is not None
    return WalkForwardResult(
        folds=tuple(folds),
        pooled=selection_metrics(np.concatenate(oos_pred), np.concatenate(oos_net), threshold_pct),
        model=model,
        holdout_index=split.valid,
        train_start_ms=int(entry[split.train].min()),
        train_end_ms=int(exit_[split.train].max()),
    )
