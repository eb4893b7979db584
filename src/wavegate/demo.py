"""``wavegate demo``: scripted runs against the embedded fake servers."""

from __future__ import annotations

from typing import TextIO

from .signals import Signal
from .testing import WebsocketTestServer
from .websocket import Websocket


async def core_tour(out: TextIO) -> int:
    """Connect, receive packets, then show each of the three signals happening."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    async with WebsocketTestServer() as server, Websocket() as ws:
        say(f"test server on {server.url}")
        await ws.connect(server.url)
        conn = await server.accepted()
        say(f"connected: state={ws.state.name}")
        await conn.send_json({"op": 8, "d": {"heartbeat_interval": 13750}})
        await conn.send_bytes(b"\x00\x01\x19binary")
        say(f"  packet: {await ws.receive()!r}")
        say(f"  packet: {await ws.receive()!r}")
        scenarios = [
            (4015, "voice server crashed"),
            (4006, "session no longer valid"),
            (4014, "disconnected"),
        ]
        for code, meaning in scenarios:
            if not ws.connected:
                await ws.connect(server.url)
                conn = await server.accepted()
            await conn.send_json({"op": 5, "d": {"speaking": 1}})
            await conn.close(code, meaning)
            say(f"server closes with {code} ({meaning}):")
            say(f"  packet: {await ws.receive()!r}  (delivered before the signal)")
            try:
                await ws.receive()
            except Signal as signal:
                say(f"  -> {type(signal).__name__}: {signal}; state={ws.state.name}")
        await ws.connect(server.url)
        conn = await server.accepted()
        conn.drop()
        say("TCP dropped with no close frame:")
        try:
            await ws.receive()
        except Signal as signal:
            say(f"  -> {type(signal).__name__}: {signal}; state={ws.state.name}")
        try:
            await ws.send_json({"op": 3})
        except Signal as signal:
            say(f"send after the end is never silently dropped -> {type(signal).__name__}")
    return 0
