"""Sleep in the event loop until a ring has records: the producer's wake-up, not a poll timer.

A process whose loop is asyncio cannot sleep in ``Consumer.wait_for`` (that blocks the loop):
``RingWaiter`` registers each consumer's wake descriptor (``BlockingWait``) with the loop once,
raises the consumers' wake flags and awaits the first wake-up or the timeout. Idle processes
then cost no CPU, and a record published while they sleep wakes them within tens of µs instead
of a poll period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


class RingWaiter:
    """Waits on several ring consumers at once (create and use inside the running loop)."""

    def __init__(self, consumers: Iterable[Any]) -> None:
        self._consumers = tuple(consumers)
        self._loop = asyncio.get_running_loop()
        self._woken: asyncio.Future | None = None
        self._fds = [c.wake_fileno() for c in self._consumers]
        for consumer, fd in zip(self._consumers, self._fds, strict=True):
            self._loop.add_reader(fd, self._on_wake, consumer)

    def _on_wake(self, consumer: Any) -> None:
        consumer.disarm()  # drains the descriptor: a level-triggered reader must not refire
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def wait(
        self,
        timeout_s: float,
        consumers: Iterable[Any] | None = None,
        also: Iterable[asyncio.Future | None] = (),
    ) -> bool:
        """Return once a consumer has records to read (True) or after ``timeout_s`` (False).

        ``consumers``: only these (default: all); ``also``: return as well when one of these
        is done (None entries are ignored).
        """
        watched = self._consumers if consumers is None else tuple(consumers)
        ready = False
        for consumer in watched:
            ready = consumer.arm() or ready
        if not ready:
            self._woken = woken = self._loop.create_future()
            waits = {woken, *(f for f in also if f is not None)}
            try:
                done, _ = await asyncio.wait(waits, timeout=timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                ready = woken in done
            finally:
                self._woken = None
                woken.cancel()
        else:
            # A caller that cannot take what is ready yet must not starve the loop.
            await asyncio.sleep(0)
        for consumer in watched:
            consumer.disarm()
        return ready

    def close(self) -> None:
        """Unregister the descriptors (before the consumers close)."""
        for fd in self._fds:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(fd)
        self._fds = []
