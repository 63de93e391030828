"""The virtual exchange: fills brain intents on observed bars, runs the exit rules, keeps the book.

Fill rule (the same as the brain's labels, ``aegis.ml.labels``): an intent decided on the bar
opening at ``decision_time_ms`` fills at the **open of the first bar opening at or after
``decision_time_ms + decision_interval_ms``** — the first price observed after the decision was
possible. The entry bar is also the first bar held: its high and low happen after the open fill,
so its stop and take-profit are checked. Exits run bar by bar through ``exit_check``;
``bars_held`` counts elapsed bar intervals since the entry bar's open (a gap in the data never
stretches the time exit), and an exit is stamped with the close time of its bar.

Orders go through the same ``SymbolFilters`` as live: the entry quantity is floored to the step
and must pass every filter at the fill price (a MARKET BUY), and — so that a position can always
be closed — a MARKET SELL of that quantity must also pass at the stop level. An exit that
Binance would still refuse (a crash far below the stop) leaves the position open and is counted;
it is retried on the next bar, as a live executor would have to.

Forced exits (kill switch, shutdown flatten) fill at once at the last observed close. No I/O
here: the executor persists the returned events.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from aegis.binance.filters import FilterRejected, InvalidOrder
from aegis.paper.events import (
    EXIT_REJECTED_PREFIX,
    REJECT_CANCELLED,
    REJECT_FILTER_PREFIX,
    REJECT_INSUFFICIENT_CASH,
    REJECT_STALE,
    REJECT_UNKNOWN_SYMBOL,
    REJECT_UNSELLABLE_PREFIX,
    SUBMIT_DUPLICATE,
    SUBMIT_PENDING,
    SUBMIT_REJECTED,
    IntentRejected,
    PaperEvent,
    PositionOpened,
    SubmitOutcome,
    TradeClosed,
)
from aegis.paper.exits import EXIT_FORCED, EXIT_NONE, EXIT_REASONS, exit_check
from aegis.paper.intents import PaperIntent
from aegis.paper.positions import EquitySnapshot, PaperPosition
from aegis.paper.pricing import close_position

log = logging.getLogger(__name__)


class OrderFilters(Protocol):
    """What the paper exchange needs of ``aegis.binance.filters.SymbolFilters``."""

    def fit(self, side, order_type, quantity, price=None, avg_price=None): ...
    def check(self, side, order_type, quantity, price=None, avg_price=None) -> None: ...


class PaperConfigError(ValueError):
    """A paper exchange setting is out of range."""


class PaperBarError(ValueError):
    """A bar given to ``on_bar`` is not a valid OHLC bar; the book is unchanged."""


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """Trading rules of the virtual exchange; defaults mirror ``aegis.config.Settings``."""

    commission_pct: float = 0.1  # per side, on the quote value of each fill
    slippage_pct: float = 0.02  # per fill, against us
    trailing_pct: float = 0.0  # 0 disables the trailing stop
    max_hold_minutes: int = 240  # 0 disables the time exit
    bar_interval_ms: int = 60_000  # interval of the bars given to on_bar
    decision_interval_ms: int = 300_000  # the decision timeframe: entries wait for its close
    fill_deadline_ms: int = 0  # reject an intent whose entry bar opens later than this; 0 = never

    def __post_init__(self) -> None:
        if not (0.0 <= self.commission_pct < 5.0 and 0.0 <= self.slippage_pct < 5.0):
            raise PaperConfigError("commission_pct and slippage_pct must be in [0, 5)")
        if not 0.0 <= self.trailing_pct < 100.0:
            raise PaperConfigError(f"trailing_pct must be in [0, 100), got {self.trailing_pct}")
        if self.max_hold_minutes < 0 or self.fill_deadline_ms < 0:
            raise PaperConfigError("max_hold_minutes and fill_deadline_ms must be >= 0")
        if self.bar_interval_ms <= 0 or self.decision_interval_ms < 0:
            raise PaperConfigError("bar_interval_ms must be > 0 and decision_interval_ms >= 0")

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> PaperConfig:
        """Build from ``aegis.config.Settings`` (decision timeframe → decision_interval_ms)."""
        tf_ms = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
        values = {
            "commission_pct": settings.commission_pct,
            "slippage_pct": settings.slippage_pct,
            "trailing_pct": settings.trailing_stop_pct,
            "max_hold_minutes": settings.max_hold_minutes,
            "decision_interval_ms": tf_ms[settings.decision_timeframe],
        }
        values.update(overrides)
        return cls(**values)


class PaperExchange:
    """Virtual spot exchange and position book of one paper account (quote-asset cash)."""

    def __init__(self, config: PaperConfig, filters: Mapping[int, OrderFilters], cash: float):
        if not (math.isfinite(cash) and cash >= 0.0):
            raise PaperConfigError(f"cash must be finite and >= 0, got {cash!r}")
        self.config = config
        self._filters = dict(filters)
        self._cash = float(cash)
        self._equity: float | None = None  # memo of equity(); None after any change
        self._pending: dict[int, PaperIntent] = {}
        # The same intents per symbol: a bar looks only at its own symbol's (a close burst
        # brings hundreds of bars while tens of intents wait for their entry bar).
        self._pending_by_symbol: dict[int, dict[int, PaperIntent]] = {}
        self._positions: dict[int, PaperPosition] = {}
        self._by_symbol: dict[int, list[int]] = {}
        self._marks: dict[int, float] = {}
        self._last_bar: dict[int, int] = {}
        self._seen: set[int] = set()
        self.rejections: Counter[str] = Counter()
        self.replayed_bars = 0

    @classmethod
    def from_records(
        cls,
        config: PaperConfig,
        filters: Mapping[int, OrderFilters],
        cash: float,
        positions: Iterable[PaperPosition | Mapping] = (),
        pending: Iterable[PaperIntent] = (),
        known_intent_ids: Iterable[int] = (),
    ) -> PaperExchange:
        """Rebuild after a restart from persisted state.

        ``cash`` is the persisted account cash (starting equity + Σ closed pnl − Σ open cost);
        ``known_intent_ids`` are every intent already traded or rejected, so a replayed intent
        stays a duplicate. Bars at or before a position's ``last_bar_ms`` are ignored as replays.
        """
        book = cls(config, filters, cash)
        for item in positions:
            pos = item if isinstance(item, PaperPosition) else PaperPosition.from_record(item)
            book._add_position(pos)
            # The newest processed bar of the symbol: older bars replayed after the restart
            # must not move its mark back in time.
            if pos.last_bar_ms >= book._last_bar.get(pos.symbol_id, pos.last_bar_ms):
                book._last_bar[pos.symbol_id] = pos.last_bar_ms
                book._marks[pos.symbol_id] = pos.mark_price
        for intent in pending:
            book._add_pending(intent)
            book._seen.add(intent.intent_id)
        book._seen.update(int(i) for i in known_intent_ids)
        return book

    # -- queries -------------------------------------------------------------------------------

    @property
    def filters(self) -> Mapping[int, OrderFilters]:
        """Order filters per symbol id (read-only view)."""
        return MappingProxyType(self._filters)

    @property
    def cash(self) -> float:
        """Quote-asset cash not tied up in positions."""
        return self._cash

    def equity(self) -> float:
        """Cash plus every open position at its last observed close."""
        # Memoised: the executor's risk check asks once per intent, and a close burst can bring
        # ~100 intents while hundreds of positions are open (an O(positions) sum each time).
        if self._equity is None:
            self._equity = self._cash + sum(p.market_value for p in self._positions.values())
        return self._equity

    def snapshot(self, time_ms: int) -> EquitySnapshot:
        """The account at ``time_ms`` for ``account_state`` / equity history."""
        value = sum(p.market_value for p in self._positions.values())
        return EquitySnapshot(time_ms, self._cash, value, self._cash + value,
                              len(self._positions), len(self._pending))  # fmt: skip

    def open_positions(self) -> tuple[PaperPosition, ...]:
        """Open positions, oldest first."""
        return tuple(self._positions.values())

    def position(self, intent_id: int) -> PaperPosition | None:
        """The open position of an intent, if any."""
        return self._positions.get(intent_id)

    def pending_intents(self) -> tuple[PaperIntent, ...]:
        """Accepted intents waiting for their entry bar."""
        return tuple(self._pending.values())

    def open_count(self) -> int:
        """Open positions plus pending intents: what a max-open-positions guard must count."""
        return len(self._positions) + len(self._pending)

    def symbol_exposure(self, symbol_id: int) -> float:
        """Quote exposure on one symbol: positions at mark plus pending intents' notional."""
        held = sum(self._positions[i].market_value for i in self._by_symbol.get(symbol_id, ()))
        waiting = sum(p.notional for p in self._pending_by_symbol.get(symbol_id, {}).values())
        return held + waiting

    # -- commands ------------------------------------------------------------------------------

    def submit(self, intent: PaperIntent) -> SubmitOutcome:
        """Accept an intent to fill on its entry bar; the same intent id twice is a duplicate."""
        if intent.intent_id in self._seen:
            return SubmitOutcome(intent.intent_id, SUBMIT_DUPLICATE)
        self._seen.add(intent.intent_id)
        if intent.symbol_id not in self._filters:
            self.rejections[REJECT_UNKNOWN_SYMBOL] += 1
            return SubmitOutcome(intent.intent_id, SUBMIT_REJECTED, REJECT_UNKNOWN_SYMBOL)
        self._add_pending(intent)
        return SubmitOutcome(intent.intent_id, SUBMIT_PENDING)

    def on_bar(
        self, symbol_id: int, open_time_ms: int, open_: float, high: float, low: float, close: float
    ) -> list[PaperEvent]:
        """Process one closed bar of a symbol: entries due on it, then exits, then the mark.

        A bar at or before the symbol's last processed bar is a replay and changes nothing; a
        malformed bar raises ``PaperBarError`` before anything changes.
        """
        if not (0.0 < low <= min(open_, close) and max(open_, close) <= high < math.inf):
            raise PaperBarError(
                f"bar {symbol_id}@{open_time_ms}: prices must be finite, positive and within "
                f"low..high (o={open_!r} h={high!r} l={low!r} c={close!r})"
            )
        last = self._last_bar.get(symbol_id)
        if last is not None and open_time_ms <= last:
            self.replayed_bars += 1
            return []
        self._last_bar[symbol_id] = open_time_ms
        events: list[PaperEvent] = []
        if symbol_id in self._pending_by_symbol:
            self._fill_due(symbol_id, open_time_ms, open_, events)
        for intent_id in tuple(self._by_symbol.get(symbol_id, ())):
            pos = self._positions[intent_id]
            if open_time_ms <= pos.last_bar_ms:
                continue
            self._step(pos, open_time_ms, open_, high, low, close, events)
        self._marks[symbol_id] = close
        return events

    def flatten(self, time_ms: int, symbol_id: int | None = None) -> list[PaperEvent]:
        """Forced exit of every position (or one symbol's) at the last close; cancel pending."""
        events: list[PaperEvent] = []
        for intent in tuple(self._pending.values()):
            if symbol_id is None or intent.symbol_id == symbol_id:
                self._drop_pending(intent)
                events.append(self._reject(intent, time_ms, REJECT_CANCELLED))
        for pos in tuple(self._positions.values()):
            if symbol_id is not None and pos.symbol_id != symbol_id:
                continue
            price = self._marks.get(pos.symbol_id, pos.mark_price)
            self._exit(pos, EXIT_FORCED, price, time_ms, pos.bars_held, events)
        return events

    # -- internals -----------------------------------------------------------------------------

    def _add_pending(self, intent: PaperIntent) -> None:
        self._pending[intent.intent_id] = intent
        self._pending_by_symbol.setdefault(intent.symbol_id, {})[intent.intent_id] = intent

    def _drop_pending(self, intent: PaperIntent) -> None:
        del self._pending[intent.intent_id]
        waiting = self._pending_by_symbol[intent.symbol_id]
        del waiting[intent.intent_id]
        if not waiting:
            del self._pending_by_symbol[intent.symbol_id]

    def _fill_due(self, symbol_id: int, open_time_ms: int, price: float, events: list) -> None:
        cfg = self.config
        for intent in tuple(self._pending_by_symbol[symbol_id].values()):
            wanted = intent.decision_time_ms + cfg.decision_interval_ms
            if open_time_ms < wanted:
                continue
            self._drop_pending(intent)
            if cfg.fill_deadline_ms and open_time_ms - wanted > cfg.fill_deadline_ms:
                events.append(self._reject(intent, open_time_ms, REJECT_STALE))
                continue
            outcome = self._open(intent, open_time_ms, price)
            events.append(outcome)

    def _open(self, intent: PaperIntent, time_ms: int, price: float) -> PaperEvent:
        cfg = self.config
        filters = self._filters[intent.symbol_id]
        fill = price * (1.0 + cfg.slippage_pct / 100.0)
        try:
            qty, _ = filters.fit("BUY", "MARKET", intent.notional / fill, avg_price=price)
        except FilterRejected as exc:
            return self._reject(intent, time_ms, REJECT_FILTER_PREFIX + exc.filter_type)
        except InvalidOrder:
            return self._reject(intent, time_ms, REJECT_FILTER_PREFIX + "INVALID_ORDER")
        stop_level = price * (1.0 - intent.stop_pct / 100.0)
        try:
            filters.check("SELL", "MARKET", qty, avg_price=stop_level)
        except FilterRejected as exc:
            return self._reject(intent, time_ms, REJECT_UNSELLABLE_PREFIX + exc.filter_type)
        notional = float(qty) * fill
        commission = notional * cfg.commission_pct / 100.0
        equity_before = self.equity()
        if notional + commission > self._cash:
            return self._reject(intent, time_ms, REJECT_INSUFFICIENT_CASH)
        self._cash -= notional + commission
        self._equity = None
        pos = PaperPosition(
            intent_id=intent.intent_id, symbol_id=intent.symbol_id, quantity=qty,
            entry_at_ms=time_ms, entry_price=price, entry_fill_price=fill, notional=notional,
            entry_commission=commission, commission_pct=cfg.commission_pct,
            slippage_pct=cfg.slippage_pct, stop_pct=intent.stop_pct, take_pct=intent.take_pct,
            trailing_pct=cfg.trailing_pct, max_hold_bars=self._max_hold_bars(),
            peak_high=price, bars_held=0, last_bar_ms=time_ms - 1, mark_price=price,
            decision_time_ms=intent.decision_time_ms,
            predicted_return_pct=intent.predicted_return_pct, confidence=intent.confidence,
            model_version=intent.model_version,
            position_size_pct=100.0 * notional / equity_before if equity_before > 0 else 0.0,
            features=intent.features,
        )  # fmt: skip
        self._add_position(pos)
        return PositionOpened(pos)

    def _max_hold_bars(self) -> int:
        return self.config.max_hold_minutes * 60_000 // self.config.bar_interval_ms

    def _step(self, pos, open_time_ms, open_, high, low, close, events) -> None:
        held = (open_time_ms - pos.entry_at_ms) // self.config.bar_interval_ms + 1
        reason, price = exit_check(
            pos.entry_price, pos.peak_high, open_, high, low, close, held,
            pos.stop_pct, pos.take_pct, pos.trailing_pct, pos.max_hold_bars,
        )  # fmt: skip
        exit_at = open_time_ms + self.config.bar_interval_ms
        if reason != EXIT_NONE and self._exit(pos, reason, price, exit_at, held, events):
            return
        peak = max(pos.peak_high, high)
        self._positions[pos.intent_id] = pos.after_bar(peak, held, open_time_ms, close)
        self._equity = None

    def _exit(self, pos, reason: int, price: float, time_ms: int, held: int, events) -> bool:
        try:
            self._filters[pos.symbol_id].check("SELL", "MARKET", pos.quantity, avg_price=price)
        except (FilterRejected, InvalidOrder) as exc:
            kind = getattr(exc, "filter_type", "INVALID_ORDER")
            self.rejections[EXIT_REJECTED_PREFIX + kind] += 1
            log.warning("paper exit of intent %d refused by %s; position stays open",
                        pos.intent_id, kind)  # fmt: skip
            return False
        trade, proceeds = close_position(pos, reason, EXIT_REASONS[reason], price, time_ms, held)
        self._cash += proceeds
        self._equity = None
        self._remove_position(pos)
        events.append(TradeClosed(trade))
        return True

    def _reject(self, intent: PaperIntent, time_ms: int, reason: str) -> IntentRejected:
        self.rejections[reason] += 1
        return IntentRejected(intent.intent_id, intent.symbol_id, time_ms, reason)

    def _add_position(self, pos: PaperPosition) -> None:
        self._equity = None
        self._positions[pos.intent_id] = pos
        self._by_symbol.setdefault(pos.symbol_id, []).append(pos.intent_id)
        self._seen.add(pos.intent_id)

    def _remove_position(self, pos: PaperPosition) -> None:
        self._equity = None
        del self._positions[pos.intent_id]
        self._by_symbol[pos.symbol_id].remove(pos.intent_id)
