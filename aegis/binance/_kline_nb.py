"""Numba kernel: the kline frames of one socket read, parsed in one call (``kline_kernels``
runs it compiled ahead of time, or by Numba's JIT when that module is not built).

``parse_klines_nb`` reads combined-stream kline frames laid out as Binance sends them (compact
JSON, ASCII, no escapes, keys in any order) and writes the record of every frame that passes
all of ``KlineParser``'s checks. Any frame it is not sure of — another event, an unknown or
repeated key, a number it cannot convert exactly, a failed check — gets status ``FALLBACK`` and
goes to the Python parser, which gives the verdict and the error. So this kernel may only ever
accept less, never differently.

Decimal strings: ``digits[.digits]`` with an integer mantissa m ≤ 2**53 and d ≤ 22 decimals is
converted as ``m / 10**d``: both operands are exact doubles, so the one division is correctly
rounded, the same double ``float(text)`` gives (Clinger's fast path). Anything else falls back.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from aegis.binance.kline_layout import (
    BAR_CLOSED_FLAG,
    CLOSED,
    FALLBACK,
    N_KEYS,
    UPDATE,
    W_ID_FLAGS,
    W_OPEN,
    W_PRICES,
    W_RECV,
    W_TRADES,
)

_MAX_EXACT = 1 << 53

# k fields; their bit in the "seen" mask is 1 << index.
(_T_OPEN, _T_CLOSE, _T_S, _T_I, _T_F, _T_L, _T_O, _T_C, _T_H, _T_LOW, _T_V, _T_N, _T_X, _T_Q,
 _T_TV, _T_TQ, _T_B) = range(N_KEYS)  # fmt: skip
_K_REQUIRED = sum(1 << k for k in (_T_OPEN, _T_CLOSE, _T_S, _T_I, _T_O, _T_C, _T_H, _T_LOW,
                                   _T_V, _T_N, _T_X, _T_Q, _T_TV, _T_TQ))  # fmt: skip
_K_INTEGERS = sum(1 << k for k in (_T_OPEN, _T_CLOSE, _T_N, _T_F, _T_L))
_K_LETTERS = np.full(128, -1, np.int64)
for _letter, _field in zip("tTsifLochlvnxqVQB", range(N_KEYS), strict=True):
    _K_LETTERS[ord(_letter)] = _field


@njit(cache=True)
def _string_end(buf, i, end):
    """Index of the closing quote of the string opening at ``buf[i]``, or -1 (no string there;
    an escape, a control character or non-ASCII in it)."""
    if i >= end or buf[i] != 34:  # "
        return -1
    i += 1
    while i < end:
        b = buf[i]
        if b == 34:  # "
            return i
        if b == 92 or b < 32 or b > 126:
            return -1
        i += 1
    return -1


@njit(cache=True)
def _int_end(buf, i, end):
    """End of a JSON integer starting at ``i`` (no fraction, no exponent), or -1."""
    if i < end and buf[i] == 45:  # -
        i += 1
    start = i
    while i < end and 48 <= buf[i] <= 57:
        i += 1
    digits = i - start
    if digits == 0 or digits > 18 or (digits > 1 and buf[start] == 48):
        return -1
    if i < end and (buf[i] == 46 or buf[i] == 101 or buf[i] == 69):  # . e E
        return -1
    return i


@njit(cache=True)
def _int_value(buf, i, stop):
    """A non-negative integer's value (``_int_end`` checked it), or -1 for a negative one."""
    if buf[i] == 45:
        return -1
    v = 0
    while i < stop:
        v = v * 10 + (buf[i] - 48)
        i += 1
    return v


@njit(cache=True)
def _decimal(buf, i, stop, pow10):
    """``float`` of ``buf[i:stop]`` when it is ``digits[.digits]`` and exactly convertible, else -1."""
    m = 0
    d = 0
    digits = 0
    dot = False
    while i < stop:
        b = buf[i]
        if 48 <= b <= 57:
            if digits >= 18:
                return -1.0
            m = m * 10 + (b - 48)
            digits += 1
            if dot:
                d += 1
        elif b == 46 and not dot and digits > 0:
            dot = True
        else:
            return -1.0
        i += 1
    if digits == 0 or (dot and d == 0) or m > _MAX_EXACT or d > 22:
        return -1.0
    return m / pow10[d]


@njit(cache=True)
def _same(buf, a, b, length):
    for j in range(length):
        if buf[a + j] != buf[b + j]:
            return False
    return True


@njit(cache=True)
def _row_is(table, row, buf, a, length):
    """Whether ``table[row, :length]`` holds the bytes ``buf[a:a+length]``."""
    for j in range(length):
        if table[row, j] != buf[a + j]:
            return False
    return True


