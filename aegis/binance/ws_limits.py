"""Binance's WebSocket rate rules, kept by the client: connects per IP, messages per connection.

* ``ConnectLimiter``: at most 300 connection attempts per 5 minutes per IP (Binance's limit);
  ``acquire`` waits for a free slot of the sliding window rather than ever exceeding it.
* ``MessagePacer``: Binance disconnects a connection that receives more than 5 messages a
  second (SUBSCRIBE/UNSUBSCRIBE, pings and pongs all count) and bans repeat offenders. The pacer
  spaces this client's own messages so that, with the automatic pong answers on top, the
  connection stays well under the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

MAX_CONNECTS = 300
CONNECT_WINDOW_S = 300.0
BINANCE_MESSAGES_PER_S = 5


class ConnectLimiter:
    """Sliding-window limit of connection attempts (shared by every shard of a process)."""

    def __init__(
        self,
        max_connects: int = MAX_CONNECTS,
        window_s: float = CONNECT_WINDOW_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_connects < 1 or window_s <= 0:
            raise ValueError(
                f"need max_connects >= 1 and window_s > 0, got {max_connects}, {window_s}"
            )
        self.max_connects = max_connects
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._attempts: deque[float] = deque()
        self.waited_s = 0.0

    def in_window(self) -> int:
        """Attempts made within the last ``window_s``."""
        self._expire(self._clock())
        return len(self._attempts)

    def _expire(self, now: float) -> None:
        while self._attempts and self._attempts[0] <= now - self.window_s:
            self._attempts.popleft()

    async def acquire(self) -> None:
        """Wait until one more attempt fits in the window, then count it."""
        while True:
            now = self._clock()
            self._expire(now)
            if len(self._attempts) < self.max_connects:
                self._attempts.append(now)
                return
            # At least 1 ms: a float remainder below the clock's resolution would spin forever.
            wait = max(self._attempts[0] + self.window_s - now, 1e-3)
            self.waited_s += wait
            await self._sleep(wait)


class MessagePacer:
    """Space outgoing messages of one connection at most ``per_second`` apart."""

    def __init__(
        self,
        per_second: float = 3.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # Pongs count too: leave room for them under Binance's 5 messages per second.
        if not 0 < per_second < BINANCE_MESSAGES_PER_S:
            raise ValueError(
                f"per_second must be in (0, {BINANCE_MESSAGES_PER_S}), got {per_second}"
            )
        self._gap = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the next message may go out (callers are served in order)."""
        async with self._lock:
            now = self._clock()
            if now < self._next:
                await self._sleep(self._next - now)
                now = self._next
            self._next = now + self._gap
