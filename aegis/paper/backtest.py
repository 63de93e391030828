"""Backtest: the brain's decision pipeline and the paper executor over recorded 1m files, in one
process, without sockets.

What runs is what the kernel runs. Per symbol, once: ``feature_matrix`` (equal to the live
``FeatureEngine`` row for row) → the candidate rule → shadow labels (``label_candidates``).
Then one pass over the minutes of all symbols in time order, replaying the kernel's order of
work within a minute ``M``:

1. **brain**: the decision rows whose closing bar is ``M`` go through
   ``aegis.risk.decision.decide`` (one call per decision time, symbols in id order), sized
   against the brain's ``ExposureBook``; the intents count as open exposure at once;
2. **executor, bars**: ``PaperExchange.on_bar`` for the bars of ``M`` — entries due, exits —
   then the kill switch (``RiskGuards``) observes the account equity; a trip flattens;
3. **executor, intents**: each intent of step 1 passes ``RiskGuards.check_entry`` and is
   submitted (it fills at the open of the symbol's first bar after ``M`` and at or after its
   decision bar's close);
4. **reports**: closed trades and rejected intents go back to the brain's book, which the next
   decision sees.

Speed without a second implementation: the exchange is only given the bars where something can
happen. When a position opens, its exit bar is found at once by ``label_trades_nb`` (the same
``exit_check_nb`` walk the paper exchange makes bar by bar; with no trailing stop the walk
depends only on the entry and the bars), and the exchange gets that bar when its time comes. A fill
(it records the position's share of equity) and a kill-switch flatten first bring every held
symbol's mark up to date by giving the exchange that symbol's latest bar; the guards' equity
and symbol exposure are the held quantities times the closes, summed in the exchange's order,
so they are the live numbers. Minutes where nothing is due are marked at once (one matrix
product: the same values up to summation order) and the kill switch still sees every minute.
With a trailing stop, or after an exit the filters refused, a symbol's every bar goes to the
exchange.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from aegis.features.candidates import CandidateRule
from aegis.ml.labels import MINUTE_MS
from aegis.ml.shadow import CompletedLabels
from aegis.paper.backtest_inputs import BacktestData, SymbolCandidates, symbol_candidates
from aegis.paper.backtest_replay import MinuteReplay
from aegis.paper.exchange import PaperConfig
from aegis.paper.positions import PaperTrade
from aegis.records import INTENT_DTYPE
from aegis.risk.brain_core import BrainConfig
from aegis.risk.decision import SIGNAL_DTYPE, Predictor
from aegis.risk.guards import KillSwitchTrip, RiskLimits

log = logging.getLogger(__name__)


class BacktestConfigError(ValueError):
    """The brain's label rules and the paper executor's rules disagree."""


@dataclass(frozen=True)
class BacktestConfig:
    """Brain, paper executor and risk limits of one backtest; ``from_settings`` mirrors the
    kernel's settings."""

    brain: BrainConfig = field(default_factory=BrainConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    limits: RiskLimits = field(default_factory=RiskLimits)

    def __post_init__(self) -> None:
        rules, paper = self.brain.exit_rules, self.paper
        if paper.bar_interval_ms != MINUTE_MS:
            raise BacktestConfigError("the backtest replays 1m bars: bar_interval_ms must be 60000")
        if paper.decision_interval_ms != self.brain.policy.decision_tf_ms:
            raise BacktestConfigError(
                "paper decision_interval_ms != the brain's decision timeframe"
            )
        same = (
            rules.commission_pct == paper.commission_pct
            and rules.slippage_pct == paper.slippage_pct
            and rules.trailing_pct == paper.trailing_pct
            and rules.max_hold_minutes == paper.max_hold_minutes
        )
        if not same:
            raise BacktestConfigError("label rules (fees, slippage, trailing, time exit) must "
                                      "equal the paper executor's, or labels are not its trades")  # fmt: skip

    @classmethod
    def from_settings(cls, settings: object, rule: CandidateRule | None = None) -> BacktestConfig:
        """Build from ``aegis.config.Settings``; ``rule`` replaces the default SMC rule."""
        extra = {} if rule is None else {"rule": rule}
        return cls(
            brain=BrainConfig.from_settings(settings, **extra),
            paper=PaperConfig.from_settings(settings),
            limits=RiskLimits.from_settings(settings),
        )


@dataclass(frozen=True)
class BacktestResult:
    """Everything one backtest produced; plain data, ready for the report and the store."""

    symbols: Mapping[int, str]
    rule: str
    model_version: int  # 0 = rule-only (cold start)
    starting_equity: float
    start_ms: int
    end_ms: int  # close time of the last bar
    bars: int
    decision_rows: int  # closed decision bars of every symbol
    signals: np.ndarray  # SIGNAL_DTYPE, every candidate with what was decided
    intents: np.ndarray  # INTENT_DTYPE, every intent the brain published
    trades: tuple[PaperTrade, ...]  # closed, in closing order
    open_positions: int  # still open at the end of the data
    labels: CompletedLabels  # shadow labels of every candidate whose horizon passed
    equity_time_ms: np.ndarray  # int64, close time of every minute of the data
    equity: np.ndarray  # float64, cash + open positions at their last close
    exposure: np.ndarray  # float64, open positions' market value
    rejections: Mapping[str, int]
    kill_switch: KillSwitchTrip | None
    timings_s: Mapping[str, float]

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.starting_equity

    @property
    def bars_per_s(self) -> float:
        total = self.timings_s.get("total", 0.0)
        return self.bars / total if total > 0 else float("nan")


def run_backtest(
    data: BacktestData, config: BacktestConfig, model: Predictor | None = None
) -> BacktestResult:
    """Run the kernel's brain and paper executor over ``data``; see the module docstring."""
    started = time.perf_counter()
    parts = [symbol_candidates(s, config.brain, data.trade_from_ms) for s in data.series]
    prepared = time.perf_counter()
    run = MinuteReplay(data, config, model, parts)
    run.replay()
    finished = time.perf_counter()
    timings = {"features_labels": prepared - started, "replay": finished - prepared,
               "total": finished - started}  # fmt: skip
    version = 0 if model is None else int(model.version)
    return BacktestResult(
        symbols=dict(data.symbols),
        rule=config.brain.rule.name,
        model_version=version,
        starting_equity=config.brain.starting_equity,
        start_ms=data.start_ms,
        end_ms=data.end_ms,
        bars=data.bars,
        decision_rows=sum(p.decision_rows for p in parts),
        signals=_concat(run.signals, SIGNAL_DTYPE),
        intents=_concat(run.intents, INTENT_DTYPE),
        trades=tuple(run.trades),
        open_positions=len(run.exchange.open_positions()),
        labels=_completed_labels(parts, config.brain.policy.decision_tf_ms, version),
        equity_time_ms=run.minutes + MINUTE_MS,
        equity=run.equity,
        exposure=run.exposure,
        rejections=dict(run.rejections),
        kill_switch=run.guards.kill_switch.trip,
        timings_s=timings,
    )


def _concat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype)
    # As opaque records: concatenating thousands of small structured arrays field by field
    # costs more than the decisions that made them.
    raw = np.dtype((np.void, dtype.itemsize))
    return np.concatenate([p.view(raw) for p in parts]).view(dtype)


def _completed_labels(parts: list[SymbolCandidates], tf_ms: int, version: int) -> CompletedLabels:
    out = []
    for p in parts:
        lab = p.labels
        done = np.flatnonzero(lab.complete)
        n = len(done)
        out.append(
            CompletedLabels(
                symbol_index=np.full(n, p.symbol_id, np.int64),
                decision_time_ms=p.decision_time_ms[done].astype(np.int64),
                features=p.features[done],
                model_version=np.full(n, version, np.int64),
                entry_time_ms=lab.entry_time_ms[done],
                exit_time_ms=lab.exit_time_ms[done],
                gross_pct=lab.gross_pct[done],
                net_pct=lab.net_pct[done],
                reason=lab.reason[done],
            )
        )
    return CompletedLabels.concat(out)