@njit(cache=True)
def _symbol_slot(buf, s, length, names, name_len, table):
    """Index in ``names`` of the upper-case symbol ``buf[s:s+length]``, or -1."""
    h = np.uint64(1469598103934665603)
    for j in range(length):
        h = (h ^ np.uint64(buf[s + j])) * np.uint64(1099511628211)
    mask = len(table) - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        idx = table[slot]
        if idx < 0:
            return -1
        if name_len[idx] == length and _row_is(names, idx, buf, s, length):
            return idx
        slot = (slot + 1) & mask


@njit(cache=True)
def _parse_one(buf, start, end, names, name_len, ids, table, iv_names, iv_len, iv_ms, pow10,
               scratch, words, prices, intervals, row):  # fmt: skip
    """Status of one frame; on CLOSED/UPDATE its record is in ``words[row]`` (``prices[row]`` is
    the same memory as doubles) and its interval in ``intervals[row]``."""
    # Positions: stream, data.e, data.s, k.s, k.i as (start, stop) of the string's content.
    stream_a = stream_b = e_a = e_b = ds_a = ds_b = -1
    # Where each k field's value starts and stops (read only for fields seen in this frame).
    k_pos = scratch[0]
    k_stop = scratch[1]
    k_seen = 0
    x_true = False
    # A tiny state machine over at most three nested objects: 0 top, 1 data, 2 k.
    level = 0
    top_seen = 0
    data_seen = 0
    i = start
    if i >= end or buf[i] != 123:  # {
        return FALLBACK
    i += 1
    while True:
        kq = _string_end(buf, i, end)
        if kq < 0 or kq + 1 >= end or buf[kq + 1] != 58:  # :
            return FALLBACK
        key_a = i + 1
        key_len = kq - key_a
        v = kq + 2
        if v >= end:
            return FALLBACK
        opens_object = False
        if level == 0:
            if key_len == 6 and _is_word(buf, key_a, 6, 0):  # "stream"
                if top_seen & 1:
                    return FALLBACK
                q = _string_end(buf, v, end)
                if q < 0:
                    return FALLBACK
                stream_a, stream_b = v + 1, q
                top_seen |= 1
                i = q + 1
            elif key_len == 4 and _is_word(buf, key_a, 4, 1):  # "data"
                if top_seen & 2 or buf[v] != 123:
                    return FALLBACK
                top_seen |= 2
                opens_object = True
            else:
                return FALLBACK
        elif level == 1:
            if key_len != 1:
                return FALLBACK
            c = buf[key_a]
            if c == 101:  # e
                bit = 1
            elif c == 69:  # E
                bit = 2
            elif c == 115:  # s
                bit = 4
            elif c == 107:  # k
                bit = 8
            else:
                return FALLBACK
            if data_seen & bit:
                return FALLBACK
            data_seen |= bit
            if bit == 8:
                if buf[v] != 123:
                    return FALLBACK
                opens_object = True
            elif bit == 2:
                i = _int_end(buf, v, end)
                if i < 0:
                    return FALLBACK
            else:
                q = _string_end(buf, v, end)
                if q < 0:
                    return FALLBACK
                if bit == 1:
                    e_a, e_b = v + 1, q
                else:
                    ds_a, ds_b = v + 1, q
                i = q + 1
        else:
            if key_len != 1:
                return FALLBACK
            field = _K_LETTERS[buf[key_a]]
            if field < 0 or k_seen & (1 << field):
                return FALLBACK
            k_seen |= 1 << field
            if field == _T_X:
                if end - v >= 4 and buf[v] == 116 and buf[v + 1] == 114 and buf[v + 2] == 117 \
                        and buf[v + 3] == 101:  # fmt: skip
                    x_true = True
                    i = v + 4
                elif end - v >= 5 and buf[v] == 102 and buf[v + 1] == 97 and buf[v + 2] == 108 \
                        and buf[v + 3] == 115 and buf[v + 4] == 101:  # fmt: skip
                    i = v + 5
                else:
                    return FALLBACK
            elif (1 << field) & _K_INTEGERS:
                i = _int_end(buf, v, end)
                if i < 0:
                    return FALLBACK
                k_pos[field], k_stop[field] = v, i
            else:
                q = _string_end(buf, v, end)
                if q < 0:
                    return FALLBACK
                k_pos[field], k_stop[field] = v + 1, q
                i = q + 1
        if opens_object:
            level += 1
            i = v + 1
            continue
        # After a value: ',' for the next key, or '}' closing objects.
        if i >= end:
            return FALLBACK
        if buf[i] == 44:  # ,
            i += 1
            continue
        while i < end and buf[i] == 125:  # }
            level -= 1
            i += 1
            if level < 0:
                break
            if i < end and buf[i] == 44:
                break
        if level < 0:
            if i != end:
                return FALLBACK
            break
        if i >= end or buf[i] != 44:
            return FALLBACK
        i += 1
    if top_seen != 3 or data_seen & 13 != 13 or k_seen & _K_REQUIRED != _K_REQUIRED:
        return FALLBACK
    # The event, the symbol and the interval, as KlineParser checks them.
    if e_b - e_a != 5 or not _is_word(buf, e_a, 5, 2):
        return FALLBACK
    ks_a, ks_b = k_pos[_T_S], k_stop[_T_S]
    ki_a, ki_b = k_pos[_T_I], k_stop[_T_I]
    length = ks_b - ks_a
    idx = _symbol_slot(buf, ks_a, length, names, name_len, table)
    if idx < 0 or ds_b - ds_a != length or not _same(buf, ds_a, ks_a, length):
        return FALLBACK
    iv = -1
    ilen = ki_b - ki_a
    for j in range(len(iv_len)):
        if iv_len[j] == ilen and _row_is(iv_names, j, buf, ki_a, ilen):
            iv = j
            break
    if iv < 0:
        return FALLBACK
    # The stream name: lower(symbol) + "@kline_" + interval.
    if stream_b - stream_a != length + 7 + ilen:
        return FALLBACK
    for j in range(length):
        b = names[idx, j]
        if 65 <= b <= 90:
            b += 32
        if buf[stream_a + j] != b:
            return FALLBACK
    if not _is_word(buf, stream_a + length, 7, 3):
        return FALLBACK
    if not _same(buf, stream_a + length + 7, ki_a, ilen):
        return FALLBACK
    # Numbers, and the checks of KlineParser._record.
    open_ms = _int_value(buf, k_pos[_T_OPEN], k_stop[_T_OPEN])
    close_ms = _int_value(buf, k_pos[_T_CLOSE], k_stop[_T_CLOSE])
    trades = _int_value(buf, k_pos[_T_N], k_stop[_T_N])
    if open_ms < 0 or close_ms < 0 or trades < 0:
        return FALLBACK
    for slot, field in enumerate((_T_O, _T_H, _T_LOW, _T_C, _T_V, _T_Q, _T_TV, _T_TQ)):
        value = _decimal(buf, k_pos[field], k_stop[field], pow10)
        if value < 0.0:
            return FALLBACK
        prices[row, W_PRICES + slot] = value
    p = W_PRICES
    o, h, lo, c = prices[row, p], prices[row, p + 1], prices[row, p + 2], prices[row, p + 3]
    v, q, tv, tq = prices[row, p + 4], prices[row, p + 5], prices[row, p + 6], prices[row, p + 7]
    interval_ms = iv_ms[iv]
    if not (0.0 < lo <= o <= h and lo <= c <= h and 0.0 <= tv <= v and 0.0 <= tq <= q
            and open_ms % interval_ms == 0 and close_ms == open_ms + interval_ms - 1):  # fmt: skip
        return FALLBACK
    words[row, W_OPEN] = open_ms
    words[row, W_ID_FLAGS] = ids[idx] | ((BAR_CLOSED_FLAG if x_true else 0) << 32)
    words[row, W_TRADES] = trades
    intervals[row] = interval_ms
    return CLOSED if x_true else UPDATE


