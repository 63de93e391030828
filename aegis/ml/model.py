"""The percentage-return model: LightGBM regression of a candidate's net % return.

Why a regression and no separate P(win) classifier: the decision is "trade when the predicted net
return beats a threshold", which is what a regression of the net return ranks directly, and the
label is bounded by the exit rules (about -stop to +take), so squared error is not dominated by
outliers. Kelly sizing needs a win probability: it takes the hit rate the model's selected trades
achieved on held-out data (``ValidationMetrics.hit_rate_taken``), calibrated by construction.
Evidence (``benchmarks/study_ml_objective.py``: 66k real 5m candidates of five symbols,
walk-forward, same hyper-parameters): the classifier ranked no better (mean Spearman -0.012 vs
+0.010; top-decile mean net -0.248% vs -0.230%), its Brier score was worse than the constant
base rate in all four folds (e.g. 0.2447 vs 0.2349), and where Kelly would bet it was
over-confident (mean p 0.40-0.44 against realised hit rates 0.31-0.40): Kelly on its p would
over-bet. (Those unfiltered candidates carry no edge after fees; the promotion rule correctly
keeps any model trained on them as a challenger.)

Training is deterministic (fixed seeds, ``deterministic=True``, one thread), so the same rows
always give byte-identical models. Serialised form: LightGBM's text model (``model_to_string``),
which carries the feature names; the feature-list hash ties a model to the exact columns it was
trained on, and loading with another feature list is an error rather than silent garbage.

LightGBM is imported only to train (``fit``) and to compare offline (``booster``): loading and
predicting read the text with ``aegis.ml.forest``, so the brain, which only predicts, never
loads lightgbm and the pandas and scipy it pulls in (≈ 47 MB resident per brain process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from aegis.ml.forest import CompiledForest, ForestError

if TYPE_CHECKING:
    import lightgbm as lgb


class ModelError(ValueError):
    """Training data or a serialised model cannot be used."""


def feature_list_hash(names: Sequence[str]) -> str:
    """Return a short stable hash of an ordered feature list (order matters)."""
    joined = "\x1f".join(names).encode()
    return hashlib.sha256(joined).hexdigest()[:16]


@dataclass(frozen=True)
class ModelParams:
    """LightGBM hyper-parameters; small trees and strong regularisation suit noisy returns."""

    num_boost_round: int = 150
    num_leaves: int = 15
    learning_rate: float = 0.05
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    seed: int = 7
    num_threads: int = 1

    def lightgbm_params(self) -> dict:
        p = asdict(self)
        p.pop("num_boost_round")  # a train() argument, not a booster parameter
        p.update(
            objective="regression",
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        return p


@dataclass(frozen=True)
class ReturnModel:
    """A trained model: its LightGBM text (the stored form) and the forest compiled from it.

    Predictions come from the compiled forest: bit-identical to ``booster.predict``, single
    threaded, free of OpenMP tail latency (see ``aegis.ml.forest``). A trained model and a
    loaded one are built the same way, from the text.
    """

    text: str
    forest: CompiledForest

    @classmethod
    def from_text(cls, text: str) -> ReturnModel:
        try:
            forest = CompiledForest.from_model_text(text)
        except ForestError as exc:
            raise ModelError(str(exc)) from None
        return cls(text=text, forest=forest)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.forest.feature_names

    @cached_property
    def booster(self) -> lgb.Booster:
        """LightGBM's own booster of the same text, for offline use (importance, comparison)."""
        import lightgbm as lgb

        return lgb.Booster(model_str=self.text)

    @property
    def feature_hash(self) -> str:
        return feature_list_hash(self.feature_names)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        net_return_pct: np.ndarray,
        feature_names: Sequence[str],
        params: ModelParams | None = None,
        weight: np.ndarray | None = None,
    ) -> ReturnModel:
        """Train on rows of features (NaN allowed: LightGBM treats it as missing) and labels."""
        params = params or ModelParams()
        x = np.ascontiguousarray(features, dtype=np.float64)
        y = np.ascontiguousarray(net_return_pct, dtype=np.float64)
        names = tuple(feature_names)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise ModelError(f"features must have shape (n, {len(names)}), got {x.shape}")
        if len(y) != len(x):
            raise ModelError(f"{len(x)} feature rows but {len(y)} labels")
        if not np.isfinite(y).all():
            raise ModelError("labels must be finite (train only on complete labels)")
        if np.isinf(x).any():
            raise ModelError("features must not be infinite")
        if len(x) < 2 * params.min_data_in_leaf:
            raise ModelError(f"{len(x)} rows is too few (need {2 * params.min_data_in_leaf})")
        if weight is not None:
            weight = np.ascontiguousarray(weight, dtype=np.float64)
            if weight.shape != y.shape or not np.isfinite(weight).all() or (weight < 0).any():
                raise ModelError("weight must be finite, non-negative, one per row")
        import lightgbm as lgb  # here, not at the top: only training needs it (module docstring)

        data = lgb.Dataset(x, y, weight=weight, feature_name=list(names), free_raw_data=True)
        booster = lgb.train(params.lightgbm_params(), data, num_boost_round=params.num_boost_round)
        model = cls.from_text(booster.model_to_string())
        if model.feature_names != names:  # LightGBM rewrites some names (spaces, say)
            raise ModelError(f"LightGBM stored the feature names as {model.feature_names}")
        return model

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Return predicted net % returns, one per row (~0.7 ms for 300 rows)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ModelError(
                f"features must have shape (n, {len(self.feature_names)}), got {x.shape}"
            )
        if len(x) == 0:
            return np.empty(0)
        return self.forest.predict(x)

    def to_bytes(self) -> bytes:
        """Serialise to LightGBM's text format (UTF-8)."""
        return self.text.encode()

    @classmethod
    def from_bytes(cls, data: bytes, expected_feature_hash: str | None = None) -> ReturnModel:
        """Load a model written by :meth:`to_bytes`; check its feature hash if one is given."""
        try:
            text = bytes(data).decode()
        except UnicodeDecodeError as exc:
            raise ModelError(f"not a LightGBM model: {exc}") from None
        model = cls.from_text(text)
        if expected_feature_hash is not None and model.feature_hash != expected_feature_hash:
            raise ModelError(
                f"model feature hash {model.feature_hash} != expected {expected_feature_hash}"
            )
        return model
