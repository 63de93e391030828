"""Binance protocol layer: kline frames parsed + validated per second, filter checks in µs.

* ``kline_frames_per_s``: ``KlineParser.parse_into`` on combined-stream frames built from the
  recorded BTC/ETH/SOL/ADA/DOGE 1m bars (300 symbol names, in-progress and closing updates mixed),
  each frame parsed with orjson, fully validated and written into a preallocated BAR_DTYPE array.
  One process, one core; no network.
* ``filter_check_us_p50`` / ``filter_fit_us_p50``: ``SymbolFilters.check`` / ``.fit`` per order
  on the 2024 exchangeInfo USDT symbols, orders near each symbol's price (valid orders, so every
  filter is evaluated), median over repeated batches.
"""

from __future__ import annotations

import csv
import gzip
import json
import statistics
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

from aegis.binance.filters import FilterRejected, SymbolFilters
from aegis.binance.protocol import KlineParser, build_kline_frame
from aegis.records import BAR_CLOSED, BAR_DTYPE

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data"
N_SYMBOLS = 300


def _recorded_bars(coin: str, n: int) -> np.ndarray:
    path = DATA / "klines" / f"binance_spot_{coin}USDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]
    bars = np.zeros(len(rows), dtype=BAR_DTYPE)
    for i, r in enumerate(rows):
        o, h, lo, c, v = (float(r[k]) for k in ("open", "high", "low", "close", "volume"))
        bars[i] = (int(r["open_time"]), 0, 0, BAR_CLOSED if i % 2 else 0, o, h, lo, c, v, v * c,
                   v / 2, v * c / 2, 100)  # fmt: skip
    return bars


def _frames(n_frames: int) -> tuple[list[bytes], dict[str, int]]:
    names = [f"S{i:03d}USDT" for i in range(N_SYMBOLS)]
    ids = {name: i + 1 for i, name in enumerate(names)}
    sources = [_recorded_bars(c, 2000) for c in ("BTC", "ETH", "SOL", "ADA", "DOGE")]
    frames = []
    for i in range(n_frames):
        bar = sources[i % 5][(i // 5) % 2000]
        frames.append(
            build_kline_frame(bar, names[i % N_SYMBOLS], "1m", int(bar["open_time_ms"]) + 1)
        )
    return frames, ids


def bench_kline_parse(n_frames: int = 20_000, repeats: int = 5) -> dict:
    frames, ids = _frames(n_frames)
    parser = KlineParser(ids)
    out = np.zeros(n_frames, dtype=BAR_DTYPE)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, frame in enumerate(frames):
            parser.parse_into(frame, out, i, 0)
        rates.append(n_frames / (time.perf_counter() - t0))
    assert (out["symbol_id"] > 0).all()
    return {
        "kline_frames_per_s": statistics.median(rates),
        "kline_frames_per_s_best": max(rates),
        "kline_parse_us_per_frame": 1e6 / statistics.median(rates),
        "kline_frame_bytes": int(np.mean([len(f) for f in frames])),
    }


def _orders(n_symbols: int = 200) -> list[tuple[SymbolFilters, tuple]]:
    with gzip.open(DATA / "exchange_info" / "binance_spot_exchangeInfo_20240908.json.gz") as fh:
        info = json.load(fh)
    cases = []
    for s in info["symbols"]:
        if s["quoteAsset"] != "USDT" or len(cases) >= n_symbols:
            continue
        f = SymbolFilters.from_symbol_info(s)
        tick = f.price_grid.step or Decimal("0.01")
        price = (tick * 1000).normalize()
        qty = f.lot_grid.snap(Decimal(50) / price, up=True)
        try:
            f.check("BUY", "LIMIT", qty, price, price)
        except FilterRejected:
            continue
        cases.append((f, ("BUY", "LIMIT", qty, price, price)))
    return cases


def bench_filters(repeats: int = 7) -> dict:
    cases = _orders()
    checks, fits = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f, args in cases:
            f.check(*args)
        checks.append((time.perf_counter() - t0) / len(cases) * 1e6)
        t0 = time.perf_counter()
        for f, args in cases:
            f.fit(*args)
        fits.append((time.perf_counter() - t0) / len(cases) * 1e6)
    return {
        "filter_check_us_p50": statistics.median(checks),
        "filter_fit_us_p50": statistics.median(fits),
        "filter_symbols": len(cases),
    }


def run() -> dict:
    results = {**bench_kline_parse(), **bench_filters()}
    print("binance protocol layer")
    print(
        f"  kline frames parsed+validated/s  {results['kline_frames_per_s']:>12,.0f}  (target >= 50,000)"
    )
    print(f"  kline parse per frame            {results['kline_parse_us_per_frame']:>12.2f} us")
    print(
        f"  filter check per order           {results['filter_check_us_p50']:>12.2f} us  (target <= 20)"
    )
    print(f"  filter fit per order             {results['filter_fit_us_p50']:>12.2f} us")
    return results


if __name__ == "__main__":
    run()
