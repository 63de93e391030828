"""One server-side WebSocket connection with Binance's connection rules.

Shared by market streams and the WebSocket API: a sender task drains an outgoing queue
(applying stream faults to data frames), sending whatever is queued at once in one socket
write, as a busy exchange's frames arrive together; pings go out every 20 s of simulated time and must
be answered by a pong echoing the payload within 1 min, more than 5 incoming messages in a
second (pings, pongs and requests all count) closes the connection with 1008, and the
connection is cut once it has lived 24 h of simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from aegis.binance.sim.clock import SimClock
from aegis.binance.sim.faults import FaultPlan, FrameAction

LOG = logging.getLogger(__name__)


def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked text frame (RFC 6455 §5.2: a server never masks)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


@dataclass(frozen=True)
class ConnectionRules:
    """Protocol limits: ping timing in wall seconds, lifetime in simulated ms."""

    ping_interval_s: float
    pong_timeout_s: float
    max_incoming_per_s: int
    lifetime_ms: int
    queue_size: int


class WsConnection:
    """A prepared aiohttp WebSocket plus its queue, timers and counters."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        clock: SimClock,
        rules: ConnectionRules,
        faults: FaultPlan | None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.clock = clock
        self.rules = rules
        self.faults = faults
        self.connected_at_ms = clock.now_ms()
        self.queue: asyncio.Queue[tuple[bool, str] | None] = asyncio.Queue(rules.queue_size)
        self.closed = False
        self.close_reason = ""
        self.frames_sent = 0
        self._incoming: deque[float] = deque()
        self._pings: dict[bytes, float] = {}
        self._ping_seq = 0
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._ping_loop()),
        ]

    async def close(self, code: int = WSCloseCode.OK, reason: str = "") -> None:
        """Close with a close frame (idempotent)."""
        if self.closed:
            return
        self._mark_closed(reason or f"closed {code}")
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())

    async def on_peer_close(self) -> None:
        """Answer the client's close frame; abort if the answer cannot get through.

        A client that stopped reading (its buffers full of queued frames) would otherwise
        wait for our close frame until its own timeout, holding the replay in stepped mode.
        """
        self._mark_closed("peer closed")
        try:
            await asyncio.wait_for(self.ws.close(), 1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.transport is not None:
                self.transport.abort()

    def abort(self, reason: str) -> None:
        """Drop the TCP connection without a close frame (a dead network path)."""
        if self.closed:
            return
        self._mark_closed(reason)
        if self.transport is not None:
            self.transport.abort()

    def _mark_closed(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        while not self.queue.empty():  # unblock a replay waiting on a full queue
            self.queue.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def finish(self) -> None:
        """Stop the helper tasks once the receive loop has ended."""
        if not self.closed:
            self._mark_closed("peer closed")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def too_old(self, now_ms: int) -> bool:
        return now_ms - self.connected_at_ms >= self.rules.lifetime_ms

    # -- outgoing ----------------------------------------------------------------------------

    async def put(self, text: str, data: bool, wait: bool) -> bool:
        """Queue a frame; wait for room when ``wait`` (stepped replay), else drop a slow reader."""
        if self.closed:
            return False
        if wait:
            await self.queue.put((data, text))
            return True
        try:
            self.queue.put_nowait((data, text))
        except asyncio.QueueFull:
            LOG.warning("closing slow stream reader: %d frames queued", self.queue.qsize())
            self.abort("slow reader")
            return False
        return True

    def offer(self, text: str) -> bool:
        """Queue a control or user-data frame without waiting (dropped when closed or full)."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait((False, text))
        except asyncio.QueueFull:
            self.abort("slow reader")
            return False
        return True

    async def _send_loop(self) -> None:
        held: str | None = None
        while True:
            item = await self.queue.get()
            batch = [item]
            while not self.queue.empty():  # everything queued meanwhile goes in one write
                batch.append(self.queue.get_nowait())
            if held is None and self._write_clean(batch):
                await self._drained()
                continue
            out: list[str] = []
            for item in batch:
                if item is None or self.closed:
                    self._write(out)
                    return
                data, text = item
                if not data or self.faults is None:
                    out.append(text)
                    continue
                stall = self.faults.stalled_for()
                if stall > 0:
                    self._write(out)
                    out = []
                    await asyncio.sleep(stall)
                action = self.faults.next_frame_action()
                if action is FrameAction.DROP_CONNECTION:
                    self._write(out)
                    self.abort("fault: drop")
                    return
                if action is FrameAction.REORDER and held is None:
                    held = text
                    continue
                if action is FrameAction.MALFORMED_FIRST:
                    out.append(self.faults.malformed_frame())
                out.append(text)
                if action is FrameAction.DUPLICATE:
                    out.append(text)
                if held is not None:
                    out.append(held)
                    held = None
            self._write(out)
            await self._drained()

    def _write_clean(self, batch: list[tuple[bool, str] | None]) -> bool:
        """Write ``batch`` as it is when no fault applies to it (the common case: no check per
        frame); False, writing nothing, when a fault could or the batch ends the connection."""
        if self.closed or None in batch:
            return False
        if self.faults is not None and not self.faults.pass_clean(sum(d for d, _ in batch)):
            return False
        self._write([text for _, text in batch])
        return True

    def _write(self, texts: list[str]) -> None:
        """Send text frames in one socket write.

        One write per batch, not one per frame: a system call per frame took the simulator's
        CPU (which a real exchange does not take from the machine it feeds) and woke the reader
        once per frame.
        """
        if not texts or self.closed:
            return
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            self._mark_closed("send failed")
            return
        transport.write(b"".join(map(text_frame, texts)))
        self.frames_sent += len(texts)

    async def _drained(self) -> None:
        """Wait while the socket's write buffer is over its high-water mark (a slow reader)."""
        transport = self.transport
        if transport is None:
            return
        protocol = transport.get_protocol()
        while getattr(protocol, "writing_paused", False) and not transport.is_closing():
            await asyncio.sleep(0.001)

    async def _ping_loop(self) -> None:
        interval, timeout = self.rules.ping_interval_s, self.rules.pong_timeout_s
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self._pings and now - min(self._pings.values()) > timeout:
                LOG.info("closing stream connection: no pong within %.1f s", timeout)
                await self.close(WSCloseCode.POLICY_VIOLATION, "Pong timeout")
                return
            self._ping_seq += 1  # unique even while the simulated clock stands still
            payload = f"{self.clock.now_ms()}-{self._ping_seq}".encode()
            self._pings[payload] = now
            with contextlib.suppress(Exception):
                await self.ws.ping(payload)

    # -- incoming ----------------------------------------------------------------------------

    async def over_rate(self) -> bool:
        """Count one incoming message; close with 1008 when over the per-second limit."""
        now = time.monotonic()
        self._incoming.append(now)
        while self._incoming and self._incoming[0] <= now - 1.0:
            self._incoming.popleft()
        if len(self._incoming) > self.rules.max_incoming_per_s:
            LOG.info("closing connection: more than %d messages/s", self.rules.max_incoming_per_s)
            await self.close(WSCloseCode.POLICY_VIOLATION, "Too many requests")
            return True
        return False

    async def on_control_frame(self, msg_type: WSMsgType, payload: bytes | bytearray) -> None:
        """Answer a client ping; accept a pong only when it echoes an outstanding ping."""
        payload = bytes(payload)
        if msg_type == WSMsgType.PING:
            with contextlib.suppress(Exception):
                await self.ws.pong(payload)
        elif msg_type == WSMsgType.PONG and payload in self._pings:
            sent = self._pings.pop(payload)
            for other, at in list(self._pings.items()):  # an answer covers older pings too
                if at <= sent:
                    del self._pings[other]
