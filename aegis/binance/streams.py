"""Combined-stream kline connections to Binance, sharded, self-healing, never silently stale.

``KlineStreams`` splits the universe's ``<symbol>@kline_<interval>`` streams into shards of at
most ``max_streams_per_connection`` (200 by default, well under Binance's 1024) and runs one
``StreamShard`` task per shard. Each shard keeps one live connection and hands every frame, as
raw bytes with its receive stamp, to ``on_frame`` — or, given ``on_frames``, all the frames of
one socket read to it in one call. The stamp (``time.monotonic_ns``) is taken
when the frame's last bytes were read from the socket (``StampedConnection``), not when the
frame is handed on: frames that arrive together in one read wait in turn for the handler, and
that wait is part of the feed's latency, not hidden before its start.

A shard's connection is replaced when

* it closes or drops (no close frame) → reconnect after an exponential, jittered delay;
* no frame arrived for ``silence_deadline_s`` (a dead TCP path, a stalled server) → drop it,
  reconnect;
* it is older than ``max_connection_age_s`` (Binance cuts at 24 h) or the server announced a
  shutdown → *overlap*: the new connection is opened first and the old one is closed only once
  the new one delivered a frame; both feed ``on_frame`` meanwhile (the sequencer drops the
  duplicates), so the cut loses nothing.

After any connection was *lost* (not replaced with overlap), ``on_reconnect(symbols)`` runs
when the new connection delivers its first frame: the feed then backfills what closed in the
hole. Every connection attempt of the process goes through one ``ConnectLimiter``.

Ping/pong: Binance pings every 20 s and drops a connection whose pong does not echo the ping's
payload. ``websockets`` answers every ping itself, with a pong carrying the same payload, as
soon as the frame is read — this module keeps reading continuously, so that always happens.
The client sends no pings of its own (``ping_interval=None``): they would count against the
5 messages/s limit and liveness is already watched by the silence deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from aegis.backoff import backoff_delays
from aegis.binance.ws_limits import ConnectLimiter, MessagePacer
from aegis.binance.ws_reader import StampedConnection

log = logging.getLogger(__name__)

BINANCE_MAX_STREAMS = 1024
MAX_MESSAGE = 1 << 20

FrameHandler = Callable[[bytes, int], bool]
"""``on_frame(frame, recv_ns)``; returns True when the frame announces a server shutdown."""
FramesHandler = Callable[[bytes, list[int], list[int], int], bool]
"""``on_frames(buf, starts, ends, recv_ns)``: the frames ``buf[starts[i]:ends[i]]`` of one
socket read at once; returns True when one announces a server shutdown."""
ReconnectHandler = Callable[[tuple[str, ...]], None]
"""``on_reconnect(symbols)``: a lost connection of these (upper-case) symbols is back."""


class StreamConfigError(ValueError):
    """Stream settings or names that cannot work against Binance."""


@dataclass(frozen=True)
class StreamSettings:
    """How shards connect and when they replace a connection."""

    max_streams_per_connection: int = 200
    """Streams per connection (Binance allows 1024; 200 keeps each shard's load small)."""
    silence_deadline_s: float = 10.0
    """No frame for this long → the connection is presumed dead and replaced."""
    max_connection_age_s: float = 23.5 * 3600
    """Replace (with overlap) before Binance's 24 h cut, measured by ``age_clock``."""
    replacement_wait_s: float = 10.0
    """How long a replacement may take to deliver its first frame before it is given up."""
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    stable_after_s: float = 60.0
    """A connection that lived this long resets the reconnect backoff."""
    open_timeout_s: float = 10.0
    receive_queue: int = 4096
    """Frames ``websockets`` buffers before it stops reading the socket."""
    control_messages_per_s: float = 3.0
    """Pace of SUBSCRIBE/UNSUBSCRIBE messages per connection (Binance's limit is 5/s)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_streams_per_connection <= BINANCE_MAX_STREAMS:
            raise StreamConfigError(
                f"max_streams_per_connection must be 1..{BINANCE_MAX_STREAMS}, "
                f"got {self.max_streams_per_connection}"
            )
        if self.silence_deadline_s <= 0 or self.max_connection_age_s <= 0:
            raise StreamConfigError("silence_deadline_s and max_connection_age_s must be > 0")


def stream_names(symbols: Iterable[str], interval: str = "1m") -> list[str]:
    """Kline stream names (lower case, as Binance requires) for ``symbols``."""
    names = []
    for symbol in symbols:
        if not symbol or not symbol.isalnum():
            raise StreamConfigError(f"not a symbol: {symbol!r}")
        names.append(f"{symbol.lower()}@kline_{interval}")
    return names


def shard_streams(names: Sequence[str], max_per_shard: int) -> list[list[str]]:
    """Split ``names`` into the fewest shards of at most ``max_per_shard``, sized evenly."""
    if max_per_shard < 1:
        raise StreamConfigError(f"max_per_shard must be >= 1, got {max_per_shard}")
    if not names:
        return []
    count = math.ceil(len(names) / max_per_shard)
    size, extra = divmod(len(names), count)
    shards, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        shards.append(list(names[start:end]))
        start = end
    return shards


class _Connection:
    """One open connection of a shard and what it has seen (``deliver`` is its handler)."""

    def __init__(self, on_frame: FrameHandler, on_frames: FramesHandler | None,
                 on_error: Callable[[], None], opened_at: float):  # fmt: skip
        self.ws: StampedConnection | None = None
        self.opened_at = opened_at
        self.opened_mono = time.monotonic()
        self.last_frame_ns = time.monotonic_ns()
        self.first_frame = asyncio.Event()
        self.got_frame = False
        self.shutdown_notice = False
        self.frames = 0
        self.reader: asyncio.Task | None = None
        self._on_frame = on_frame
        self._on_frames = on_frames
        self._on_error = on_error

    def deliver(self, buf: bytes, starts: list[int], ends: list[int], read_ns: int) -> None:
        self.last_frame_ns = read_ns
        self.frames += len(starts)
        if not self.got_frame:
            self.got_frame = True
            self.first_frame.set()
        # The handler must never raise; a bug there must not kill the stream. A failing batch
        # loses the rest of its read: the sequencer sees the hole at the next bar and fills it.
        if self._on_frames is not None and len(starts) > 1:
            try:
                if self._on_frames(buf, starts, ends, read_ns):
                    self.shutdown_notice = True
            except Exception:
                self._on_error()
            return
        whole = len(buf)
        for start, end in zip(starts, ends, strict=True):
            try:
                if self._on_frame(buf if start == 0 and end == whole else buf[start:end], read_ns):
                    self.shutdown_notice = True
            except Exception:
                self._on_error()

    async def close(self, abort: bool) -> None:
        if self.ws is not None:
            self.ws.detach()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if abort:
            with contextlib.suppress(Exception):
                self.ws.transport.abort()
        else:
            with contextlib.suppress(Exception):
                await self.ws.close()


class StreamShard:
    """One combined-stream connection (with its replacements) for a fixed set of streams."""

    def __init__(
        self,
        base_url: str,
        streams: Sequence[str],
        on_frame: FrameHandler,
        on_reconnect: ReconnectHandler,
        limiter: ConnectLimiter,
        settings: StreamSettings,
        *,
        on_frames: FramesHandler | None = None,
        name: str = "shard",
        age_clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if len(streams) > settings.max_streams_per_connection:
            raise StreamConfigError(
                f"{len(streams)} streams exceed {settings.max_streams_per_connection} per connection"
            )
        self.base_url = base_url.rstrip("/")
        self.streams = list(streams)
        self.name = name
        self._on_frame = on_frame
        self._on_frames = on_frames
        self._on_reconnect = on_reconnect
        self._limiter = limiter
        self._settings = settings
        self._age_clock = age_clock
        self._rng = rng or random.Random()
        self._delays = backoff_delays(settings.backoff_base_s, settings.backoff_cap_s, self._rng)
        self._poll_s = min(settings.silence_deadline_s / 4, 0.5)
        self._pacer = MessagePacer(settings.control_messages_per_s)
        self._current: _Connection | None = None
        self._next_id = 1
        self.connects = 0
        self.connect_failures = 0
        self.losses = 0
        self.silences = 0
        self.replacements = 0
        self.handler_errors = 0
        self.connected = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{self.base_url}/stream?streams={'/'.join(self.streams)}"

    def symbols(self) -> tuple[str, ...]:
        """Upper-case symbols of this shard's streams."""
        return tuple(s.split("@", 1)[0].upper() for s in self.streams)

    # -- the shard's life ----------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a connection alive until cancelled."""
        lost = False
        try:
            while True:
                conn = await self._open_with_backoff()
                self._current = conn
                self.connected.set()
                notify = None
                if lost:
                    notify = asyncio.get_running_loop().create_task(self._notify_reconnect(conn))
                try:
                    why = await self._serve(conn)
                finally:
                    if notify is not None and not notify.done():
                        notify.cancel()  # lost again before its first frame: next one tells
                self.connected.clear()
                self._current = None
                if conn.opened_mono + self._settings.stable_after_s <= time.monotonic():
                    self._reset_backoff()
                lost = True
                self.losses += 1
                log.warning("%s: connection %s; reconnecting", self.name, why)
                await asyncio.sleep(next(self._delays))
        finally:
            if self._current is not None:
                await self._current.close(abort=False)
                self._current = None

    def _reset_backoff(self) -> None:
        s = self._settings
        self._delays = backoff_delays(s.backoff_base_s, s.backoff_cap_s, self._rng)

    async def _notify_reconnect(self, conn: _Connection) -> None:
        await conn.first_frame.wait()
        self._on_reconnect(self.symbols())

    async def _serve(self, conn: _Connection) -> str:
        """Watch ``conn`` (replacing it with overlap when due); return why it was lost."""
        s = self._settings
        deadline_ns = int(s.silence_deadline_s * 1e9)
        while True:
            assert conn.reader is not None
            done, _ = await asyncio.wait({conn.reader}, timeout=self._poll_s)
            if done:
                await conn.close(abort=True)
                return "closed by the server or the network"
            if time.monotonic_ns() - conn.last_frame_ns > deadline_ns:
                self.silences += 1
                await conn.close(abort=True)
                return f"silent for more than {s.silence_deadline_s:g} s"
            due = self._age_clock() - conn.opened_at >= s.max_connection_age_s
            if due or conn.shutdown_notice:
                replacement = await self._replace(conn)
                if replacement is not None:
                    conn = replacement
                    self._current = conn

    async def _replace(self, old: _Connection) -> _Connection | None:
        """Open a new connection, wait for its first frame, then close ``old``."""
        try:
            await self._limiter.acquire()
            new = await self._connect()
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.connect_failures += 1
            log.warning(
                "%s: replacement connection failed (%s); keeping the old one", self.name, exc
            )
            await asyncio.sleep(next(self._delays))
            return None
        try:
            await asyncio.wait_for(new.first_frame.wait(), self._settings.replacement_wait_s)
        except asyncio.CancelledError:
            await new.close(abort=True)  # stopped mid-replacement: leave no socket behind
            raise
        except TimeoutError:
            log.warning("%s: replacement delivered nothing; keeping the old one", self.name)
            await new.close(abort=True)
            await asyncio.sleep(next(self._delays))
            return None
        assert old.reader is not None
        old_died = old.reader.done()
        await old.close(abort=False)
        self.replacements += 1
        log.info(
            "%s: connection replaced with overlap after %.0f s (%d frames)",
            self.name,
            self._age_clock() - old.opened_at,
            old.frames,
        )
        if old_died:
            # The old one was cut before the new one was up: treat it as a loss.
            self._on_reconnect(self.symbols())
        return new

    async def _open_with_backoff(self) -> _Connection:
        while True:
            await self._limiter.acquire()
            try:
                return await self._connect()
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.connect_failures += 1
                delay = next(self._delays)
                log.warning(
                    "%s: connect failed (%s: %s); retry in %.2f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _connect(self) -> _Connection:
        s = self._settings
        conn = _Connection(self._on_frame, self._on_frames, self._count_handler_error,
                           self._age_clock())  # fmt: skip
        try:
            # The handler is in place before the first byte after the handshake is read.
            conn.ws = await websockets.connect(
                self.url,
                ping_interval=None,
                open_timeout=s.open_timeout_s,
                close_timeout=1.0,
                max_queue=s.receive_queue,
                max_size=MAX_MESSAGE,
                compression=None,
                create_connection=functools.partial(
                    StampedConnection, on_messages=conn.deliver, max_message=MAX_MESSAGE
                ),
            )
        except InvalidURI as exc:
            raise StreamConfigError(f"bad stream URL {self.base_url!r}: {exc}") from None
        conn.reader = asyncio.get_running_loop().create_task(conn.ws.wait_closed())
        self.connects += 1
        return conn

    def _count_handler_error(self) -> None:
        self.handler_errors += 1
        if self.handler_errors == 1 or self.handler_errors % 1000 == 0:
            log.exception("%s: frame handler failed (%d times)", self.name, self.handler_errors)

    # -- live subscription changes -------------------------------------------------------------

    async def subscribe(self, names: Sequence[str], per_message: int = 50) -> int:
        """Add streams to the live connection in paced SUBSCRIBE messages; return messages sent.

        The names are kept, so a later reconnect subscribes them through its URL.
        """
        new = [n for n in dict.fromkeys(names) if n not in self.streams]
        if len(self.streams) + len(new) > self._settings.max_streams_per_connection:
            raise StreamConfigError(
                f"{self.name}: subscribing {len(new)} more exceeds the shard size"
            )
        self.streams.extend(new)
        return await self._send_method("SUBSCRIBE", new, per_message)

    async def unsubscribe(self, names: Sequence[str], per_message: int = 50) -> int:
        """Remove streams from the live connection (paced); return messages sent."""
        gone = [n for n in names if n in self.streams]
        self.streams = [n for n in self.streams if n not in gone]
        return await self._send_method("UNSUBSCRIBE", gone, per_message)

    async def _send_method(self, method: str, names: list[str], per_message: int) -> int:
        sent = 0
        for start in range(0, len(names), per_message):
            conn = self._current
            if conn is None:
                break  # the next connection's URL carries the change
            await self._pacer.wait()
            message = {
                "method": method,
                "params": names[start : start + per_message],
                "id": self._next_id,
            }
            self._next_id += 1
            try:
                await conn.ws.send(orjson.dumps(message).decode())
            except ConnectionClosed:
                break
            sent += 1
        return sent


class KlineStreams:
    """Every shard of the universe's kline streams, each in its own task."""

    def __init__(
        self,
        base_url: str,
        symbols: Sequence[str],
        on_frame: FrameHandler,
        on_reconnect: ReconnectHandler,
        *,
        on_frames: FramesHandler | None = None,
        interval: str = "1m",
        settings: StreamSettings | None = None,
        limiter: ConnectLimiter | None = None,
        age_clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.limiter = limiter or ConnectLimiter()
        names = stream_names(symbols, interval)
        rng = rng or random.Random()
        self.shards = []
        parts = shard_streams(names, self.settings.max_streams_per_connection)
        for i, part in enumerate(parts):
            shard = StreamShard(
                base_url, part, on_frame, on_reconnect, self.limiter, self.settings,
                on_frames=on_frames, name=f"stream-shard-{i}", age_clock=age_clock,
                rng=random.Random(rng.random()),
            )  # fmt: skip
            self.shards.append(shard)
        self._tasks: list[asyncio.Task] = []
        self.shard_crashes = 0

    def start(self) -> None:
        """Start one task per shard in the running loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep(shard), name=shard.name) for shard in self.shards
        ]

    async def _keep(self, shard: StreamShard) -> None:
        # A bug in a shard must not silently end its streams: log it and start the shard again.
        while True:
            try:
                await shard.run()
            except Exception:
                self.shard_crashes += 1
                log.exception(
                    "%s crashed (%d crashes); restarting it", shard.name, self.shard_crashes
                )
                shard.connected.clear()
                await asyncio.sleep(self.settings.backoff_cap_s)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until every shard has a live connection; False on timeout."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(s.connected.wait() for s in self.shards)), timeout
            )
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop every shard and close its connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def stats(self) -> dict[str, int]:
        """Connection counters summed over the shards."""
        keys = (
            "connects",
            "connect_failures",
            "losses",
            "silences",
            "replacements",
            "handler_errors",
        )
        return {k: sum(getattr(s, k) for s in self.shards) for k in keys}
