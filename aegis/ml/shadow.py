"""Shadow labels, live: every candidate is labelled once its horizon has passed, traded or not.

``ShadowLabeler`` keeps the candidates whose trade is still open in fixed arrays and walks each
one forward with every new 1m bar of its symbol through ``aegis.paper.exits.exit_check``,
exactly as ``aegis.ml.labels.label_candidates`` walks a recorded series (same entry bar: the
first 1m bar opening at or after the decision bar's close; same bars-held count in elapsed
minutes; same pessimistic exits and fees), so a live label equals the batch label (tested).
Work per bar batch is proportional to the candidates still pending — bounded by the horizon
(``max_hold_minutes``) over the decision interval per symbol — never to the history.

The queue is not persisted: at start the brain rebuilds it by replaying the last horizon of
``market_data`` through the same path (see ``aegis.risk.brain_core``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from aegis.ml.labels import MINUTE_MS, ExitRules, exit_check_nb, trade_return_pct_nb
from aegis.paper.exits import EXIT_NONE
from aegis.records import N_FEATURES

SHADOW_SOURCE = "shadow"


@dataclass(frozen=True)
class CompletedLabels:
    """Candidates whose horizon has passed in this batch."""

    symbol_index: np.ndarray  # int64
    decision_time_ms: np.ndarray  # int64
    features: np.ndarray  # float64 (k, 12)
    model_version: np.ndarray  # int64, model that scored the candidate (0 = rule-only)
    entry_time_ms: np.ndarray  # int64, open time of the entry bar
    exit_time_ms: np.ndarray  # int64, close time of the exit bar
    gross_pct: np.ndarray
    net_pct: np.ndarray
    reason: np.ndarray  # int8, aegis.paper.exits.EXIT_*

    def __len__(self) -> int:
        return len(self.net_pct)

    @staticmethod
    def concat(parts: list[CompletedLabels]) -> CompletedLabels:
        if not parts:
            return _EMPTY
        return CompletedLabels(*(np.concatenate([getattr(p, f) for p in parts])
                                 for f in CompletedLabels.__dataclass_fields__))  # fmt: skip


_EMPTY = CompletedLabels(
    np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, N_FEATURES)),
    np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
    np.empty(0), np.empty(0), np.empty(0, np.int8),
)  # fmt: skip


@njit(cache=True)
def _advance_nb(active, sym, wanted, entered, entry, peak, t0, row_of, t, o, h, lo, c,
                stop, take, trail, max_hold, fee, slip, done, exit_t, gross, net, reason):  # fmt: skip
    """Walk every pending slot whose symbol has a bar in this batch; return slots completed."""
    k = 0
    for i in range(active.shape[0]):
        if not active[i]:
            continue
        r = row_of[sym[i]]
        if r < 0:
            continue
        if not entered[i]:
            if t[r] < wanted[i]:
                continue
            entered[i] = True
            entry[i] = o[r]
            peak[i] = o[r]
            t0[i] = t[r]
        held = (t[r] - t0[i]) // MINUTE_MS + 1
        why, px = exit_check_nb(entry[i], peak[i], o[r], h[r], lo[r], c[r], held,
                                stop, take, trail, max_hold)  # fmt: skip
        if why != EXIT_NONE:
            g, nt = trade_return_pct_nb(entry[i], px, fee, slip)
            done[k] = i
            exit_t[k] = t[r] + MINUTE_MS
            gross[k] = g
            net[k] = nt
            reason[k] = why
            active[i] = False
            k += 1
        elif h[r] > peak[i]:
            peak[i] = h[r]
    return k


class ShadowLabeler:
    """Pending-label queue of many symbols (indices 0..n_symbols-1)."""

    def __init__(self, n_symbols: int, rules: ExitRules, decision_tf_ms: int) -> None:
        self.n_symbols = n_symbols
        self.rules = rules
        self.decision_tf_ms = int(decision_tf_ms)
        self._row_of = np.full(n_symbols, -1, np.int64)
        self._alloc(256)

    def _alloc(self, cap: int) -> None:
        old = getattr(self, "_active", None)
        fields = {
            "_active": np.zeros(cap, bool), "_sym": np.zeros(cap, np.int64),
            "_wanted": np.zeros(cap, np.int64), "_entered": np.zeros(cap, bool),
            "_entry": np.zeros(cap), "_peak": np.zeros(cap), "_t0": np.zeros(cap, np.int64),
            "_dtime": np.zeros(cap, np.int64), "_version": np.zeros(cap, np.int64),
            "_features": np.zeros((cap, N_FEATURES)),
        }  # fmt: skip
        for name, arr in fields.items():
            if old is not None:
                arr[: len(old)] = getattr(self, name)
            setattr(self, name, arr)
        self._done = np.empty(cap, np.int64)
        self._exit_t = np.empty(cap, np.int64)
        self._gross, self._net = np.empty(cap), np.empty(cap)
        self._reason = np.empty(cap, np.int8)

    @property
    def pending(self) -> int:
        """Candidates whose label is not known yet."""
        return int(self._active.sum())

    def add(
        self,
        symbol_index: np.ndarray,
        decision_time_ms: np.ndarray,
        features: np.ndarray,
        model_version: np.ndarray | int = 0,
    ) -> None:
        """Queue candidates decided at the close of their decision bars."""
        sym = np.asarray(symbol_index, dtype=np.int64)
        n = len(sym)
        if n == 0:
            return
        if (sym < 0).any() or (sym >= self.n_symbols).any():
            raise ValueError("symbol index out of range")
        free = np.flatnonzero(~self._active)
        if len(free) < n:
            self._alloc(2 * (len(self._active) + n))
            free = np.flatnonzero(~self._active)
        slots = free[:n]
        dtime = np.asarray(decision_time_ms, dtype=np.int64)
        self._active[slots] = True
        self._sym[slots] = sym
        self._dtime[slots] = dtime
        self._wanted[slots] = dtime + self.decision_tf_ms
        self._entered[slots] = False
        self._version[slots] = np.broadcast_to(np.asarray(model_version, np.int64), (n,))
        self._features[slots] = features

    def on_bars(
        self,
        symbol_index: np.ndarray,
        open_time_ms: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
    ) -> CompletedLabels:
        """Advance with one closed 1m bar per listed symbol (each symbol at most once)."""
        sym = np.asarray(symbol_index, dtype=np.int64)
        if len(sym) == 0 or not self._active.any():
            return _EMPTY
        self._row_of[sym] = np.arange(len(sym))
        try:
            if (self._row_of[sym] != np.arange(len(sym))).any():
                raise ValueError("a symbol appears twice in one on_bars call")
            r = self.rules
            k = _advance_nb(
                self._active, self._sym, self._wanted, self._entered, self._entry, self._peak,
                self._t0, self._row_of, np.asarray(open_time_ms, np.int64),
                *(np.asarray(a, np.float64) for a in (open_, high, low, close)),
                r.stop_pct, r.take_pct, r.trailing_pct, r.max_hold_minutes,
                r.commission_pct, r.slippage_pct,
                self._done, self._exit_t, self._gross, self._net, self._reason,
            )  # fmt: skip
        finally:
            self._row_of[sym] = -1
        if k == 0:
            return _EMPTY
        d = self._done[:k].copy()
        return CompletedLabels(
            symbol_index=self._sym[d].copy(),
            decision_time_ms=self._dtime[d].copy(),
            features=self._features[d].copy(),
            model_version=self._version[d].copy(),
            entry_time_ms=self._t0[d].copy(),
            exit_time_ms=self._exit_t[:k].copy(),
            gross_pct=self._gross[:k].copy(),
            net_pct=self._net[:k].copy(),
            reason=self._reason[:k].copy(),
        )


def experience_rows(
    labels: CompletedLabels,
    symbol_of: Callable[[int], str],
    timeframe: str,
    created_at_ms: int,
    source: str = SHADOW_SOURCE,
) -> list[tuple]:
    """Rows for ``experience_buffer`` (``aegis.store.tables`` column order), weight 1."""
    return [
        (
            source,
            symbol_of(int(labels.symbol_index[i])),
            timeframe,
            int(labels.decision_time_ms[i]),
            labels.features[i].tolist(),
            float(labels.net_pct[i]),
            1.0,
            int(labels.model_version[i]),
            created_at_ms,
            int(labels.exit_time_ms[i]),
        )
        for i in range(len(labels))
    ]
