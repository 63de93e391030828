"""The demo's simulator child: ``aegis-kernel simulate`` with the 24 h connection cut in wall time.

Binance closes a stream connection after 24 hours; the feed replaces its connections before
that, timing their age on the machine's clock, as it must live. The simulator counts those 24
hours in *simulated* time, so at 20,000x it would cut every connection after 4.3 wall seconds,
long before the feed's replacement is due — the feed would then lose and backfill a hole several
times a minute, something live use never sees. The demo's simulator therefore cuts after 24
hours of wall time (``connection_lifetime_ms`` scaled by the speed factor); everything else is
``aegis-kernel simulate`` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import select
import subprocess
import sys
import time

from aegis.binance.sim import SimulatorProcess
from aegis.binance.sim.process import READY_PREFIX, SimulatorProcessError

DAY_MS = 86_400_000


class DemoSimulator(SimulatorProcess):
    """``SimulatorProcess`` running ``python -m aegis.kernel.demo_sim`` instead."""

    def start(self) -> DemoSimulator:
        argv = [sys.executable, "-m", "aegis.kernel.demo_sim", *self.args, "--port", "0"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=None, text=True, env=os.environ.copy()
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SimulatorProcessError(f"simulator exited with {self.proc.returncode}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    self.info = json.loads(line[len(READY_PREFIX) :])
                    return self
        self.stop()
        raise SimulatorProcessError("simulator did not report READY in time")


def main(argv: list[str] | None = None) -> int:
    from aegis.binance.sim.cli import _serve, build_parser, config_from_args
    from aegis.binance.sim.data import KlineDataError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        config = config_from_args(args)
        lifetime = int(DAY_MS * max(config.speed, 1.0))
        config = dataclasses.replace(config, connection_lifetime_ms=lifetime)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(config))
    except (KlineDataError, ValueError, OSError) as exc:
        print(f"demo simulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
