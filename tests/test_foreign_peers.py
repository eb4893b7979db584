"""The Websocket contract against servers wavegate did not write.

``websockets``' server and raw asyncio sockets (``tests/peers.py``) close, stall,
flood and misbehave in ways our own test server would not think of. Each test here
reproduced a defect before it was fixed (issue 8 of the project's tracker).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct
import traceback
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from wavegate import (
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    ReconnectSignal,
    ResumeSignal,
    Signal,
    Websocket,
    WebsocketPacketJSON,
    WebsocketState,
)
from wavegate.codec import STDLIB
from wavegate.redact import redact_url, secrets_in
from wavegate.testing import frames
from wavegate.transport import TEXT, TransportOptions, picows_transport, status_failure
from wavegate.websocket import check_url

from .conftest import WebsocketFactory, eventually
from .peers import RawPeer, established_to, open_fds, raw_server, websockets_server

# -- a send racing the peer's close -------------------------------------------------

RACE_CODES = (4014, 4021, 4006)
RACE_RUNS = 20


async def _close_after_first_message(code: int) -> tuple[object, object]:
    async def with_websockets(conn: ServerConnection) -> None:
        await conn.recv()
        await conn.close(code, "race")

    async def raw_close_then_fin(peer: RawPeer) -> None:
        await peer.handshake()
        await peer.read_frame()
        peer.write_frame(frames.CLOSE, frames.close_payload(code, "race"))
        peer.writer.close()  # FIN right behind the close frame, as some servers do

    return with_websockets, raw_close_then_fin


async def _send_until_signal(ws: Websocket) -> Signal:
    while True:
        try:
            await ws.send_json({"op": 3})
        except Signal as signal:
            return signal
        await asyncio.sleep(0)


async def _race_once(ws: Websocket, url: str, *, with_reader: bool) -> list[Signal]:
    """Send in a loop (and receive, when ``with_reader``) until the peer's close ends both."""
    await ws.connect(url)

    async def sender() -> Signal:
        while True:
            try:
                await ws.send_json({"op": 5, "d": {"speaking": 1}})
            except Signal as signal:
                return signal
            await asyncio.sleep(0)

    async def reader() -> Signal:
        while True:
            try:
                await ws.receive()
            except Signal as signal:
                return signal

    tasks = [asyncio.ensure_future(sender())]
    if with_reader:
        tasks.append(asyncio.ensure_future(reader()))
    return list(await asyncio.gather(*tasks))


