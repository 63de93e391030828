"""Numba state machine of the SMC/ICT rules for one bar series, advanced one closed bar at a time.

The whole state of a series lives in one float64 array (layout below), so a universe of symbols
and timeframes is a plain 3-D array updated inside compiled loops, and the batch form is the
same step run over a whole series. Rules are documented in ``aegis.features.smc``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RING = 256  # bars of history kept per series (order-block and sweep look-backs are capped here)
MAX_SWING = 32  # largest supported swing length (the swing window is 2 * n bars)

# Scalar fields.
N_BARS = 0
RUN_TYPE, RUN_IDX, RUN_LEVEL, RUN_BRK = 1, 2, 3, 4
FIN_COUNT = 5
FIN = 6  # last 4 final swings, 4 fields each: type, idx, level, break bar (-1 = unbroken)
FIN_W = 4
LH_IDX, LH_CROSSED, LL_IDX, LL_CROSSED = 22, 23, 24, 25
TREND, LAST_STRUCT, LAST_STRUCT_BAR = 26, 27, 28
LAST_SWEEP, LAST_SWEEP_BAR = 29, 30
EV_COUNT = 31
PARAM_BAND_ABS, PARAM_BAND_FRAC = 32, 33  # liquidity band, parked for the pool helpers
# Lists of fixed capacity; a slot with dir == 0 is empty; field 1 is always the bar index.
N_PEND, PEND_W = 8, 4  # dir, swing idx, level, code (+-1 BOS, +-2 CHoCH)
PEND = 34
N_FVG, FVG_W = 16, 4  # dir, middle idx, top, bottom
FVG = PEND + N_PEND * PEND_W
N_OB, OB_W = 16, 5  # dir, idx, top, bottom, breaker
OB = FVG + N_FVG * FVG_W
N_POOL, POOL_W = 32, 8  # dir, start, first level, sum, count, last, swept, reclaim
POOL = OB + N_OB * OB_W
N_EV, EV_W = 48, 5  # kind, idx, dir, a, b
EV = POOL + N_POOL * POOL_W
RING_O = EV + N_EV * EV_W
RING_H = RING_O + RING
RING_L = RING_H + RING
RING_C = RING_L + RING
STATE_LEN = RING_C + RING

# Event kinds written to the per-bar event log.
EV_SWING = 1  # idx = swing bar, dir = +1 high / -1 low, a = level
EV_FVG = 2  # idx = middle candle, dir, a = top, b = bottom
EV_FVG_MITIGATED = 3  # idx = middle candle of the mitigated gap
EV_OB = 4  # idx = order-block candle, dir, a = top, b = bottom
EV_OB_BREAKER = 5  # idx = order-block candle, a = mitigated index (reference convention)
EV_OB_RESET = 6  # idx = order-block candle (invalidated, removed)
EV_STRUCT = 7  # idx = swing bar, dir = +-1 BOS / +-2 CHoCH, a = level, b = broken bar
EV_POOL = 8  # a swing joined a pool: idx = pool start, dir, a = average level, b = member bar
EV_SWEEP = 9  # idx = pool start, dir, a = swept bar, b = 1 if a 2+ pool's level was reclaimed


@njit(cache=True)
def new_state_nb():
    """Return an empty series state."""
    st = np.zeros(STATE_LEN)
    reset_state_nb(st)
    return st


@njit(cache=True)
def reset_state_nb(st):
    """Clear a series state in place."""
    st[:] = 0.0
    st[RUN_IDX] = -1.0
    st[LH_IDX] = -1.0
    st[LL_IDX] = -1.0
    st[LAST_STRUCT_BAR] = -1.0
    st[LAST_SWEEP_BAR] = -1.0


@njit(cache=True)
def _log(st, kind, idx, direction, a, b):
    k = int(st[EV_COUNT])
    if k < N_EV:
        base = EV + k * EV_W
        st[base] = kind
        st[base + 1] = idx
        st[base + 2] = direction
        st[base + 3] = a
        st[base + 4] = b
        st[EV_COUNT] = k + 1


@njit(cache=True)
def _oldest_slot(st, base, n, width):
    # Free slot if any, else the slot holding the oldest item (smallest idx), to overwrite.
    best = 0
    best_idx = 1e300
    for s in range(n):
        b = base + s * width
        if st[b] == 0.0:
            return s
        if st[b + 1] < best_idx:
            best_idx = st[b + 1]
            best = s
    return best


@njit(cache=True)
def _push_final(st, t, close_t):
    """Finalize the current swing run: it joins the last-4 list and feeds structure and pools."""
    typ = st[RUN_TYPE]
    idx = st[RUN_IDX]
    level = st[RUN_LEVEL]
    for k in range(FIN_W - 1):
        for f in range(4):
            st[FIN + k * 4 + f] = st[FIN + (k + 1) * 4 + f]
    last = FIN + (FIN_W - 1) * 4
    st[last] = typ
    st[last + 1] = idx
    st[last + 2] = level
    st[last + 3] = st[RUN_BRK]
    st[FIN_COUNT] += 1
    _log(st, EV_SWING, idx, typ, level, 0.0)
    if st[FIN_COUNT] >= 4:
        _structure_pattern(st)


@njit(cache=True)
def _structure_pattern(st):
    """The reference's four-swing BOS/CHoCH patterns, evaluated when the newest swing is final."""
    t4, l4 = st[FIN], st[FIN + 2]
    l3 = st[FIN + 6]
    l2 = st[FIN + 10]
    t1, l1 = st[FIN + 12], st[FIN + 14]
    idx3, brk3 = st[FIN + 5], st[FIN + 7]
    code = 0
    if t4 == -1.0 and t1 == 1.0:
        if l4 < l2 and l2 < l3 and l3 < l1:
            code = 1
        elif l1 > l3 and l3 > l4 and l4 > l2:
            code = 2
    elif t4 == 1.0 and t1 == -1.0:
        if l4 > l2 and l2 > l3 and l3 > l1:
            code = -1
        elif l1 < l3 and l3 < l4 and l4 < l2:
            code = -2
    if code == 0:
        return
    if brk3 >= 0:
        _deliver_structure(st, code, idx3, l3, brk3)
        return
    s = _oldest_slot(st, PEND, N_PEND, PEND_W)
    b = PEND + s * PEND_W
    st[b] = 1.0 if code > 0 else -1.0
    st[b + 1] = idx3
    st[b + 2] = l3
    st[b + 3] = code


