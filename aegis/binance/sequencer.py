"""Closed bars in time order per symbol, exactly once; in-progress bars conflated per symbol.

Bars reach the feed from two sources that overlap and race: live stream frames (possibly
duplicated, reordered, or from two connections at once while one replaces the other) and REST
klines fetched to fill a gap. ``BarSequencer`` is the one place that decides what goes out:

* each symbol has a *next open time*; a closed bar opening earlier is a duplicate and dropped;
  one opening exactly then is published at once (the hot path);
* a closed bar opening *later* means bars are missing: it is held, the symbol is *gated* and a
  backfill of the hole is requested (``request_backfill(symbol_id)``), unless one is pending;
* ``fill(symbol_id, bars)`` (REST, authoritative up to the time it was fetched) publishes the
  missing bars in order, then releases the held ones in order and opens the gate. A hole that
  REST does not fill either is a real exchange gap: the sequence jumps over it, never invents;
* ``gate(symbol_id)`` holds live bars after a reconnect until the backfill has landed, so a bar
  that closed while disconnected is never overtaken by a later live one.

In-progress updates only keep the latest record per symbol (``take_updates``), never older than
what is stored, so an overlapping old connection cannot move a symbol back in time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aegis.records import BAR_DTYPE

UNKNOWN = -1

# offer_closed outcomes
PUBLISHED = 0
DUPLICATE = 1
HELD = 2


class BarSequencer:
    """Sequence closed bars of symbols ``0 < id < capacity`` at one interval."""

    def __init__(
        self,
        capacity: int,
        interval_ms: int,
        publish: Callable[[np.ndarray], None],
        request_backfill: Callable[[int], None],
        publish_many: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        """``publish`` gets a one-record BAR_DTYPE array (copy it to keep it); ``publish_many``,
        when given, the bars of one ``offer_closed_many`` call that go out, in order."""
        self.interval_ms = interval_ms
        self._publish = publish
        self._publish_many = publish_many
        self._request = request_backfill
        # Python lists, not numpy arrays: the hot path reads single items, where lists are
        # several times faster than numpy scalar indexing.
        self._next: list[int] = [UNKNOWN] * capacity
        self._gated: list[bool] = [False] * capacity
        self._held: dict[int, dict[int, np.ndarray]] = {}
        self._latest = np.zeros(capacity, dtype=BAR_DTYPE)
        self._latest_words = self._latest.view(np.uint64).reshape(capacity, -1)
        self._latest_open: list[int] = [UNKNOWN] * capacity
        self._dirty: set[int] = set()
        self.published = 0
        self.duplicates = 0
        self.gaps = 0

    @property
    def capacity(self) -> int:
        return len(self._next)

    def grow(self, capacity: int) -> None:
        """Make room for symbol ids below ``capacity`` (a universe refresh added symbols)."""
        extra = capacity - len(self._next)
        if extra <= 0:
            return
        self._next.extend([UNKNOWN] * extra)
        self._gated.extend([False] * extra)
        self._latest_open.extend([UNKNOWN] * extra)
        self._latest = np.concatenate([self._latest, np.zeros(extra, dtype=BAR_DTYPE)])
        self._latest_words = self._latest.view(np.uint64).reshape(capacity, -1)

    # -- state -------------------------------------------------------------------------------

    def next_open(self, symbol_id: int) -> int:
        """Open time of the next closed bar to publish (``UNKNOWN`` before the first)."""
        return self._next[symbol_id]

    def start_at(self, symbol_id: int, next_open_ms: int) -> None:
        """Begin ``symbol_id`` at ``next_open_ms`` (e.g. after the last bar already stored)."""
        self._next[symbol_id] = int(next_open_ms)

    def is_gated(self, symbol_id: int) -> bool:
        return self._gated[symbol_id]

    def held_count(self, symbol_id: int | None = None) -> int:
        """Closed bars waiting for a backfill (of one symbol, or of all)."""
        if symbol_id is not None:
            return len(self._held.get(symbol_id, ()))
        return sum(len(h) for h in self._held.values())

    def gate(self, symbol_id: int) -> None:
        """Hold live closed bars of ``symbol_id`` until the next ``fill``; request that fill."""
        if not self._gated[symbol_id]:
            self._gated[symbol_id] = True
            self._request(symbol_id)

    # -- closed bars -------------------------------------------------------------------------

    def offer_closed(
        self, record: np.ndarray, symbol_id: int | None = None, open_ms: int | None = None
    ) -> int:
        """Take one closed bar (a one-record array); return PUBLISHED, DUPLICATE or HELD.

        ``symbol_id`` and ``open_ms`` may be passed when the caller has them already.
        """
        if symbol_id is None or open_ms is None:
            symbol_id = int(record[0]["symbol_id"])
            open_ms = int(record[0]["open_time_ms"])
        sid = symbol_id
        expected = self._next[sid]
        if open_ms < expected:
            self.duplicates += 1
            return DUPLICATE
        if self._gated[sid]:
            return self._hold(sid, open_ms, record)
        if expected != UNKNOWN and open_ms > expected:
            self.gaps += 1
            self._hold(sid, open_ms, record)
            self._gated[sid] = True
            self._request(sid)
            return HELD
        self._emit(sid, open_ms, record)
        return PUBLISHED

    def offer_closed_many(self, records: np.ndarray) -> int:
        """``offer_closed`` for each record of a BAR_DTYPE array, in order; the bars that go out
        are published together (``publish_many``). Return how many went out."""
        sids = records["symbol_id"].tolist()
        opens = records["open_time_ms"].tolist()
        out: list[int] = []
        nxt, gated, interval = self._next, self._gated, self.interval_ms
        for j, sid in enumerate(sids):
            open_ms = opens[j]
            expected = nxt[sid]
            if not gated[sid] and (open_ms == expected or expected == UNKNOWN):
                nxt[sid] = open_ms + interval  # offer_closed's hot path, published below
                out.append(j)
            else:  # a duplicate, a held bar or a gap: offer_closed publishes none of these
                self.offer_closed(records[j : j + 1], sid, open_ms)
        if out:
            self.published += len(out)
            batch = records if len(out) == len(records) else records[out]
            if self._publish_many is not None:
                self._publish_many(batch)
            else:
                for j in range(len(batch)):
                    self._publish(batch[j : j + 1])
        return len(out)

    def fill(self, symbol_id: int, bars: np.ndarray, through_ms: int | None = None) -> int:
        """Publish backfilled closed ``bars`` (sorted, one symbol), then the held ones it frees.

        ``through_ms``: the fetch is authoritative for every bar with ``open + interval <=
        through_ms`` (None: for everything). A held bar is released when it follows on, or when
        the hole before it lies within that range (then the hole is real); otherwise it stays
        held, the symbol stays gated and another backfill is requested. Return records sent.
        """
        out = 0
        for i in range(len(bars)):
            open_ms = int(bars[i]["open_time_ms"])
            if open_ms < self._next[symbol_id]:
                continue
            self._emit(symbol_id, open_ms, bars[i : i + 1])
            out += 1
        if symbol_id in self._held:
            out += self._release(symbol_id, through_ms)
        if symbol_id in self._held:
            self._request(symbol_id)  # a bar closed after this fetch is still missing
        else:
            self._gated[symbol_id] = False
        return out

    def _hold(self, sid: int, open_ms: int, record: np.ndarray) -> int:
        held = self._held.setdefault(sid, {})
        if open_ms in held:
            self.duplicates += 1
            return DUPLICATE
        held[open_ms] = record.copy()
        return HELD

    def _emit(self, sid: int, open_ms: int, record: np.ndarray) -> None:
        self._publish(record)
        self._next[sid] = open_ms + self.interval_ms
        self.published += 1

    def _release(self, sid: int, through_ms: int | None) -> int:
        held = self._held[sid]
        out = 0
        for open_ms in sorted(held):
            expected = self._next[sid]
            if open_ms < expected:
                del held[open_ms]
                self.duplicates += 1
                continue
            # The hole before this bar ends with the bar opening at open_ms - interval, which
            # closed at open_ms: if the fetch covered that, REST has nothing there — a real gap.
            if open_ms != expected and through_ms is not None and open_ms > through_ms:
                break
            self._emit(sid, open_ms, held.pop(open_ms))
            out += 1
        if not held:
            del self._held[sid]
        return out

    # -- in-progress bars ----------------------------------------------------------------------

    def offer_update(
        self, record: np.ndarray, symbol_id: int | None = None, open_ms: int | None = None
    ) -> None:
        """Keep the latest in-progress bar of its symbol (an older one is ignored)."""
        if symbol_id is None or open_ms is None:
            symbol_id = int(record[0]["symbol_id"])
            open_ms = int(record[0]["open_time_ms"])
        if open_ms >= self._latest_open[symbol_id]:
            self._latest_open[symbol_id] = open_ms
            # Copy as 8-byte words: one row assignment, no per-field work.
            self._latest_words[symbol_id] = record.view(np.uint64)
            self._dirty.add(symbol_id)

    def offer_updates(self, records: np.ndarray) -> None:
        """``offer_update`` for each record of a BAR_DTYPE array, in order (one row copied per
        symbol: the last one kept)."""
        latest_open = self._latest_open
        kept: dict[int, int] = {}
        for j, (sid, open_ms) in enumerate(
            zip(records["symbol_id"].tolist(), records["open_time_ms"].tolist(), strict=True)
        ):
            if open_ms >= latest_open[sid]:
                latest_open[sid] = open_ms
                kept[sid] = j
        if kept:
            words = records.view(np.uint64).reshape(len(records), -1)
            for sid, j in kept.items():
                self._latest_words[sid] = words[j]
            self._dirty.update(kept)

    def take_updates(self) -> np.ndarray:
        """The in-progress bars changed since the last call (a new array; may be empty)."""
        ids = np.fromiter(sorted(self._dirty), dtype=np.int64, count=len(self._dirty))
        self._dirty.clear()
        return self._latest[ids]
