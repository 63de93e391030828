"""The minute loop of a backtest: the brain's book and the paper executor, event by event.

See ``aegis.paper.backtest`` for what runs in which order within a minute, and why the
exchange is given only the bars where something can happen.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from aegis.ml.labels import MINUTE_MS, label_trades_nb
from aegis.paper.backtest_inputs import SymbolCandidates
from aegis.paper.events import (
    SUBMIT_PENDING,
    SUBMIT_REJECTED,
    IntentRejected,
    PositionOpened,
    TradeClosed,
)
from aegis.paper.exchange import PaperExchange
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import PaperTrade
from aegis.records import INTENT_DTYPE, N_FEATURES, REPORT_INTENT_REJECTED, REPORT_TRADE_CLOSED
from aegis.risk.decision import DecisionRows, decide
from aegis.risk.exposure import ExposureBook
from aegis.risk.guards import KillSwitchTrip, RiskGuards

RISK_PREFIX = "risk:"


@dataclass(frozen=True)
class CandidateQueue:
    """Every symbol's candidates in decision order: (emit minute, decision time, symbol id)."""

    symbol_id: np.ndarray
    decision_time_ms: np.ndarray
    emit_ms: np.ndarray
    features: np.ndarray
    confidence: np.ndarray

    @staticmethod
    def merge(parts: list[SymbolCandidates]) -> CandidateQueue:
        sid = np.concatenate([np.full(len(p.emit_ms), p.symbol_id, np.uint32) for p in parts])
        dtime = np.concatenate([p.decision_time_ms for p in parts]).astype(np.int64)
        emit = np.concatenate([p.emit_ms for p in parts]).astype(np.int64)
        feats = np.concatenate([p.features for p in parts]).reshape(-1, N_FEATURES)
        conf = np.concatenate([p.confidence for p in parts])
        order = np.lexsort((sid, dtime, emit))
        return CandidateQueue(sid[order], dtime[order], emit[order], feats[order], conf[order])