async def test_frames_and_a_close_in_the_handshakes_own_segment_are_all_delivered(
    make_ws: WebsocketFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The peer answers the upgrade, sends a message and closes, all in one write: the
    # close arrives while connect() is still returning (Autobahn's getCaseCount does it).
    echoed: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def eager(conn: RawPeer) -> None:
        close = struct.pack("!H", 4015) + b"bye"
        await conn.handshake(
            then=frames.encode_frame(1, b'{"n":1}') + frames.encode_frame(8, close)
        )
        echoed.set_result(await conn.read_frame())

    async with raw_server(eager) as url:
        ws = make_ws()
        await ws.connect(url)
        assert await ws.receive() == WebsocketPacketJSON({"n": 1})
        with pytest.raises(ResumeSignal) as caught:
            await ws.receive()
        assert (caught.value.code, caught.value.reason) == (4015, "bye")
        opcode, payload = await asyncio.wait_for(echoed, 10)
        assert (opcode, payload[:2]) == (8, struct.pack("!H", 4015))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("code", RACE_CODES)
@pytest.mark.parametrize("server_kind", ["websockets", "raw-close-then-fin"])
@pytest.mark.parametrize("with_reader", [True, False], ids=["reader", "no-reader"])
@pytest.mark.timeout(60)
async def test_a_send_racing_the_peers_close_raises_the_signal_of_its_close_code(
    make_ws: WebsocketFactory, code: int, server_kind: str, with_reader: bool
) -> None:
    with_websockets, raw = await _close_after_first_message(code)
    server = (
        websockets_server(with_websockets)  # type: ignore[arg-type]
        if server_kind == "websockets"
        else raw_server(raw)  # type: ignore[arg-type]
    )
    async with server as url:
        ws = make_ws()
        for _ in range(RACE_RUNS):
            for signal in await _race_once(ws, url, with_reader=with_reader):
                assert (signal.event, signal.code) == (Event.PEER_CLOSE, code), repr(signal)
                assert isinstance(signal, ws.policy.action_for_code(code).signal_type)
            assert ws.disconnected


# -- a peer that stopped reading -----------------------------------------------------


async def _stop_reading(peer: RawPeer) -> None:
    await peer.handshake()
    peer.stop_reading()
    await asyncio.Event().wait()


async def _send_until_blocked(ws: Websocket) -> asyncio.Task[None]:
    """Start sending 1 MiB frames; return once a send has been blocked for a while."""

    async def send_forever() -> None:
        while True:
            await ws.send_bytes(b"x" * (1 << 20))

    task = asyncio.ensure_future(send_forever())
    while not task.done():
        sent = ws.stats.frames_out
        await asyncio.sleep(0.3)
        if ws.stats.frames_out == sent:
            return task
    return task


@pytest.mark.timeout(60)
async def test_keepalive_expiry_wakes_a_send_blocked_on_a_peer_that_stopped_reading(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async with raw_server(_stop_reading) as url:
        port = urlsplit(url).port
        assert port is not None
        ws = make_ws(ping_interval=0.5, ping_timeout=0.5)
        await ws.connect(url)
        sending = await _send_until_blocked(ws)
        with pytest.raises(ResumeSignal) as caught:
            await asyncio.wait_for(sending, 20)
        assert caught.value.event is Event.KEEPALIVE_TIMEOUT
        assert ws.disconnected
        await eventually(lambda: established_to(port) == 0)


@pytest.mark.timeout(60)
async def test_disconnect_wakes_a_blocked_send_and_really_closes_the_socket(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async with raw_server(_stop_reading) as url:
        port = urlsplit(url).port
        assert port is not None
        ws = make_ws(ping_interval=None, close_timeout=0.5)
        await ws.connect(url)
        sending = await _send_until_blocked(ws)
        await asyncio.wait_for(ws.disconnect(4000), 10)
        assert ws.disconnected
        with pytest.raises(DisconnectSignal) as caught:
            await asyncio.wait_for(sending, 10)
        assert caught.value.event is Event.LOCAL_CLOSE
        await eventually(lambda: established_to(port) == 0)


# -- cancelling disconnect() ---------------------------------------------------------


async def _never_answer_close(peer: RawPeer) -> None:
    await peer.handshake()
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await peer.read_frame()


@pytest.mark.timeout(60)
async def test_cancelling_disconnect_still_releases_the_socket(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async with raw_server(_never_answer_close) as url:
        ws = make_ws(close_timeout=0.2)
        await ws.connect(url)
        await ws.disconnect()
        before = open_fds()
        for _ in range(100):
            await ws.connect(url)
            closing = asyncio.ensure_future(ws.disconnect(4000))
            await asyncio.sleep(0.01)
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
            assert ws.disconnected
        await eventually(lambda: open_fds() <= before + 2)


# -- a peer flooding pings -----------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.timeout(60)
async def test_a_ping_flood_from_a_peer_that_never_reads_the_pongs_is_bounded(
    make_ws: WebsocketFactory, transport: str
) -> None:
    flooded = asyncio.Event()
    pings = frames.encode_frame(frames.PING, b"") * (1 << 20)  # 2 MiB of pings per write

    async def flood(peer: RawPeer) -> None:
        await peer.handshake()
        peer.stop_reading()
        try:
            for _ in range(12):  # 24 MiB of pings: 72 MiB of pongs if nothing bounds them
                peer.writer.write(pings)
                await asyncio.wait_for(peer.writer.drain(), 1)
        finally:  # done, throttled (drain timed out) or failed by the client
            flooded.set()
        await asyncio.Event().wait()

    async with raw_server(flood) as url:
        ws = make_ws(ping_interval=None)
        await ws.connect(url)
        gc.collect()
        before = _rss()
        receiving = asyncio.ensure_future(ws.receive())
        await asyncio.wait_for(flooded.wait(), 50)
        growth = _rss() - before
        assert growth < 40 << 20, f"RSS grew by {growth >> 20} MiB"
        if transport == "picows":
            # picows answers each ping at once: past a limit, the connection is failed.
            with pytest.raises(ResumeSignal) as caught:
                await asyncio.wait_for(receiving, 10)
            assert caught.value.event is Event.TRANSPORT_ERROR
            assert "does not read" in caught.value.reason
        else:
            # aiohttp answers pings as receive() reads them: it stops reading instead.
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Signal):
                await receiving


# -- no leak per connection ----------------------------------------------------------


@pytest.mark.timeout(120)
async def test_closed_connections_leave_no_timer_task_or_memory_behind(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async def greet(conn: ServerConnection) -> None:
        await conn.send('{"op": 8}')
        with contextlib.suppress(Exception):
            await conn.wait_closed()

    loop = asyncio.get_running_loop()
    async with websockets_server(greet, ping_interval=None) as url:
        ws = make_ws(ping_interval=20, ping_timeout=20)
        for _ in range(50):  # warm up: pools, caches, first allocations
            await ws.connect(url)
            await ws.receive()
            await ws.disconnect(4000)
        gc.collect()
        rss, tasks = _rss(), len(asyncio.all_tasks())
        for _ in range(3000):
            await ws.connect(url)
            await ws.receive()
            await ws.disconnect(4000)
        gc.collect()
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert [h for h in timers if h.when() - loop.time() > 5] == []
        assert len(asyncio.all_tasks()) <= tasks + 1
        growth = _rss() - rss
        assert growth < 10 << 20, f"RSS grew by {growth >> 20} MiB over 3,000 connections"


# -- the opening handshake (RFC 6455 4.1) ---------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"],
)
async def test_a_handshake_with_something_the_client_never_offered_fails_for_good(
    make_ws: WebsocketFactory, header: str
) -> None:
    async def answer(peer: RawPeer) -> None:
        await peer.handshake(header + "\r\n")
        await asyncio.Event().wait()

    async with raw_server(answer) as url:
        ws = make_ws()
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(url)
        assert caught.value.event is Event.HANDSHAKE_INVALID
        assert header.split(":")[0].lower() in str(caught.value).lower()
        assert ws.disconnected


async def test_a_subprotocol_is_offered_and_the_servers_choice_is_exposed(
    make_ws: WebsocketFactory,
) -> None:
    # Found by a new-user trial: there was no way to offer one; given as a header,
    # the server's (valid) answer was refused as never offered.
    chosen: list[str | None] = []

    async def echo(conn: ServerConnection) -> None:
        chosen.append(conn.subprotocol)
        async for message in conn:
            await conn.send(message)

    async with websockets_server(echo, subprotocols=["chat.v2", "chat.v1"]) as url:
        ws = make_ws(subprotocols=["chat.v1", "chat.v2"])
        assert ws.subprotocol is None
        await ws.connect(url)
        assert ws.subprotocol == chosen[0] == "chat.v2"  # the server's preference
        await ws.send_json({"op": 1})
        assert await asyncio.wait_for(ws.receive(), 10) == WebsocketPacketJSON({"op": 1})
        await ws.disconnect()
        assert ws.subprotocol is None
        with pytest.raises(DisconnectSignal) as caught:
            await make_ws().connect(url)  # offering none to a server that needs one
        assert (caught.value.event, caught.value.code) == (Event.HANDSHAKE_STATUS, 400)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("chat.v3", "Sec-WebSocket-Protocol 'chat.v3', not the 2 subprotocols the client offered"),
        (
            "chat.v1, chat.v2",
            "Sec-WebSocket-Protocol '<offered #1>, <offered #2>', not the 2 subprotocols the client"
            " offered",
        ),
    ],
)
async def test_a_subprotocol_answer_that_was_not_offered_fails_for_good(
    make_ws: WebsocketFactory, answer: str, problem: str
) -> None:
    async def reply(peer: RawPeer) -> None:
        await peer.handshake(f"Sec-WebSocket-Protocol: {answer}\r\n")
        await asyncio.Event().wait()

    async with raw_server(reply) as url:
        ws = make_ws(subprotocols=("chat.v1", "chat.v2"))
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(url)
        assert caught.value.event is Event.HANDSHAKE_INVALID
        assert problem in str(caught.value), caught.value
        assert ws.disconnected
        secret = "base64url.bearer.authorization.k8s.io.c2VjcmV0"
        with pytest.raises(DisconnectSignal) as caught:
            await make_ws(subprotocols=[secret]).connect(url)  # found by review
        assert "c2VjcmV0" not in _everything_reachable(caught.value)


async def test_a_server_echoing_the_offered_subprotocols_shows_none_of_them(
    make_ws: WebsocketFactory,
) -> None:
    # Found by review: a server that echoes the whole offer put a token offered as a
    # subprotocol (as Kubernetes does) into the signal's reason.
    secret = "base64url.bearer.authorization.k8s.io.c2VjcmV0"

    async def echo_offer(peer: RawPeer) -> None:
        await peer.handshake(f"Sec-WebSocket-Protocol: {secret}, base64.channel.k8s.io\r\n")
        await asyncio.Event().wait()

    async with raw_server(echo_offer) as url:
        with pytest.raises(DisconnectSignal) as caught:
            await make_ws(subprotocols=[secret, "base64.channel.k8s.io"]).connect(url)
        assert "'<offered #1>, <offered #2>', not the 2 subprotocols" in str(caught.value)
        assert "c2VjcmV0" not in _everything_reachable(caught.value)


async def test_a_server_that_chooses_no_subprotocol_is_accepted_without_one(
    make_ws: WebsocketFactory,
) -> None:
    # RFC 6455 4.1 lets the server choose none; the application decides what it means.
    requests: list[bytes] = []

    async def reply(peer: RawPeer) -> None:
        await peer.handshake()
        requests.append(peer.request)
        await asyncio.Event().wait()

    async with raw_server(reply) as url:
        ws = make_ws(subprotocols=("chat.v1", "chat.v2"))
        await ws.connect(url)
        assert ws.subprotocol is None
        offered = [
            line.split(":", 1)[1]
            for line in requests[0].decode().split("\r\n")
            if line.lower().startswith("sec-websocket-protocol:")
        ]
        assert [name.strip() for name in ",".join(offered).split(",")] == ["chat.v1", "chat.v2"]
        await ws.disconnect()


@pytest.mark.parametrize(
    "answer", [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"\x16\x03\x01\x00\x05hello\r\n\r\n"]
)
async def test_an_answer_that_is_not_http_is_an_invalid_handshake_with_no_status(
    make_ws: WebsocketFactory, answer: bytes
) -> None:
    # Found by a new-user trial: aiohttp reported "HTTP 400", a status the server
    # never sent (its parser's error), and picows an invalid handshake.
    async def reply(peer: RawPeer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.writer.write(answer)
        await peer.writer.drain()
        peer.writer.close()

    async with raw_server(reply) as url:
        ws = make_ws()
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(url)
        assert (caught.value.event, caught.value.code) == (Event.HANDSHAKE_INVALID, None)
        assert "HTTP 400" not in str(caught.value)


async def test_a_refusal_with_a_large_header_is_still_its_status(
    make_ws: WebsocketFactory,
) -> None:
    # Found by review: aiohttp's parser stops at 8190 bytes a line, and it called the
    # answer "not HTTP" where picows read the 429 and its Retry-After.
    async def reply(peer: RawPeer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n"
            b"X-Debug: " + b"x" * 10_000 + b"\r\nContent-Length: 0\r\n\r\n"
        )
        await peer.writer.drain()
        peer.writer.close()

    async with raw_server(reply) as url:
        ws = make_ws()
        with pytest.raises(ReconnectSignal) as caught:
            await ws.connect(url)
        assert (caught.value.event, caught.value.code) == (Event.HANDSHAKE_STATUS, 429)
        assert caught.value.retry_after == 5.0


async def test_an_unknown_extension_in_answer_to_compression_fails_for_good() -> None:
    async def answer(peer: RawPeer) -> None:
        await peer.handshake("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n")
        await asyncio.Event().wait()

    async with raw_server(answer) as url, Websocket(compression=True) as ws:
        with pytest.raises(DisconnectSignal) as caught:
            await ws.connect(url)
        assert caught.value.event is Event.HANDSHAKE_INVALID


# -- secrets in cause chains ---------------------------------------------------------

TOKEN = "tok-SECRET-123456"
PASSWORD = "pw-SECRET-654321"
BEARER = "bearer-SECRET-777"
SUBPROTOCOL = "c3VicHJvdG9jb2wtU0VDUkVU"


def _everything_reachable(exc: BaseException) -> str:
    """Every str and repr reachable from ``exc`` through causes and contexts."""
    seen: set[int] = set()
    texts = []
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item), repr(item.args)]
        stack += [item.__cause__, item.__context__]
    return "\n".join(texts) + "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("server_kind", ["raw", "websockets"])
