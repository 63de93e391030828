"""The brain's decision loop without I/O: closed 1m bars in; intents, signals and labels out.

``BrainCore`` is what the brain process drives (and what a backtest can drive): for each batch
of ``BAR_DTYPE`` records from the market ring it

1. drops what must not reach the features — bars not flagged closed, non-finite or
   non-positive prices, misaligned times, and bars already seen (the ring is at-least-once and
   the warm-up from ``market_data`` may overlap it) — counting each reason;
2. processes the rest minute by minute (a minute's bars across all symbols at once):
   ``FeatureEngine.update`` → decision-bar closes → the candidate rule
   (``aegis.features.candidates``) → ``aegis.risk.decision.decide`` per decision time, sized
   against the ``ExposureBook`` → the candidates go to the ``ShadowLabeler``, which the same
   bars then advance.

:func:`decide_series` is the batch path over whole recorded series (``feature_matrix``); it
groups decisions by the minute that closed them exactly as the live loop does, so both give
the same signals and intents (tested on real data). The live loop decides a decision time in
one call when that minute's bars arrive in one ring batch; a ring batch cut inside a minute
splits it into two calls, which can change only which candidates win scarce position slots.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from aegis.features.candidates import (
    CandidateRule,
    EmaTracker,
    ema_inputs,
    rule_by_name,
    smc_long,
)
from aegis.features.vector import FEATURE_NAMES, FeatureEngine, FeatureParams, feature_matrix
from aegis.ml.labels import MINUTE_MS, ExitRules
from aegis.ml.shadow import CompletedLabels, ShadowLabeler
from aegis.records import BAR_CLOSED, INTENT_DTYPE
from aegis.risk._select_nb import DROP_REASONS, select_bars_nb
from aegis.risk.decision import (
    SIGNAL_DTYPE,
    DecisionPolicy,
    DecisionRows,
    Predictor,
    decide,
    group_by_decision_time,
)
from aegis.risk.exposure import ExposureBook


class UnknownSymbolError(KeyError):
    """A symbol id the brain has no name for."""


@dataclass(frozen=True)
class BrainConfig:
    """Everything the decision loop needs to know; ``from_settings`` mirrors the settings."""

    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    exit_rules: ExitRules = field(default_factory=ExitRules)
    rule: CandidateRule = field(default_factory=smc_long)
    feature_params: FeatureParams = field(default_factory=FeatureParams)
    starting_equity: float = 10_000.0
    capacity: int = 512  # symbols the preallocated state can hold

    @property
    def horizon_ms(self) -> int:
        """Decision bar + time exit + one more decision bar: a candidate is labelled by then."""
        tf = self.policy.decision_tf_ms
        return 2 * tf + self.exit_rules.max_hold_minutes * MINUTE_MS

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> BrainConfig:
        kw = dict(
            policy=DecisionPolicy.from_settings(
                settings,
                cold_start_notional=settings.cold_start_notional,
                cold_start_min_confidence=settings.cold_start_min_confidence,
            ),
            rule=rule_by_name(settings.candidate_rule),
            exit_rules=ExitRules.from_settings(settings),
            starting_equity=settings.starting_equity,
            capacity=max(512, 2 * settings.top_n, 2 * len(settings.symbols)),
        )
        kw.update(overrides)
        return cls(**kw)


@dataclass(frozen=True)
class BrainStep:
    """Outcome of one batch: intents to publish, signals and labels to store, and drop counts."""

    intents: np.ndarray  # INTENT_DTYPE
    signals: np.ndarray  # SIGNAL_DTYPE
    labels: CompletedLabels  # symbol_index = the core's index; see BrainCore.name_of_index
    dropped: dict[str, int]


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` of same-dtype record arrays (at least one), without its ~15 µs of
    structured-dtype promotion when at most one part holds records (nearly every step)."""
    full = [p for p in parts if len(p)]
    if len(full) == 1:
        return full[0]
    return np.concatenate(full) if full else parts[0]


def _decision_closes(t: np.ndarray, c: np.ndarray, bucket: np.ndarray, tf: int) -> np.ndarray:
    """Close of each decision bar: the close of its last present minute."""
    return c[np.searchsorted(t, bucket + tf, side="left") - 1]


