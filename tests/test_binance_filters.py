"""Specification of Binance order rules (aegis.binance.filters).

The property tests compare SymbolFilters with ``reference_failures``: a slow, literal transcription
of Binance's filter formulas in exact rational arithmetic, written independently of the module.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.binance.filters import FilterRejected, InvalidOrder, SymbolFilters, filters_by_symbol

DATA = Path(__file__).resolve().parents[1] / "aegis" / "data" / "exchange_info"
FILES = sorted(DATA.glob("*.json.gz"))


def _load(path: Path) -> dict:
    with gzip.open(path) as fh:
        return json.load(fh)


SYMBOLS = {f.name: _load(f)["symbols"] for f in FILES}
ALL_SYMBOLS = [s for name in sorted(SYMBOLS) for s in SYMBOLS[name]]
ALGO = {"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"}


# -- the reference: Binance's documented formulas, one filter at a time -------------------------


def reference_failures(filters, side, order_type, qty, price, avg, open_orders, open_algo) -> set:
    """Names of every filter the order fails (exact Fractions; 0 switches a rule off)."""
    F = lambda v: Fraction(str(v))  # noqa: E731
    market = order_type == "MARKET"
    failed = set()
    for f in filters:
        t = f["filterType"]
        if t == "PRICE_FILTER" and not market:
            lo, hi, tick = F(f["minPrice"]), F(f["maxPrice"]), F(f["tickSize"])
            if (lo and price < lo) or (hi and price > hi) or (tick and (price - lo) % tick):
                failed.add(t)
        elif t == "LOT_SIZE" or (t == "MARKET_LOT_SIZE" and market):
            lo, hi, step = F(f["minQty"]), F(f["maxQty"]), F(f["stepSize"])
            if (lo and qty < lo) or (hi and qty > hi) or (step and (qty - lo) % step):
                failed.add(t)
        elif t == "MIN_NOTIONAL":
            if not market or f["applyToMarket"]:
                ref = avg if market else price
                if F(f["minNotional"]) and ref * qty < F(f["minNotional"]):
                    failed.add(t)
        elif t == "NOTIONAL":
            ref = avg if market else price
            lo, hi = F(f["minNotional"]), F(f["maxNotional"])
            if lo and (not market or f["applyMinToMarket"]) and ref * qty < lo:
                failed.add(t)
            if hi and (not market or f["applyMaxToMarket"]) and ref * qty > hi:
                failed.add(t)
        elif t in ("PERCENT_PRICE", "PERCENT_PRICE_BY_SIDE") and not market:
            if t == "PERCENT_PRICE":
                up, down = F(f["multiplierUp"]), F(f["multiplierDown"])
            elif side == "BUY":
                up, down = F(f["bidMultiplierUp"]), F(f["bidMultiplierDown"])
            else:
                up, down = F(f["askMultiplierUp"]), F(f["askMultiplierDown"])
            if (up and price > avg * up) or (down and price < avg * down):
                failed.add(t)
        elif t == "MAX_NUM_ORDERS" and f["maxNumOrders"]:
            if open_orders + 1 > f["maxNumOrders"]:
                failed.add(t)
        elif t == "MAX_NUM_ALGO_ORDERS" and f["maxNumAlgoOrders"] and order_type in ALGO:  # noqa: SIM102
            if open_algo + 1 > f["maxNumAlgoOrders"]:
                failed.add(t)
    return failed


def _filter(info, kind):
    return next((f for f in info["filters"] if f["filterType"] == kind), None)


# -- order generation near every boundary --------------------------------------------------------


def _jitter(rnd: random.Random, value: Fraction, grid: Fraction) -> Fraction:
    """Exactly a boundary, one grid unit either side, or a fraction of a unit off the grid."""
    choice = rnd.randrange(6)
    if choice >= 4 or not grid:
        return value
    if choice == 1:
        return value + grid
    if choice == 2:
        return value - grid
    return value + grid * Fraction(rnd.randrange(1, 100), 100) * rnd.choice((1, -1))


def _mutate(rnd: random.Random, info: dict) -> dict:
    """Switch some rules off (value 0) and give MARKET_LOT_SIZE a step, as other symbols may."""
    filters = []
    for f in info["filters"]:
        f = dict(f)
        for key, value in list(f.items()):
            if key != "filterType" and not isinstance(value, bool) and rnd.random() < 0.2:
                f[key] = 0 if isinstance(value, int) else "0.00000000"
        if f["filterType"] == "MARKET_LOT_SIZE" and rnd.random() < 0.5:
            lot = _filter(info, "LOT_SIZE")
            f["stepSize"], f["minQty"] = lot["stepSize"], lot["minQty"]
        filters.append(f)
    return {**info, "filters": filters}


def random_order(rnd: random.Random, info: dict):
    types = [
        t for t in ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT") if t in info["orderTypes"]
    ]
    order_type, side = rnd.choice(types), rnd.choice(("BUY", "SELL"))
    pf, lot = _filter(info, "PRICE_FILTER"), _filter(info, "LOT_SIZE")
    tick, step = Fraction(pf["tickSize"]), Fraction(lot["stepSize"])
    lo_p = max(Fraction(pf["minPrice"]), tick, Fraction(1, 10**8))
    hi_p = Fraction(pf["maxPrice"]) or Fraction(10**6)
    avg = Fraction(math.exp(rnd.uniform(math.log(lo_p), math.log(hi_p)))).limit_denominator(10**8)
    avg = max(avg, Fraction(1, 10**8))
    band = _filter(info, "PERCENT_PRICE_BY_SIDE") or _filter(info, "PERCENT_PRICE") or {}
    edges = [Fraction(str(v)) for k, v in band.items() if "ultiplier" in k] or [Fraction(1)]
    price = avg * rnd.choice(edges + [Fraction(1)] * 3 + [Fraction(rnd.randrange(1, 1000), 100)])
    price = _jitter(rnd, price - price % tick if tick else price, tick)
    price = max(price, Fraction(1, 10**8))
    notional = _filter(info, "NOTIONAL") or _filter(info, "MIN_NOTIONAL")
    min_notional = Fraction(notional["minNotional"]) if notional else Fraction(0)
    targets = [Fraction(lot["minQty"]), Fraction(lot["maxQty"])]
    if min_notional:
        targets.append(min_notional / (avg if order_type == "MARKET" else price))
    if notional and Fraction(notional.get("maxNotional", 0)):
        targets.append(Fraction(notional["maxNotional"]) / price)
    factor = rnd.choice(
        (1, 1, Fraction(rnd.randrange(100, 300), 100), Fraction(rnd.randrange(50, 100), 100))
    )
    qty = rnd.choice(targets) * factor
    qty = _jitter(rnd, qty - (qty % step if step else 0), step)
    qty = max(qty, Fraction(1, 10**8))
    max_orders = (_filter(info, "MAX_NUM_ORDERS") or {}).get("maxNumOrders", 0)
    max_algo = (_filter(info, "MAX_NUM_ALGO_ORDERS") or {}).get("maxNumAlgoOrders", 0)
    open_orders = rnd.choice((0, 0, 0, max(max_orders - 1, 0), max_orders))
    open_algo = rnd.choice((0, 0, 0, max(max_algo - 1, 0), max_algo))
    return (
        side,
        order_type,
        qty,
        (None if order_type == "MARKET" else price),
        avg,
        open_orders,
        open_algo,
    )


def _decimal(value: Fraction) -> Decimal:
    # 40 significant digits: exact for every grid value, and far finer than any tick otherwise.
    return (
        Decimal(value.numerator) / Decimal(value.denominator)
        if value.denominator != 1
        else Decimal(value.numerator)
    )


def assert_check_agrees(info: dict, order) -> None:
    side, order_type, qty, price, avg, open_orders, open_algo = order
    filters = SymbolFilters.from_symbol_info(info)
    dq, dp, da = _decimal(qty), None if price is None else _decimal(price), _decimal(avg)
    fq, fp, fa = Fraction(dq), None if dp is None else Fraction(dp), Fraction(da)
    expected = reference_failures(
        info["filters"], side, order_type, fq, fp, fa, open_orders, open_algo
    )
    try:
        filters.check(
            side, order_type, dq, dp, da, open_orders=open_orders, open_algo_orders=open_algo
        )
    except FilterRejected as exc:
        assert exc.filter_type in expected, (info["symbol"], order, exc.filter_type, expected)
    else:
        assert not expected, (info["symbol"], order, expected)


def assert_fit_sound(info: dict, order) -> None:
    side, order_type, qty, price, avg, open_orders, open_algo = order
    filters = SymbolFilters.from_symbol_info(info)
    dq, dp, da = _decimal(qty), None if price is None else _decimal(price), _decimal(avg)
    fq, fp = Fraction(dq), None if dp is None else Fraction(dp)
    try:
        q, p = filters.fit(
            side, order_type, dq, dp, da, open_orders=open_orders, open_algo_orders=open_algo
        )
    except FilterRejected:
        # The closest candidate on the safe side (floored quantity, safe tick) must fail a filter.
        lot = _filter(info, "LOT_SIZE")
        lo, step = Fraction(lot["minQty"]), Fraction(lot["stepSize"])
        cq = lo + (fq - lo) // step * step if step else fq
        mls = _filter(info, "MARKET_LOT_SIZE")
        if order_type == "MARKET" and mls and Fraction(mls["stepSize"]):
            mlo, mstep = Fraction(mls["minQty"]), Fraction(mls["stepSize"])
            cq = mlo + (cq - mlo) // mstep * mstep
        cp = fp
        pf = _filter(info, "PRICE_FILTER")
        tick, plo = Fraction(pf["tickSize"]), Fraction(pf["minPrice"])
        if fp is not None and tick:
            n = (fp - plo) / tick
            cp = plo + (math.ceil(n) if side == "SELL" else math.floor(n)) * tick
        if cq > 0 and (cp is None or cp > 0):
            assert reference_failures(
                info["filters"], side, order_type, cq, cp, Fraction(da), open_orders, open_algo
            ), (info["symbol"], order, cq, cp)
        return
    assert not reference_failures(
        info["filters"],
        side,
        order_type,
        Fraction(q),
        None if p is None else Fraction(p),
        Fraction(da),
        open_orders,
        open_algo,
    )
    lot_step = Fraction(_filter(info, "LOT_SIZE")["stepSize"])
    assert Fraction(q) <= fq and (not lot_step or fq - Fraction(q) < lot_step)
    if fp is not None:
        tick = Fraction(_filter(info, "PRICE_FILTER")["tickSize"])
        moved = Fraction(p) - fp
        assert (moved <= 0) if side == "BUY" else (moved >= 0)
        assert not tick or abs(moved) < tick


# -- properties -----------------------------------------------------------------------------------

ORDERS_PER_SYMBOL = 12


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_symbol_filters_every_real_symbol_agrees_with_reference(path):
    symbols = SYMBOLS[path.name]
    for index, info in enumerate(symbols):
        for seed in range(ORDERS_PER_SYMBOL):
            rnd = random.Random(index * 1000 + seed)
            order = random_order(rnd, info)
            assert_check_agrees(info, order)
            assert_fit_sound(info, order)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    info=st.sampled_from(ALL_SYMBOLS), rnd=st.randoms(use_true_random=False), mutate=st.booleans()
)
def test_symbol_filters_random_orders_accepted_iff_reference_accepts(info, rnd, mutate):
    if mutate:
        info = _mutate(rnd, info)
    order = random_order(rnd, info)
    assert_check_agrees(info, order)
    assert_fit_sound(info, order)


# -- examples -----------------------------------------------------------------------------------

BTC = next(
    s for s in SYMBOLS["binance_spot_exchangeInfo_20240908.json.gz"] if s["symbol"] == "BTCUSDT"
)
LEGACY = next(
    s for s in SYMBOLS["binance_spot_exchangeInfo_20211012.json.gz"] if s["symbol"] == "BTCUSDT"
)


@pytest.fixture
def btc() -> SymbolFilters:
    return SymbolFilters.from_symbol_info(BTC)


def test_fit_buy_price_rounds_down_and_quantity_floors(btc):
    assert btc.fit("BUY", "LIMIT", "0.0123456", "56123.456789", "56000") == (
        Decimal("0.01234"),
        Decimal("56123.45"),
    )


def test_fit_sell_price_rounds_up(btc):
    assert btc.fit("SELL", "LIMIT", "0.0123456", "56123.451", "56000")[1] == Decimal("56123.46")


def test_fit_on_grid_order_is_unchanged(btc):
    assert btc.fit("BUY", "LIMIT", Decimal("0.5"), Decimal("56000.01"), 56000) == (
        Decimal("0.50000"),
        Decimal("56000.01"),
    )


def test_fit_notional_below_minimum_raises_binance_message(btc):
    with pytest.raises(FilterRejected) as info:
        btc.fit("BUY", "LIMIT", "0.00005", "56000", "56000")
    assert str(info.value) == "Filter failure: NOTIONAL"
    assert info.value.filter_type == "NOTIONAL"


def test_fit_quantity_below_min_qty_raises_lot_size(btc):
    with pytest.raises(FilterRejected, match=r"^Filter failure: LOT_SIZE$"):
        btc.fit("BUY", "LIMIT", "0.000001", "56000", "56000")


def test_fit_quantity_above_max_qty_is_rejected_not_clamped(btc):
    with pytest.raises(FilterRejected, match="LOT_SIZE"):
        btc.fit("SELL", "LIMIT", "9001", "56000", "56000")


def test_fit_buy_above_percent_band_raises_percent_price_by_side(btc):
    with pytest.raises(FilterRejected, match=r"^Filter failure: PERCENT_PRICE_BY_SIDE$"):
        btc.fit("BUY", "LIMIT", "0.01", "300000", "56000")


def test_check_off_grid_price_raises_price_filter(btc):
    with pytest.raises(FilterRejected, match="PRICE_FILTER"):
        btc.check("BUY", "LIMIT", "0.01", "56000.001", "56000")


def test_check_market_quantity_above_market_max_raises_market_lot_size(btc):
    with pytest.raises(FilterRejected, match=r"^Filter failure: MARKET_LOT_SIZE$"):
        btc.check("BUY", "MARKET", "150", avg_price="56000")
    btc.check("BUY", "LIMIT", "150", "56000", "56000")  # limit orders ignore MARKET_LOT_SIZE


def test_check_market_notional_uses_average_price(btc):
    btc.check("BUY", "MARKET", "0.0001", avg_price="56000")  # 5.6 >= 5
    with pytest.raises(FilterRejected, match="NOTIONAL"):
        btc.check("BUY", "MARKET", "0.0001", avg_price="40000")  # 4.0 < 5


def test_check_market_max_notional_not_applied_when_apply_max_to_market_false(btc):
    btc.check("BUY", "MARKET", "100", avg_price="100000")  # 10M > maxNotional 9M, yet allowed
    with pytest.raises(FilterRejected, match="NOTIONAL"):
        btc.check("BUY", "LIMIT", "100", "100000", "100000")


def test_check_open_orders_at_cap_raises_max_num_orders(btc):
    btc.check("BUY", "LIMIT", "0.01", "56000", "56000", open_orders=199)
    with pytest.raises(FilterRejected, match=r"^Filter failure: MAX_NUM_ORDERS$"):
        btc.check("BUY", "LIMIT", "0.01", "56000", "56000", open_orders=200)


def test_check_algo_orders_at_cap_rejects_only_algo_orders(btc):
    with pytest.raises(FilterRejected, match=r"^Filter failure: MAX_NUM_ALGO_ORDERS$"):
        btc.check("SELL", "STOP_LOSS_LIMIT", "0.01", "56000", "56000", open_algo_orders=5)
    btc.check("SELL", "LIMIT", "0.01", "56000", "56000", open_algo_orders=5)


def test_check_legacy_min_notional_and_percent_price():
    legacy = SymbolFilters.from_symbol_info(LEGACY)
    assert legacy.notional_type == "MIN_NOTIONAL" and legacy.percent_type == "PERCENT_PRICE"
    with pytest.raises(FilterRejected, match=r"^Filter failure: MIN_NOTIONAL$"):
        legacy.check("BUY", "LIMIT", "0.0001", "50000", "50000")
    with pytest.raises(FilterRejected, match=r"^Filter failure: PERCENT_PRICE$"):
        legacy.check("SELL", "LIMIT", "0.01", "9000", "50000")


def test_check_filter_value_zero_switches_rule_off():
    info = {**BTC, "filters": [dict(f) for f in BTC["filters"]]}
    for f in info["filters"]:
        if f["filterType"] == "NOTIONAL":
            f["minNotional"] = "0.00000000"
        if f["filterType"] == "PRICE_FILTER":
            f["tickSize"] = "0.00000000"
    relaxed = SymbolFilters.from_symbol_info(info)
    relaxed.check("BUY", "LIMIT", "0.00001", "56000.001", "56000")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("HOLD", "LIMIT", "1", "1", "1"), "side"),
        (("BUY", "OCO", "1", "1", "1"), "unsupported order type"),
        (("BUY", "LIMIT", "1", None, "1"), "needs a price"),
        (("BUY", "MARKET", "1", "1", "1"), "no price"),
        (("BUY", "LIMIT", "0", "1", "1"), "quantity must be positive"),
        (("BUY", "LIMIT", "1", "-1", "1"), "price must be positive"),
        (("BUY", "LIMIT", "nan", "1", "1"), "finite"),
        (("BUY", "LIMIT", "abc", "1", "1"), "not a number"),
        (("BUY", "LIMIT", [1], "1", "1"), "must be Decimal"),
        (("BUY", "LIMIT", "0.01", "56000", None), "avg_price is required"),
        (("BUY", "MARKET", "0.01", None, None), "avg_price is required"),
    ],
)
def test_check_malformed_order_raises_invalid_order(btc, args, message):
    with pytest.raises(InvalidOrder, match=message):
        btc.check(*args)


def test_check_order_type_not_listed_for_symbol_raises_invalid_order():
    info = {**BTC, "orderTypes": ["LIMIT", "MARKET"]}
    with pytest.raises(InvalidOrder, match="does not allow LIMIT_MAKER"):
        SymbolFilters.from_symbol_info(info).check("BUY", "LIMIT_MAKER", "0.01", "56000", "56000")


def test_check_accepts_floats_by_their_shortest_repr(btc):
    btc.check("BUY", "LIMIT", 0.01, 56000.01, 56000.0)


def test_filters_by_symbol_builds_every_symbol():
    info = _load(FILES[0])
    built = filters_by_symbol(info)
    assert len(built) == len(info["symbols"]) and built["BTCUSDT"].symbol == "BTCUSDT"


def test_check_stop_price_off_grid_raises_price_filter(btc):
    btc.check_stop_price("55000.01")
    with pytest.raises(FilterRejected, match=r"^Filter failure: PRICE_FILTER$"):
        btc.check_stop_price("55000.001")
    with pytest.raises(InvalidOrder, match="stop_price must be positive"):
        btc.check_stop_price("0")


def test_fit_stop_price_rounds_to_the_safe_side(btc):
    assert btc.fit_stop_price("SELL", "55000.001") == Decimal("55000.01")
    assert btc.fit_stop_price("BUY", "55000.009") == Decimal("55000.00")
    with pytest.raises(FilterRejected, match="PRICE_FILTER"):
        btc.fit_stop_price("SELL", "2000000")  # above maxPrice
