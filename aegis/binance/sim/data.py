"""Recorded 1m klines: loading, symbol selection, and series derived from real ones.

Only six real symbols are bundled. Tests at 300+ symbols need more, so ``load_series`` can
*derive* extra symbols from the real series, deterministically: derived symbol ``D007BTCUSDT``
is BTCUSDT's recording with every price multiplied by ``1 + 7/1000`` (rounded to BTCUSDT's tick)
and the same volumes, gaps and open times. Derived symbols are clearly named (``D<nnn>`` prefix)
and never presented as recordings; they share the source arrays, so 300 symbols cost the memory
of six.

Fields the recordings lack are synthesised per bar, also deterministically: quote volume =
volume × (o+h+l+c)/4, trade count = quote volume / 1000 (at least 1 when volume > 0), taker-buy
volumes = half of the volumes, trade ids = running sum of the trade counts.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

_FILE_RE = re.compile(r"binance_spot_([A-Z0-9]+)_1m_\d{8}_\d{8}\.csv(\.gz)?$")
_EXPECTED_HEADER = "open_time,open,high,low,close,volume"


class KlineDataError(ValueError):
    """A kline file or selection cannot be used (bad header, unknown symbol, nothing left)."""


@dataclass(frozen=True, eq=False)
class KlineSeries:
    """1m bars of one symbol: ``open_time`` (int64 ms) and ``ohlcv`` (float64, n×5).

    ``scale`` ≠ 1 marks a derived series; prices are then scaled and rounded on read.
    """

    symbol: str
    source_symbol: str
    open_time: np.ndarray
    ohlcv: np.ndarray
    trades: np.ndarray
    first_trade_id: np.ndarray
    scale: float = 1.0

    @property
    def derived(self) -> bool:
        return self.source_symbol != self.symbol

    def __len__(self) -> int:
        return len(self.open_time)


def symbol_of_file(path: Path) -> str | None:
    """Symbol named by a 1m kline file name, or None for other files."""
    m = _FILE_RE.search(path.name)
    return m.group(1) if m else None


def find_kline_files(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Map symbol -> 1m kline files found in the given files and directories."""
    found: dict[str, list[Path]] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            candidates = sorted(p.iterdir())
        elif p.is_file():
            candidates = [p]
        else:
            raise KlineDataError(f"kline path does not exist: {p}")
        for f in candidates:
            sym = symbol_of_file(f)
            if sym is not None:
                found.setdefault(sym, []).append(f)
    return found


@lru_cache(maxsize=32)
def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        header = fh.readline().strip()
        if header != _EXPECTED_HEADER:
            raise KlineDataError(f"{path.name}: header {header!r}, expected {_EXPECTED_HEADER!r}")
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 6:
        raise KlineDataError(f"{path.name}: expected 6 columns, got {table.shape[1]}")
    open_time = table[:, 0].astype(np.int64)
    ohlcv = np.ascontiguousarray(table[:, 1:6])
    if np.any(open_time % 60_000 != 0):
        raise KlineDataError(f"{path.name}: open times not aligned to the minute")
    return open_time, ohlcv


def _real_series(symbol: str, files: list[Path], from_ms: int | None, to_ms: int | None):
    parts = [_read_file(Path(f).resolve()) for f in files]
    open_time = np.concatenate([p[0] for p in parts])
    ohlcv = np.concatenate([p[1] for p in parts])
    order = np.argsort(open_time, kind="stable")
    open_time, ohlcv = open_time[order], ohlcv[order]
    keep = np.ones(len(open_time), dtype=bool)
    keep[1:] = open_time[1:] != open_time[:-1]  # same minute in two files: keep the first
    if from_ms is not None:
        keep &= open_time >= from_ms
    if to_ms is not None:
        keep &= open_time < to_ms
    open_time, ohlcv = open_time[keep], ohlcv[keep]
    if len(open_time) == 0:
        raise KlineDataError(f"{symbol}: no bars left in the selected time range")
    quote = ohlcv[:, 4] * ohlcv[:, :4].mean(axis=1)
    trades = np.where(ohlcv[:, 4] > 0, np.maximum(1, np.round(quote / 1000.0)), 0).astype(np.int64)
    first_id = np.cumsum(trades) - trades + 1
    return KlineSeries(symbol, symbol, open_time, ohlcv, trades, first_id)


def derived_name(source_symbol: str, quote_asset: str, k: int) -> tuple[str, str]:
    """(symbol, base asset) of the k-th series derived from ``source_symbol``."""
    base = (
        source_symbol[: -len(quote_asset)] if source_symbol.endswith(quote_asset) else source_symbol
    )
    derived_base = f"D{k:03d}{base}"
    return derived_base + quote_asset, derived_base


def load_series(
    paths: Iterable[Path],
    symbols: Iterable[str] | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    symbol_count: int | None = None,
    quote_asset: str = "USDT",
) -> dict[str, KlineSeries]:
    """Load real 1m series and, if ``symbol_count`` asks for more, derive the rest.

    Derived series cycle over the real symbols (sorted): the k-th round scales prices by
    ``1 + k/1000``. Raises ``KlineDataError`` for unknown symbols or empty selections.
    """
    files = find_kline_files(paths)
    if not files:
        raise KlineDataError(f"no 1m kline files found in {list(paths)}")
    wanted = sorted(files) if symbols is None else [s.upper() for s in symbols]
    missing = [s for s in wanted if s not in files]
    if missing:
        raise KlineDataError(f"no kline file for {missing}; available: {sorted(files)}")
    series = {s: _real_series(s, files[s], from_ms, to_ms) for s in wanted}
    if symbol_count is not None and symbol_count > len(series):
        reals = [series[s] for s in sorted(series)]
        extra = symbol_count - len(series)
        for i in range(extra):
            src = reals[i % len(reals)]
            k = i // len(reals) + 1
            name, _ = derived_name(src.symbol, quote_asset, k)
            series[name] = KlineSeries(
                name, src.symbol, src.open_time, src.ohlcv, src.trades, src.first_trade_id,
                scale=1.0 + k / 1000.0,
            )  # fmt: skip
        LOG.info("derived %d symbols from %d real series", extra, len(reals))
    return series
