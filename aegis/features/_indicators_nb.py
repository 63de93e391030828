"""Numba kernels of the TA-Lib indicators, batch and one-bar-at-a-time.

Every kernel repeats TA-Lib's own arithmetic in TA-Lib's own operation order (seeds by a plain
left-to-right sum, Wilder smoothing as ``prev *= p - 1; prev += x; prev /= p``, Bollinger
variance from a running sum of squares), so the batch kernels agree with TA-Lib to the last bits
and the incremental kernels agree with the batch ones exactly. Incremental state lives in small
float64 arrays so a whole universe of symbols can be updated inside one compiled loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# TA-Lib's TA_EPSILON: its standard deviation treats a variance below this as zero.
TA_EPSILON = 1e-14

# State layouts (indices into a float64 state array).
EMA_COUNT, EMA_SUM, EMA_VALUE = 0, 1, 2
EMA_STATE_LEN = 3

RSI_COUNT, RSI_PREV, RSI_GAIN, RSI_LOSS = 0, 1, 2, 3
RSI_STATE_LEN = 4

ATR_COUNT, ATR_PREV_CLOSE, ATR_SUM, ATR_VALUE = 0, 1, 2, 3
ATR_STATE_LEN = 4

# MACD keeps the last `slow` closes in a ring because TA-Lib seeds the fast EMA with the SMA of
# the `fast` closes that end where the slow EMA's seed ends (bar slow-1), not at bar fast-1.
MACD_COUNT, MACD_FAST, MACD_SLOW, MACD_SIG_COUNT, MACD_SIG_SUM, MACD_SIGNAL = 0, 1, 2, 3, 4, 5
MACD_RING = 6


def macd_state_len(slow: int) -> int:
    """Length of the MACD state array for a given slow period."""
    return MACD_RING + slow


# Bollinger keeps the last `period` values, their running sum and running sum of squares.
BB_COUNT, BB_SUM, BB_SUMSQ = 0, 1, 2
BB_RING = 3


def bb_state_len(period: int) -> int:
    """Length of the Bollinger state array for a given period."""
    return BB_RING + period


@njit(cache=True)
def ema_update_nb(state, x, period):
    """Feed one value to an EMA state; return the EMA (NaN during TA-Lib's warm-up)."""
    n = state[EMA_COUNT]
    if n < period:
        state[EMA_SUM] += x
        state[EMA_COUNT] = n + 1
        if n + 1 == period:
            state[EMA_VALUE] = state[EMA_SUM] / period
            return state[EMA_VALUE]
        return np.nan
    k = 2.0 / (period + 1)
    state[EMA_VALUE] = ((x - state[EMA_VALUE]) * k) + state[EMA_VALUE]
    return state[EMA_VALUE]


@njit(cache=True)
def ema_nb(x, period):
    """EMA over a whole array; same numbers as TA-Lib EMA (SMA seed, k = 2/(period+1))."""
    out = np.full(x.shape[0], np.nan)
    state = np.zeros(EMA_STATE_LEN)
    for i in range(x.shape[0]):
        out[i] = ema_update_nb(state, x[i], period)
    return out


@njit(cache=True)
def _rsi_value(gain, loss):
    total = gain + loss
    # TA-Lib 0.8 returns 0 only for an exactly zero total (probed: 5e-16 still gives 100).
    if total == 0.0:
        return 0.0
    return 100.0 * (gain / total)


@njit(cache=True)
def rsi_update_nb(state, x, period):
    """Feed one close to an RSI state; return the RSI (NaN for the first `period` closes)."""
    n = state[RSI_COUNT]
    state[RSI_COUNT] = n + 1
    if n == 0:
        state[RSI_PREV] = x
        return np.nan
    change = x - state[RSI_PREV]
    state[RSI_PREV] = x
    if n <= period:
        if change < 0:
            state[RSI_LOSS] -= change
        else:
            state[RSI_GAIN] += change
        if n < period:
            return np.nan
        # The seed turns the summed gains and losses into Wilder averages, once.
        state[RSI_LOSS] /= period
        state[RSI_GAIN] /= period
        return _rsi_value(state[RSI_GAIN], state[RSI_LOSS])
    state[RSI_LOSS] *= period - 1
    state[RSI_GAIN] *= period - 1
    if change < 0:
        state[RSI_LOSS] -= change
    else:
        state[RSI_GAIN] += change
    state[RSI_LOSS] /= period
    state[RSI_GAIN] /= period
    return _rsi_value(state[RSI_GAIN], state[RSI_LOSS])


@njit(cache=True)
def rsi_nb(close, period):
    """RSI over a whole array; same numbers as TA-Lib RSI (Wilder smoothing)."""
    out = np.full(close.shape[0], np.nan)
    state = np.zeros(RSI_STATE_LEN)
    for i in range(close.shape[0]):
        out[i] = rsi_update_nb(state, close[i], period)
    return out


@njit(cache=True)
def atr_update_nb(state, high, low, close, period):
    """Feed one bar to an ATR state; return the ATR (NaN for the first `period` bars)."""
    n = state[ATR_COUNT]
    state[ATR_COUNT] = n + 1
    if n == 0:
        state[ATR_PREV_CLOSE] = close
        return np.nan
    prev = state[ATR_PREV_CLOSE]
    state[ATR_PREV_CLOSE] = close
    tr = high - low
    v = abs(prev - high)
    if v > tr:
        tr = v
    v = abs(prev - low)
    if v > tr:
        tr = v
    if n <= period:
        state[ATR_SUM] += tr
        if n < period:
            return np.nan
        state[ATR_VALUE] = state[ATR_SUM] / period
        return state[ATR_VALUE]
    value = state[ATR_VALUE]
    value *= period - 1
    value += tr
    value /= period
    state[ATR_VALUE] = value
    return value


@njit(cache=True)
def atr_nb(high, low, close, period):
    """ATR over whole arrays; same numbers as TA-Lib ATR (SMA seed of TR, Wilder smoothing)."""
    out = np.full(close.shape[0], np.nan)
    state = np.zeros(ATR_STATE_LEN)
    for i in range(close.shape[0]):
        out[i] = atr_update_nb(state, high[i], low[i], close[i], period)
    return out


@njit(cache=True)
def macd_update_nb(state, x, fast, slow, signal, out3):
    """Feed one close to a MACD state; write (macd, signal, hist) into `out3` (NaN in warm-up)."""
    n = int(state[MACD_COUNT])
    state[MACD_COUNT] = n + 1
    state[MACD_RING + n % slow] = x
    out3[0] = np.nan
    out3[1] = np.nan
    out3[2] = np.nan
    if n < slow - 1:
        return
    if n == slow - 1:
        total = 0.0
        for i in range(slow):
            total += state[MACD_RING + i]
        state[MACD_SLOW] = total / slow
        total = 0.0
        for i in range(slow - fast, slow):
            total += state[MACD_RING + i]
        state[MACD_FAST] = total / fast
    else:
        kf = 2.0 / (fast + 1)
        ks = 2.0 / (slow + 1)
        state[MACD_FAST] = ((x - state[MACD_FAST]) * kf) + state[MACD_FAST]
        state[MACD_SLOW] = ((x - state[MACD_SLOW]) * ks) + state[MACD_SLOW]
    line = state[MACD_FAST] - state[MACD_SLOW]
    m = state[MACD_SIG_COUNT]
    if m < signal:
        state[MACD_SIG_SUM] += line
        state[MACD_SIG_COUNT] = m + 1
        if m + 1 < signal:
            return
        state[MACD_SIGNAL] = state[MACD_SIG_SUM] / signal
    else:
        k = 2.0 / (signal + 1)
        state[MACD_SIGNAL] = ((line - state[MACD_SIGNAL]) * k) + state[MACD_SIGNAL]
    out3[0] = line
    out3[1] = state[MACD_SIGNAL]
    out3[2] = line - state[MACD_SIGNAL]


@njit(cache=True)
def macd_nb(close, fast, slow, signal):
    """MACD over a whole array; same numbers as TA-Lib MACD (including its fast-EMA seeding)."""
    n = close.shape[0]
    line = np.full(n, np.nan)
    sig = np.full(n, np.nan)
    hist = np.full(n, np.nan)
    state = np.zeros(MACD_RING + slow)
    out3 = np.empty(3)
    for i in range(n):
        macd_update_nb(state, close[i], fast, slow, signal, out3)
        line[i] = out3[0]
        sig[i] = out3[1]
        hist[i] = out3[2]
    return line, sig, hist


@njit(cache=True)
def bollinger_update_nb(state, x, period, nbdev, out3):
    """Feed one close to a Bollinger state; write (upper, middle, lower) into `out3`."""
    n = int(state[BB_COUNT])
    state[BB_COUNT] = n + 1
    slot = BB_RING + n % period
    out3[0] = np.nan
    out3[1] = np.nan
    out3[2] = np.nan
    state[slot] = x
    state[BB_SUM] += x
    state[BB_SUMSQ] += x * x
    if n < period - 1:
        return
    middle = state[BB_SUM] / period
    mean_sq = state[BB_SUMSQ] / period
    var = mean_sq - middle * middle
    std = math.sqrt(var) if var >= TA_EPSILON else 0.0
    if nbdev != 1.0:
        std = std * nbdev
    out3[0] = middle + std
    out3[1] = middle
    out3[2] = middle - std
    # Drop the oldest value of the window after using the sums, in TA-Lib's order.
    oldest = state[BB_RING + (n + 1) % period]
    state[BB_SUM] -= oldest
    state[BB_SUMSQ] -= oldest * oldest


@njit(cache=True)
def bollinger_nb(close, period, nbdev):
    """Bollinger bands over a whole array; same numbers as TA-Lib BBANDS with an SMA middle."""
    n = close.shape[0]
    upper = np.full(n, np.nan)
    middle = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    state = np.zeros(BB_RING + period)
    out3 = np.empty(3)
    for i in range(n):
        bollinger_update_nb(state, close[i], period, nbdev, out3)
        upper[i] = out3[0]
        middle[i] = out3[1]
        lower[i] = out3[2]
    return upper, middle, lower
