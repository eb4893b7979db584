"""Connecting through an HTTP proxy (``CONNECT``), on every transport, against a proxy
written here on raw asyncio streams and a ``websockets`` server behind it."""

from __future__ import annotations

import socket
import ssl

import pytest
import trustme

from wavegate import (
    DisconnectSignal,
    Event,
    ReconnectSignal,
    Signal,
    Websocket,
    WebsocketPacketJSON,
)

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
    assert caught.value.event is Event.CONNECT_REFUSED
    assert f"at the proxy 127.0.0.1:{port}" in caught.value.reason  # not the server's fault
    seen = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert not any("s3cr3t-pw" in str(error) for error in seen if error is not None)
    assert "s3cr3t-pw" not in repr(caught.value)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize(("status", "signal"), [(407, DisconnectSignal), (502, ReconnectSignal)])
async def test_a_proxy_that_refuses_gives_the_signal_of_its_status(
    make_ws: WebsocketFactory,
    status: int,
    signal: type[Signal],
    transport: str,
    scheme: str,
    authority: trustme.CA,
) -> None:
    # picows let python_socks' ProxyError out: not a signal, so a supervisor stopped.
    proxy = ConnectProxy(refuse=status)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    authority.configure_trust(client_tls)
    tls = {"ssl": server_tls} if scheme == "wss" else {}
    async with proxy.running() as proxy_url, websockets_server(_echo, **tls) as url:
        proxy_url = proxy_url.replace("http://", "http://alice:s3cr3t-pw@")
        ws = make_ws(proxy=proxy_url, ssl=client_tls)
        with pytest.raises(signal) as caught:
            await ws.connect(url.replace("ws://", f"{scheme}://", 1))
    assert caught.value.event is Event.HANDSHAKE_STATUS
    assert caught.value.code == status
    if transport == "aiohttp" and scheme == "ws" and status != 407:
        # aiohttp asks the proxy for a ws:// URL with a GET, not a CONNECT: the answer
        # may be the server's. Only 407 is a proxy's for certain.
        assert caught.value.reason == f"HTTP {status}"
    else:
        assert caught.value.reason == f"the proxy answered HTTP {status}"
    assert ws.disconnected
    seen = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert not any("s3cr3t-pw" in str(error) for error in seen if error is not None)


@pytest.mark.parametrize(
    ("proxy", "error", "message"),
    [
        ("bob:HUNTER2@127.0.0.1:9", ValueError, "proxy must be an http:// or https:// URL"),
        ("socks5://bob:HUNTER2@127.0.0.1:9", ValueError, "not socks5"),
        ("ws://bob:HUNTER2@127.0.0.1:9", ValueError, "not ws"),
        ("", ValueError, "proxy must be an http:// or https:// URL"),
        ("http://bob:HUNTER2@", ValueError, "has no host"),
        ("http://bob:HUNTER2@127.0.0.1:99999", ValueError, "port"),
        (123, TypeError, "proxy must be a str"),
        (b"http://127.0.0.1:9", TypeError, "proxy must be a str"),
    ],
)
def test_a_proxy_that_is_not_an_http_url_is_refused_at_once_without_its_password(
    proxy: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        Websocket(proxy=proxy)  # type: ignore[arg-type]
    assert "HUNTER2" not in str(caught.value)
    assert caught.value.__cause__ is None or "HUNTER2" not in str(caught.value.__cause__)