class MinuteReplay:
    """The minute loop of one backtest (state of the brain's book and the executor)."""

    def __init__(self, data, config, model, parts: list[SymbolCandidates]) -> None:
        self.config = config
        self.model = model
        self.policy = config.brain.policy
        self.series = {s.symbol_id: s for s in data.series}
        self.col = {s.symbol_id: j for j, s in enumerate(data.series)}
        self.minutes = traded_minutes(data)
        self.closes = forward_filled_closes(self.minutes, data.series)
        self.cands = CandidateQueue.merge(parts)
        # decision rows of the backtest: no ring stamp, every row a candidate (read-only views)
        self._no_stamp = np.zeros(len(self.cands.emit_ms), np.int64)
        self._all_candidates = np.ones(len(self.cands.emit_ms), bool)
        equity = config.brain.starting_equity
        self.book = ExposureBook(equity, config.brain.horizon_ms)
        self.exchange = PaperExchange(config.paper, data.filters, equity)
        self.guards = RiskGuards.start(config.limits, equity, int(self.minutes[0]))
        self.rules = config.brain.exit_rules
        self.dense_all = config.paper.trailing_pct > 0.0
        self.signals: list[np.ndarray] = []
        self.intents: list[np.ndarray] = []
        self.trades: list[PaperTrade] = []
        self.rejections: Counter[str] = Counter()
        self.equity = np.empty(len(self.minutes))
        self.exposure = np.empty(len(self.minutes))
        self._fed: dict[int, int] = {}  # symbol id -> open time of the last bar given
        self._entries: dict[int, set[int]] = {}  # minute -> symbols with an entry due
        self._exits: dict[int, set[int]] = {}  # minute -> symbols with an exit due
        self._exit_at: dict[int, int] = {}  # intent id -> minute of its exit bar, -1 none
        self._dense: set[int] = set()  # symbols whose every bar goes to the exchange
        # open positions in the exchange's order: (intent id, symbol id, column, quantity)
        self._held: list[tuple[int, int, int, float]] = []
        self._held_cols = np.zeros(0, np.int64)
        self._held_qty = np.zeros(0)
        self._reports: list[tuple[int, int, float]] = []

    # -- the loop ---------------------------------------------------------------------------------
    def replay(self) -> None:
        group_minute, batches = self._decision_groups()
        n_groups = len(batches)
        group_row = np.searchsorted(self.minutes, group_minute).tolist()
        minutes = self.minutes.tolist()
        n = len(minutes)
        g = i = 0
        while i < n:
            m = minutes[i]
            intents = None
            if g < n_groups and group_row[g] == i:
                if i:
                    self.book.expire(minutes[i - 1])
                intents = self._decide(batches[g])
                g += 1
            if m in self._entries or m in self._exits or self._dense:
                self._bars(i, m)
            if self._observe(i, m) is not None:
                self._flatten(i, m)
            if intents is not None and len(intents):
                for rec in intents:
                    self._submit(rec, i, m)
            self._send_reports()
            # Until the next minute where something happens, the account holds still: mark
            # it to those minutes' closes at once and let the kill switch see each of them.
            nxt = min(group_row[g] if g < n_groups else n, self._next_event_row(i))
            if nxt > i + 1:
                trip = self._observe_quiet(i + 1, nxt)
                if trip is not None:
                    self._flatten(trip, minutes[trip])
                    self._send_reports()
                    nxt = trip + 1
            i = nxt

    def _next_event_row(self, i: int) -> int:
        if self._dense:
            return i + 1
        soon = min(min(self._entries, default=_NEVER), min(self._exits, default=_NEVER))
        if soon == _NEVER:
            return len(self.minutes)
        return int(self.minutes.searchsorted(soon))

    def _send_reports(self) -> None:
        for intent_id, kind, net in self._reports:
            self.book.on_report(intent_id, kind, net)
        self._reports.clear()

    def _observe_quiet(self, a: int, b: int) -> int | None:
        """Minutes ``a``..``b-1`` with no event: equity curve at once, kill switch minute by
        minute; return the row where it trips (the rest is left for the caller), else None."""
        cash = self.exchange.cash
        held = self.closes[a:b, self._held_cols] @ self._held_qty if self._held else np.zeros(b - a)
        equity = cash + held
        self.equity[a:b] = equity
        self.exposure[a:b] = held
        lim = self.config.limits
        if not (lim.max_daily_loss_pct or lim.max_drawdown_pct):
            return None  # a disabled kill switch only tracks its peak: nothing to decide
        observe = self.guards.observe_equity
        close_ms = (self.minutes[a:b] + MINUTE_MS).tolist()
        for k, (e, t) in enumerate(zip(equity.tolist(), close_ms, strict=True)):
            if observe(max(e, 0.0), t) is not None:
                return a + k
        return None

    def _decision_groups(self) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
        """The emit minutes of the candidates and, per minute, the (start, end) rows of each
        decision time in it: one ``decide`` call each."""
        c = self.cands
        n = len(c.emit_ms)
        if not n:
            return np.zeros(0, np.int64), []
        new_minute = np.diff(c.emit_ms) != 0
        cut = np.flatnonzero(new_minute | (np.diff(c.decision_time_ms) != 0)) + 1
        edges = [0, *cut.tolist(), n]
        starts = np.concatenate([[0], np.flatnonzero(new_minute) + 1])
        first = [*np.searchsorted(edges, starts).tolist(), len(edges) - 1]
        batches = [list(zip(edges[a:b], edges[a + 1 : b + 1], strict=True))
                   for a, b in itertools.pairwise(first)]  # fmt: skip
        return c.emit_ms[starts], batches

    def _decide(self, batches: list[tuple[int, int]]) -> np.ndarray:
        c = self.cands
        out = []
        for lo, hi in batches:
            s = slice(lo, hi)
            ids = c.symbol_id[s]
            k = hi - lo
            rows = DecisionRows(ids, c.decision_time_ms[s], self._no_stamp[:k], c.features[s],
                                self._all_candidates[:k], c.confidence[s])  # fmt: skip
            d = decide(rows, self.model, self.book.equity, self.book.open_positions,
                       self.book.exposure(ids), self.policy)  # fmt: skip
            self.book.open_intents(d.intents)
            self.signals.append(d.signals)
            if len(d.intents):
                self.intents.append(d.intents)
                out.append(d.intents)
        if not out:
            return np.zeros(0, INTENT_DTYPE)
        return out[0] if len(out) == 1 else np.concatenate(out)

    # -- executor -------------------------------------------------------------------------------
    def _bars(self, i: int, m: int) -> None:
        """The bars of minute ``m`` the exchange must see, in symbol-id order (ring order)."""
        due = self._entries.pop(m, set())
        feed = due | self._exits.pop(m, set())
        feed |= {s for s in self._dense if self._has_bar(s, m)}
        if due:
            # a fill reads the account (position_size_pct): every mark must be the live one
            self._catch_up_marks(m)
            feed |= {sid for _, sid, _, _ in self._held if self._has_bar(sid, m)}
        for sid in sorted(feed):
            s = self.series[sid]
            self._feed_row(sid, int(s.open_time_ms.searchsorted(m)))

    def _flatten(self, i: int, m: int) -> None:
        self._catch_up_marks(m + 1)
        self._handle(self.exchange.flatten(m + MINUTE_MS))
        self._entries.clear()
        self._exits.clear()
        self.equity[i], self.exposure[i] = self._account(i)

    def _account(self, i: int) -> tuple[float, float]:
        """(equity, positions' value) at the closes of minute ``i``, summed as the exchange does."""
        row = self.closes[i].tolist()
        held = sum([qty * row[col] for _, _, col, qty in self._held])
        return self.exchange.cash + held, held

    def _submit(self, rec: np.void, i: int, m: int) -> None:
        ex = self.exchange
        intent = PaperIntent.from_record(rec)
        sid = intent.symbol_id
        equity, _ = self._account(i)
        row = self.closes[i].tolist()
        exposure = sum([qty * row[col] for _, s, col, qty in self._held if s == sid])
        exposure += sum([p.notional for p in ex.pending_intents() if p.symbol_id == sid])
        decision = self.guards.check_entry(sid, intent.notional, intent.decision_time_ms, equity,
                                           ex.open_count(), exposure)  # fmt: skip
        if not decision.allowed:
            self.rejections[RISK_PREFIX + decision.reason] += 1
            self._reports.append((intent.intent_id, REPORT_INTENT_REJECTED, float("nan")))
            return
        outcome = ex.submit(intent)
        if outcome.status == SUBMIT_REJECTED:
            self.rejections[outcome.reason] += 1
            self._reports.append((intent.intent_id, REPORT_INTENT_REJECTED, float("nan")))
            return
        if outcome.status != SUBMIT_PENDING:
            return
        t = self.series[sid].open_time_ms
        # the bar of M reached the executor before this intent: the entry is a later bar
        wanted = max(intent.decision_time_ms + self.config.paper.decision_interval_ms, m + 1)
        j = int(t.searchsorted(wanted))
        if j < len(t):
            self._entries.setdefault(int(t[j]), set()).add(sid)

    def _feed_row(self, sid: int, j: int) -> None:
        s = self.series[sid]
        t = int(s.open_time_ms[j])
        if self._fed.get(sid, -1) >= t:
            return
        self._fed[sid] = t
        events = self.exchange.on_bar(sid, t, float(s.open[j]), float(s.high[j]),
                                      float(s.low[j]), float(s.close[j]))  # fmt: skip
        if events:
            self._handle(events)
        if any(self._exit_at.get(h[0]) == t for h in self._held if h[1] == sid):
            # the filters refused an exit: walk this symbol bar by bar from now on
            self._dense.add(sid)

    def _catch_up_marks(self, before_ms: int) -> None:
        """Give the exchange each held symbol's latest bar opening before ``before_ms``."""
        for sid in sorted({sid for _, sid, _, _ in self._held}):
            t = self.series[sid].open_time_ms
            j = int(t.searchsorted(before_ms)) - 1
            if j >= 0:
                self._feed_row(sid, j)

    def _handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, PositionOpened):
                pos = ev.position
                self._held.append((pos.intent_id, pos.symbol_id, self.col[pos.symbol_id],
                                   float(pos.quantity)))  # fmt: skip
                if self.dense_all:
                    self._dense.add(pos.symbol_id)
                    continue
                at = self._exit_minute(pos)
                self._exit_at[pos.intent_id] = at
                if at >= 0:
                    self._exits.setdefault(at, set()).add(pos.symbol_id)
            elif isinstance(ev, TradeClosed):
                tr = ev.trade
                self.trades.append(tr)
                self._held = [h for h in self._held if h[0] != tr.intent_id]
                self._exit_at.pop(tr.intent_id, None)
                self._reports.append((tr.intent_id, REPORT_TRADE_CLOSED, tr.net_return_pct))
            elif isinstance(ev, IntentRejected):
                self.rejections[ev.reason] += 1
                self._reports.append((ev.intent_id, REPORT_INTENT_REJECTED, float("nan")))
        if self._dense:
            self._dense &= {sid for _, sid, _, _ in self._held}
        self._held_cols = np.array([h[2] for h in self._held], np.int64)
        self._held_qty = np.array([h[3] for h in self._held], np.float64)

    def _exit_minute(self, pos) -> int:
        """Open time of the bar whose exit rules fire (``label_trades_nb``); -1 if none."""
        s = self.series[pos.symbol_id]
        e = int(s.open_time_ms.searchsorted(pos.entry_at_ms))
        r = self.rules
        _, exit_time, *_ = label_trades_nb(
            s.open_time_ms, s.open, s.high, s.low, s.close, np.array([e], np.int64),
            pos.stop_pct, pos.take_pct, pos.trailing_pct, r.max_hold_minutes,
            r.commission_pct, r.slippage_pct,
        )  # fmt: skip
        t = int(exit_time[0])
        return t - MINUTE_MS if t >= 0 else -1

    def _observe(self, i: int, m: int) -> KillSwitchTrip | None:
        """Mark the account to the closes of minute ``m``; let the kill switch see it."""
        if self._held:
            equity, held = self._account(i)
        else:
            equity, held = self.exchange.cash, 0.0
        self.equity[i] = equity
        self.exposure[i] = held
        return self.guards.observe_equity(max(equity, 0.0), m + MINUTE_MS)

    def _has_bar(self, sid: int, m: int) -> bool:
        t = self.series[sid].open_time_ms
        j = int(t.searchsorted(m))
        return j < len(t) and int(t[j]) == m


_NEVER = 2**63 - 1


def traded_minutes(data) -> np.ndarray:
    """Every minute with a bar of some symbol in the traded window, in order."""
    t = np.unique(np.concatenate([s.open_time_ms for s in data.series]))
    return t if data.trade_from_ms is None else t[t >= data.trade_from_ms]


def forward_filled_closes(minutes: np.ndarray, series) -> np.ndarray:
    """(minutes, symbols) close of each symbol's latest bar at or before each minute."""
    out = np.full((len(minutes), len(series)), np.nan)
    for j, s in enumerate(series):
        idx = np.searchsorted(s.open_time_ms, minutes, side="right") - 1
        ok = idx >= 0
        out[ok, j] = np.asarray(s.close)[idx[ok]]
    return out