async def test_no_secret_is_reachable_from_a_handshake_failure_signal(
    make_ws: WebsocketFactory, transport: str, server_kind: str
) -> None:
    async def reject(peer: RawPeer) -> None:
        await peer.reject(503, "Service Unavailable")

    def unavailable(conn: ServerConnection, request: object) -> Response:
        return conn.respond(503, "down\n")

    server = (
        raw_server(reject)
        if server_kind == "raw"
        else websockets_server(lambda conn: asyncio.sleep(0), process_request=unavailable)
    )
    async with server as url:
        secret_url = url.replace("ws://", f"ws://user:{PASSWORD}@") + f"?v=8&token={TOKEN}"
        # aiohttp refuses an Authorization header beside credentials in the URL. A
        # bearer token offered as a subprotocol (as Kubernetes does) is one too.
        ws = make_ws(headers={"X-Api-Key": BEARER}, subprotocols=[f"bearer.{SUBPROTOCOL}"])
        with pytest.raises(Signal) as caught:
            await ws.connect(secret_url)
        assert caught.value.code == 503
        reachable = _everything_reachable(caught.value)
        for secret in (TOKEN, PASSWORD, BEARER, SUBPROTOCOL):
            assert secret not in reachable


async def test_no_secret_is_reachable_from_a_refused_connect(make_ws: WebsocketFactory) -> None:
    ws = make_ws(headers={"Authorization": f"Bearer {BEARER}"})
    with pytest.raises(Signal) as caught:
        await ws.connect(f"ws://127.0.0.1:1/?token={TOKEN}")
    reachable = _everything_reachable(caught.value)
    assert TOKEN not in reachable
    assert BEARER not in reachable


