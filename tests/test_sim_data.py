"""Recorded data, derived symbols, bar math and error texts of the simulator."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from aegis.binance.sim import errors
from aegis.binance.sim.bars import decimals_of, partial_ohlc, path_points, range_between
from aegis.binance.sim.catalog import ExchangeCatalog, read_exchange_info
from aegis.binance.sim.config import EXCHANGE_INFO_FILE, SimConfig
from aegis.binance.sim.data import KlineDataError, load_series


def test_load_series_reads_real_files_and_filters_time(data_dir):
    series = load_series(
        [data_dir / "klines"], ["BTCUSDT"], 1679097600000, 1679097600000 + 3_600_000
    )
    btc = series["BTCUSDT"]
    assert len(btc) == 60 and not btc.derived
    assert int(btc.open_time[0]) == 1679097600000
    assert np.all(np.diff(btc.open_time) == 60_000)


def test_load_series_keeps_real_gaps(data_dir):
    btc = load_series([data_dir / "klines"], ["BTCUSDT"])["BTCUSDT"]
    gaps = np.diff(btc.open_time)[np.diff(btc.open_time) > 60_000]
    assert len(gaps) >= 1  # the 2023-03-24 outage is not filled


def test_derived_symbols_are_deterministic_scaled_copies(data_dir):
    a = load_series([data_dir / "klines"], symbol_count=300)
    b = load_series([data_dir / "klines"], symbol_count=300)
    assert len(a) == 300 and list(a) == list(b)
    derived = a["D001BTCUSDT"]
    assert derived.derived and derived.source_symbol == "BTCUSDT" and derived.scale == 1.001
    assert derived.open_time is a["BTCUSDT"].open_time  # shared, not copied


def test_unknown_symbol_bad_path_and_empty_range_are_clear_errors(data_dir, tmp_path):
    with pytest.raises(KlineDataError, match="no kline file"):
        load_series([data_dir / "klines"], ["NOPEUSDT"])
    with pytest.raises(KlineDataError, match="does not exist"):
        load_series([tmp_path / "missing"])
    with pytest.raises(KlineDataError, match="no bars left"):
        load_series([data_dir / "klines"], ["BTCUSDT"], from_ms=2_000_000_000_000)
    bad = tmp_path / "binance_spot_BADUSDT_1m_20230101_20230102.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("time,o,h,l,c,v\n1,2,3,4,5,6\n")
    with pytest.raises(KlineDataError, match="header"):
        load_series([bad])


def test_catalog_copies_real_entry_for_derived_symbols(data_dir):
    series = load_series([data_dir / "klines"], ["BTCUSDT"], symbol_count=2)
    catalog = ExchangeCatalog(read_exchange_info(EXCHANGE_INFO_FILE), series, False, [])
    entry = catalog.entry("D001BTCUSDT")
    assert entry["baseAsset"] == "D001BTC" and entry["quoteAsset"] == "USDT"
    assert entry["filters"] == catalog.entry("BTCUSDT")["filters"]
    assert catalog.spec("BTCUSDT").price_decimals == 2


def test_partial_bar_follows_path_and_ends_on_recorded_values():
    o, h, low, c = 100.0, 110.0, 95.0, 105.0  # rising bar: open → low → high → close
    assert path_points(o, h, low, c) == (100.0, 95.0, 110.0, 105.0)
    assert partial_ohlc(o, h, low, c, 1 / 3, 2) == (100.0, 100.0, 95.0, 95.0)
    assert partial_ohlc(o, h, low, c, 1.0, 2) == (o, h, low, c)
    for phi in np.linspace(0, 1, 13):
        _, ph, pl, pc = partial_ohlc(o, h, low, c, float(phi), 2)
        assert low <= pl <= pc <= ph <= h
    assert range_between(path_points(o, h, low, c), 0.2, 0.5) == (95.0, 102.5)


def test_decimals_of_tick_strings():
    assert decimals_of("0.01000000") == 2
    assert decimals_of("1.00000000") == 0
    assert decimals_of("0.00000100") == 6


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="speed"):
        SimConfig(speed=-1)
    with pytest.raises(ValueError, match="updates_per_bar"):
        SimConfig(updates_per_bar=0)
    with pytest.raises(ValueError, match="account"):
        SimConfig(accounts=())


def test_every_error_text_is_in_the_bundled_catalogue(data_dir):
    with gzip.open(data_dir / "samples" / "binance_spot_error_codes.json.gz", "rt") as fh:
        catalogue = json.load(fh)
    documented = {m for e in catalogue["errors"] for m in e["messages"]}
    documented |= {t["message"] for t in catalogue["message_tables"]}

    def known(text: str) -> bool:
        pattern = text.replace("{limit}", "%s").replace("{interval}", "%s").replace("{until}", "%s")
        return pattern in documented

    texts = [
        errors.MSG_UNKNOWN_ORDER, errors.MSG_DUPLICATE_ORDER, errors.MSG_INSUFFICIENT_BALANCE,
        errors.MSG_WOULD_MATCH, errors.MSG_MARKET_CLOSED, errors.MSG_TIMESTAMP_AHEAD,
        errors.MSG_TIMESTAMP_OUTSIDE, errors.MSG_BAD_SIGNATURE, errors.MSG_BAD_KEY_FORMAT,
        errors.MSG_REJECTED_KEY, errors.MSG_UNKNOWN, errors.MSG_TIMEOUT, errors.MSG_BANNED,
        errors.MSG_TOO_MANY_ORDERS, errors.MSG_TOO_MUCH_WEIGHT, errors.invalid_symbol().msg, errors.no_such_order().msg,
    ]  # fmt: skip
    assert [t for t in texts if not known(t)] == []
    assert (
        errors.mandatory("x").msg
        == "Mandatory parameter 'x' was not sent, was empty/null, or malformed."
    )
    assert errors.filter_failure("LOT_SIZE").msg == "Filter failure: LOT_SIZE"
