"""The production executor with one measuring hook, for ``bench_e2e``.

``MeasuredExecutor`` is ``aegis.processes.executor.ExecutorProcess`` unchanged except that its
service's ``decide_intents`` is wrapped: each batch of intents the executor takes from the ring
is stamped with ``time.monotonic_ns()`` at once, before it decides anything. Per intent it keeps
the bar's ``recv_ns`` (the feed's WebSocket receive time, copied into the intent by the brain),
the brain's ``publish_ns`` and that receive stamp — all CLOCK_MONOTONIC, shared by every
process — and appends them to ``<home>/e2e_intents.bin`` (``STAMP_DTYPE`` records; read with
``read_stamps``) after the batch is decided: one small unbuffered write per batch, so the
measuring never holds up the loop it measures and a killed executor loses nothing written.
(Saving the whole array every few seconds did: intents come in bursts, so the save always fell
on one and delayed the rest of it by milliseconds.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aegis.processes.executor import ExecutorProcess
from aegis.processes.runtime import ProcessContext, run_process

STAMP_DTYPE = np.dtype([("recv_ns", np.int64), ("publish_ns", np.int64), ("exec_ns", np.int64)])
STAMPS_FILE = "e2e_intents.bin"


def read_stamps(home: Path) -> np.ndarray:
    """Every stamp the measuring executor of kernel home ``home`` wrote (maybe none)."""
    path = Path(home) / STAMPS_FILE
    if not path.exists():
        return np.zeros(0, STAMP_DTYPE)
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) - len(data) % STAMP_DTYPE.itemsize], STAMP_DTYPE)


class MeasuredExecutor(ExecutorProcess):
    def __init__(self) -> None:
        super().__init__()
        self._out = None

    async def open(self, ctx: ProcessContext) -> None:
        await super().open(ctx)
        self._out = open(Path(ctx.settings.home) / STAMPS_FILE, "ab", buffering=0)  # noqa: SIM115
        decide = self.service.decide_intents

        async def stamped(records: np.ndarray):
            stamps = np.empty(len(records), STAMP_DTYPE)
            stamps["exec_ns"] = time.monotonic_ns()
            stamps["recv_ns"] = records["recv_ns"]
            stamps["publish_ns"] = records["publish_ns"]
            step = await decide(records)
            self._out.write(stamps.tobytes())
            return step

        self.service.decide_intents = stamped

    async def close(self, ctx: ProcessContext) -> None:
        if self._out is not None:
            self._out.close()
        await super().close(ctx)


def main(config) -> int:
    return run_process(MeasuredExecutor(), config)
