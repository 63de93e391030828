"""Numba kernel of ``BrainCore.on_bars``'s first pass: which bars of a ring batch go on, in order.

One compiled pass over the ``BAR_DTYPE`` records instead of some thirty NumPy calls: a brain
step's fixed cost is what a close burst pays once per ring batch, and a burst arrives in
several batches.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from aegis.ml.labels import MINUTE_MS

# Reasons a bar is dropped, named in the order of ``counts``.
DROP_REASONS = ("not_closed", "unknown_symbol", "bad_price", "misaligned", "already_seen")
NOT_CLOSED, UNKNOWN_SYMBOL, BAD_PRICE, MISALIGNED, ALREADY_SEEN = range(len(DROP_REASONS))


@njit(cache=True)
def select_bars_nb(bars, lut, last_t, closed_flag, out_t, out_idx, out_cols, out_recv, counts):
    """Write the bars to process into ``out_*`` sorted by (minute, symbol index); return how many.

    A bar goes on when it is flagged closed, its symbol id maps to an index in ``lut``, its
    prices are finite and positive and its volume finite, its open time is minute-aligned and
    after ``last_t`` of its symbol, and it is the first of its (symbol, minute) in the batch.
    ``counts[reason]`` gets how many were dropped for each reason (checked in that order).
    ``out_cols`` rows are open, high, low, close, volume.
    """
    n = bars.shape[0]
    counts[:] = 0
    keep = np.empty(n, np.int64)
    idx_of = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        b = bars[i]
        if (b.flags & closed_flag) == 0:
            counts[NOT_CLOSED] += 1
            continue
        sid = np.int64(b.symbol_id)
        s = lut[sid] if sid < lut.shape[0] else -1
        if s < 0:
            counts[UNKNOWN_SYMBOL] += 1
            continue
        o, h, lo, c = b.open, b.high, b.low, b.close
        if not (
            np.isfinite(o) and np.isfinite(h) and np.isfinite(lo) and np.isfinite(c)
            and o > 0 and h > 0 and lo > 0 and c > 0 and np.isfinite(b.volume)
        ):  # fmt: skip
            counts[BAD_PRICE] += 1
            continue
        if b.open_time_ms % MINUTE_MS != 0:
            counts[MISALIGNED] += 1
            continue
        keep[k] = i
        idx_of[k] = s
        k += 1
    if k == 0:
        return 0
    # Sort by (minute, symbol index); stable, so of two copies of a bar the first one leads.
    t0 = bars[keep[0]].open_time_ms
    for j in range(1, k):
        t0 = min(t0, bars[keep[j]].open_time_ms)
    width = np.int64(last_t.shape[0])
    key = np.empty(k, np.int64)
    ordered = True
    for j in range(k):
        key[j] = (bars[keep[j]].open_time_ms - t0) // MINUTE_MS * width + idx_of[j]
        if j and key[j] < key[j - 1]:
            ordered = False
    order = np.arange(k) if ordered else np.argsort(key, kind="mergesort")
    m = 0
    prev = np.int64(-1)
    for j in range(k):
        q = order[j]
        i = keep[q]
        b = bars[i]
        s = idx_of[q]
        same = j > 0 and key[q] == prev
        prev = key[q]
        if same or b.open_time_ms <= last_t[s]:
            counts[ALREADY_SEEN] += 1
            continue
        out_t[m] = b.open_time_ms
        out_idx[m] = s
        out_cols[0, m] = b.open
        out_cols[1, m] = b.high
        out_cols[2, m] = b.low
        out_cols[3, m] = b.close
        out_cols[4, m] = b.volume
        out_recv[m] = b.recv_ns
        m += 1
    return m
