"""Run a simulator in its own OS process (for multi-process tests and the CLI demo).

``SimulatorProcess(args).start()`` launches ``python -m aegis.binance.sim ...``, waits for
the ``READY {json}`` line with the bound port, and offers the ``/_sim/`` control endpoints
(faults, request log, clock) over HTTP. ``stop()`` sends SIGTERM, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from typing import Any

READY_PREFIX = "READY "


class SimulatorProcessError(RuntimeError):
    """The simulator process did not start or answer."""


class SimulatorProcess:
    """A simulator child process addressed by its URLs."""

    def __init__(self, args: list[str], startup_timeout_s: float = 30.0) -> None:
        self.args = list(args)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> SimulatorProcess:
        argv = [sys.executable, "-m", "aegis.binance.sim", *self.args]
        if "--port" not in self.args:
            argv += ["--port", "0"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=None, text=True, env=os.environ.copy()
        )
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.proc.stdout is not None
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def rest_url(self) -> str:
        return self.info["rest_url"]

    @property
    def ws_url(self) -> str:
        return self.info["ws_url"]

    @property
    def ws_api_url(self) -> str:
        return self.info["ws_api_url"]

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.rest_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def status(self) -> dict[str, Any]:
        return self._call("/_sim/status")

    def set_faults(self, **values: Any) -> dict[str, Any]:
        """Change faults in the child (same names as ``FaultPlan`` plus ``stall_seconds``,
        ``ban_seconds`` and ``reset``)."""
        return self._call("/_sim/faults", values)

    def request_log(self, since: float | None = None) -> list[dict[str, Any]]:
        suffix = f"?since={since}" if since is not None else ""
        return self._call("/_sim/request_log" + suffix)["entries"]

    def pause(self) -> None:
        self._call("/_sim/clock", {"action": "pause"})

    def resume(self) -> None:
        self._call("/_sim/clock", {"action": "resume"})

    def stop(self, grace_s: float = 5.0) -> int | None:
        """Terminate the child (SIGTERM, then SIGKILL) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
