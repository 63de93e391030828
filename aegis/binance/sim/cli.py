"""``aegis-kernel simulate``: run the Binance simulator from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from aegis.binance.sim.config import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    KLINES_DIR,
    AccountSpec,
    SimConfig,
)
from aegis.binance.sim.data import KlineDataError
from aegis.binance.sim.process import READY_PREFIX

LOG = logging.getLogger(__name__)


def _time_ms(text: str) -> int:
    """Epoch milliseconds from digits or an ISO date/time (UTC when no zone is given)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch ms or ISO)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _balance(text: str) -> tuple[str, Decimal]:
    asset, _, amount = text.partition("=")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"balance must be ASSET=AMOUNT, got {text!r}") from None
    if not asset.isalnum() or value < 0:
        raise argparse.ArgumentTypeError(f"balance must be ASSET=AMOUNT, got {text!r}")
    return asset.upper(), value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aegis-kernel simulate",
        description="Serve Binance spot's REST, WebSocket streams and WebSocket API on loopback, "
        "replaying recorded 1m klines.",
    )
    p.add_argument("--data", type=Path, action="append", help="kline file or directory (repeat)")
    p.add_argument("--symbols", action="append", help="symbols, comma separated (repeat)")
    p.add_argument("--symbol-count", type=int, help="derive symbols from real ones up to N")
    p.add_argument("--from", dest="from_ms", type=_time_ms, help="first bar (epoch ms or ISO)")
    p.add_argument("--to", dest="to_ms", type=_time_ms, help="end of data (exclusive)")
    p.add_argument("--start", dest="start_ms", type=_time_ms, help="simulated time at start")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor, 0 = max")
    p.add_argument("--updates-per-bar", type=int, default=30)
    p.add_argument("--start-paused", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    p.add_argument("--balance", type=_balance, action="append", help="ASSET=AMOUNT (repeat)")
    p.add_argument("--commission", type=Decimal, default=Decimal("0.001"))
    p.add_argument("--weight-limit", type=int, default=6000)
    p.add_argument("--orders-per-10s", type=int, default=50)
    p.add_argument("--orders-per-day", type=int, default=160_000)
    p.add_argument("--exchange-info", type=Path, help="recorded exchangeInfo (.json[.gz])")
    p.add_argument(
        "--lifetime-in-wall-time",
        action="store_true",
        help="count Binance's 24 h connection lifetime in wall time, not simulated time (a fast "
        "replay whose client replaces its connections on the machine's clock, as it must live)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Translate parsed arguments into a ``SimConfig`` (ValueError on inconsistent values)."""
    symbols = None
    if args.symbols:
        symbols = tuple(s.strip().upper() for chunk in args.symbols for s in chunk.split(",") if s)
    balances = tuple(args.balance) if args.balance else (("USDT", Decimal("10000")),)
    extra: dict[str, object] = {}
    if args.exchange_info:
        extra["exchange_info_path"] = args.exchange_info
    if args.lifetime_in_wall_time:
        extra["connection_lifetime_ms"] = int(
            SimConfig.connection_lifetime_ms * max(args.speed, 1.0)
        )
    return SimConfig(
        data_paths=tuple(args.data) if args.data else (KLINES_DIR,),
        symbols=symbols,
        symbol_count=args.symbol_count,
        from_ms=args.from_ms,
        to_ms=args.to_ms,
        start_ms=args.start_ms,
        speed=args.speed,
        start_paused=args.start_paused,
        updates_per_bar=args.updates_per_bar,
        host=args.host,
        port=args.port,
        accounts=(AccountSpec(args.api_key, args.api_secret, balances),),
        commission_rate=args.commission,
        weight_limit_1m=args.weight_limit,
        orders_limit_10s=args.orders_per_10s,
        orders_limit_1d=args.orders_per_day,
        **extra,
    )


async def _serve(config: SimConfig) -> None:
    from aegis.binance.sim.server import BinanceSimulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with BinanceSimulator(config) as sim:
        ready = {
            "rest_url": sim.rest_url,
            "ws_url": sim.ws_url,
            "ws_api_url": sim.ws_api_url,
            "port": sim.port,
            "symbols": len(sim.market.series),
            "sim_time_ms": sim.clock.now_ms(),
        }
        print(READY_PREFIX + json.dumps(ready), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run ``aegis-kernel simulate`` until SIGINT/SIGTERM; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports bad usage itself
        return int(exc.code or 0)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(config))
    except (KlineDataError, ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    return 0
