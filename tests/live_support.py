"""Helpers shared by the live-exchange tests: a REST client, markets and intents for the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sim_support import DAY2, KEY, SECRET

from aegis.binance.journal import MemoryOrderJournal, OrderJournal
from aegis.binance.live import LiveConfig, LiveExchange, LiveMarket
from aegis.binance.rest import BinanceRestClient
from aegis.binance.user_events import UserEvent
from aegis.binance.userdata import UserDataStream
from aegis.binance.weight import WeightBudget
from aegis.paper.intents import PaperIntent

BTC = 0  # ring symbol id of BTCUSDT in these tests


def intent(intent_id: int, notional: float = 100.0, stop: float = 1.0, take: float = 2.0):
    """A BTCUSDT entry intent decided at DAY2."""
    return PaperIntent(intent_id, BTC, DAY2, notional, stop, take)


async def btc_market(rest: BinanceRestClient) -> LiveMarket:
    info = await rest.exchange_info(["BTCUSDT"])
    return LiveMarket.from_symbol_info(info["symbols"][0])


@contextlib.asynccontextmanager
async def rest_client(rest_url: str, home: Path) -> AsyncIterator[BinanceRestClient]:
    with WeightBudget.for_home(home) as budget:
        async with BinanceRestClient(
            rest_url, budget, api_key=KEY, api_secret=SECRET, backoff_base_s=0.01, time_samples=1
        ) as rest:
            yield rest


@contextlib.asynccontextmanager
async def live_exchange(
    rest_url: str,
    home: Path,
    journal: OrderJournal | None = None,
    config: LiveConfig | None = None,
    **kwargs: Any,
) -> AsyncIterator[LiveExchange]:
    """A started LiveExchange on BTCUSDT (memory journal unless one is given)."""
    async with rest_client(rest_url, home) as rest:
        market = await btc_market(rest)
        exchange = LiveExchange(
            rest, journal or MemoryOrderJournal(), {BTC: market},
            config or LiveConfig(unknown_grace_s=0.2), **kwargs,
        )  # fmt: skip
        await exchange.start()
        yield exchange


def posts_for(sim, client_order_id: str) -> list:
    """New-order requests the simulator received for one client order id."""
    return [
        e
        for e in sim.request_log.entries("/api/v3/order")
        if e.method == "POST" and e.params.get("newClientOrderId") == client_order_id
    ]


def sim_orders(sim, client_order_id: str) -> list:
    """Orders the simulator's matching engine holds under one client order id."""
    return [o for o in sim.engine._orders.values() if o.client_order_id == client_order_id]


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` holds (a liveness bound for the test, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def streaming(
    ex: LiveExchange, sim, drop: Callable[[UserEvent], bool] | None = None
) -> AsyncIterator[UserDataStream]:
    """Run ``ex`` as the executor does: user-data stream into its cache and the reconciler.

    Yields once the stream is subscribed and its first-connect reconciliation is done.
    ``drop(event)`` True loses that event on the way (a lossy network, on our side).
    """
    from sim_support import KEY, SECRET

    def deliver(event: UserEvent) -> None:
        if drop is None or not drop(event):
            ex.cache.apply(event)

    stream = UserDataStream(
        sim.ws_api_url, KEY, SECRET, server_time_ms=ex.rest.server_time_ms, on_event=deliver
    )
    ex.stream = stream  # what user_data_stream() does, with the lossy delivery in between
    stream.start()
    task = asyncio.create_task(ex.run_reconciler(stream.reconcile_due))
    try:
        await stream.wait_connected(5)
        await eventually(lambda: ex.reconciliations["reconnect"] == 1)
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.stop()


def requests_per_endpoint(sim) -> dict[str, int]:
    """How many REST requests the simulator received, by (method, path)."""
    counts: dict[str, int] = {}
    for e in sim.request_log.entries():
        key = f"{e.method} {e.path}"
        counts[key] = counts.get(key, 0) + 1
    return counts
