"""`aegis-kernel`: the command line of AEGIS.

Each subcommand is a thin shell over a function of the package; the parser documents every flag,
and settings come from ``AEGIS_*`` variables (``aegis-kernel run --help`` lists them all).
A subcommand whose machinery is not built yet says so and exits with ``EXIT_UNAVAILABLE`` — it
never pretends.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from aegis.config import ConfigError, Settings, describe

EXIT_OK = 0
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: bad configuration, don't restart in a loop
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the capability is not built yet

log = logging.getLogger("aegis")


def _settings_epilog() -> str:
    lines = ["settings (environment variables):"]
    for var, default, doc in describe():
        lines.append(f"  {var:<34} {doc} [default: {default or '(empty)'}]")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis-kernel",
        description="AEGIS: a supervised Binance spot trading kernel (feed, brain, executor).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the kernel: watchdog, feed, brain and executor",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--demo", action="store_true",
                     help="embedded databases + the simulator replaying bundled real data, paper mode")

    sim = sub.add_parser("simulate", help="serve the Binance-protocol simulator from recorded data")
    sim.add_argument("--data", help="directory or file of recorded 1m klines (default: bundled)")
    sim.add_argument("--symbols", help="comma-separated symbols (default: all in the data)")
    sim.add_argument("--speed", type=float, default=1.0, help="replay speed factor (0 = as fast as possible)")
    sim.add_argument("--host", default="127.0.0.1", help="listen address")
    sim.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")

    bt = sub.add_parser("backtest", help="brain + executor logic over recorded files, in one process")
    bt.add_argument("--data", help="directory or file of recorded 1m klines (default: bundled)")
    bt.add_argument("--symbols", help="comma-separated symbols")
    bt.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD (UTC)")
    bt.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (UTC)")

    sub.add_parser("train", help="train a model from what PostgreSQL holds; promote it if it earns it")
    sub.add_parser("migrate", help="apply the schema migrations and check the catalog")

    status = sub.add_parser("status", help="show the running kernel's processes, heartbeats and ring lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _unavailable(what: str, needs: str) -> int:
    print(f"aegis-kernel {what}: not yet available — it needs {needs}.", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if args.demo:
        return _unavailable("run --demo", "the feed, brain and executor processes (issues 5–8)")
    return _unavailable("run", "the feed, brain and executor processes (issues 5–7)")


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    return _unavailable("simulate", "the Binance-protocol simulator (issue 5)")


def _cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    return _unavailable("backtest", "the backtest engine (issue 8)")


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    return _unavailable("train", "the training job (issue 6)")


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    return _unavailable("migrate", "the schema migrator (issue 3)")


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    return _unavailable("status", "the kernel (issue 4)")


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": _cmd_run,
    "simulate": _cmd_simulate,
    "backtest": _cmd_backtest,
    "train": _cmd_train,
    "migrate": _cmd_migrate,
    "status": _cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
    except ConfigError as exc:
        print(f"aegis-kernel: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s",
    )
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
