"""The paper exchange's view of one brain intent: a validated, typed copy of an INTENT_DTYPE record.

The ring carries raw numpy records; anything that reaches the paper exchange has passed through
``PaperIntent`` first, so a corrupt or hostile record is refused with a message naming the field
instead of opening a position of NaN quantity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aegis.records import INTENT_DTYPE, N_FEATURES, SIDE_BUY, SIDE_SELL


class InvalidIntent(ValueError):
    """An intent record cannot be traded; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class PaperIntent:
    """One entry order the brain asks for: buy ``notional`` of quote asset on ``symbol_id``.

    AEGIS trades spot longs only; ``stop_pct``/``take_pct`` are distances from the entry price in
    percent. ``features`` is the 12-value snapshot the model saw, kept with the trade so that the
    brain can learn from it later.
    """

    intent_id: int
    symbol_id: int
    decision_time_ms: int
    notional: float
    stop_pct: float
    take_pct: float
    predicted_return_pct: float = 0.0
    confidence: float = 0.0
    model_version: int = 0
    features: tuple[float, ...] = (0.0,) * N_FEATURES
    recv_ns: int = 0

    def __post_init__(self) -> None:
        if self.intent_id <= 0:
            raise InvalidIntent(f"intent_id: {self.intent_id!r} must be a positive id")
        if self.symbol_id < 0:
            raise InvalidIntent(f"symbol_id: {self.symbol_id!r} must not be negative")
        if not (math.isfinite(self.notional) and self.notional > 0.0):
            raise InvalidIntent(f"notional: {self.notional!r} must be a positive finite amount")
        if not (math.isfinite(self.stop_pct) and 0.0 < self.stop_pct < 100.0):
            raise InvalidIntent(f"stop_pct: {self.stop_pct!r} must be in (0, 100)")
        if not (math.isfinite(self.take_pct) and self.take_pct > 0.0):
            raise InvalidIntent(f"take_pct: {self.take_pct!r} must be positive and finite")
        if len(self.features) != N_FEATURES:
            raise InvalidIntent(f"features: {len(self.features)} values, expected {N_FEATURES}")

    @classmethod
    def from_record(cls, rec: np.void | np.ndarray) -> PaperIntent:
        """Build from one INTENT_DTYPE record; raise ``InvalidIntent`` for an untradeable one."""
        return cls.from_row(np.asarray(rec).item())

    @classmethod
    def from_row(cls, row: tuple) -> PaperIntent:
        """``from_record`` of a record as a tuple: ``records.tolist()`` reads a whole ring batch
        in one call, where reading each field of each record cost ~5 µs an intent."""
        (intent_id, decision_time_ms, recv_ns, _publish_ns, symbol_id, side, notional, stop_pct,
         take_pct, predicted, confidence, model_version, features) = row  # fmt: skip
        if side == SIDE_SELL:
            raise InvalidIntent("side: SELL intents are not supported (AEGIS trades spot longs)")
        if side != SIDE_BUY:
            raise InvalidIntent(f"side: {side!r} is not SIDE_BUY ({SIDE_BUY})")
        return cls(intent_id, symbol_id, decision_time_ms, notional, stop_pct, take_pct,
                   predicted, confidence, model_version, tuple(features.tolist()), recv_ns)  # fmt: skip


if INTENT_DTYPE.names != (
    "intent_id", "decision_time_ms", "recv_ns", "publish_ns", "symbol_id", "side", "notional",
    "stop_pct", "take_pct", "predicted_return_pct", "confidence", "model_version", "features",
):  # fmt: skip
    raise ImportError("INTENT_DTYPE changed: update PaperIntent.from_row's field order")