@pytest.mark.parametrize(
    "url",
    [f"ws://[::1/?token={TOKEN}", f"ws://a..b/?token={TOKEN}", f"ws://h:80:80/?token={TOKEN}"],
    ids=["unclosed-ipv6", "empty-label", "two-ports"],
)
async def test_no_secret_is_reachable_from_an_invalid_url_error(
    make_ws: WebsocketFactory, url: str
) -> None:
    ws = make_ws(open_timeout=5)
    with pytest.raises(InvalidURLError) as caught:
        await ws.connect(url)
    assert TOKEN not in _everything_reachable(caught.value)
    assert ws.disconnected


# -- causes ---------------------------------------------------------------------------


async def test_a_peer_close_signal_keeps_the_transports_cause_every_time_it_is_raised(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async def close_at_once(conn: ServerConnection) -> None:
        await conn.close(4015, "crashed")

    async with websockets_server(close_at_once) as url:
        ws = make_ws()
        await ws.connect(url)
        with pytest.raises(ResumeSignal) as received:
            await ws.receive()
        with pytest.raises(ResumeSignal) as sent:
            await ws.send_json({"op": 3})
        if transport == "picows":
            from picows.websockets.exceptions import ConnectionClosed

            assert isinstance(received.value.__cause__, ConnectionClosed)
        assert sent.value.__cause__ is received.value.__cause__
        assert ws.last_signal is not None
        assert ws.last_signal.__cause__ is received.value.__cause__


# -- disconnect() while the opening completes ------------------------------------------


@pytest.mark.timeout(60)
async def test_disconnect_in_any_loop_turn_of_the_opening_really_disconnects(
    make_ws: WebsocketFactory,
) -> None:
    async def serve(peer: RawPeer) -> None:
        await peer.handshake()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                opcode, payload = await peer.read_frame()
                if opcode == frames.CLOSE:
                    peer.write_frame(frames.CLOSE, payload)
                    peer.writer.close()
                    return

    async with raw_server(serve) as url:
        port = urlsplit(url).port
        assert port is not None
        ws = make_ws(close_timeout=1)
        opening_turns = await _turns_to_connect(ws, url)
        for turns in range(1, opening_turns + 3):  # every turn, up to just after it opened
            connecting = asyncio.ensure_future(ws.connect(url))
            for _ in range(turns):
                await asyncio.sleep(0)
            await ws.disconnect(4000)
            assert ws.state is WebsocketState.DISCONNECTED, f"after {turns} turns"
            with contextlib.suppress(DisconnectSignal):
                await connecting
            assert ws.disconnected
            assert ws.last_signal is not None
            assert ws.last_signal.event is Event.LOCAL_CLOSE
            await eventually(lambda: established_to(port) == 0)


async def _turns_to_connect(ws: Websocket, url: str) -> int:
    """How many loop turns an opening takes here (the most of 5 tries)."""
    most = 0
    for _ in range(5):
        connecting = asyncio.ensure_future(ws.connect(url))
        turns = 0
        while not connecting.done():
            await asyncio.sleep(0)
            turns += 1
        await connecting
        await ws.disconnect(4000)
        most = max(most, turns)
    return most


async def test_a_disconnect_during_connecting_is_its_own_state(make_ws: WebsocketFactory) -> None:
    async def stall(peer: RawPeer) -> None:
        await asyncio.Event().wait()

    async with raw_server(stall) as url:
        ws = make_ws(close_timeout=1)
        connecting = asyncio.ensure_future(ws.connect(url))
        await asyncio.sleep(0.05)
        assert ws.connecting
        disconnecting = asyncio.ensure_future(ws.disconnect())
        await asyncio.sleep(0)
        assert ws.state is WebsocketState.DISCONNECTING
        await disconnecting
        with pytest.raises(DisconnectSignal):
            await connecting
        assert ws.disconnected


# -- values JSON cannot encode ---------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("codec", ["orjson", "json"])
async def test_non_finite_floats_raise_encode_error_and_send_nothing(
    make_ws: WebsocketFactory, value: float, codec: str
) -> None:
    received: list[str | bytes] = []

    async def record(conn: ServerConnection) -> None:
        async for message in conn:
            received.append(message)

    async with websockets_server(record) as url:
        ws = make_ws(json_codec=STDLIB) if codec == "json" else make_ws()
        await ws.connect(url)
        with pytest.raises(EncodeError):
            await ws.send_json({"x": value})
        with pytest.raises(EncodeError):
            await ws.send_json({"nested": [1, {"y": value}]})
        await ws.send_json({"x": None, "ok": 1.5})
        await eventually(lambda: len(received) == 1)
        await ws.disconnect()
        assert received == ['{"x":null,"ok":1.5}']


# -- found by review: interleavings around connect, disconnect and failed sends ----------


@pytest.mark.timeout(60)
async def test_a_second_cancel_of_connect_still_ends_disconnected(
    make_ws: WebsocketFactory,
) -> None:
    async def serve(peer: RawPeer) -> None:
        await peer.handshake()
        await asyncio.Event().wait()

    async with raw_server(serve) as url:
        port = urlsplit(url).port
        assert port is not None
        ws = make_ws(close_timeout=0.5)
        opening_turns = await _turns_to_connect(ws, url)
        for turns in range(1, opening_turns + 3):
            connecting = asyncio.ensure_future(ws.connect(url))
            for _ in range(turns):
                await asyncio.sleep(0)
            connecting.cancel()
            await asyncio.sleep(0)
            connecting.cancel()  # a timeout and an outer cancel, say
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            assert ws.state in (WebsocketState.DISCONNECTED, WebsocketState.CONNECTED)
            await ws.disconnect()
            assert ws.disconnected
            await eventually(lambda: established_to(port) == 0)
        await asyncio.wait_for(ws.connect(url), 10)  # and it still works
        assert ws.connected


async def test_connects_waiting_for_a_disconnect_share_one_new_connection(
    make_ws: WebsocketFactory,
) -> None:
    async def serve(peer: RawPeer) -> None:
        await peer.handshake()
        await asyncio.Event().wait()  # never answers the close: disconnect() takes a while

    async with raw_server(serve) as url:
        port = urlsplit(url).port
        assert port is not None
        ws = make_ws(close_timeout=0.3)
        await ws.connect(url)
        disconnecting = asyncio.ensure_future(ws.disconnect(4000))
        await asyncio.sleep(0)
        assert ws.disconnecting
        first = asyncio.ensure_future(ws.connect(url))
        second = asyncio.ensure_future(ws.connect(url))
        await asyncio.wait_for(asyncio.gather(disconnecting, first, second), 10)
        assert ws.connected
        await eventually(lambda: established_to(port) == 1)
        await ws.send_json({"op": 3})


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/rooms/general chat", "a space"),
        ("/x?q=a b", "a space"),
        ("/a\r\nX-Evil: 1", "a carriage return"),
        ("/tab\there", "a tab"),
        ("/del\x7f", "control character U+007F"),
    ],
)
async def test_a_url_with_a_space_or_control_character_is_refused_at_once(
    make_ws: WebsocketFactory, path: str, problem: str
) -> None:
    # Found by a new-user trial: picows sent the space as it was (the server dropped
    # the request: retried as connect_error for ever), aiohttp encoded it, and both
    # silently dropped CR, LF and tab (Python's URL parser strips them).
    opened: list[str] = []

    async def record(conn: ServerConnection) -> None:
        opened.append(conn.request.path if conn.request is not None else "")

    async with websockets_server(record) as url:
        ws = make_ws()
        given = "  " + url.rstrip("/") + path  # found by review: positions in what was given
        at = min(i for i, c in enumerate(given) if i > 1 and (c <= " " or c == "\x7f"))
        with pytest.raises(InvalidURLError) as caught:
            await ws.connect(given)
        assert str(caught.value).startswith(
            f"URL has {problem} at position {at} (percent-encode it: a space is %20): "
        ), caught.value
        assert ws.disconnected
        assert opened == []
    with pytest.raises(InvalidURLError, match="percent-encode"):
        check_url("ws://bot:hunter 2@127.0.0.1:9/")
    with pytest.raises(InvalidURLError) as caught:
        check_url("ws://bot:hunter 2@127.0.0.1:9/")
    assert "hunter" not in str(caught.value)