class BrainCore:
    """Stateful decision loop over a universe of symbols (ids from the feed's universe)."""

    def __init__(self, config: BrainConfig, symbols: Mapping[int, str]) -> None:
        self.config = config
        self.policy = config.policy
        cap = config.capacity
        self.engine = FeatureEngine(cap, config.policy.decision_timeframe, config.feature_params)
        self.emas = EmaTracker(cap, config.rule.ema_periods)
        self.labeler = ShadowLabeler(cap, config.exit_rules, config.policy.decision_tf_ms)
        self.book = ExposureBook(config.starting_equity, config.horizon_ms)
        self._index_of: dict[int, int] = {}
        self._lut = np.full(1024, -1, np.int64)  # symbol id -> index, vectorised lookup
        self._names: list[str] = []
        self._ids = np.zeros(cap, np.uint32)
        self._last_t = np.full(cap, np.iinfo(np.int64).min, np.int64)
        self._prev_close = np.full(cap, np.nan)
        self._tails: list[np.ndarray] = []
        self.bars_seen = 0
        for symbol_id, name in symbols.items():
            self.add_symbol(symbol_id, name)

    # -- symbols ------------------------------------------------------------------------------
    def add_symbol(self, symbol_id: int, name: str) -> int:
        """Register a symbol (idempotent); return its index. Raises when capacity is full."""
        symbol_id = int(symbol_id)
        if symbol_id in self._index_of:
            return self._index_of[symbol_id]
        i = len(self._names)
        if i >= self.config.capacity:
            raise UnknownSymbolError(f"symbol capacity {self.config.capacity} is full")
        self._index_of[symbol_id] = i
        if symbol_id >= len(self._lut):
            lut = np.full(max(2 * len(self._lut), symbol_id + 1), -1, np.int64)
            lut[: len(self._lut)] = self._lut
            self._lut = lut
        self._lut[symbol_id] = i
        self._names.append(name)
        self._ids[i] = symbol_id
        return i

    def name_of_id(self, symbol_id: int) -> str:
        try:
            return self._names[self._index_of[int(symbol_id)]]
        except KeyError:
            raise UnknownSymbolError(f"no symbol has id {symbol_id}") from None

    def name_of_index(self, index: int) -> str:
        return self._names[int(index)]

    def knows(self, symbol_id: int) -> bool:
        return int(symbol_id) in self._index_of

    # -- warm-up ------------------------------------------------------------------------------
    def warm_up(self, symbol_id: int, t, o, h, lo, c, v) -> int:
        """Replay a symbol's 1m history (oldest first); return decision bars it closed.

        Everything older than the label horizon before the last bar goes straight into the
        feature state; the last horizon is kept and replayed by :meth:`finish_warm_up` through
        the live path, which rebuilds the pending-label queue (and re-derives signals, marked
        ``replayed``, never traded).
        """
        self.name_of_id(symbol_id)  # raises for a symbol never registered
        i = self._index_of[int(symbol_id)]
        t = np.asarray(t, np.int64)
        if len(t) == 0:
            return 0
        cols = [np.asarray(a, np.float64) for a in (o, h, lo, c, v)]
        cut = int(np.searchsorted(t, t[-1] - self.config.horizon_ms, side="right"))
        rows = 0
        if cut:
            rows = self.engine.warm_up(i, t[:cut], *(a[:cut] for a in cols))
            tf = self.policy.decision_tf_ms
            if rows and len(self.config.rule.ema_periods):
                buckets = np.unique(t[:cut] - t[:cut] % tf)[:rows]
                self.emas.update(
                    np.full(rows, i), _decision_closes(t[:cut], cols[3][:cut], buckets, tf)
                )
            self._last_t[i] = t[cut - 1]
            self._prev_close[i] = cols[3][cut - 1]
        tail = np.zeros(len(t) - cut, _BAR_TAIL_DTYPE)
        tail["open_time_ms"], tail["symbol_id"], tail["flags"] = t[cut:], symbol_id, BAR_CLOSED
        for name, a in zip(("open", "high", "low", "close", "volume"), cols, strict=True):
            tail[name] = a[cut:]
        self._tails.append(tail)
        return int(rows)

    def finish_warm_up(self, model: Predictor | None) -> BrainStep:
        """Replay the kept tails of every symbol, minute by minute, without trading."""
        from aegis.records import BAR_DTYPE

        tails = [x for x in self._tails if len(x)]
        self._tails = []
        if not tails:
            return self.on_bars(np.zeros(0, BAR_DTYPE), model, replay=True)
        merged = np.concatenate(tails)
        bars = np.zeros(len(merged), BAR_DTYPE)
        for name in merged.dtype.names:
            bars[name] = merged[name]
        return self.on_bars(bars, model, replay=True)

    # -- the live path ------------------------------------------------------------------------
    def on_bars(
        self, bars: np.ndarray, model: Predictor | None, *, replay: bool = False
    ) -> BrainStep:
        """Process one batch of BAR_DTYPE records; see the module docstring."""
        n = len(bars)
        if n == 0:
            return BrainStep(np.zeros(0, INTENT_DTYPE), np.zeros(0, SIGNAL_DTYPE),
                             CompletedLabels.concat([]), dict.fromkeys(DROP_REASONS, 0))  # fmt: skip
        t = np.empty(n, np.int64)
        idx = np.empty(n, np.int64)
        cols = np.empty((5, n))  # open, high, low, close, volume
        recv = np.empty(n, np.int64)
        counts = np.zeros(len(DROP_REASONS), np.int64)
        m = select_bars_nb(bars, self._lut, self._last_t, BAR_CLOSED, t, idx, cols, recv, counts)
        dropped = dict(zip(DROP_REASONS, counts.tolist(), strict=True))
        intents, signals, labels = [], [], []
        if m:
            t, idx, cols, recv = t[:m], idx[:m], cols[:, :m], recv[:m]
            # Sorted by minute; one minute is the live case (no split to compute).
            one = t[0] == t[-1]
            cuts = [0, m] if one else [0, *(np.flatnonzero(np.diff(t)) + 1).tolist(), m]
            for a, b in itertools.pairwise(cuts):
                i_part, s_part, l_part = self._on_minute(
                    t[a:b], idx[a:b], cols[:, a:b], recv[a:b], model, replay
                )
                intents.append(i_part)
                signals.append(s_part)
                labels.append(l_part)
                self.book.expire(int(t[a]))
            self.bars_seen += m
        return BrainStep(
            _join(intents) if intents else np.zeros(0, INTENT_DTYPE),
            _join(signals) if signals else np.zeros(0, SIGNAL_DTYPE),
            CompletedLabels.concat([x for x in labels if len(x)]),
            dropped,
        )

    def _on_minute(self, t, idx, cols, recv, model, replay):
        """One minute's bars (at most one per symbol): features, candidates, decisions, labels."""
        tf = self.policy.decision_tf_ms
        o, h, lo, c, v = cols
        rows = self.engine.update(idx, t, o, h, lo, c, v)
        k = len(rows.symbol_index)
        intents, signals = [np.zeros(0, INTENT_DTYPE)], [np.zeros(0, SIGNAL_DTYPE)]
        if k:
            rsym = rows.symbol_index.copy()
            rtime = rows.decision_open_time_ms.copy()
            feats = rows.features.copy()
            pos = np.empty(self.config.capacity, np.int64)
            pos[idx] = np.arange(len(idx))
            p = pos[rsym]
            late = rtime + tf <= t[p]  # closed by a minute of a later bucket (gap)
            dclose = np.where(late, self._prev_close[rsym], c[p])
            ema = self.emas.update(rsym, dclose) if len(self.config.rule.ema_periods) else None
            is_cand, conf = self.config.rule.evaluate(feats, FEATURE_NAMES, ema)
            decided = self._decide(self._ids[rsym], rsym, rtime, recv[p], feats,
                                   is_cand, conf, model, replay)  # fmt: skip
            intents.extend(decided[0])
            signals.extend(decided[1])
        self._last_t[idx] = t
        self._prev_close[idx] = c
        labels = self.labeler.on_bars(idx, t, o, h, lo, c)
        return _join(intents), _join(signals), labels

    def _decide(self, ids, rsym, rtime, recv, feats, is_cand, conf, model, replay):
        """Decide each decision time of one closing minute; queue every candidate for labels."""
        intents, signals = [], []
        if not is_cand.any():
            return intents, signals  # no candidate at this close: nothing to decide or label
        for g in group_by_decision_time(rtime):
            if not is_cand[g].any():
                continue  # nothing to decide, size or label (most groups: a hot path)
            g = g[np.argsort(ids[g], kind="stable")]  # arrival order never changes a decision
            rows = DecisionRows(ids[g], rtime[g], recv[g], feats[g], is_cand[g], conf[g])
            d = decide(rows, model, self.book.equity, self.book.open_positions,
                       self.book.exposure(ids[g]), self.policy, replay=replay)  # fmt: skip
            self.book.open_intents(d.intents)
            cg = g[is_cand[g]]
            self.labeler.add(rsym[cg], rtime[cg], feats[cg], d.signals["model_version"])
            intents.append(d.intents)
            signals.append(d.signals)
        return intents, signals