@njit(cache=True)
def _deliver_structure(st, code, idx, level, broken):
    st[TREND] = 1.0 if code > 0 else -1.0
    st[LAST_STRUCT] = code
    st[LAST_STRUCT_BAR] = st[N_BARS]
    _log(st, EV_STRUCT, idx, code, level, broken)


@njit(cache=True)
def _beyond(direction, close, level):
    # A close above a high level (direction +1) or below a low level (-1); 0 never is.
    return (direction > 0 and close > level) or (direction < 0 and close < level)


@njit(cache=True)
def _track_breaks(st, t, c):
    """First close beyond each tracked swing level (run, last finals, pending structure)."""
    if st[RUN_BRK] < 0 and _beyond(st[RUN_TYPE], c, st[RUN_LEVEL]):
        st[RUN_BRK] = t
    for k in range(FIN_W):
        b = FIN + k * 4
        if st[b + 3] < 0 and _beyond(st[b], c, st[b + 2]):
            st[b + 3] = t
    for s in range(N_PEND):
        b = PEND + s * PEND_W
        d = st[b]
        if d != 0.0 and ((d > 0 and c > st[b + 2]) or (d < 0 and c < st[b + 2])):
            _deliver_structure(st, st[b + 3], st[b + 1], st[b + 2], t)
            st[b] = 0.0


@njit(cache=True)
def _swings(st, t, n, close_t):
    """Confirm the swing candidate n bars back; runs of same-type candidates keep the extreme."""
    i = t - n
    if i < n - 1:
        return
    hi_i = st[RING_H + i % RING]
    lo_i = st[RING_L + i % RING]
    is_high = True
    is_low = True
    for j in range(t - 2 * n + 1, t + 1):
        if st[RING_H + j % RING] > hi_i:
            is_high = False
        if st[RING_L + j % RING] < lo_i:
            is_low = False
    if is_high:
        typ, level = 1.0, hi_i
    elif is_low:
        typ, level = -1.0, lo_i
    else:
        return
    if st[RUN_TYPE] == typ:
        if (typ > 0 and level > st[RUN_LEVEL]) or (typ < 0 and level < st[RUN_LEVEL]):
            st[RUN_IDX] = i
            st[RUN_LEVEL] = level
            st[RUN_BRK] = -1.0
            _set_last_known(st, typ, i)
        return
    if st[RUN_TYPE] != 0.0:
        _push_final(st, t, close_t)
        _pool_add(st, t)
    st[RUN_TYPE] = typ
    st[RUN_IDX] = i
    st[RUN_LEVEL] = level
    st[RUN_BRK] = -1.0
    _set_last_known(st, typ, i)


@njit(cache=True)
def _set_last_known(st, typ, i):
    if typ > 0:
        st[LH_IDX] = i
        st[LH_CROSSED] = 0.0
    else:
        st[LL_IDX] = i
        st[LL_CROSSED] = 0.0


