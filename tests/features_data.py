"""Load the bundled Binance klines for the feature tests (no network, no /work/shared)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

KLINES = Path(__file__).resolve().parents[1] / "aegis" / "data" / "klines"
SYMBOLS_1M = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "DOGEUSDT")


@cache
def klines(symbol: str, interval: str = "1m") -> dict[str, np.ndarray]:
    """Columns of one bundled file: open_time (int64 ms), open, high, low, close, volume."""
    (path,) = KLINES.glob(f"binance_spot_{symbol}_{interval}_*.csv.gz")
    df = pd.read_csv(path)
    out = {"open_time": df["open_time"].to_numpy(np.int64)}
    for col in ("open", "high", "low", "close", "volume"):
        out[col] = df[col].to_numpy(np.float64)
    return out
