"""Numba kernels of the 12-feature engine: one closed 1m bar in, feature rows out.

A symbol's state is a (4, BLOCK_LEN) float64 array, one block per timeframe: block 0 is the
decision timeframe, blocks 1..3 are 15m, 1h and 1d. Each block aggregates 1m bars into its
timeframe, runs the SMC state machine on every closed bar and, for block 0, the indicators.
The batch `feature_matrix_nb` is this same step run over a whole series, so batch, live and
replay share one implementation; tests still compare them through the public API.

Numba's on-disk cache only watches this file: after changing a layout constant in
``_smc_nb`` or ``_indicators_nb``, delete the ``*.nbi``/``*.nbc`` files of this package.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from aegis.features import _indicators_nb as ind
from aegis.features import _smc_nb as smc

N_FEATURES = 12
N_BLOCKS = 4
MINUTE_MS = 60_000
RSI_P, ATR_P, MACD_F, MACD_S, MACD_G, BB_P, BB_DEV, VOL_P = 14, 14, 12, 26, 9, 20, 2.0, 20

S = smc.STATE_LEN
AGG_T, AGG_O, AGG_H, AGG_L, AGG_C, AGG_V, AGG_N = S, S + 1, S + 2, S + 3, S + 4, S + 5, S + 6
LAST_MIN = S + 7  # open time of the last 1m bar seen (block 0 only)
BAR_CLOSE = S + 8  # close of the last closed bar of this timeframe
RSI_ST = S + 9
ATR_ST = RSI_ST + ind.RSI_STATE_LEN
MACD_ST = ATR_ST + ind.ATR_STATE_LEN
BB_ST = MACD_ST + ind.MACD_RING + MACD_S
VOL_RING = BB_ST + ind.BB_RING + BB_P
VOL_N = VOL_RING + VOL_P
RSI_V, ATR_V, HIST_V, BB_U, BB_M, BB_L = (
    VOL_N + 1,
    VOL_N + 2,
    VOL_N + 3,
    VOL_N + 4,
    VOL_N + 5,
    VOL_N + 6,
)
BLOCK_LEN = BB_L + 1

# Parameter vector layout (see FeatureParams).
P_SWING0, P_BAND_FRAC, P_SWEEP_WINDOW = 0, 4, 5
N_PARAMS = 6


@njit(cache=True)
def init_symbol_nb(st):
    """Reset one symbol's (4, BLOCK_LEN) state."""
    for b in range(N_BLOCKS):
        smc.reset_state_nb(st[b, :S])
        st[b, S:] = 0.0
        st[b, AGG_T] = -1.0
    st[0, LAST_MIN] = -1.0


@njit(cache=True)
def _close_block(blk, b, params, out3):
    o, h, lo, c, v = blk[AGG_O], blk[AGG_H], blk[AGG_L], blk[AGG_C], blk[AGG_V]
    band_frac = params[P_BAND_FRAC] if b == 0 else 0.0
    smc.smc_step_nb(blk[:S], o, h, lo, c, int(params[P_SWING0 + b]), 0.0, band_frac)
    blk[AGG_T] = -1.0
    blk[BAR_CLOSE] = c
    if b != 0:
        return
    blk[RSI_V] = ind.rsi_update_nb(blk[RSI_ST:ATR_ST], c, RSI_P)
    blk[ATR_V] = ind.atr_update_nb(blk[ATR_ST:MACD_ST], h, lo, c, ATR_P)
    ind.macd_update_nb(blk[MACD_ST:BB_ST], c, MACD_F, MACD_S, MACD_G, out3)
    blk[HIST_V] = out3[2]
    ind.bollinger_update_nb(blk[BB_ST:VOL_RING], c, BB_P, BB_DEV, out3)
    blk[BB_U], blk[BB_M], blk[BB_L] = out3[0], out3[1], out3[2]
    n = int(blk[VOL_N])
    blk[VOL_RING + n % VOL_P] = v
    blk[VOL_N] = n + 1


