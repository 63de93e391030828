"""The real executor process in live mode against the Binance simulator (real sockets).

The simulator runs in the test process; the executor is ``tests/executor_worker.py`` with
``AEGIS_MODE=live``, its orders going to the simulator's REST API and its account events coming
from the simulator's WebSocket API. It is SIGKILLed after the exchange answered its MARKET BUY
but before the answer was journaled, restarted, and must then have sent that order once, hold
the position the exchange holds, and close it once.
"""

from __future__ import annotations

import signal
from decimal import Decimal

import asyncpg
import numpy as np
import pytest
from aiohttp import web
from executor_support import (
    BTC,
    Worker,
    bars,
    consumed,
    empty_executor_tables,
    executor_rings,
    intent_record,
    rows,
    until,
)
from live_support import posts_for
from sim_support import DAY2, KEY, SECRET, quick_config

from aegis.binance.sim.server import BinanceSimulator
from aegis.config import ConfigError, Settings
from aegis.processes.executor_symbols import load_symbol_directory


@pytest.fixture
async def dsn(module_dsn):
    await empty_executor_tables(module_dsn)
    # The live journal's fills too: each test's simulator numbers its trades from the start.
    conn = await asyncpg.connect(module_dsn)
    try:
        await conn.execute("TRUNCATE trades")
    finally:
        await conn.close()
    return module_dsn


