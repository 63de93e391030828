"""The production executor with one measuring hook, for ``bench_e2e``.

``MeasuredExecutor`` is ``aegis.processes.executor.ExecutorProcess`` unchanged except that its
service's ``decide_intents`` is wrapped: each batch of intents the executor takes from the ring
is stamped with ``time.monotonic_ns()`` at once, before it decides anything. Per intent it keeps
the bar's ``recv_ns`` (the feed's WebSocket receive time, copied into the intent by the brain),
the brain's ``publish_ns`` and that receive stamp — all CLOCK_MONOTONIC, shared by every
process — and saves them to ``<home>/e2e_intents.npy`` every 10 s and at stop (the save runs
in the loop it measures: rarely, so it seldom lands in a burst).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aegis.processes.executor import ExecutorProcess
from aegis.processes.runtime import ProcessContext, run_process

STAMP_DTYPE = np.dtype([("recv_ns", np.int64), ("publish_ns", np.int64), ("exec_ns", np.int64)])
SAVE_EVERY_S = 10.0


class MeasuredExecutor(ExecutorProcess):
    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[np.ndarray] = []
        self._path: Path | None = None
        self._next_save = 0.0

    async def open(self, ctx: ProcessContext) -> None:
        await super().open(ctx)
        self._path = Path(ctx.settings.home) / "e2e_intents.npy"
        decide = self.service.decide_intents

        async def stamped(records: np.ndarray):
            stamps = np.empty(len(records), STAMP_DTYPE)
            stamps["exec_ns"] = time.monotonic_ns()
            stamps["recv_ns"] = records["recv_ns"]
            stamps["publish_ns"] = records["publish_ns"]
            self.stamps.append(stamps)
            step = await decide(records)
            now = time.monotonic()
            if now >= self._next_save:
                self._next_save = now + SAVE_EVERY_S
                self.save()
            return step

        self.service.decide_intents = stamped

    def save(self) -> None:
        if self._path is None:
            return
        data = np.concatenate(self.stamps) if self.stamps else np.zeros(0, STAMP_DTYPE)
        tmp = self._path.with_suffix(".tmp.npy")
        np.save(tmp, data)
        tmp.replace(self._path)

    async def close(self, ctx: ProcessContext) -> None:
        self.save()
        await super().close(ctx)


def main(config) -> int:
    return run_process(MeasuredExecutor(), config)
