"""The kernel's live path, in one process, as the yardstick of the backtest.

Minute by minute, as the processes do it: the brain's ``BrainCore.on_bars`` (incremental
``FeatureEngine``, ``EmaTracker``, ``ShadowLabeler``) decides on the minute's closed bars; the
executor gives **every** bar to ``PaperExchange.on_bar`` (symbol-id order), lets the kill switch
see ``exchange.equity()``, then checks and submits the brain's intents; reports go back to the
brain's book. No shortcut: this is what the backtest's event-skipping must reproduce exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aegis.ml.shadow import CompletedLabels
from aegis.paper.backtest import BacktestConfig
from aegis.paper.backtest_inputs import BacktestData
from aegis.paper.events import IntentRejected, PositionOpened, TradeClosed
from aegis.paper.exchange import PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.records import BAR_CLOSED, BAR_DTYPE, REPORT_INTENT_REJECTED, REPORT_TRADE_CLOSED
from aegis.risk.brain_core import BrainCore
from aegis.risk.guards import RiskGuards


@dataclass
class LiveRun:
    signals: np.ndarray
    intents: np.ndarray
    trades: list
    labels: CompletedLabels
    equity: np.ndarray
    rejections: dict


def live_reference(data: BacktestData, config: BacktestConfig, model=None) -> LiveRun:
    parts = []
    for s in data.series:
        b = np.zeros(len(s.open_time_ms), BAR_DTYPE)
        b["open_time_ms"], b["symbol_id"], b["flags"] = s.open_time_ms, s.symbol_id, BAR_CLOSED
        b["open"], b["high"], b["low"], b["close"], b["volume"] = (
            s.open,
            s.high,
            s.low,
            s.close,
            s.volume,
        )
        parts.append(b)
    bars = np.concatenate(parts)
    bars = bars[np.lexsort((bars["symbol_id"], bars["open_time_ms"]))]
    equity0 = config.brain.starting_equity
    core = BrainCore(config.brain, data.symbols)
    ex = PaperExchange(config.paper, data.filters, equity0)
    guards = RiskGuards.start(config.limits, equity0, int(bars["open_time_ms"][0]))
    signals, intents, trades, labels, curve = [], [], [], [], []
    rejections: dict[str, int] = {}
    cuts = np.flatnonzero(np.diff(bars["open_time_ms"])) + 1
    for minute in np.split(bars, cuts):
        m = int(minute["open_time_ms"][0])
        step = core.on_bars(minute, model)
        signals.append(step.signals)
        intents.append(step.intents)
        labels.append(step.labels)
        reports = []

        def handle(events, reports=reports):
            for ev in events:
                if isinstance(ev, TradeClosed):
                    trades.append(ev.trade)
                    reports.append((ev.trade.intent_id, REPORT_TRADE_CLOSED,
                                    ev.trade.net_return_pct))  # fmt: skip
                elif isinstance(ev, IntentRejected):
                    rejections[ev.reason] = rejections.get(ev.reason, 0) + 1
                    reports.append((ev.intent_id, REPORT_INTENT_REJECTED, float("nan")))
                else:
                    assert isinstance(ev, PositionOpened)

        for rec in minute:
            handle(ex.on_bar(int(rec["symbol_id"]), m, float(rec["open"]), float(rec["high"]),
                             float(rec["low"]), float(rec["close"])))  # fmt: skip
        if guards.observe_equity(max(ex.equity(), 0.0), m + 60_000) is not None:
            handle(ex.flatten(m + 60_000))
        curve.append(ex.equity())
        for rec in step.intents:
            intent = PaperIntent.from_record(rec)
            sid = intent.symbol_id
            ok = guards.check_entry(sid, intent.notional, intent.decision_time_ms, ex.equity(),
                                    ex.open_count(), ex.symbol_exposure(sid))  # fmt: skip
            if not ok.allowed:
                key = "risk:" + ok.reason
                rejections[key] = rejections.get(key, 0) + 1
                reports.append((intent.intent_id, REPORT_INTENT_REJECTED, float("nan")))
                continue
            out = ex.submit(intent)
            if out.status == "rejected":
                rejections[out.reason] = rejections.get(out.reason, 0) + 1
                reports.append((intent.intent_id, REPORT_INTENT_REJECTED, float("nan")))
        for intent_id, kind, net in reports:
            core.book.on_report(intent_id, kind, net)
    return LiveRun(
        np.concatenate(signals), np.concatenate(intents), trades,
        CompletedLabels.concat([x for x in labels if len(x)]), np.array(curve), rejections,
    )  # fmt: skip
