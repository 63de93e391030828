"""Render the headline figures of ``benchmarks/results/latest.json`` as a Markdown table.

``python -m benchmarks.summary`` prints the table the README shows. Each row names the JSON path
it reads, so a figure in the README can always be traced to the run that produced it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# (area, JSON path inside the area, what it measures, unit, target text, target check)
HEADLINES: list[tuple[str, str, str, str, str, object]] = [
    (
        "ring",
        "transports.ring_record.latency_us.p50",
        "ring one-way latency p50, per record",
        "µs",
        "≤ 3",
        lambda v: v <= 3,
    ),
    (
        "ring",
        "transports.ring_record.latency_us.p99",
        "ring one-way latency p99, per record",
        "µs",
        "≤ 20",
        lambda v: v <= 20,
    ),
    (
        "ring",
        "transports.ring_record.throughput.records_per_s",
        "ring throughput, per record",
        "rec/s",
        "≥ 1.5M",
        lambda v: v >= 1.5e6,
    ),
    (
        "ring",
        "transports.ring_record_default.latency_us.p50",
        "ring one-way p50 with the default (blocking, ~0 % idle CPU) wait",
        "µs",
        "",
        None,
    ),
    (
        "ring",
        "transports.ring_batch.throughput.records_per_s",
        "ring throughput, batches",
        "rec/s",
        "≥ 50M",
        lambda v: v >= 50e6,
    ),
    (
        "ring",
        "transports.mp_queue.latency_us.p50",
        "multiprocessing.Queue one-way p50",
        "µs",
        "",
        None,
    ),
    (
        "ring",
        "transports.mp_queue.throughput.records_per_s",
        "multiprocessing.Queue throughput",
        "rec/s",
        "",
        None,
    ),
    (
        "ring",
        "ring_idle_cpu_pct_by_wait.BlockingWait",
        "idle consumer CPU, default wait",
        "%",
        "≤ 2",
        lambda v: v <= 2,
    ),
    (
        "store",
        "copy_rows_per_s",
        "market_data ingest (COPY path)",
        "rows/s",
        "≥ 100k",
        lambda v: v >= 100_000,
    ),
    ("store", "executemany_rows_per_s", "market_data ingest (executemany)", "rows/s", "", None),
    (
        "kernel",
        "restart_to_first_record_s.p99",
        "SIGKILL → replacement's first record p99",
        "s",
        "≤ 1",
        lambda v: v <= 1,
    ),
    (
        "feed",
        "pipeline_frames_per_s",
        "feed parse+validate+publish",
        "frames/s",
        "≥ 50k",
        lambda v: v >= 50_000,
    ),
    (
        "feed",
        "ws_handled_to_publish_us_p99",
        "WebSocket frame handed to the feed → ring publish p99",
        "µs",
        "≤ 200",
        lambda v: v <= 200,
    ),
    (
        "feed",
        "burst_ms_p99",
        "a close burst of 300 frames read at once → all in the ring p99",
        "ms",
        "",
        None,
    ),
    (
        "feed",
        "ws_recv_to_publish_us_p99",
        "socket read → ring publish p99, feed saturated (queueing)",
        "µs",
        "",
        None,
    ),
    (
        "binance",
        "filter_check_us_p50",
        "SymbolFilters.check per order p50",
        "µs",
        "≤ 20",
        lambda v: v <= 20,
    ),
    ("features", "batch_bars_per_cpu_s", "features over recorded 1m bars", "bars/CPU-s", "", None),
    (
        "brain",
        "smc_close_ms_p99",
        "300 symbols close a 5m bar: features+model+sizing p99",
        "ms",
        "≤ 20",
        lambda v: v <= 20,
    ),
    (
        "executor",
        "durable.intent_to_fill_recorded.p99_us",
        "intent → paper fill recorded p99 (fsynced commits)",
        "µs",
        "≤ 2000",
        lambda v: v <= 2000,
    ),
    (
        "executor",
        "durable.intent_submitted.p99_us",
        "intent → validated order recorded p99 (paper)",
        "µs",
        "",
        None,
    ),
    (
        "live",
        "submit_pg_journal.p99_ms",
        "intent → MARKET order filled and journaled p99 (simulator)",
        "ms",
        "",
        None,
    ),
    (
        "backtest",
        "full_bars_per_cpu_s",
        "backtest, full pipeline",
        "bars/CPU-s",
        "≥ 200k",
        lambda v: v >= 200_000,
    ),
    (
        "backtest",
        "aegis_vs_backtesting_py_speed",
        "EMA crossover: AEGIS ÷ backtesting.py speed",
        "×",
        "> 1",
        lambda v: v > 1,
    ),
    (
        "backtest",
        "aegis_vs_nautilus_speed",
        "EMA crossover: AEGIS ÷ NautilusTrader speed",
        "×",
        "> 1",
        lambda v: v > 1,
    ),
    (
        "e2e",
        "latency.ws_to_executor_ms.p99",
        "WebSocket frame → intent at executor p99",
        "ms",
        "≤ 5",
        lambda v: v <= 5,
    ),
    (
        "e2e",
        "throughput.sustained_bars_per_s",
        "sustained bars/s through the kernel",
        "bars/s",
        "",
        None,
    ),
    (
        "e2e",
        "kernel_rss_mb_total",
        "RSS of the four kernel processes",
        "MB",
        "≤ 1024",
        lambda v: v <= 1024,
    ),
    (
        "e2e",
        "kernel_rss_mb_total_with_spares",
        "RSS of the kernel with its three warm spares (default)",
        "MB",
        "≤ 1024",
        lambda v: v <= 1024,
    ),
]


def lookup(data: dict, path: str) -> object:
    node: object = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fmt(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _runs(report: dict) -> str:
    """When and where the areas were measured, with each run's noise (a partial run re-measures
    some, maybe on another machine)."""
    runs: dict[str, list[str]] = {}
    noise: dict[str, dict] = {}
    cpu: dict[str, str] = {}
    for area, result in sorted(report["areas"].items()):
        when = result.get("measured_at", report.get("generated_at", "?"))
        runs.setdefault(when, []).append(area)
        noise[when] = result.get("noise_before", report["noise_before"])
        cpu[when] = result.get("machine", report["machine"]).get("cpu", "?")
    parts = []
    for when, names in sorted(runs.items()):
        n = noise[when]
        which = "all areas" if len(runs) == 1 else ", ".join(names)
        parts.append(f"{which} at {when} on {cpu[when]} (load average {n['loadavg_1m']:.2f}, "
                     f"Python calibration loop p50 "
                     f"{n.get('calibration_loop_ms_p50', float('nan')):.1f} ms, "
                     f"spread {n['calibration_spread_pct']:.0f} %)")  # fmt: skip
    return "; ".join(parts)


def table(report: dict) -> str:
    lines = [
        f"`make bench` ({report['machine'].get('cores')} cores): {_runs(report)}.",
        "",
        "| area | measure | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for area, path, what, unit, target, check in HEADLINES:
        result = report["areas"].get(area)
        value = None if result is None else lookup(result, path)
        if not isinstance(value, int | float):
            shown, met = ("not run" if result is None or "error" in result else "—"), ""
        else:
            shown = f"{fmt(float(value))} {unit}"
            met = "" if check is None else ("yes" if check(float(value)) else "**no**")
        lines.append(f"| {area} | {what} | {shown} | {target} | {met} |")
    return "\n".join(lines)


def main() -> int:
    print(table(json.loads(RESULTS.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
