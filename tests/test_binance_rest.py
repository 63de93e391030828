"""Specification of the Binance REST client (aegis.binance.rest) against a real local HTTP server.

``FakeBinance`` is a deliberately small server on 127.0.0.1 (port 0) that speaks the parts of
Binance's protocol these tests need, verifies signatures and timestamps for real, and records
every request so the tests can assert what reached the wire (and what never did).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
import time
from decimal import Decimal

import numpy as np
import orjson
import pytest
from aiohttp import web

from aegis.binance.errors import (
    BinanceError,
    FilterFailure,
    InvalidTimestamp,
    IpBanned,
    RateLimited,
    UnknownOrderState,
)
from aegis.binance.protocol import KlineParser, build_rest_kline_row
from aegis.binance.rest import BinanceRestClient
from aegis.binance.signing import verify_signature
from aegis.binance.weight import WeightBudget
from aegis.records import BAR_CLOSED, BAR_DTYPE

KEY = "test-api-key-0123456789"
SECRET = "s3cr3t-Hmac-Key-That-Must-Never-Leak-9f8e7d6c"


class FakeBinance:
    def __init__(self, bars: np.ndarray) -> None:
        self.skew_ms = 0
        self.used_weight = 0
        self.requests: list[tuple[float, str, str, dict]] = []  # (time, method, path, params)
        self.orders: dict[str, dict] = {}
        self.plan: list[str] = []  # faults consumed one per matching request, in order
        self.bars = bars
        self.next_id = 1

    def server_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms

    def reply(self, body, status=200, headers=None):
        self.used_weight += 1
        h = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight), **(headers or {})}
        return web.Response(
            body=orjson.dumps(body), status=status, headers=h, content_type="application/json"
        )

    def error(self, status, code, msg, headers=None):
        return self.reply({"code": code, "msg": msg}, status, headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_query = request.rel_url.raw_query_string
        params = dict(request.query)
        self.requests.append((time.time(), request.method, request.path, params))
        fault = self.plan.pop(0) if self.plan else ""
        if fault == "429":
            return self.error(429, -1003, "Too much request weight used", {"Retry-After": "1"})
        if fault == "418":
            return self.error(418, -1003, "Way too much request weight used", {"Retry-After": "1"})
        if fault == "500":
            return web.Response(status=500, text="Internal Server Error")
        if "signature" in params:
            if request.headers.get("X-MBX-APIKEY") != KEY:
                return self.error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            if not verify_signature(SECRET, raw_query):
                return self.error(400, -1022, "Signature for this request is not valid.")
            ts, now = int(params["timestamp"]), self.server_ms()
            if ts >= now + 1000 or now - ts > int(params.get("recvWindow", 5000)):
                return self.error(
                    400, -1021, "Timestamp for this request is outside of the recvWindow."
                )
        return await self.route(request, params, fault)

    async def route(self, request, params, fault):
        path = request.path
        if path == "/api/v3/time":
            return self.reply({"serverTime": self.server_ms()})
        if path == "/api/v3/avgPrice":
            return self.reply({"mins": 5, "price": "56000.12345678", "closeTime": self.server_ms()})
        if path == "/api/v3/klines":
            start, end = int(params.get("startTime", 0)), int(params.get("endTime", 2**62))
            limit = int(params.get("limit", 500))
            times = self.bars["open_time_ms"]
            sel = self.bars[(times >= start) & (times <= end)][:limit]
            return self.reply([build_rest_kline_row(b, "1m") for b in sel])
        if path == "/api/v3/order" and request.method == "POST":
            cid = params["newClientOrderId"]
            if params["quantity"] == "0.00000100":
                return self.error(400, -1013, "Filter failure: LOT_SIZE")
            if fault != "503-not-placed":
                self.orders[cid] = {
                    "symbol": params["symbol"], "orderId": self.next_id, "clientOrderId": cid,
                    "transactTime": self.server_ms(), "price": params.get("price", "0"),
                    "origQty": params["quantity"], "executedQty": "0", "cummulativeQuoteQty": "0",
                    "status": "NEW", "timeInForce": params.get("timeInForce", ""), "type": params["type"],
                    "side": params["side"], "fills": [],
                }  # fmt: skip
                self.next_id += 1
            if fault == "503-placed" or fault == "503-not-placed":
                return web.Response(status=503, text="Service Unavailable")
            if fault == "timeout-placed":
                await asyncio.sleep(2)
            return self.reply(
                self.orders[cid],
                headers={"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1D": "7"},
            )
        if path == "/api/v3/order" and request.method in ("GET", "DELETE"):
            order = self.orders.get(params.get("origClientOrderId", ""))
            if order is None:
                return self.error(400, -2013, "Order does not exist.")
            if request.method == "DELETE":
                order["status"] = "CANCELED"
                return self.reply(
                    {**order, "origClientOrderId": order["clientOrderId"], "clientOrderId": "x"}
                )
            return self.reply(order)
        if path == "/api/v3/openOrders":
            return self.reply([o for o in self.orders.values() if o["status"] == "NEW"])
        if path == "/api/v3/account":
            balances = [
                {"asset": "USDT", "free": "1000.5", "locked": "0"},
                {"asset": "BTC", "free": "0.1", "locked": "0.01"},
            ]
            return self.reply({"canTrade": True, "updateTime": 1, "balances": balances})
        if path == "/api/v3/account/commission":
            rates = {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0", "seller": "0"}
            return self.reply({"symbol": params["symbol"], "standardCommission": rates})
        return self.error(404, -1000, "no route")


def _bars(data_dir, n=2500):
    path = data_dir / "klines" / "binance_spot_BTCUSDT_1m_20230316_20230501.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]
    out = np.zeros(len(rows), dtype=BAR_DTYPE)
    for i, r in enumerate(rows):
        out[i] = (int(r["open_time"]), 0, 1, BAR_CLOSED, float(r["open"]), float(r["high"]),
                  float(r["low"]), float(r["close"]), float(r["volume"]), 0.0, 0.0, 0.0, 0)  # fmt: skip
    return out


@pytest.fixture
async def fake(data_dir):
    server = FakeBinance(_bars(data_dir))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)  # the server side is not under test here
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
def budget_path(tmp_path):
    return tmp_path / "run" / "weight.bin"


@pytest.fixture
async def client(fake, budget_path):
    budget = WeightBudget(budget_path)
    async with BinanceRestClient(
        fake.url,
        budget,
        api_key=KEY,
        api_secret=SECRET,
        timeout_s=1.0,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    ) as c:
        yield c
    budget.close()


def _paths(fake):
    return [(m, p) for _, m, p, _ in fake.requests]


async def test_sync_time_offset_is_median_of_samples(client, fake):
    fake.skew_ms = 5000
    offset = await client.sync_time()
    assert abs(offset - 5000) < 100
    assert _paths(fake).count(("GET", "/api/v3/time")) == 5


async def test_signed_request_first_syncs_time_then_is_accepted(client, fake):
    fake.skew_ms = -3000  # local clock ahead of the server: unsynced timestamps would be refused
    order = await client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-1"
    )
    assert (
        order.client_order_id == "i-1" and order.status == "NEW" and order.price == Decimal("56000")
    )
    assert _paths(fake)[-1] == ("POST", "/api/v3/order")
    assert (
        fake.requests[-1][3]["timeInForce"] == "GTC" and fake.requests[-1][3]["quantity"] == "0.01"
    )


async def test_invalid_timestamp_resyncs_and_retries_once(client, fake):
    client.offset_ms = 0
    fake.skew_ms = 10_000  # our stale offset makes the timestamp too old
    await client.account()
    assert _paths(fake) == [("GET", "/api/v3/account")] + [("GET", "/api/v3/time")] * 5 + [
        ("GET", "/api/v3/account")
    ]


async def test_invalid_timestamp_twice_raises_after_one_retry(client, fake, monkeypatch):
    client.offset_ms = 0
    fake.skew_ms = 10_000

    async def no_sync():  # a resync that does not help: the server stays out of reach
        return 0

    monkeypatch.setattr(client, "sync_time", no_sync)
    with pytest.raises(InvalidTimestamp):
        await client.account()
    assert _paths(fake) == [("GET", "/api/v3/account")] * 2


async def test_new_order_5xx_with_order_placed_is_found_by_client_id_not_resent(client, fake):
    client.offset_ms = 0
    fake.plan = ["503-placed"]
    order = await client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-2"
    )
    assert order.client_order_id == "i-2" and order.order_id == 1
    assert _paths(fake) == [("POST", "/api/v3/order"), ("GET", "/api/v3/order")]
    assert fake.requests[1][3]["origClientOrderId"] == "i-2"


async def test_new_order_timeout_with_order_placed_is_found_not_resent(client, fake):
    client.offset_ms = 0
    fake.plan = ["timeout-placed"]
    order = await client.new_order(
        "BTCUSDT", "SELL", "MARKET", Decimal("0.01"), client_order_id="i-3"
    )
    assert order.client_order_id == "i-3"
    assert [p for p in _paths(fake) if p[0] == "POST"] == [("POST", "/api/v3/order")]


async def test_new_order_5xx_not_placed_raises_unknown_after_lookups_never_resends(client, fake):
    client.offset_ms = 0
    fake.plan = ["503-not-placed"]
    with pytest.raises(UnknownOrderState) as info:
        await client.new_order(
            "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-4"
        )
    assert info.value.lookup == "not found"
    assert _paths(fake) == [("POST", "/api/v3/order")] + [("GET", "/api/v3/order")] * 3


async def test_new_order_filter_failure_is_rejected_without_retry_or_lookup(client, fake):
    client.offset_ms = 0
    with pytest.raises(FilterFailure) as info:
        await client.new_order(
            "BTCUSDT", "BUY", "LIMIT", Decimal("0.00000100"), Decimal("1"), client_order_id="i-5"
        )
    assert info.value.filter_type == "LOT_SIZE"
    assert _paths(fake) == [("POST", "/api/v3/order")]


async def test_read_5xx_is_retried_with_backoff(client, fake):
    fake.plan = ["500", "500"]
    assert await client.avg_price("BTCUSDT") == Decimal("56000.12345678")
    assert _paths(fake) == [("GET", "/api/v3/avgPrice")] * 3


async def test_429_holds_every_client_until_retry_after(client, fake, budget_path):
    fake.plan = ["429"]
    with pytest.raises(RateLimited):
        await client.avg_price("BTCUSDT")
    with WeightBudget(budget_path) as other_budget:
        async with BinanceRestClient(fake.url, other_budget) as other:
            await other.avg_price("BTCUSDT")
    first, second = fake.requests[0][0], fake.requests[1][0]
    assert second - first >= 0.95  # Retry-After: 1


async def test_418_silences_another_process_budget_until_ban_ends(client, fake, budget_path):
    fake.plan = ["418"]
    with pytest.raises(IpBanned) as info:
        await client.time()
    with WeightBudget(budget_path) as other_budget:
        assert other_budget.state().banned_until == pytest.approx(info.value.until)
        async with BinanceRestClient(fake.url, other_budget) as other:
            await other.time()
    assert fake.requests[1][0] >= info.value.until


async def test_used_weight_and_order_count_headers_are_recorded(client, fake, budget_path):
    client.offset_ms = 0
    fake.used_weight = 1234
    await client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-6"
    )
    assert client.budget.state().used >= 1235
    assert client.order_counts == {"10s": 1, "1d": 7}


async def test_klines_range_pages_by_1000_and_returns_every_bar(client, fake):
    parser = KlineParser({"BTCUSDT": 1})
    start, end = int(fake.bars["open_time_ms"][0]), int(fake.bars["open_time_ms"][-1])
    bars = await client.klines_range(parser, "BTCUSDT", "1m", start, end)
    assert len(bars) == len(fake.bars) == 2500
    assert (bars["open_time_ms"] == fake.bars["open_time_ms"]).all()
    assert (bars["close"] == fake.bars["close"]).all()
    assert _paths(fake).count(("GET", "/api/v3/klines")) == 3


async def test_klines_limit_out_of_range_is_refused_before_sending(client, fake):
    with pytest.raises(ValueError, match="limit"):
        await client.klines("BTCUSDT", "1m", limit=1001)
    assert fake.requests == []


async def test_account_commission_open_orders_and_cancel_parse_to_domain(client, fake):
    client.offset_ms = 0
    await client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-7"
    )
    account = await client.account()
    assert account.can_trade and account.balances["BTC"].locked == Decimal("0.01")
    assert (await client.commission("BTCUSDT")).taker == Decimal("0.001")
    assert [o.client_order_id for o in await client.open_orders("BTCUSDT")] == ["i-7"]
    cancelled = await client.cancel_order("BTCUSDT", orig_client_order_id="i-7")
    assert (
        cancelled.client_order_id == "i-7" and cancelled.status == "CANCELED" and cancelled.is_final
    )
    assert await client.open_orders("BTCUSDT") == []


async def test_signed_request_without_keys_raises_before_sending(fake, budget_path):
    with WeightBudget(budget_path) as budget:
        async with BinanceRestClient(fake.url, budget) as anonymous:
            with pytest.raises(BinanceError, match="needs an API key"):
                await anonymous.account()
    assert fake.requests == []


async def test_secret_and_signature_never_appear_in_logs_or_errors(client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    client.offset_ms = 0
    await client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-8"
    )
    fake.plan = ["503-not-placed", "500", "500", "500", "500"]
    with pytest.raises(UnknownOrderState) as info:
        await client.new_order(
            "BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("56000"), client_order_id="i-9"
        )
    signatures = [p["signature"] for _, _, _, p in fake.requests if "signature" in p]
    assert len(signatures) >= 3
    assert caplog.records  # the failure was logged...
    texts = [r.getMessage() for r in caplog.records] + [str(info.value), repr(client)]
    for text in texts:  # ...without the secret, the key or any signature
        assert SECRET not in text and KEY not in text
        assert not any(sig in text for sig in signatures)
