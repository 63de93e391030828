"""The run report as files: an HTML page and its equity-curve PNG under ``<home>/reports/``.

The chart is drawn with matplotlib's non-interactive Agg backend: each strategy's return (% of
its starting equity) over time, and below it the drawdown from the running peak. Without
matplotlib the HTML is still written and says that the chart is missing.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aegis.paper.report import StrategyRun, StrategySummary, summarize, table_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    png: Path | None  # None when the chart could not be drawn


def draw_equity_png(runs: Sequence[StrategyRun], path: Path, title: str) -> bool:
    """Write the equity-curve chart; return False (and log why) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: report written without its equity chart")
        return False
    fig, (ax, ax_dd) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for run in runs:
        t = np.asarray(run.equity_time_ms, dtype="datetime64[ms]").astype(object)
        e = np.asarray(run.equity, dtype=np.float64)
        ret = (e / run.starting_equity - 1.0) * 100.0
        peak = np.maximum.accumulate(e)
        dd = (e / peak - 1.0) * 100.0
        ax.plot(t, ret, linewidth=1.3, label=run.name)
        ax_dd.plot(t, dd, linewidth=1.0)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_ylabel("return, % of starting equity")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(True, alpha=0.3)
    ax_dd.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax_dd.set_xlabel("date (UTC)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _html_table(summaries: Sequence[StrategySummary]) -> str:
    header, rows = table_rows(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}"
)


def write_report(
    directory: Path,
    runs: Sequence[StrategyRun],
    title: str,
    facts: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    stem: str | None = None,
) -> ReportFiles:
    """Write ``<stem>.html`` and ``<stem>.png`` into ``directory``; the first run is the main one.

    ``facts`` are key/value lines (period, symbols, model version, …); ``notes`` free text.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    facts = facts or {}
    stem = stem or "report_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    png = directory / f"{stem}.png"
    drawn = draw_equity_png(runs, png, title)
    summaries = [summarize(r) for r in runs]
    fact_html = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items()
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    chart = (
        f'<img src="{html.escape(png.name)}" alt="equity curves" width="1000">'
        if drawn
        else "<p><em>Equity chart not drawn: matplotlib is not installed.</em></p>"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><dl>{fact_html}</dl>{_html_table(summaries)}"
        "<p>Net % after commission and slippage. Sharpe: daily returns × √365, risk-free 0. "
        "Exposure: share of the period with at least one position open.</p>"
        f"{chart}<ul>{note_html}</ul></body></html>"
    )
    out = directory / f"{stem}.html"
    out.write_text(page, encoding="utf-8")
    return ReportFiles(out, png if drawn else None)
