"""User-data events: parsing at the edge (documented examples) and the AccountCache they feed."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

import pytest

from aegis.binance.account import AccountCache
from aegis.binance.models import AccountSnapshot, Balance, ExchangeOrder
from aegis.binance.user_events import (
    BalanceDelta,
    BalancesUpdate,
    MalformedUserEvent,
    OrderListUpdate,
    OrderUpdate,
    ServerShutdown,
    StreamTerminated,
    parse_user_message,
)


@pytest.fixture(scope="module")
def doc_events(data_dir) -> dict[str, dict]:
    """The wrapped user-data event examples of Binance's documentation, by event type."""
    out = {}
    for name in ("binance_spot_api_docs_examples", "binance_spot_websocket_api_docs_examples"):
        with gzip.open(data_dir / "samples" / f"{name}.json.gz", "rt") as fh:
            for item in json.load(fh)["examples"]:
                example = item["example"]
                if isinstance(example, dict) and isinstance(example.get("event"), dict):
                    out.setdefault(example["event"]["e"], example)
    return out


def report(**changes) -> dict:
    base = {
        "e": "executionReport", "E": 2, "s": "BTCUSDT", "c": "aegis-1", "S": "BUY",
        "o": "MARKET", "f": "GTC", "q": "0.01000000", "p": "0", "P": "0", "F": "0", "g": -1,
        "C": "", "x": "TRADE", "X": "FILLED", "r": "NONE", "i": 11, "l": "0.01000000",
        "z": "0.01000000", "L": "27000.00", "n": "0.00001000", "N": "BTC", "T": 2, "t": 77,
        "I": 23, "w": False, "m": False, "M": True, "O": 1, "Z": "270.00", "Y": "270.00",
        "Q": "0", "W": 1, "V": "NONE",
    }  # fmt: skip
    return {"subscriptionId": 0, "event": base | changes}


def test_parse_documented_execution_report_gives_order_update(doc_events):
    event = parse_user_message(doc_events["executionReport"])
    assert isinstance(event, OrderUpdate)
    assert (event.symbol, event.client_order_id, event.order_id) == (
        "ETHBTC", "mUvoqJxFIILMdfAW5iGSOW", 4293153,
    )  # fmt: skip
    assert (event.execution_type, event.status, event.is_trade) == ("NEW", "NEW", False)
    assert event.quantity == Decimal("1.00000000") and event.commission_asset == ""


def test_parse_documented_account_position_gives_absolute_balances(doc_events):
    raw = doc_events["outboundAccountPosition"]
    event = parse_user_message(raw)
    assert isinstance(event, BalancesUpdate) and event.update_time_ms == raw["event"]["u"]
    assert event.balances == tuple(
        Balance(b["a"], Decimal(b["f"]), Decimal(b["l"])) for b in raw["event"]["B"]
    )


def test_parse_documented_balance_update_list_status_and_termination(doc_events):
    delta = parse_user_message(doc_events["balanceUpdate"])
    assert delta == BalanceDelta("BTC", Decimal("100"), 1573200697068, 1573200697110)
    listed = parse_user_message(doc_events["listStatus"])
    assert isinstance(listed, OrderListUpdate) and listed.contingency_type == "OCO"
    assert listed.orders[0] == ("ETHBTC", 17, "AJYsMjErWJesZvqlJCTUgL")
    assert isinstance(parse_user_message(doc_events["eventStreamTerminated"]), StreamTerminated)
    assert isinstance(parse_user_message(doc_events["serverShutdown"]), ServerShutdown)


def test_parse_answers_and_unused_events_give_none():
    assert parse_user_message({"id": "uds-1", "status": 200, "result": {}}) is None
    assert parse_user_message({"subscriptionId": 0, "event": {"e": "externalLockUpdate"}}) is None


def test_parse_cancel_names_the_cancelled_order_not_the_cancel_request():
    event = parse_user_message(report(x="CANCELED", X="CANCELED", c="cancel-req", C="aegis-1"))
    assert event.client_order_id == "aegis-1" and event.is_final


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ([1, 2], "frame is not a JSON object"),
        ({"subscriptionId": 0}, "frame is neither an event nor an answer"),
        ({"subscriptionId": 0, "event": "x"}, "event is not an object"),
        (report(z=None) | {"event": {k: v for k, v in report()["event"].items() if k != "z"}},
         "executionReport: missing field cumulative quantity"),
        (report(L=27000.0), "executionReport: last price is not a decimal string"),
        (report(n="NaN"), "executionReport: commission is not finite"),
        (report(i="11"), "executionReport: order id is not an integer"),
        ({"event": {"e": "outboundAccountPosition", "E": 1, "u": 1, "B": [{"a": "BTC"}]}},
         "outboundAccountPosition: missing field free"),
    ],
)  # fmt: skip
def test_parse_malformed_frame_raises_naming_the_field(frame, reason):
    with pytest.raises(MalformedUserEvent) as info:
        parse_user_message(frame)
    assert info.value.reason == reason


def _order(status="NEW", executed="0") -> ExchangeOrder:
    return ExchangeOrder("BTCUSDT", 11, "aegis-1", "BUY", "LIMIT", status, Decimal("20000"),
                         Decimal("0.01"), Decimal(executed), Decimal(0), 1)  # fmt: skip


def test_account_cache_follows_order_from_open_to_filled_and_counts_fill_once():
    cache = AccountCache()
    cache.load_snapshot(AccountSnapshot(True, {}, 0), [_order()])
    fills = []
    cache.fill_listeners.append(fills.append)
    assert "aegis-1" in cache.open_orders()
    trade = parse_user_message(report(o="LIMIT"))
    cache.apply(trade)
    cache.apply(trade)  # the same event again (rollover overlap)
    assert cache.open_orders() == {} and cache.order("aegis-1").status == "FILLED"
    assert len(fills) == 1 and cache.duplicate_fills == 1


def test_account_cache_ignores_an_older_order_state_after_the_final_one():
    cache = AccountCache()
    cache.apply(parse_user_message(report()))
    cache.apply(parse_user_message(report(x="NEW", X="NEW", z="0", l="0", t=-1)))
    assert cache.order("aegis-1").status == "FILLED" and cache.stale_ignored == 1


def test_account_cache_balances_take_newest_absolute_value_and_deltas():
    cache = AccountCache()
    snap = AccountSnapshot(True, {"USDT": Balance("USDT", Decimal(100), Decimal(0))}, 50)
    cache.load_snapshot(snap, [])
    old = {"e": "outboundAccountPosition", "E": 40, "u": 40,
           "B": [{"a": "USDT", "f": "1.0", "l": "0"}]}  # fmt: skip
    cache.apply(parse_user_message({"event": old}))
    assert cache.balance("USDT").free == 100 and cache.stale_ignored == 1
    new = old | {"u": 60, "B": [{"a": "USDT", "f": "90.5", "l": "9.5"}]}
    cache.apply(parse_user_message({"event": new}))
    assert cache.balance("USDT") == Balance("USDT", Decimal("90.5"), Decimal("9.5"))
    delta = {"e": "balanceUpdate", "E": 70, "a": "USDT", "d": "-10.5", "T": 70}
    cache.apply(parse_user_message({"event": delta}))
    assert cache.balance("USDT").free == Decimal(80)
    assert cache.balance("ETH") == Balance("ETH", Decimal(0), Decimal(0))
