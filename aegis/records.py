"""Fixed-size record layouts carried by the kernel's rings, kept in one place.

Every layout is an aligned numpy structured dtype whose size is a multiple of 8 bytes, so a
record never straddles a torn 8-byte word. Times are epoch milliseconds (UTC) for market time
and ``time.monotonic_ns()`` for hop stamps: CLOCK_MONOTONIC is shared by every process of the
machine, so a latency measured across processes is a plain subtraction.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 12

# Bit flags of BAR_DTYPE["flags"].
BAR_CLOSED = 1  # the final (x=true) update of the bar
BAR_BACKFILLED = 2  # came from REST klines after a gap, not from the stream
BAR_INCOMPLETE = 4  # an aggregate built from fewer 1m bars than its span

BAR_DTYPE = np.dtype(
    [
        ("open_time_ms", np.int64),
        ("recv_ns", np.int64),  # monotonic ns when the feed read the frame's bytes off the socket
        ("symbol_id", np.uint32),
        ("flags", np.uint32),
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
        ("quote_volume", np.float64),
        ("taker_buy_volume", np.float64),
        ("taker_buy_quote_volume", np.float64),
        ("trades", np.int64),
    ],
    align=True,
)

SIDE_BUY = 1
SIDE_SELL = 2

INTENT_DTYPE = np.dtype(
    [
        ("intent_id", np.uint64),  # deterministic: the same candidate always gets the same id
        ("decision_time_ms", np.int64),  # open time of the decision bar
        ("recv_ns", np.int64),  # copied from the bar that triggered it (end-to-end stamp)
        ("publish_ns", np.int64),
        ("symbol_id", np.uint32),
        ("side", np.uint32),
        ("notional", np.float64),  # quote asset
        ("stop_pct", np.float64),
        ("take_pct", np.float64),
        ("predicted_return_pct", np.float64),
        ("confidence", np.float64),
        ("model_version", np.int64),  # 0 = rule-only (cold start)
        ("features", np.float64, (N_FEATURES,)),
    ],
    align=True,
)

# Report kinds of REPORT_DTYPE["kind"].
REPORT_TRADE_CLOSED = 1
REPORT_INTENT_REJECTED = 2

REPORT_DTYPE = np.dtype(
    [
        ("intent_id", np.uint64),
        ("symbol_id", np.uint32),
        ("kind", np.uint32),
        ("entry_time_ms", np.int64),
        ("exit_time_ms", np.int64),
        ("gross_return_pct", np.float64),
        ("net_return_pct", np.float64),
        ("model_version", np.int64),
    ],
    align=True,
)

for _dtype in (BAR_DTYPE, INTENT_DTYPE, REPORT_DTYPE):
    assert _dtype.itemsize % 8 == 0, _dtype
