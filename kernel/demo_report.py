"""The demo's report: what the kernel did (read back from PostgreSQL) against honest comparisons.

The kernel's own figures come from its rows: closed trades from ``virtual_trades``, the equity
curve from the executor's ``account_state`` snapshots (market time). The comparisons run over
the same bundled bars: the rule-only strategy (the kernel's brain and paper executor with no
model, through ``aegis.paper.backtest``) and equal-weight buy-and-hold with the same costs.

Out of sample means after the first champion model took its first decision (the first
``signals`` row carrying its version): from then on the kernel traded on a model that had never
seen those bars. If no model was promoted, the second half of the replay is used instead, and
the report says which. The whole replay (cold start included) is reported too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aegis.paper.backtest import BacktestConfig, run_backtest
from aegis.paper.backtest_inputs import load_backtest_data
from aegis.paper.comparisons import buy_and_hold_run, strategy_run
from aegis.paper.report import (
    ReportInputError,
    ReportTrade,
    StrategyRun,
    StrategySummary,
    period_text,
    render_table,
    summarize,
)
from aegis.paper.report_html import ReportFiles, write_report

MINUTE_MS = 60_000
KERNEL_NAME = "AEGIS kernel (paper)"


# How late each entry was filled: on time is the open of the first 1m bar after the decision
# bar closed. Late fills show the brain or executor fell behind the replay speed.
_TIMING_SQL = """
WITH fills AS (
    SELECT p.opened_at_ms - s.decision_time_ms - CASE s.timeframe WHEN '1m' THEN 60000
           WHEN '5m' THEN 300000 WHEN '15m' THEN 900000 ELSE 3600000 END AS late_ms
    FROM virtual_positions p JOIN signals s ON s.intent_id = p.position_id
)
SELECT count(*) AS entries, count(*) FILTER (WHERE late_ms > 0) AS late,
       max(late_ms) / 60000.0 AS max_late_min
FROM fills
"""


@dataclass(frozen=True)
class KernelRecord:
    """What the demo's kernel left in PostgreSQL."""

    trades: tuple[ReportTrade, ...]
    equity_time_ms: np.ndarray
    equity: np.ndarray
    open_positions: np.ndarray
    first_bar_ms: int | None
    last_bar_ms: int | None
    bars: int
    signals: int
    models: tuple[tuple[int, str, str], ...]  # (version, status, decision reason)
    champion_start_ms: int | None  # first decision with the first champion
    first_champion: int | None
    restarts: int
    entries: int = 0  # positions opened
    late_entries: int = 0  # filled after the first 1m bar following their decision bar
    max_late_minutes: float = 0.0


@dataclass(frozen=True)
class DemoReport:
    text: str
    oos_start_ms: int
    oos_basis: str
    oos: tuple[StrategySummary, ...]
    whole: tuple[StrategySummary, ...]
    files: ReportFiles | None = None
    facts: dict[str, str] = field(default_factory=dict)


async def load_kernel_record(dsn: str, account: str = "paper") -> KernelRecord:
    """Read the demo's trades, equity snapshots, bar range, models and restarts."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        trades = await conn.fetch(
            "SELECT symbol, entry_at_ms, exit_at_ms, net_return_pct, pnl, commission_paid,"
            " slippage_pct, notional FROM virtual_trades ORDER BY exit_at_ms, trade_id"
        )
        curve = await conn.fetch(
            "SELECT ts_ms, equity, open_positions FROM account_state WHERE account = $1"
            " ORDER BY ts_ms", account,
        )  # fmt: skip
        bars = await conn.fetchrow(
            "SELECT count(*) AS n, min(open_time_ms) AS lo, max(open_time_ms) AS hi"
            " FROM market_data WHERE timeframe = '1m'"
        )
        models = await conn.fetch(
            "SELECT model_version, status, metrics->>'decision' AS decision FROM ml_models"
            " ORDER BY model_version"
        )
        first = await conn.fetchval(
            "SELECT min(model_version) FROM ml_models WHERE status IN ('champion', 'retired')"
        )
        start = None
        if first is not None:
            start = await conn.fetchval(
                "SELECT min(decision_time_ms) FROM signals WHERE model_version = $1", first
            )
        timing = await conn.fetchrow(_TIMING_SQL)
        signals = await conn.fetchval("SELECT count(*) FROM signals")
        restarts = await conn.fetchval("SELECT count(*) FROM kernel_events WHERE event = 'restart'")
    finally:
        await conn.close()
    return KernelRecord(
        trades=tuple(ReportTrade.from_row(r) for r in trades),
        equity_time_ms=np.array([r["ts_ms"] for r in curve], dtype=np.int64),
        equity=np.array([float(r["equity"]) for r in curve], dtype=np.float64),
        open_positions=np.array([r["open_positions"] for r in curve], dtype=np.float64),
        first_bar_ms=bars["lo"],
        last_bar_ms=bars["hi"],
        bars=int(bars["n"]),
        signals=int(signals),
        models=tuple((int(m["model_version"]), m["status"], m["decision"] or "") for m in models),
        champion_start_ms=None if start is None else int(start),
        first_champion=None if first is None else int(first),
        restarts=int(restarts),
        entries=int(timing["entries"]),
        late_entries=int(timing["late"] or 0),
        max_late_minutes=float(timing["max_late_min"] or 0.0),
    )


def kernel_run(record: KernelRecord, starting_equity: float) -> StrategyRun:
    """The kernel's paper account as a report run (whole replay)."""
    if len(record.equity) == 0:
        raise ReportInputError("the executor wrote no account snapshot: nothing was replayed")
    return StrategyRun(KERNEL_NAME, record.trades, record.equity_time_ms, record.equity,
                       starting_equity, record.open_positions)  # fmt: skip


