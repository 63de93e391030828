"""`aegis-kernel`: the command line of AEGIS.

Each subcommand is a thin shell over a function of the package; the parser documents every flag,
and settings come from ``AEGIS_*`` variables (``aegis-kernel run --help`` lists them all).
Exit codes: 0 success, 1 failure, 74 database unreachable, 78 configuration error; ``run``
adds the kernel's own (``aegis.kernel.exitcodes``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import asyncpg

from aegis.config import ConfigError, Settings, describe
from aegis.schema.migrator import MigrationError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DATABASE = 74  # EX_IOERR: the database could not be reached or refused the work
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: bad configuration, don't restart in a loop

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
    run.add_argument(
        "--demo",
        action="store_true",
        help="embedded databases + the simulator replaying bundled real data, paper mode",
    )

    # The simulator documents its own flags: `aegis-kernel simulate --help`.
    sim = sub.add_parser(
        "simulate",
        add_help=False,
        help="serve the Binance-protocol simulator from recorded data (--help for flags)",
    )
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)  # parsed by the simulator itself

    bt = sub.add_parser(
        "backtest", help="brain + executor logic over recorded files, in one process"
    )
    bt.add_argument("--data", help="directory or file of recorded 1m klines (default: bundled)")
    bt.add_argument("--symbols", help="comma-separated symbols")
    bt.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD (UTC)")
    bt.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (UTC)")
    bt.add_argument(
        "--rule",
        choices=("smc_long", "ema_crossover"),
        help="candidate rule (default: AEGIS_CANDIDATE_RULE)",
    )
    bt.add_argument(
        "--warm-up-days",
        type=float,
        default=30.0,
        help="recorded days before --from that warm the features up, never traded",
    )
    bt.add_argument(
        "--no-store",
        action="store_true",
        help="touch no database: no champion model, nothing written",
    )

    sub.add_parser(
        "train", help="train a model from what PostgreSQL holds; promote it if it earns it"
    )
    sub.add_parser("migrate", help="apply the schema migrations and check the catalog")

    status = sub.add_parser(
        "status", help="show the running kernel's processes, heartbeats and ring lag"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if args.demo:
        from aegis.kernel.demo import demo_main

        return demo_main(settings)
    from aegis.kernel.run import run_main

    return run_main(settings, reload=Settings.load)


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from aegis.binance.sim import main as simulate

    return simulate(list(args.sim_args))


def _cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from aegis.paper.backtest_cli import backtest_main

    if args.rule:
        settings = settings.replace(candidate_rule=args.rule)
    return backtest_main(
        settings,
        args.data,
        args.symbols,
        args.date_from,
        args.date_to,
        store=not args.no_store,
        warm_up_days=args.warm_up_days,
    )


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from aegis.features import FEATURE_NAMES
    from aegis.ml.training import TrainingParams, train_from_database
    from aegis.store.embedded import resolve_database_url
    from aegis.store.setup import migrate_for_settings

    migrate_for_settings(settings)
    dsn, started = resolve_database_url(settings)
    try:
        report = train_from_database(dsn, TrainingParams.from_settings(settings, FEATURE_NAMES))
    finally:
        if started is not None:
            started.stop()
    print(
        f"training: {report.status} — {report.reason} (rows {report.rows}, "
        f"model version {report.model_version or '-'})"
    )
    return EXIT_OK if report.status != "failed" else EXIT_FAILED


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from aegis.store.setup import migrate_for_settings

    report = migrate_for_settings(settings)
    applied = ", ".join(f"V{v:04d}" for v in report.applied) or "none"
    print(
        f"schema at version {report.version}; applied: {applied}; "
        f"synced: {len(report.synced)} object(s)"
    )
    return EXIT_OK


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from aegis.kernel.status import status_main

    return status_main(settings, args.json)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": _cmd_run,
    "simulate": _cmd_simulate,
    "backtest": _cmd_backtest,
    "train": _cmd_train,
    "migrate": _cmd_migrate,
    "status": _cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["simulate"]:
        # argparse cannot hand "--help" and friends through REMAINDER; the simulator owns its flags.
        args = argparse.Namespace(command="simulate", sim_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        settings = Settings.load()
    except ConfigError as exc:
        print(f"aegis-kernel: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](settings, args)
    except MigrationError as exc:
        print(f"aegis-kernel {args.command}: schema problem: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, asyncpg.PostgresError) as exc:
        print(
            f"aegis-kernel {args.command}: database unavailable or refused: {exc}", file=sys.stderr
        )
        return EXIT_DATABASE


if __name__ == "__main__":
    sys.exit(main())