@njit(cache=True)
def _fvg(st, t):
    """Detect the gap of the candle t-1 (needs bar t) and mitigate older gaps with bar t."""
    h_t = st[RING_H + t % RING]
    l_t = st[RING_L + t % RING]
    for s in range(N_FVG):
        b = FVG + s * FVG_W
        d = st[b]
        if d == 0.0:
            continue
        if (d > 0 and l_t <= st[b + 2]) or (d < 0 and h_t >= st[b + 3]):
            _log(st, EV_FVG_MITIGATED, st[b + 1], d, 0.0, 0.0)
            st[b] = 0.0
    if t < 2:
        return
    m = t - 1
    o_m = st[RING_O + m % RING]
    c_m = st[RING_C + m % RING]
    h_p = st[RING_H + (t - 2) % RING]
    l_p = st[RING_L + (t - 2) % RING]
    if c_m > o_m and h_p < l_t:
        d, top, bottom = 1.0, l_t, h_p
    elif c_m < o_m and l_p > h_t:
        d, top, bottom = -1.0, l_p, h_t
    else:
        return
    s = _oldest_slot(st, FVG, N_FVG, FVG_W)
    b = FVG + s * FVG_W
    st[b] = d
    st[b + 1] = m
    st[b + 2] = top
    st[b + 3] = bottom
    _log(st, EV_FVG, m, d, top, bottom)


@njit(cache=True)
def _order_blocks(st, t):
    """Update order blocks with bar t, then form one if t closes beyond the last swing."""
    h_t = st[RING_H + t % RING]
    l_t = st[RING_L + t % RING]
    c_t = st[RING_C + t % RING]
    for s in range(N_OB):
        b = OB + s * OB_W
        d = st[b]
        if d == 0.0:
            continue
        if st[b + 4] != 0.0:
            if (d > 0 and h_t > st[b + 2]) or (d < 0 and l_t < st[b + 3]):
                _log(st, EV_OB_RESET, st[b + 1], d, 0.0, 0.0)
                st[b] = 0.0
        elif (d > 0 and l_t < st[b + 3]) or (d < 0 and h_t > st[b + 2]):
            st[b + 4] = 1.0
            _log(st, EV_OB_BREAKER, st[b + 1], d, t - 1 if d > 0 else t, 0.0)
    for d in (1.0, -1.0):
        k = st[LH_IDX] if d > 0 else st[LL_IDX]
        crossed = LH_CROSSED if d > 0 else LL_CROSSED
        if k < 0 or st[crossed] != 0.0 or k >= t:
            continue
        ki = int(k)
        if d > 0 and not c_t > st[RING_H + ki % RING]:
            continue
        if d < 0 and not c_t < st[RING_L + ki % RING]:
            continue
        st[crossed] = 1.0
        start = max(ki + 1, t - RING + 1)
        best = t - 1
        if t - ki > 1:
            best = start
            for j in range(start, t):
                if d > 0 and st[RING_L + j % RING] <= st[RING_L + best % RING]:
                    best = j
                if d < 0 and st[RING_H + j % RING] >= st[RING_H + best % RING]:
                    best = j
        top = st[RING_H + best % RING]
        bottom = st[RING_L + best % RING]
        for s in range(N_OB):  # an order block re-formed on the same candle replaces the old one
            b = OB + s * OB_W
            if st[b] != 0.0 and st[b + 1] == best:
                st[b] = 0.0
        s = _oldest_slot(st, OB, N_OB, OB_W)
        b = OB + s * OB_W
        st[b] = d
        st[b + 1] = best
        st[b + 2] = top
        st[b + 3] = bottom
        st[b + 4] = 0.0
        _log(st, EV_OB, best, d, top, bottom)


@njit(cache=True)
def _band(level, band_abs, band_frac):
    return band_abs + band_frac * abs(level)


@njit(cache=True)
def _pool_slot(st):
    # Free slot, else the pool swept longest ago (it can only still gain members whose swing
    # bar precedes its sweep), else the oldest pool.
    best, best_swept, best_start = 0, False, 1e300
    for s in range(N_POOL):
        b = POOL + s * POOL_W
        if st[b] == 0.0:
            return s
        swept = st[b + 6] >= 0
        key = st[b + 6] if swept else st[b + 1]
        if (swept and not best_swept) or (swept == best_swept and key < best_start):
            best, best_swept, best_start = s, swept, key
    return best


