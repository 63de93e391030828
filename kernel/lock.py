"""One kernel per home: an fcntl lock on ``<home>/run/kernel.lock`` that holds the owner's pid.

``flock`` is released by the kernel of the OS when its holder dies, even by SIGKILL, so a lock
file left by a dead kernel is simply taken over; the pid inside only serves the error message and
the "took over from pid N" log line.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class KernelAlreadyRunning(RuntimeError):
    """Another live kernel holds the lock of this home."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another AEGIS kernel ({who}) is already running on this home; lock {path} is held. "
            "Stop it first (SIGTERM) or use another AEGIS_HOME."
        )
        self.path = path
        self.pid = pid


class KernelLock:
    """Hold ``<home>/run/kernel.lock`` for the lifetime of one watchdog."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "run" / "kernel.lock"
        self._fd: int | None = None
        self.previous_pid: int | None = None  # pid of a dead kernel whose lock we took over

    def acquire(self) -> None:
        """Take the lock or raise ``KernelAlreadyRunning``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise KernelAlreadyRunning(self.path, pid) from None
        stale = _read_pid(fd)
        if stale and stale != os.getpid():
            self.previous_pid = stale
            log.warning("kernel lock %s taken over from dead kernel pid %d", self.path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Empty the pid and drop the lock (the file stays: unlinking it would race a new run)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
