"""The schedule of looks at live orders whose outcome is not known: never a resend, only a look."""

from __future__ import annotations

from decimal import Decimal

from aegis.binance.journal import ROLE_ENTRY, JournalOrder
from aegis.binance.live_checks import OPEN_RECHECK_S, RECHECK_S, RETRY_S, OrderChecks
from aegis.binance.live_guard import ROLE_GUARD
from aegis.binance.live_reconcile import (
    OUTCOME_NOT_SENT,
    OUTCOME_OPEN,
    OUTCOME_RESOLVED,
    OUTCOME_STREAMED,
    OUTCOME_UNKNOWN,
)

NOW = 1_000.0
GRACE_S = 30.0


def order(cid: str, role: str = ROLE_ENTRY, created_s: float = NOW) -> JournalOrder:
    return JournalOrder(cid, 1, role, "BTCUSDT", "BUY", "MARKET", Decimal("0.1"),
                        int(created_s * 1000))  # fmt: skip


def checks() -> tuple[OrderChecks, list[int]]:
    woken: list[int] = []
    return OrderChecks(GRACE_S, lambda: woken.append(1)), woken


def test_an_order_the_exchange_lacks_is_looked_at_again_after_its_grace_period():
    c, _ = checks()
    assert c.not_found_at(order("a", created_s=NOW), NOW) == NOW + GRACE_S
    assert c.not_found_at(order("a", created_s=NOW - 100), NOW) == NOW + RECHECK_S


def test_scheduling_from_outside_wakes_the_resolver_and_checks_come_due_earliest_first():
    c, woken = checks()
    c.schedule("late", NOW + 5)
    c.schedule("b", NOW - 1)
    c.schedule("a", NOW - 2)
    assert len(woken) == 3 and "late" in c
    assert c.due(NOW) == ["a", "b"]
    assert c.next_in(NOW) == 0.0
    c.drop("a")
    c.drop("b")
    assert c.next_in(NOW) == 5.0
    c.retry("late", NOW)
    assert c.next_in(NOW) == RETRY_S and len(woken) == 3  # the resolver's own: no wake-up
    c.drop("late")
    assert c.next_in(NOW) is None and c.due(NOW) == []


def test_after_a_look_settled_orders_leave_and_others_come_back_by_outcome():
    c, _ = checks()
    for outcome in (OUTCOME_STREAMED, OUTCOME_RESOLVED, OUTCOME_NOT_SENT):
        c.schedule("x", NOW)
        assert c.after(order("x"), outcome, NOW) and "x" not in c
    c.schedule("x", NOW)
    assert not c.after(order("x"), OUTCOME_OPEN, NOW)
    assert c.next_in(NOW) == OPEN_RECHECK_S  # resting entry or exit: looked at again
    assert not c.after(order("x", created_s=NOW), OUTCOME_UNKNOWN, NOW)
    assert c.next_in(NOW) == GRACE_S
    c.schedule("g", NOW)
    assert not c.after(order("g", ROLE_GUARD), OUTCOME_OPEN, NOW)
    assert "g" not in c  # a guard rests by design: its events tell, no polling


def test_a_reconciliation_keeps_only_unresolved_orders_and_adds_the_missing_ones():
    c, _ = checks()
    c.schedule("settled", NOW)
    c.schedule("kept", NOW + 7)
    c.keep({"kept": order("kept"), "new": order("new", created_s=NOW - 100)}, NOW)
    assert "settled" not in c
    assert c.due(NOW + RECHECK_S) == ["new"]  # a new one: not found yet, looked at soon
    assert c.due(NOW + 7) == ["new", "kept"]  # the kept one keeps its time
