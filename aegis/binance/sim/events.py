"""Wire payloads of the market streams, exactly in Binance's field layout."""

from __future__ import annotations

from aegis.binance.sim.bars import fmt8, partial_ohlc
from aegis.binance.sim.config import MINUTE_MS
from aegis.binance.sim.market import BarValues


def kline_event(b: BarValues, symbol: str, decimals: int, phi: float, event_ms: int) -> dict:
    """The ``<symbol>@kline_1m`` event of bar ``b`` as published at fraction ``phi``.

    ``phi == 1`` is the closing update (``x: true``) with the recorded values; earlier updates
    carry the partial bar so far (volume and trades pro rata, prices along the intra-bar path).
    """
    closed = phi >= 1.0
    o, h, low, c = partial_ohlc(b.open, b.high, b.low, b.close, phi, decimals)
    v = b.volume if closed else round(b.volume * phi, 8)
    n = b.trades if closed else int(b.trades * phi)
    q = v * (o + h + low + c) / 4.0
    first = b.first_trade_id if n > 0 else -1
    last = first + n - 1 if n > 0 else -1
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": b.open_time,
            "T": b.open_time + MINUTE_MS - 1,
            "s": symbol,
            "i": "1m",
            "f": first,
            "L": last,
            "o": fmt8(o),
            "c": fmt8(c),
            "h": fmt8(h),
            "l": fmt8(low),
            "v": fmt8(v),
            "n": n,
            "x": closed,
            "q": fmt8(q),
            "V": fmt8(v / 2.0),
            "Q": fmt8(q / 2.0),
            "B": "0",
        },
    }


def stream_name(symbol: str) -> str:
    """Binance's lower-case 1m kline stream name of ``symbol``."""
    return f"{symbol.lower()}@kline_1m"