class Webhook:
    """A real HTTP server on 127.0.0.1 collecting what the executor's notifier posts."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        self.posts.append((await request.json())["content"])
        return web.Response(status=204)

    async def __aenter__(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def sim():
    async with BinanceSimulator(quick_config(symbols=("BTCUSDT", "ETHUSDT"))) as s:
        yield s


@pytest.fixture
def rings():
    with executor_rings() as made:
        yield made


def live_settings(sim) -> dict:
    return {"mode": "live", "rest_url": sim.rest_url, "ws_api_url": sim.ws_api_url,
            "api_key": KEY, "api_secret": SECRET, "live_unknown_grace_s": 0.2}  # fmt: skip


async def test_executor_live_killed_after_the_exchange_answered_sends_the_order_once(
    dsn, rings, tmp_path, sim
):
    """SIGKILL after send, before the answer is journaled: reconciled, never sent again."""
    rec = intent_record(81, decision_time_ms=DAY2 - 5 * 60_000, notional=100.0, stop_pct=5.0,
                        take_pct=5.0)  # fmt: skip
    rings["intents"].producer().publish_batch(rec)
    crashed = Worker(dsn, tmp_path, rings, settings=live_settings(sim), crash_at="order_answered",
                     crash_when="intents", crash_min=1)  # fmt: skip
    assert await crashed.exited() == -signal.SIGKILL, crashed.output()
    assert len(posts_for(sim, "aegis-81")) == 1

    restarted = Worker(dsn, tmp_path, rings, settings=live_settings(sim))  # fmt: skip
    rings["intents"].producer().publish_batch(rec)  # the brain re-sends it: still one order
    rings["market"].producer().publish_batch(bars(BTC, DAY2 + 60_000, 14))

    async def finished() -> bool:
        return consumed(rings) and bool(await rows(dsn, "SELECT 1 FROM virtual_trades"))

    await until(finished, 60.0)
    assert await restarted.stopped() == 0, restarted.output()
    assert "live executor reconciled at start" in restarted.output()
    assert len(posts_for(sim, "aegis-81")) == 1
    assert len(posts_for(sim, "aegis-81-x1")) == 1
    orders = await rows(dsn, "SELECT client_order_id, status, mode FROM orders ORDER BY 1")
    assert [tuple(o) for o in orders] == [("aegis-81", "FILLED", "live"),
                                          ("aegis-81-g1", "CANCELED", "live"),  # crash guard
                                          ("aegis-81-x1", "FILLED", "live")]  # fmt: skip
    trade = (await rows(dsn, "SELECT exit_reason, quantity FROM virtual_trades"))[0]
    assert trade["exit_reason"] == "time_exit" and trade["quantity"] > 0
    (position,) = await rows(dsn, "SELECT position_id, status, quantity FROM virtual_positions")
    assert tuple(position) == (81, "closed", trade["quantity"])
    assert np.isfinite(float(trade["quantity"]))


async def test_executor_live_killed_before_sending_never_sends_that_order(
    dsn, rings, tmp_path, sim
):
    """SIGKILL after the intent is journaled, before the order is sent: the restart finds the
    exchange never saw it, marks it not sent, and a re-sent intent stays a duplicate."""
    rec = intent_record(82, decision_time_ms=DAY2 - 5 * 60_000, notional=100.0)
    rings["intents"].producer().publish_batch(rec)
    crashed = Worker(dsn, tmp_path, rings, settings=live_settings(sim), crash_at="intent_written",
                     crash_when="intents", crash_min=1)  # fmt: skip
    assert await crashed.exited() == -signal.SIGKILL, crashed.output()
    journaled = await rows(dsn, "SELECT status FROM orders WHERE client_order_id = 'aegis-82'")
    assert [r["status"] for r in journaled] == ["SUBMITTING"]

    restarted = Worker(dsn, tmp_path, rings, settings=live_settings(sim))  # fmt: skip
    rings["intents"].producer().publish_batch(rec)

    async def settled() -> bool:
        got = await rows(dsn, "SELECT status FROM orders WHERE client_order_id = 'aegis-82'")
        return consumed(rings) and got[0]["status"] != "SUBMITTING"

    await until(settled, 60.0)
    assert await restarted.stopped() == 0, restarted.output()
    assert posts_for(sim, "aegis-82") == []
    row = (await rows(dsn, "SELECT status, reject_reason FROM orders"))[0]
    assert (row["status"], row["reject_reason"]) == ("REJECTED", "not_sent")
    assert await rows(dsn, "SELECT 1 FROM virtual_trades") == []


async def test_executor_symbol_directory_loads_the_universe_from_the_exchange(sim, tmp_path):
    settings = Settings().replace(rest_url=sim.rest_url, home=tmp_path,
                                  symbols=("ETHUSDT", "BTCUSDT"))  # fmt: skip
    found = await load_symbol_directory(settings)
    assert dict(found.names) == {1: "ETHUSDT", 2: "BTCUSDT"}
    assert found.filters[2].symbol == "BTCUSDT" and found.infos[1]["baseAsset"] == "ETH"
    assert found.name_of(7) == "#7" and found.id_of("BTCUSDT") == 2


async def test_executor_symbol_directory_in_top_n_mode_uses_the_feeds_published_ids(sim, tmp_path):
    from decimal import Decimal

    from aegis.binance.universe import Universe, UniverseSymbol

    published = Universe(
        (UniverseSymbol("ETHUSDT", 41, "ETH", "USDT", Decimal(2)),
         UniverseSymbol("BTCUSDT", 17, "BTC", "USDT", Decimal(1))),
        next_id=42, assigned={"ETHUSDT": 41, "BTCUSDT": 17},
    )  # fmt: skip
    settings = Settings().replace(rest_url=sim.rest_url, home=tmp_path, top_n=1)
    found = await load_symbol_directory(settings, published)
    assert dict(found.names) == {41: "ETHUSDT", 17: "BTCUSDT"}
    assert found.filters[17].symbol == "BTCUSDT"
    # no ranking of its own: the 24 h tickers are never asked for
    assert not [e for e in sim.request_log.entries() if "ticker" in e.path]


async def test_executor_symbol_directory_refuses_a_symbol_the_exchange_does_not_list(sim, tmp_path):
    settings = Settings().replace(rest_url=sim.rest_url, home=tmp_path, symbols=("NOPEUSDT",))
    with pytest.raises(ConfigError, match="AEGIS_SYMBOLS: unknown symbol NOPEUSDT"):
        await load_symbol_directory(settings)


@pytest.mark.parametrize(
    ("wrong", "code"),
    [({"api_key": "NotARegisteredKey42"}, "-2015"), ({"api_secret": "not-the-secret-x9"}, "-1022")],
)
async def test_executor_live_with_keys_binance_refuses_exits_boot_error_naming_the_variables(
    dsn, rings, tmp_path, sim, wrong, code
):
    """A wrong key or secret is a configuration error (exit 78, no restart loop), not a crash."""
    settings = live_settings(sim) | wrong
    worker = Worker(dsn, tmp_path, rings, settings=settings)
    assert await worker.exited() == 78, worker.output()
    out = worker.output()
    (line,) = [ln for ln in out.splitlines() if "cannot start" in ln]
    assert "AEGIS_API_KEY / AEGIS_API_SECRET: Binance refused the API key" in line
    assert f"code {code}" in line
    assert settings["api_secret"] not in out and "Traceback" not in out
    assert sim.request_log.entries("/api/v3/order") == []


async def test_open_live_without_keys_is_a_config_error_before_any_connection(tmp_path):
    import dataclasses

    from aegis.processes.executor_live import open_live

    # Settings.load refuses this already (exit 78 before anything starts); a Settings built
    # another way is refused again here.
    from aegis.processes.executor_symbols import SymbolDirectory

    settings = dataclasses.replace(Settings(), mode="live", home=tmp_path, api_secret="s")
    with pytest.raises(ConfigError, match="AEGIS_API_KEY / AEGIS_API_SECRET: live mode needs"):
        await open_live(settings, SymbolDirectory({}, {}), on_halt=lambda reason: None)


async def test_executor_live_restart_keeps_the_open_position_recorded_and_does_not_announce_it_again(
    dsn, rings, tmp_path, sim
):
    """A live position is in virtual_positions (where the brain's restart and reports look) and
    survives a restart there; the restart neither notifies "OPEN" again nor re-opens the row."""
    rec = intent_record(83, decision_time_ms=DAY2 - 5 * 60_000, notional=100.0, stop_pct=20.0,
                        take_pct=20.0)  # fmt: skip

    async def position_rows():
        return await rows(dsn, "SELECT position_id, status, quantity, state FROM virtual_positions")

    async with Webhook() as hook:
        settings = live_settings(sim) | {"discord_webhook_url": hook.url}
        first = Worker(dsn, tmp_path, rings, settings=settings)
        rings["intents"].producer().publish_batch(rec)

        async def opened() -> bool:
            return bool(await position_rows()) and len(hook.posts) == 1

        await until(opened, 60.0)
        assert await first.stopped() == 0, first.output()
        ((position_id, status, quantity, _),) = await position_rows()
        held = sim.account().balance("BTC")
        assert (position_id, status, quantity) == (83, "open", held.free + held.locked)

        again = Worker(dsn, tmp_path, rings, settings=settings)
        rings["market"].producer().publish_batch(bars(BTC, DAY2 + 60_000, 3))

        async def marked() -> bool:
            got = await position_rows()
            return consumed(rings) and got[0]["state"]["bars_held"] > 0

        await until(marked, 60.0)
        assert await again.stopped() == 0, again.output()
    ((_, status, quantity, state),) = await position_rows()
    assert (status, quantity) == ("open", held.free + held.locked) and state["bars_held"] > 0
    assert len(hook.posts) == 1 and "OPEN BTCUSDT" in hook.posts[0] and quantity > Decimal(0)


async def test_executor_live_killed_after_its_exit_was_answered_records_the_position_closed(
    dsn, rings, tmp_path, sim
):
    """The restart's reconciliation closes the trade before the executor reads any event: its
    virtual_positions row (written open by the first life) must still become closed."""
    rec = intent_record(84, decision_time_ms=DAY2 - 5 * 60_000, notional=100.0, stop_pct=5.0,
                        take_pct=5.0)  # fmt: skip
    rings["intents"].producer().publish_batch(rec)
    rings["market"].producer().publish_batch(bars(BTC, DAY2 + 60_000, 14))
    # The entry's answer comes before any position is open; the exit's after.
    crashed = Worker(dsn, tmp_path, rings, settings=live_settings(sim), crash_at="order_answered",
                     crash_when="positions_opened", crash_min=1)  # fmt: skip
    assert await crashed.exited() == -signal.SIGKILL, crashed.output()
    assert [r["status"] for r in await rows(dsn, "SELECT status FROM virtual_positions")] == [
        "open"
    ]
    restarted = Worker(dsn, tmp_path, rings, settings=live_settings(sim))

    async def closed() -> bool:
        return consumed(rings) and bool(await rows(dsn, "SELECT 1 FROM virtual_trades"))

    await until(closed, 60.0)
    assert await restarted.stopped() == 0, restarted.output()
    (position,) = await rows(dsn, "SELECT status, exit_reason FROM virtual_positions")
    (trade,) = await rows(dsn, "SELECT exit_reason, stop_pct FROM virtual_trades")
    assert (position["status"], position["exit_reason"]) == ("closed", "time_exit")
    assert (trade["exit_reason"], trade["stop_pct"]) == ("time_exit", 5.0)
    assert len(posts_for(sim, "aegis-84-x1")) == 1 and posts_for(sim, "aegis-84-x2") == []
