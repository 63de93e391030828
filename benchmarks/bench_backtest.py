"""Backtest benchmark: AEGIS against backtesting.py and NautilusTrader on identical work, and
AEGIS's full pipeline (SMC features + model + paper execution).

Peer run: EMA(10) crosses above EMA(30) of 1m closes (TA-Lib EMA numbers) → buy at the next
bar's open; exit by a 1% stop-loss or a 2% take-profit from the fill price (AEGIS's executor
exits; no time exit), long-only, 0.1% commission per side, no slippage, every crossover a new
trade. Bars: the bundled BTCUSDT 1m file (66,087 real bars, its real gaps) replayed COPIES times
back to back, each copy shifted in time after the previous one (the price jumps at the seams are
the same for every engine). Conventions aligned so the trades must be identical:

* entry at the open of the bar after the signal bar (backtesting.py's default; AEGIS's rule);
* stop checked before take-profit in a bar that touches both (both engines are pessimistic);
  a bar opening beyond a level fills at its open; the entry bar itself is checked;
* backtesting.py fixes SL/TP prices when the order is placed, AEGIS sets them from the fill
  price: backtesting.py is given the levels computed from the fill price (the next bar's open).

Speed is 1m bars per second of process CPU time (the machine is shared; CPU time is what the
engine itself cost), median of REPEATS runs after a warm-up run, data loading excluded; the
wall-clock rate of the last run is reported too. Run alone: ``python -m benchmarks.bench_backtest``.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import talib

from aegis.features.candidates import ema_crossover
from aegis.ml.labels import ExitRules
from aegis.paper.backtest import BacktestConfig, run_backtest
from aegis.paper.backtest_inputs import BacktestData, load_backtest_data
from aegis.paper.exchange import PaperConfig
from aegis.risk.brain_core import BrainConfig, SymbolSeries
from aegis.risk.decision import DecisionPolicy
from aegis.risk.guards import RiskLimits
from aegis.risk.sizing import SizingPolicy

COPIES = 4
REPEATS = 3
STOP_PCT, TAKE_PCT, FEE_PCT = 1.0, 2.0, 0.1
MINUTE = 60_000


def btc_bars(copies: int = COPIES) -> BacktestData:
    """The bundled BTCUSDT 1m recording, ``copies`` times back to back (time-shifted)."""
    one = load_backtest_data(None, ["BTCUSDT"])
    s = one.series[0]
    span = int(s.open_time_ms[-1] - s.open_time_ms[0]) + MINUTE
    t = np.concatenate([s.open_time_ms + k * span for k in range(copies)])
    cols = [np.tile(np.asarray(a), copies) for a in (s.open, s.high, s.low, s.close, s.volume)]
    return BacktestData(one.symbols, (SymbolSeries(s.symbol_id, t, *cols),), one.filters)


def ema_config() -> BacktestConfig:
    """AEGIS set up as the peers: every crossover trades, nothing caps it, no time exit."""
    rules = ExitRules(stop_pct=STOP_PCT, take_pct=TAKE_PCT, max_hold_minutes=0,
                      commission_pct=FEE_PCT, slippage_pct=0.0)  # fmt: skip
    policy = DecisionPolicy(
        decision_timeframe="1m", stop_pct=STOP_PCT, take_pct=TAKE_PCT,
        cold_start_notional=1_000.0, cold_start_min_confidence=0.0,
        sizing=SizingPolicy(max_open_positions=1_000_000, max_position_pct=100.0,
                            max_symbol_exposure_pct=100.0),
    )  # fmt: skip
    return BacktestConfig(
        brain=BrainConfig(policy=policy, exit_rules=rules, rule=ema_crossover(10, 30),
                          starting_equity=1e9),
        paper=PaperConfig(commission_pct=FEE_PCT, slippage_pct=0.0, max_hold_minutes=0,
                          decision_interval_ms=MINUTE),
        limits=RiskLimits(max_daily_loss_pct=0.0, max_drawdown_pct=0.0,
                          max_open_positions=1_000_000, max_symbol_exposure_pct=100.0,
                          min_entry_interval_ms=0),
    )  # fmt: skip


def _timed(fn, repeats: int = REPEATS):
    fn()  # warm-up: numba cache load, imports, first touch
    cpu, out, wall = [], None, 0.0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall = time.perf_counter() - w0
    return out, float(np.median(cpu)), wall


def aegis_trades(data: BacktestData, config: BacktestConfig):
    result, cpu, wall = _timed(lambda: run_backtest(data, config))
    t = data.series[0].open_time_ms
    trades = sorted(
        (int(np.searchsorted(t, x.entry_at_ms)), int(np.searchsorted(t, x.exit_at_ms - MINUTE)),
         round(x.close_price, 6))
        for x in result.trades
    )  # fmt: skip
    return trades, cpu, wall, result


def backtesting_py_trades(data: BacktestData):
    os.environ.setdefault("TQDM_DISABLE", "1")  # its progress bar is not part of the work
    import pandas as pd
    from backtesting import Backtest, Strategy

    s = data.series[0]
    df = pd.DataFrame(
        {"Open": s.open, "High": s.high, "Low": s.low, "Close": s.close, "Volume": s.volume},
        index=pd.to_datetime(s.open_time_ms, unit="ms"),
    )
    fast_all, slow_all = talib.EMA(s.close, 10), talib.EMA(s.close, 30)
    next_open = np.append(s.open[1:], np.nan)

    class EmaCross(Strategy):
        def init(self):
            self.fast = self.I(lambda: fast_all, name="ema10")
            self.slow = self.I(lambda: slow_all, name="ema30")

        def next(self):
            i = len(self.data) - 1
            f, sl = self.fast, self.slow
            if i >= 1 and f[-2] <= sl[-2] and f[-1] > sl[-1] and i + 1 < len(next_open):
                fill = next_open[i]
                try:
                    self.buy(size=1, sl=fill * (1.0 - STOP_PCT / 100.0),
                             tp=fill * (1.0 + TAKE_PCT / 100.0))  # fmt: skip
                except ValueError:
                    self.refused += 1  # a level on the wrong side of this close (a seam gap)

    EmaCross.refused = 0

    def run():
        EmaCross.refused = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = Backtest(df, EmaCross, cash=1e9, commission=FEE_PCT / 100.0,
                          exclusive_orders=False, finalize_trades=False)  # fmt: skip
            return bt.run()

    stats, cpu, wall = _timed(run)
    tr = stats._trades
    trades = sorted(
        (int(a), int(b), round(float(p), 6))
        for a, b, p in zip(tr["EntryBar"], tr["ExitBar"], tr["ExitPrice"], strict=True)
    )
    return trades, cpu, wall, EmaCross.refused


def full_pipeline() -> dict:
    """AEGIS's own work: SMC features + candidates + shadow labels + decisions + paper, on every
    bundled 1m file, default settings (cold start: rule-only, as a fresh kernel)."""
    data = load_backtest_data(None, None)
    result, cpu, wall = _timed(lambda: run_backtest(data, BacktestConfig()), repeats=REPEATS)
    t = result.timings_s
    return {
        "full_bars": data.bars,
        "full_symbols": len(data.series),
        "full_bars_per_cpu_s": data.bars / cpu,
        "full_bars_per_wall_s_last": data.bars / wall,
        "full_trades": len(result.trades),
        "full_signals": len(result.signals),
        "full_share_features_labels": t["features_labels"] / t["total"],
        "full_share_replay": t["replay"] / t["total"],
    }


def _compare(name: str, ours: list, theirs: list) -> dict:
    """Trades are (entry row, exit row, exit price); equal means all three, for every trade."""
    a, b = set(ours), set(theirs)
    bars_a, bars_b = {x[:2] for x in ours}, {x[:2] for x in theirs}
    return {
        f"{name}_trades": len(theirs),
        f"{name}_trades_equal": a == b,
        f"{name}_only_aegis": len(a - b),
        f"{name}_only_peer": len(b - a),
        f"{name}_same_entry_bar": len({x[0] for x in ours} & {x[0] for x in theirs}),
        f"{name}_same_entry_and_exit_bar": len(bars_a & bars_b),
    }


def run() -> dict:
    copies = int(os.environ.get("AEGIS_BENCH_BT_COPIES", COPIES))
    data = btc_bars(copies)
    n = data.bars
    out: dict = {"bars": n, "copies_of_btc_file": copies, "real_bars_per_copy": n // copies}
    ours, cpu, wall, result = aegis_trades(data, ema_config())
    out.update({"aegis_bars_per_cpu_s": n / cpu, "aegis_bars_per_wall_s_last": n / wall,
                "aegis_trades": len(ours), "aegis_open_at_end": result.open_positions})  # fmt: skip
    try:
        theirs, bcpu, bwall, refused = backtesting_py_trades(data)
        out.update({"backtesting_py_bars_per_cpu_s": n / bcpu,
                    "backtesting_py_bars_per_wall_s_last": n / bwall,
                    "backtesting_py_refused_orders": refused,
                    "aegis_vs_backtesting_py_speed": bcpu / cpu})  # fmt: skip
        out.update(_compare("backtesting_py", ours, theirs))
    except ImportError:
        out["backtesting_py"] = "not installed (pip install backtesting)"
    try:
        from benchmarks.bench_backtest_nautilus import nautilus_trades

        ntr, ncpu, nwall = nautilus_trades(data, STOP_PCT, TAKE_PCT, FEE_PCT, REPEATS)
        out.update({"nautilus_bars_per_cpu_s": n / ncpu, "nautilus_bars_per_wall_s_last": n / nwall,
                    "aegis_vs_nautilus_speed": ncpu / cpu})  # fmt: skip
        out.update(_compare("nautilus", ours, ntr))
    except ImportError as exc:
        out["nautilus"] = f"not run: {exc}"
    except Exception as exc:  # a peer's failure is reported, never allowed to hide ours
        out["nautilus"] = f"failed: {type(exc).__name__}: {exc}"
    out.update(full_pipeline())
    _print(out)
    return out


def _print(out: dict) -> None:
    print(f"backtest benchmark: {out['bars']:,} BTCUSDT 1m bars "
          f"({out['copies_of_btc_file']} x the bundled file)")  # fmt: skip
    rows = [("AEGIS (EMA cross)", "aegis")]
    rows += [("backtesting.py", "backtesting_py"), ("NautilusTrader", "nautilus")]
    for label, key in rows:
        rate = out.get(f"{key}_bars_per_cpu_s")
        if rate is None:
            print(f"  {label:<20} {out.get(key, 'not run')}")
            continue
        same = out.get(f"{key}_trades_equal", "")
        detail = ""
        if same is False:
            detail = (f"  differ: same entry bar {out[f'{key}_same_entry_bar']}, same entry+exit "
                      f"bar {out[f'{key}_same_entry_and_exit_bar']}")  # fmt: skip
        print(f"  {label:<20} {rate:>12,.0f} bars/CPU-s  trades {out.get(f'{key}_trades')}"
              f"{'  identical to AEGIS' if same is True else ''}{detail}")  # fmt: skip
    print(
        f"  AEGIS full pipeline  {out['full_bars_per_cpu_s']:>12,.0f} bars/CPU-s "
        f"({out['full_bars']:,} bars, {out['full_symbols']} symbols, SMC + decisions + paper)"
    )


if __name__ == "__main__":
    run()
