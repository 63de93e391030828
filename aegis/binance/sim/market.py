"""Market state as of a simulated time: current price, closed klines, averages, 24 h tickers.

Everything is computed from the recorded series and the time asked about, so REST answers,
stream events and fills always agree with each other. A bar counts as closed once the clock
reaches its close (``open_time + 60 s``); the in-progress bar is seen at the last update point
(``updates_per_bar`` per minute), exactly what the stream has published so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aegis.binance.sim.bars import fmt8, partial_ohlc
from aegis.binance.sim.config import DAY_MS, MINUTE_MS
from aegis.binance.sim.data import KlineSeries
from aegis.binance.sim.intervals import aggregate


@dataclass(frozen=True)
class BarValues:
    """One bar's recorded (or derived) values and synthesised extras."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    first_trade_id: int


class MarketData:
    """Read-only view of all served series at any simulated time."""

    def __init__(
        self, series: dict[str, KlineSeries], decimals: dict[str, int], updates_per_bar: int
    ) -> None:
        self.series = series
        self.decimals = decimals
        self.updates_per_bar = updates_per_bar
        self.first_open_ms = min(int(s.open_time[0]) for s in series.values())
        self.last_open_ms = max(int(s.open_time[-1]) for s in series.values())

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.series

    def _prices(self, ser: KlineSeries, lo: int, hi: int) -> np.ndarray:
        block = ser.ohlcv[lo:hi]
        if ser.scale == 1.0:
            return block
        scaled = block.copy()
        scaled[:, :4] = np.round(block[:, :4] * ser.scale, self.decimals[ser.symbol])
        return scaled

    def bar(self, symbol: str, i: int) -> BarValues:
        """The i-th bar of ``symbol`` with derived scaling and synthesised fields."""
        ser = self.series[symbol]
        o, h, low, c, v = (float(x) for x in self._prices(ser, i, i + 1)[0])
        return BarValues(
            int(ser.open_time[i]), o, h, low, c, v, v * (o + h + low + c) / 4.0,
            int(ser.trades[i]), int(ser.first_trade_id[i]),
        )  # fmt: skip

    def index_at(self, symbol: str, t_ms: int) -> int:
        """Index of the last bar opened at or before ``t_ms`` (-1 if none)."""
        return int(np.searchsorted(self.series[symbol].open_time, t_ms, side="right")) - 1

    def phase(self, open_time: int, t_ms: int) -> float:
        """Fraction of the bar published by ``t_ms``, on the update grid (1.0 once closed)."""
        n = self.updates_per_bar
        step = (t_ms - open_time) * n // MINUTE_MS
        return 1.0 if step >= n else step / n

    def price_at(self, symbol: str, t_ms: int) -> float | None:
        """Last price as of ``t_ms``: the in-progress bar's partial close, else the last close."""
        i = self.index_at(symbol, t_ms)
        if i < 0:
            return None
        b = self.bar(symbol, i)
        phi = self.phase(b.open_time, t_ms)
        return partial_ohlc(b.open, b.high, b.low, b.close, phi, self.decimals[symbol])[3]

    def closed_count(self, symbol: str, now_ms: int) -> int:
        """Number of bars closed by ``now_ms``."""
        ser = self.series[symbol]
        return int(np.searchsorted(ser.open_time, now_ms - MINUTE_MS, side="right"))

    def kline_rows(
        self,
        symbol: str,
        now_ms: int,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        interval_ms: int = MINUTE_MS,
    ) -> list[list[object]]:
        """REST ``klines`` rows (12 fields) of bars closed by ``now_ms``."""
        ser = self.series[symbol]
        ot = ser.open_time
        # 1m rows that can belong to a closed interval bar in the asked range.
        hi = int(np.searchsorted(ot, now_ms - now_ms % interval_ms, side="left"))
        if end_ms is not None:
            hi = min(hi, int(np.searchsorted(ot, end_ms - end_ms % interval_ms + interval_ms)))
        lo = 0
        if start_ms is not None:
            first = start_ms + (-start_ms) % interval_ms  # first bar opening at or after start
            lo = int(np.searchsorted(ot, first, side="left"))
        else:
            lo = int(np.searchsorted(ot, int(ot[max(hi - 1, 0)]) - limit * interval_ms))
        if hi <= lo:
            return []
        times, prices, quote, trades = aggregate(
            ot[lo:hi], self._prices(ser, lo, hi), ser.trades[lo:hi], interval_ms
        )
        if start_ms is not None:
            sel = slice(0, limit)
        else:
            sel = slice(max(0, len(times) - limit), len(times))
        rows = []
        for j in range(len(times))[sel]:
            o, h, low, c, v = (float(x) for x in prices[j])
            t = int(times[j])
            q = float(quote[j])
            rows.append([
                t, fmt8(o), fmt8(h), fmt8(low), fmt8(c), fmt8(v), t + interval_ms - 1,
                fmt8(q), int(trades[j]), fmt8(v / 2.0), fmt8(q / 2.0), "0",
            ])  # fmt: skip
        return rows

    def avg_price(self, symbol: str, now_ms: int, mins: int = 5) -> float | None:
        """Volume-weighted price over the last ``mins`` closed minutes (Binance ``avgPrice``)."""
        ser = self.series[symbol]
        hi = self.closed_count(symbol, now_ms)
        lo = int(np.searchsorted(ser.open_time, now_ms - (mins + 1) * MINUTE_MS, side="right"))
        lo = max(lo, 0)
        if hi <= lo:
            return self.price_at(symbol, now_ms)
        block = self._prices(ser, lo, hi)
        typical = block[:, :4].mean(axis=1)
        vol = block[:, 4]
        if vol.sum() <= 0:
            return float(block[-1, 3])
        return float((typical * vol).sum() / vol.sum())

    def ticker_24h(self, symbol: str, now_ms: int) -> dict[str, object] | None:
        """Rolling 24 h statistics (Binance ``ticker/24hr`` FULL) as of ``now_ms``."""
        ser = self.series[symbol]
        hi = self.closed_count(symbol, now_ms)
        lo = int(np.searchsorted(ser.open_time, now_ms - DAY_MS, side="left"))
        last = self.price_at(symbol, now_ms)
        if last is None:
            return None
        block = np.array([[last, last, last, last, 0.0]]) if hi <= lo else self._prices(ser, lo, hi)
        open_px = float(block[0, 0])
        prev_close = float(self._prices(ser, lo - 1, lo)[0, 3]) if lo > 0 else open_px
        vol = float(block[:, 4].sum())
        quote = float((block[:, :4].mean(axis=1) * block[:, 4]).sum())
        count = int(ser.trades[lo:hi].sum()) if hi > lo else 0
        first_id = int(ser.first_trade_id[lo]) if hi > lo and count else -1
        change = last - open_px
        return {
            "symbol": symbol,
            "priceChange": fmt8(change),
            "priceChangePercent": f"{(change / open_px * 100.0) if open_px else 0.0:.3f}",
            "weightedAvgPrice": fmt8(quote / vol if vol > 0 else last),
            "prevClosePrice": fmt8(prev_close),
            "lastPrice": fmt8(last),
            "lastQty": fmt8(0.0),
            "bidPrice": fmt8(last),
            "bidQty": fmt8(0.0),
            "askPrice": fmt8(last),
            "askQty": fmt8(0.0),
            "openPrice": fmt8(open_px),
            "highPrice": fmt8(float(max(block[:, 1].max(), last))),
            "lowPrice": fmt8(float(min(block[:, 2].min(), last))),
            "volume": fmt8(vol),
            "quoteVolume": fmt8(quote),
            "openTime": now_ms - DAY_MS,
            "closeTime": now_ms,
            "firstId": first_id,
            "lastId": first_id + count - 1 if count else -1,
            "count": count,
        }
