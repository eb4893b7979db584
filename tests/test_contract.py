"""SPEC section 3, the behaviour contract: one named test per promise, real sockets."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import pytest

from wavegate import (
    GENERIC,
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    PayloadError,
    ReconnectSignal,
    ResumeSignal,
    Signal,
    Websocket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
    WebsocketState,
)
from wavegate.codec import STDLIB
from wavegate.testing import WebsocketTestServer

from .conftest import WebsocketFactory, eventually


async def send_until_signal(ws: Websocket) -> Signal:
    """Send until the connection's end surfaces as a signal (bounded: 2,000 sends)."""
    for _ in range(2000):
        try:
            await ws.send_json({"op": 3})
        except Signal as signal:
            return signal
        await asyncio.sleep(0.002)
    raise AssertionError("no signal after 2,000 sends")


# -- 1. The state always tells the truth ---------------------------------------------


async def test_refused_connect_ends_disconnected_and_connect_works_again(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    with pytest.raises(ReconnectSignal) as caught:
        await ws.connect("ws://127.0.0.1:1/")
    assert caught.value.event is Event.CONNECT_REFUSED
    assert isinstance(caught.value.__cause__, OSError)  # the transport's error, chained
    assert ws.state is WebsocketState.DISCONNECTED
    await ws.connect(server.url)
    assert ws.connected


async def test_cancelled_connect_ends_disconnected_and_leaves_no_socket_open(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.stall_handshakes()
    ws = make_ws()
    task = asyncio.create_task(ws.connect(server.url))
    await eventually(lambda: server.open_connections == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ws.state is WebsocketState.DISCONNECTED
    await eventually(lambda: server.open_connections == 0)
    server.accept_handshakes()
    await ws.connect(server.url)
    assert ws.connected


async def test_peer_close_ends_disconnected_and_connect_works_again(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    await (await server.accepted()).close(4015)
    with pytest.raises(ResumeSignal):
        await ws.receive()
    assert ws.disconnected
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_json({"op": 9})
    assert await ws.receive() == WebsocketPacketJSON({"op": 9})


async def test_connect_while_connected_raises_runtime_error(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    with pytest.raises(RuntimeError, match="already connected"):
        await ws.connect(server.url)
    assert ws.connected


async def test_disconnect_during_connect_aborts_it_with_disconnect_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.stall_handshakes()
    ws = make_ws()
    task = asyncio.create_task(ws.connect(server.url))
    await eventually(lambda: server.open_connections == 1)
    assert ws.connecting
    await ws.disconnect()
    with pytest.raises(DisconnectSignal) as caught:
        await task
    assert caught.value.initiated_locally
    assert ws.disconnected
    await eventually(lambda: server.open_connections == 0)


async def test_state_properties_match_the_state(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    assert (ws.connected, ws.connecting, ws.disconnected, ws.disconnecting) == (
        False,
        False,
        True,
        False,
    )
    await ws.connect(server.url)
    assert (ws.connected, ws.connecting, ws.disconnected, ws.disconnecting) == (
        True,
        False,
        False,
        False,
    )
    await ws.disconnect()
    assert ws.disconnected


# -- 2. Nothing is silently dropped ---------------------------------------------------


async def test_send_before_any_connect_raises_disconnect_signal(make_ws: WebsocketFactory) -> None:
    ws = make_ws()
    with pytest.raises(DisconnectSignal) as caught:
        await ws.send_json({"op": 1})
    assert caught.value.event is Event.NOT_CONNECTED
    with pytest.raises(DisconnectSignal):
        await ws.send_bytes(b"x")
    with pytest.raises(DisconnectSignal):
        await ws.receive()


async def test_send_after_peer_close_raises_the_signal_of_that_close(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    await (await server.accepted()).close(4006, "gone")
    with pytest.raises(ReconnectSignal):
        await ws.receive()
    for _ in range(2):
        with pytest.raises(ReconnectSignal) as caught:
            await ws.send_json({"op": 3})
        assert (caught.value.code, caught.value.reason) == (4006, "gone")


async def test_send_after_tcp_drop_raises_a_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    conn.drop()
    await conn.wait_closed()
    # The first writes may still land in the kernel buffer; the drop must surface.
    assert isinstance(await send_until_signal(ws), ResumeSignal)
    assert ws.disconnected


async def test_first_send_after_a_connection_reset_raises_instead_of_vanishing(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    # asyncio swallows a write that fails at once; the transport must notice it.
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.reset()
    with pytest.raises(ResumeSignal):
        await ws.send_json({"op": 3})
    assert ws.disconnected


async def test_frames_that_arrived_before_a_failed_send_are_still_delivered(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    for n in range(5):
        await conn.send_json({"n": n})
    conn.drop()  # FIN after the frames (an RST would make the kernel discard them)
    for _ in range(10):  # loop turns: the client reads the frames and the FIN
        await asyncio.sleep(0)
    with pytest.raises(ResumeSignal) as failed_send:
        await ws.send_json({"op": 3})  # the send notices the end first
    assert ws.disconnected
    assert [await ws.receive() for _ in range(5)] == [
        WebsocketPacketJSON({"n": n}) for n in range(5)
    ]
    with pytest.raises(ResumeSignal) as caught:
        await ws.receive()
    assert caught.value.event is failed_send.value.event  # one ending, one instruction


async def test_send_after_local_disconnect_raises_disconnect_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    await ws.disconnect()
    with pytest.raises(DisconnectSignal) as caught:
        await ws.send_text("late")
    assert caught.value.initiated_locally
    assert caught.value.event is Event.LOCAL_CLOSE


async def test_frames_before_a_close_are_delivered_before_the_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    for n in range(50):
        await conn.send_json({"n": n})
        await conn.send_bytes(n.to_bytes(2, "big"))
    await conn.close(4015)
    await conn.wait_closed()
    received = [await ws.receive() for _ in range(100)]
    assert received[0::2] == [WebsocketPacketJSON({"n": n}) for n in range(50)]
    assert received[1::2] == [WebsocketPacketBytes(n.to_bytes(2, "big")) for n in range(50)]
    with pytest.raises(ResumeSignal):
        await ws.receive()


async def test_frames_before_a_tcp_drop_are_delivered_before_the_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    for n in range(20):
        await conn.send_json({"n": n})
    conn.drop()
    assert [await ws.receive() for _ in range(20)] == [
        WebsocketPacketJSON({"n": n}) for n in range(20)
    ]
    with pytest.raises(ResumeSignal) as caught:
        await ws.receive()
    assert caught.value.event is Event.NO_CLOSE_FRAME


@pytest.mark.parametrize("text", ["not json", "{", '{"a": }', ""])
async def test_invalid_json_raises_payload_error_with_raw_text_and_connection_stays_usable(
    server: WebsocketTestServer, make_ws: WebsocketFactory, text: str
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_text(text)
    await conn.send_json({"after": True})
    with pytest.raises(PayloadError) as caught:
        await ws.receive()
    assert caught.value.raw == text
    assert isinstance(caught.value, RuntimeError)
    assert await ws.receive() == WebsocketPacketJSON({"after": True})
    assert ws.connected


@pytest.mark.parametrize("text", ["[1, 2]", "42", '"string"', "null", "true"])
async def test_json_that_is_not_an_object_raises_payload_error(
    server: WebsocketTestServer, make_ws: WebsocketFactory, text: str
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_text(text)
    await conn.send_json({"ok": 1})
    with pytest.raises(PayloadError, match="not an object") as caught:
        await ws.receive()
    assert caught.value.raw == text
    assert await ws.receive() == WebsocketPacketJSON({"ok": 1})


async def test_stdlib_codec_behaves_the_same(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(json_codec=STDLIB)
    await ws.connect(server.url)
    conn = await server.accepted()
    await ws.send_json({"héllo": [1, 2.5, None]})
    assert await conn.receive_json() == {"héllo": [1, 2.5, None]}
    await conn.send_text("nope")
    with pytest.raises(PayloadError):
        await ws.receive()
    with pytest.raises(EncodeError):
        await ws.send_json({"x": float("nan")})


# -- 3. Nothing hangs ----------------------------------------------------------------


async def test_open_timeout_bounds_a_server_that_never_answers_the_handshake(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.stall_handshakes()
    ws = make_ws(open_timeout=0.2)
    with pytest.raises(ReconnectSignal) as caught:
        await ws.connect(server.url)
    assert caught.value.event is Event.CONNECT_TIMEOUT
    assert ws.disconnected
    await eventually(lambda: server.open_connections == 0)


async def test_close_timeout_bounds_a_peer_that_never_answers_the_close(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(close_timeout=0.2)
    await ws.connect(server.url)
    conn = await server.accepted()
    conn.answer_close = False
    await ws.disconnect(4000)
    assert ws.disconnected
    assert conn.close_received == (4000, "")
    await conn.wait_closed()


async def test_disconnect_wakes_a_receive_blocked_in_another_task(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    await server.accepted()
    receiving = asyncio.create_task(ws.receive())
    await asyncio.sleep(0)
    await ws.disconnect()
    with pytest.raises(DisconnectSignal) as caught:
        await receiving
    assert caught.value.initiated_locally
    assert ws.disconnected


async def test_disconnect_is_idempotent_and_concurrent_calls_all_return(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.disconnect()
    await ws.connect(server.url)
    await asyncio.gather(ws.disconnect(), ws.disconnect(), ws.disconnect())
    await ws.disconnect()
    assert ws.disconnected


async def test_keepalive_detects_a_half_open_connection(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.answer_pings = False
    ws = make_ws(ping_interval=0.1, ping_timeout=0.2)
    await ws.connect(server.url)
    started = time.monotonic()
    with pytest.raises(ResumeSignal) as caught:
        await ws.receive()
    assert caught.value.event is Event.KEEPALIVE_TIMEOUT
    assert time.monotonic() - started < 2.0
    assert ws.disconnected


async def test_keepalive_timeout_is_reported_to_a_sender_that_never_receives(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.answer_pings = False
    ws = make_ws(ping_interval=0.05, ping_timeout=0.1)
    await ws.connect(server.url)
    signal = await send_until_signal(ws)
    assert isinstance(signal, ResumeSignal)
    assert signal.event in (Event.KEEPALIVE_TIMEOUT, Event.TRANSPORT_ERROR)


async def test_keepalive_keeps_a_healthy_idle_connection(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(ping_interval=0.05, ping_timeout=0.5)
    await ws.connect(server.url)
    conn = await server.accepted()
    receiving = asyncio.create_task(ws.receive())
    await eventually(lambda: conn.pings_received >= 3)
    assert ws.connected
    await conn.send_json({"still": "here"})
    assert await receiving == WebsocketPacketJSON({"still": "here"})


async def test_an_idle_connection_with_keepalive_runs_no_task_of_its_own(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    """Keepalive pings are timers: a connection holds no task of its own for them (at
    thousands of connections, a task waiting out each interval held ~1.5 KiB apiece,
    and the garbage collector swept them all), not even while a ping waits for its
    pong."""

    def transport_tasks() -> list[str]:
        names = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
        return [name for name in names if "Transport." in name]

    ws = make_ws(ping_interval=0.05, ping_timeout=5)
    await ws.connect(server.url)
    conn = await server.accepted()
    await eventually(lambda: conn.pings_received >= 3)
    assert transport_tasks() == []
    await eventually(lambda: conn.pings_received >= 6)  # and the pings go on
    assert transport_tasks() == []
    assert ws.connected
    await ws.disconnect()
    await eventually(lambda: transport_tasks() == [])
    timers = vars(asyncio.get_running_loop())["_scheduled"]
    keepalive = [h for h in timers if "_keepalive" in repr(h) or "_ping" in repr(h)]
    assert [h for h in keepalive if not h.cancelled()] == []


# -- 4. Concurrency and cancellation -------------------------------------------------


async def test_concurrent_sends_are_serialized_without_interleaving(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()

    async def sender(task_id: int) -> None:
        for n in range(20):
            await ws.send_bytes(bytes([task_id]) * (70_000 + n))

    await asyncio.gather(*(sender(i) for i in range(8)))
    seen: dict[int, list[int]] = {i: [] for i in range(8)}
    for _ in range(160):
        _, payload = await conn.receive()
        assert payload == payload[:1] * len(payload)
        seen[payload[0]].append(len(payload) - 70_000)
    assert all(order == list(range(20)) for order in seen.values())


async def test_a_second_concurrent_receive_raises_runtime_error(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    first = asyncio.create_task(ws.receive())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="only one reader"):
        await ws.receive()
    await conn.send_json({"a": 1})
    assert await first == WebsocketPacketJSON({"a": 1})


async def test_cancelling_receive_loses_no_message(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    for _ in range(5):
        waiting = asyncio.create_task(ws.receive())
        await asyncio.sleep(0.001)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    for n in range(200):
        await conn.send_json({"n": n})
    got: list[int] = []
    while len(got) < 200:
        # Cancel receives at arbitrary points while frames keep arriving.
        try:
            packet = await asyncio.wait_for(ws.receive(), 0.0005 if len(got) % 3 else 1.0)
        except asyncio.TimeoutError:
            continue
        assert isinstance(packet, WebsocketPacketJSON)
        got.append(packet.payload["n"])
    assert got == list(range(200))


async def test_send_and_receive_during_an_in_flight_connect_wait_for_it(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.handshake_delay = 0.1
    ws = make_ws()
    connecting = asyncio.create_task(ws.connect(server.url))
    await asyncio.sleep(0.01)
    assert ws.connecting
    receiving = asyncio.create_task(ws.receive())
    await ws.send_json({"early": True})
    await connecting
    conn = await server.accepted()
    assert await conn.receive_json() == {"early": True}
    await conn.send_json({"hello": 1})
    assert await receiving == WebsocketPacketJSON({"hello": 1})


async def test_send_during_a_connect_that_fails_raises_its_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    server.handshake_delay = 0.05
    server.reject_handshakes(403)
    ws = make_ws()
    connecting = asyncio.create_task(ws.connect(server.url))
    await asyncio.sleep(0.01)
    with pytest.raises(DisconnectSignal) as caught:
        await ws.send_json({"early": True})
    assert caught.value.code == 403
    with pytest.raises(DisconnectSignal):
        await connecting


async def test_concurrent_connects_share_one_connection(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await asyncio.gather(ws.connect(server.url), ws.connect(server.url))
    assert ws.connected
    assert server.handshakes == 1


# -- 5. Bad input gets a clear error -------------------------------------------------


async def test_wrong_types_raise_type_error_before_touching_the_socket(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    with pytest.raises(TypeError, match="a JSON message must be a dict"):
        await ws.send_json([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes bytes"):
        await ws.send_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a str or bytes"):
        await ws.send_text(42)  # type: ignore[arg-type]
    assert ws.connected
    assert ws.stats.frames_out == 0


@pytest.mark.parametrize(
    "value", [{"x": object()}, {"x": {1, 2}}, {"big": 2**70}, {1: "non-str key"}]
)
async def test_values_json_cannot_encode_raise_encode_error_and_send_nothing(
    server: WebsocketTestServer, make_ws: WebsocketFactory, value: dict[object, object]
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    with pytest.raises(EncodeError):
        await ws.send_json(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # EncodeError is a TypeError too
        await ws.send_json(value)  # type: ignore[arg-type]
    await ws.send_json({"next": 1})
    assert await conn.receive_json() == {"next": 1}


async def test_lone_surrogates_in_send_text_raise_encode_error(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    with pytest.raises(EncodeError):
        await ws.send_text("\ud800")


async def test_oversized_frame_is_closed_with_1009_and_signalled(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(max_size=1024)
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_bytes(b"x" * 1024)
    await conn.send_bytes(b"x" * 1025)
    assert await ws.receive() == WebsocketPacketBytes(b"x" * 1024)
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert (caught.value.code, caught.value.event) == (1009, Event.PROTOCOL_ERROR)
    assert caught.value.initiated_locally
    await conn.wait_closed()
    assert conn.close_received is not None
    assert conn.close_received[0] == 1009


async def test_oversized_frame_under_generic_policy_is_a_disconnect(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(max_size=100, policy=GENERIC)
    await ws.connect(server.url)
    await (await server.accepted()).send_text("x" * 101)
    with pytest.raises(DisconnectSignal):
        await ws.receive()


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (bytes([0xC1, 2]) + b"{}", "RSV1 set with no extension negotiated"),
        (bytes([0x83, 0]), "reserved opcode 3"),
        (bytes([0x09 & 0x0F, 0]), "fragmented control frame (ping without FIN)"),
        (bytes([0x80, 1]) + b"x", "continuation with nothing to continue"),
    ],
)
async def test_malformed_frames_fail_the_connection_with_a_signal(
    server: WebsocketTestServer, make_ws: WebsocketFactory, frame: bytes, what: str
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_json({"before": what})
    await conn.send_raw(frame)
    assert await ws.receive() == WebsocketPacketJSON({"before": what})
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert caught.value.event is Event.PROTOCOL_ERROR
    assert caught.value.code == 1002
    assert ws.disconnected


async def test_a_masked_frame_from_a_server_is_never_corrupted(
    server: WebsocketTestServer, make_ws: WebsocketFactory, transport: str
) -> None:
    # RFC 6455 5.1: a client must fail the connection (picows does, with 1002);
    # aiohttp is lenient and unmasks it. Either way the data is never corrupted.
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    mask = b"\x01\x02\x03\x04"
    payload = b'{"a":1}'
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    await conn.send_raw(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    if transport == "aiohttp":
        assert await ws.receive() == WebsocketPacketJSON({"a": 1})
    else:
        with pytest.raises(Signal) as caught:
            await ws.receive()
        assert (caught.value.code, caught.value.event) == (1002, Event.PROTOCOL_ERROR)


@pytest.mark.parametrize("mode", ["json", "text"])
async def test_invalid_utf8_text_fails_the_connection_with_1007(
    server: WebsocketTestServer, make_ws: WebsocketFactory, mode: str
) -> None:
    ws = make_ws(receive_mode=mode)
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_text(b'{"a": "\xff\xfe"}')
    with pytest.raises(Signal) as caught:
        await ws.receive()
    assert (caught.value.code, caught.value.event) == (1007, Event.PROTOCOL_ERROR)
    await conn.wait_closed()
    assert conn.close_received is not None
    assert conn.close_received[0] == 1007


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "127.0.0.1:80", "ws://", "ws://host:99999/", "wss://:80/", ""]
)
async def test_malformed_urls_raise_value_error_at_once(
    make_ws: WebsocketFactory, url: str
) -> None:
    ws = make_ws()
    with pytest.raises(InvalidURLError):
        await ws.connect(url)
    with pytest.raises(ValueError, match="URL"):
        await ws.connect(url)
    assert ws.disconnected


@pytest.mark.parametrize(
    ("code", "reason"), [(1001, ""), (2000, ""), (5000, ""), (1000, "x" * 124)]
)
async def test_invalid_local_close_code_or_reason_raises_value_error(
    server: WebsocketTestServer, make_ws: WebsocketFactory, code: int, reason: str
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    with pytest.raises(ValueError, match=r"close (code|reason)"):
        await ws.disconnect(code, reason)
    assert ws.connected


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"open_timeout": 0}, "open_timeout"),
        ({"close_timeout": -1}, "close_timeout"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"max_size": 0}, "max_size"),
        ({"receive_mode": "xml"}, "receive_mode"),
        ({"transport": "carrier-pigeon"}, "transport"),
    ],
)
def test_invalid_options_raise_value_error(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Websocket(**options)  # type: ignore[arg-type]


def test_a_policy_that_is_not_a_close_policy_raises_type_error() -> None:
    with pytest.raises(TypeError, match="ClosePolicy"):
        Websocket(policy={4015: "resume"})  # type: ignore[arg-type]


# -- 6. No secrets in logs ------------------------------------------------------------


async def test_tokens_in_url_and_headers_never_appear_in_logs_or_reprs(
    server: WebsocketTestServer, make_ws: WebsocketFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SECRET-TOKEN-123"
    caplog.set_level(logging.DEBUG)
    ws = make_ws(headers={"Authorization": secret})
    url = f"ws://127.0.0.1:{server.port}/?v=8&token={secret}"
    await ws.connect(url)
    conn = await server.accepted()
    assert conn.request_headers["authorization"] == secret
    texts = [repr(ws)]
    await conn.close(4015)
    with pytest.raises(ResumeSignal) as caught:
        await ws.receive()
    texts += [repr(ws), str(caught.value), repr(caught.value)]
    server.reject_handshakes(401)
    with pytest.raises(DisconnectSignal) as failed:
        await ws.connect(url)
    texts += [repr(ws), str(failed.value), repr(failed.value)]
    with pytest.raises(InvalidURLError) as misuse:  # credentials in the URL and a header
        await ws.connect(f"ws://user:{secret}@127.0.0.1:{server.port}/")
    texts += [repr(ws), str(misuse.value)]
    assert ws.disconnected
    texts += [record.getMessage() for record in caplog.records]
    assert any("127.0.0.1" in text for text in texts)
    assert not [text for text in texts if secret in text]


async def test_credentials_in_the_url_are_sent_as_basic_authorization(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(f"ws://us%40er:pa%3Ass@127.0.0.1:{server.port}/?v=8")
    conn = await server.accepted()
    expected = base64.b64encode(b"us@er:pa:ss").decode()
    assert conn.request_headers["authorization"] == f"Basic {expected}"
    assert "pa%3Ass" not in repr(ws)


# -- Extensions: raw text mode, counters, context manager ----------------------------


async def test_text_mode_returns_raw_text_and_send_text_sends_it(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws(receive_mode="text")
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.send_text("not json at all ✓")
    assert await ws.receive() == WebsocketPacketText("not json at all ✓")
    await ws.send_text("plain ✓")
    assert await conn.receive_text() == "plain ✓"


async def test_counters_count_data_frames_and_bytes(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await ws.send_bytes(b"12345")
    await ws.send_text("abc")
    await conn.send_bytes(b"1234567")
    await ws.receive()
    assert (ws.stats.frames_out, ws.stats.bytes_out, ws.stats.frames_in, ws.stats.bytes_in) == (
        2,
        8,
        1,
        7,
    )


async def test_async_with_disconnects_on_exit(server: WebsocketTestServer) -> None:
    async with Websocket() as ws:
        await ws.connect(server.url)
        conn = await server.accepted()
    assert ws.disconnected
    await conn.wait_closed()
    assert conn.close_received == (1000, "")


async def test_many_connections_on_one_loop_all_open_and_close(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    # The aiohttp transport shares one session per loop: no connection limit may apply.
    sockets = [make_ws() for _ in range(120)]
    await asyncio.gather(*(ws.connect(server.url) for ws in sockets))
    assert all(ws.connected for ws in sockets)
    assert server.handshakes == 120
    await asyncio.gather(*(ws.disconnect() for ws in sockets))
    await eventually(lambda: server.open_connections == 0)
