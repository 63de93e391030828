"""Labels: the net % return of the trade the executor's own rules would make from a candidate.

A candidate is decided when its decision bar closes; the trade enters at the open of the first
1m bar that opens at or after that moment (the "next bar"), then walks forward 1m bar by 1m bar
through :func:`aegis.paper.exits.exit_check` (the one definition of the exit rules) and is
priced by :func:`aegis.paper.exits.trade_return_pct` (commission per side and slippage on both
fills). So a label is exactly the trade paper trading would have recorded.

Every candidate is labelled, not only those traded (shadow outcomes), so the model never learns
only from its own selection. A label exists once its horizon is complete: the exit rules fired
within the recorded bars. A candidate whose entry bar or exit is still in the future is returned
with ``complete = False`` and NaN returns, and must not be trained on yet.

Conventions shared with the executor (documented here because they decide the numbers):
- the entry bar itself is the first bar held (``bars_held = 1``): its high and low happen after
  the open fill, so its stop and take-profit are checked;
- ``bars_held`` counts elapsed minutes since the entry bar's open, not rows, so a gap in the
  recorded data never stretches the time exit;
- ``exit_time_ms`` is the close time of the exit bar (open time + 1 minute): the latest instant
  the position may still have been open, which is what purging needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from aegis.paper.exits import EXIT_NONE, EXIT_REASONS, exit_check, trade_return_pct

# The executor runs the exit rules as plain Python, so that its process never loads Numba; the
# labels compile the very same functions, so a label is the trade the executor would make.
exit_check_nb = njit(cache=True)(exit_check)
trade_return_pct_nb = njit(cache=True)(trade_return_pct)

MINUTE_MS = 60_000

TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


class LabelInputError(ValueError):
    """The bars or the trade parameters cannot produce a meaningful label."""


@dataclass(frozen=True)
class ExitRules:
    """The executor's trade rules, in percent of the entry price; mirrors the executor settings."""

    stop_pct: float = 1.0
    take_pct: float = 2.0
    trailing_pct: float = 0.0
    max_hold_minutes: int = 240
    commission_pct: float = 0.1
    slippage_pct: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.stop_pct < 100.0:
            raise LabelInputError(f"stop_pct must be in (0, 100), got {self.stop_pct}")
        if not self.take_pct > 0.0:
            raise LabelInputError(f"take_pct must be positive, got {self.take_pct}")
        if not 0.0 <= self.trailing_pct < 100.0:
            raise LabelInputError(f"trailing_pct must be in [0, 100), got {self.trailing_pct}")
        if self.max_hold_minutes < 0:
            raise LabelInputError(f"max_hold_minutes must be >= 0, got {self.max_hold_minutes}")
        if not 0.0 <= self.commission_pct < 5.0 or not 0.0 <= self.slippage_pct < 5.0:
            raise LabelInputError("commission_pct and slippage_pct must be in [0, 5)")

    @classmethod
    def from_settings(cls, settings: object) -> ExitRules:
        """Build from an ``aegis.config.Settings`` (or anything with the same field names)."""
        return cls(
            stop_pct=settings.stop_loss_pct,
            take_pct=settings.take_profit_pct,
            trailing_pct=settings.trailing_stop_pct,
            max_hold_minutes=settings.max_hold_minutes,
            commission_pct=settings.commission_pct,
            slippage_pct=settings.slippage_pct,
        )


@dataclass(frozen=True)
class TradeLabels:
    """One row per candidate, in the order the candidates were given."""

    entry_index: np.ndarray  # int64, row of the entry bar in the 1m series; -1 if not yet open
    entry_time_ms: np.ndarray  # int64, open time of the entry bar; the wanted time if not open
    entry_price: np.ndarray  # float64
    exit_time_ms: np.ndarray  # int64, close time of the exit bar; -1 while incomplete
    exit_price: np.ndarray  # float64
    gross_pct: np.ndarray  # float64, raw price move; NaN while incomplete
    net_pct: np.ndarray  # float64, after slippage and commission; NaN while incomplete
    reason: np.ndarray  # int8, aegis.paper.exits.EXIT_*; EXIT_NONE while incomplete
    complete: np.ndarray  # bool, the horizon has passed and the label may be learned

    def __len__(self) -> int:
        return len(self.net_pct)

    def reason_names(self) -> list[str]:
        """Return the executor's exit-reason names ("" for incomplete rows)."""
        return [EXIT_REASONS.get(int(r), "") for r in self.reason]


