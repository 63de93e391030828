"""REST endpoints of the simulator over real sockets: shapes, errors, auth, weights."""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest
from sim_support import DAY2, KEY, SECRET, call, quick_config

from aegis.binance.sim import errors
from aegis.binance.sim.server import BinanceSimulator


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config(symbols=("BTCUSDT", "ETHUSDT"))) as s:
        yield s


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_time_reports_simulated_clock_with_weight_header(sim, http):
    status, body, headers = await call(http, sim, "GET", "/api/v3/time")
    assert status == 200
    assert body == {"serverTime": DAY2}
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_exchange_info_serves_real_entries_and_counts_weight_20(sim, http):
    status, body, headers = await call(http, sim, "GET", "/api/v3/exchangeInfo")
    assert status == 200
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    btc = body["symbols"][0]
    assert {f["filterType"] for f in btc["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "NOTIONAL"}
    assert body["rateLimits"][0]["limit"] == 6000
    assert headers["X-MBX-USED-WEIGHT-1M"] == "20"
    status, body, _ = await call(http, sim, "GET", "/api/v3/exchangeInfo", {"symbol": "ETHUSDT"})
    assert [s["symbol"] for s in body["symbols"]] == ["ETHUSDT"]
    _, body, _ = await call(http, sim, "GET", "/api/v3/exchangeInfo", {"symbols": '["BTCUSDT"]'})
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT"]


async def test_exchange_info_unknown_symbol_answers_minus_1121(sim, http):
    status, body, _ = await call(http, sim, "GET", "/api/v3/exchangeInfo", {"symbol": "NOPEUSDT"})
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})


async def test_klines_returns_only_bars_closed_by_the_clock(sim, http):
    status, rows, headers = await call(
        http, sim, "GET", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 5}
    )
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "2"
    assert len(rows) == 5 and all(len(r) == 12 for r in rows)
    assert rows[-1][0] == DAY2 - 60_000  # the bar opened at DAY2 is still in progress
    assert rows[-1][6] == DAY2 - 1
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


async def test_klines_match_the_recorded_csv(sim, http, data_dir):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        next(fh)
        recorded = {int(r.split(",")[0]): r.strip().split(",") for r in fh}
    start = DAY2 - 600_000
    _, rows, _ = await call(
        http, sim, "GET", "/api/v3/klines",
        {"symbol": "BTCUSDT", "interval": "1m", "startTime": start, "limit": 1000},
    )  # fmt: skip
    assert [r[0] for r in rows] == list(range(start, DAY2, 60_000))
    for row in rows:
        rec = recorded[row[0]]
        assert [float(x) for x in row[1:6]] == [float(x) for x in rec[1:6]]


async def test_klines_bad_parameters_answer_like_binance(sim, http):
    cases = [
        ({"interval": "1m"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "abc"}, -1100),
        ({"symbol": "XXXUSDT", "interval": "1m"}, -1121),
    ]
    for params, code in cases:
        status, body, _ = await call(http, sim, "GET", "/api/v3/klines", params)
        assert status == 400 and body["code"] == code, (params, body)


async def test_ticker_and_avg_price_have_binance_fields(sim, http):
    _, ticker, headers = await call(http, sim, "GET", "/api/v3/ticker/24hr", {"symbol": "BTCUSDT"})
    assert headers["X-MBX-USED-WEIGHT-1M"] == "2"
    for field in ("lastPrice", "quoteVolume", "volume", "openTime", "closeTime", "count"):
        assert field in ticker
    assert float(ticker["quoteVolume"]) > 0
    _, all_tickers, headers = await call(http, sim, "GET", "/api/v3/ticker/24hr")
    assert {t["symbol"] for t in all_tickers} == {"BTCUSDT", "ETHUSDT"}
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(2 + 80)
    _, avg, _ = await call(http, sim, "GET", "/api/v3/avgPrice", {"symbol": "BTCUSDT"})
    assert avg["mins"] == 5 and float(avg["price"]) > 0


async def test_signed_endpoint_without_key_answers_minus_2014_401(sim, http):
    status, body, _ = await call(http, sim, "GET", "/api/v3/account", signed=True, key=None)
    assert (status, body) == (401, {"code": -2014, "msg": "API-key format invalid."})


async def test_signed_endpoint_with_unknown_key_answers_minus_2015(sim, http):
    status, body, _ = await call(http, sim, "GET", "/api/v3/account", signed=True, key="abc123")
    assert status == 401 and body["code"] == -2015


