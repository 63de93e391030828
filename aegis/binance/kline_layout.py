"""What the compiled kline parser writes, shared by its kernel and its callers (no Numba here)."""

from __future__ import annotations

import numpy as np

FALLBACK, CLOSED, UPDATE = 0, 1, 2
"""Per-frame status: for the Python parser; a closed bar; an in-progress bar."""
N_INTS, N_FLOATS = 4, 8
"""Columns of its outputs: open_ms, symbol_id, trades, interval_ms | o, h, l, c, v, q, V, Q."""
N_KEYS = 17
"""Fields of a kline object it knows (``t T s i f L o c h l v n x q V Q B``)."""
POW10 = np.array([10.0**k for k in range(23)])
"""10**0 .. 10**22, each exact as a double."""