async def test_spaces_and_line_breaks_around_a_url_are_dropped(make_ws: WebsocketFactory) -> None:
    # Found by review: a URL read from a file ends with its line feed; it connected
    # before the check above (aiohttp sent a trailing space as /p%20), so it must
    # still, to the URL without them.
    paths: list[str] = []

    async def record(conn: ServerConnection) -> None:
        paths.append(conn.request.path if conn.request is not None else "")
        await conn.wait_closed()

    async with websockets_server(record) as url:
        for given in (f"{url}p\n", f" {url}p", f"\t{url}p \r\n"):
            ws = make_ws()
            await ws.connect(given)
            await eventually(lambda: len(paths) == 1)
            await ws.disconnect()
            assert paths.pop() == "/p"


@pytest.mark.parametrize("data", [b"\xff\xfe", b"caf\xc3", "é".encode("latin-1"), b"\xed\xa0\x80"])
async def test_send_text_refuses_bytes_that_are_not_utf8_and_sends_nothing(
    make_ws: WebsocketFactory, data: bytes
) -> None:
    # Found by a new-user trial: the bytes went out unchecked, the server closed with
    # 1007, and the default policy reconnected, so the application looped.
    async def echo(conn: ServerConnection) -> None:
        async for message in conn:
            await conn.send(message)

    async with websockets_server(echo) as url:
        ws = make_ws()
        await ws.connect(url)
        with pytest.raises(EncodeError, match="text is not valid UTF-8"):
            await ws.send_text(data)
        await ws.send_text('{"d": "café"}'.encode())
        assert await asyncio.wait_for(ws.receive(), 10) == WebsocketPacketJSON({"d": "café"})
        # Found by review: bytes known to be UTF-8 (encode_json's, sent to many
        # connections) may skip the check, which decodes all but ASCII.
        await ws.send_text('{"d": "unchecked é"}'.encode(), check_utf8=False)
        assert await asyncio.wait_for(ws.receive(), 10) == WebsocketPacketJSON({"d": "unchecked é"})
        assert ws.stats.frames_out == 2


