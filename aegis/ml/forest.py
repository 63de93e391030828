"""A LightGBM regression forest read from its text model, flattened into arrays, evaluated by Numba.

Why Numba: ``Booster.predict`` runs on an OpenMP pool; on a loaded 2-core machine a descheduled
pool thread stretches the tail (measured for 300 rows, 150 trees of 15 leaves: p50 0.6 ms but
p90 12 ms, p99 24 ms). Passing ``num_threads=1`` per call rebuilds LightGBM's predictor each time
(p50 1.0 ms, p99 1.5 ms). This single-threaded kernel: p50 0.7 ms, p99 1.1 ms, no thread pool
to contend with the feed and executor. The brain predicts once per decision bar for every
symbol, so the tail matters more than the mean.

Why the text model is read here, without LightGBM: the text (``model_to_string``) is what the
training job stores, and importing ``lightgbm`` pulls pandas and scipy into the process that
only predicts (≈ 47 MB resident). The training job compiles its forest through this same
reader, so the forest it validates is the one the brain runs. The text writes ``threshold`` and
``leaf_value`` with 17 significant digits, which ``float`` reads back exactly; leaf values
already include the tree's shrinkage (and the first tree the boost-from-average bias).

Decision rule per split, as LightGBM's predict on a dense matrix: its row reader keeps a value
only if |x| > kZeroThreshold (``1e-35f``, a float widened to double) or x is NaN, so a tinier x
is read as 0 (measured: x = -kZeroThreshold, on a split at exactly that threshold, goes right);
then ``NumericalDecision`` (include/LightGBM/tree.h) reads NaN as 0 unless the split's missing
type is NaN; a missing value (NaN for missing type NaN, 0 for missing type Zero) follows the
split's default direction; otherwise ``x <= threshold`` goes left. ``decision_type`` packs bit 0
categorical, bit 1 default-left, bits 2-3 the missing type. Only numerical splits of a plain
single-output regression exist here (AEGIS has no categorical features); anything else is
refused rather than mispredicted. Agreement with ``Booster.predict`` is tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2
ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold = 1e-35f
_CATEGORICAL_BIT = 1
_DEFAULT_LEFT_BIT = 2
_TEXT_VERSION = "v4"  # LightGBM 4's model text; another layout is refused, not guessed at
# feature, threshold, decision_type, left, right, leaf_value: what _read_tree returns
_DTYPES = (np.int64, np.float64, np.int64, np.int64, np.int64, np.float64)


class ForestError(ValueError):
    """The text is not a LightGBM model, or uses something this evaluator does not implement."""


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
    feature_names: tuple[str, ...]  # the columns the trees index, in order

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def from_model_text(cls, text: str) -> CompiledForest:
        """Compile LightGBM's text model (``Booster.model_to_string``); raise ``ForestError``."""
        header, trees = _read_sections(text)
        names = tuple(header.get("feature_names", "").split())
        _check_header(header, len(names))
        cols: list[list[np.ndarray]] = [[] for _ in range(6)]  # _read_tree's six arrays
        roots: list[int] = []
        n_nodes = n_leaves = 0
        for i, tree in enumerate(trees):
            try:
                arrays = _read_tree(tree, len(names))
            except (KeyError, ValueError) as exc:
                raise ForestError(f"tree {i}: {exc}") from None
            feature, _, _, left, right, leaf_value = arrays
            # Local indices become global ones: internal nodes shift by the nodes of the trees
            # before, encoded leaves (-leaf - 1) by their leaves.
            arrays[3] = np.where(left >= 0, left + n_nodes, left - n_leaves)
            arrays[4] = np.where(right >= 0, right + n_nodes, right - n_leaves)
            roots.append(n_nodes if len(feature) else -n_leaves - 1)
            for col, a in zip(cols, arrays, strict=True):
                col.append(a)
            n_nodes += len(feature)
            n_leaves += len(leaf_value)
        feature, threshold, decision, left, right, leaf_value = (
            np.concatenate(c) if c else np.empty(0, dtype)
            for c, dtype in zip(cols, _DTYPES, strict=True)
        )
        return cls(
            roots=np.array(roots, dtype=np.int64),
            feature=feature,
            threshold=threshold,
            default_left=(decision & _DEFAULT_LEFT_BIT) != 0,
            missing=((decision >> 2) & 3).astype(np.int8),
            left=left,
            right=right,
            leaf_value=leaf_value,
            feature_names=names,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Sum of the trees' leaf values for each row of ``x`` (float64, C order)."""
        return forest_predict_nb(
            np.ascontiguousarray(x, dtype=np.float64),
            self.roots, self.feature, self.threshold, self.default_left, self.missing,
            self.left, self.right, self.leaf_value,
        )  # fmt: skip


def _read_sections(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split the text into its header and one ``key=value`` dict per ``Tree=`` block."""
    lines = text.splitlines()
    if not lines or lines[0] != "tree":
        first = lines[0][:40] if lines else ""
        raise ForestError(f"not a LightGBM model (first line {first!r})")
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    for line in lines[1:]:
        if line == "end of trees":
            return header, trees
        if line.startswith("Tree="):
            trees.append({})
            continue
        key, _, value = line.partition("=")  # a bare line (``average_output``) is a flag
        if key:
            (trees[-1] if trees else header)[key] = value
    raise ForestError("not a LightGBM model (no 'end of trees': truncated?)")


def _check_header(header: dict[str, str], n_names: int) -> None:
    if header.get("version") != _TEXT_VERSION:
        raise ForestError(f"model text version {header.get('version')!r}, only {_TEXT_VERSION}")
    for key in ("num_class", "num_tree_per_iteration"):
        if header.get(key) != "1":
            raise ForestError(f"only single-output models are supported ({key}={header.get(key)})")
    # Another objective (or ``regression sqrt``) transforms the raw sum into its prediction.
    if header.get("objective") != "regression":
        raise ForestError(f"objective {header.get('objective')!r}, only 'regression'")
    if "average_output" in header:
        raise ForestError("random-forest models (average_output) are not supported")
    if n_names == 0 or header.get("max_feature_idx") != str(n_names - 1):
        raise ForestError(
            f"{n_names} feature names but max_feature_idx={header.get('max_feature_idx')}"
        )


def _read_tree(tree: dict[str, str], n_features: int) -> list[np.ndarray]:
    """Arrays of one tree in LightGBM's local indexing, checked so the kernel cannot stray."""
    if tree.get("num_cat", "0") != "0":
        raise ForestError("categorical splits are not supported")
    if tree.get("is_linear", "0") != "0":
        raise ForestError("linear trees are not supported")
    n = int(tree["num_leaves"])
    feature = _ints(tree, "split_feature")
    threshold = np.array([float(v) for v in tree["threshold"].split()], dtype=np.float64)
    decision = _ints(tree, "decision_type")
    left, right = _ints(tree, "left_child"), _ints(tree, "right_child")
    leaf_value = np.array([float(v) for v in tree["leaf_value"].split()], dtype=np.float64)
    if n < 1 or len(leaf_value) != n:
        raise ValueError(f"{len(leaf_value)} leaf values for num_leaves={n}")
    if any(len(a) != n - 1 for a in (feature, threshold, decision, left, right)):
        raise ValueError(f"split arrays are not num_leaves - 1 = {n - 1} long")
    if ((feature < 0) | (feature >= n_features)).any():
        raise ValueError(f"split feature outside 0..{n_features - 1}")
    if (decision & _CATEGORICAL_BIT).any():
        raise ForestError("categorical splits are not supported")
    if (((decision >> 2) & 3) > MISSING_NAN).any():
        raise ValueError("unknown missing type in decision_type")
    own = np.arange(n - 1)
    for child in (left, right):
        # An internal child comes after its parent (LightGBM appends nodes as it splits), so
        # every walk ends at a leaf.
        node_ok = (child > own) & (child < n - 1)
        leaf_ok = (child < 0) & (~child < n)
        if not (node_ok | leaf_ok).all():
            raise ValueError("child index out of range")
    return [feature, threshold, decision, left, right, leaf_value]


def _ints(tree: dict[str, str], key: str) -> np.ndarray:
    return np.array([int(v) for v in tree[key].split()], dtype=np.int64)


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
                if np.isnan(v):
                    if m != MISSING_NAN:
                        v = 0.0
                elif -ZERO_THRESHOLD <= v <= ZERO_THRESHOLD:
                    v = 0.0
                if (m == MISSING_ZERO and v == 0.0) or (m == MISSING_NAN and np.isnan(v)):
                    node = left[node] if default_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            total += leaf_value[-node - 1]
        out[i] = total
    return out
