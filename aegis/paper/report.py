"""Run report: the figures of a trading run and of its honest comparisons, as numbers and text.

Input is plain data, independent of where it came from (a backtest, the live demo, rows of
``virtual_trades``): a :class:`StrategyRun` per strategy — its closed trades and its equity
curve. Figures (:func:`summarize`):

- **trades**, **hit rate** (share of closed trades with a positive net return);
- **net return %**: final equity over starting equity − 1, after commission and slippage
  (open positions at their last close, exit costs not deducted);
- **fees** and **slippage** paid, in the quote asset (both sides of every closed trade);
- **max drawdown %**: the largest fall of the equity curve from its running peak;
- **Sharpe**: mean over standard deviation of *daily* returns (equity at each UTC day's last
  point), × √365 (crypto trades every day), risk-free rate 0; undefined (NaN) with fewer than
  two daily returns or no variation;
- **exposure %**: share of the period with at least one position open;
- **mean trade %**: mean net return of the closed trades.

:func:`render_table` gives the terminal table; ``aegis.paper.report_html`` the HTML + PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

DAY_MS = 86_400_000
SHARPE_PERIODS_PER_YEAR = 365


class ReportInputError(ValueError):
    """A run cannot be summarised: empty or misaligned equity curve, bad starting equity."""


@dataclass(frozen=True)
class ReportTrade:
    """What the report needs of one closed trade."""

    symbol: str
    entry_at_ms: int
    exit_at_ms: int
    net_return_pct: float
    pnl: float  # quote asset, after commission and slippage
    commission: float  # quote asset, both sides
    slippage: float  # quote asset, both sides
    notional: float

    @classmethod
    def from_paper_trade(cls, trade: Any, symbol: str) -> ReportTrade:
        """From ``aegis.paper.positions.PaperTrade``."""
        return cls(symbol, int(trade.entry_at_ms), int(trade.exit_at_ms),
                   float(trade.net_return_pct), float(trade.pnl), float(trade.commission_quote),
                   float(trade.slippage_quote), float(trade.notional))  # fmt: skip

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ReportTrade:
        """From a ``virtual_trades`` row (slippage cost rebuilt from its % and the notional)."""
        notional = float(row["notional"])
        slip_pct = float(row.get("slippage_pct") or 0.0)
        return cls(str(row["symbol"]), int(row["entry_at_ms"]), int(row["exit_at_ms"]),
                   float(row["net_return_pct"]), float(row["pnl"]),
                   float(row["commission_paid"]), 2.0 * notional * slip_pct / 100.0,
                   notional)  # fmt: skip


@dataclass(frozen=True)
class StrategyRun:
    """One strategy over one period: closed trades and the equity curve (quote asset)."""

    name: str
    trades: tuple[ReportTrade, ...]
    equity_time_ms: np.ndarray  # int64, increasing
    equity: np.ndarray  # float64, same length
    starting_equity: float
    exposure: np.ndarray | None = None  # open positions' value per point, if known
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        t = np.asarray(self.equity_time_ms)
        e = np.asarray(self.equity, dtype=np.float64)
        if t.ndim != 1 or t.shape != e.shape or len(t) == 0:
            raise ReportInputError(f"{self.name}: equity curve needs equal, non-empty 1-d arrays")
        if len(t) > 1 and (np.diff(t) <= 0).any():
            raise ReportInputError(f"{self.name}: equity times must be strictly increasing")
        if not np.isfinite(e).all():
            raise ReportInputError(f"{self.name}: equity curve has non-finite values")
        if not (math.isfinite(self.starting_equity) and self.starting_equity > 0):
            raise ReportInputError(f"{self.name}: starting equity must be positive")
        if self.exposure is not None and np.shape(self.exposure) != e.shape:
            raise ReportInputError(f"{self.name}: exposure must match the equity curve")


@dataclass(frozen=True)
class StrategySummary:
    """The report's figures of one strategy (see the module docstring)."""

    name: str
    trades: int
    hit_rate_pct: float
    net_return_pct: float
    final_equity: float
    fees_paid: float
    slippage_paid: float
    max_drawdown_pct: float
    sharpe: float
    exposure_pct: float
    mean_trade_pct: float

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def max_drawdown_pct(equity: np.ndarray) -> float:
    """Largest fall from the running peak, in % of that peak (0 for a curve that never falls)."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (peak - e) / peak, 0.0)
    return float(dd.max() * 100.0)


def daily_equity(time_ms: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Equity at the last point of each UTC day present in the curve."""
    day = np.asarray(time_ms, dtype=np.int64) // DAY_MS
    last = np.flatnonzero(np.diff(day)) if len(day) else np.zeros(0, np.int64)
    idx = np.concatenate([last, [len(day) - 1]]) if len(day) else last
    return np.asarray(equity, dtype=np.float64)[idx]


