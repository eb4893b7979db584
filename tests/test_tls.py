"""wss:// with certificates made at test time (trustme), on every transport."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import trustme

from wavegate import DisconnectSignal, Event, InvalidURLError, Signal, WebsocketPacketJSON
from wavegate.testing import WebsocketTestServer
from wavegate.transport import TEXT, ConnectFailed, TransportOptions, picows_transport

from .conftest import WebsocketFactory
from .peers import ConnectProxy, established_to, websockets_server


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


def _serve_in_a_thread(
    authority: trustme.CA,
    urls: list[str],
    ready: threading.Event,
    reset: threading.Event,
    stop: threading.Event,
) -> None:
    """A TLS test server on its own event loop: it resets the connection while this
    test's loop is busy, so the client's next write finds the RST in the kernel
    before asyncio has noticed anything."""

    async def serve() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(context)
        loop = asyncio.get_running_loop()
        async with WebsocketTestServer(ssl=context) as server:
            urls.append(server.url)
            ready.set()
            conn = await server.accepted()
            await conn.receive_json()
            await loop.run_in_executor(None, reset.wait, 10)
            await conn.reset()
            await loop.run_in_executor(None, stop.wait, 10)

    asyncio.run(serve())


@pytest.mark.timeout(60)
async def test_a_send_after_a_reset_is_never_reported_written_over_tls(
    make_ws: WebsocketFactory, authority: trustme.CA
) -> None:
    urls: list[str] = []
    ready, reset, stop = threading.Event(), threading.Event(), threading.Event()
    server = threading.Thread(target=_serve_in_a_thread, args=(authority, urls, ready, reset, stop))
    server.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10)
        port = urlsplit(urls[0]).port
        assert port is not None
        ws = make_ws(ssl=client_context(authority))
        await ws.connect(urls[0])
        await ws.send_json({"op": 1})
        reset.set()
        # Block this loop (a busy application) until the kernel has the RST: asyncio
        # cannot notice it before the next send.
        deadline = time.monotonic() + 10
        while established_to(port) and time.monotonic() < deadline:
            time.sleep(0.005)  # noqa: ASYNC251 - blocking on purpose
        with pytest.raises(Signal):
            await ws.send_json({"op": 2})
    finally:
        stop.set()
        server.join(10)


async def _echo_one(conn: object) -> None:
    await conn.send(await conn.recv())  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", ["ws", "wss", "WSS"])
async def test_picows_runs_tls_on_aiofastnet_and_plain_tcp_on_asyncio(
    scheme: str, authority: trustme.CA
) -> None:
    # aiofastnet's TLS keeps 59 KiB per connection where asyncio's keeps 310; over plain
    # TCP its transport is 4.6 KiB larger and no faster (docs/benchmarks.md, E and G).
    secure = scheme != "ws"
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)
    async with websockets_server(_echo_one, ssl=served if secure else None) as url:
        url = url.replace("ws:", f"{scheme}:")
        options = TransportOptions(ssl=client_context(authority), ping_interval=None)
        opened = await picows_transport.connect(url, options)
        try:
            module = type(opened._wt.underlying_transport).__module__
            # From 3.12 asyncio's transport sums its write backlog on every write.
            fast = secure or sys.version_info >= (3, 12)
            assert module.startswith("aiofastnet.") is fast, module
            opened.send(TEXT, b'{"over": "either"}')
            assert await opened.recv() == '{"over": "either"}'
        finally:
            await opened.close(1000, "")


async def _echo_until_closed(conn: object) -> None:
    async for message in conn:  # type: ignore[attr-defined]
        await conn.send(message)  # type: ignore[attr-defined]


def count_default_contexts(
    authority: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> list[ssl.SSLContext]:
    """Trust ``authority`` as the system's CAs, forget picows' default contexts, and
    record each context ``ssl.create_default_context`` makes from now on."""
    bundle = tmp_path / "trusted.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setattr(picows_transport, "_DEFAULT_CONTEXTS", {})
    real = ssl.create_default_context
    made: list[ssl.SSLContext] = []

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    return made


def server_context(authority: trustme.CA, host: str = "127.0.0.1") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert(host).configure_cert(context)
    return context


@pytest.mark.timeout(60)
async def test_picows_makes_its_default_contexts_once_per_process(
    authority: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # For ssl=True, asyncio and aiofastnet make a context per connection: loading the
    # system's CA store blocks the loop ~18 ms, and the connection holds it (~850 KiB).
    made = count_default_contexts(authority, monkeypatch, tmp_path)
    served = server_context(authority)
    async with websockets_server(_echo_until_closed, ssl=served) as url:
        url = url.replace("ws:", "wss:")
        contexts: dict[bool, ssl.SSLContext] = {}
        for verify in (True, False, True, False):
            opened = await picows_transport.connect(
                url, TransportOptions(ssl=verify, ping_interval=None)
            )
            try:
                opened.send(TEXT, b'{"over": "tls"}')
                assert await opened.recv() == '{"over": "tls"}'
                ssl_object = opened._wt.underlying_transport.get_extra_info("ssl_object")
                assert contexts.setdefault(verify, ssl_object.context) is ssl_object.context
            finally:
                await opened.close(1000, "")
    assert made == [contexts[True]], "the CA store is loaded once, for ssl=True alone"
    assert contexts[True].verify_mode == ssl.CERT_REQUIRED
    assert contexts[True].check_hostname
    assert contexts[False].verify_mode == ssl.CERT_NONE
    # The shared context still checks each connection's host name.
    elsewhere = server_context(authority, "example.invalid")
    async with websockets_server(_echo_until_closed, ssl=elsewhere) as url:
        with pytest.raises(ConnectFailed) as caught:
            await picows_transport.connect(url.replace("ws:", "wss:"), TransportOptions())
    assert caught.value.event is Event.CONNECT_TLS_CERTIFICATE


@pytest.mark.timeout(60)
async def test_picows_makes_one_default_context_for_an_https_proxy_too(
    authority: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    made = count_default_contexts(authority, monkeypatch, tmp_path)
    proxy = ConnectProxy()
    async with (
        proxy.running(tls=server_context(authority)) as proxy_url,
        websockets_server(_echo_until_closed) as url,
    ):
        assert proxy_url.startswith("https://")
        for _ in range(2):
            options = TransportOptions(proxy=proxy_url, ping_interval=None)
            opened = await picows_transport.connect(url, options)
            try:
                opened.send(TEXT, b'{"through": "tls"}')
                assert await opened.recv() == '{"through": "tls"}'
            finally:
                await opened.close(1000, "")
    assert len(made) == 1
    assert made[0].verify_mode == ssl.CERT_REQUIRED
    assert len(proxy.targets) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("verify", ["a context", "off"])
async def test_an_https_proxy_carries_a_connection_on_every_transport(
    authority: trustme.CA, make_ws: WebsocketFactory, verify: str
) -> None:
    proxy = ConnectProxy()
    async with (
        proxy.running(tls=server_context(authority)) as proxy_url,
        websockets_server(_echo_until_closed) as url,
    ):
        # ``ssl`` is the proxy's too, as aiohttp has it.
        trusted = client_context(authority) if verify == "a context" else False
        ws = make_ws(proxy=proxy_url, ping_interval=None, ssl=trusted)
        await ws.connect(url)
        await ws.send_json({"through": "an https proxy"})
        assert await ws.receive() == WebsocketPacketJSON({"through": "an https proxy"})
        await ws.disconnect()
    assert len(proxy.targets) == 1


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_an_https_proxy_with_an_untrusted_certificate_is_refused_and_named(
    authority: trustme.CA, make_ws: WebsocketFactory, scheme: str, transport: str
) -> None:
    proxy = ConnectProxy()
    async with (
        proxy.running(tls=server_context(authority)) as proxy_url,
        websockets_server(_echo_until_closed, ssl=server_context(authority)) as url,
    ):
        ws = make_ws(proxy=proxy_url, ping_interval=None)  # ssl=True: the system's CAs
        if transport == "aiohttp" and scheme == "wss" and sys.version_info < (3, 11):
            with pytest.raises(InvalidURLError, match=r"needs Python 3\.11 on the aiohttp"):
                await ws.connect(url.replace("ws:", "wss:"))  # before any TLS
            return
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(url.replace("ws:", f"{scheme}:"))
    assert caught.value.event is Event.CONNECT_TLS_CERTIFICATE
    assert proxy.targets == []
    # It read as the server's fault (found by review): with a ws:// server, only the
    # proxy speaks TLS; with a wss:// one, either may have failed.
    port = urlsplit(proxy_url).port
    hop = f"(at the proxy 127.0.0.1:{port})" if scheme == "ws" else "(at the proxy 127.0.0.1"
    assert hop in caught.value.reason, caught.value.reason


@pytest.mark.timeout(60)
async def test_a_wss_server_through_an_https_proxy(
    authority: trustme.CA, make_ws: WebsocketFactory, transport: str
) -> None:
    proxy = ConnectProxy()  # TLS to the proxy, and TLS to the server inside it
    async with (
        proxy.running(tls=server_context(authority)) as proxy_url,
        websockets_server(_echo_until_closed, ssl=server_context(authority)) as url,
    ):
        ws = make_ws(proxy=proxy_url, ping_interval=None, ssl=client_context(authority))
        if transport == "aiohttp" and sys.version_info < (3, 11):
            with pytest.raises(InvalidURLError, match=r"needs Python 3\.11 on the aiohttp"):
                await ws.connect(url.replace("ws:", "wss:"))
            return
        await ws.connect(url.replace("ws:", "wss:"))
        await ws.send_json({"tls": "in tls"})
        assert await ws.receive() == WebsocketPacketJSON({"tls": "in tls"})
        await ws.disconnect()
    assert len(proxy.targets) == 1


async def test_a_server_hanging_up_during_tls_is_one_signal_and_no_broken_log_record(
    make_ws: WebsocketFactory, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # Found by a new-user trial: aiofastnet (picows' TLS engine) hands the loop's
    # exception handler the exception class, not an instance; logging the record
    # failed ("--- Logging error --- ... no attribute 'tb_frame'") on every such
    # opening, even at WARNING.
    hung_up = asyncio.Event()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # the ClientHello
        writer.transport.abort()
        hung_up.set()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level("WARNING"):
            ws = make_ws()
            with pytest.raises(Signal) as caught:
                await ws.connect(f"wss://127.0.0.1:{port}/")
            await asyncio.wait_for(hung_up.wait(), 10)
        assert caught.value.event is Event.CONNECT_ERROR
        assert "the server hung up during TLS" in str(caught.value)
        assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
        assert "Logging error" not in capfd.readouterr().err
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("kind", "kept", "instance"),
    [
        (ConnectionResetError, False, None),
        (ValueError, True, ValueError),
        (UnicodeDecodeError, True, None),
    ],
)
def test_the_filter_for_records_holding_an_exception_class(
    kind: type[BaseException], kept: bool, instance: type[BaseException] | None
) -> None:
    # Found by review: a class that needs arguments made the filter itself raise.
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "m", (), None)
    record.exc_info = (kind, kind, None)  # type: ignore[assignment]  # aiofastnet's shape
    assert picows_transport._ClassNotInstance().filter(record) is kept
    if kept:
        got = record.exc_info
        assert (type(got[1]) if got else None) is instance
