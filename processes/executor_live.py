"""Live mode of the executor process: ``LiveExchange`` with its REST client, journal and streams.

Start order matters for restart safety: the REST client syncs its server-time offset, the
user-data stream is started (account and order events into the account cache), then
``LiveExchange.start()`` rebuilds every unfinished intent from the ``orders``/``trades`` journal
and reconciles it with the exchange (``account``, ``openOrders``, each order by client order id)
**before** the executor takes its first intent. The reconciler then runs in the background:
fully on every stream reconnect after that and periodically, and order by order (from the
stream, else one query by client id) for orders whose outcome was unknown. A reconciler that
stops for good (``HaltError``: banned, keys refused) stops the process.

Keys: live mode without ``AEGIS_API_KEY``/``AEGIS_API_SECRET``, or keys Binance refuses at start
(-2014 bad format, -2015 invalid key/IP/permissions, -1022 bad signature, i.e. wrong secret,
-1002 unauthorized), are a ``ConfigError``: the process exits ``BOOT_ERROR`` (78) with one line
naming the variables, and the watchdog does not restart it in a loop. Neither the secret nor the
key is ever part of that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aegis.binance.errors import AuthError
from aegis.binance.journal_pg import PgOrderJournal
from aegis.binance.live import LiveConfig, LiveExchange, LiveMarket
from aegis.binance.rest import BinanceRestClient
from aegis.binance.userdata import UserDataStream, UserDataStreamError
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
    """Connect, rebuild and reconcile; return a session whose exchange may take intents.

    Raises ``ConfigError`` for missing or refused API keys."""
    if not (settings.api_key and settings.api_secret):
        raise ConfigError(
            "AEGIS_API_KEY / AEGIS_API_SECRET: live mode needs both (or their *_FILE forms)"
        )
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
            # The start reconciliation below comes after this connect: it covers it.
            stream.reconcile_due.clear()
        except TimeoutError:
            # Not fatal: reconciliation over REST covers what the stream would have said.
            log.warning("user-data stream not connected after %.0f s; reconciling over REST",
                        STREAM_CONNECT_WAIT_S)  # fmt: skip
        report = await exchange.start()
        log.info("live executor reconciled at start: %s", report)
    except (AuthError, UserDataStreamError) as exc:
        await session.close()
        if isinstance(exc, UserDataStreamError) and not exc.fatal:
            raise
        raise ConfigError(keys_refused(exc, settings)) from None
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


def keys_refused(exc: AuthError | UserDataStreamError, settings: Settings) -> str:
    """The one-line boot error for keys Binance refused; never shows the key or the secret."""
    text = exc.msg
    for secret in (settings.api_secret, settings.api_key):
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())[:200]
    return (
        f"AEGIS_API_KEY / AEGIS_API_SECRET: Binance refused the API key (code {exc.code}: "
        f"{text}); check the key, the secret, the key's IP whitelist and its permissions"
    )