async def test_a_connect_to_another_url_during_an_opening_is_refused(
    make_ws: WebsocketFactory,
) -> None:
    # Found by a new-user trial: connect(B) joined the opening to A in flight and
    # returned as if connected to B.
    async def echo(conn: ServerConnection) -> None:
        async for message in conn:
            await conn.send(message)

    async with websockets_server(echo) as first, websockets_server(echo) as second:
        ws = make_ws()
        opening = asyncio.ensure_future(ws.connect(f"{first}?token=hunter2"))
        await asyncio.sleep(0)
        assert ws.state is WebsocketState.CONNECTING
        with pytest.raises(RuntimeError) as caught:
            await ws.connect(second)
        shown = redact_url(f"{first}?token=hunter2")
        assert "hunter2" not in shown
        assert str(caught.value).startswith(f"already connecting to {shown}; "), caught.value
        await asyncio.wait_for(opening, 10)  # the first opening goes on
        await ws.send_json({"op": 1})
        assert await asyncio.wait_for(ws.receive(), 10) == WebsocketPacketJSON({"op": 1})


async def test_a_send_whose_reader_left_reads_the_close_frame_itself(
    make_ws: WebsocketFactory, transport: str
) -> None:
    async def data_then_close(peer: RawPeer) -> None:
        await peer.handshake()
        await peer.read_frame()
        peer.write_frame(frames.TEXT, b'{"op": 5}')
        peer.write_frame(frames.CLOSE, frames.close_payload(4014, "moved"))
        peer.writer.close()

    async with raw_server(data_then_close) as url:
        for _ in range(10):
            ws = make_ws(close_timeout=5)
            await ws.connect(url)
            reading = asyncio.ensure_future(ws.receive())  # reads one frame, then is busy
            await asyncio.sleep(0)
            signal = await asyncio.wait_for(_send_until_signal(ws), 3)  # not close_timeout
            assert (signal.event, signal.code) == (Event.PEER_CLOSE, 4014), repr(signal)
            assert await reading == WebsocketPacketJSON({"op": 5})


def _write_backlog(ws: Websocket) -> int:
    """Bytes the client's asyncio transport holds unwritten (private: no API says it)."""
    conn = ws._conn
    assert conn is not None
    transport: Any = conn.transport
    if isinstance(transport, picows_transport.PicowsTransport):
        return int(transport._underlying.get_write_buffer_size())
    return int(transport._ws.socket_transport.get_write_buffer_size())


@pytest.mark.parametrize("queued", [False, True], ids=["written", "queued"])
async def test_a_send_just_after_the_peer_reset_raises_and_counts_nothing_sent(
    make_ws: WebsocketFactory, queued: bool
) -> None:
    # Written: the write fails at once and asyncio swallows the error; only the
    # transport's state can tell the send. Queued behind unwritten bytes, nothing is
    # even tried: only the kernel can.
    peers: asyncio.Queue[RawPeer] = asyncio.Queue()

    async def handshake_then_wait(peer: RawPeer) -> None:
        await peer.handshake()
        if queued:
            peer.stop_reading()
        await peers.put(peer)
        await asyncio.Event().wait()

    async with raw_server(handshake_then_wait) as url:
        for _ in range(5):
            ws = make_ws()
            await ws.connect(url)
            peer = await peers.get()
            while queued and not _write_backlog(ws):  # until the kernel's buffers are full
                await ws.send_bytes(b"x" * 1024)
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.writer.transport.abort()
            # Woken by the loop turn that closed the socket: the client has not yet
            # had a turn to read the reset, so its send is the first to meet it.
            await peer.writer.wait_closed()
            sent = ws.stats.frames_out
            with pytest.raises(ResumeSignal) as caught:
                await ws.send_json({"op": 3})
            assert caught.value.code == 1006, repr(caught.value)
            assert ws.stats.frames_out == sent
            assert ws.disconnected