def sharpe_ratio(time_ms: np.ndarray, equity: np.ndarray) -> float:
    """Annualised Sharpe of daily returns (× √365, risk-free 0); NaN when undefined."""
    d = daily_equity(time_ms, equity)
    if len(d) < 3:
        return float("nan")
    r = d[1:] / d[:-1] - 1.0
    sd = r.std(ddof=1)
    if not sd > 0:
        return float("nan")
    return float(r.mean() / sd * math.sqrt(SHARPE_PERIODS_PER_YEAR))


def _exposure_pct(run: StrategyRun) -> float:
    t = np.asarray(run.equity_time_ms, dtype=np.int64)
    if run.exposure is not None:
        return float((np.asarray(run.exposure) > 0).mean() * 100.0)
    span = int(t[-1] - t[0])
    if span <= 0 or not run.trades:
        return 0.0
    spans = sorted((max(tr.entry_at_ms, t[0]), min(tr.exit_at_ms, t[-1])) for tr in run.trades)
    covered, end = 0, t[0]
    for a, b in spans:
        a = max(a, end)
        if b > a:
            covered += b - a
            end = b
    return 100.0 * covered / span


def summarize(run: StrategyRun) -> StrategySummary:
    """Compute the report's figures of one strategy."""
    trades = run.trades
    nets = np.array([tr.net_return_pct for tr in trades], dtype=np.float64)
    final = float(np.asarray(run.equity)[-1])
    return StrategySummary(
        name=run.name,
        trades=len(trades),
        hit_rate_pct=float((nets > 0).mean() * 100.0) if len(nets) else float("nan"),
        net_return_pct=(final / run.starting_equity - 1.0) * 100.0,
        final_equity=final,
        fees_paid=float(sum(tr.commission for tr in trades)),
        slippage_paid=float(sum(tr.slippage for tr in trades)),
        max_drawdown_pct=max_drawdown_pct(run.equity),
        sharpe=sharpe_ratio(run.equity_time_ms, run.equity),
        exposure_pct=_exposure_pct(run),
        mean_trade_pct=float(nets.mean()) if len(nets) else float("nan"),
    )


_COLUMNS = (
    ("strategy", "name", "{}"),
    ("trades", "trades", "{:d}"),
    ("hit %", "hit_rate_pct", "{:.1f}"),
    ("net %", "net_return_pct", "{:+.3f}"),
    ("mean trade %", "mean_trade_pct", "{:+.3f}"),
    ("fees", "fees_paid", "{:.2f}"),
    ("slippage", "slippage_paid", "{:.2f}"),
    ("max DD %", "max_drawdown_pct", "{:.3f}"),
    ("Sharpe", "sharpe", "{:.2f}"),
    ("exposure %", "exposure_pct", "{:.1f}"),
)


def table_rows(summaries: Sequence[StrategySummary]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the summary table (terminal and HTML share them)."""
    header = [c[0] for c in _COLUMNS]
    rows = []
    for s in summaries:
        cells = []
        for _, attr, fmt in _COLUMNS:
            v = getattr(s, attr)
            cells.append("n/a" if isinstance(v, float) and math.isnan(v) else fmt.format(v))
        rows.append(cells)
    return header, rows


def period_text(start_ms: int, end_ms: int) -> str:
    f = "%Y-%m-%d %H:%M"
    a = datetime.fromtimestamp(start_ms / 1000, UTC).strftime(f)
    b = datetime.fromtimestamp(end_ms / 1000, UTC).strftime(f)
    return f"{a} → {b} UTC"


def render_table(
    summaries: Sequence[StrategySummary], title: str, notes: Sequence[str] = ()
) -> str:
    """The summary as a fixed-width terminal table, with its notes and the Sharpe convention."""
    header, rows = table_rows(summaries)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    out = [title, line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append("net % after commission and slippage; Sharpe: daily returns x sqrt(365), rf = 0")
    out += list(notes)
    return "\n".join(out)