@njit(cache=True)
def _pool_add(st, t):
    """A newly final swing joins the earliest matching pool still open to it, or starts one."""
    b_fin = FIN + (FIN_W - 1) * 4
    typ, j, level = st[b_fin], st[b_fin + 1], st[b_fin + 2]
    band_abs, band_frac = st[PARAM_BAND_ABS], st[PARAM_BAND_FRAC]
    best = -1
    best_start = 1e300
    for s in range(N_POOL):
        b = POOL + s * POOL_W
        if st[b] != typ:
            continue
        first = st[b + 2]
        band = _band(first, band_abs, band_frac)
        open_to_j = st[b + 6] < 0 or j < st[b + 6]
        if open_to_j and first - band <= level <= first + band and st[b + 1] < best_start:
            best = s
            best_start = st[b + 1]
    if best >= 0:
        b = POOL + best * POOL_W
        st[b + 3] += level
        st[b + 4] += 1.0
        st[b + 5] = j
        _log(st, EV_POOL, st[b + 1], typ, st[b + 3] / st[b + 4], j)
        return
    s = _pool_slot(st)
    b = POOL + s * POOL_W
    st[b] = typ
    st[b + 1] = j
    st[b + 2] = level
    st[b + 3] = level
    st[b + 4] = 1.0
    st[b + 5] = j
    st[b + 6] = -1.0
    st[b + 7] = 0.0
    # The sweep may already have happened between the swing bar and now: look back.
    band = _band(level, band_abs, band_frac)
    for k in range(max(int(j) + 1, t - RING + 1), t + 1):
        if (typ > 0 and st[RING_H + k % RING] >= level + band) or (
            typ < 0 and st[RING_L + k % RING] <= level - band
        ):
            st[b + 6] = k
            _log(st, EV_SWEEP, j, typ, k, 0.0)
            break


@njit(cache=True)
def _pool_sweeps(st, t):
    """Mark pools swept by bar t; a sweep of a 2+ member pool closing back inside is a reclaim."""
    h_t = st[RING_H + t % RING]
    l_t = st[RING_L + t % RING]
    c_t = st[RING_C + t % RING]
    band_abs, band_frac = st[PARAM_BAND_ABS], st[PARAM_BAND_FRAC]
    for s in range(N_POOL):
        b = POOL + s * POOL_W
        d = st[b]
        if d == 0.0 or st[b + 6] >= 0 or t <= st[b + 1]:
            continue
        first = st[b + 2]
        band = _band(first, band_abs, band_frac)
        if (d > 0 and h_t >= first + band) or (d < 0 and l_t <= first - band):
            st[b + 6] = t
            reclaim = False
            if st[b + 4] >= 2.0:
                avg = st[b + 3] / st[b + 4]
                reclaim = (d > 0 and c_t < avg) or (d < 0 and c_t > avg)
            st[b + 7] = 1.0 if reclaim else 0.0
            _log(st, EV_SWEEP, st[b + 1], d, t, 1.0 if reclaim else 0.0)
            if reclaim:
                # Buy-side liquidity taken and rejected is bearish, sell-side bullish.
                st[LAST_SWEEP] = -d
                st[LAST_SWEEP_BAR] = t


@njit(cache=True)
def smc_step_nb(st, o, h, lo, c, swing_length, band_abs, band_frac):
    """Advance a series state by one closed bar (o, h, lo, c); the event log restarts each bar."""
    t = int(st[N_BARS])
    st[EV_COUNT] = 0.0
    st[PARAM_BAND_ABS] = band_abs
    st[PARAM_BAND_FRAC] = band_frac
    st[RING_O + t % RING] = o
    st[RING_H + t % RING] = h
    st[RING_L + t % RING] = lo
    st[RING_C + t % RING] = c
    _order_blocks(st, t)
    _fvg(st, t)
    _track_breaks(st, t, c)
    _pool_sweeps(st, t)
    _swings(st, t, swing_length, c)
    st[N_BARS] = t + 1


@njit(cache=True)
def smc_run_nb(o, h, lo, c, swing_length, band_abs, band_frac):
    """Run the state machine over a whole series; return the event log (bar, kind, idx, dir, a, b)."""
    st = new_state_nb()
    cap = 64 + 8 * o.shape[0]
    ev_bar = np.empty(cap, np.int64)
    ev = np.empty((cap, EV_W))
    k = 0
    for t in range(o.shape[0]):
        smc_step_nb(st, o[t], h[t], lo[t], c[t], swing_length, band_abs, band_frac)
        for e in range(int(st[EV_COUNT])):
            if k < cap:
                ev_bar[k] = t
                ev[k, :] = st[EV + e * EV_W : EV + (e + 1) * EV_W]
                k += 1
    return ev_bar[:k], ev[:k]
