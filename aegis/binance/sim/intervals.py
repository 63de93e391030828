"""REST klines at intervals above 1m, aggregated from the recorded 1m bars.

An interval bar opens on a multiple of its length (UTC) and is served once closed by the
clock; buckets without any 1m bar (a real outage) are absent, as on Binance.
"""

from __future__ import annotations

import numpy as np

from aegis.binance.sim.config import MINUTE_MS

INTERVAL_MS = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}
"""Intervals the simulator can build from 1m bars (weeks and months are not offered)."""


def aggregate(
    open_time: np.ndarray, ohlcv: np.ndarray, trades: np.ndarray, interval_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group 1m rows into interval bars: (open times, ohlcv, quote volume, trades).

    Quote volume is summed per minute (volume × mean of OHLC), matching the 1m rows.
    """
    if len(open_time) == 0:
        empty = np.zeros(0)
        return open_time[:0], ohlcv[:0], empty, trades[:0]
    buckets = open_time - open_time % interval_ms
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(buckets)]
    out = np.empty((len(starts), 5))
    out[:, 0] = ohlcv[starts, 0]
    out[:, 1] = np.maximum.reduceat(ohlcv[:, 1], starts)
    out[:, 2] = np.minimum.reduceat(ohlcv[:, 2], starts)
    out[:, 3] = ohlcv[ends - 1, 3]
    out[:, 4] = np.add.reduceat(ohlcv[:, 4], starts)
    quote = np.add.reduceat(ohlcv[:, 4] * ohlcv[:, :4].mean(axis=1), starts)
    return buckets[starts], out, quote, np.add.reduceat(trades, starts)