async def test_bad_signature_answers_minus_1022(sim, http):
    status, body, _ = await call(
        http, sim, "GET", "/api/v3/account", signed=True, secret="wrong-secret"
    )
    assert (status, body) == (400, {"code": -1022, "msg": errors.MSG_BAD_SIGNATURE})


async def test_timestamp_ahead_and_outside_window_answer_minus_1021(sim, http):
    now = sim.server_time_ms()
    status, body, _ = await call(
        http, sim, "GET", "/api/v3/account", signed=True, timestamp_ms=now + 1000
    )
    assert (status, body["code"], body["msg"]) == (400, -1021, errors.MSG_TIMESTAMP_AHEAD)
    status, body, _ = await call(
        http, sim, "GET", "/api/v3/account", signed=True, timestamp_ms=now - 5001
    )
    assert (body["code"], body["msg"]) == (-1021, errors.MSG_TIMESTAMP_OUTSIDE)
    status, body, _ = await call(
        http, sim, "GET", "/api/v3/account", signed=True, timestamp_ms=now - 5001,
        recv_window=10_000,
    )  # fmt: skip
    assert status == 200


async def test_missing_timestamp_answers_minus_1102(sim, http):
    from aegis.binance.signing import hmac_signature

    query = "omitZeroBalances=true"
    url = f"{sim.rest_url}/api/v3/account?{query}&signature={hmac_signature(SECRET, query)}"
    async with http.get(url, headers={"X-MBX-APIKEY": KEY}) as resp:
        body = await resp.json()
    assert body["code"] == -1102 and "'timestamp'" in body["msg"]


async def test_signature_in_post_body_is_accepted(sim, http):
    from aegis.binance.signing import signed_query

    body = signed_query({"symbol": "BTCUSDT"}, SECRET, sim.server_time_ms())
    async with http.post(
        f"{sim.rest_url}/api/v3/order/test",
        data=body,
        headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        answer = await resp.json()
    # Authenticated, then rejected for the missing order side: the signature was good.
    assert answer["code"] == -1102 and "'side'" in answer["msg"]


async def test_account_and_commission_shapes(sim, http):
    status, account, _ = await call(http, sim, "GET", "/api/v3/account", signed=True)
    assert status == 200
    assert account["balances"] == [
        {"asset": "USDT", "free": "10000.00000000", "locked": "0.00000000"}
    ]
    assert account["commissionRates"]["taker"] == "0.00100000"
    status, comm, headers = await call(
        http, sim, "GET", "/api/v3/account/commission", {"symbol": "BTCUSDT"}, signed=True
    )
    assert comm["standardCommission"]["maker"] == "0.00100000"
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(20 + 20)


async def test_unknown_path_answers_404(sim, http):
    status, _, _ = await call(http, sim, "GET", "/api/v3/nothingHere")
    assert status == 404


async def test_duplicate_parameter_answers_minus_1101(sim, http):
    async with http.get(f"{sim.rest_url}/api/v3/avgPrice?symbol=BTCUSDT&symbol=ETHUSDT") as resp:
        assert (await resp.json())["code"] == -1101


async def test_request_log_records_requests_without_signature(sim, http):
    await call(http, sim, "GET", "/api/v3/account", {"omitZeroBalances": "true"}, signed=True)
    entry = sim.request_log.entries(path="/api/v3/account")[-1]
    assert entry.method == "GET" and entry.status == 200 and entry.ip == "127.0.0.1"
    assert "signature" not in entry.params and entry.params["omitZeroBalances"] == "true"
    assert SECRET not in json.dumps(entry.params)


async def test_5m_klines_aggregated_from_1m_equal_the_real_5m_recording(sim, http, data_dir):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_5m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        next(fh)
        real_5m = {int(r.split(",")[0]): [float(x) for x in r.split(",")[1:]] for r in fh}
    _, rows, _ = await call(
        http, sim, "GET", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 200}
    )
    assert len(rows) == 200 and rows[-1][0] == DAY2 - 300_000 and rows[-1][6] == DAY2 - 1
    for row in rows:
        o, h, low, c, v = real_5m[row[0]]
        assert [float(x) for x in row[1:5]] == [o, h, low, c]
        assert abs(float(row[5]) - v) <= 1e-6 * max(v, 1.0)
    _, hourly, _ = await call(
        http, sim, "GET", "/api/v3/klines",
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": DAY2 - 86_400_000, "limit": 1000},
    )  # fmt: skip
    assert [r[0] for r in hourly] == list(range(DAY2 - 86_400_000, DAY2, 3_600_000))
