"""Kill switch and entry guards: explicit decisions, one trip, explicit re-arm, counters."""

from __future__ import annotations

import pytest

from aegis.risk.guards import (
    DAY_MS,
    KILL_MAX_DAILY_LOSS,
    KILL_MAX_DRAWDOWN,
    EntryDecision,
    KillSwitch,
    RiskConfigError,
    RiskGuards,
    RiskLimits,
)

DAY0 = 19_440 * DAY_MS  # 2023-03-24 00:00 UTC
LIMITS = RiskLimits(max_daily_loss_pct=5.0, max_drawdown_pct=15.0, max_open_positions=3,
                    max_symbol_exposure_pct=10.0, min_entry_interval_ms=300_000)  # fmt: skip


def guards(equity: float = 10_000.0) -> RiskGuards:
    return RiskGuards.start(LIMITS, equity, DAY0)


def entry(g: RiskGuards, symbol=1, notional=500.0, t=DAY0, equity=10_000.0, n_open=0, exposure=0.0):
    return g.check_entry(symbol, notional, t, equity, n_open, exposure)


def test_kill_switch_daily_loss_trips_once_and_blocks_entries():
    g = guards()
    assert g.observe_equity(9_600.0, DAY0 + 1000) is None  # -4%
    trip = g.observe_equity(9_500.0, DAY0 + 2000)  # -5%
    assert trip.reason == KILL_MAX_DAILY_LOSS and trip.loss_pct == pytest.approx(5.0)
    assert trip.reference_equity == 10_000.0
    assert g.observe_equity(9_400.0, DAY0 + 3000) is None  # already tripped: no second trip
    assert entry(g) == EntryDecision(False, "kill_switch")
    assert g.rejections["kill_switch"] == 1


def test_kill_switch_daily_loss_baseline_resets_at_utc_midnight():
    g = guards()
    assert g.observe_equity(9_600.0, DAY0 + DAY_MS - 1) is None
    assert g.observe_equity(9_600.0, DAY0 + DAY_MS) is None  # new day starts at 9600
    assert g.observe_equity(9_200.0, DAY0 + DAY_MS + 1) is None  # -4.2% of the day
    assert g.observe_equity(9_120.0, DAY0 + DAY_MS + 2).reason == KILL_MAX_DAILY_LOSS


def test_kill_switch_drawdown_from_peak_trips_across_days():
    g = RiskGuards.start(RiskLimits(max_daily_loss_pct=0.0, max_drawdown_pct=15.0), 10_000.0, DAY0)
    g.observe_equity(12_000.0, DAY0 + 1)
    for day in range(1, 4):
        assert g.observe_equity(12_000.0 - 500 * day, DAY0 + day * DAY_MS) is None
    trip = g.observe_equity(10_200.0, DAY0 + 4 * DAY_MS)
    assert trip.reason == KILL_MAX_DRAWDOWN and trip.reference_equity == 12_000.0
    assert trip.loss_pct == pytest.approx(15.0)


def test_kill_switch_stays_tripped_until_explicit_rearm():
    g = guards()
    g.observe_equity(9_000.0, DAY0 + 1)
    assert g.kill_switch.tripped
    g.observe_equity(11_000.0, DAY0 + 5 * DAY_MS)  # recovery alone does not re-arm
    assert g.kill_switch.tripped and entry(g, t=DAY0 + 5 * DAY_MS).reason == "kill_switch"
    g.rearm(11_000.0, DAY0 + 5 * DAY_MS)
    assert not g.kill_switch.tripped
    assert entry(g, t=DAY0 + 5 * DAY_MS, equity=11_000.0).allowed
    # The re-arm took 11000 as the new baseline: a 5% fall from there trips again.
    assert g.observe_equity(10_450.0, DAY0 + 5 * DAY_MS + 1).reason == KILL_MAX_DAILY_LOSS


def test_kill_switch_restart_restores_peak_and_day_baseline():
    ks = KillSwitch(LIMITS, 9_700.0, DAY0 + 10, peak_equity=11_000.0, day_start_equity=10_000.0)
    assert ks.observe(9_500.0, DAY0 + 11).reason == KILL_MAX_DAILY_LOSS


def test_entry_guard_max_open_positions_counts_pending():
    g = guards()
    assert entry(g, n_open=2).allowed
    assert entry(g, symbol=2, n_open=3) == EntryDecision(False, "max_open_positions")


def test_entry_guard_symbol_exposure_cap_includes_new_notional():
    g = guards()
    assert entry(g, notional=400.0, exposure=600.0).allowed  # exactly 10% of 10000
    assert entry(g, symbol=2, notional=401.0, exposure=600.0).reason == "symbol_exposure"


def test_entry_guard_cooldown_per_symbol_in_market_time():
    g = guards()
    assert entry(g, symbol=1, t=DAY0).allowed
    assert entry(g, symbol=1, t=DAY0 + 299_999).reason == "entry_cooldown"
    assert entry(g, symbol=2, t=DAY0 + 1).allowed  # other symbols are free
    assert entry(g, symbol=1, t=DAY0 + 300_000).allowed


def test_entry_guard_restart_restores_cooldowns_from_last_entries():
    g = RiskGuards.start(LIMITS, 10_000.0, DAY0, last_entry_ms={1: DAY0 - 60_000})
    assert entry(g, symbol=1, t=DAY0).reason == "entry_cooldown"
    assert entry(g, symbol=1, t=DAY0 + 240_000).allowed


def test_entry_guard_refused_entry_does_not_start_cooldown():
    g = guards()
    assert entry(g, notional=5_000.0).reason == "symbol_exposure"
    assert entry(g, notional=500.0, t=DAY0 + 1).allowed


def test_entry_guard_bad_numbers_rejected_with_reason():
    g = guards()
    assert entry(g, notional=float("nan")).reason == "invalid_notional"
    assert entry(g, notional=0.0).reason == "invalid_notional"
    assert entry(g, equity=0.0).reason == "no_equity"


def test_entry_guard_rejection_counter_per_reason():
    g = guards()
    entry(g, n_open=3)
    entry(g, n_open=3)
    entry(g, notional=-1.0)
    assert dict(g.rejections) == {"max_open_positions": 2, "invalid_notional": 1}


def test_risk_limits_out_of_range_raise_config_error():
    with pytest.raises(RiskConfigError):
        RiskLimits(max_daily_loss_pct=100.0)
    with pytest.raises(RiskConfigError):
        RiskLimits(max_open_positions=-1)
    with pytest.raises(RiskConfigError):
        KillSwitch(LIMITS, float("nan"), DAY0)


def test_risk_limits_from_settings_converts_seconds():
    from aegis.config import Settings

    limits = RiskLimits.from_settings(Settings.load({"AEGIS_MIN_ENTRY_INTERVAL_S": "90"}))
    assert limits.min_entry_interval_ms == 90_000 and limits.max_drawdown_pct == 15.0
