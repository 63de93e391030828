"""Numba kernel folding closed 1m bars into higher-timeframe bars, the way Binance does."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def aggregate_nb(open_time_ms, o, h, lo, c, v, tf_ms):
    """Fold 1m bars into `tf_ms` buckets aligned to the epoch (UTC); count minutes per bucket.

    Open = first 1m open, high = max, low = min, close = last close, volume = sum, as Binance
    builds its klines. A bucket gets a row when at least one of its 1m bars exists; `count`
    tells how many did, so a missing minute is visible instead of silently filled.
    """
    n = open_time_ms.shape[0]
    out_t = np.empty(n, np.int64)
    out_o = np.empty(n)
    out_h = np.empty(n)
    out_l = np.empty(n)
    out_c = np.empty(n)
    out_v = np.empty(n)
    out_n = np.empty(n, np.int64)
    k = -1
    for i in range(n):
        bucket = open_time_ms[i] - open_time_ms[i] % tf_ms
        if k < 0 or bucket != out_t[k]:
            k += 1
            out_t[k] = bucket
            out_o[k] = o[i]
            out_h[k] = h[i]
            out_l[k] = lo[i]
            out_c[k] = c[i]
            out_v[k] = v[i]
            out_n[k] = 1
        else:
            if h[i] > out_h[k]:
                out_h[k] = h[i]
            if lo[i] < out_l[k]:
                out_l[k] = lo[i]
            out_c[k] = c[i]
            out_v[k] += v[i]
            out_n[k] += 1
    k += 1
    return out_t[:k], out_o[:k], out_h[:k], out_l[:k], out_c[:k], out_v[:k], out_n[:k]
