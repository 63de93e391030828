"""``aegis-kernel run --demo``: the whole kernel over replayed real data, then an honest report.

On a fresh clone, with no configuration: embedded PostgreSQL and Redis under ``<home>`` (a demo
database ``aegis_demo``, recreated at each run, so the user's ``aegis`` database is never
touched), the Binance-protocol simulator replaying the bundled real 1m bars at ``speed`` times
real time, and the kernel exactly as in live use — watchdog, feed over WebSocket + REST, brain,
executor in paper mode — on the sub-home ``<home>/demo`` (its own lock, rings and spill files).

The simulator (``--lifetime-in-wall-time``: Binance's 24 h connection cut counted in wall time,
because at 20,000x a simulated day lasts 4 s while the feed replaces connections on its own
clock, as it must live) starts paused and is resumed once every process is running and the feed
is connected, so no simulated hour passes unseen. ``DemoProgress`` prints the status line and paces the replay (the speed is a
ceiling: the simulator's clock is held while the kernel lags more than ``max_lag_minutes`` of
market); once every recorded bar is stored and every ring is drained it sends this process
SIGTERM, and the kernel stops as on any SIGTERM (Ctrl-C takes the same path). The report
(``aegis.kernel.demo_report``) is then built from what PostgreSQL holds, printed, and written to
``<home>/reports/``. The kernel's log goes to ``<home>/demo/kernel.log``.

``python -m aegis.kernel.demo`` runs the same with flags (tests use it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from aegis.config import ConfigError, Settings

log = logging.getLogger(__name__)

DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "DOGEUSDT", "XRPUSDT")
DEMO_DATABASE = "aegis_demo"
DEMO_REDIS_PREFIX = "aegis:demo:"
EXIT_SIMULATOR = 69  # EX_UNAVAILABLE: the simulator could not start
EXIT_CONFIG = 78  # EX_CONFIG: the plan names data that is not there


@dataclass(frozen=True)
class DemoPlan:
    """What the demo replays and how fast it learns.

    ``speed``: simulated seconds per wall second (20 000: the 46 recorded days in about 3.5
    minutes). ``retrain_min_rows`` / ``retrain_interval_s`` replace the live defaults (500 rows,
    1 h), which suit weeks of live trading, not weeks replayed in minutes: the brain retrains
    itself once that many new labelled rows arrived, or after that many wall seconds.
    """

    symbols: tuple[str, ...] = DEMO_SYMBOLS
    date_from: str | None = None  # ISO day or time (UTC); None: the first recorded bar
    date_to: str | None = None  # exclusive; None: the end of the recordings
    speed: float = 20_000.0
    updates_per_bar: int = 1  # only the closing update: the kernel trades closed bars
    retrain_min_rows: int = 1500
    retrain_interval_s: float = 60.0
    # A brain batch holds up to hours of replayed market; on a loaded machine it can outlast
    # the live 5 s heartbeat deadline, which is sized for bars arriving once a minute.
    heartbeat_deadline_s: float = 15.0
    fresh: bool = True  # recreate the embedded demo database and its spill files
    report: bool = True
    status_every_s: float = 5.0  # plain status lines when stdout is not a terminal
    drain_quiet_s: float = 2.0  # rings idle this long after the replay's end: stop
    max_lag_minutes: int = 3  # hold the replay while the kernel lags more market than this

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ConfigError("demo speed must be > 0 (a fixed factor keeps learning predictable)")
        if not self.symbols:
            raise ConfigError("demo needs at least one symbol")
        if self.retrain_min_rows < 1 or self.retrain_interval_s <= 0:
            raise ConfigError("demo retrain thresholds must be positive")


@dataclass
class _Store:
    """The demo's database and Redis, and the embedded servers this run started."""

    database_url: str
    redis_url: str
    started: tuple = ()

    def stop(self) -> None:
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                server.stop()


def _open_store(settings: Settings, fresh: bool) -> _Store:
    """Configured URLs are used as they are; otherwise embedded servers under home."""
    from aegis.store.embedded import EmbeddedPostgres, EmbeddedRedis

    home = Path(settings.home)
    started = []
    dsn = settings.database_url
    if not dsn:
        pg = EmbeddedPostgres(home / "postgres")
        running = (pg.pgdata / "PG_VERSION").exists() and pg.is_running()
        pg.start()
        if not running:
            started.append(pg)
        if fresh:
            asyncio.run(_drop_database(pg.dsn("postgres"), DEMO_DATABASE))
        dsn = pg.ensure_database(DEMO_DATABASE)
    url = settings.redis_url
    if not url:
        server = EmbeddedRedis(home / "redis")
        running = server.pid() is not None
        url = server.start()
        if not running:
            started.append(server)
    return _Store(dsn, url, tuple(started))


