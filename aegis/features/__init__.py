"""Market features of the brain: timeframes, TA-Lib-exact indicators, causal SMC, 12-vector."""

from aegis.features.aggregate import AggregatedBars, BarInputError, KlineBuffer, aggregate_bars
from aegis.features.vector import (
    DECISION_TIMEFRAMES,
    FEATURE_NAMES,
    FeatureEngine,
    FeatureParams,
    FeatureRows,
    feature_matrix,
)

__all__ = [
    "DECISION_TIMEFRAMES",
    "FEATURE_NAMES",
    "AggregatedBars",
    "BarInputError",
    "FeatureEngine",
    "FeatureParams",
    "FeatureRows",
    "KlineBuffer",
    "aggregate_bars",
    "feature_matrix",
]
