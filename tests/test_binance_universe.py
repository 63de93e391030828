"""Specification of universe selection (aegis.binance.universe) on the real exchangeInfo."""

from __future__ import annotations

import gzip
import json
import random
from decimal import Decimal

import pytest

from aegis.binance.universe import Universe, UniverseError, UniverseSymbol, select_universe


@pytest.fixture(scope="module")
def info(data_dir):
    with gzip.open(data_dir / "exchange_info" / "binance_spot_exchangeInfo_20240908.json.gz") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def legacy_info(data_dir):
    with gzip.open(data_dir / "exchange_info" / "binance_spot_exchangeInfo_20211012.json.gz") as fh:
        return json.load(fh)


def _tickers(info, seed=1):
    rnd = random.Random(seed)
    return [
        {"symbol": s["symbol"], "quoteVolume": f"{rnd.uniform(0, 1e9):.8f}"}
        for s in info["symbols"]
    ]


def test_select_top_n_by_quote_volume_only_trading_spot_usdt(info):
    tickers = _tickers(info)
    universe = select_universe(info, tickers, top_n=300)
    infos = {s["symbol"]: s for s in info["symbols"]}
    assert len(universe) == 300
    for s in universe.symbols:
        assert infos[s.symbol]["quoteAsset"] == "USDT" and infos[s.symbol]["status"] == "TRADING"
        assert infos[s.symbol]["isSpotTradingAllowed"]
    volumes = [s.quote_volume for s in universe.symbols]
    assert volumes == sorted(volumes, reverse=True)
    eligible = [t for t in tickers if infos[t["symbol"]]["quoteAsset"] == "USDT"]
    best = max(eligible, key=lambda t: Decimal(t["quoteVolume"]))
    assert universe.symbols[0].symbol == best["symbol"]
    assert [s.symbol_id for s in universe.symbols] == list(range(1, 301))


def test_select_skips_symbols_not_trading(legacy_info):
    universe = select_universe(legacy_info, _tickers(legacy_info), top_n=10_000)
    statuses = {s["symbol"]: s["status"] for s in legacy_info["symbols"]}
    assert universe.symbols and all(statuses[s.symbol] == "TRADING" for s in universe.symbols)
    assert any(status == "BREAK" for status in statuses.values())


def test_select_quote_asset_is_configurable(info):
    universe = select_universe(info, _tickers(info), quote_asset="BTC", top_n=5)
    assert len(universe) == 5 and all(s.quote_asset == "BTC" for s in universe.symbols)


def test_select_explicit_list_keeps_order_and_ignores_volume(info):
    universe = select_universe(info, [], symbols=["ethusdt", "BTCUSDT", " SOLUSDT "])
    assert [s.symbol for s in universe.symbols] == ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
    assert universe.ids() == {"ETHUSDT": 1, "BTCUSDT": 2, "SOLUSDT": 3}


def test_select_explicit_unknown_symbol_raises_naming_it(info):
    with pytest.raises(UniverseError, match="unknown symbol NOPEUSDT"):
        select_universe(info, [], symbols=["BTCUSDT", "NOPEUSDT"])


def test_select_explicit_symbol_not_trading_raises(legacy_info):
    halted = next(s["symbol"] for s in legacy_info["symbols"] if s["status"] != "TRADING")
    with pytest.raises(UniverseError, match=f"{halted} is not tradable"):
        select_universe(legacy_info, [], symbols=[halted])


def test_select_explicit_duplicates_raise(info):
    with pytest.raises(UniverseError, match="duplicates"):
        select_universe(info, [], symbols=["BTCUSDT", "btcusdt"])


def test_refresh_keeps_existing_ids_and_numbers_new_symbols_after_the_max(info):
    first = select_universe(info, _tickers(info, seed=1), top_n=50)
    second = select_universe(info, _tickers(info, seed=2), top_n=50, previous=first)
    before = first.ids()
    for s in second.symbols:
        if s.symbol in before:
            assert s.symbol_id == before[s.symbol]
        else:
            assert s.symbol_id > max(before.values())
    assert len(set(second.ids().values())) == 50


def test_refresh_never_reuses_the_id_of_a_symbol_that_left_and_returns_its_old_id(info):
    first = select_universe(info, [], symbols=["BTCUSDT", "ETHUSDT"])
    second = select_universe(info, [], symbols=["BTCUSDT"], previous=first)
    third = select_universe(info, [], symbols=["BTCUSDT", "SOLUSDT"], previous=second)
    fourth = select_universe(info, [], symbols=["ETHUSDT", "SOLUSDT"], previous=third)
    assert third.id_of("SOLUSDT") == 3  # not ETHUSDT's 2
    assert fourth.ids() == {"ETHUSDT": 2, "SOLUSDT": 3}


def test_universe_lookups_and_errors(info):
    universe = select_universe(info, [], symbols=["BTCUSDT"])
    assert (
        universe.id_of("btcusdt") == 1
        and universe.symbol_of(1) == "BTCUSDT"
        and "BTCUSDT" in universe
    )
    with pytest.raises(UniverseError, match="not in the universe"):
        universe.id_of("ETHUSDT")
    with pytest.raises(UniverseError, match="no symbol has id 9"):
        universe.symbol_of(9)


def test_universe_duplicate_ids_are_refused():
    a = UniverseSymbol("A", 1, "A", "USDT", Decimal(0))
    b = UniverseSymbol("B", 1, "B", "USDT", Decimal(0))
    with pytest.raises(UniverseError, match="duplicate"):
        Universe((a, b), 2)


def test_select_bad_ticker_or_top_n_raise(info):
    with pytest.raises(UniverseError, match="quoteVolume"):
        select_universe(info, [{"symbol": "BTCUSDT", "quoteVolume": "lots"}])
    with pytest.raises(UniverseError, match="top_n"):
        select_universe(info, [], top_n=0)
