"""NautilusTrader leg of ``bench_backtest``: the same EMA(10/30) crossover with a 1% / 2% bracket.

NautilusTrader's bar execution turns each bar into open → high → low → close prices and calls
the strategy after the bar: a market order sent on the signal bar fills at that bar's **close**,
not at the next bar's open as AEGIS and backtesting.py fill, and its bracket levels are set from
that close. The conventions cannot be made identical from the strategy side, so its trades are
compared with AEGIS's by bars (entry at the signal bar's close = the next bar's open time) and
the agreement is reported as a count, not claimed. Fees: the instrument's 0.1% taker fee.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import talib
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import BTC, USDT
from nautilus_trader.model.data import BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, TraderId, Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

MINUTE = 60_000


class EmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    stop_pct: float
    take_pct: float


class EmaCrossBracket(Strategy):
    """EMA(10) crossing above EMA(30) (TA-Lib numbers, given) → market buy with a bracket."""

    def __init__(self, config: EmaCrossConfig, fast: np.ndarray, slow: np.ndarray) -> None:
        super().__init__(config)
        self.fast, self.slow = fast, slow
        self.i = -1

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.config.instrument_id)
        self.qty = self.instrument.make_qty(0.01)
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar) -> None:
        self.i += 1
        i, f, s = self.i, self.fast, self.slow
        if i >= 1 and f[i - 1] <= s[i - 1] and f[i] > s[i]:
            px = bar.close.as_double()
            orders = self.order_factory.bracket(
                instrument_id=self.config.instrument_id, order_side=OrderSide.BUY,
                quantity=self.qty,
                sl_trigger_price=self.instrument.make_price(px * (1 - self.config.stop_pct / 100)),
                tp_price=self.instrument.make_price(px * (1 + self.config.take_pct / 100)),
            )  # fmt: skip
            self.submit_order_list(orders)


def _engine(bars, instrument, bar_type, fast, slow, stop_pct, take_pct):
    engine = BacktestEngine(BacktestEngineConfig(
        trader_id=TraderId("BENCH-001"), logging=LoggingConfig(log_level="ERROR"),
    ))  # fmt: skip
    engine.add_venue(
        venue=Venue("BINANCE"), oms_type=OmsType.HEDGING, account_type=AccountType.CASH,
        base_currency=None, starting_balances=[Money(1e9, USDT), Money(0, BTC)],
        bar_execution=True,
    )  # fmt: skip
    engine.add_instrument(instrument)
    engine.add_data(bars)
    config = EmaCrossConfig(instrument_id=instrument.id, bar_type=bar_type, stop_pct=stop_pct,
                            take_pct=take_pct)  # fmt: skip
    engine.add_strategy(EmaCrossBracket(config, fast, slow))
    return engine


def nautilus_trades(data, stop_pct: float, take_pct: float, fee_pct: float, repeats: int):
    """(trades as (entry row, exit row, exit price), median CPU s, last wall s)."""
    assert fee_pct == 0.1, "the test instrument's taker fee is 0.1%"
    s = data.series[0]
    instrument = TestInstrumentProvider.btcusdt_binance()
    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
    close_ns = pd.to_datetime((s.open_time_ms + MINUTE) * 1_000_000, utc=True)
    df = pd.DataFrame({"open": s.open, "high": s.high, "low": s.low, "close": s.close,
                       "volume": s.volume}, index=close_ns)  # fmt: skip
    bars = BarDataWrangler(bar_type, instrument).process(df)
    fast, slow = talib.EMA(s.close, 10), talib.EMA(s.close, 30)
    cpu, wall, engine = [], 0.0, None
    for k in range(repeats + 1):  # the first run is a warm-up
        if engine is not None:
            engine.dispose()
        engine = _engine(bars, instrument, bar_type, fast, slow, stop_pct, take_pct)
        c0, w0 = time.process_time(), time.perf_counter()
        engine.run()
        if k:
            cpu.append(time.process_time() - c0)
            wall = time.perf_counter() - w0
    report = engine.trader.generate_positions_report()
    engine.dispose()
    t = s.open_time_ms
    trades = []
    closed = report[report["ts_closed"].notna()] if len(report) else report
    for _, row in closed.iterrows():
        opened_ms = pd.Timestamp(row["ts_opened"]).value // 1_000_000
        closed_ms = pd.Timestamp(row["ts_closed"]).value // 1_000_000
        entry = int(np.searchsorted(t, opened_ms))  # filled at the close = next bar's open time
        exit_ = int(np.searchsorted(t, closed_ms - MINUTE))  # the bar whose price filled it
        trades.append((entry, exit_, round(float(row["avg_px_close"]), 6)))
    return sorted(trades), float(np.median(cpu)), wall
