"""PaperExchange: fills at the next observed price, fees, slippage, filters, idempotency, equity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from paper_helpers import BTC, DOGE, LEGACY, MIN, T0, exchange, intent

from aegis.paper.events import (
    SUBMIT_DUPLICATE,
    SUBMIT_PENDING,
    SUBMIT_REJECTED,
    IntentRejected,
    PositionOpened,
    TradeClosed,
)
from aegis.paper.exchange import PaperBarError, PaperConfig, PaperConfigError, PaperExchange
from aegis.paper.exits import trade_return_pct

ENTRY_BAR = T0 + 5 * MIN  # the first 1m bar after the 5m decision bar closed


def opened(events):
    return [e.position for e in events if isinstance(e, PositionOpened)]


def closed(events):
    return [e.trade for e in events if isinstance(e, TradeClosed)]


def rejected(events):
    return [e.reason for e in events if isinstance(e, IntentRejected)]


def test_paper_fill_bar_inside_decision_bar_does_not_fill():
    ex = exchange()
    assert ex.submit(intent()).status == SUBMIT_PENDING
    assert ex.on_bar(BTC, T0 + 4 * MIN, 30_000, 30_010, 29_990, 30_000) == []
    assert ex.open_count() == 1 and ex.open_positions() == ()


def test_paper_fill_next_bar_open_pays_slippage_and_commission_in_quote():
    ex = exchange(slippage_pct=0.1, commission_pct=0.1)
    ex.submit(intent(notional=1_000.0))
    [pos] = opened(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005))
    assert pos.entry_at_ms == ENTRY_BAR
    assert pos.entry_price == 30_000
    assert pos.entry_fill_price == pytest.approx(30_030)
    assert pos.quantity == Decimal("0.03330")  # 1000 / 30030 floored to the 0.00001 step
    assert pos.notional == pytest.approx(0.0333 * 30_030)
    assert pos.entry_commission == pytest.approx(0.0333 * 30_030 * 0.001)
    assert ex.cash == pytest.approx(10_000 - 0.0333 * 30_030 * 1.001)
    assert ex.equity() == pytest.approx(ex.cash + 0.0333 * 30_005)
    assert pos.position_size_pct == pytest.approx(100 * 0.0333 * 30_030 / 10_000)


def test_paper_trade_take_profit_money_matches_trade_return_formula():
    ex = exchange(slippage_pct=0.1, commission_pct=0.1)
    ex.submit(intent(notional=1_000.0, take_pct=2.0))
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005)
    [trade] = closed(ex.on_bar(BTC, ENTRY_BAR + MIN, 30_100, 30_700, 30_050, 30_650))
    gross, net = trade_return_pct(30_000.0, 30_600.0, 0.1, 0.1)
    assert trade.exit_reason == "take_profit" and trade.close_price == pytest.approx(30_600)
    assert trade.close_fill_price == pytest.approx(30_600 * 0.999)
    assert (trade.gross_return_pct, trade.net_return_pct) == (gross, net)
    assert trade.reward_score == net
    cost = 0.0333 * 30_030 * 1.001
    assert trade.pnl == pytest.approx(0.0333 * 30_600 * 0.999 * 0.999 - cost)
    assert 100 * trade.pnl / cost == pytest.approx(net, rel=1e-9)
    assert trade.commission_quote == pytest.approx(0.0333 * (30_030 + 30_600 * 0.999) * 0.001)
    assert trade.slippage_quote == pytest.approx(0.0333 * (30 + 30.6))
    assert trade.exit_at_ms == ENTRY_BAR + 2 * MIN and trade.duration_ms == 2 * MIN
    assert ex.cash == pytest.approx(10_000 + trade.pnl)
    assert ex.open_count() == 0


def test_paper_trade_keeps_intent_tracking_fields():
    ex = exchange()
    feats = tuple(float(i) for i in range(12))
    ex.submit(intent(predicted_return_pct=0.4, confidence=0.7, model_version=3, features=feats))
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005)
    [trade] = closed(ex.flatten(ENTRY_BAR + MIN))
    assert (trade.predicted_return_pct, trade.confidence, trade.model_version) == (0.4, 0.7, 3)
    assert trade.features == feats and trade.decision_time_ms == T0
    report = trade.to_report()
    assert int(report["intent_id"]) == 1 and float(report["net_return_pct"]) == trade.net_return_pct


def test_paper_submit_same_intent_twice_opens_one_position():
    ex = exchange()
    assert ex.submit(intent(7)).status == SUBMIT_PENDING
    assert ex.submit(intent(7)).status == SUBMIT_DUPLICATE
    assert len(opened(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005))) == 1
    assert ex.submit(intent(7)).status == SUBMIT_DUPLICATE  # also once it is open
    ex.flatten(ENTRY_BAR + MIN)
    assert ex.submit(intent(7)).status == SUBMIT_DUPLICATE  # and once it is closed
    assert len(ex.open_positions()) == 0


def test_paper_submit_unknown_symbol_rejected_and_counted():
    ex = exchange()
    outcome = ex.submit(intent(symbol_id=99))
    assert (outcome.status, outcome.reason) == (SUBMIT_REJECTED, "unknown_symbol")
    assert ex.rejections["unknown_symbol"] == 1


@pytest.mark.parametrize(
    ("symbol_id", "notional", "price", "file", "reason"),
    [
        (BTC, 3.0, 30_000.0, None, "filter:NOTIONAL"),  # 5 USDT minimum
        (DOGE, 0.05, 0.08, None, "filter:LOT_SIZE"),  # under one DOGE
        (DOGE, 0.5, 0.08, None, "filter:NOTIONAL"),  # 6 DOGE = 0.48 USDT < 1
        (BTC, 8.0, 30_000.0, LEGACY, "filter:MIN_NOTIONAL"),  # 2021 rules: 10 USDT minimum
        (BTC, 5_000_000.0, 30_000.0, None, "filter:MARKET_LOT_SIZE"),  # > 129.8 BTC at market
    ],
)
def test_paper_fill_real_exchange_filters_reject_with_reason(
    symbol_id, notional, price, file, reason
):
    ex = exchange(cash=10_000_000.0, **({"file": file} if file else {}))
    ex.submit(intent(symbol_id=symbol_id, notional=notional))
    events = ex.on_bar(symbol_id, ENTRY_BAR, price, price, price, price)
    assert rejected(events) == [reason]
    assert ex.rejections[reason] == 1 and ex.open_count() == 0 and ex.cash == 10_000_000.0


def test_paper_fill_position_unsellable_at_its_stop_is_rejected():
    ex = exchange()
    # 0.00019 BTC = 5.7 USDT passes NOTIONAL now but would be 4.56 USDT at a 20% stop.
    ex.submit(intent(notional=6.0, stop_pct=20.0))
    events = ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000)
    assert rejected(events) == ["unsellable_at_stop:NOTIONAL"]


def test_paper_exit_refused_by_notional_keeps_position_open_and_counts():
    ex = exchange()
    ex.submit(intent(notional=6.0, stop_pct=10.0))
    [pos] = opened(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000))
    assert pos.quantity == Decimal("0.00019")
    # A crash gap to 15000: 0.00019 BTC is 2.85 USDT, Binance would refuse the MARKET SELL.
    assert closed(ex.on_bar(BTC, ENTRY_BAR + MIN, 15_000, 15_000, 15_000, 15_000)) == []
    assert ex.rejections["exit_rejected:NOTIONAL"] == 1
    assert ex.position(pos.intent_id).mark_price == 15_000
    [trade] = closed(ex.on_bar(BTC, ENTRY_BAR + 2 * MIN, 26_500, 26_500, 26_500, 26_500))
    assert trade.exit_reason == "stop_loss" and trade.close_price == 26_500  # gap fills at open


def test_paper_fill_more_than_cash_rejected_insufficient_cash():
    ex = exchange(cash=500.0)
    ex.submit(intent(notional=1_000.0))
    assert rejected(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000)) == [
        "insufficient_cash"
    ]
    assert ex.cash == 500.0


def test_paper_fill_after_deadline_rejected_stale():
    ex = exchange(fill_deadline_ms=2 * MIN)
    ex.submit(intent())
    assert rejected(ex.on_bar(BTC, ENTRY_BAR + 3 * MIN, 30_000, 30_000, 30_000, 30_000)) == [
        "stale_intent"
    ]


def test_paper_on_bar_replayed_bar_changes_nothing():
    ex = exchange()
    ex.submit(intent())
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005)
    before = ex.open_positions()
    assert ex.on_bar(BTC, ENTRY_BAR, 1.0, 1.0, 1.0, 1.0) == []  # same bar again, crazy prices
    assert ex.open_positions() == before and ex.replayed_bars == 1


def test_paper_flatten_closes_at_last_close_and_cancels_pending():
    ex = exchange()
    ex.submit(intent(1))
    ex.submit(intent(2, symbol_id=DOGE, notional=100.0))
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_100, 29_950, 30_050)
    events = ex.flatten(ENTRY_BAR + MIN)
    [trade] = closed(events)
    assert trade.exit_reason == "forced" and trade.close_price == 30_050
    assert rejected(events) == ["cancelled"]
    assert ex.open_count() == 0
    assert ex.cash == pytest.approx(10_000 + trade.pnl)


def test_paper_equity_snapshot_marks_positions_at_last_close():
    ex = exchange(slippage_pct=0.0, commission_pct=0.0)
    ex.submit(intent(notional=3_000.0))
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000)
    ex.on_bar(BTC, ENTRY_BAR + MIN, 29_800, 29_900, 29_750, 29_800)
    snap = ex.snapshot(ENTRY_BAR + 2 * MIN)
    assert snap.positions_value == pytest.approx(0.1 * 29_800)
    assert snap.equity == pytest.approx(10_000 - 0.1 * 200)
    assert (snap.open_positions, snap.pending_intents) == (1, 0)


def test_paper_equity_asked_between_changes_always_equals_a_fresh_sum():
    """equity() is memoised; every fill, bar, exit, flatten and restore must invalidate it."""

    def fresh(ex):
        return ex.cash + sum(p.market_value for p in ex.open_positions())

    ex = exchange(slippage_pct=0.1, commission_pct=0.1)
    assert ex.equity() == fresh(ex) == 10_000.0
    ex.submit(intent(1, take_pct=3.0))
    ex.submit(intent(2, symbol_id=DOGE, notional=200.0, decision_time_ms=T0 + 5 * MIN))
    assert ex.equity() == fresh(ex)  # submitting moves no money
    bars = [(BTC, ENTRY_BAR, 30_000, 30_100, 29_950, 30_050),  # BTC fills
            (BTC, ENTRY_BAR + MIN, 30_050, 30_400, 30_000, 30_300),  # marked up
            (DOGE, T0 + 10 * MIN, 0.08, 0.081, 0.0795, 0.0805),  # DOGE fills
            (BTC, ENTRY_BAR + 2 * MIN, 30_300, 31_100, 30_200, 30_900)]  # fmt: skip # BTC takes
    for bar in bars:
        ex.equity()  # memoise, then change
        ex.on_bar(*bar)
        assert ex.equity() == fresh(ex)
    assert len(ex.open_positions()) == 1
    restarted = PaperExchange.from_records(ex.config, ex.filters, ex.cash,
                                           [p.to_record() for p in ex.open_positions()], ())  # fmt: skip
    assert restarted.equity() == fresh(restarted) == ex.equity()
    ex.flatten(T0 + 11 * MIN)
    assert ex.equity() == fresh(ex) == ex.cash


def test_paper_exposure_counts_pending_and_positions():
    ex = exchange(slippage_pct=0.0, commission_pct=0.0)
    ex.submit(intent(1, notional=3_000.0))
    ex.submit(intent(2, notional=1_000.0, decision_time_ms=T0 + 5 * MIN))
    ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000)
    assert ex.symbol_exposure(BTC) == pytest.approx(3_000 + 1_000)
    assert ex.open_count() == 2 and ex.symbol_exposure(DOGE) == 0.0


def test_paper_bar_fills_only_its_own_symbols_pending_entries_in_submission_order():
    ex = exchange(slippage_pct=0.0, commission_pct=0.0)
    ex.submit(intent(1, notional=1_000.0))
    ex.submit(intent(2, symbol_id=DOGE, notional=100.0))
    ex.submit(intent(3, notional=500.0))
    assert [p.intent_id for p in opened(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_000, 30_000, 30_000))
            ] == [1, 3]  # fmt: skip
    assert [i.intent_id for i in ex.pending_intents()] == [2]
    assert ex.symbol_exposure(DOGE) == pytest.approx(100.0) and ex.open_count() == 3
    assert rejected(ex.flatten(ENTRY_BAR, symbol_id=DOGE)) == ["cancelled"]
    assert ex.on_bar(DOGE, ENTRY_BAR, 0.08, 0.08, 0.08, 0.08) == []  # nothing left to fill
    assert ex.symbol_exposure(DOGE) == 0.0 and ex.open_count() == 2


def test_paper_from_records_rebuilds_book_and_continues_identically():
    live = exchange()
    live.submit(intent(1, take_pct=3.0))
    live.submit(intent(2, symbol_id=DOGE, notional=200.0, decision_time_ms=T0 + 5 * MIN))
    live.on_bar(BTC, ENTRY_BAR, 30_000, 30_100, 29_950, 30_050)
    live.on_bar(BTC, ENTRY_BAR + MIN, 30_050, 30_400, 30_000, 30_300)
    rows = [p.to_record() for p in live.open_positions()]
    restarted = PaperExchange.from_records(
        live.config, live.filters, live.cash, rows, live.pending_intents(), known_intent_ids=[1, 2]
    )
    assert restarted.open_positions() == live.open_positions()
    assert restarted.equity() == pytest.approx(live.equity())
    assert restarted.submit(intent(1)).status == SUBMIT_DUPLICATE
    # An already processed bar replayed after restart is ignored by the position.
    restarted.on_bar(BTC, ENTRY_BAR + MIN, 1.0, 1.0, 1.0, 1.0)
    assert restarted.open_positions() == live.open_positions()
    assert restarted.equity() == pytest.approx(live.equity())  # the mark did not go back
    bars = [(BTC, ENTRY_BAR + 2 * MIN, 30_300, 31_000, 30_200, 30_900),
            (DOGE, T0 + 10 * MIN, 0.08, 0.081, 0.079, 0.08)]  # fmt: skip
    for bar in bars:
        assert live.on_bar(*bar) == restarted.on_bar(*bar)
    assert restarted.cash == live.cash


def test_paper_config_bad_values_raise_config_error():
    with pytest.raises(PaperConfigError):
        PaperConfig(commission_pct=-0.1)
    with pytest.raises(PaperConfigError):
        PaperConfig(bar_interval_ms=0)
    with pytest.raises(PaperConfigError):
        PaperExchange(PaperConfig(), {}, float("nan"))


def test_paper_config_from_settings_uses_executor_settings():
    from aegis.config import Settings

    cfg = PaperConfig.from_settings(Settings.load({"AEGIS_SLIPPAGE_PCT": "0.05"}))
    assert (cfg.slippage_pct, cfg.commission_pct, cfg.decision_interval_ms) == (0.05, 0.1, 300_000)


@pytest.mark.parametrize(
    "bar",
    [
        (float("nan"), 1.0, 1.0, 1.0),
        (1.0, float("inf"), 1.0, 1.0),
        (0.0, 1.0, 0.0, 1.0),
        (1.0, 0.9, 1.0, 1.0),  # high below open
        (1.0, 1.2, 1.1, 1.15),  # low above open
    ],
)
def test_paper_on_bar_malformed_bar_raises_and_changes_nothing(bar):
    ex = exchange()
    ex.submit(intent())
    with pytest.raises(PaperBarError, match="prices must be"):
        ex.on_bar(BTC, ENTRY_BAR, *bar)
    assert ex.pending_intents() and ex.replayed_bars == 0
    assert opened(ex.on_bar(BTC, ENTRY_BAR, 30_000, 30_010, 29_990, 30_005))  # still fills
