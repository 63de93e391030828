"""``aegis-kernel backtest``: recorded files → brain + paper executor → report (+ PostgreSQL).

One session: load the 1m files and the bundled exchange filters; take the champion model from
PostgreSQL when there is one (else rule-only cold start, as the kernel would); run the backtest;
run the honest comparisons over the same bars — the rule-only strategy (when a model traded)
and equal-weight buy-and-hold; print the summary table and write the HTML + PNG report under
``<home>/reports/``; write signals, experience and virtual trades to PostgreSQL so that
``aegis-kernel train`` can learn from them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aegis.paper.backtest import BacktestConfig, BacktestResult, run_backtest
from aegis.paper.backtest_inputs import BacktestInputError, load_backtest_data, window_ms
from aegis.paper.comparisons import buy_and_hold_run, strategy_run
from aegis.paper.report import StrategyRun, period_text, render_table, summarize
from aegis.paper.report_html import ReportFiles, write_report

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # as argparse: the command line asked for something impossible
WARM_UP_DAYS = 30.0  # the brain's warm-up from market_data (processes/brain.py)


@dataclass(frozen=True)
class BacktestSession:
    """The main result, the runs the report compares, and where the report went."""

    result: BacktestResult
    runs: tuple[StrategyRun, ...]
    table: str
    files: ReportFiles | None


def _symbols(text: str | None, settings) -> list[str] | None:
    if text:
        return [s.strip().upper() for s in text.split(",") if s.strip()]
    return list(settings.symbols) or None


def run_session(settings, data_obj, config: BacktestConfig, champion=None, report_dir=None):
    """Backtest + comparisons + report files; ``champion`` is a ``backtest_store.Champion``."""
    model = None if champion is None else champion.active
    result = run_backtest(data_obj, config, model)
    name = f"{config.brain.rule.name} + model {result.model_version}" if model else (
        f"{config.brain.rule.name} (rule-only)")  # fmt: skip
    runs = [strategy_run(result, name)]
    notes = []
    if model is not None:
        rule_only = run_backtest(data_obj, config, None)
        runs.append(strategy_run(rule_only, f"{config.brain.rule.name} (rule-only)"))
        trained_to = period_text(champion.train_end_ms, champion.train_end_ms)[:16]
        if champion.train_end_ms > result.start_ms:
            notes.append(f"NOT out of sample: model {result.model_version} was trained on data "
                         f"up to {trained_to} UTC, after the window starts")  # fmt: skip
        else:
            notes.append(f"out of sample: model {result.model_version} was trained on data up "
                         f"to {trained_to} UTC, before the window starts")  # fmt: skip
    else:
        notes.append("no champion model: the strategy is the rule-only cold start "
                     "(minimum size), so it is also the rule-only comparison")  # fmt: skip
    runs.append(buy_and_hold_run(data_obj, config.paper, config.brain.starting_equity))
    for r in runs:
        notes.extend(r.notes)
    if result.kill_switch is not None:
        k = result.kill_switch
        notes.append(f"kill switch tripped ({k.reason}, loss {k.loss_pct:.2f}%): flattened, "
                     "no entry afterwards")  # fmt: skip
    symbols = ",".join(result.symbols.values())
    title = f"AEGIS backtest {symbols} {period_text(result.start_ms, result.end_ms)}"
    table = render_table([summarize(r) for r in runs], title, notes)
    files = None
    if report_dir is not None:
        facts = {
            "period": period_text(result.start_ms, result.end_ms),
            "symbols": symbols,
            "1m bars": f"{result.bars:,} traded, {data_obj.warm_up_bars:,} warm-up before",
            "decision timeframe": config.brain.policy.decision_timeframe,
            "candidate rule": result.rule,
            "model version": str(result.model_version),
            "signals / intents": f"{len(result.signals):,} / {len(result.intents):,}",
            "rejections": ", ".join(f"{k} {v}" for k, v in sorted(result.rejections.items()))
            or "none",
            "speed": f"{result.bars_per_s:,.0f} 1m bars/s",
        }
        stem = "backtest_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        files = write_report(Path(report_dir), runs, title, facts, notes, stem)
    return BacktestSession(result, tuple(runs), table, files)


def backtest_main(
    settings,
    data: str | None,
    symbols: str | None,
    date_from: str | None,
    date_to: str | None,
    *,
    store: bool = True,
    warm_up_days: float = WARM_UP_DAYS,
) -> int:
    """Run ``aegis-kernel backtest``; return the process exit code.

    ``data``: a file or directory of 1m kline files (None: the bundled recordings); ``symbols``:
    comma-separated (None: ``AEGIS_SYMBOLS``, else every symbol in the data); ``date_from`` /
    ``date_to``: inclusive UTC days ``YYYY-MM-DD``; the recorded bars of the ``warm_up_days``
    before ``date_from`` (as many as the data has) warm the features up, as the kernel warms up
    from ``market_data``, and are not traded. ``store=False`` touches no database (no champion,
    nothing written). Bad input prints one clear line and returns ``EXIT_BAD_INPUT``.
    """
    try:
        start, end = window_ms(date_from, date_to)
        paths = [Path(data)] if data else None
        warm_up_ms = int(warm_up_days * 86_400_000)
        data_obj = load_backtest_data(paths, _symbols(symbols, settings), start, end,
                                      warm_up_ms=warm_up_ms)  # fmt: skip
        config = BacktestConfig.from_settings(settings)
    except BacktestInputError as exc:
        print(f"aegis-kernel backtest: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    started_pg = None
    dsn = None
    champion = None
    try:
        if store:
            from aegis.paper.backtest_store import load_champion_model
            from aegis.store.embedded import resolve_database_url
            from aegis.store.setup import prepare_database

            dsn, started_pg = resolve_database_url(settings)
            asyncio.run(prepare_database(dsn))
            champion = asyncio.run(load_champion_model(dsn))
        session = run_session(settings, data_obj, config, champion,
                              Path(settings.home) / "reports")  # fmt: skip
        print(session.table)
        if session.files is not None:
            print(f"report: {session.files.html}")
        if store:
            from aegis.paper.backtest_store import store_result

            counts = asyncio.run(store_result(dsn, session.result, config.brain.policy.decision_timeframe,
                                              Path(settings.home), settings.quote_asset))  # fmt: skip
            print(f"stored: {counts.signals} signals, {counts.experience} experience rows, "
                  f"{counts.virtual_trades} virtual trades")  # fmt: skip
        r = session.result
        log.info("backtest done: %d bars, %d trades, %.0f bars/s", r.bars, len(r.trades),
                 r.bars_per_s)  # fmt: skip
        return EXIT_OK
    finally:
        if started_pg is not None:
            started_pg.stop()
