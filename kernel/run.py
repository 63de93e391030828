"""``aegis-kernel run``: lock the home, prepare the store, supervise until told to stop.

Exit codes: see ``aegis.kernel.exitcodes`` (0 clean, 70 crash loop, 71 shutdown deadline
missed, 72 a child failed while stopping, 75 another kernel runs on this home, 78 boot error,
1 unexpected error).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import asyncpg
import setproctitle

from aegis.config import ConfigError, Settings
from aegis.kernel import exitcodes
from aegis.kernel.control import ControlBlockError
from aegis.kernel.events import EventRecorder, KernelEvent, StoreEventSink
from aegis.kernel.lock import KernelAlreadyRunning, KernelLock
from aegis.kernel.metrics import MetricsServer
from aegis.kernel.rings import RingHost
from aegis.kernel.status import snapshot
from aegis.kernel.topology import DEFAULT_TABLE, ProcessTable
from aegis.kernel.watchdog import Watchdog

log = logging.getLogger(__name__)


def run_main(
    settings: Settings,
    process_table: ProcessTable | None = None,
    *,
    reload: Callable[[], Settings] | None = None,
    start_timeout_s: float | None = None,
    warm_spares: bool | None = None,
) -> int:
    """Run the kernel in this process (``aegis: watchdog``) until SIGTERM/SIGINT; return its exit code.

    ``process_table`` defaults to feed, brain and executor with the market, intents and reports
    rings. ``reload`` (e.g. ``Settings.load``) is called on SIGHUP to pick up a new configuration
    before the rolling restart; without it the running configuration is kept. With
    ``warm_spares`` each process has a pre-started, pre-warmed spare that a restart activates
    (about one extra idle Python process per child, ~100-150 MB RSS each).
    """
    table = process_table or DEFAULT_TABLE
    start_timeout_s = settings.start_timeout_s if start_timeout_s is None else start_timeout_s
    warm_spares = settings.warm_spares if warm_spares is None else warm_spares
    setproctitle.setproctitle("aegis: watchdog")
    _configure_logging(settings)
    lock = KernelLock(settings.home)
    try:
        lock.acquire()
    except KernelAlreadyRunning as exc:
        print(f"aegis-kernel: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return exitcodes.ALREADY_RUNNING
    endpoints = None
    events = EventRecorder(None)
    try:
        try:
            endpoints, settings = _prepare_store(settings)
        except ConfigError as exc:
            log.critical("cannot start: %s", exc)
            return exitcodes.BOOT_ERROR
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.critical("cannot prepare the database (%s): %s", type(exc).__name__, exc)
            return exitcodes.FAILURE
        events = EventRecorder(
            partial(StoreEventSink.open, settings.database_url, Path(settings.home) / "spill")
        )
        if lock.previous_pid:
            events.record(
                logging.WARNING,
                f"took over the lock of dead kernel pid {lock.previous_pid}",
                KernelEvent("watchdog", "lock_takeover", "stale_lock", pid=lock.previous_pid),
            )
        return _supervise(settings, table, events, reload, start_timeout_s, warm_spares)
    except Exception:
        log.exception("watchdog failed")
        return exitcodes.FAILURE
    finally:
        events.close()
        if endpoints is not None:
            endpoints.stop()
        lock.release()


def _supervise(
    settings: Settings,
    table: ProcessTable,
    events: EventRecorder,
    reload: Callable[[], Settings] | None,
    start_timeout_s: float,
    warm_spares: bool,
) -> int:
    watchdog = Watchdog(
        settings,
        table,
        rings=RingHost(),
        events=events,
        reload=reload,
        start_timeout_s=start_timeout_s,
        warm_spares=warm_spares,
    )
    metrics = None
    try:
        watchdog.open()
        if settings.metrics_port:
            try:
                metrics = MetricsServer(partial(_snapshot, watchdog), settings.metrics_port)
            except OSError as exc:
                log.critical(
                    "metrics port 127.0.0.1:%d unavailable (%s); set AEGIS_METRICS_PORT "
                    "to a free port or 0",
                    settings.metrics_port,
                    exc.strerror,
                )
                return exitcodes.FAILURE
            metrics.start()
        return watchdog.run()
    finally:
        if metrics is not None:
            metrics.stop()
        watchdog.close()


def _snapshot(watchdog: Watchdog):
    block = watchdog.block
    if block is None:
        raise ControlBlockError("kernel is stopping")
    return snapshot(block, watchdog._rings.inspect())


def _prepare_store(settings: Settings):
    """Start embedded servers if no URLs are set, migrate, and pin the URLs for the children."""
    from aegis.store.embedded import resolve_endpoints
    from aegis.store.setup import prepare_database

    endpoints = resolve_endpoints(settings)
    asyncio.run(prepare_database(endpoints.database_url))
    pinned = settings.replace(database_url=endpoints.database_url, redis_url=endpoints.redis_url)
    return endpoints, pinned


def _configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if root.handlers:
        return  # the CLI or an embedding application configured logging already
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s watchdog[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
