"""The decision pipeline shared by the live brain and the backtest: candidates in, intents out.

For one decision (many symbols at once, at most one row per symbol):

1. keep the rows a candidate rule flagged (``aegis.features.candidates``);
2. **with a champion model**: one batched prediction of the net % return; trade only above
   ``threshold_pct``; size with ``aegis.risk.sizing`` (fixed-fractional, Kelly on the champion's
   held-out hit rate, or ATR stop), whose caps bind (position, symbol exposure, open positions);
3. **cold start** (no champion): trade candidates whose rule confidence is at least
   ``cold_start_min_confidence`` at the minimum size ``cold_start_notional`` (never above what
   the caps allow; free slots go to the most confident), so the kernel gathers experience;
4. build ``INTENT_DTYPE`` records with deterministic ids (:func:`intent_ids`) and one signal
   row per candidate (``SIGNAL_DTYPE``) with what was decided and why.

Pure: no I/O, no clock (``publish_ns`` is stamped by the publisher). The same rows, model and
account give the same intents and signals, which is what makes live equal backtest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from aegis.features.vector import FEATURE_NAMES
from aegis.records import INTENT_DTYPE, N_FEATURES, SIDE_BUY
from aegis.risk.sizing import SizingPolicy, size_positions

TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}

# Decision codes of SIGNAL_DTYPE["decision"], and their names in the signals table.
DECISION_ENTERED = 1
DECISION_BELOW_THRESHOLD = 2
DECISION_RISK_CAPPED = 3
DECISION_REPLAYED = 4  # decided again while rebuilding state at start: never published
DECISION_NAMES = {
    DECISION_ENTERED: "entered",
    DECISION_BELOW_THRESHOLD: "below_threshold",
    DECISION_RISK_CAPPED: "risk_capped",
    DECISION_REPLAYED: "replayed",
}

SIGNAL_DTYPE = np.dtype(
    [
        ("intent_id", np.uint64),
        ("decision_time_ms", np.int64),
        ("symbol_id", np.uint32),
        ("decision", np.int32),
        ("direction", np.int32),  # +1 long (spot is long-only)
        ("confidence", np.float64),  # the rule's confidence
        ("predicted_return_pct", np.float64),  # NaN in cold start (no model)
        ("model_version", np.int64),  # 0 = rule-only
        ("notional", np.float64),  # 0 unless entered
        ("features", np.float64, (N_FEATURES,)),
    ],
    align=True,
)

# The signals table's seven dedicated feature columns, from FEATURE_NAMES.
SIGNAL_FEATURE_COLUMNS = (
    ("htf_trend", "trend_1h"),
    ("structure_break", "structure_15m"),
    ("fvg_distance_pct", "fvg_distance_pct"),
    ("order_block_distance_pct", "ob_distance_pct"),
    ("liquidity_sweep", "liquidity_sweep"),
    ("atr_pct", "atr_pct"),
    ("volume_zscore", "volume_z"),
)
_ATR_COLUMN = FEATURE_NAMES.index("atr_pct")
_DEDICATED = [FEATURE_NAMES.index(f) for _, f in SIGNAL_FEATURE_COLUMNS]


class DecisionInputError(ValueError):
    """Decision rows are inconsistent (shapes, duplicate symbols, negative equity)."""


@dataclass(frozen=True)
class DecisionPolicy:
    """Threshold, exits and sizing of decisions; defaults mirror ``aegis.config.Settings``."""

    decision_timeframe: str = "5m"
    threshold_pct: float = 0.05
    stop_pct: float = 1.0
    take_pct: float = 2.0
    sizing: SizingPolicy = dataclasses.field(default_factory=SizingPolicy)
    cold_start_notional: float = 10.0  # quote asset; above Binance's usual 5 USDT minimum
    cold_start_min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.decision_timeframe not in TIMEFRAME_MS:
            raise DecisionInputError(f"unknown decision timeframe {self.decision_timeframe!r}")
        if not np.isfinite(self.threshold_pct):
            raise DecisionInputError("threshold_pct must be finite")
        if not (0 < self.stop_pct < 100 and self.take_pct > 0):
            raise DecisionInputError("stop_pct must be in (0, 100) and take_pct positive")
        if not (np.isfinite(self.cold_start_notional) and self.cold_start_notional >= 0):
            raise DecisionInputError("cold_start_notional must be finite and >= 0")
        if not 0 <= self.cold_start_min_confidence <= 1:
            raise DecisionInputError("cold_start_min_confidence must be in [0, 1]")

    @property
    def decision_tf_ms(self) -> int:
        return TIMEFRAME_MS[self.decision_timeframe]

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> DecisionPolicy:
        """Build from ``aegis.config.Settings``; cold-start values may be overridden."""
        return cls(
            decision_timeframe=settings.decision_timeframe,
            threshold_pct=settings.entry_threshold_pct,
            stop_pct=settings.stop_loss_pct,
            take_pct=settings.take_profit_pct,
            sizing=SizingPolicy.from_settings(settings),
            **overrides,
        )


@dataclass(frozen=True)
class DecisionRows:
    """Closed decision bars of one decision (at most one row per symbol), after the rule ran."""

    symbol_id: np.ndarray  # uint32 (k,)
    decision_time_ms: np.ndarray  # int64 (k,), open time of the decision bar
    recv_ns: np.ndarray  # int64 (k,), stamp of the 1m bar that closed it
    features: np.ndarray  # float64 (k, 12)
    is_candidate: np.ndarray  # bool (k,)
    confidence: np.ndarray  # float64 (k,)

    def __post_init__(self) -> None:
        k = len(self.symbol_id)
        shapes = [a.shape for a in (self.decision_time_ms, self.recv_ns, self.is_candidate,
                                    self.confidence)]  # fmt: skip
        if any(s != (k,) for s in shapes) or self.features.shape != (k, N_FEATURES):
            raise DecisionInputError("decision rows need equal lengths and (k, 12) features")


@dataclass(frozen=True)
class Decision:
    """Every candidate as a signal, and the intents to publish (those entered)."""

    signals: np.ndarray  # SIGNAL_DTYPE
    intents: np.ndarray  # INTENT_DTYPE, publish_ns = 0 until published


class Predictor(Protocol):
    """What the pipeline needs of a model (``aegis.ml.registry.ActiveModel`` fits)."""

    version: int
    win_probability: float
    model: object  # has predict(features (k, 12)) -> (k,)


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_U64 = (1 << 64) - 1
# Below this many rows the hash runs on Python ints: a numpy call costs more than a row.
_SCALAR_IDS_BELOW = 16


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 arrays wrap silently (only numpy scalars warn on overflow); x is always an array
    z = x + np.uint64(_GOLDEN)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


def _splitmix64_int(z: int) -> int:
    """``_splitmix64`` of one value held as a Python int in [0, 2**64)."""
    z = (z + _GOLDEN) & _U64
    z = ((z ^ (z >> 30)) * _MIX1) & _U64
    z = ((z ^ (z >> 27)) * _MIX2) & _U64
    return z ^ (z >> 31)


def intent_ids(
    symbol_id: np.ndarray, decision_time_ms: np.ndarray, decision_tf_ms: int
) -> np.ndarray:
    """Return the deterministic 64-bit id of each (symbol, decision bar, timeframe) candidate.

    A restart, a replay or a backtest computes the same id for the same candidate, so the
    executor (which keys orders by it) can never trade one candidate twice. Never 0.
    """
    sym = np.atleast_1d(np.asarray(symbol_id)).astype(np.uint64)
    t = np.atleast_1d(np.asarray(decision_time_ms)).astype(np.int64).view(np.uint64)
    tf = np.uint64(decision_tf_ms)
    if len(sym) < _SCALAR_IDS_BELOW and sym.shape == t.shape:
        mix, tf_int = _splitmix64_int, int(tf)
        pairs = zip(t.tolist(), sym.tolist(), strict=True)
        return np.array([mix(mix(mix(a) ^ b) ^ tf_int) or 1 for a, b in pairs], np.uint64)
    h = _splitmix64(_splitmix64(t) ^ sym)
    h = _splitmix64(h ^ tf)
    h[h == 0] = 1
    return h


def decide(
    rows: DecisionRows,
    model: Predictor | None,
    equity: float,
    open_positions: int,
    symbol_exposure: np.ndarray,
    policy: DecisionPolicy,
    *,
    replay: bool = False,
) -> Decision:
    """Decide one batch of decision rows; see the module docstring for the rules.

    ``symbol_exposure`` (k,) is the quote notional already held per row's symbol and
    ``open_positions`` the positions open now. ``replay`` marks every signal ``replayed`` and
    returns no intent (state rebuilt at start is never traded again).
    """
    cand = np.flatnonzero(np.asarray(rows.is_candidate, dtype=bool))
    exposure = np.asarray(symbol_exposure, dtype=np.float64)
    if exposure.shape != rows.symbol_id.shape:
        raise DecisionInputError("symbol_exposure needs one value per row")
    n = len(cand)
    # Every row a candidate (the common case) selects by a slice: no copies of the inputs.
    pick = slice(None) if n == len(exposure) else cand
    sym = np.asarray(rows.symbol_id)[pick]
    if n > 1 and len(set(sym.tolist())) != n:
        raise DecisionInputError("one row per symbol per decision")
    feats = rows.features[pick]
    conf = rows.confidence[pick]
    dtime = rows.decision_time_ms[pick]
    if model is None:
        pred = np.full(n, np.nan)
        wanted = conf >= policy.cold_start_min_confidence
        sizing = policy.sizing
        if sizing.method != "fixed_fractional":
            sizing = dataclasses.replace(sizing, method="fixed_fractional")
        sized = size_positions(
            equity, np.where(wanted, conf, np.nan), sym, exposure[pick], open_positions, sizing,
            stop_pct=policy.stop_pct, take_pct=policy.take_pct,
        )  # fmt: skip
        notional = np.minimum(sized.notional, policy.cold_start_notional)
        version = 0
    else:
        pred = np.asarray(model.model.predict(feats), dtype=np.float64) if n else np.empty(0)
        wanted = pred > policy.threshold_pct
        sized = size_positions(
            equity, np.where(wanted, pred, np.nan), sym, exposure[pick], open_positions,
            policy.sizing, stop_pct=policy.stop_pct, take_pct=policy.take_pct,
            win_prob=model.win_probability, atr_pct=feats[:, _ATR_COLUMN],
        )  # fmt: skip
        notional = sized.notional
        version = int(model.version)
    entered = notional > 0.0
    ids = intent_ids(sym, dtime, policy.decision_tf_ms)

    signals = np.zeros(n, SIGNAL_DTYPE)
    signals["intent_id"] = ids
    signals["decision_time_ms"] = dtime
    signals["symbol_id"] = sym
    code = np.where(entered, DECISION_ENTERED,
                    np.where(wanted, DECISION_RISK_CAPPED, DECISION_BELOW_THRESHOLD))  # fmt: skip
    signals["decision"] = DECISION_REPLAYED if replay else code
    signals["direction"] = 1
    signals["confidence"] = conf
    signals["predicted_return_pct"] = pred
    signals["model_version"] = version
    signals["notional"] = notional
    signals["features"] = feats

    if replay:
        return Decision(signals, np.zeros(0, INTENT_DTYPE))
    take = np.flatnonzero(entered)
    intents = np.zeros(len(take), INTENT_DTYPE)
    if len(take) == n:
        take = slice(None)
    intents["intent_id"] = ids[take]
    intents["decision_time_ms"] = dtime[take]
    intents["recv_ns"] = rows.recv_ns[pick][take]
    intents["symbol_id"] = sym[take]
    intents["side"] = SIDE_BUY
    intents["notional"] = notional[take]
    intents["stop_pct"] = sized.stop_pct[take]
    intents["take_pct"] = sized.take_pct[take]
    intents["predicted_return_pct"] = pred[take]
    intents["confidence"] = conf[take]
    intents["model_version"] = version
    intents["features"] = feats[take]
    return Decision(signals, intents)


def _nullable(x: float) -> float | None:
    return None if x != x else x  # NaN = undefined feature = NULL column


def signal_rows(
    signals: np.ndarray,
    symbol_of: Callable[[int], str],
    timeframe: str,
    created_at_ms: int,
) -> list[tuple]:
    """Rows for the ``signals`` table, in ``aegis.store.tables`` column order."""
    out = []
    for s in signals:
        f = s["features"].tolist()
        out.append(
            (
                int(s["intent_id"]),
                symbol_of(int(s["symbol_id"])),
                timeframe,
                int(s["decision_time_ms"]),
                int(s["direction"]),
                float(s["confidence"]),
                float(s["predicted_return_pct"]),
                int(s["model_version"]),
                DECISION_NAMES[int(s["decision"])],
                *(_nullable(f[i]) for i in _DEDICATED),
                f,
                created_at_ms,
            )
        )
    return out


def group_by_decision_time(decision_time_ms: np.ndarray) -> Sequence[np.ndarray]:
    """Row indices of each distinct decision time, in time order (one decision per group)."""
    t = np.asarray(decision_time_ms)
    if len(t) == 0:
        return []
    order = np.argsort(t, kind="stable")
    cuts = np.flatnonzero(np.diff(t[order])) + 1
    return np.split(order, cuts)
