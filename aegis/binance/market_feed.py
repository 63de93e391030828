"""The market-data pipeline of one feed process, without its outputs: streams → intake →
sequencer ← backfill.

``MarketFeed`` wires the parts for a universe and calls ``on_closed(record)`` (a one-record
BAR_DTYPE array) exactly once per (symbol, open time), in time order per symbol, for every closed
bar — or, given ``on_closed_many``, hands it the bars of one socket read together; the caller
decides where records go (ring, database, cache). ``take_updates()`` returns the
conflated in-progress bars for callers that publish them.

Start-up is local first: ``start(last_stored)`` takes the open time of the newest bar the
database already holds per symbol; each symbol resumes right after it and is backfilled from
there (or ``initial_history_bars`` back when nothing is stored). After a lost connection comes
back, only the symbols whose next expected bar has provably closed meanwhile are gated and
backfilled; anything else missing shows up as a jump at the next closed bar and is filled then.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from aegis.binance.backfill import KlineBackfill
from aegis.binance.intake import FrameRejects, KlineIntake
from aegis.binance.protocol import INTERVAL_MS, KlineParser
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sequencer import UNKNOWN, BarSequencer
from aegis.binance.streams import KlineStreams, StreamSettings
from aegis.binance.ws_limits import ConnectLimiter


@dataclass(frozen=True)
class FeedOptions:
    """Tuning of the pipeline (defaults suit real Binance)."""

    interval: str = "1m"
    streams: StreamSettings = field(default_factory=StreamSettings)
    initial_history_bars: int = 1000
    """Bars fetched for a symbol the database knows nothing about."""
    backfill_workers: int = 4
    backfill_retry_base_s: float = 1.0
    backfill_retry_cap_s: float = 60.0
    reject_log_every_s: float = 10.0


class MarketFeed:
    """Streams, intake, sequencer and backfill of one universe."""

    def __init__(
        self,
        ws_url: str,
        rest: BinanceRestClient,
        symbol_ids: Mapping[str, int],
        on_closed: Callable[[np.ndarray], None],
        *,
        on_closed_many: Callable[[np.ndarray], None] | None = None,
        options: FeedOptions | None = None,
        limiter: ConnectLimiter | None = None,
        age_clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not symbol_ids:
            raise ValueError("the universe is empty")
        self.options = opts = options or FeedOptions()
        self.symbol_ids = {s.upper(): int(i) for s, i in symbol_ids.items()}
        self._symbols = {i: s for s, i in self.symbol_ids.items()}
        self.interval_ms = INTERVAL_MS[opts.interval]
        rng = rng or random.Random()
        self.parser = KlineParser(self.symbol_ids, (opts.interval,))
        self.sequencer = BarSequencer(
            max(self._symbols) + 1, self.interval_ms, on_closed, self._request_backfill,
            publish_many=on_closed_many,
        )  # fmt: skip
        self.intake = KlineIntake(
            self.parser, self.sequencer, FrameRejects(opts.reject_log_every_s)
        )
        self.backfill = KlineBackfill(
            rest, self.parser, self.sequencer, self._symbols.__getitem__, self._server_now,
            interval=opts.interval, initial_history_bars=opts.initial_history_bars,
            workers=opts.backfill_workers, retry_base_s=opts.backfill_retry_base_s,
            retry_cap_s=opts.backfill_retry_cap_s, rng=random.Random(rng.random()),
        )  # fmt: skip
        self.streams = KlineStreams(
            ws_url, list(self.symbol_ids), self.intake.on_frame, self._on_reconnect,
            on_frames=self.intake.on_frames, interval=opts.interval, settings=opts.streams,
            limiter=limiter,
            age_clock=age_clock, rng=random.Random(rng.random()),
        )  # fmt: skip
        self.reconnect_gates = 0

    def _server_now(self) -> int:
        return self.intake.server_now_ms

    def _request_backfill(self, symbol_id: int) -> None:
        self.backfill.request(symbol_id)

    def _on_reconnect(self, symbols: tuple[str, ...]) -> None:
        now = self.intake.server_now_ms
        for symbol in symbols:
            sid = self.symbol_ids.get(symbol)
            if sid is None:
                continue
            expected = self.sequencer.next_open(sid)
            # Gate only where a bar provably closed during the hole: the rest costs no request.
            if expected == UNKNOWN or expected + self.interval_ms <= now:
                self.reconnect_gates += 1
                self.sequencer.gate(sid)

    def start(self, last_stored: Mapping[str, int] | None = None) -> None:
        """Start backfill workers and streams; ``last_stored``: symbol → newest stored open time."""
        last_stored = last_stored or {}
        for symbol, sid in self.symbol_ids.items():
            if symbol in last_stored:
                self.sequencer.start_at(sid, int(last_stored[symbol]) + self.interval_ms)
            self.sequencer.gate(sid)
        self.backfill.start()
        self.streams.start()

    def take_updates(self) -> np.ndarray:
        """In-progress bars changed since the last call (conflated: the latest per symbol)."""
        return self.sequencer.take_updates()

    async def close(self) -> None:
        """Stop streams and backfill (what was published stays published)."""
        await self.streams.close()
        await self.backfill.close()

    def stats(self) -> dict[str, object]:
        """Counters for logs, metrics and tests."""
        seq = self.sequencer
        return {
            "frames": self.intake.frames,
            "rejected": dict(self.intake.rejects.counts),
            "control_replies": self.intake.control_replies,
            "published": seq.published,
            "duplicates": seq.duplicates,
            "gaps": seq.gaps,
            "held": seq.held_count(),
            "reconnect_gates": self.reconnect_gates,
            "backfill_requests": self.backfill.requests_sent,
            "backfill_bars": self.backfill.bars_filled,
            "backfill_failures": dict(self.backfill.failures),
            **self.streams.stats(),
        }
