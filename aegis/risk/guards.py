"""Entry guards and the kill switch: every entry gets an explicit yes or no with its reason.

Pure state machines over numbers the executor passes in (equity, counts, exposure, market time
in epoch ms); no I/O, no clock. The kill switch watches two losses:
- the loss of the current UTC day, against the equity first observed that day;
- the drawdown from the highest equity observed since start or the last re-arm.
When either reaches its limit it trips **once** (``observe`` returns the trip a single time so
the executor flattens and notifies exactly once), refuses every entry afterwards, and stays
tripped until ``rearm`` is called explicitly — by an operator command, or by the fresh
``RiskGuards`` a restart builds. Re-arming takes the current equity as the new peak and day
baseline; otherwise the same loss would trip it again at the next observation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

DAY_MS = 86_400_000

KILL_MAX_DAILY_LOSS = "max_daily_loss"
KILL_MAX_DRAWDOWN = "max_drawdown"

REJECT_KILL_SWITCH = "kill_switch"
REJECT_INVALID_NOTIONAL = "invalid_notional"
REJECT_NO_EQUITY = "no_equity"
REJECT_MAX_OPEN_POSITIONS = "max_open_positions"
REJECT_SYMBOL_EXPOSURE = "symbol_exposure"
REJECT_ENTRY_COOLDOWN = "entry_cooldown"


class RiskConfigError(ValueError):
    """A risk limit is out of range."""


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits of the guards; defaults mirror ``aegis.config.Settings``."""

    max_daily_loss_pct: float = 5.0  # 0 disables
    max_drawdown_pct: float = 15.0  # 0 disables
    max_open_positions: int = 10
    max_symbol_exposure_pct: float = 10.0  # of equity, per symbol
    min_entry_interval_ms: int = 300_000  # per symbol, market time

    def __post_init__(self) -> None:
        for name in ("max_daily_loss_pct", "max_drawdown_pct"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 100.0):
                raise RiskConfigError(f"{name} must be in [0, 100), got {value!r}")
        if self.max_open_positions < 0 or self.min_entry_interval_ms < 0:
            raise RiskConfigError("max_open_positions and min_entry_interval_ms must be >= 0")
        if not (self.max_symbol_exposure_pct > 0.0):
            raise RiskConfigError("max_symbol_exposure_pct must be positive")

    @classmethod
    def from_settings(cls, settings: object) -> RiskLimits:
        """Build from ``aegis.config.Settings``."""
        return cls(
            max_daily_loss_pct=settings.max_daily_loss_pct,
            max_drawdown_pct=settings.max_drawdown_pct,
            max_open_positions=settings.max_open_positions,
            max_symbol_exposure_pct=settings.max_symbol_exposure_pct,
            min_entry_interval_ms=round(settings.min_entry_interval_s * 1000),
        )


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """The answer for one entry: ``allowed`` or the ``reason`` it is refused."""

    allowed: bool
    reason: str = ""


ALLOWED = EntryDecision(True)


@dataclass(frozen=True, slots=True)
class KillSwitchTrip:
    """Why the kill switch tripped: which limit, the loss against what reference, and when."""

    reason: str  # KILL_MAX_DAILY_LOSS | KILL_MAX_DRAWDOWN
    time_ms: int
    equity: float
    reference_equity: float  # day start or peak
    loss_pct: float
    limit_pct: float


class KillSwitch:
    """Trips on the daily loss or drawdown limit; only an explicit ``rearm`` resets it."""

    def __init__(
        self,
        limits: RiskLimits,
        equity: float,
        time_ms: int,
        *,
        peak_equity: float | None = None,
        day_start_equity: float | None = None,
    ) -> None:
        """Start armed; a restart may pass the persisted peak and the day's opening equity."""
        _check_equity(equity)
        self.limits = limits
        self.trip: KillSwitchTrip | None = None
        self.peak_equity = max(equity, peak_equity or equity)
        self.day = time_ms // DAY_MS
        self.day_start_equity = day_start_equity if day_start_equity else equity

    @property
    def tripped(self) -> bool:
        """True from the trip until ``rearm``."""
        return self.trip is not None

    def observe(self, equity: float, time_ms: int) -> KillSwitchTrip | None:
        """Feed the current equity; return the trip when this observation trips it, else None."""
        # Called for every minute of a backtest: the common case calls no other function.
        if not (math.isfinite(equity) and equity >= 0.0):
            _check_equity(equity)
        day = time_ms // DAY_MS
        if day > self.day:
            self.day = day
            self.day_start_equity = equity
        peak = self.peak_equity = max(self.peak_equity, equity)
        if self.trip is not None:
            return None
        lim = self.limits
        start = self.day_start_equity
        daily = (start - equity) / start * 100.0 if start > 0 else 0.0
        if lim.max_daily_loss_pct and daily >= lim.max_daily_loss_pct:
            self.trip = KillSwitchTrip(KILL_MAX_DAILY_LOSS, time_ms, equity,
                                       self.day_start_equity, daily, lim.max_daily_loss_pct)  # fmt: skip
            return self.trip
        drawdown = (peak - equity) / peak * 100.0 if peak > 0 else 0.0
        if lim.max_drawdown_pct and drawdown >= lim.max_drawdown_pct:
            self.trip = KillSwitchTrip(KILL_MAX_DRAWDOWN, time_ms, equity, self.peak_equity,
                                       drawdown, lim.max_drawdown_pct)  # fmt: skip
            return self.trip
        return None

    def rearm(self, equity: float, time_ms: int) -> None:
        """Reset after a human decision: the current equity becomes peak and day baseline."""
        _check_equity(equity)
        self.trip = None
        self.peak_equity = equity
        self.day = time_ms // DAY_MS
        self.day_start_equity = equity


