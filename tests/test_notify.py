"""Notifications over a real local HTTP server: delivery, 429, 5xx, slow servers, no blocking."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from aegis.notify import messages
from aegis.notify.channels import DiscordWebhook, TelegramBot, channels_from_settings
from aegis.notify.notifier import DeliveryPolicy, Notifier, TokenBucket

TOKEN = "123456:SECRET-bot-token"
FAST = DeliveryPolicy(queue_size=50, timeout_s=2.0, max_attempts=4, backoff_base_s=0.01,
                      backoff_max_s=0.05)  # fmt: skip


class ChatServer:
    """A real aiohttp server on 127.0.0.1:0 whose answers each test scripts."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, float]] = []
        self.script: list[tuple[int, object]] = []  # answers to pop before the default
        self.default: tuple[int, object] = (204, None)
        self.delay_s = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, await request.json(), time.monotonic()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, body = self.script.pop(0) if self.script else self.default
        if body is None:
            return web.Response(status=status)
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.json_response(body, status=status, headers=headers)

    async def __aenter__(self) -> ChatServer:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)  # the client is under test
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


class RecordingSleep:
    """Records every wait the notifier asks for and yields without really waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def settle(notifier: Notifier, timeout: float = 5.0) -> None:
    await notifier.stop(drain_timeout_s=timeout)


async def test_notify_discord_delivers_json_content_without_mentions():
    async with ChatServer() as server:
        n = Notifier([DiscordWebhook(server.url + "/api/webhooks/1/tok")], FAST)
        await n.start()
        assert n.notify("hello @everyone")
        await settle(n)
    [(path, body, _)] = server.requests
    assert path == "/api/webhooks/1/tok"
    assert body == {"content": "hello @everyone", "allowed_mentions": {"parse": []}}
    assert n.stats["discord"].sent == 1 and n.stats["discord"].failed == 0


async def test_notify_telegram_posts_send_message_to_bot_path():
    async with ChatServer() as server:
        server.default = (200, {"ok": True, "result": {}})
        n = Notifier([TelegramBot(TOKEN, "-100200", server.url)], FAST)
        await n.start()
        n.notify("x" * 5000)
        await settle(n)
    [(path, body, _)] = server.requests
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == "-100200" and len(body["text"]) == 4096
    assert n.stats["telegram"].sent == 1


async def test_notify_discord_429_waits_retry_after_from_body_then_delivers():
    async with ChatServer() as server:
        server.script = [(429, {"message": "rate limited", "retry_after": 0.2, "global": False})]
        n = Notifier([DiscordWebhook(server.url + "/hook", rate_per_s=100.0, burst=5)], FAST)
        await n.start()
        n.notify("one")
        await settle(n)
    first, second = server.requests
    assert 0.19 <= second[2] - first[2] < 2.0  # the body's 0.2 s, not the header's 7 s
    stats = n.stats["discord"]
    assert (stats.sent, stats.rate_limited, stats.retries, stats.failed) == (1, 1, 1, 0)


async def test_notify_telegram_429_honours_parameters_retry_after():
    sleep = RecordingSleep()
    async with ChatServer() as server:
        server.script = [(429, {"ok": False, "error_code": 429,
                                "description": "Too Many Requests: retry after 3",
                                "parameters": {"retry_after": 3}})]  # fmt: skip
        server.default = (200, {"ok": True})
        n = Notifier([TelegramBot(TOKEN, "1", server.url)], FAST, sleep=sleep)
        await n.start()
        n.notify("one")
        await settle(n)
    assert 3.0 in sleep.waits and len(server.requests) == 2
    assert n.stats["telegram"].sent == 1


async def test_notify_500_retries_with_backoff_then_delivers():
    async with ChatServer() as server:
        server.script = [(500, {"error": "boom"}), (502, None)]
        n = Notifier([DiscordWebhook(server.url + "/hook")], FAST)
        await n.start()
        n.notify("one")
        await settle(n)
    assert len(server.requests) == 3
    stats = n.stats["discord"]
    assert (stats.sent, stats.retries, stats.errors) == (1, 2, {"http_500": 1, "http_502": 1})


async def test_notify_persistent_500_gives_up_after_max_attempts_and_counts():
    async with ChatServer() as server:
        server.default = (500, {"error": "down"})
        n = Notifier([DiscordWebhook(server.url + "/hook", rate_per_s=100.0, burst=10)], FAST)
        await n.start()
        n.notify("one")
        n.notify("two")
        await settle(n)
    assert len(server.requests) == 2 * FAST.max_attempts
    stats = n.stats["discord"]
    assert (stats.sent, stats.failed, stats.errors["http_500"]) == (0, 2, 8)


async def test_notify_telegram_ok_false_or_400_fails_without_retry():
    async with ChatServer() as server:
        server.default = (400, {"ok": False, "error_code": 400, "description": "chat not found"})
        n = Notifier([TelegramBot(TOKEN, "1", server.url)], FAST)
        await n.start()
        n.notify("one")
        await settle(n)
    assert len(server.requests) == 1
    assert n.stats["telegram"].failed == 1 and n.stats["telegram"].retries == 0


async def test_notify_slow_server_never_blocks_caller_and_drops_when_full():
    policy = DeliveryPolicy(queue_size=5, timeout_s=0.3, max_attempts=1)
    async with ChatServer() as server:
        server.delay_s = 1.0
        n = Notifier([DiscordWebhook(server.url + "/hook")], policy)
        await n.start()
        await asyncio.sleep(0)
        worst = 0.0
        accepted = 0
        for i in range(200):
            t0 = time.perf_counter()
            accepted += n.notify(f"message {i}")
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 0.02  # enqueue is O(1): no network, no waiting (server answers in 1 s)
        await asyncio.sleep(0.4)  # the first request times out meanwhile
        await n.stop(drain_timeout_s=0.1)
    stats = n.stats["discord"]
    assert accepted == stats.enqueued <= policy.queue_size + 1
    assert stats.dropped == 200 - accepted
    assert stats.errors.get("TimeoutError", 0) >= 1 and stats.sent == 0


async def test_notify_unreachable_server_counts_connection_errors_without_raising():
    async with ChatServer() as server:
        url = server.url
    # The server is gone: connections are refused.
    n = Notifier([DiscordWebhook(url + "/hook")], FAST)
    await n.start()
    assert n.notify("one")
    await settle(n)
    stats = n.stats["discord"]
    assert stats.failed == 1 and sum(stats.errors.values()) == FAST.max_attempts


async def test_notify_malformed_endpoint_fails_once_without_logging_it(caplog):
    n = Notifier([DiscordWebhook("http://[not-a-host/hooktoken")], FAST)
    await n.start()
    n.notify("one")
    await settle(n)
    stats = n.stats["discord"]
    assert (stats.failed, stats.retries, stats.errors) == (1, 0, {"InvalidURL": 1})
    assert "hooktoken" not in caplog.text


async def test_notify_one_slow_channel_does_not_delay_the_other():
    async with ChatServer() as slow, ChatServer() as fast:
        slow.delay_s = 1.0
        fast.default = (200, {"ok": True})
        n = Notifier([DiscordWebhook(slow.url + "/hook"), TelegramBot(TOKEN, "1", fast.url)], FAST)
        await n.start()
        t0 = time.monotonic()
        n.notify("one")
        while not fast.requests:
            await asyncio.sleep(0.01)
        assert time.monotonic() - t0 < 0.5
        await n.stop(drain_timeout_s=0.0)
    assert n.stats["telegram"].sent == 1


async def test_notify_logs_never_contain_tokens(caplog):
    caplog.set_level(logging.DEBUG)
    async with ChatServer() as server:
        server.default = (401, {"ok": False, "description": "Unauthorized"})
        bot = TelegramBot(TOKEN, "1", server.url)
        n = Notifier([bot, DiscordWebhook(server.url + "/api/webhooks/9/hooktoken")], FAST)
        await n.start()
        n.notify("one")
        await settle(n)
    assert n.stats["telegram"].failed == 1 and n.stats["discord"].failed == 1
    text = caplog.text + repr(bot) + repr(n.stats)
    assert "SECRET" not in text and "hooktoken" not in text
    assert "telegram" in caplog.text


async def test_notify_rate_limit_spaces_requests_by_token_bucket():
    async with ChatServer() as server:
        n = Notifier([DiscordWebhook(server.url + "/hook", rate_per_s=20.0, burst=2)], FAST)
        await n.start()
        for i in range(6):
            n.notify(str(i))
        await settle(n)
    times = [t for _, _, t in server.requests]
    assert len(times) == 6
    assert times[-1] - times[0] >= 4 / 20 - 0.02  # 2 in the burst, then 1 per 50 ms


def test_token_bucket_refills_at_rate_and_caps_at_capacity():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, capacity=2, clock=lambda: now[0])
    assert bucket.reserve() == 0.0 and bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.5)
    now[0] = 100.0
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    bucket.drain()
    assert bucket.reserve() > 0.5


def test_notify_from_settings_builds_configured_channels_only():
    from aegis.config import Settings

    none = Settings.load({})
    both = Settings.load({"AEGIS_DISCORD_WEBHOOK_URL": "http://h/x", "AEGIS_TELEGRAM_BOT_TOKEN": "t",
                          "AEGIS_TELEGRAM_CHAT_ID": "5"})  # fmt: skip
    assert channels_from_settings(none) == []
    assert [c.name for c in channels_from_settings(both)] == ["discord", "telegram"]
    assert Notifier.from_settings(none).notify("nobody listens")


def test_messages_are_short_plain_and_tagged_by_mode():
    opened = messages.trade_opened("BTCUSDT", "0.0333", 30_030.0, 999.99, 1.0, 2.0, 0.71)
    closed = messages.trade_closed("BTCUSDT", "take_profit", 30_000.0, 30_600.0, 1.77, 17.7,
                                   125 * 60_000, live=True)  # fmt: skip
    kill = messages.kill_switch("max_daily_loss", 5.02, 5.0, 9_498.0)
    crash = messages.crash_loop("executor", 6, 300)
    daily = messages.daily_summary("2023-03-24", 12, 7, 41.5, 10_041.5, 0.42)
    assert opened.startswith("[AEGIS paper] OPEN BTCUSDT") and "0.0333" in opened
    assert closed.startswith("[AEGIS live] CLOSE BTCUSDT (take_profit)") and "+1.77%" in closed
    assert "2h05m" in closed
    assert "KILL SWITCH (max_daily_loss)" in kill and "re-armed" in kill
    assert "executor" in crash and "6 times" in crash
    assert "win rate 58%" in daily and messages.daily_summary("d", 0, 0, 0, 1, 0).count("n/a") == 1
    assert all(len(m) < 300 for m in (opened, closed, kill, crash, daily))