_WORDS = np.zeros((4, 7), np.uint8)
for _row, _word in enumerate((b"stream", b"data", b"kline", b"@kline_")):
    _WORDS[_row, : len(_word)] = np.frombuffer(_word, np.uint8)


@njit(cache=True)
def _is_word(buf, a, length, which):
    for j in range(length):
        if buf[a + j] != _WORDS[which, j]:
            return False
    return True


_SIGNATURE = (
    "int64(uint8[::1], int64[::1], int64[::1], uint8[:, ::1], int64[::1], int64[::1], int64[::1],"
    " uint8[:, ::1], int64[::1], int64[::1], float64[::1], int64[:, ::1], int64[:, ::1],"
    " float64[:, ::1], int64[::1], int64, int8[::1])"
)


@njit(_SIGNATURE, cache=True)
def parse_klines_nb(buf, starts, ends, names, name_len, ids, table, iv_names, iv_len, iv_ms,
                    pow10, scratch, words, prices, intervals, recv_ns, status):  # fmt: skip
    """Parse frames ``buf[starts[r]:ends[r]]``; write ``status[r]`` and, unless FALLBACK, the
    record of each into ``words[r]`` (BAR_DTYPE as 8-byte words; ``prices``: the same memory as
    doubles) with ``recv_ns``, and its interval into ``intervals[r]``; a FALLBACK row is zeros
    but for ``recv_ns``. ``scratch``: (2, N_KEYS) int64. Return how many were not FALLBACK."""
    parsed = 0
    for r in range(len(starts)):
        if not 0 <= starts[r] <= ends[r] <= len(buf):  # Numba checks no bounds: never read past
            s = FALLBACK
        else:
            s = _parse_one(buf, starts[r], ends[r], names, name_len, ids, table, iv_names,
                           iv_len, iv_ms, pow10, scratch, words, prices, intervals, r)  # fmt: skip
        status[r] = s
        if s == FALLBACK:
            for w in range(words.shape[1]):
                words[r, w] = 0
            intervals[r] = 0
        else:
            parsed += 1
        words[r, W_RECV] = recv_ns
    return parsed