@njit(cache=True)
def label_trades_nb(
    open_time_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    entry_index: np.ndarray,
    stop_pct: float,
    take_pct: float,
    trailing_pct: float,
    max_hold_minutes: int,
    commission_pct: float,
    slippage_pct: float,
):
    """Walk each trade from its entry bar until the exit rules fire (or the data ends)."""
    n = entry_index.shape[0]
    m = open_time_ms.shape[0]
    exit_time = np.full(n, -1, np.int64)
    entry_price = np.full(n, np.nan)
    exit_price = np.full(n, np.nan)
    gross = np.full(n, np.nan)
    net = np.full(n, np.nan)
    reason = np.zeros(n, np.int8)
    for k in range(n):
        e = entry_index[k]
        if e < 0 or e >= m:
            continue
        entry = open_[e]
        entry_price[k] = entry
        peak = entry
        t0 = open_time_ms[e]
        for j in range(e, m):
            held = (open_time_ms[j] - t0) // MINUTE_MS + 1
            r, px = exit_check_nb(
                entry, peak, open_[j], high[j], low[j], close[j], held,
                stop_pct, take_pct, trailing_pct, max_hold_minutes,
            )  # fmt: skip
            if r != EXIT_NONE:
                g, nt = trade_return_pct_nb(entry, px, commission_pct, slippage_pct)
                exit_time[k] = open_time_ms[j] + MINUTE_MS
                exit_price[k] = px
                gross[k] = g
                net[k] = nt
                reason[k] = r
                break
            if high[j] > peak:
                peak = high[j]
    return entry_price, exit_time, exit_price, gross, net, reason


def entry_times_for(decision_open_time_ms: np.ndarray, decision_tf: str) -> np.ndarray:
    """Return the wanted entry time of each candidate: the close of its decision bar."""
    if decision_tf not in TIMEFRAME_MS:
        raise LabelInputError(f"unknown decision timeframe {decision_tf!r}")
    return np.asarray(decision_open_time_ms, dtype=np.int64) + TIMEFRAME_MS[decision_tf]


def label_candidates(
    open_time_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    entry_time_ms: np.ndarray,
    rules: ExitRules,
) -> TradeLabels:
    """Label candidates over a 1m series; ``entry_time_ms`` is when each decision was made.

    The entry bar is the first 1m bar whose open time is at or after ``entry_time_ms`` (use
    :func:`entry_times_for` to turn decision-bar open times into entry times). Raises
    :class:`LabelInputError` for unsorted times, mismatched lengths or non-finite prices.
    """
    t = np.ascontiguousarray(open_time_ms, dtype=np.int64)
    cols = [np.ascontiguousarray(a, dtype=np.float64) for a in (open_, high, low, close)]
    if any(len(c) != len(t) for c in cols):
        raise LabelInputError("open_time_ms, open, high, low and close must have the same length")
    if len(t) > 1 and np.any(np.diff(t) <= 0):
        raise LabelInputError("open_time_ms must be strictly increasing")
    if len(t) and (not all(np.isfinite(c).all() for c in cols) or (cols[2] <= 0).any()):
        raise LabelInputError("prices must be finite and positive")
    if len(t) and np.any(cols[1] < cols[2]):
        raise LabelInputError("a bar's high is below its low")
    wanted = np.ascontiguousarray(entry_time_ms, dtype=np.int64)
    idx = np.searchsorted(t, wanted, side="left").astype(np.int64)
    idx[idx >= len(t)] = -1
    entry_price, exit_time, exit_price, gross, net, reason = label_trades_nb(
        t, *cols, idx, rules.stop_pct, rules.take_pct, rules.trailing_pct,
        rules.max_hold_minutes, rules.commission_pct, rules.slippage_pct,
    )  # fmt: skip
    entry_time = np.where(idx >= 0, t[np.maximum(idx, 0)] if len(t) else wanted, wanted)
    return TradeLabels(
        entry_index=idx,
        entry_time_ms=entry_time.astype(np.int64),
        entry_price=entry_price,
        exit_time_ms=exit_time,
        exit_price=exit_price,
        gross_pct=gross,
        net_pct=net,
        reason=reason,
        complete=reason != EXIT_NONE,
    )
