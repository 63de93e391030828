"""A real executor process for the crash tests: ``python tests/executor_worker.py '<json>'``.

Runs ``ExecutorProcess`` under ``processes.runtime`` exactly as the kernel would (its own event
loop, its own pool, rings attached by name), with the bundled BTC/ETH directory instead of a
REST universe load, one record per ring batch, and an optional crash: SIGKILL to itself at the
checkpoint ``crash_at`` once the service counter ``crash_when`` has reached ``crash_min``
(the ``ExecutorService`` checkpoints, and in live mode ``LiveExchange``'s "intent_written" and
"order_answered").
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor_support import directory

from aegis.config import Settings
from aegis.kernel.topology import ProcessConfig, RingBinding
from aegis.processes.executor import ExecutorProcess
from aegis.processes.runtime import run_process
from aegis.records import BAR_DTYPE, INTENT_DTYPE, REPORT_DTYPE

DTYPES = {"market": BAR_DTYPE, "intents": INTENT_DTYPE, "reports": REPORT_DTYPE}


def main() -> int:
    args = json.loads(sys.argv[1])
    settings = Settings().replace(**args["settings"])
    rings = tuple(RingBinding(name, shm, DTYPES[name], index) for name, shm, index in args["rings"])
    config = ProcessConfig(settings, "executor", 0, "", 0, rings)
    process: ExecutorProcess

    def checkpoint(name: str) -> None:
        if name != args.get("crash_at"):
            return
        if process.service.counters[args["crash_when"]] >= args["crash_min"]:
            os.kill(os.getpid(), signal.SIGKILL)

    process = ExecutorProcess(directory=directory(), checkpoint=checkpoint, max_batch=1)
    return run_process(process, config)


if __name__ == "__main__":
    sys.exit(main())
