"""Signals as a queue: handlers only enqueue, the watchdog's loop does the work.

A handler that logs or acts can interrupt the loop at any line (and deadlock on the logging
lock); so the handler puts the signal number in a ``SimpleQueue`` (reentrant-safe) and
nothing else. ``signal.set_wakeup_fd`` writes a byte to a pipe as well, which ends the loop's
sleep at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
from collections.abc import Iterable, Iterator
from multiprocessing.connection import wait as wait_for_fds

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class SignalQueue:
    """Install enqueue-only handlers; sleep until a signal or a watched fd; drain signals."""

    def __init__(self, signals: Iterable[int] = HANDLED_SIGNALS) -> None:
        self._signals = tuple(signals)
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._previous: dict[int, object] = {}
        self._wake_r, self._wake_w = -1, -1

    def install(self) -> None:
        """Take over the signals (main thread only)."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._enqueue)

    def restore(self) -> None:
        """Give the signals back to their previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._wake_w >= 0:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _enqueue(self, signum: int, _frame: object) -> None:
        self._queue.put_nowait(signum)  # nothing else: no logging, no work in a handler

    def sleep(self, fds: Iterable[int], timeout: float) -> None:
        """Return when a signal arrives, one of ``fds`` is ready, or ``timeout`` s passed."""
        watched = [self._wake_r, *fds]
        if self._wake_r in wait_for_fds(watched, timeout=timeout):
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass

    def drain(self) -> Iterator[signal.Signals]:
        """Yield the signals received since the last drain, in order."""
        while True:
            try:
                yield signal.Signals(self._queue.get_nowait())
            except queue.Empty:
                return
