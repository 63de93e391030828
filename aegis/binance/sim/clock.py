"""The simulated clock: replay time that drives streams, REST ``time`` and the 24 h cut."""

from __future__ import annotations

import asyncio
import time


class SimClock:
    """Simulated epoch milliseconds, ``speed`` times faster than wall time.

    With ``speed == 0`` the clock is *stepped*: it only moves when the replay advances it
    (``sleep_until``), so the replay runs as fast as its consumers read. The clock can be
    paused (time stands still, the replay waits) and resumed.
    """

    def __init__(self, start_ms: int, speed: float, paused: bool = False) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.speed = speed
        self._base_ms = float(start_ms)
        self._base_wall = time.monotonic()
        self._paused = paused
        self._running = asyncio.Event()
        if not paused:
            self._running.set()

    @property
    def stepped(self) -> bool:
        """True when the clock advances only with the replay (speed 0)."""
        return self.speed == 0

    @property
    def paused(self) -> bool:
        return self._paused

    def now_ms(self) -> int:
        """Return the current simulated time in epoch milliseconds."""
        if self._paused or self.stepped:
            return int(self._base_ms)
        return int(self._base_ms + (time.monotonic() - self._base_wall) * 1000.0 * self.speed)

    def pause(self) -> None:
        """Freeze simulated time (and the replay) until ``resume``."""
        if not self._paused:
            self._base_ms = float(self.now_ms())
            self._paused = True
            self._running.clear()

    def resume(self) -> None:
        """Let simulated time run again from where it stood."""
        if self._paused:
            self._base_wall = time.monotonic()
            self._paused = False
            self._running.set()

    def advance_to(self, sim_ms: int) -> None:
        """Jump forward to ``sim_ms`` (never backwards); meant for stepped clocks and tests."""
        now = self.now_ms()
        if sim_ms > now:
            self._base_ms = float(sim_ms)
            self._base_wall = time.monotonic()

    def wall_seconds(self, sim_ms: float) -> float:
        """Convert a simulated duration to wall seconds (0 for a stepped clock)."""
        if self.stepped:
            return 0.0
        return sim_ms / 1000.0 / self.speed

    async def sleep_until(self, sim_ms: int) -> None:
        """Wait until simulated time reaches ``sim_ms`` (a stepped clock jumps there)."""
        while True:
            await self._running.wait()
            if self.stepped:
                self.advance_to(sim_ms)
                await asyncio.sleep(0)
                return
            remaining = sim_ms - self.now_ms()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining / 1000.0 / self.speed, 0.5))
