"""Bad input from the peer: arbitrary payloads, oversized frames, decompression bombs."""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wavegate import (
    Event,
    PayloadError,
    Signal,
    Websocket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
)
from wavegate.testing import WebsocketTestServer
from wavegate.testing.frames import BINARY, TEXT, encode_frame

from .conftest import WebsocketFactory


def classify(error: Exception, data: bytes) -> str:
    """Each error must be a documented one: raw text kept, or 1007 for invalid UTF-8."""
    if isinstance(error, PayloadError):
        assert error.raw == data.decode()  # the raw text, never {}
        return "payload_error"
    assert isinstance(error, Signal)
    assert (error.code, error.event) == (1007, Event.PROTOCOL_ERROR)
    return "1007"


async def outcome_of(frames: list[tuple[bool, bytes]], transport: str) -> list[str]:
    """Send each frame (text or binary) to a fresh client; what each one became."""
    results = []
    async with WebsocketTestServer() as server:
        ws = Websocket(transport=transport)
        for is_text, data in frames:
            if not ws.connected:
                await ws.connect(server.url)
                conn = await server.accepted()
            await (conn.send_text(data) if is_text else conn.send_bytes(data))
            try:
                packet = await asyncio.wait_for(ws.receive(), 5)
            except (PayloadError, Signal) as error:
                results.append(classify(error, data))
            else:
                assert isinstance(packet, (WebsocketPacketJSON, WebsocketPacketBytes))
                assert packet.payload == data if not is_text else isinstance(packet.payload, dict)
                results.append("packet")
        await ws.disconnect()
    return results


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
@settings(max_examples=25, deadline=None)
@given(frames=st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), min_size=1, max_size=8))
def test_arbitrary_frames_never_crash_the_manager(
    transport: str, frames: list[tuple[bool, bytes]]
) -> None:
    assert len(asyncio.run(outcome_of(frames, transport))) == len(frames)


async def test_an_oversized_frame_is_refused_from_its_header_without_buffering_it(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(max_size=1 << 20)
    await ws.connect(server.url)
    conn = await server.accepted()
    tracemalloc.start()
    try:
        # Announce 64 MiB, send 2 MiB of it: the client must give up at the header.
        await conn.send_raw(struct.pack("!BBQ", 0x82, 127, 64 << 20) + b"\0" * (2 << 20))
        with pytest.raises(Signal) as caught:
            await ws.receive()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (caught.value.code, caught.value.event) == (1009, Event.PROTOCOL_ERROR)
    assert peak < 8 << 20


async def test_a_decompression_bomb_is_stopped_by_max_size(server: WebsocketTestServer) -> None:
    server.deflate = True
    ws = Websocket(compression=True, max_size=1 << 20)
    await ws.connect(server.url)
    conn = await server.accepted()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflate.compress(b"\0" * (200 << 20)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 1 << 20  # 200 MiB of zeros in well under 1 MiB
    small = zlib.compressobj(9, zlib.DEFLATED, -15)
    hello = small.compress(b'{"ok":1}') + small.flush(zlib.Z_SYNC_FLUSH)
    tracemalloc.start()
    try:
        await conn.send_raw(encode_frame(TEXT, hello[:-4], rsv=4))
        assert await ws.receive() == WebsocketPacketJSON({"ok": 1})  # compression works
        await conn.send_raw(encode_frame(BINARY, bomb[:-4], rsv=4))
        with pytest.raises(Signal) as caught:
            await ws.receive()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await ws.disconnect()
    assert (caught.value.code, caught.value.event) == (1009, Event.PROTOCOL_ERROR)
    assert peak < 32 << 20  # nowhere near the 200 MiB it would inflate to


async def test_a_message_over_max_size_reads_the_same_and_logs_no_error_on_any_transport(
    make_ws: WebsocketFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a new-user trial: aiohttp said "exceeds limit 1001" for max_size=1000
    # (its limit is ours plus one), and picows logged the peer's fault at ERROR and a
    # refused attempt's TCP connection at INFO ("WS connection established").
    from .peers import websockets_server

    async def oversized(conn: Any) -> None:
        await conn.send("x" * 5000)
        await conn.wait_closed()

    caplog.set_level(logging.INFO)
    async with websockets_server(oversized, max_size=None) as url:
        ws = make_ws(max_size=1000)
        await ws.connect(url)
        with pytest.raises(Signal) as caught:
            await ws.receive()
    assert caught.value.code == 1009
    assert type(caught.value.code) is int
    assert caught.value.reason == "message larger than max_size (1000 bytes)"
    ours = [r for r in caplog.records if r.name.startswith("wavegate.transport")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.INFO] == []