@njit(cache=True)
def _nearest_zone(blk, base, n_slots, width, close, skip_breakers):
    # Index of the slot whose zone midpoint is nearest the close, -1 when there is none.
    best, best_d = -1, 1e300
    for s in range(n_slots):
        b = base + s * width
        if blk[b] == 0.0 or (skip_breakers and blk[b + 4] != 0.0):
            continue
        d = abs(close - 0.5 * (blk[b + 2] + blk[b + 3]))
        if d < best_d:
            best, best_d = b, d
    return best


@njit(cache=True)
def write_features_nb(st, params, row):
    """Write the 12 features of the decision bar that just closed into `row`."""
    d = st[0]
    c = d[BAR_CLOSE]
    row[0] = st[3, smc.TREND]
    row[1] = st[2, smc.TREND]
    row[2] = st[1, smc.LAST_STRUCT]
    b = _nearest_zone(d, smc.FVG, smc.N_FVG, smc.FVG_W, c, False)
    if b >= 0:
        row[3] = d[b] * (d[b + 2] - d[b + 3]) / c * 100.0
        row[4] = (c - 0.5 * (d[b + 2] + d[b + 3])) / c * 100.0
    else:
        row[3] = np.nan
        row[4] = np.nan
    b = _nearest_zone(d, smc.OB, smc.N_OB, smc.OB_W, c, True)
    row[5] = (c - 0.5 * (d[b + 2] + d[b + 3])) / c * 100.0 if b >= 0 else np.nan
    row[6] = 0.0
    if d[smc.LAST_SWEEP_BAR] >= 0:
        age = d[smc.N_BARS] - 1.0 - d[smc.LAST_SWEEP_BAR]
        window = params[P_SWEEP_WINDOW]
        if age < window:
            row[6] = d[smc.LAST_SWEEP] * (1.0 - age / window)
    row[7] = d[RSI_V]
    row[8] = d[ATR_V] / c * 100.0
    row[9] = d[HIST_V] / c * 100.0
    row[10] = (d[BB_U] - d[BB_L]) / d[BB_M] if d[BB_M] != 0.0 else np.nan
    n = int(d[VOL_N])
    if n < VOL_P:
        row[11] = np.nan
    else:
        mean = 0.0
        for k in range(VOL_P):
            mean += d[VOL_RING + k]
        mean /= VOL_P
        var = 0.0
        for k in range(VOL_P):
            var += (d[VOL_RING + k] - mean) ** 2
        std = np.sqrt(var / VOL_P)
        v = d[VOL_RING + (n - 1) % VOL_P]
        row[11] = (v - mean) / std if std > 1e-12 * max(mean, 1e-300) else 0.0


@njit(cache=True)
def on_minute_nb(st, tf_ms, params, t, o, h, lo, c, v, out_t, out_rows, out3):
    """Feed one closed 1m bar; write 0..2 decision rows into out_t/out_rows; return how many.

    A decision bar closes on its last minute, or, when that minute is missing, on the first
    minute of a later bucket; then it is emitted before that minute is used. Returns -1 (and
    changes nothing) when `t` is not after the previous minute or not minute-aligned.
    """
    if t % MINUTE_MS != 0 or t <= st[0, LAST_MIN]:
        return -1
    st[0, LAST_MIN] = t
    emitted = 0
    # Late closes: buckets this minute is past. Higher timeframes ending by the decision bar's
    # end go before its row, later ones after (the row must not see bars closed after it).
    dec_end = -1.0
    if st[0, AGG_T] >= 0 and t - t % tf_ms[0] != st[0, AGG_T]:
        dec_end = st[0, AGG_T] + tf_ms[0]
    for phase in range(2):
        for b in range(1, N_BLOCKS):
            blk = st[b]
            if blk[AGG_T] < 0 or t - t % tf_ms[b] == blk[AGG_T]:
                continue
            ends_first = blk[AGG_T] + tf_ms[b] <= dec_end
            if (phase == 0) == ends_first or dec_end < 0:
                _close_block(blk, b, params, out3)
        if phase == 0 and dec_end >= 0:
            out_t[emitted] = st[0, AGG_T]
            _close_block(st[0], 0, params, out3)
            write_features_nb(st, params, out_rows[emitted])
            emitted += 1
    # This minute joins every bucket; a bucket whose last minute it is closes now.
    for b in range(N_BLOCKS):
        blk = st[b]
        bucket = t - t % tf_ms[b]
        if blk[AGG_T] < 0:
            blk[AGG_T] = bucket
            blk[AGG_O], blk[AGG_H], blk[AGG_L], blk[AGG_C], blk[AGG_V] = o, h, lo, c, v
            blk[AGG_N] = 1.0
        else:
            blk[AGG_H] = max(blk[AGG_H], h)
            blk[AGG_L] = min(blk[AGG_L], lo)
            blk[AGG_C] = c
            blk[AGG_V] += v
            blk[AGG_N] += 1.0
    closes_now = t + MINUTE_MS == st[0, AGG_T] + tf_ms[0]
    dec_bucket = st[0, AGG_T]
    for b in range(N_BLOCKS):
        blk = st[b]
        if t + MINUTE_MS == blk[AGG_T] + tf_ms[b]:
            _close_block(blk, b, params, out3)
    if closes_now:
        out_t[emitted] = dec_bucket
        write_features_nb(st, params, out_rows[emitted])
        emitted += 1
    return emitted


