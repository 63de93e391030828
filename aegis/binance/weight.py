"""One REST weight budget for every process of the kernel, kept in a small shared file.

Binance counts request weight per IP, so the feed and the executor (and any tool) must draw on
one budget. It lives in ``<home>/run/weight.bin`` (mmap'd, guarded by ``flock``): any process
opens it by path, no server needed. The file holds the current window's used weight, the
back-off deadline of a 429 and the end of a 418 ban.

Policy:
* the kernel may use ``share`` of Binance's limit (default 50% of 6000/min), leaving room for
  the user's other tools on the same IP;
* ``X-MBX-USED-WEIGHT-1M`` is trusted: the count becomes max(local reservations, header), so
  weight used by anyone else on the IP is seen, and in-flight reservations are never forgotten;
* 429 → nobody sends before ``Retry-After``; 418 → nobody sends before the ban ends.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

_MAGIC = 0x41454757  # "AEGW"
_VERSION = 1
# magic u32, version u32, window index i64, used i64, backoff_until_ms i64, banned_until_ms i64
_LAYOUT = struct.Struct("<IIqqqq")
_SIZE = 64

DEFAULT_LIMIT = 6000
DEFAULT_SHARE = 0.5
WINDOW_S = 60.0


class WeightBudgetError(RuntimeError):
    """The shared budget file is unusable (wrong format) or a request can never fit."""


@dataclass(frozen=True, slots=True)
class WeightState:
    """A snapshot of the shared budget."""

    window: int
    used: int
    cap: int
    backoff_until: float  # epoch seconds; 0 = none
    banned_until: float  # epoch seconds; 0 = none


class WeightBudget:
    """Shared request-weight budget; every REST request of the kernel goes through it."""

    def __init__(
        self,
        path: Path | str,
        *,
        limit: int = DEFAULT_LIMIT,
        share: float = DEFAULT_SHARE,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating if needed) the budget file at ``path``.

        ``limit`` is Binance's REQUEST_WEIGHT per window (read it from exchangeInfo
        ``rateLimits``), ``share`` the fraction the kernel may use, ``clock`` epoch seconds
        (inject the server-time-corrected clock so windows match Binance's minutes).
        """
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.cap = int(limit * share)
        if self.cap < 1:
            raise ValueError(f"limit {limit} x share {share} leaves no weight")
        self.path = Path(path)
        self._window_s = window_s
        self._clock = clock
        self._thread_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < _SIZE:
                    os.ftruncate(self._fd, _SIZE)
                self._map = mmap.mmap(self._fd, _SIZE)
                magic, version, *_ = _LAYOUT.unpack_from(self._map)
                if magic == 0:
                    _LAYOUT.pack_into(self._map, 0, _MAGIC, _VERSION, 0, 0, 0, 0)
                elif (magic, version) != (_MAGIC, _VERSION):
                    raise WeightBudgetError(
                        f"{self.path} is not a weight budget file (v{_VERSION})"
                    )
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def for_home(cls, home: Path | str, **kwargs) -> WeightBudget:
        """The kernel's budget under ``<home>/run/weight.bin``."""
        return cls(Path(home) / "run" / "weight.bin", **kwargs)

    def close(self) -> None:
        """Release the mapping and the file descriptor."""
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> WeightBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the locked read-modify-write ---------------------------------------------------------

    def _update(
        self, change: Callable[[float, int, int, int, int], tuple[int, int, int, int, float]]
    ) -> float:
        """Run ``change(now, window, used, backoff_ms, banned_ms)`` under the lock; return its wait."""
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = self._clock()
                _, _, window, used, backoff_ms, banned_ms = _LAYOUT.unpack_from(self._map)
                current = int(now // self._window_s)
                if window != current:
                    window, used = current, 0
                window, used, backoff_ms, banned_ms, wait = change(
                    now, window, used, backoff_ms, banned_ms
                )
                _LAYOUT.pack_into(
                    self._map, 0, _MAGIC, _VERSION, window, used, backoff_ms, banned_ms
                )
                return wait
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def try_acquire(self, weight: int) -> float:
        """Reserve ``weight`` now and return 0.0, or return the seconds to wait before retrying."""
        if weight > self.cap:
            raise WeightBudgetError(f"weight {weight} exceeds the kernel's cap {self.cap}")

        def change(now, window, used, backoff_ms, banned_ms):
            blocked_ms = max(backoff_ms, banned_ms)
            if now * 1000 < blocked_ms:
                return window, used, backoff_ms, banned_ms, blocked_ms / 1000 - now
            if used + weight <= self.cap:
                return window, used + weight, backoff_ms, banned_ms, 0.0
            return (
                window,
                used,
                backoff_ms,
                banned_ms,
                max((window + 1) * self._window_s - now, 1e-3),
            )

        return self._update(change)

    async def acquire(
        self, weight: int, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Wait until ``weight`` fits in the window (and no back-off or ban holds), then reserve it."""
        while (wait := self.try_acquire(weight)) > 0:
            # Re-check at least every second: another process may lift or extend a hold.
            await sleep(min(wait, 1.0))

    def acquire_blocking(self, weight: int) -> None:
        """Thread-blocking ``acquire`` for code outside an event loop."""
        while (wait := self.try_acquire(weight)) > 0:
            time.sleep(min(wait, 1.0))

    def observe_used_weight(self, used_weight: int) -> None:
        """Record Binance's ``X-MBX-USED-WEIGHT-1M`` for the current window (never lowers the count)."""

        def change(now, window, used, backoff_ms, banned_ms):
            return window, max(used, int(used_weight)), backoff_ms, banned_ms, 0.0

        self._update(change)

    def back_off(self, retry_after_s: float) -> None:
        """A 429: no process sends before ``retry_after_s`` from now."""

        def change(now, window, used, backoff_ms, banned_ms):
            until = _ceil_ms(now + retry_after_s)
            return window, used, max(backoff_ms, until), banned_ms, 0.0

        self._update(change)

    def ban(self, until: float) -> None:
        """A 418: no process sends before ``until`` (epoch seconds)."""

        def change(now, window, used, backoff_ms, banned_ms):
            return window, used, backoff_ms, max(banned_ms, _ceil_ms(until)), 0.0

        self._update(change)

    def state(self) -> WeightState:
        """Return a snapshot (the window rolls over if it has ended)."""
        snapshot: list[WeightState] = []

        def change(now, window, used, backoff_ms, banned_ms):
            snapshot.append(
                WeightState(window, used, self.cap, backoff_ms / 1000, banned_ms / 1000)
            )
            return window, used, backoff_ms, banned_ms, 0.0

        self._update(change)
        return snapshot[0]


def request_weight_limit(exchange_info: dict, default: int = DEFAULT_LIMIT) -> int:
    """Binance's REQUEST_WEIGHT per minute from exchangeInfo ``rateLimits`` (``default`` if absent)."""
    for limit in exchange_info.get("rateLimits", ()):
        if (
            limit.get("rateLimitType") == "REQUEST_WEIGHT"
            and limit.get("interval") == "MINUTE"
            and limit.get("intervalNum") == 1
        ):
            return int(limit["limit"])
    return default


def _ceil_ms(seconds: float) -> int:
    # Rounded up: a hold stored as whole milliseconds must never end before the time it was given.
    return math.ceil(seconds * 1000)
