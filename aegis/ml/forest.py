"""A LightGBM regression forest flattened into arrays and evaluated by a Numba kernel.

Why: ``Booster.predict`` runs on an OpenMP pool; on a loaded 2-core machine a descheduled pool
thread stretches the tail (measured for 300 rows, 150 trees of 15 leaves: p50 0.6 ms but p90
12 ms, p99 24 ms). Passing ``num_threads=1`` per call rebuilds LightGBM's predictor each time
(p50 1.0 ms, p99 1.5 ms). This single-threaded kernel: p50 0.7 ms, p99 1.1 ms, no thread pool
to contend with the feed and executor. The brain predicts once per decision bar for every
symbol, so the tail matters more than the mean.

Decision rule per split, as LightGBM's ``NumericalDecision`` (include/LightGBM/tree.h):
NaN is read as 0 unless the split's missing type is NaN; a missing value (NaN for missing type
NaN, |x| <= 1e-35 for missing type Zero) follows the split's default direction; otherwise
``x <= threshold`` goes left. Only numerical splits exist (AEGIS has no categorical features);
a model with categorical splits is refused. Agreement with ``Booster.predict`` is tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from numba import njit

MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}
ZERO_THRESHOLD = 1e-35


class ForestError(ValueError):
    """The booster uses something this evaluator does not implement."""


@dataclass(frozen=True)
class CompiledForest:
    """Nodes of every tree; a child index < 0 points at leaf ``-child - 1``."""

    roots: np.ndarray  # int64, per tree: node index, or encoded leaf for a one-leaf tree
    feature: np.ndarray  # int64
    threshold: np.ndarray  # float64
    default_left: np.ndarray  # bool
    missing: np.ndarray  # int8
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    leaf_value: np.ndarray  # float64
    n_features: int

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> CompiledForest:
        dump = booster.dump_model()
        if dump.get("num_class", 1) != 1:
            raise ForestError("only single-output models are supported")
        nodes: list[tuple] = []
        leaves: list[float] = []

        def add(node: dict) -> int:
            if "leaf_value" in node:
                leaves.append(float(node["leaf_value"]))
                return -len(leaves)
            if node.get("decision_type") != "<=":
                raise ForestError(f"unsupported split {node.get('decision_type')!r}")
            idx = len(nodes)
            nodes.append(None)  # reserve, children are added after
            left = add(node["left_child"])
            right = add(node["right_child"])
            nodes[idx] = (
                int(node["split_feature"]),
                float(node["threshold"]),
                bool(node["default_left"]),
                _MISSING[node["missing_type"]],
                left,
                right,
            )
            return idx

        roots = [add(tree["tree_structure"]) for tree in dump["tree_info"]]
        cols = list(zip(*nodes, strict=True)) if nodes else [()] * 6
        return cls(
            roots=np.array(roots, dtype=np.int64),
            feature=np.array(cols[0], dtype=np.int64),
            threshold=np.array(cols[1], dtype=np.float64),
            default_left=np.array(cols[2], dtype=np.bool_),
            missing=np.array(cols[3], dtype=np.int8),
            left=np.array(cols[4], dtype=np.int64),
            right=np.array(cols[5], dtype=np.int64),
            leaf_value=np.array(leaves, dtype=np.float64),
            n_features=int(dump["max_feature_idx"]) + 1,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Sum of the trees' leaf values for each row of ``x`` (float64, C order)."""
        return forest_predict_nb(
            np.ascontiguousarray(x, dtype=np.float64),
            self.roots, self.feature, self.threshold, self.default_left, self.missing,
            self.left, self.right, self.leaf_value,
        )  # fmt: skip


@njit(cache=True)
def forest_predict_nb(x, roots, feature, threshold, default_left, missing, left, right, leaf_value):
    n = x.shape[0]
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for t in range(roots.shape[0]):
            node = roots[t]
            while node >= 0:
                v = x[i, feature[node]]
                m = missing[node]
                if np.isnan(v) and m != MISSING_NAN:
                    v = 0.0
                if (m == MISSING_ZERO and -ZERO_THRESHOLD < v <= ZERO_THRESHOLD) or (
                    m == MISSING_NAN and np.isnan(v)
                ):
                    node = left[node] if default_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            total += leaf_value[-node - 1]
        out[i] = total
    return out