@njit(cache=True)
def feature_matrix_nb(t_ms, o, h, lo, c, v, tf_ms, params):
    """Run the engine over one symbol's 1m series; return (decision open times, features)."""
    n = t_ms.shape[0]
    n_buckets = 0
    for i in range(n):
        if i == 0 or t_ms[i] - t_ms[i] % tf_ms[0] != t_ms[i - 1] - t_ms[i - 1] % tf_ms[0]:
            n_buckets += 1
    out_t = np.empty(n_buckets, np.int64)
    out = np.empty((n_buckets, N_FEATURES))
    st = np.zeros((N_BLOCKS, BLOCK_LEN))
    init_symbol_nb(st)
    tmp_t = np.empty(2, np.int64)
    tmp = np.empty((2, N_FEATURES))
    out3 = np.empty(3)
    k = 0
    for i in range(n):
        e = on_minute_nb(
            st, tf_ms, params, t_ms[i], o[i], h[i], lo[i], c[i], v[i], tmp_t, tmp, out3
        )
        if e < 0:
            return out_t[:0], out[:0], i
        for j in range(e):
            out_t[k] = tmp_t[j]
            out[k, :] = tmp[j]
            k += 1
    return out_t[:k], out[:k], -1


@njit(cache=True)
def on_minutes_nb(states, sym, t, o, h, lo, c, v, tf_ms, params, out_sym, out_t, out_rows):
    """Feed one closed 1m bar for each of many symbols; return rows written (or -1 - bad input).

    `states` is (n_symbols, 4, BLOCK_LEN); input k updates symbol `sym[k]`. Output buffers hold
    2 * len(sym) rows. O(1) per bar and symbol, no allocation. A symbol may appear twice in
    one call only with increasing times (a later duplicate out of order is rejected after the
    earlier inputs were applied).
    """
    # Validate everything first so a rejected call leaves every symbol untouched.
    for i in range(sym.shape[0]):
        s = sym[i]
        if s < 0 or s >= states.shape[0] or t[i] % MINUTE_MS != 0 or t[i] <= states[s, 0, LAST_MIN]:
            return -1 - i
    out3 = np.empty(3)
    k = 0
    for i in range(sym.shape[0]):
        s = sym[i]
        e = on_minute_nb(
            states[s],
            tf_ms,
            params,
            t[i],
            o[i],
            h[i],
            lo[i],
            c[i],
            v[i],
            out_t[k : k + 2],
            out_rows[k : k + 2],
            out3,
        )
        if e < 0:
            return -1 - i
        for j in range(e):
            out_sym[k + j] = s
        k += e
    return k


@njit(cache=True)
def warm_up_nb(st, t_ms, o, h, lo, c, v, tf_ms, params):
    """Replay a 1m history into one symbol's state; return rows closed, or -1 - bad index."""
    tmp_t = np.empty(2, np.int64)
    tmp = np.empty((2, N_FEATURES))
    out3 = np.empty(3)
    rows = 0
    for i in range(t_ms.shape[0]):
        e = on_minute_nb(
            st, tf_ms, params, t_ms[i], o[i], h[i], lo[i], c[i], v[i], tmp_t, tmp, out3
        )
        if e < 0:
            return -1 - i
        rows += e
    return rows
