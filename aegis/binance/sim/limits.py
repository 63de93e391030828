"""Per-IP request weight (429 then 418 ban) and per-account order counts, in wall time.

Like Binance, the weight window is fixed (it resets at window boundaries), each request's
weight counts even when it is refused, and a client that keeps sending after 429s gets its IP
banned with 418, the ban doubling each time (2 min up to 3 days at the default settings).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_BAN_S = 3 * 86_400.0


@dataclass(frozen=True)
class Admission:
    """Outcome of one request: ``status`` 200 (go on), 429 or 418, and the weight used."""

    status: int
    used_weight: int
    retry_after_s: int = 0
    banned_until_ms: int = 0


@dataclass
class _IpState:
    window_start: float = 0.0
    used: int = 0
    refused: int = 0
    ban_until: float = 0.0
    bans: int = 0


class WeightLimiter:
    """REQUEST_WEIGHT accounting per source IP."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        ban_after_429s: int,
        ban_seconds: float,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.ban_after_429s = ban_after_429s
        self.ban_seconds = ban_seconds
        self._now = now
        self._ips: dict[str, _IpState] = {}

    def used(self, ip: str) -> int:
        """Weight used by ``ip`` in the current window."""
        st = self._ips.get(ip)
        if st is None:
            return 0
        self._roll(st, self._now())
        return st.used

    def _roll(self, st: _IpState, now: float) -> None:
        if now >= st.window_start + self.window_s:
            st.window_start = math.floor(now / self.window_s) * self.window_s
            st.used = 0
            st.refused = 0

    def ban(self, ip: str, seconds: float) -> None:
        """Ban ``ip`` for ``seconds`` (fault injection and escalation)."""
        st = self._ips.setdefault(ip, _IpState())
        st.ban_until = max(st.ban_until, self._now() + seconds)

    def admit(self, ip: str, weight: int) -> Admission:
        """Account one request of ``weight`` from ``ip`` and say whether it may proceed."""
        now = self._now()
        st = self._ips.setdefault(ip, _IpState())
        if st.ban_until > now:
            return self._banned(st, now)
        self._roll(st, now)
        st.used += weight
        if st.used <= self.limit:
            return Admission(200, st.used)
        st.refused += 1
        if st.refused > self.ban_after_429s:
            st.ban_until = now + min(self.ban_seconds * 2**st.bans, MAX_BAN_S)
            st.bans += 1
            return self._banned(st, now)
        retry = max(1, math.ceil(st.window_start + self.window_s - now))
        return Admission(429, st.used, retry_after_s=retry)

    def _banned(self, st: _IpState, now: float) -> Admission:
        return Admission(
            418,
            st.used,
            retry_after_s=max(1, math.ceil(st.ban_until - now)),
            banned_until_ms=int(st.ban_until * 1000),
        )


class OrderCounter:
    """New orders per API key over the last 10 s and the last day (ORDERS rate limits)."""

    def __init__(self, limit_10s: int, limit_1d: int, now: Callable[[], float] = time.time) -> None:
        self.limit_10s = limit_10s
        self.limit_1d = limit_1d
        self._now = now
        self._times: dict[str, deque[float]] = {}

    def counts(self, api_key: str) -> tuple[int, int]:
        """(orders in the last 10 s, orders in the last day) for ``api_key``."""
        now = self._now()
        times = self._times.setdefault(api_key, deque())
        while times and times[0] <= now - 86_400.0:
            times.popleft()
        recent = sum(1 for t in reversed(times) if t > now - 10.0)
        return recent, len(times)

    def record(self, api_key: str) -> tuple[int, int]:
        """Count one new order and return the updated counts."""
        self._times.setdefault(api_key, deque()).append(self._now())
        return self.counts(api_key)

    def exceeded(self, api_key: str) -> str | None:
        """``"10 SECOND"`` or ``"1 DAY"`` if one more order would break a limit, else None."""
        c10, c1d = self.counts(api_key)
        if c10 >= self.limit_10s:
            return "10 SECOND"
        if c1d >= self.limit_1d:
            return "1 DAY"
        return None