class RiskGuards:
    """The executor's gate for new entries, with a rejection counter per reason."""

    def __init__(
        self,
        limits: RiskLimits,
        kill_switch: KillSwitch,
        last_entry_ms: Mapping[int, int] | None = None,
    ) -> None:
        """``last_entry_ms`` (symbol id → market time of its last entry) restores cooldowns."""
        self.limits = limits
        self.kill_switch = kill_switch
        self.rejections: Counter[str] = Counter()
        self._last_entry_ms: dict[int, int] = dict(last_entry_ms or {})

    @classmethod
    def start(
        cls,
        limits: RiskLimits,
        equity: float,
        time_ms: int,
        last_entry_ms: Mapping[int, int] | None = None,
    ) -> RiskGuards:
        """Fresh guards with an armed kill switch at ``equity`` (what a restart builds)."""
        return cls(limits, KillSwitch(limits, equity, time_ms), last_entry_ms)

    def check_entry(
        self,
        symbol_id: int,
        notional: float,
        time_ms: int,
        equity: float,
        open_positions: int,
        symbol_exposure: float,
    ) -> EntryDecision:
        """Decide one entry of ``notional`` quote on ``symbol_id`` at market time ``time_ms``.

        ``open_positions`` and ``symbol_exposure`` must include pending (accepted, unfilled)
        entries. An allowed decision starts the symbol's entry cooldown at ``time_ms``.
        """
        decision = self._decide(symbol_id, notional, time_ms, equity, open_positions,
                                symbol_exposure)  # fmt: skip
        if decision.allowed:
            self._last_entry_ms[symbol_id] = time_ms
        else:
            self.rejections[decision.reason] += 1
        return decision

    def observe_equity(self, equity: float, time_ms: int) -> KillSwitchTrip | None:
        """Feed the account equity to the kill switch; a returned trip means flatten + notify."""
        return self.kill_switch.observe(equity, time_ms)

    def rearm(self, equity: float, time_ms: int) -> None:
        """Explicit re-arm of a tripped kill switch (operator command)."""
        self.kill_switch.rearm(equity, time_ms)

    def _decide(self, symbol_id, notional, time_ms, equity, open_positions, symbol_exposure):
        lim = self.limits
        if self.kill_switch.tripped:
            return EntryDecision(False, REJECT_KILL_SWITCH)
        if not (math.isfinite(notional) and notional > 0.0):
            return EntryDecision(False, REJECT_INVALID_NOTIONAL)
        if not (math.isfinite(equity) and equity > 0.0):
            return EntryDecision(False, REJECT_NO_EQUITY)
        if open_positions >= lim.max_open_positions:
            return EntryDecision(False, REJECT_MAX_OPEN_POSITIONS)
        # A tiny tolerance so that an entry sized exactly at the cap is not refused by rounding.
        if (symbol_exposure + notional) > equity * lim.max_symbol_exposure_pct / 100.0 * (1 + 1e-9):
            return EntryDecision(False, REJECT_SYMBOL_EXPOSURE)
        last = self._last_entry_ms.get(symbol_id)
        if last is not None and time_ms - last < lim.min_entry_interval_ms:
            return EntryDecision(False, REJECT_ENTRY_COOLDOWN)
        return ALLOWED


def _check_equity(equity: float) -> None:
    if not math.isfinite(equity) or equity < 0.0:
        raise RiskConfigError(f"equity must be finite and >= 0, got {equity!r}")
