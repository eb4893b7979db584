"""wss:// with certificates made at test time (trustme), on every transport."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import trustme

from wavegate import DisconnectSignal, Event, WebsocketPacketJSON
from wavegate.testing import WebsocketTestServer

from .conftest import WebsocketFactory


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest_asyncio.fixture
async def tls_server(authority: trustme.CA) -> AsyncIterator[WebsocketTestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    async with WebsocketTestServer(ssl=context) as server:
        yield server


def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def test_a_custom_ssl_context_that_trusts_the_server_works(
    tls_server: WebsocketTestServer, make_ws: WebsocketFactory, authority: trustme.CA
) -> None:
    assert tls_server.url.startswith("wss://")
    ws = make_ws(ssl=client_context(authority))
    await ws.connect(tls_server.url)
    conn = await tls_server.accepted()
    await conn.send_json({"over": "tls"})
    assert await ws.receive() == WebsocketPacketJSON({"over": "tls"})
    await ws.send_json({"back": 1})
    assert await conn.receive_json() == {"back": 1}


async def test_an_untrusted_certificate_is_refused_with_a_non_retrying_signal(
    tls_server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()  # verification on by default, against the system's CAs
    with pytest.raises(DisconnectSignal) as caught:
        await ws.connect(tls_server.url)
    assert caught.value.event is Event.CONNECT_TLS_CERTIFICATE
    assert "certificate" in caught.value.reason
    assert ws.disconnected


async def test_a_certificate_for_another_host_is_refused(
    authority: trustme.CA, make_ws: WebsocketFactory
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("example.invalid").configure_cert(context)
    async with WebsocketTestServer(ssl=context) as server:
        ws = make_ws(ssl=client_context(authority))
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(server.url)
        assert caught.value.event is Event.CONNECT_TLS_CERTIFICATE


async def test_ssl_false_skips_verification(
    tls_server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(ssl=False)
    await ws.connect(tls_server.url)
    assert ws.connected
