"""The brain's view of the account: equity and open exposure, for sizing the next intents.

The executor is the authority (its guards gate every entry); this book only keeps the brain's
sizing honest between decisions: an intent published counts as open exposure at once (before
its fill), an executor report closes it (realised net % return moves equity) or drops it (a
rejected intent). A position whose report never came is forgotten once its horizon has surely
passed (decision bar + time exit + one more decision bar), so a lost report cannot block a
symbol forever. Restored at start from what the executor persisted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from aegis.records import REPORT_INTENT_REJECTED, REPORT_TRADE_CLOSED

_NEVER = np.iinfo(np.int64).max  # no open position


class OpenExposure(NamedTuple):
    """An open position as the brain counts it (a tuple: a frozen dataclass cost ~1 µs each)."""

    symbol_id: int
    notional: float
    decision_time_ms: int


class ExposureBook:
    """Open intents by id, exposure per symbol, equity = start + realised P&L."""

    def __init__(self, equity: float, horizon_ms: int) -> None:
        if not (np.isfinite(equity) and equity >= 0):
            raise ValueError(f"equity must be finite and >= 0, got {equity}")
        self.equity = float(equity)
        self.horizon_ms = int(horizon_ms)
        self._open: dict[int, OpenExposure] = {}
        self._by_symbol: dict[int, float] = {}
        # A lower bound of the open decision times (closing a position may leave it low).
        self._oldest_ms = _NEVER
        self.expired = 0

    @property
    def open_positions(self) -> int:
        return len(self._open)

    def positions(self) -> list[tuple[int, int, float, int]]:
        """Open (intent_id, symbol_id, notional, decision_time_ms), the form ``restore`` takes."""
        return [(i, p.symbol_id, p.notional, p.decision_time_ms) for i, p in self._open.items()]

    def exposure(self, symbol_id: np.ndarray) -> np.ndarray:
        """Quote notional open per listed symbol."""
        ids = np.asarray(symbol_id, dtype=np.int64)
        if not self._by_symbol or not ids.size:
            return np.zeros(ids.shape, np.float64)
        get = self._by_symbol.get
        held = [get(s, 0.0) for s in ids.ravel().tolist()]
        return np.array(held, np.float64).reshape(ids.shape)

    def open(self, intent_id: int, symbol_id: int, notional: float, decision_time_ms: int) -> None:
        """Count a published (or restored) position; the same id twice counts once."""
        self._open_rows([(intent_id, symbol_id, float(notional), int(decision_time_ms))])

    def open_intents(self, intents: np.ndarray) -> None:
        """``open`` for each INTENT_DTYPE record."""
        if len(intents):
            columns = ("intent_id", "symbol_id", "notional", "decision_time_ms")
            self._open_rows(zip(*(intents[c].tolist() for c in columns), strict=True))

    def _open_rows(self, rows: Iterable[tuple[int, int, float, int]]) -> None:
        # One loop over plain Python values: tens of intents open at each close.
        opened, by_symbol, oldest = self._open, self._by_symbol, self._oldest_ms
        for intent_id, symbol_id, notional, t in rows:
            if intent_id in opened:
                continue
            opened[intent_id] = OpenExposure(symbol_id, notional, t)
            oldest = min(oldest, t)
            by_symbol[symbol_id] = by_symbol.get(symbol_id, 0.0) + notional
        self._oldest_ms = oldest

    def _close(self, intent_id: int) -> OpenExposure | None:
        pos = self._open.pop(intent_id, None)
        if pos is not None:
            left = self._by_symbol.get(pos.symbol_id, 0.0) - pos.notional
            if left <= 1e-9:
                self._by_symbol.pop(pos.symbol_id, None)
            else:
                self._by_symbol[pos.symbol_id] = left
        return pos

    def on_report(self, intent_id: int, kind: int, net_return_pct: float) -> OpenExposure | None:
        """Apply one executor report; return the position it closed (None if unknown)."""
        if kind not in (REPORT_TRADE_CLOSED, REPORT_INTENT_REJECTED):
            return None
        pos = self._close(intent_id)
        if pos is not None and kind == REPORT_TRADE_CLOSED and np.isfinite(net_return_pct):
            self.equity = max(self.equity + pos.notional * net_return_pct / 100.0, 0.0)
        return pos

    def expire(self, now_ms: int) -> int:
        """Forget positions older than the horizon at market time ``now_ms``; return how many."""
        if now_ms - self._oldest_ms <= self.horizon_ms:
            return 0  # nothing can be that old yet (called on every batch: skip the scan)
        old = [i for i, p in self._open.items() if now_ms - p.decision_time_ms > self.horizon_ms]
        for i in old:
            self._close(i)
        self._oldest_ms = min((p.decision_time_ms for p in self._open.values()), default=_NEVER)
        self.expired += len(old)
        return len(old)

    def restore(self, equity: float, positions: Iterable[tuple[int, int, float, int]]) -> None:
        """Reset from persisted state: equity and (intent_id, symbol_id, notional, time) rows."""
        self.equity = float(equity)
        self._open.clear()
        self._by_symbol.clear()
        self._oldest_ms = _NEVER
        self._open_rows((i, sid, float(notional), int(t)) for i, sid, notional, t in positions)
