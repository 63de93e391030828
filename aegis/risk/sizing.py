"""Position sizing from total account equity, vectorised over every candidate of a decision bar.

Three selectable methods (``Settings.sizing``):

- ``fixed_fractional``: risk a fixed share of equity on the stop:
  ``notional = equity × risk% ÷ stop%`` (a stop-out then loses ``risk%`` of equity before fees).
- ``kelly``: fractional Kelly on the binary outcome the exit rules make (lose ``stop%`` or win
  ``take%`` of the position): ``f = p − (1 − p) / b`` with ``b = take ÷ stop`` is the share of
  equity to put *at risk*, so ``notional = equity × kelly_fraction × f ÷ stop%``. ``p`` is the win
  probability (the model's held-out hit rate). Full Kelly is far too aggressive for estimated
  edges; the default is ¼ Kelly and the position caps below usually bind.
- ``atr``: the stop distance comes from volatility, ``stop% = atr_stop_multiple × ATR%``, the take
  keeps the configured take/stop ratio, and the notional is fixed-fractional on that stop.

Then the caps, in this order: one position ≤ ``max_position_pct`` of equity; a symbol's total
exposure ≤ ``max_symbol_exposure_pct`` of equity (existing exposure counts); at most
``max_open_positions`` concurrent positions, new slots going to the highest predicted returns.
A candidate on a symbol already held adds to that position and takes no new slot. The notional
is 0 when the edge is not positive (predicted net return ≤ 0 or NaN, Kelly ``f ≤ 0``), when the
stop distance is unusable, or when a cap is full. Every cap is linear in equity and slot
allocation does not depend on equity, so sizes never shrink when equity grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIZING_METHODS = ("fixed_fractional", "kelly", "atr")

# A stop closer than one basis point is inside the spread: no size can be derived from it.
MIN_STOP_PCT = 0.01


class SizingInputError(ValueError):
    """Sizing inputs are inconsistent (shapes, a negative equity, duplicate symbols)."""


@dataclass(frozen=True)
class SizingPolicy:
    method: str = "fixed_fractional"
    risk_per_trade_pct: float = 0.5
    kelly_fraction: float = 0.25
    atr_stop_multiple: float = 2.0
    max_position_pct: float = 10.0
    max_open_positions: int = 10
    max_symbol_exposure_pct: float = 10.0

    def __post_init__(self) -> None:
        if self.method not in SIZING_METHODS:
            raise SizingInputError(f"sizing method {self.method!r} is not one of {SIZING_METHODS}")
        if not 0 < self.risk_per_trade_pct <= 100:
            raise SizingInputError("risk_per_trade_pct must be in (0, 100]")
        if not 0 < self.kelly_fraction <= 1:
            raise SizingInputError("kelly_fraction must be in (0, 1]")
        if not self.atr_stop_multiple > 0:
            raise SizingInputError("atr_stop_multiple must be positive")
        if not 0 < self.max_position_pct <= 100 or not 0 < self.max_symbol_exposure_pct <= 100:
            raise SizingInputError("position and symbol caps must be in (0, 100]")
        if self.max_open_positions < 0:
            raise SizingInputError("max_open_positions must be >= 0")

    @classmethod
    def from_settings(cls, settings: object, atr_stop_multiple: float = 2.0) -> SizingPolicy:
        """Build from ``aegis.config.Settings``."""
        return cls(
            method=settings.sizing,
            risk_per_trade_pct=settings.risk_per_trade_pct,
            kelly_fraction=settings.kelly_fraction,
            atr_stop_multiple=atr_stop_multiple,
            max_position_pct=settings.max_position_pct,
            max_open_positions=settings.max_open_positions,
            max_symbol_exposure_pct=settings.max_symbol_exposure_pct,
        )


@dataclass(frozen=True)
class SizingResult:
    """Per candidate: quote notional to buy (0 = skip) and the stop/take it was sized for."""

    notional: np.ndarray
    stop_pct: np.ndarray
    take_pct: np.ndarray


def kelly_fraction_of_equity(
    win_prob: np.ndarray, stop_pct: np.ndarray, take_pct: np.ndarray
) -> np.ndarray:
    """Return full-Kelly ``f = p − (1 − p) / b`` with ``b = take / stop`` (may be negative)."""
    b = np.asarray(take_pct, dtype=np.float64) / np.asarray(stop_pct, dtype=np.float64)
    p = np.asarray(win_prob, dtype=np.float64)
    return p - (1.0 - p) / b


def size_positions(
    equity: float,
    predicted_return_pct: np.ndarray,
    symbol_id: np.ndarray,
    symbol_exposure: np.ndarray,
    open_positions: int,
    policy: SizingPolicy,
    stop_pct: float | np.ndarray = 1.0,
    take_pct: float | np.ndarray = 2.0,
    win_prob: float | np.ndarray = np.nan,
    atr_pct: float | np.ndarray = np.nan,
) -> SizingResult:
    """Size every candidate of one decision at once (one row per distinct symbol).

    ``symbol_exposure`` is the quote notional already held in each candidate's symbol;
    ``open_positions`` the number of positions open now. ``win_prob`` is needed by ``kelly``,
    ``atr_pct`` (ATR as % of price) by ``atr``.
    """
    pred = np.asarray(predicted_return_pct, dtype=np.float64)
    n = pred.shape[0]
    if pred.ndim != 1:
        raise SizingInputError("predicted_return_pct must be 1-d")
    ids = np.asarray(symbol_id)
    exposure = np.asarray(symbol_exposure, dtype=np.float64)
    if ids.shape != (n,) or exposure.shape != (n,):
        raise SizingInputError("symbol_id and symbol_exposure need one value per candidate")
    if n > 1 and len(set(ids.tolist())) != n:
        raise SizingInputError("one candidate per symbol per call")
    if not (math.isfinite(equity) and equity >= 0):
        raise SizingInputError(f"equity must be finite and >= 0, got {equity}")
    if not ((exposure >= 0.0) & (exposure < math.inf)).all():
        raise SizingInputError("symbol_exposure must be finite and >= 0")
    if open_positions < 0:
        raise SizingInputError("open_positions must be >= 0")
    # Most decisions size a handful of rows: with scalar exits, the per-row stop, take and risk
    # are one Python float each (the same IEEE operations numpy would repeat on every row).
    scalar = policy.method == "fixed_fractional" and all(
        isinstance(x, (int, float)) for x in (stop_pct, take_pct)
    )
    if scalar:
        stop_s, take_s = float(stop_pct), float(take_pct)
        stop, take = np.full(n, stop_s), np.full(n, take_s)
        usable = (math.isfinite(stop_s) and MIN_STOP_PCT <= stop_s < 100
                  and math.isfinite(take_s) and take_s > 0)  # fmt: skip
        edge = (pred > 0.0) & (pred < math.inf) & usable
        risk = equity * (policy.risk_per_trade_pct / 100.0) / (stop_s / 100.0) if usable else 0.0
        raw = np.where(edge, risk, 0.0)
    else:
        raw, edge, stop, take = _raw_sizes(equity, pred, policy, stop_pct, take_pct, win_prob,
                                           atr_pct)  # fmt: skip

    room = np.maximum(equity * policy.max_symbol_exposure_pct / 100.0 - exposure, 0.0)
    notional = np.minimum(np.minimum(raw, equity * policy.max_position_pct / 100.0), room)
    notional[~edge] = 0.0

    needs_slot = (notional > 0.0) & (exposure <= 0.0)
    slots = max(policy.max_open_positions - open_positions, 0)
    if np.count_nonzero(needs_slot) > slots:
        wanting = np.flatnonzero(needs_slot)
        # highest predicted return first; ties keep candidate order (stable sort)
        ranked = wanting[np.argsort(-pred[wanting], kind="stable")]
        notional[ranked[slots:]] = 0.0
    return SizingResult(notional=notional, stop_pct=stop, take_pct=take)


def _raw_sizes(equity, pred, policy, stop_pct, take_pct, win_prob, atr_pct):
    """Per-row (uncapped notional, edge, stop %, take %) when exits or risk vary by row."""
    n = len(pred)
    stop = np.broadcast_to(np.asarray(stop_pct, dtype=np.float64), (n,)).copy()
    take = np.broadcast_to(np.asarray(take_pct, dtype=np.float64), (n,)).copy()
    if policy.method == "atr":
        atr = np.broadcast_to(np.asarray(atr_pct, dtype=np.float64), (n,))
        ratio = take / stop
        stop = policy.atr_stop_multiple * atr
        take = stop * ratio
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        usable = (
            np.isfinite(stop)
            & (stop >= MIN_STOP_PCT)
            & (stop < 100)
            & np.isfinite(take)
            & (take > 0)
        )
        edge = np.isfinite(pred) & (pred > 0.0) & usable
        if policy.method == "kelly":
            p = np.broadcast_to(np.asarray(win_prob, dtype=np.float64), (n,))
            f = kelly_fraction_of_equity(p, stop, take)
            edge &= np.isfinite(f) & (f > 0.0)
            risk_share = policy.kelly_fraction * f
        else:
            risk_share = np.full(n, policy.risk_per_trade_pct / 100.0)
        raw = np.where(edge, equity * risk_share / (stop / 100.0), 0.0)
    return raw, edge, stop, take