async def _drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _free_port(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sim_args(plan: DemoPlan) -> list[str]:
    args = ["--symbols", ",".join(plan.symbols), "--speed", repr(plan.speed),
            "--updates-per-bar", str(plan.updates_per_bar), "--start-paused",
            "--log-level", "WARNING"]  # fmt: skip
    if plan.date_from:
        args += ["--from", plan.date_from]
    if plan.date_to:
        args += ["--to", plan.date_to]
    return args


def _epoch_ms(text: str | None) -> int | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def expected_last_bars(plan: DemoPlan) -> dict[str, int]:
    """Symbol → open time of the last recorded bar the replay will send (bad input: ConfigError)."""
    from aegis.paper.backtest_inputs import BacktestInputError, load_backtest_data

    try:
        data = load_backtest_data(None, plan.symbols, _epoch_ms(plan.date_from),
                                  _epoch_ms(plan.date_to))  # fmt: skip
    except (BacktestInputError, ValueError) as exc:
        raise ConfigError(f"demo data: {exc}") from None
    return {data.symbols[s.symbol_id]: int(s.open_time_ms[-1]) for s in data.series}


def _start_simulator(plan: DemoPlan):
    from aegis.binance.sim import SimulatorProcess

    # Ctrl-C reaches the whole foreground process group; the simulator must outlive the
    # kernel's graceful stop, so it starts with SIGINT blocked (the mask is inherited) and is
    # stopped by SIGTERM after the kernel.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return SimulatorProcess([*_sim_args(plan), "--lifetime-in-wall-time"]).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def kernel_settings(settings: Settings, plan: DemoPlan, store: _Store, sim) -> Settings:
    """The settings the demo's kernel runs with (paper mode, the simulator's URLs, sub-home)."""
    metrics = settings.metrics_port if settings.metrics_port and _free_port(
        settings.metrics_port) else 0  # fmt: skip
    return settings.replace(
        home=Path(settings.home) / "demo",
        database_url=store.database_url,
        redis_url=store.redis_url,
        # The default prefix gets a demo namespace; a chosen one (tests) is kept.
        redis_prefix=DEMO_REDIS_PREFIX
        if settings.redis_prefix == "aegis:"
        else settings.redis_prefix,
        symbols=plan.symbols,
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        ws_api_url=sim.ws_api_url,
        mode="paper",
        retrain_min_rows=plan.retrain_min_rows,
        retrain_interval_s=plan.retrain_interval_s,
        metrics_port=metrics,
        heartbeat_deadline_s=max(settings.heartbeat_deadline_s, plan.heartbeat_deadline_s),
    )


def demo_main(
    settings: Settings,
    plan: DemoPlan | None = None,
    out: TextIO | None = None,
    process_table=None,
) -> int:
    """Run the demo in this process (the watchdog's); return the kernel's exit code.

    The kernel's log (every process) goes to ``<home>/demo/kernel.log`` so that the terminal
    shows the status line and the report; ``process_table`` is for tests.
    """
    from aegis.kernel.demo_progress import DemoProgress
    from aegis.kernel.run import run_main

    plan = plan or DemoPlan()
    out = out or sys.stdout
    try:
        expected = expected_last_bars(plan)
    except ConfigError as exc:
        print(f"aegis-kernel run --demo: {exc}", file=out)
        return EXIT_CONFIG
    store = _open_store(settings, plan.fresh)
    sim = None
    try:
        try:
            sim = _start_simulator(plan)
        except Exception as exc:
            print(f"aegis-kernel run --demo: simulator did not start: {exc}", file=out)
            return EXIT_SIMULATOR
        ks = kernel_settings(settings, plan, store, sim)
        if plan.fresh:
            _forget_previous_demo(ks)
        print(f"AEGIS demo: {len(plan.symbols)} symbols ({', '.join(plan.symbols)}), real 1m bars "
              f"replayed at {plan.speed:g}x, paper mode; database {_where(store)}; "
              f"Ctrl-C stops cleanly", file=out, flush=True)  # fmt: skip
        progress = DemoProgress(ks, sim, plan, out, expected)
        progress.start()
        log_path = Path(ks.home) / "kernel.log"
        print(f"kernel log: {log_path}", file=out, flush=True)
        try:
            with _stderr_to(log_path):
                code = run_main(ks, process_table)
        finally:
            progress.stop()
        print(progress.final_line(), file=out, flush=True)
        sim.stop()
        sim = None
        if plan.report:
            _report(ks, plan, store, progress, out)
        return code
    finally:
        if sim is not None:
            sim.stop()
        store.stop()


def _forget_previous_demo(ks: Settings) -> None:
    """A fresh demo database: drop what belonged to the last one (spill files, cached keys).

    The feed reloads its universe from Redis first; a list cached by an earlier demo with other
    symbols would give them other ids than the brain derives from ``AEGIS_SYMBOLS``.
    """
    shutil.rmtree(Path(ks.home) / "spill", ignore_errors=True)
    (Path(ks.home) / "kernel.log").unlink(missing_ok=True)
    if ks.redis_prefix != DEMO_REDIS_PREFIX:
        return  # a chosen namespace is not ours to clear
    import redis

    client = redis.Redis.from_url(ks.redis_url)
    try:
        keys = list(client.scan_iter(match=DEMO_REDIS_PREFIX + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Point file descriptor 2 (ours, and so every child's) at ``path`` for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)


def _where(store: _Store) -> str:
    return "embedded under the home" if store.started or "%2F" in store.database_url else (
        "configured")  # fmt: skip


def _report(ks: Settings, plan: DemoPlan, store: _Store, progress, out: TextIO) -> None:
    from aegis.kernel.demo_report import build_demo_report

    try:
        report = build_demo_report(
            ks, store.database_url, Path(ks.home).parent / "reports",
            interrupted=not progress.finished,
        )  # fmt: skip
    except Exception as exc:  # the run itself succeeded; say why there is no report
        log.exception("demo report failed")
        print(f"demo report could not be built: {type(exc).__name__}: {exc}", file=out)
        return
    print(report.text, file=out)
    if report.files is not None:
        png = f" (chart {report.files.png})" if report.files.png else ""
        print(f"report: {report.files.html}{png}", file=out, flush=True)


def build_parser() -> argparse.ArgumentParser:
    d = DemoPlan()
    p = argparse.ArgumentParser(
        prog="python -m aegis.kernel.demo", description=__doc__.split("\n")[0]
    )
    p.add_argument("--symbols", default=",".join(d.symbols))
    p.add_argument("--from", dest="date_from")
    p.add_argument("--to", dest="date_to")
    p.add_argument("--speed", type=float, default=d.speed)
    p.add_argument("--retrain-min-rows", type=int, default=d.retrain_min_rows)
    p.add_argument("--retrain-interval-s", type=float, default=d.retrain_interval_s)
    p.add_argument("--keep-data", action="store_true", help="do not recreate the demo database")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--status-every-s", type=float, default=d.status_every_s)
    p.add_argument("--feed-entry", help="module:function of another feed (development)")
    return p


def plan_from_args(argv: Sequence[str] | None = None) -> DemoPlan:
    a = build_parser().parse_args(argv)
    symbols = tuple(s.strip().upper() for s in a.symbols.split(",") if s.strip())
    return replace(DemoPlan(), symbols=symbols, date_from=a.date_from, date_to=a.date_to,
                   speed=a.speed, retrain_min_rows=a.retrain_min_rows,
                   retrain_interval_s=a.retrain_interval_s, fresh=not a.keep_data,
                   report=not a.no_report, status_every_s=a.status_every_s)  # fmt: skip


def _table(feed_entry: str | None):
    if not feed_entry:
        return None
    from aegis.kernel.topology import DEFAULT_TABLE, ProcessSpec, ProcessTable

    procs = tuple(ProcessSpec(p.name, feed_entry) if p.name == "feed" else p
                  for p in DEFAULT_TABLE.processes)  # fmt: skip
    return ProcessTable(procs, DEFAULT_TABLE.rings)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.load()
        plan = plan_from_args(argv)
        table = _table(build_parser().parse_args(argv).feed_entry)
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    return demo_main(settings, plan, process_table=table)


if __name__ == "__main__":
    sys.exit(main())