@pytest.mark.parametrize(
    ("status", "location", "reason"),
    [
        (404, "ws://b.example/", "HTTP 404"),
        (301, None, "HTTP 301"),
        (
            302,
            "ws://bot:pw@b.example/gw?token=t0k3n&v=8",
            "HTTP 302: a redirect to ws://b.example/gw?token=<redacted>&v=8, not followed"
            " (connect to it directly)",
        ),
    ],
)
def test_status_failure(status: int, location: str | None, reason: str) -> None:
    failure = status_failure(status, location)
    assert (failure.event, failure.code, failure.reason) == (
        Event.HANDSHAKE_STATUS,
        status,
        reason,
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    "location",
    ["{target}moved?token=s3cr3t-TOKEN", "{http_target}moved", "/moved"],
    ids=["ws", "http", "relative"],
)
async def test_a_redirect_is_not_followed_and_is_named_without_its_secrets(
    make_ws: WebsocketFactory, status: int, location: str
) -> None:
    # Following one would send the URL's credentials and every header (a bot token)
    # to wherever it points; picows did, and aiohttp retried a ws:// one for ever.
    reached: list[bytes] = []

    async def target(peer: RawPeer) -> None:
        await peer.handshake()
        reached.append(peer.request)
        await asyncio.Event().wait()

    async with raw_server(target) as target_url:
        moved = location.format(
            target=target_url, http_target=target_url.replace("ws://", "http://", 1)
        )

        async def redirect(peer: RawPeer) -> None:
            peer.request = await peer.reader.readuntil(b"\r\n\r\n")
            peer.writer.write(
                f"HTTP/1.1 {status} Moved\r\nLocation: {moved}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            await peer.writer.drain()

        async with raw_server(redirect) as url:
            ws = make_ws(headers={"Authorization": "Bot s3cr3t-HEADER"})
            with pytest.raises(DisconnectSignal) as caught:
                await ws.connect(url)
    signal = caught.value
    assert (signal.event, signal.code) == (Event.HANDSHAKE_STATUS, status), repr(signal)
    shown = moved.replace("s3cr3t-TOKEN", "<redacted>")
    assert f"a redirect to {shown}, not followed" in signal.reason, signal.reason
    assert "s3cr3t" not in "".join(traceback.format_exception(signal))
    assert reached == []


@pytest.mark.parametrize(
    "url",
    [
        "ws://bot:s3cr3t-PASS/word@gateway.example/",
        "ws://bot:s3cr3t-PASS?word@gateway.example/",
        "ws://bot:s3cr3t-PASS\uff03word@gateway.example/",
    ],
    ids=["slash", "question-mark", "nfkc-hash"],
)
async def test_a_password_that_breaks_url_parsing_never_shows(
    make_ws: WebsocketFactory, url: str
) -> None:
    ws = make_ws()
    with pytest.raises(InvalidURLError) as caught:
        await ws.connect(url)
    assert "s3cr3t-PASS" not in _everything_reachable(caught.value)


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        ("ws://alice:s3c#retpw@127.0.0.1:9000/", ["s3c", "retpw"]),
        ("ws://bob:pw1/longsecretpart@127.0.0.1:9000/", ["pw1", "longsecretpart"]),
        ("ws://bob:ab?cdefgh@127.0.0.1:9000/?token=t0k", ["ab", "cdefgh", "t0k"]),
        # Found by review: these parse (the user name taken for the host), so nothing
        # fell back, and the whole password showed.
        ("ws://bot:/s3cr3tpw@127.0.0.1:9000/", ["s3cr3tpw"]),
        ("ws://bot:?s3cr3tpw@127.0.0.1:9000/", ["s3cr3tpw"]),
        # and the parser's own message, with a quote inside the quoted piece
        ("ws://bot:s3cr'et\uff03pw@127.0.0.1:9000/", ["s3cr", "et\uff03pw"]),
    ],
    ids=["hash", "slash", "question-mark", "slash-first", "empty-port", "quote"],
)
async def test_no_piece_of_a_short_password_shows_when_the_url_breaks(
    make_ws: WebsocketFactory, url: str, pieces: list[str]
) -> None:
    # Found by a new-user trial: pieces under 4 characters were not scrubbed, and the
    # parser's own message quotes the piece it took for a port.
    ws = make_ws()
    with pytest.raises(InvalidURLError) as caught:
        await ws.connect(url)
    shown = _everything_reachable(caught.value)
    assert "127.0.0.1:9000" in shown or "ws://bot:<redacted>/<redacted>" in shown  # where it went
    for piece in pieces:
        assert f"'{piece}'" not in shown
        assert f":{piece}" not in shown
        assert piece not in shown.replace("127.0.0.1:9000", ""), shown


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        # The parser reads host "bot", port 1234 (or 12): a password may hide there.
        ("ws://bot:1234/s3cr3tpw@gw.example/", "ws://bot:<redacted>/<redacted>", ["s3cr3tpw"]),
        ("ws://bot:12/secretpart@gw.example/", "ws://bot:<redacted>/<redacted>", ["secretpart"]),
        ("wss://bot:1234?abcd@gw.example/x", "wss://bot:<redacted>/<redacted>", ["abcd"]),
        # Found by a new-user trial: an = in the password, a one-label host, a password
        # of digits and a slash only.
        ("ws://bot:1234/SE=CRET@example.com/", "ws://bot:<redacted>/<redacted>", ["SE=CRET"]),
        ("ws://bot:1234/SECRET@h/", "ws://bot:<redacted>/<redacted>", ["SECRET"]),
        ("ws://bot:12/@127.0.0.1:9000/", "ws://bot:<redacted>/<redacted>", []),
    ],
)
def test_a_password_the_parser_may_read_as_a_port_and_path_is_never_shown(
    url: str, shown: str, secrets: list[str]
) -> None:
    # Found by review: these parse, so they cannot be refused without refusing real
    # URLs (wss://gw.example:8443/@alice/feed); what they show is redacted instead.
    assert redact_url(url) == shown
    for secret in secrets:
        assert secret in secrets_in((url,), {})


