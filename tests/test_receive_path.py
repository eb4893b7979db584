"""The receive path of each transport variant (aiohttp, picows with the compiled
listener, picows with its fallback) where the compiled listener does its own work:
its ring of messages, fragments, read backpressure, and which transport is chosen."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import sys
import time

import pytest

import wavegate
from wavegate import Event, Signal, Websocket, WebsocketPacketBytes, WebsocketPacketText
from wavegate.discord.voice import VoiceClient
from wavegate.packets import WebsocketPacketJSON
from wavegate.signals import PayloadError
from wavegate.testing import WebsocketTestServer, frames
from wavegate.transport import default_transport, picows_transport

from .conftest import WebsocketFactory, eventually
from .peers import ForeignVoiceGateway, RawPeer, raw_server, websockets_server
from .voice_harness import CREDENTIALS


async def test_thousands_of_unread_messages_arrive_whole_and_in_order(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    # More than the ring's first slots and its pause mark: it grows, the socket stops
    # being read and is read again, and nothing is lost or reordered.
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    sent = 3000
    blob = b"".join(
        frames.encode_frame(1, b'{"n":%d}' % n) if n % 3 else frames.encode_frame(2, b"%d" % n)
        for n in range(sent)
    )
    await conn.send_raw(blob)
    for n in range(sent):
        packet = await ws.receive()
        if n % 3:
            assert packet == WebsocketPacketJSON({"n": n})
        else:
            assert packet == WebsocketPacketBytes(b"%d" % n)
    assert ws.stats.frames_in == sent


async def test_unread_large_messages_stop_the_socket_being_read(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(max_size=1 << 20)
    await ws.connect(server.url)
    conn = await server.accepted()
    big = b"x" * (256 << 10)
    # 64 MiB offered: the client stops reading long before, so the server's writes
    # block; then every message is still delivered.
    count = 256
    sending = [conn.send_bytes(big) for _ in range(count)]
    writer = asyncio.ensure_future(asyncio.gather(*sending))
    await eventually(lambda: conn.write_blocked(), 20)
    assert not writer.done()
    for _ in range(count):
        assert await ws.receive() == WebsocketPacketBytes(big)
    await writer


async def test_fragments_are_joined_across_multibyte_characters(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(receive_mode="text")
    await ws.connect(server.url)
    conn = await server.accepted()
    text = "héllo wörld ✓".encode()
    pieces = [text[:2], text[2:9], text[9:]]  # splits inside é and inside ✓
    raw = frames.encode_frame(1, pieces[0], fin=False)
    raw += frames.encode_frame(9, b"ping between fragments")
    raw += frames.encode_frame(0, pieces[1], fin=False) + frames.encode_frame(0, pieces[2])
    await conn.send_raw(raw)
    assert await ws.receive() == WebsocketPacketText("héllo wörld ✓")
    assert ws.stats.bytes_in == len("héllo wörld ✓")  # characters of a text frame


async def test_a_fragmented_message_over_max_size_fails_with_1009(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(max_size=1000)
    await ws.connect(server.url)
    conn = await server.accepted()
    raw = frames.encode_frame(2, b"a" * 600, fin=False) + frames.encode_frame(0, b"b" * 600)
    await conn.send_raw(frames.encode_frame(2, b"first") + raw)
    assert await ws.receive() == WebsocketPacketBytes(b"first")
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert (caught.value.code, caught.value.event) == (1009, Event.PROTOCOL_ERROR)
    await conn.wait_closed()
    assert conn.close_received is not None
    assert conn.close_received[0] == 1009


async def test_invalid_utf8_split_across_fragments_fails_with_1007(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    raw = frames.encode_frame(1, b'{"a":"\xe2\x82', fin=False) + frames.encode_frame(0, b'("}')
    await conn.send_raw(raw)
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert (caught.value.code, caught.value.event) == (1007, Event.PROTOCOL_ERROR)


@pytest.mark.parametrize("rsv", [1, 2, 4])
async def test_a_reserved_bit_fails_the_connection_after_what_came_before(
    server: WebsocketTestServer, make_ws: WebsocketFactory, transport: str, rsv: int
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_json({"before": rsv})
    await conn.send_raw(frames.encode_frame(1, b"{}", rsv=rsv))
    assert await ws.receive() == WebsocketPacketJSON({"before": rsv})
    if transport == "picows" and rsv != 4 and picows_transport.LISTENER == "python":
        # picows' own connection checks RSV1 only (conformance/allowlist.txt).
        assert await ws.receive() == WebsocketPacketJSON({})
        return
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert (caught.value.code, caught.value.event) == (1002, Event.PROTOCOL_ERROR)


async def test_a_payload_error_from_the_fast_path_leaves_the_connection_usable(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_raw(frames.encode_frame(1, b"[1, 2]") + frames.encode_frame(1, b"{bad"))
    await conn.send_json({"after": True})
    with pytest.raises(PayloadError, match="not an object") as first:
        await ws.receive()
    assert first.value.raw == "[1, 2]"
    with pytest.raises(PayloadError, match="not valid JSON") as second:
        await ws.receive()
    assert second.value.raw == "{bad"
    assert await ws.receive() == WebsocketPacketJSON({"after": True})
    assert ws.stats.frames_in == 3


async def test_a_transport_that_fails_while_connect_returns_leaves_nothing_open(
    server: WebsocketTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("taker broke")

    monkeypatch.setattr(picows_transport.PicowsTransport, "taker", broken)
    ws = Websocket(transport="picows")
    with pytest.raises(RuntimeError, match="taker broke"):
        await ws.connect(server.url)
    assert ws.disconnected
    conn = await server.accepted()
    await conn.wait_closed()


def test_transports_names_each_transport_and_the_default() -> None:
    found = {info.name: info for info in wavegate.transports()}
    assert set(found) == {"aiohttp", "picows"}
    assert [info.name for info in found.values() if info.default] == ["picows"]
    assert found["aiohttp"].detail.startswith("aiohttp ")
    if picows_transport.LISTENER == "compiled":
        assert found["picows"].detail.endswith("compiled listener")
    else:
        assert "Python-facing connection" in found["picows"].detail
    assert default_transport() == "picows"
    assert default_transport(compression=True) == "aiohttp"


async def test_compression_without_a_named_transport_uses_aiohttp(
    server: WebsocketTestServer,
) -> None:
    ws = Websocket(compression=True)
    try:
        await ws.connect(server.url)  # picows would refuse compression=True
        conn = await server.accepted()
        await conn.send_json({"ok": 1})
        assert await ws.receive() == WebsocketPacketJSON({"ok": 1})
    finally:
        await ws.disconnect()


def test_the_fallback_listener_can_be_chosen_and_says_so() -> None:
    env = {"WAVEGATE_PICOWS_LISTENER": "python", "PATH": ""}
    shown = subprocess.run(
        [sys.executable, "-m", "wavegate", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Python-facing connection (WAVEGATE_PICOWS_LISTENER=python) (default)" in shown.stdout


def test_a_compiled_listener_older_than_the_transport_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An editable install whose extension was not rebuilt after a change to what the
    # transport calls: refused with a reason, so the fallback runs (not half of it).
    try:
        from wavegate.transport import _picows_listener
    except ImportError:  # no compiler when this was installed: the fallback runs
        assert picows_transport._compiled_listener()[0] is None
        return
    kind, why = picows_transport._compiled_listener()
    assert kind is _picows_listener.Listener, why
    monkeypatch.setattr(_picows_listener, "API", 1)
    kind, why = picows_transport._compiled_listener()
    assert kind is None
    assert why == "compiled listener out of date (API 1, this wavegate needs 2): reinstall wavegate"


async def test_the_compiled_listener_refuses_packet_classes_it_cannot_build() -> None:
    try:
        from wavegate.transport._picows_listener import Listener
    except ImportError:
        # No compiler when this was installed: the fallback is what runs, and says so.
        assert picows_transport.LISTENER == "python"
        assert "compiled listener unavailable" in picows_transport.describe()
        return

    class Unslotted:
        payload: object = None

    listener = Listener(object(), 1024)
    assert listener.take() is None  # nothing has arrived
    with pytest.raises(TypeError, match="not a __slots__ member"):
        listener.configure(
            len,
            True,
            Unslotted,  # type: ignore[arg-type]
            WebsocketPacketText,
            WebsocketPacketBytes,
            PayloadError,
        )


async def test_a_keepalive_expiring_after_the_peers_close_does_not_replace_it(
    make_ws: WebsocketFactory, transport: str
) -> None:
    # The peer sends a message and close 4014, then neither answers pings nor closes
    # TCP. The close is the ending, whatever the keepalive sees while nobody reads.
    loop = asyncio.get_running_loop()
    pinged: asyncio.Future[None] = loop.create_future()
    hung_up: asyncio.Future[None] = loop.create_future()

    async def close_and_linger(conn: RawPeer) -> None:
        close = struct.pack("!H", 4014) + b"kicked"
        first = frames.encode_frame(1, b'{"n":1}')
        await conn.handshake(then=first + frames.encode_frame(8, close))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                opcode, _ = await conn.read_frame()  # our echo, perhaps pings: unanswered
                if opcode == 9 and not pinged.done():
                    pinged.set_result(None)
        hung_up.set_result(None)

    async with raw_server(close_and_linger) as url:
        ws = make_ws(ping_interval=0.05, ping_timeout=0.05, close_timeout=1)
        await ws.connect(url)
        if transport == "aiohttp":
            # aiohttp reads the close frame only when asked: it pings meanwhile, gets no
            # pong, and must not call the peer dead for it.
            await asyncio.wait_for(pinged, 20)
        else:
            # picows reads it at once, echoes it, and drops the connection after the
            # close timeout (the keepalive expired long before).
            await asyncio.wait_for(hung_up, 20)
        assert await ws.receive() == WebsocketPacketJSON({"n": 1})
        with pytest.raises(Signal) as caught:
            await ws.receive()
        assert (caught.value.code, caught.value.event) == (4014, Event.PEER_CLOSE)


async def test_disconnect_with_unread_messages_waiting_still_reads_the_peers_close(
    server: WebsocketTestServer, make_ws: WebsocketFactory, transport: str
) -> None:
    # Past its buffer the client stops reading the socket; disconnect() must read again,
    # or the server's answering close (and its hang-up) wait for the close timeout.
    fallback = transport == "picows" and picows_transport.LISTENER == "python"
    # picows' own connection does not get there (known: the close timeout ends it).
    ws = make_ws(close_timeout=1 if fallback else 60)
    await ws.connect(server.url)
    conn = await server.accepted()
    # 16 MiB: more than the kernel's socket buffers on loopback may grow to.
    blob = b"".join(frames.encode_frame(2, b"x" * 4096) for _ in range(4096))
    sending: asyncio.Future[None] = asyncio.ensure_future(conn.send_raw(blob))
    await eventually(conn.write_blocked, 20)  # the client stopped reading its socket
    await asyncio.wait_for(ws.disconnect(), 20)
    assert ws.disconnected
    await conn.wait_closed()
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await sending
    assert conn.close_received is not None
    assert conn.close_received[0] == 1000


@pytest.mark.timeout(30)
async def test_a_pong_that_came_during_a_loop_stall_counts(make_ws: WebsocketFactory) -> None:
    # The loop stalls past a ping's deadline (a long garbage collection, a slow
    # callback) while the pong waits in the socket: it counts, the peer is not dead.
    pinged: asyncio.Queue[None] = asyncio.Queue()

    async def answer_pings(conn: RawPeer) -> None:
        await conn.handshake()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                opcode, payload = await conn.read_frame()
                if opcode == 9:
                    conn.write_frame(10, payload)  # written at once: in the client's socket
                    pinged.put_nowait(None)
                elif opcode == 1:
                    conn.write_frame(1, payload)

    async with raw_server(answer_pings) as url:
        # A timeout no busy machine's scheduling comes near, and stalls longer still.
        ws = make_ws(ping_interval=0.05, ping_timeout=0.5)
        await ws.connect(url)
        receiving = asyncio.create_task(ws.receive())
        for _ in range(2):
            await pinged.get()
            time.sleep(0.8)  # noqa: ASYNC251 (the fault itself: the loop stalls past the deadline)
        assert ws.connected
        await ws.send_json({"still": "here"})
        assert await receiving == WebsocketPacketJSON({"still": "here"})


@pytest.mark.timeout(30)
async def test_a_ping_that_cannot_be_sent_ends_the_connection_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The keepalive sends its pings from a timer: an error there, left to the loop,
    # would only be logged, and the pings would stop for good, unnoticed.
    def broken(self: object) -> None:
        raise RuntimeError("no ping today")

    monkeypatch.setattr(picows_transport, "LISTENER", "python")
    monkeypatch.setattr(picows_transport._Listener, "ping_now", broken)

    async def silent(conn: RawPeer) -> None:
        await conn.handshake()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await conn.read_frame()

    async with raw_server(silent) as url:
        ws = Websocket(transport="picows", ping_interval=0.05)
        await ws.connect(url)
        with pytest.raises(Signal) as caught:
            await ws.receive()
        signal = caught.value
        assert (signal.event, signal.code, signal.reason) == (
            Event.TRANSPORT_ERROR,
            1006,
            "ping: no ping today",
        )
        assert isinstance(signal.__cause__, RuntimeError)
        await ws.disconnect()


async def test_the_smallest_read_buffer_grows_for_messages_far_larger(
    make_ws: WebsocketFactory,
) -> None:
    sizes = [10, 5000, 300_000, 3000, 70_000, 1]

    async def send_them(conn: object) -> None:
        for n, size in enumerate(sizes):
            await conn.send(bytes([n]) * size)  # type: ignore[attr-defined]
        await conn.wait_closed()  # type: ignore[attr-defined]

    async with websockets_server(send_them) as url:
        ws = make_ws(read_buffer_size=2048)
        await ws.connect(url)
        for n, size in enumerate(sizes):
            assert await ws.receive() == WebsocketPacketBytes(bytes([n]) * size)
        await ws.disconnect()


@pytest.fixture
def picows_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The keyword arguments of every ``picows.ws_connect`` call (it still runs)."""
    import picows

    calls: list[dict[str, object]] = []
    real = picows.ws_connect

    def recording(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(picows, "ws_connect", recording)
    return calls


async def test_picows_gets_the_read_buffer_asked_for(
    picows_calls: list[dict[str, object]],
) -> None:
    async with websockets_server(_echo_all) as url:
        for size in (2048, 4096, 1 << 20):
            ws = Websocket(transport="picows", read_buffer_size=size)
            await ws.connect(url)
            await ws.send_json({"size": size})
            assert await ws.receive() == WebsocketPacketJSON({"size": size})
            await ws.disconnect()
    assert [call["read_buffer_init_size"] for call in picows_calls] == [2048, 4096, 1 << 20]
    # ws://: asyncio's transport, until 3.12 made its writes cost the whole backlog.
    assert [call["use_aiofastnet"] for call in picows_calls] == [sys.version_info >= (3, 12)] * 3


async def test_a_voice_client_reads_with_the_smallest_buffer_unless_given_a_websocket(
    picows_calls: list[dict[str, object]],
) -> None:
    # 2 KiB less per session (workload G); a voice gateway's messages are small.
    foreign = ForeignVoiceGateway(4006)
    async with foreign.running() as url:
        async with VoiceClient(url, CREDENTIALS) as voice:
            await voice.wait_ready(10)
        given = Websocket(transport="picows", read_buffer_size=8192)
        async with VoiceClient(url, CREDENTIALS, websocket=given) as voice:
            assert voice.ws is given
            await voice.wait_ready(10)
    assert [call["read_buffer_init_size"] for call in picows_calls] == [2048, 8192]


async def _echo_all(conn: object) -> None:
    async for message in conn:  # type: ignore[attr-defined]
        await conn.send(message)  # type: ignore[attr-defined]
