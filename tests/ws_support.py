"""A bare TCP WebSocket server for tests that need exact control of the bytes a client reads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time

from aegis.binance.streams import StreamSettings, StreamShard
from aegis.binance.ws_limits import ConnectLimiter


def server_frame(payload: bytes, first_byte: int = 0x81) -> bytes:
    """A server frame (unmasked), text and final unless ``first_byte`` says otherwise."""
    n = len(payload)
    if n < 126:
        return bytes([first_byte, n]) + payload
    if n < 1 << 16:
        return bytes([first_byte, 126]) + n.to_bytes(2, "big") + payload
    return bytes([first_byte, 127]) + n.to_bytes(8, "big") + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame the client sent (clients always mask)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n >= 126:
        n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
    key = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


async def raw_ws_server(script, with_handshake: bytes = b"", hold_last: int = 0):
    """A server that answers the handshake, then runs ``script(reader, writer)`` per connection.

    ``with_handshake`` is sent in the same write as the handshake response (frames the client
    then reads in the same chunk as the response's last bytes); ``hold_last`` bytes of the
    response are held back 20 ms and sent with them.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        cut = len(response) - hold_last
        if hold_last:
            writer.write(response[:cut])
            await writer.drain()
            await asyncio.sleep(0.02)
            response = response[cut:]
        writer.write(response + with_handshake)
        try:
            await script(reader, writer)
            await reader.read()  # until the client goes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def run_shard_on(script, on_frame, until, **server) -> StreamShard:
    """Run a one-stream shard against ``raw_ws_server(script, **server)`` until ``until()``
    (5 s at most)."""
    listening = await raw_ws_server(script, **server)
    port = listening.sockets[0].getsockname()[1]
    shard = StreamShard(f"ws://127.0.0.1:{port}", ["btcusdt@kline_1m"], on_frame,
                        lambda s: None, ConnectLimiter(), StreamSettings(silence_deadline_s=30))  # fmt: skip
    task = asyncio.create_task(shard.run())
    try:
        deadline = time.monotonic() + 5
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        listening.close()
    return shard
