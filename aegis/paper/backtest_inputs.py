"""Inputs of a backtest: recorded 1m series, symbol ids, order filters, and the precomputed
candidates of every symbol with their shadow labels.

The candidates come from the batch feature path (``feature_matrix``), which is proven equal to
the live incremental path row for row; the decision close and the minute that emits each row
follow the live loop (``aegis.risk.brain_core``): a decision bar is decided by the 1m bar that
closes it — its last minute, or, across a gap, the first later minute that arrives — and its
close is the close of its last present minute. Shadow labels are ``label_candidates`` over the
same series: the trade the executor's rules would make from every candidate, traded or not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aegis.binance.filters import SymbolFilters, filters_by_symbol
from aegis.binance.sim.catalog import read_exchange_info
from aegis.binance.sim.config import EXCHANGE_INFO_FILE, KLINES_DIR
from aegis.binance.sim.data import KlineDataError, load_series
from aegis.binance.universe import FIRST_ID
from aegis.features.candidates import ema_inputs
from aegis.features.vector import feature_matrix
from aegis.ml.labels import MINUTE_MS, TradeLabels, label_candidates
from aegis.records import N_FEATURES
from aegis.risk.brain_core import BrainConfig, SymbolSeries

DAY_MS = 86_400_000


class BacktestInputError(ValueError):
    """The backtest cannot run on what was asked: bad dates, unknown symbol, empty window."""


@dataclass(frozen=True)
class BacktestData:
    """Recorded 1m series of the backtest's symbols, with their ids and order filters."""

    symbols: Mapping[int, str]  # symbol id -> name; ids FIRST_ID.. in the order given
    series: tuple[SymbolSeries, ...]
    filters: Mapping[int, SymbolFilters]
    # Bars before this time only warm the features up (as the kernel warms up from
    # market_data): no decision, no trade, no label there. None: trade from the first bar.
    trade_from_ms: int | None = None

    def __post_init__(self) -> None:
        for s in self.series:
            if s.symbol_id not in self.symbols or s.symbol_id not in self.filters:
                raise BacktestInputError(f"series of symbol id {s.symbol_id} has no name/filters")
            if len(s.open_time_ms) == 0:
                raise BacktestInputError(f"{self.symbols[s.symbol_id]}: no bars")
        if self.trade_from_ms is not None and self.end_ms <= self.trade_from_ms:
            raise BacktestInputError("no bars at or after the start of the traded window")

    @property
    def bars(self) -> int:
        """1m bars of the traded window over every symbol (warm-up bars not counted)."""
        return sum(len(s.open_time_ms) - self.first_traded_row(s) for s in self.series)

    @property
    def warm_up_bars(self) -> int:
        return sum(self.first_traded_row(s) for s in self.series)

    def first_traded_row(self, series: SymbolSeries) -> int:
        """Row of ``series``'s first bar in the traded window."""
        if self.trade_from_ms is None:
            return 0
        return int(np.searchsorted(series.open_time_ms, self.trade_from_ms, side="left"))

    @property
    def start_ms(self) -> int:
        """Open time of the first traded bar."""
        first = min(int(s.open_time_ms[0]) for s in self.series)
        return first if self.trade_from_ms is None else max(first, self.trade_from_ms)

    @property
    def end_ms(self) -> int:
        """Close time of the last bar."""
        return max(int(s.open_time_ms[-1]) for s in self.series) + MINUTE_MS


def parse_day(text: str | None, name: str) -> int | None:
    """Epoch ms of a ``YYYY-MM-DD`` day (UTC midnight); None stays None."""
    if text is None or text == "":
        return None
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise BacktestInputError(f"--{name}: {text!r} is not a date YYYY-MM-DD") from None
    return int(day.timestamp() * 1000)


def window_ms(date_from: str | None, date_to: str | None) -> tuple[int | None, int | None]:
    """[from, to) in epoch ms from inclusive UTC days; ``to`` covers its whole day."""
    start = parse_day(date_from, "from")
    last = parse_day(date_to, "to")
    if start is not None and last is not None and start > last:
        raise BacktestInputError(f"--from {date_from} is after --to {date_to}")
    return start, None if last is None else last + DAY_MS


