"""BarSequencer: closed bars once and in order per symbol, holes filled from REST, never invented."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.binance.sequencer import DUPLICATE, HELD, PUBLISHED, UNKNOWN, BarSequencer
from aegis.records import BAR_CLOSED, BAR_DTYPE

M = 60_000
T0 = 1_679_097_600_000


def bar(sid: int, minute: int, close: float = 1.0) -> np.ndarray:
    rec = np.zeros(1, dtype=BAR_DTYPE)
    rec[0]["symbol_id"] = sid
    rec[0]["open_time_ms"] = T0 + minute * M
    rec[0]["flags"] = BAR_CLOSED
    rec[0]["close"] = close
    return rec


def bars(sid: int, minutes) -> np.ndarray:
    return np.concatenate([bar(sid, m) for m in minutes]) if minutes else np.zeros(0, BAR_DTYPE)


class Recorder:
    def __init__(self, capacity: int = 8) -> None:
        self.out: list[tuple[int, int]] = []
        self.requests: list[int] = []
        self.seq = BarSequencer(capacity, M, self.publish, self.requests.append)

    def publish(self, record: np.ndarray) -> None:
        self.out.append((int(record[0]["symbol_id"]), (int(record[0]["open_time_ms"]) - T0) // M))

    def minutes(self, sid: int = 1) -> list[int]:
        return [m for s, m in self.out if s == sid]


def test_sequencer_contiguous_bars_publish_at_once_and_repeats_are_dropped():
    r = Recorder()
    assert [r.seq.offer_closed(bar(1, m)) for m in (0, 1, 1, 2, 0)] == [
        PUBLISHED, PUBLISHED, DUPLICATE, PUBLISHED, DUPLICATE,
    ]  # fmt: skip
    assert r.minutes() == [0, 1, 2] and r.seq.duplicates == 2 and r.requests == []


def test_sequencer_jump_holds_the_bar_and_requests_a_backfill_once():
    r = Recorder()
    r.seq.offer_closed(bar(1, 0))
    assert r.seq.offer_closed(bar(1, 3)) == HELD
    assert r.seq.offer_closed(bar(1, 4)) == HELD
    assert r.seq.offer_closed(bar(1, 1)) == HELD  # gated: even the missing one waits for the fill
    assert r.minutes() == [0] and r.requests == [1] and r.seq.is_gated(1)
    assert r.seq.fill(1, bars(1, [1, 2]), through_ms=T0 + 5 * M) == 4
    assert r.minutes() == [0, 1, 2, 3, 4] and not r.seq.is_gated(1) and r.seq.held_count() == 0


def test_sequencer_hole_rest_cannot_fill_is_a_real_gap_and_is_jumped_over():
    r = Recorder()
    r.seq.offer_closed(bar(1, 0))
    r.seq.offer_closed(bar(1, 80))  # e.g. Binance's own outage: no bars 1..79 exist
    r.seq.fill(1, bars(1, []), through_ms=T0 + 81 * M)
    assert r.minutes() == [0, 80] and not r.seq.is_gated(1)


def test_sequencer_fetch_older_than_a_held_bar_keeps_it_held_and_asks_again():
    # The fetch ran before bar 5 closed: REST could not know bars 3..4, so the hole is not real.
    r = Recorder()
    r.seq.offer_closed(bar(1, 0))
    r.seq.offer_closed(bar(1, 5))
    r.seq.fill(1, bars(1, [1, 2]), through_ms=T0 + 3 * M)
    assert r.minutes() == [0, 1, 2] and r.seq.is_gated(1) and r.requests == [1, 1]
    r.seq.fill(1, bars(1, [3, 4]), through_ms=T0 + 6 * M)
    assert r.minutes() == [0, 1, 2, 3, 4, 5] and not r.seq.is_gated(1)


def test_sequencer_gate_after_reconnect_holds_live_bars_until_the_fill():
    r = Recorder()
    r.seq.offer_closed(bar(1, 0))
    r.seq.gate(1)
    r.seq.gate(1)  # idempotent: one request
    assert r.seq.offer_closed(bar(1, 3)) == HELD
    r.seq.fill(1, bars(1, [1, 2, 3]), through_ms=T0 + 4 * M)
    assert r.minutes() == [0, 1, 2, 3] and r.requests == [1] and r.seq.duplicates == 1


def test_sequencer_unknown_start_begins_at_the_first_filled_bar():
    r = Recorder()
    assert r.seq.next_open(2) == UNKNOWN
    r.seq.gate(2)
    r.seq.offer_closed(bar(2, 10))
    r.seq.fill(2, bars(2, [7, 8, 9]), through_ms=T0 + 10 * M)
    assert r.minutes(2) == [7, 8, 9, 10]


def test_sequencer_start_at_skips_what_is_already_stored():
    r = Recorder()
    r.seq.start_at(1, T0 + 5 * M)
    r.seq.fill(1, bars(1, [3, 4, 5, 6]), through_ms=None)
    assert r.minutes() == [5, 6]


def test_sequencer_updates_are_conflated_to_the_latest_per_symbol_and_never_go_back():
    r = Recorder()
    for minute, close in ((0, 1.0), (0, 2.0), (1, 3.0), (0, 9.0)):
        rec = bar(1, minute, close)
        rec[0]["flags"] = 0
        r.seq.offer_update(rec)
    rec = bar(3, 0, 5.0)
    rec[0]["flags"] = 0
    r.seq.offer_update(rec)
    updates = r.seq.take_updates()
    assert updates["symbol_id"].tolist() == [1, 3] and updates["close"].tolist() == [3.0, 5.0]
    assert len(r.seq.take_updates()) == 0


def test_sequencer_grow_makes_room_for_new_symbol_ids():
    r = Recorder(capacity=2)
    with pytest.raises(IndexError):
        r.seq.offer_closed(bar(5, 0))
    r.seq.grow(8)
    assert r.seq.offer_closed(bar(5, 0)) == PUBLISHED


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=60),
    st.lists(st.integers(0, 2), min_size=1, max_size=60),
)
def test_sequencer_any_arrival_order_with_fills_publishes_each_bar_once_in_order(arrivals, actions):
    """Whatever the stream delivers (repeats, reordering, holes), after a complete fill every
    bar up to the newest delivered one is out exactly once, in order."""
    r = Recorder()
    r.seq.start_at(1, T0)
    for minute, action in zip(arrivals, actions * len(arrivals), strict=False):
        r.seq.offer_closed(bar(1, minute))
        if action == 0 and r.seq.is_gated(1):
            # A fetch authoritative for what has closed so far: bars up to the newest seen.
            newest = max(arrivals[: arrivals.index(minute) + 1])
            r.seq.fill(1, bars(1, list(range(newest + 1))), through_ms=T0 + (newest + 1) * M)
    r.seq.fill(1, bars(1, list(range(max(arrivals) + 1))), through_ms=T0 + (max(arrivals) + 1) * M)
    assert r.minutes() == list(range(max(arrivals) + 1))
