"""What the simulator received over REST, for tests to assert on (never holds secrets)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

SECRET_PARAMS = frozenset({"signature", "apiKey", "api_secret", "secret"})


@dataclass(frozen=True)
class RequestLogEntry:
    """One REST request: when (wall and simulated), who, what, and how it was answered."""

    wall_time: float
    sim_time_ms: int
    ip: str
    method: str
    path: str
    params: dict[str, str]
    status: int
    code: int | None
    used_weight: int


class RequestLog:
    """Append-only list of ``RequestLogEntry`` (bounded; oldest entries dropped first)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: list[RequestLogEntry] = []
        self._max = max_entries

    def append(self, entry: RequestLogEntry) -> None:
        self._entries.append(entry)
        if len(self._entries) > self._max:
            del self._entries[: len(self._entries) - self._max]

    @staticmethod
    def scrub(params: dict[str, str]) -> dict[str, str]:
        """Drop signature and key material from logged parameters."""
        return {k: v for k, v in params.items() if k not in SECRET_PARAMS}

    def entries(
        self, path: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[RequestLogEntry]:
        """Entries, optionally for one path and within a wall-time interval."""
        return [
            e
            for e in self._entries
            if (path is None or e.path == path)
            and (since is None or e.wall_time >= since)
            and (until is None or e.wall_time <= until)
        ]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def as_dicts(self, since: float | None = None) -> list[dict[str, object]]:
        """JSON-able entries (used by the control endpoint)."""
        return [asdict(e) for e in self.entries(since=since)]


def now() -> float:
    """Wall time used for log entries."""
    return time.time()
