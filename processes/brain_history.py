"""Read a symbol's recent 1m bars from ``market_data`` as numpy columns, for the brain's warm-up.

Binary ``COPY`` parsed in place with one numpy dtype: about 3.5x faster than fetching row
records (measured: 43,200 bars in 0.08 s against 0.28 s), which matters for 300 symbols x 30
days. The layout is fixed because every column read is NOT NULL and 8 bytes wide; anything else
in the stream is an error, never a silent misread.
"""

from __future__ import annotations

import io

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = 19  # signature, flags int32, header-extension length int32 (0)
_ROW = np.dtype(
    [("n", ">i2"), ("lt", ">i4"), ("t", ">i8")]
    + [f for k in ("o", "h", "l", "c", "v") for f in ((f"l{k}", ">i4"), (k, ">f8"))]
)

_QUERY = (
    "SELECT open_time_ms, open, high, low, close, volume FROM market_data"
    " WHERE symbol = {sym} AND timeframe = '1m' AND open_time_ms < {before}"
    "   AND open_time_ms >= (SELECT max(open_time_ms) FROM market_data"
    "    WHERE symbol = {sym} AND timeframe = '1m' AND open_time_ms < {before}) - {window}"
    " ORDER BY open_time_ms"
)


class HistoryFormatError(RuntimeError):
    """The COPY stream is not the fixed layout this reader expects."""


def parse_minute_bars(data: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Parse a binary COPY of (open_time_ms, open, high, low, close, volume) rows."""
    if len(data) < _HEADER + 2 or not data.startswith(_SIGNATURE) or data[-2:] != b"\xff\xff":
        raise HistoryFormatError("not a complete binary COPY stream")
    body = len(data) - _HEADER - 2
    if body % _ROW.itemsize:
        raise HistoryFormatError(f"{body} body bytes are not whole {_ROW.itemsize}-byte rows")
    rows = np.frombuffer(data, dtype=_ROW, offset=_HEADER, count=body // _ROW.itemsize)
    lengths = [rows[f] for f in ("lt", "lo", "lh", "ll", "lc", "lv")]
    if (rows["n"] != 6).any() or any((x != 8).any() for x in lengths):
        raise HistoryFormatError("unexpected field count or width (a NULL or a wider type)")
    t = rows["t"].astype(np.int64)
    return t, [rows[k].astype(np.float64) for k in ("o", "h", "l", "c", "v")]


async def load_minute_bars(
    conn, symbol: str, before_ms: int, window_ms: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ``window_ms`` of 1m bars before ``before_ms`` ending at the symbol's newest bar."""
    if not symbol.isalnum():  # literal in COPY (it takes no parameters): keep it a plain name
        raise ValueError(f"symbol {symbol!r} must be letters and digits")
    query = _QUERY.format(sym=f"'{symbol}'", before=int(before_ms), window=int(window_ms))
    buf = io.BytesIO()
    await conn.copy_from_query(query, output=buf, format="binary")
    return parse_minute_bars(buf.getvalue())
