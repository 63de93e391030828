"""The demo: its plan, its report arithmetic, a bad symbol, and one short real run to the end."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aegis.config import ConfigError, Settings
from aegis.kernel.demo import EXIT_CONFIG, DemoPlan, demo_main, plan_from_args
from aegis.kernel.demo_progress import Progress
from aegis.kernel.demo_report import KernelRecord, out_of_sample_start, since
from aegis.paper.report import ReportInputError, ReportTrade, StrategyRun

DAY = 86_400_000
T0 = 1679270400000  # 2023-03-20 00:00 UTC


def _record(champion_start: int | None) -> KernelRecord:
    return KernelRecord(
        trades=(), equity_time_ms=np.zeros(0, np.int64), equity=np.zeros(0),
        open_positions=np.zeros(0), first_bar_ms=T0, last_bar_ms=T0 + 2 * DAY, bars=0,
        signals=0, models=(), champion_start_ms=champion_start,
        first_champion=None if champion_start is None else 3, restarts=0,
    )  # fmt: skip


def test_demo_plan_zero_speed_is_refused() -> None:
    with pytest.raises(ConfigError, match="speed"):
        DemoPlan(speed=0)


def test_demo_plan_from_args_reads_symbols_window_and_speed() -> None:
    plan = plan_from_args(["--symbols", "btcusdt, ethusdt", "--from", "2023-03-20",
                           "--speed", "500", "--no-report", "--keep-data"])  # fmt: skip
    assert plan.symbols == ("BTCUSDT", "ETHUSDT")
    assert plan.date_from == "2023-03-20" and plan.speed == 500.0
    assert not plan.report and not plan.fresh


def test_out_of_sample_starts_at_first_champion_decision() -> None:
    start, basis = out_of_sample_start(_record(T0 + DAY + 300_000))
    assert start == T0 + DAY + 300_000
    assert "v3" in basis


def test_out_of_sample_without_champion_is_second_half_on_a_minute() -> None:
    start, basis = out_of_sample_start(_record(None))
    assert start == T0 + DAY
    assert "second half" in basis


def test_since_rebases_equity_and_keeps_trades_entered_after_start() -> None:
    t = T0 + np.arange(4, dtype=np.int64) * 60_000
    trades = (
        ReportTrade("BTCUSDT", int(t[0]), int(t[1]), 1.0, 1.0, 0.1, 0.0, 100.0),
        ReportTrade("BTCUSDT", int(t[2]), int(t[3]), -1.0, -1.0, 0.1, 0.0, 100.0),
    )
    run = StrategyRun("x", trades, t, np.array([100.0, 110.0, 99.0, 121.0]), 100.0)
    cut = since(run, int(t[2]))
    assert cut.starting_equity == 110.0  # the value just before the window
    assert [tr.entry_at_ms for tr in cut.trades] == [int(t[2])]
    assert np.array_equal(cut.equity, [99.0, 121.0])


def test_since_after_the_last_point_is_an_error() -> None:
    run = StrategyRun("x", (), np.array([T0]), np.array([1.0]), 1.0)
    with pytest.raises(ReportInputError, match="no equity point"):
        since(run, T0 + 1)


def test_progress_line_shows_date_counts_equity_and_model() -> None:
    p = Progress(12.0, T0 + 3_600_000, 1234, 56, 7, 2, 10_050.0, 4, 5, 0)
    line = p.line(10_000.0)
    for part in ("2023-03-20 01:00", "bars 1,234", "signals 56", "trades 7", "open 2",
                 "10,050.00 (+0.50%)", "champion v4 (5 trained)"):  # fmt: skip
        assert part in line


def test_demo_unknown_symbol_is_refused_before_anything_starts(
    tmp_path: Path, pg_fresh_dsn: str, redis_url: str
) -> None:
    settings = Settings.load({}).replace(home=tmp_path, database_url=pg_fresh_dsn,
                                         redis_url=redis_url)  # fmt: skip
    out = io.StringIO()
    code = demo_main(settings, DemoPlan(symbols=("NOSUCHUSDT",)), out)
    assert code == EXIT_CONFIG
    assert "NOSUCHUSDT" in out.getvalue()


@pytest.mark.slow
def test_demo_short_window_stops_at_end_of_data_with_report(
    tmp_path: Path, pg_fresh_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    env = dict(os.environ, AEGIS_HOME=str(tmp_path), AEGIS_DATABASE_URL=pg_fresh_dsn,
               AEGIS_REDIS_URL=redis_url, AEGIS_REDIS_PREFIX=redis_prefix,
               AEGIS_METRICS_PORT="0")  # fmt: skip
    argv = [sys.executable, "-m", "aegis.kernel.demo", "--symbols", "BTCUSDT",
            "--from", "2023-03-20", "--to", "2023-03-21T12:00", "--speed", "8000",
            "--status-every-s", "2"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150)
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    assert "end of data" in out
    for name in ("AEGIS kernel (paper)", "rule-only (backtest)", "buy & hold", "OUT OF SAMPLE"):
        assert name in out
    html = sorted((tmp_path / "reports").glob("demo_*.html"))
    png = sorted((tmp_path / "reports").glob("demo_*.png"))
    assert html and png and png[-1].stat().st_size > 10_000
    assert "max DD %" in html[-1].read_text()