def since(run: StrategyRun, start_ms: int) -> StrategyRun:
    """``run`` from ``start_ms`` on: trades entered then, equity rebased on the value at start."""
    t = np.asarray(run.equity_time_ms)
    keep = t >= start_ms
    if not keep.any():
        raise ReportInputError(
            f"{run.name}: no equity point after {period_text(start_ms, start_ms)}"
        )
    i = int(np.argmax(keep))
    base = float(run.equity[i - 1]) if i > 0 else run.starting_equity
    exposure = None if run.exposure is None else np.asarray(run.exposure)[keep]
    trades = tuple(tr for tr in run.trades if tr.entry_at_ms >= start_ms)
    return StrategyRun(run.name, trades, t[keep], np.asarray(run.equity)[keep], base, exposure,
                       run.notes)  # fmt: skip


def out_of_sample_start(record: KernelRecord) -> tuple[int, str]:
    """(start, how it was chosen): the first champion's first decision, else mid-replay."""
    if record.champion_start_ms is not None:
        return record.champion_start_ms, (
            f"from the first decision of the first promoted champion (model "
            f"v{record.first_champion})")  # fmt: skip
    mid = (record.first_bar_ms + record.last_bar_ms) // 2
    mid -= mid % MINUTE_MS
    return mid, "no model was promoted: out of sample = the second half of the replay"


def build_demo_report(settings, dsn: str, report_dir: Path | None, *,
                      interrupted: bool = False) -> DemoReport:  # fmt: skip
    """Read the run back, run the comparisons, render the tables and write the HTML + PNG."""
    record = asyncio.run(load_kernel_record(dsn, settings.mode))
    if record.first_bar_ms is None:
        raise ReportInputError("market_data is empty: the replay never reached the kernel")
    symbols = list(settings.symbols)
    end_ms = record.last_bar_ms + MINUTE_MS
    config = BacktestConfig.from_settings(settings)
    data = load_backtest_data(None, symbols, record.first_bar_ms, end_ms)
    rule_name = f"{config.brain.rule.name} rule-only (backtest)"
    rule = strategy_run(run_backtest(data, config, None), rule_name)
    hold_all = buy_and_hold_run(data, config.paper, settings.starting_equity)
    kernel = kernel_run(record, settings.starting_equity)
    whole_runs = (kernel, rule, hold_all)
    oos_start, basis = out_of_sample_start(record)
    oos_data = load_backtest_data(None, symbols, oos_start, end_ms)
    oos_runs = (since(kernel, oos_start), since(rule, oos_start),
                buy_and_hold_run(oos_data, config.paper, settings.starting_equity))  # fmt: skip
    notes = _notes(record, settings, basis, interrupted)
    whole = tuple(summarize(r) for r in whole_runs)
    oos = tuple(summarize(r) for r in oos_runs)
    sym_text = ",".join(symbols)
    t_whole = f"Whole replay {period_text(record.first_bar_ms, end_ms)} (cold start included)"
    t_oos = f"OUT OF SAMPLE {period_text(oos_start, end_ms)}: {basis}"
    facts = _facts(record, settings, sym_text, oos_start, end_ms, basis)
    shown = ("closed 1m bars stored", "signals", "entries filled late", "process restarts")
    head = "\n".join(f"{k}: {facts[k]}" for k in shown)
    text = "\n\n".join([head, render_table(whole, t_whole), render_table(oos, t_oos, notes)])
    files = None
    if report_dir is not None:
        stem = "demo_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        title = f"AEGIS demo, out of sample {period_text(oos_start, end_ms)}"
        files = write_report(Path(report_dir), oos_runs, title,
                             facts | _whole_facts(whole), notes, stem)  # fmt: skip
    return DemoReport(text, oos_start, basis, oos, whole, files, facts)


def _models_text(record: KernelRecord) -> str:
    if not record.models:
        return "none trained"
    return "; ".join(f"v{v} {s}" + (f" ({d})" if d else "") for v, s, d in record.models)


def _facts(record, settings, symbols, oos_start, end_ms, basis) -> dict[str, str]:
    return {
        "symbols": symbols,
        "replay": period_text(record.first_bar_ms, end_ms),
        "out of sample": f"{period_text(oos_start, end_ms)} ({basis})",
        "closed 1m bars stored": f"{record.bars:,}",
        "signals": f"{record.signals:,}",
        "models": _models_text(record),
        "process restarts": str(record.restarts),
        "entries filled late": f"{record.late_entries} of {record.entries} (max "
        f"{record.max_late_minutes:.0f} min after the bar following the decision)",
        "costs": f"commission {settings.commission_pct}% per side, slippage "
        f"{settings.slippage_pct}% per fill",
    }


def _whole_facts(whole: tuple[StrategySummary, ...]) -> dict[str, str]:
    return {f"whole replay: {s.name}": f"net {s.net_return_pct:+.3f}%, {s.trades} trades, "
            f"max DD {s.max_drawdown_pct:.3f}%" for s in whole}  # fmt: skip


def _notes(record: KernelRecord, settings, basis: str, interrupted: bool) -> list[str]:
    notes = [
        f"models: {_models_text(record)}",
        f"rule-only trades at the cold-start size ({settings.cold_start_notional:g} "
        f"{settings.quote_asset} per entry), as the kernel does before a champion exists;"
        " compare mean trade % for per-trade quality",
        "the kernel's account carries positions opened before the out-of-sample start;"
        " its out-of-sample equity is rebased on the value at that start",
    ]
    if interrupted:
        notes.append("the demo was stopped before the end of the data: figures cover the bars"
                     " the kernel stored up to then")  # fmt: skip
    return notes
