"""What the compiled kline parser writes, shared by its kernel and its callers (no Numba here)."""

from __future__ import annotations

import numpy as np

FALLBACK, CLOSED, UPDATE = 0, 1, 2
"""Per-frame status: for the Python parser; a closed bar; an in-progress bar."""
N_WORDS = 12
"""A BAR_DTYPE record seen as 8-byte words, which the parser writes in place (``protocol``
checks these positions against BAR_DTYPE at import)."""
W_OPEN, W_RECV, W_ID_FLAGS, W_PRICES, W_TRADES = 0, 1, 2, 3, 11
"""open_time_ms | recv_ns | symbol_id (low half), flags (high half) | open, high, low, close,
volume, quote_volume, taker_buy_volume, taker_buy_quote_volume | trades."""
BAR_CLOSED_FLAG = 1
"""``aegis.records.BAR_CLOSED`` (checked at import too)."""
N_KEYS = 17
"""Fields of a kline object it knows (``t T s i f L o c h l v n x q V Q B``)."""
POW10 = np.array([10.0**k for k in range(23)])
"""10**0 .. 10**22, each exact as a double."""
