"""Fault injection: the one mutable control surface of a running simulator.

Tests flip these fields (directly, or over ``POST /_sim/faults`` for a simulator in another
process) while clients are connected. Market-stream faults count data frames across all
stream connections: every ``drop_every_n_frames``-th frame is not delivered and its connection
is aborted (no close frame, like a dead TCP path); a malformed frame is sent *in addition* to
the real ones; a duplicated frame is sent twice; a reordered frame is held back and sent after
the next one. Counters record what was injected so tests can assert on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from enum import Enum


class FrameAction(Enum):
    """What the stream sender does with one outgoing data frame."""

    SEND = "send"
    DROP_CONNECTION = "drop"
    MALFORMED_FIRST = "malformed"
    DUPLICATE = "duplicate"
    REORDER = "reorder"


MALFORMED_FRAMES = (
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":',
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":0,"T":59999,'
    '"s":"BTCUSDT","i":"1m","f":1,"L":1,"o":"NaN","c":"1","h":"1","l":"1","v":"1","n":1,'
    '"x":true,"q":"1","V":"1","Q":"1","B":"0"}}}',
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":0,"T":59999,'
    '"s":"BTCUSDT","i":"1m","f":1,"L":1,"o":"10","c":"10","h":"9","l":"11","v":"1","n":1,'
    '"x":true,"q":"1","V":"1","Q":"1","B":"0"}}}',
    "\x00not json\xff",
)
"""Truncated JSON, a NaN price, high below low, garbage bytes: rotated in this order."""


@dataclass
class FaultPlan:
    """Faults to inject; all off by default. Safe to change at any time from the loop."""

    drop_every_n_frames: int = 0
    malformed_every_n_frames: int = 0
    duplicate_every_n_frames: int = 0
    reorder_every_n_frames: int = 0
    clock_skew_ms: int = 0
    """Added to the server time of REST/WS-API answers and to the timestamp check."""
    rest_429_remaining: int = 0
    """The next N REST requests are answered 429 (a storm, independent of real weight)."""
    rest_429_retry_after_s: int = 1
    order_5xx_remaining: int = 0
    """The next N new orders are placed for real, then answered with ``order_5xx_status``."""
    order_5xx_status: int = 503
    order_response_delay_s: float = 0.0
    """New orders are placed at once but answered this many seconds later (a window in which
    a client can be killed after sending, before the acknowledgement)."""
    stall_until: float = 0.0
    """Wall-clock (monotonic) time until which stream connections send nothing."""
    ban_until: float = 0.0
    """Wall-clock (monotonic) time until which every IP is banned (418)."""
    frames_seen: int = field(default=0, init=False)
    injected: dict[str, int] = field(default_factory=dict, init=False)

    def stall(self, seconds: float) -> None:
        """Stop all stream sending for ``seconds`` of wall time (frames are held, not lost)."""
        self.stall_until = time.monotonic() + seconds
        self._count("stall")

    def ban(self, seconds: float) -> None:
        """Answer every REST request with 418 for ``seconds`` of wall time."""
        self.ban_until = time.monotonic() + seconds
        self._count("ban")

    def storm_429(self, count: int, retry_after_s: int = 1) -> None:
        """Answer the next ``count`` REST requests with 429 and ``Retry-After``."""
        self.rest_429_remaining = count
        self.rest_429_retry_after_s = retry_after_s

    def fail_orders_after_placing(self, count: int, status: int = 503) -> None:
        """Place the next ``count`` new orders but answer them with HTTP ``status``."""
        self.order_5xx_remaining = count
        self.order_5xx_status = status

    def reset(self) -> None:
        """Switch every fault off (counters are kept)."""
        for f in fields(self):
            if f.init:
                setattr(self, f.name, f.default)

    def update(self, **values: object) -> None:
        """Set fields by name; unknown names are an error (used by the control endpoint)."""
        names = {f.name for f in fields(self) if f.init}
        unknown = set(values) - names - {"stall_seconds", "ban_seconds"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        for key, value in values.items():
            if key == "stall_seconds":
                self.stall(float(value))
            elif key == "ban_seconds":
                self.ban(float(value))
            else:
                setattr(self, key, type(getattr(self, key))(value))

    def pass_clean(self, count: int) -> bool:
        """Let ``count`` data frames through untouched when no frame fault or stall is on (True;
        they count as seen); False: decide each with ``next_frame_action``."""
        if (self.drop_every_n_frames > 0 or self.malformed_every_n_frames > 0
                or self.duplicate_every_n_frames > 0 or self.reorder_every_n_frames > 0
                or self.stall_until > time.monotonic()):  # fmt: skip
            return False
        self.frames_seen += count
        return True

    def next_frame_action(self) -> FrameAction:
        """Decide the fate of the next outgoing stream data frame."""
        self.frames_seen += 1
        n = self.frames_seen
        for every, action in (
            (self.drop_every_n_frames, FrameAction.DROP_CONNECTION),
            (self.malformed_every_n_frames, FrameAction.MALFORMED_FIRST),
            (self.duplicate_every_n_frames, FrameAction.DUPLICATE),
            (self.reorder_every_n_frames, FrameAction.REORDER),
        ):
            if every > 0 and n % every == 0:
                self._count(action.value)
                return action
        return FrameAction.SEND

    def malformed_frame(self) -> str:
        """The next malformed frame of the rotation."""
        return MALFORMED_FRAMES[(self.injected.get("malformed", 1) - 1) % len(MALFORMED_FRAMES)]

    def take_rest_429(self) -> bool:
        """Consume one storm 429 if any remain."""
        if self.rest_429_remaining > 0:
            self.rest_429_remaining -= 1
            self._count("rest_429")
            return True
        return False

    def take_order_5xx(self) -> bool:
        """Consume one post-placement 5xx if any remain."""
        if self.order_5xx_remaining > 0:
            self.order_5xx_remaining -= 1
            self._count("order_5xx")
            return True
        return False

    def stalled_for(self) -> float:
        """Seconds of stall left (0 when not stalled)."""
        return max(0.0, self.stall_until - time.monotonic())

    def banned_for(self) -> float:
        """Seconds of forced ban left (0 when none)."""
        return max(0.0, self.ban_until - time.monotonic())

    def _count(self, name: str) -> None:
        self.injected[name] = self.injected.get(name, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """JSON-able view for the control endpoint."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["stall_seconds_left"] = self.stalled_for()
        out["ban_seconds_left"] = self.banned_for()
        out["frames_seen"] = self.frames_seen
        out["injected"] = dict(self.injected)
        return out
