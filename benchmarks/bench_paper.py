"""Benchmark of the paper executor's in-memory path and of order-filter validation.

- intent_to_fill: one brain intent from its ring record to a filled, recordable position:
  ``PaperIntent.from_record`` → ``RiskGuards.check_entry`` → ``PaperExchange.submit`` →
  ``on_bar`` of the entry bar (real ``SymbolFilters.fit`` of the MARKET BUY, the sellable-at-stop
  ``check``, the first exit check) → ``PaperPosition.to_record`` (the row the store writes).
  Ten real symbols (2024 exchangeInfo), about nine other positions open, as in normal running.
  The database write is not included (the store's benchmark measures it).
- filter_fit / filter_check: one ``SymbolFilters.fit`` of a MARKET BUY, one ``check`` of a
  MARKET SELL, per order, over the same ten symbols.
- bar_step: one ``on_bar`` over 100 open positions of one symbol (no exit fires), per position.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np

from aegis.binance.filters import SymbolFilters
from aegis.paper.events import PositionOpened
from aegis.paper.exchange import PaperConfig, PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.records import INTENT_DTYPE, SIDE_BUY
from aegis.risk.guards import RiskGuards, RiskLimits

INFO = Path(__file__).resolve().parents[1] / "aegis/data/exchange_info"
SYMBOLS = {"BTCUSDT": 30_000.0, "ETHUSDT": 1_800.0, "SOLUSDT": 22.0, "ADAUSDT": 0.38,
           "DOGEUSDT": 0.08, "XRPUSDT": 0.5, "BNBUSDT": 320.0, "LTCUSDT": 90.0,
           "LINKUSDT": 7.0, "DOTUSDT": 6.0}  # fmt: skip
MIN = 60_000
T0 = 1_679_616_000_000


def _stats_us(ns: list[int]) -> dict:
    a = np.array(ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max()), "n": len(a)}  # fmt: skip


def _filters() -> list[tuple[SymbolFilters, float]]:
    with gzip.open(INFO / "binance_spot_exchangeInfo_20240908.json.gz") as fh:
        by_name = {s["symbol"]: s for s in json.load(fh)["symbols"]}
    return [(SymbolFilters.from_symbol_info(by_name[n]), p) for n, p in SYMBOLS.items()]


def _intent_to_fill(filters, n: int) -> dict:
    book = PaperExchange(PaperConfig(), {i: f for i, (f, _) in enumerate(filters)}, 1e9)
    guards = RiskGuards.start(RiskLimits(max_open_positions=100, max_symbol_exposure_pct=50.0),
                              book.equity(), T0)  # fmt: skip
    rec = np.zeros((), dtype=INTENT_DTYPE)
    rec["side"], rec["notional"], rec["stop_pct"], rec["take_pct"] = SIDE_BUY, 500.0, 1.0, 2.0
    rec["features"] = np.linspace(-1, 1, 12)
    times = []
    for i in range(n):
        sym = i % len(filters)
        price = filters[sym][1]
        decision = T0 + (i // len(filters)) * 5 * MIN
        book.flatten(decision, sym)  # keeps ~9 other positions open; not timed
        rec["intent_id"], rec["symbol_id"], rec["decision_time_ms"] = i + 1, sym, decision
        t0 = time.perf_counter_ns()
        intent = PaperIntent.from_record(rec)
        decision_ok = guards.check_entry(sym, intent.notional, decision, book.equity(),
                                         book.open_count(), book.symbol_exposure(sym))  # fmt: skip
        book.submit(intent)
        events = book.on_bar(sym, decision + 5 * MIN, price, price * 1.001, price * 0.999, price)
        row = events[0].position.to_record()
        times.append(time.perf_counter_ns() - t0)
        assert decision_ok.allowed and isinstance(events[0], PositionOpened) and row["quantity"]
    return _stats_us(times[n // 10 :])  # the first tenth warms caches up


def _filter_calls(filters, n: int) -> tuple[dict, dict]:
    fit_ns, check_ns = [], []
    for i in range(n):
        f, price = filters[i % len(filters)]
        qty = 500.0 / price
        t0 = time.perf_counter_ns()
        q, _ = f.fit("BUY", "MARKET", qty, avg_price=price)
        t1 = time.perf_counter_ns()
        f.check("SELL", "MARKET", q, avg_price=price * 0.99)
        t2 = time.perf_counter_ns()
        fit_ns.append(t1 - t0)
        check_ns.append(t2 - t1)
    return _stats_us(fit_ns[n // 10 :]), _stats_us(check_ns[n // 10 :])


def _bar_step(filters, positions: int = 100, bars: int = 300) -> dict:
    f, price = filters[0]
    book = PaperExchange(PaperConfig(max_hold_minutes=0), {0: f}, 1e9)
    for i in range(positions):
        book.submit(PaperIntent(i + 1, 0, T0, 500.0, 50.0, 500.0))
    book.on_bar(0, T0 + 5 * MIN, price, price, price, price)
    times = []
    for k in range(bars):
        t0 = time.perf_counter_ns()
        book.on_bar(0, T0 + (6 + k) * MIN, price, price * 1.001, price * 0.999, price)
        times.append((time.perf_counter_ns() - t0) / positions)
    assert len(book.open_positions()) == positions
    return _stats_us(times[bars // 10 :])


def run() -> dict:
    filters = _filters()
    fill = _intent_to_fill(filters, 5_000)
    fit, check = _filter_calls(filters, 20_000)
    step = _bar_step(filters)
    out = {"intent_to_fill": fill, "filter_fit": fit, "filter_check": check,
           "bar_step_per_position": step}  # fmt: skip
    print("AEGIS paper benchmark (in-memory; DB write not included)")
    for name, s in out.items():
        print(f"  {name:22s} p50 {s['p50_us']:8.1f} us   p99 {s['p99_us']:8.1f} us   (n={s['n']})")
    return out


if __name__ == "__main__":
    run()
