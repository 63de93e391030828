"""How the feed's connection reads WebSocket frames: every message whole, once, in order, and
every frame it does not split itself left to ``websockets``' rules — over real TCP sockets."""

from __future__ import annotations

import asyncio
import functools

import websockets
from ws_support import raw_ws_server, read_client_frame, run_shard_on, server_frame

from aegis.binance.ws_reader import LATER_GROUP_MAX, MAX_GROUP, StampedConnection

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def _sink():
    frames: list[bytes] = []
    return frames, lambda frame, recv_ns: frames.append(frame) and False


def _first_connection_only(script):
    """The shard reconnects after a failed connection: only the first one runs ``script``."""
    runs = []

    async def once(reader, writer):
        runs.append(1)
        if len(runs) == 1:
            await script(reader, writer)

    return once


async def test_frames_read_with_the_handshake_response_are_handed_on():
    async def script(reader, writer):
        writer.write(server_frame(b'"C"'))

    frames, on_frame = _sink()
    early = server_frame(b'"A"') + server_frame(b'"B"')
    await run_shard_on(script, on_frame, lambda: len(frames) >= 3, with_handshake=early)
    assert frames == [b'"A"', b'"B"', b'"C"']


async def test_a_handshake_response_whose_end_comes_in_a_later_read_is_still_understood():
    async def script(reader, writer):
        writer.write(server_frame(b'"B"'))

    frames, on_frame = _sink()
    shard = await run_shard_on(
        script, on_frame, lambda: len(frames) >= 2,
        with_handshake=server_frame(b'"A"'), hold_last=3,  # the response ends "\r" | "\n\r\n"
    )  # fmt: skip
    assert frames == [b'"A"', b'"B"'] and shard.losses == 0


async def _read_directly(script, count: int, groups: list[int] | None = None,
                         **server) -> tuple[list[bytes], StampedConnection]:  # fmt: skip
    """Messages a bare ``StampedConnection`` hands on (no shard around it); ``groups`` gets the
    number of messages of each call."""
    frames: list[bytes] = []

    def on_messages(buf, starts, ends, read_ns):
        frames.extend(buf[s:e] for s, e in zip(starts, ends, strict=True))
        if groups is not None:
            groups.append(len(starts))

    listening = await raw_ws_server(script, **server)
    port = listening.sockets[0].getsockname()[1]
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}", ping_interval=None, compression=None,
        create_connection=functools.partial(StampedConnection, on_messages=on_messages),
    )  # fmt: skip
    try:
        async with asyncio.timeout(5):
            while len(frames) < count:
                await asyncio.sleep(0.01)
    finally:
        await ws.close()
        listening.close()
    return frames, ws


async def test_after_the_handshake_the_connection_splits_common_frames_itself():
    async def script(reader, writer):
        writer.write(server_frame(b'"B"'))
        await asyncio.sleep(0.02)
        writer.write(bytes([0x01, 2]) + b'"C' + bytes([0x80, 1]) + b'"')  # fragmented: websockets
        await asyncio.sleep(0.02)
        writer.write(server_frame(b'"D"'))

    early = server_frame(b'"A"')
    frames, ws = await _read_directly(script, 4, with_handshake=early, hold_last=2)
    assert frames == [b'"A"', b'"B"', b'"C"', b'"D"'] and ws.split_messages == 3


async def test_a_large_read_is_handed_on_in_order_in_groups_that_grow_after_the_first():
    sent = [f'"{i}"'.encode() for i in range(400)]

    async def script(reader, writer):
        writer.write(b"".join(server_frame(p) for p in sent))  # one write, read in one chunk

    groups: list[int] = []
    frames, _ = await _read_directly(script, 400, groups)
    assert frames == sent
    assert groups == [MAX_GROUP] + [LATER_GROUP_MAX] * 12 and LATER_GROUP_MAX == 2 * MAX_GROUP


async def test_frames_cut_anywhere_between_reads_arrive_whole_and_in_order():
    payloads = [b'"a"', b'"' + b"b" * 200 + b'"', b'"' + b"c" * 70_000 + b'"', b'"d"']
    stream = b"".join(server_frame(p) for p in payloads)
    starts, at = [], 0
    for p in payloads:
        starts.append(at)
        at += len(server_frame(p))
    # Cut inside each header (after 1 byte, inside a 2- or 8-byte length) and inside payloads.
    cuts = sorted({c for s in starts for c in (s + 1, s + 3, s + 6)} | {starts[2] + 40_000})

    async def script(reader, writer):
        last = 0
        for cut in [*cuts, len(stream)]:
            writer.write(stream[last:cut])
            await writer.drain()
            await asyncio.sleep(0.01)  # each piece is read on its own
            last = cut

    frames, on_frame = _sink()
    shard = await run_shard_on(script, on_frame, lambda: len(frames) >= 4)
    assert frames == payloads and shard.losses == 0


async def test_a_ping_between_data_frames_is_answered_with_its_payload_and_the_data_goes_on():
    pongs: list[bytes] = []

    async def script(reader, writer):
        ping = bytes([0x80 | PING, 6]) + b"ping-1"
        writer.write(server_frame(b'"A"') + ping + server_frame(b'"B"'))
        opcode, payload = await read_client_frame(reader)
        if opcode == PONG:
            pongs.append(payload)

    frames, on_frame = _sink()
    shard = await run_shard_on(script, on_frame, lambda: len(frames) >= 2 and pongs)
    assert frames == [b'"A"', b'"B"'] and pongs == [b"ping-1"] and shard.losses == 0


async def _close_code_after(sent: bytes) -> tuple[list[bytes], list[int]]:
    codes: list[int] = []

    async def script(reader, writer):
        writer.write(sent)
        opcode, payload = await read_client_frame(reader)
        if opcode == CLOSE:
            codes.append(int.from_bytes(payload[:2], "big"))

    frames, on_frame = _sink()
    await run_shard_on(_first_connection_only(script), on_frame, lambda: codes)
    return frames, codes


async def test_a_message_over_the_size_limit_is_refused_with_1009_not_handed_on():
    too_big = bytes([0x81, 127]) + (2 << 20).to_bytes(8, "big") + b"x" * 1000
    frames, codes = await _close_code_after(server_frame(b'"A"') + too_big)
    assert frames == [b'"A"'] and codes == [1009]


async def test_a_masked_server_frame_fails_the_connection_with_1002():
    masked = bytes([0x81, 0x80 | 3]) + b"\0\0\0\0" + b'"B"'
    frames, codes = await _close_code_after(server_frame(b'"A"') + masked + server_frame(b'"C"'))
    assert frames == [b'"A"'] and codes == [1002]


async def test_nothing_after_the_servers_close_frame_is_handed_on():
    close = bytes([0x80 | CLOSE, 2]) + (1000).to_bytes(2, "big")
    frames, codes = await _close_code_after(server_frame(b'"A"') + close + server_frame(b'"B"'))
    assert frames == [b'"A"'] and codes == [1000]
