"""A ``websockets`` client connection that hands each data message on from the socket read.

``StampedConnection`` calls ``on_messages(buf, starts, ends, read_ns)`` inside
``data_received`` with the complete text or binary messages ``buf[starts[i]:ends[i]]`` of one
socket read (in groups: ``MAX_GROUP`` first, each next one twice as large up to
``LATER_GROUP_MAX``), and the time the chunk holding their last
bytes was read: no per-message future, queue or task switch sits between the socket and the
feed, and a handler takes a close burst in a few calls.

After the handshake it splits the byte stream into frames itself. A common frame (final,
unmasked, text or binary, no extension bits, within the size limit, outside a fragmented
message) is handed on straight from the chunk; Binance sends nothing else but pings. Every
other frame — control frames, fragments, anything malformed — goes to ``websockets`` whole,
so it answers pings with echoed pongs, runs the closing handshake and fails a connection on a
protocol error exactly as it would alone. Only whole frames are passed to it, so its parser is
always at a frame boundary when the next frame is split here. Why: ``websockets``' generic frame
parser cost ~5 µs a frame, as much as the rest of the feed's path together, and a minute's close
brings every symbol's frame in one burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import State

MessagesHandler = Callable[[bytes, list[int], list[int], int], None]

_COMMON = frozenset((0x81, 0x82))  # FIN set, no extension bits, text or binary
_MASKED = 0x80
_HEADERS_END = b"\r\n\r\n"
MAX_GROUP = 16
"""Messages handed on in the first call of a read: the first bars of a large read reach the
ring while the rest are parsed. Larger groups cost less per message but make the first bars
wait: 64 missed the feed's 200 µs target at p99 (a close burst of 300: 0.55 ms against 0.75 ms
in groups of 16)."""
LATER_GROUP_MAX = 32
"""Each later group of the same read is twice the one before, up to this. By then the brain
is busy with the first bars, so what matters is how soon the whole read is in the ring. In a
one-off end-to-end session with temporary stamps (250 closing bars a burst), groups of 16 put a
burst's last bar in the ring 2.06 ms after its first read (p50), groups doubling up to 128
1.45 ms; but 128 put the feed's own handed → publish p99 at 248 µs, over its 200 µs target
(``benchmarks/bench_feed.py``), and 32 at 193 µs in the run after."""
_MAX_HANDSHAKE = 1 << 16  # far above websockets' own header limits

# How the connection's bytes are read: the HTTP handshake, frames split here, or all of
# them left to websockets (a refused handshake, a detached handler, a closing connection).
_HANDSHAKE, _SPLITTING, _PASS_THROUGH = 0, 1, 2


class StampedConnection(ClientConnection):
    """A client connection that hands each data message on as soon as its bytes are read.

    Until ``on_messages`` is set, messages go to ``recv`` as usual; ``detach()`` sends them
    there again (a connection being closed must stop feeding the handler at once).
    """

    def __init__(self, *args, on_messages: MessagesHandler | None = None,
                 max_message: int = 1 << 20, max_group: int = MAX_GROUP, **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.on_messages = on_messages
        self.max_message = max_message
        self.max_group = max_group
        self._chunk_ns = 0
        self._parts: list[bytes] | None = None  # a fragmented message being joined
        self._mode = _HANDSHAKE
        self._head = bytearray()  # the handshake response read so far
        self._rest = b""  # the start of a frame whose end has not arrived
        self.split_messages = 0
        """Messages handed on straight from the frames split here (not through websockets)."""

    def detach(self) -> None:
        self.on_messages = None
        self._parts = None
        if self._mode == _SPLITTING:
            self._pass_through(self._rest)

    def data_received(self, data: bytes) -> None:
        self._chunk_ns = time.monotonic_ns()
        if self._mode == _SPLITTING:
            self._split(data)
        elif self._mode == _HANDSHAKE:
            self._read_handshake(data)
        else:
            super().data_received(data)

    def eof_received(self) -> None:
        if self._mode == _SPLITTING:
            self._pass_through(self._rest)  # websockets reports a frame cut short
        super().eof_received()

    def _read_handshake(self, data: bytes) -> None:
        seen = len(self._head)
        self._head += data
        end = self._head.find(_HEADERS_END, max(0, seen - len(_HEADERS_END) + 1))
        if end < 0:
            if len(self._head) > _MAX_HANDSHAKE:
                self._mode, self._head = _PASS_THROUGH, bytearray()
            super().data_received(data)
            return
        cut = end + len(_HEADERS_END) - seen
        self._head = bytearray()
        super().data_received(data[:cut])
        if self.protocol.state is State.OPEN and self.on_messages is not None:
            self._mode = _SPLITTING
            if cut < len(data):
                self._split(data[cut:])
        else:
            self._mode = _PASS_THROUGH
            if cut < len(data):
                super().data_received(data[cut:])

    def _split(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        self._rest = b""  # in ``buf`` now: a detach from a handler must not hand it on twice
        size = len(buf)
        group = self.max_group
        starts: list[int] = []
        ends: list[int] = []
        i = 0
        while i + 2 <= size:
            b0, b1 = buf[i], buf[i + 1]
            length = b1 & 0x7F
            start = i + 2
            if length >= 126:
                start += 2 if length == 126 else 8
                if start > size:
                    break
                length = int.from_bytes(buf[i + 2 : start], "big")
            if length > self.max_message:  # websockets reads it from here, and refuses it
                self._hand_on(buf, starts, ends)
                self._pass_through(buf[i:])
                return
            masked = b1 & _MASKED
            if masked:
                start += 4
            end = start + length
            if end > size:
                break
            if b0 in _COMMON and not masked and self._parts is None:
                starts.append(start)
                ends.append(end)
                if len(starts) == group:
                    self._hand_on(buf, starts, ends)
                    starts, ends = [], []
                    group = min(2 * group, LATER_GROUP_MAX)
                    if self._mode != _SPLITTING:  # the handler detached this connection
                        self._pass_through(buf[end:])
                        return
            else:
                # In order: the messages before it first, then websockets reads this frame.
                self._hand_on(buf, starts, ends)
                starts, ends = [], []
                super().data_received(buf[i:end])
                if self.protocol.state is not State.OPEN and self._mode == _SPLITTING:
                    self._mode = _PASS_THROUGH  # closing: websockets discards what follows
                if self._mode != _SPLITTING:
                    self._pass_through(buf[end:])
                    return
            i = end
        self._rest = buf[i:]
        self._hand_on(buf, starts, ends)

    def _hand_on(self, buf: bytes, starts: list[int], ends: list[int]) -> None:
        if starts:
            self.split_messages += len(starts)
            self.on_messages(buf, starts, ends, self._chunk_ns)

    def _pass_through(self, data: bytes) -> None:
        self._mode, self._rest = _PASS_THROUGH, b""
        if data:
            super().data_received(data)

    def process_event(self, event) -> None:
        deliver = self._deliver_one if self.on_messages is not None else None
        if deliver is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake; or a detached connection
            return
        opcode = event.opcode
        if opcode is Opcode.CONT:
            if self._parts is not None:  # the protocol refuses a CONT outside a message
                self._parts.append(bytes(event.data))
                if event.fin:
                    message, self._parts = b"".join(self._parts), None
                    deliver(message, self._chunk_ns)
        elif opcode in DATA_OPCODES:
            if event.fin:
                deliver(bytes(event.data), self._chunk_ns)
            else:
                self._parts = [bytes(event.data)]
        else:
            super().process_event(event)  # ping, pong, close

    def _deliver_one(self, message: bytes, read_ns: int) -> None:
        self.on_messages(message, [0], [len(message)], read_ns)
