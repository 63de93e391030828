"""``MarketDataWriter``: validated bars into ``market_data`` through the durable writer.

Validation happens here, before the database; the good rows of a batch are always written,
the bad ones are counted per reason and reported (one log line per batch, with the counts and
the first message). Writing is ``DurableWriter``'s job: COPY into a temp table, then
``INSERT … ON CONFLICT DO NOTHING``, so re-sending a bar (a reconnect, a backfill) is harmless.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aegis.store.bars import (
    BarBatch,
    BarRejection,
    RejectReason,
    validate_bars,
    validate_symbol_bars,
)
from aegis.store.durable import DurableWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BarWriteResult:
    """What happened to one batch: rows accepted for writing and rows rejected (and why)."""

    accepted: int
    rejections: tuple[BarRejection, ...]

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def counts(self) -> dict[RejectReason, int]:
        return dict(Counter(r.reason for r in self.rejections))


class MarketDataWriter:
    """Validate bar batches and hand the good rows to a ``DurableWriter``."""

    def __init__(self, writer: DurableWriter) -> None:
        self._writer = writer
        self.rejected: Counter[RejectReason] = Counter()
        self.accepted = 0

    def write(self, batch: BarBatch, *, now_ms: int | None = None) -> BarWriteResult:
        """Validate ``batch`` and queue its good bars; never blocks on the database."""
        checked = validate_bars(batch, now_ms=now_ms)
        if checked.rows:
            self._writer.submit("market_data", checked.rows)
        return self._account(f"{batch.symbol} {batch.timeframe}", len(checked.rows),
                             checked.rejections)  # fmt: skip

    def write_symbols(
        self,
        symbol_of: Mapping[int, str],
        timeframe: str,
        bars: np.ndarray,
        *,
        now_ms: int | None = None,
    ) -> BarWriteResult:
        """Like ``write`` for bars of many symbols, named by ``symbol_of[bar["symbol_id"]]``."""
        checked = validate_symbol_bars(symbol_of, timeframe, bars, now_ms=now_ms)
        if checked.rows:
            self._writer.submit("market_data", checked.rows)
        return self._account(f"{timeframe} ({len(bars)} bars of many symbols)", len(checked.rows),
                             checked.rejections)  # fmt: skip

    def write_rows(
        self,
        symbol: str,
        timeframe: str,
        rows: Iterable[Sequence[object]],
        *,
        now_ms: int | None = None,
    ) -> BarWriteResult:
        """Like ``write`` for plain tuples ``(open_time_ms, open, high, low, close, volume, …)``."""
        batch, not_numbers = BarBatch.from_rows(symbol, timeframe, rows)
        checked = validate_bars(batch, now_ms=now_ms)
        if checked.rows:
            self._writer.submit("market_data", checked.rows)
        rejections = tuple(sorted(not_numbers + checked.rejections, key=lambda r: r.index))
        return self._account(f"{batch.symbol} {batch.timeframe}", len(checked.rows), rejections)

    def _account(
        self, label: str, accepted: int, rejections: tuple[BarRejection, ...]
    ) -> BarWriteResult:
        result = BarWriteResult(accepted, rejections)
        self.accepted += accepted
        if rejections:
            counts = result.counts()
            self.rejected.update(counts)
            summary = ", ".join(f"{k.value}={v}" for k, v in sorted(counts.items()))
            log.warning(
                "market_data %s: rejected %d of %d bars (%s); first: %s",
                label,
                len(rejections),
                accepted + len(rejections),
                summary,
                rejections[0].message,
            )
        return result