def load_backtest_data(
    paths: Iterable[Path] | None = None,
    symbols: Sequence[str] | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    exchange_info_path: Path = EXCHANGE_INFO_FILE,
    warm_up_ms: int = 0,
) -> BacktestData:
    """Load recorded 1m files (default: the bundled ones) and the bundled exchangeInfo filters.

    Symbol ids are ``FIRST_ID + position`` in ``symbols`` (sorted names when None), the ids the
    feed gives an explicit ``AEGIS_SYMBOLS`` list. With ``from_ms`` and ``warm_up_ms``, the
    recorded bars of the ``warm_up_ms`` before ``from_ms`` (as many as exist) are loaded too,
    to warm the features up. Raises ``BacktestInputError`` for an unknown symbol, a symbol
    without exchange filters, or a window with no bars.
    """
    paths = list(paths) if paths else [KLINES_DIR]
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise BacktestInputError(f"empty window: from {from_ms} is not before to {to_ms}")
    if warm_up_ms < 0:
        raise BacktestInputError(f"warm-up must be >= 0, got {warm_up_ms} ms")
    load_from = None if from_ms is None else from_ms - warm_up_ms
    names = None if symbols is None else [s.strip().upper() for s in symbols if s.strip()]
    if names is not None and len(set(names)) != len(names):
        raise BacktestInputError(f"symbols listed twice: {names}")
    try:
        loaded = load_series(paths, names, load_from, to_ms)
    except KlineDataError as exc:
        raise BacktestInputError(str(exc)) from None
    order = names if names is not None else sorted(loaded)
    all_filters = filters_by_symbol(read_exchange_info(exchange_info_path))
    missing = [n for n in order if n not in all_filters]
    if missing:
        raise BacktestInputError(f"no exchange filters for {missing} in {exchange_info_path.name}")
    ids = {FIRST_ID + i: name for i, name in enumerate(order)}
    series = []
    for symbol_id, name in ids.items():
        k = loaded[name]
        o, h, lo, c, v = (np.ascontiguousarray(k.ohlcv[:, j]) for j in range(5))
        series.append(SymbolSeries(symbol_id, k.open_time, o, h, lo, c, v))
    filters = {i: all_filters[n] for i, n in ids.items()}
    trade_from = from_ms if (from_ms is not None and warm_up_ms > 0) else None
    return BacktestData(ids, tuple(series), filters, trade_from)


@dataclass(frozen=True)
class SymbolCandidates:
    """Candidate decision rows of one symbol (only the rows the rule flagged)."""

    symbol_id: int
    decision_time_ms: np.ndarray  # int64, open time of the decision bar
    emit_ms: np.ndarray  # int64, open time of the 1m bar whose arrival decides it
    features: np.ndarray  # float64 (k, 12)
    confidence: np.ndarray  # float64
    labels: TradeLabels  # shadow label of each candidate
    decision_rows: int  # closed decision bars of the symbol (candidates or not)


def symbol_candidates(
    series: SymbolSeries, config: BrainConfig, trade_from_ms: int | None = None
) -> SymbolCandidates:
    """Features → candidate rule → shadow labels for one symbol's whole series; candidates
    decided before ``trade_from_ms`` (warm-up) are dropped."""
    policy = config.policy
    tf = policy.decision_tf_ms
    t = np.asarray(series.open_time_ms, np.int64)
    c = np.asarray(series.close, np.float64)
    times, feats, names = feature_matrix(
        t, series.open, series.high, series.low, c, series.volume, policy.decision_timeframe,
        config.feature_params,
    )  # fmt: skip
    periods = config.rule.ema_periods
    ema = None
    if periods:
        closes = c[np.searchsorted(t, times + tf, side="left") - 1]
        ema = ema_inputs(closes, periods)
    is_cand, conf = config.rule.evaluate(feats, names, ema)
    emit_all = t[np.searchsorted(t, times + tf - MINUTE_MS, side="left")]
    if trade_from_ms is not None:
        is_cand = is_cand & (emit_all >= trade_from_ms)
    keep = np.flatnonzero(is_cand)
    dtime = times[keep]
    emit = emit_all[keep]
    labels = label_candidates(
        t, series.open, series.high, series.low, c, dtime + tf, config.exit_rules
    )
    return SymbolCandidates(
        symbol_id=int(series.symbol_id),
        decision_time_ms=dtime,
        emit_ms=emit,
        features=np.ascontiguousarray(feats[keep]).reshape(-1, N_FEATURES),
        confidence=conf[keep],
        labels=labels,
        decision_rows=int((emit_all >= (trade_from_ms or 0)).sum()),
    )