@pytest.mark.parametrize(
    "url",
    [
        "wss://host.example/@alice/stream",
        "wss://host.example/users/me@example.com/feed",
        "wss://[::1]:9000/@x",
        "wss://gw.example/feed?email=a@b.com",
        "wss://gw.example:8443/users/@alice",
        "ws://127.0.0.1:9000/feed?v=8&user=a@b.c",
        "wss://gateway.discord.gg/?v=10&encoding=json",
        "wss://c-fra01.discord.media:443/?v=8",
    ],
)
def test_urls_with_an_at_sign_in_their_path_or_query_are_accepted(url: str) -> None:
    # Found by review: for a while, an @ anywhere after the host was refused.
    check_url(url)


# -- a host name with several addresses ---------------------------------------------


async def _echo(conn: ServerConnection) -> None:
    async for message in conn:
        await conn.send(message)


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
async def test_a_host_whose_first_address_refuses_is_reached_at_its_next(
    make_ws: WebsocketFactory, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    # What every client does with several DNS records (asyncio's create_connection,
    # aiohttp): the picows transport tried only the first. Nothing listens on
    # 127.0.0.2 (or, for IPv6, at the port on ::1); the server is on 127.0.0.1.
    async with websockets_server(_echo) as url:
        port = urlsplit(url).port
        assert port is not None
        dead = {
            "IPv4": (socket.AF_INET, ("127.0.0.2", port)),
            "IPv6": (socket.AF_INET6, ("::1", port, 0, 0)),
        }[family]
        records = [dead, (socket.AF_INET, ("127.0.0.1", port))]
        loop = asyncio.get_running_loop()
        looked_up: list[str] = []

        async def resolve(host: str, *args: object, **kwargs: object) -> list[tuple[Any, ...]]:
            looked_up.append(host)  # the DNS a test cannot run: two records for one name
            return [(f, socket.SOCK_STREAM, 6, "", address) for f, address in records]

        monkeypatch.setattr(loop, "getaddrinfo", resolve)
        ws = make_ws(ping_interval=None)
        await ws.connect(f"ws://wavegate.test:{port}/")
        await ws.send_json({"reached": "the second address"})
        assert await ws.receive() == WebsocketPacketJSON({"reached": "the second address"})
        await ws.disconnect()
    assert looked_up == ["wavegate.test"], "looked up once"


async def test_a_host_whose_every_address_refuses_fails_once_with_no_socket_left(
    make_ws: WebsocketFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed below: nothing listens there
    records = [(socket.AF_INET, ("127.0.0.2", port)), (socket.AF_INET, ("127.0.0.1", port))]

    async def resolve(host: str, *args: object, **kwargs: object) -> list[tuple[Any, ...]]:
        return [(f, socket.SOCK_STREAM, 6, "", address) for f, address in records]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    before = open_fds()
    ws = make_ws(ping_interval=None)
    with pytest.raises(Signal) as caught:
        await ws.connect(f"ws://wavegate.test:{port}/")
    assert caught.value.event is Event.CONNECT_REFUSED
    await eventually(lambda: open_fds() <= before)


async def test_picows_skips_an_address_whose_family_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As IPv6 on a machine where it is off: socket() itself fails for that record.
    # (aiohttp's resolver would not pass such a record on: it asserts the family.)
    async with websockets_server(_echo) as url:
        port = urlsplit(url).port
        records = [(socket.AF_UNIX, ("127.0.0.1", port)), (socket.AF_INET, ("127.0.0.1", port))]

        async def resolve(host: str, *args: object, **kwargs: object) -> list[tuple[Any, ...]]:
            return [(f, socket.SOCK_STREAM, 6, "", address) for f, address in records]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
        options = TransportOptions(ping_interval=None)
        opened = await picows_transport.connect(f"ws://wavegate.test:{port}/", options)
        try:
            opened.send(TEXT, b'{"reached": "the second"}')
            assert await opened.recv() == '{"reached": "the second"}'
        finally:
            await opened.close(1000, "")


@pytest.mark.parametrize("answer", [b"", b"\x15\x03\x01\x00\x02\x02\x46"])
async def test_a_server_that_closes_before_answering_the_handshake_gives_a_signal(
    make_ws: WebsocketFactory, answer: bytes
) -> None:
    # picows returned from the handshake with no response, and connect() raised an
    # AttributeError: a supervisor (VoiceClient's) stopped for good on a TCP reset.
    async def hang_up(peer: RawPeer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.writer.write(answer)  # nothing, or a TLS alert (ws:// to a wss:// port)
        await peer.writer.drain()
        peer.writer.close()

    before = open_fds()
    async with raw_server(hang_up) as url:
        ws = make_ws(open_timeout=10)
        with pytest.raises(Signal) as caught:
            await ws.connect(url)
    assert ws.disconnected
    if not answer:  # nothing at all: worth another try, on every transport
        assert isinstance(caught.value, ReconnectSignal)
        assert caught.value.event is Event.CONNECT_ERROR
    await eventually(lambda: open_fds() <= before)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Found by a new-user trial: signed URLs (S3, GCS, CDN tokens) showed whole.
        ("wss://feed.example/?sig=abc123&room=1", "wss://feed.example/?sig=<redacted>&room=1"),
        (
            "wss://feed.example/?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
            "wss://feed.example/?X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>",
        ),
        ("wss://feed.example/?jwt=eyJ&pwd=x", "wss://feed.example/?jwt=<redacted>&pwd=<redacted>"),
        ("wss://feed.example/?design=dark", "wss://feed.example/?design=dark"),
    ],
)
def test_signatures_and_credentials_in_a_query_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
