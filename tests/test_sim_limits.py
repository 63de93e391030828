"""Request weight, 429 with Retry-After, 418 bans, and the request log that proves silence."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from sim_support import call, quick_config

from aegis.binance.sim.limits import Admission, OrderCounter, WeightLimiter
from aegis.binance.sim.server import BinanceSimulator


class FakeTime:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_weight_limiter_over_limit_answers_429_until_the_window_resets():
    now = FakeTime(600.0)
    limiter = WeightLimiter(limit=50, window_s=60, ban_after_429s=3, ban_seconds=120, now=now)
    assert limiter.admit("ip", 40).status == 200
    refused = limiter.admit("ip", 20)
    assert (refused.status, refused.used_weight, refused.retry_after_s) == (429, 60, 60)
    now.t += 60
    assert limiter.admit("ip", 20) == Admission(200, 20)
    assert limiter.admit("other-ip", 50).status == 200  # budgets are per IP


def test_weight_limiter_bans_with_418_and_doubles_each_ban():
    now = FakeTime(0.0)
    limiter = WeightLimiter(limit=1, window_s=60, ban_after_429s=2, ban_seconds=120, now=now)
    statuses = [limiter.admit("ip", 1).status for _ in range(5)]
    assert statuses == [200, 429, 429, 418, 418]
    banned = limiter.admit("ip", 1)
    assert banned.retry_after_s == 120 and banned.banned_until_ms == 120_000
    now.t = 121.0
    statuses = [limiter.admit("ip", 1).status for _ in range(4)]
    assert statuses == [200, 429, 429, 418]
    assert limiter.admit("ip", 1).retry_after_s == 240  # second ban: twice as long


def test_order_counter_counts_10_seconds_and_a_day():
    now = FakeTime(0.0)
    counter = OrderCounter(limit_10s=2, limit_1d=3, now=now)
    counter.record("k")
    counter.record("k")
    assert counter.counts("k") == (2, 2) and counter.exceeded("k") == "10 SECOND"
    now.t = 11.0
    assert counter.counts("k") == (0, 2) and counter.exceeded("k") is None
    counter.record("k")
    now.t = 22.0
    assert counter.exceeded("k") == "1 DAY"


async def test_rest_429_then_418_and_the_log_shows_a_polite_client_stays_silent():
    cfg = quick_config(weight_limit_1m=50, ban_after_429s=1, ban_seconds=1.0, rate_window_s=2.0)
    async with BinanceSimulator(cfg) as sim, aiohttp.ClientSession() as http:
        await asyncio.sleep(2.0 - time.time() % 2.0 + 0.01)  # all four requests in one window
        statuses = []
        retry_after = None
        for _ in range(6):
            status, body, headers = await call(http, sim, "GET", "/api/v3/exchangeInfo")
            statuses.append(status)
            if status == 429:
                assert headers["Retry-After"].isdigit()
                assert body["code"] == -1003 and "current limit is 50 request weight" in body["msg"]
            if status == 418:
                retry_after = int(headers["Retry-After"])
                assert body["code"] == -1003 and "IP banned until" in body["msg"]
                break
        assert statuses == [200, 200, 429, 418]
        # A compliant client says nothing until the ban ends.
        banned_at = time.time()
        await asyncio.sleep(max(retry_after, 1) + 1.1)
        status, _, headers = await call(http, sim, "GET", "/api/v3/time")
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "1"
        during_ban = [
            e
            for e in sim.request_log.entries(since=banned_at)
            if e.wall_time < banned_at + retry_after
        ]
        assert during_ban == []
        logged = [(e.path, e.status) for e in sim.request_log.entries()]
        assert logged[:4] == [("/api/v3/exchangeInfo", s) for s in (200, 200, 429, 418)]


async def test_request_log_shows_requests_sent_during_a_ban():
    cfg = quick_config(weight_limit_1m=1, ban_after_429s=0, ban_seconds=30.0)
    async with BinanceSimulator(cfg) as sim, aiohttp.ClientSession() as http:
        await call(http, sim, "GET", "/api/v3/time")
        status, _, _ = await call(http, sim, "GET", "/api/v3/time")
        assert status == 418
        status, _, headers = await call(http, sim, "GET", "/api/v3/time")
        assert status == 418 and int(headers["Retry-After"]) > 25
        assert [e.status for e in sim.request_log.entries()] == [200, 418, 418]
