"""Live mode of the executor process: ``LiveExchange`` with its REST client, journal and streams.

Start order matters for restart safety: the REST client syncs its server-time offset, the
user-data stream is started (account and order events into the account cache), then
``LiveExchange.start()`` rebuilds every unfinished intent from the ``orders``/``trades`` journal
and reconciles it with the exchange (``account``, ``openOrders``, each order by client order id)
**before** the executor takes its first intent. The reconciler then runs in the background on
every stream reconnect, on fills of unresolved orders, and periodically. A reconciler that
stops for good (``HaltError``: banned, keys refused) stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aegis.binance.journal_pg import PgOrderJournal
from aegis.binance.live import LiveConfig, LiveExchange, LiveMarket
from aegis.binance.rest import BinanceRestClient
from aegis.binance.userdata import UserDataStream
from aegis.binance.weight import WeightBudget
from aegis.config import ConfigError, Settings
from aegis.processes.executor_symbols import SymbolDirectory

log = logging.getLogger(__name__)

STREAM_CONNECT_WAIT_S = 10.0


@dataclass
class LiveSession:
    """Everything live mode opened; ``close()`` releases it in reverse order."""

    exchange: LiveExchange
    rest: BinanceRestClient
    budget: WeightBudget
    journal: PgOrderJournal
    stream: UserDataStream
    reconciler: asyncio.Task | None = None

    async def close(self) -> None:
        if self.reconciler is not None:
            self.reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reconciler
        await self.stream.stop()
        await self.journal.close()
        await self.rest.close()
        self.budget.close()


async def open_live(
    settings: Settings,
    directory: SymbolDirectory,
    *,
    on_halt: Callable[[str], None],
    checkpoint: Callable[[str], None] | None = None,
) -> LiveSession:
    """Connect, rebuild and reconcile; return a session whose exchange may take intents."""
    missing = [i for i in directory.names if i not in directory.infos]
    if missing:
        raise ConfigError(f"live mode needs exchangeInfo entries for symbol ids {missing}")
    markets = {i: LiveMarket.from_symbol_info(info) for i, info in directory.infos.items()}
    budget = WeightBudget.for_home(settings.home, share=settings.weight_share)
    rest = BinanceRestClient(settings.rest_url, budget, api_key=settings.api_key,
                             api_secret=settings.api_secret, recv_window_ms=settings.recv_window_ms,
                             timeout_s=settings.rest_timeout_s)  # fmt: skip
    # The journal gets a plain pool of its own: it encodes its JSON itself.
    journal = await PgOrderJournal.connect(settings.database_url)
    config = LiveConfig.from_settings(
        settings, reconcile_interval_s=settings.live_reconcile_interval_s,
        unknown_grace_s=settings.live_unknown_grace_s,
    )  # fmt: skip
    exchange = LiveExchange(rest, journal, markets, config, checkpoint=checkpoint)
    stream = exchange.user_data_stream(
        settings.ws_api_url, settings.api_key, settings.api_secret,
        recv_window_ms=settings.recv_window_ms,
        max_connection_s=settings.user_stream_max_connection_s,
    )  # fmt: skip
    session = LiveSession(exchange, rest, budget, journal, stream)
    try:
        await rest.sync_time()
        stream.start()
        try:
            await stream.wait_connected(STREAM_CONNECT_WAIT_S)
        except TimeoutError:
            # Not fatal: reconciliation over REST covers what the stream would have said.
            log.warning("user-data stream not connected after %.0f s; reconciling over REST",
                        STREAM_CONNECT_WAIT_S)  # fmt: skip
        report = await exchange.start()
        log.info("live executor reconciled at start: %s", report)
    except BaseException:
        await session.close()
        raise
    session.reconciler = asyncio.create_task(
        exchange.run_reconciler(stream.reconcile_due), name="live-reconciler"
    )

    def reconciler_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("live reconciler stopped: %r", task.exception())
            on_halt(f"live reconciler stopped: {type(task.exception()).__name__}")

    session.reconciler.add_done_callback(reconciler_done)
    return session
