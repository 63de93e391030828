"""The per-frame hot path: wire bytes → validated BAR_DTYPE record → sequencer.

``KlineIntake.on_frame`` is what a stream connection calls for a frame it receives alone, and
``on_frames`` for the frames of one socket read (a close burst; see its docs). A frame is parsed
once into a preallocated one-record array (``KlineParser.parse_into``), then a
closed bar goes to ``BarSequencer.offer_closed`` and an in-progress one to ``offer_update``.
A frame that fails validation is counted by reason in ``FrameRejects`` and logged with a
sample at most once per reason per ``log_every_s``; it never raises and never reaches a ring.

The intake also keeps ``server_now_ms``, the latest server time the stream has proved (an
update of bar t proves the server clock reached t, a closing update proves t + interval). The
backfill uses it to tell closed REST rows from the one still in progress, without trusting
the local clock against a server whose time may run differently (a replay, a skewed host).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from aegis.binance.kline_layout import CLOSED, FALLBACK
from aegis.binance.protocol import KlineParser, MalformedFrame
from aegis.binance.sequencer import BarSequencer
from aegis.records import BAR_CLOSED, BAR_DTYPE

log = logging.getLogger(__name__)

_SHUTDOWN_MARK = b'"serverShutdown"'


class FrameRejects:
    """Bad frames counted per reason; one log line with a sample per reason per period."""

    def __init__(self, log_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.counts: Counter[str] = Counter()
        self._log_every = log_every_s
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, exc: MalformedFrame) -> None:
        """Count one rejected frame; log it unless this reason was logged recently."""
        reason = exc.reason
        self.counts[reason] += 1
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is not None and now - last < self._log_every:
            self._unlogged[reason] += 1
            return
        self._last_logged[reason] = now
        skipped = self._unlogged.pop(reason, 0)
        sample = exc.sample[:200] if exc.sample is not None else b""
        log.warning(
            "rejected kline frame: %s (%d so far, %d since last line); sample %r",
            reason,
            self.counts[reason],
            skipped,
            sample,
        )


class KlineIntake:
    """Parse frames of every connection into records and hand them to the sequencer."""

    def __init__(
        self,
        parser: KlineParser,
        sequencer: BarSequencer,
        rejects: FrameRejects | None = None,
    ) -> None:
        self._parse_into = parser.parse_into
        self._parse_many = parser.parse_many
        self._sequencer = sequencer
        self.rejects = rejects or FrameRejects()
        self._record = np.zeros(1, dtype=BAR_DTYPE)
        # Field views of the one record: reading a scalar from them avoids building a np.void.
        self._flags = self._record["flags"]
        self._open = self._record["open_time_ms"]
        self._sid = self._record["symbol_id"]
        self._offer_closed = sequencer.offer_closed
        self._offer_closed_many = sequencer.offer_closed_many
        self._offer_update = sequencer.offer_update
        self._offer_updates = sequencer.offer_updates
        self.server_now_ms = 0
        self.frames = 0
        self.control_replies = 0
        self.shutdown_notices = 0

    def on_frame(self, frame: bytes, recv_ns: int) -> bool:
        """Handle one frame; return True when the server announced it will close the connection."""
        record = self._record
        try:
            interval_ms = self._parse_into(frame, record, 0, recv_ns)
        except MalformedFrame as exc:
            if _SHUTDOWN_MARK in frame:  # not a kline: Binance is about to close the connection
                self.shutdown_notices += 1
                return True
            self.rejects.record(exc)
            return False
        if interval_ms is None:
            self.control_replies += 1
            return False
        self.frames += 1
        open_ms = int(self._open[0])
        if self._flags[0] & BAR_CLOSED:
            proved = open_ms + interval_ms
            self._offer_closed(record, int(self._sid[0]), open_ms)
        else:
            proved = open_ms
            self._offer_update(record, int(self._sid[0]), open_ms)
        if proved > self.server_now_ms:
            self.server_now_ms = proved
        return False

    def on_frames(self, buf: bytes, starts: list[int], ends: list[int], recv_ns: int) -> bool:
        """Handle the frames ``buf[starts[i]:ends[i]]`` of one socket read, in order; return
        True when one announced a server shutdown.

        One compiled pass parses them all (``KlineParser.parse_many``); each run of closed bars
        goes to the sequencer in one call, so the ring publishes the run at once; so does each
        run of in-progress bars. A frame that pass is not sure of takes ``on_frame``, in its
        place in the order.
        """
        records, status, interval_ms = self._parse_many(
            buf, np.array(starts, np.int64), np.array(ends, np.int64), recv_ns
        )
        shutdown = False
        status_of = status.tolist()
        opens = records["open_time_ms"].tolist()
        n = len(status_of)
        i = 0
        while i < n:
            kind = status_of[i]
            if kind == FALLBACK:
                shutdown = self.on_frame(buf[starts[i] : ends[i]], recv_ns) or shutdown
                i += 1
                continue
            j = i + 1
            while j < n and status_of[j] == kind:
                j += 1
            if kind == CLOSED:
                self._offer_closed_many(records[i:j])
                proved = int((records["open_time_ms"][i:j] + interval_ms[i:j]).max())
            else:
                self._offer_updates(records[i:j])
                proved = max(opens[i:j])
            self.frames += j - i
            i = j
            if proved > self.server_now_ms:
                self.server_now_ms = proved
        return shutdown
