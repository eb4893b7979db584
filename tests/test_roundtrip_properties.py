"""Property tests: whatever JSON object or bytes go in come out the same, over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wavegate import Websocket, WebsocketPacketBytes, WebsocketPacketJSON
from wavegate.codec import STDLIB
from wavegate.testing import WebsocketTestServer

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=8)


async def echo_through(payloads: list[Any], *, stdlib: bool = False) -> list[Any]:
    """Send each payload client -> server -> client and return what came back."""
    client = Websocket(json_codec=STDLIB) if stdlib else Websocket()
    async with WebsocketTestServer() as server, client as ws:
        await ws.connect(server.url)
        conn = await server.accepted()
        back: list[Any] = []
        for payload in payloads:
            if isinstance(payload, bytes):
                await ws.send_bytes(payload)
                _, data = await conn.receive()
                await conn.send_bytes(data)
            else:
                await ws.send_json(payload)
                await conn.send_text((await conn.receive())[1])
            packet = await ws.receive()
            assert isinstance(packet, (WebsocketPacketBytes, WebsocketPacketJSON))
            back.append(packet.payload)
        return back


@settings(max_examples=40, deadline=None)
@given(st.lists(json_objects | st.binary(max_size=70_000), min_size=1, max_size=10))
def test_json_objects_and_bytes_round_trip_unchanged(payloads: list[Any]) -> None:
    assert asyncio.run(echo_through(payloads)) == payloads


@settings(max_examples=20, deadline=None)
@given(st.lists(json_objects, min_size=1, max_size=5))
def test_json_round_trips_with_the_stdlib_codec(payloads: list[Any]) -> None:
    assert asyncio.run(echo_through(payloads, stdlib=True)) == payloads
