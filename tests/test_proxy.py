"""Connecting through an HTTP proxy (``CONNECT``), on every transport, against a proxy
written here on raw asyncio streams and a ``websockets`` server behind it."""

from __future__ import annotations

import socket

import pytest

from wavegate import Signal, WebsocketPacketJSON

from .conftest import WebsocketFactory
from .peers import ConnectProxy, websockets_server

pytestmark = pytest.mark.timeout(30)


async def _echo(conn: object) -> None:
    async for message in conn:  # type: ignore[attr-defined]
        await conn.send(message)  # type: ignore[attr-defined]


async def test_a_connection_through_a_proxy_carries_messages_both_ways(
    make_ws: WebsocketFactory,
) -> None:
    proxy = ConnectProxy()
    async with proxy.running() as proxy_url, websockets_server(_echo) as url:
        ws = make_ws(proxy=proxy_url)
        await ws.connect(url)
        for n in range(3):
            await ws.send_json({"through": "the proxy", "n": n})
            assert await ws.receive() == WebsocketPacketJSON({"through": "the proxy", "n": n})
        await ws.disconnect()
    port = url.rsplit(":", 1)[1].strip("/")
    # picows tunnels with CONNECT; aiohttp sends a ws:// request to the proxy as it is.
    assert [where for _, where in proxy.targets] == [f"127.0.0.1:{port}"]


async def test_a_proxy_that_is_not_there_fails_the_connect_without_its_password(
    make_ws: WebsocketFactory,
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed below: nothing listens there
    async with websockets_server(_echo) as url:
        ws = make_ws(proxy=f"http://user:s3cr3t-pw@127.0.0.1:{port}", open_timeout=10)
        with pytest.raises(Signal) as caught:
            await ws.connect(url)
    assert ws.disconnected
    seen = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert not any("s3cr3t-pw" in str(error) for error in seen if error is not None)
    assert "s3cr3t-pw" not in repr(caught.value)