_BAR_TAIL_DTYPE = np.dtype(
    [("open_time_ms", np.int64), ("symbol_id", np.uint32), ("flags", np.uint32),
     ("open", np.float64), ("high", np.float64), ("low", np.float64), ("close", np.float64),
     ("volume", np.float64)]
)  # fmt: skip


@dataclass(frozen=True)
class SymbolSeries:
    """One symbol's recorded 1m bars for the batch path."""

    symbol_id: int
    open_time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def decide_series(
    series: Sequence[SymbolSeries],
    config: BrainConfig,
    model: Predictor | None,
    book: ExposureBook | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch path: (signals, intents) over whole series, the same the live loop gives.

    Decisions are grouped by the minute whose bar closed them, then by decision time, as live.
    No executor reports arrive here: positions leave the book only by the horizon expiry.
    """
    tf = config.policy.decision_tf_ms
    parts = []
    for s in series:
        t = np.asarray(s.open_time_ms, np.int64)
        dt, feats, names = feature_matrix(
            t, s.open, s.high, s.low, s.close, s.volume,
            config.policy.decision_timeframe, config.feature_params,
        )  # fmt: skip
        if len(dt) == 0:
            continue
        c = np.asarray(s.close, np.float64)
        dclose = _decision_closes(t, c, dt, tf)
        emit = t[np.searchsorted(t, dt + tf - MINUTE_MS, side="left")]
        ema = ema_inputs(dclose, config.rule.ema_periods) if config.rule.ema_periods else None
        is_cand, conf = config.rule.evaluate(feats, names, ema)
        parts.append((np.full(len(dt), s.symbol_id, np.uint32), dt, emit, feats, is_cand, conf))
    if not parts:
        return np.zeros(0, SIGNAL_DTYPE), np.zeros(0, INTENT_DTYPE)
    ids, dt, emit, feats, is_cand, conf = (np.concatenate([p[j] for p in parts]) for j in range(6))
    book = book or ExposureBook(config.starting_equity, config.horizon_ms)
    signals, intents = [], []
    order = np.lexsort((ids, dt, emit))
    cuts = np.flatnonzero(np.diff(emit[order])) + 1
    for minute_rows in np.split(order, cuts):
        for g in group_by_decision_time(dt[minute_rows]):
            g = minute_rows[g]
            g = g[np.argsort(ids[g], kind="stable")]
            rows = DecisionRows(ids[g], dt[g], np.zeros(len(g), np.int64), feats[g],
                                is_cand[g], conf[g])  # fmt: skip
            d = decide(rows, model, book.equity, book.open_positions, book.exposure(ids[g]),
                       config.policy)  # fmt: skip
            book.open_intents(d.intents)
            signals.append(d.signals)
            intents.append(d.intents)
        book.expire(int(emit[minute_rows[0]]))
    return np.concatenate(signals), np.concatenate(intents)
