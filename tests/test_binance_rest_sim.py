"""The REST client and the order rules against the Binance simulator (aegis.binance.sim).

The simulator is another helper's work built on the same signing and filters; these tests check
that the two sides interoperate over real sockets, including its fault injection.
"""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal

import aiohttp
import numpy as np
import pytest

from aegis.binance.errors import FilterFailure, IpBanned
from aegis.binance.filters import FilterRejected, SymbolFilters
from aegis.binance.protocol import KlineParser, MalformedFrame
from aegis.binance.rest import BinanceRestClient
from aegis.binance.sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig
from aegis.binance.sim.server import BinanceSimulator
from aegis.binance.universe import select_universe
from aegis.binance.weight import WeightBudget
from aegis.records import BAR_CLOSED, BAR_DTYPE

FIRST_BAR_MS = 1679004900000  # first bar of the recorded 2023-03-16 files
START_MS = FIRST_BAR_MS + 4 * 3_600_000


@pytest.fixture
async def sim():
    config = SimConfig(
        symbols=("BTCUSDT", "ETHUSDT"), speed=1.0, start_paused=True, start_ms=START_MS
    )
    async with BinanceSimulator(config) as simulator:
        yield simulator


@pytest.fixture
async def client(sim, tmp_path):
    with WeightBudget.for_home(tmp_path) as budget:
        async with BinanceRestClient(
            sim.rest_url,
            budget,
            api_key=DEFAULT_API_KEY,
            api_secret=DEFAULT_API_SECRET,
            backoff_base_s=0.01,
        ) as c:
            yield c


@pytest.fixture
async def btc_filters(client):
    info = await client.exchange_info()
    return SymbolFilters.from_symbol_info(
        next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    )


async def test_sim_universe_and_klines_range_match_recorded_bars(client, data_dir):
    await client.sync_time()
    info, tickers = await client.exchange_info(), await client.ticker_24hr()
    universe = select_universe(info, tickers, top_n=5)
    assert set(universe.ids()) == {"BTCUSDT", "ETHUSDT"}
    bars = await client.klines_range(
        KlineParser(universe.ids()), "BTCUSDT", "1m", FIRST_BAR_MS, START_MS - 1
    )
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        recorded = [r for r in csv.DictReader(fh) if int(r["open_time"]) < START_MS]
    assert [int(r["open_time"]) for r in recorded] == bars["open_time_ms"].tolist()
    assert [float(r["close"]) for r in recorded] == bars["close"].tolist()


async def test_sim_fitted_orders_are_accepted_and_tracked(client, btc_filters):
    avg = await client.avg_price("BTCUSDT")
    qty, price = btc_filters.fit("BUY", "LIMIT", Decimal("0.00123456"), avg * Decimal("0.98"), avg)
    order = await client.new_order("BTCUSDT", "BUY", "LIMIT", qty, price, client_order_id="sim-1")
    assert (order.status, order.quantity, order.price) == ("NEW", qty, price)
    assert [o.client_order_id for o in await client.open_orders("BTCUSDT")] == ["sim-1"]
    assert (await client.cancel_order("BTCUSDT", orig_client_order_id="sim-1")).status == "CANCELED"
    qty, _ = btc_filters.fit("BUY", "MARKET", Decimal("0.002"), None, avg)
    filled = await client.new_order("BTCUSDT", "BUY", "MARKET", qty, client_order_id="sim-2")
    assert filled.status == "FILLED" and filled.executed_quantity == qty and filled.fills
    account = await client.account()
    assert account.balances["BTC"].free == qty - sum(f.commission for f in filled.fills)
    assert (await client.commission("BTCUSDT")).taker == Decimal("0.001")


async def test_sim_filter_failure_matches_local_check(client, btc_filters):
    avg = await client.avg_price("BTCUSDT")
    price = avg.quantize(Decimal("0.01"))
    cases = [
        (Decimal("0.0000123"), price),
        (Decimal("0.00001"), price),
        (Decimal("0.001"), price + Decimal("0.001")),
    ]
    for i, (qty, px) in enumerate(cases):
        with pytest.raises(FilterRejected) as local:
            btc_filters.check("BUY", "LIMIT", qty, px, avg)
        with pytest.raises(FilterFailure) as remote:
            await client.new_order("BTCUSDT", "BUY", "LIMIT", qty, px, client_order_id=f"bad-{i}")
        assert remote.value.filter_type == local.value.filter_type
        assert remote.value.msg == str(local.value)


async def test_sim_order_5xx_after_placing_is_found_by_client_id(client, sim, btc_filters):
    avg = await client.avg_price("BTCUSDT")
    qty, price = btc_filters.fit("BUY", "LIMIT", Decimal("0.001"), avg * Decimal("0.97"), avg)
    sim.faults.fail_orders_after_placing(1)
    order = await client.new_order("BTCUSDT", "BUY", "LIMIT", qty, price, client_order_id="sim-5xx")
    assert order.client_order_id == "sim-5xx" and order.status == "NEW"
    posts = [
        e for e in sim.request_log.entries() if e.method == "POST" and e.path == "/api/v3/order"
    ]
    assert len(posts) == 1


async def test_sim_418_bans_budget_and_nothing_is_sent_until_it_ends(client, sim):
    sim.faults.ban(1.0)
    with pytest.raises(IpBanned) as info:
        await client.time()
    assert client.budget.state().banned_until == pytest.approx(info.value.until, abs=0.01)
    before = len(sim.request_log)
    await client.time()  # waits for the ban to end, then succeeds
    entries = sim.request_log.entries()
    assert len(entries) == before + 1 and entries[-1].wall_time >= info.value.until - 0.05


async def test_sim_stream_frames_parse_into_recorded_closed_bars(data_dir):
    config = SimConfig(symbols=("BTCUSDT", "ETHUSDT"), speed=0, updates_per_bar=3)
    parser = KlineParser({"BTCUSDT": 1, "ETHUSDT": 2})
    out = np.zeros(300, dtype=BAR_DTYPE)
    n = 0
    async with BinanceSimulator(config) as simulator, aiohttp.ClientSession() as session:
        url = simulator.ws_url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with session.ws_connect(url) as ws:
            while n < len(out):
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                try:
                    n += parser.parse_into(msg.data.encode(), out, n) is not None
                except MalformedFrame as exc:  # no fault is injected: every frame must be valid
                    pytest.fail(f"simulator frame refused: {exc.reason}")
    closed = out[(out["flags"] & BAR_CLOSED) > 0]
    closed = closed[closed["symbol_id"] == 1]
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        recorded = {
            int(r["open_time"]): r for _, r in zip(range(500), csv.DictReader(fh), strict=False)
        }
    assert len(closed) >= 20
    for bar in closed:
        row = recorded[int(bar["open_time_ms"])]
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == tuple(
            float(row[k]) for k in ("open", "high", "low", "close")
        )
        assert bar["volume"] == pytest.approx(float(row["volume"]), rel=1e-9)
