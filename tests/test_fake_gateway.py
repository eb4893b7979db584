"""The fake voice gateway enforces the protocol the way Discord does (reference §10)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from wavegate import DisconnectSignal, ReconnectSignal, Signal, Websocket, WebsocketPacketJSON
from wavegate.discord.voice import VoiceClient
from wavegate.session import EventKind, SessionEvent
from wavegate.testing import HandlerError, WebsocketTestServer, frames
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import WebsocketFactory, eventually
from .voice_harness import CREDENTIALS

IDENTIFY_DATA = {
    "server_id": "1",
    "user_id": "2",
    "session_id": "s",
    "token": "t",
    "max_dave_protocol_version": 1,
}
IDENTIFY = {"op": 0, "d": IDENTIFY_DATA}
SELECTED = {"address": "127.0.0.1", "port": 5000, "mode": "aead_aes256_gcm_rtpsize"}
LEGACY = "xsalsa20_poly1305_lite"


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeVoiceGateway]:
    async with FakeVoiceGateway(
        heartbeat_interval=0.1, valid_tokens={"t", CREDENTIALS.token}
    ) as running:
        yield running


async def closed_with(gateway: FakeVoiceGateway, *messages: dict[str, Any] | str) -> Signal:
    """Send ``messages`` on a raw connection; the signal the gateway ends it with."""
    ws = Websocket(ping_interval=None)
    await ws.connect(gateway.url)
    hello = await ws.receive()
    assert isinstance(hello, WebsocketPacketJSON)
    assert hello.payload["op"] == 8
    for message in messages:
        await (ws.send_text(message) if isinstance(message, str) else ws.send_json(message))
    try:
        while True:
            await asyncio.wait_for(ws.receive(), 5)
    except Signal as signal:
        return signal
    finally:
        await ws.disconnect()


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"op": 1, "d": {}}], 4003),
        ([{"op": 5, "d": {}}], 4003),
        ([IDENTIFY, IDENTIFY], 4005),
        ([IDENTIFY, {"op": 7, "d": {}}], 4005),
        ([{"op": 99, "d": {}}], 4001),
        (["{not json"], 4002),
        ([{"op": 0, "d": {**IDENTIFY_DATA, "token": "wrong"}}], 4004),
        ([{"op": 0, "d": {"user_id": "2"}}], 4020),
        ([{"op": 0, "d": {**IDENTIFY_DATA, "user_id": "user-2"}}], 4020),
        # DAVE is required, as on Discord since 2026-03-01: version 0, or none offered.
        ([{"op": 0, "d": {**IDENTIFY_DATA, "max_dave_protocol_version": 0}}], 4017),
        ([{"op": 0, "d": {k: v for k, v in IDENTIFY_DATA.items() if "dave" not in k}}], 4017),
        (
            [{"op": 7, "d": {"server_id": "1", "session_id": "nope", "token": "t", "seq_ack": -1}}],
            4006,
        ),
        # Strict like Discord: malformed heartbeats, unknown protocols and modes.
        ([{"op": 3, "d": {"t": 1.5}}], 4020),
        ([{"op": 3, "d": 12345}], 4020),
        ([{"op": 3, "d": {"t": 1 << 53}}], 4020),
        ([IDENTIFY, {"op": 1, "d": {"protocol": "webrtc", "data": SELECTED}}], 4012),
        ([IDENTIFY, {"op": 1, "d": {"protocol": "udp", "data": {**SELECTED, "mode": "x"}}}], 4016),
        (
            [IDENTIFY, {"op": 1, "d": {"protocol": "udp", "data": {**SELECTED, "mode": LEGACY}}}],
            4016,
        ),
    ],
)
async def test_protocol_violations_close_with_discords_codes(
    gateway: FakeVoiceGateway, messages: list[dict[str, Any] | str], code: int
) -> None:
    signal = await closed_with(gateway, *messages)
    assert signal.code == code


async def test_a_client_that_stops_heartbeating_is_closed_with_4009(
    gateway: FakeVoiceGateway,
) -> None:
    signal = await closed_with(gateway, IDENTIFY)
    assert isinstance(signal, ReconnectSignal)
    assert signal.code == 4009


async def test_delayed_acks_show_in_the_measured_latency(gateway: FakeVoiceGateway) -> None:
    client = VoiceClient(gateway.url, CREDENTIALS, max_missed_acks=5)
    await client.start()
    await client.wait_ready(5)
    gateway.delay_acks(CREDENTIALS.session_id, 0.05)
    latencies: list[float] = []
    async for event in client.events():
        if event.kind is EventKind.HEARTBEAT and event.latency is not None:
            latencies.append(event.latency)
            if len(latencies) == 3:
                break
    assert min(latencies[1:]) >= 0.05
    await client.close()


async def test_events_iterator_sees_the_whole_life_and_ends_when_stopped(
    gateway: FakeVoiceGateway,
) -> None:
    client = VoiceClient(gateway.url, CREDENTIALS)
    seen: list[SessionEvent] = []

    async def watch() -> None:
        async for event in client.events():
            seen.append(event)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await client.start()
    await client.wait_ready(5)
    await gateway.close_session(CREDENTIALS.session_id, 4015)
    await gateway.wait_live(CREDENTIALS.session_id)
    await gateway.close_session(CREDENTIALS.session_id, 4021, "rate limited")
    outcome = await client.wait_closed()
    await asyncio.wait_for(watcher, 5)  # the iterator ended by itself
    kinds = [event.kind for event in seen if event.kind is not EventKind.HEARTBEAT]
    assert kinds[:4] == [
        EventKind.CONNECTING,
        EventKind.READY,
        EventKind.CONNECTION_LOST,
        EventKind.RESUME_SCHEDULED,
    ]
    assert kinds[-1] is EventKind.STOPPED
    assert isinstance(outcome.signal, DisconnectSignal)
    assert seen[-1].signal is outcome.signal


@pytest.mark.parametrize("query", ["", "?v=4", "?v=7"])
async def test_a_url_without_v8_is_refused_at_the_handshake(
    gateway: FakeVoiceGateway, query: str
) -> None:
    ws = Websocket(ping_interval=None)
    url = gateway.url.split("?", 1)[0] + query
    with pytest.raises(Signal, match="400"):
        await ws.connect(url)
    await ws.connect(gateway.url)  # the refusal was for that request only
    await ws.disconnect()


async def test_a_lax_gateway_accepts_what_a_strict_one_refuses() -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.1, strict=False) as lax:
        ws = Websocket(ping_interval=None)
        await ws.connect(lax.url.split("?", 1)[0])
        await ws.receive()  # HELLO
        await ws.send_json({"op": 3, "d": {"t": 1.5}})
        ack = await asyncio.wait_for(ws.receive(), 5)
        assert isinstance(ack, WebsocketPacketJSON)
        assert ack.payload == {"op": 6, "d": {"t": 1.5}}
        await ws.disconnect()


async def test_hello_carries_an_integer_interval(gateway: FakeVoiceGateway) -> None:
    ws = Websocket(ping_interval=None)
    await ws.connect(gateway.url)
    hello = await ws.receive()
    await ws.disconnect()
    assert isinstance(hello, WebsocketPacketJSON)
    assert hello.payload["d"]["heartbeat_interval"] == 100
    assert isinstance(hello.payload["d"]["heartbeat_interval"], int)


async def test_asking_for_a_heartbeat_gets_one_at_once() -> None:
    slow = FakeVoiceGateway(heartbeat_interval=30.0)  # no beat of its own for 30 s
    async with slow, VoiceClient(slow.url, CREDENTIALS) as client:
        await client.wait_ready(5)
        session = slow.session(CREDENTIALS.session_id)
        before = session.heartbeats
        await slow.request_heartbeat(CREDENTIALS.session_id)
        await eventually(lambda: session.heartbeats > before, 5)


async def test_a_token_whose_session_ended_opens_no_other(gateway: FakeVoiceGateway) -> None:
    """As on Discord: after a 4006 the session id stays (it is the main gateway's) but
    the token is spent; a fresh token (a new VOICE_SERVER_UPDATE) is accepted."""
    signal = await closed_with(gateway, IDENTIFY, {"op": 3, "d": {"t": 1}})
    assert signal.code == 4009  # identified, then stopped heartbeating: session over
    assert "t" in gateway.spent_tokens
    assert (await closed_with(gateway, IDENTIFY)).code == 4006
    fresh = gateway.fresh_token("2")
    again = await closed_with(gateway, {"op": 0, "d": {**IDENTIFY_DATA, "token": fresh}})
    assert again.code == 4009  # accepted (then timed out: this raw client never beats)


async def test_a_lax_gateway_takes_a_spent_token_again() -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.1, strict=False) as lax:
        first = await closed_with(lax, IDENTIFY)
        assert first.code == 4009
        assert lax.spent_tokens == set()
        assert (await closed_with(lax, IDENTIFY)).code == 4009


async def test_what_the_client_sent_before_the_close_counts_even_if_an_answer_fails(
    gateway: FakeVoiceGateway,
) -> None:
    """Found on Python 3.12+ as a lost message in a resume test: the fake stopped
    reading when an answer (a heartbeat ACK) could not be sent because the connection
    was closing, and dropped what the client had sent before its close frame."""
    ws = Websocket(ping_interval=None)
    await ws.connect(gateway.url)
    await ws.receive()  # HELLO
    # All at once, before any answer: the gateway reads them all, then the close,
    # while its handler is still answering the IDENTIFY.
    await ws.send_json(IDENTIFY)
    await ws.send_json({"op": 3, "d": {"t": 1, "seq_ack": -1}})
    await ws.send_json({"op": 5, "d": {"speaking": 1, "delay": 0, "ssrc": 77}})
    await ws.disconnect(4000)
    spoken = (5, {"speaking": 1, "delay": 0, "ssrc": 77})
    await eventually(lambda: spoken in gateway.received_by_user.get("2", []), 5)


async def test_a_members_speaking_is_relayed_to_the_others_in_its_channel() -> None:
    """As Discord does: op 5 from one member reaches the others (with its user id and
    ssrc), not the sender, and not members of another server's channel."""
    from wavegate.discord import ClientsConnect, Speaking, VoiceCredentials

    def member(server: str, user: str) -> VoiceCredentials:
        return VoiceCredentials(server, user, f"s-{user}", f"t-{user}", server)

    async with FakeVoiceGateway() as gateway:
        ana = VoiceClient(gateway.url, member("1001", "2001"))
        bo = VoiceClient(gateway.url, member("1001", "2002"))
        elsewhere = VoiceClient(gateway.url, member("1009", "2009"))
        async with ana, bo, elsewhere:
            for client in (ana, bo, elsewhere):
                await client.wait_ready(10)
            await ana.send_speaking(1)
            heard = await bo.receive()
            while isinstance(heard, ClientsConnect):
                heard = await bo.receive()
            assert isinstance(heard, Speaking)
            assert (heard.user_id, heard.speaking) == ("2001", 1)
            assert heard.ssrc == gateway.session("s-2001").ssrc

            def speaking_sent_to(sid: str) -> int:
                return sum(b'"op":5,' in frame for _, _, frame in gateway.session(sid).buffer)

            assert (speaking_sent_to("s-2001"), speaking_sent_to("s-2009")) == (0, 0)


async def test_wait_received_returns_what_a_client_sent_or_times_out(
    gateway: FakeVoiceGateway,
) -> None:
    ws = Websocket(ping_interval=None)
    await ws.connect(gateway.url)
    try:
        await ws.send_json(IDENTIFY)
        waiting = asyncio.ensure_future(gateway.wait_received("2", 5, count=2, timeout=10))
        await ws.send_json({"op": 5, "d": {"speaking": 1, "delay": 0, "ssrc": 1}})
        await ws.send_json({"op": 5, "d": {"speaking": 0, "delay": 0, "ssrc": 1}})
        sent = await waiting
        assert [d["speaking"] for d in sent] == [1, 0]
        with pytest.raises(asyncio.TimeoutError):
            await gateway.wait_received("2", 5, count=3, timeout=0.05)
        with pytest.raises(asyncio.TimeoutError):
            await gateway.wait_received("nobody", 5, timeout=0.05)
    finally:
        await ws.disconnect()


async def test_the_test_servers_close_refuses_bad_values_and_changes_nothing() -> None:
    # Found by a new-user trial: close(70000) raised struct.error after marking the
    # connection closed, so a later close(4000) sent nothing; a 130-byte reason made
    # a control frame longer than RFC 6455 allows.
    import websockets

    async with WebsocketTestServer() as server:
        async with websockets.connect(server.url) as client:
            conn = await server.accepted()
            for code, reason, error in (
                (70000, "", ValueError),
                ("4000", "", TypeError),
                (4000, "x" * 124, ValueError),
            ):
                with pytest.raises(error, match="close"):
                    await conn.close(code, reason)  # type: ignore[arg-type]
            await conn.close(4000, "fine")
            with pytest.raises(websockets.ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), 10)
            assert caught.value.rcvd is not None
            assert caught.value.rcvd.code == 4000
        with pytest.raises(ValueError, match="an HTTP status from 100 to 599"):
            server.reject_handshakes(1000)
        with pytest.raises(TypeError, match="an HTTP status from 100 to 599"):
            server.reject_handshakes("503")  # type: ignore[arg-type]


async def test_the_fake_gateways_close_refuses_bad_values_and_keeps_the_session_live(
    gateway: FakeVoiceGateway,
) -> None:
    async with VoiceClient(gateway.url, CREDENTIALS) as voice:
        await voice.wait_ready(10)
        sid = CREDENTIALS.session_id
        with pytest.raises(ValueError, match="close code"):
            await gateway.close_session(sid, 70000)
        with pytest.raises(ValueError, match="close reason"):
            await gateway.close_session(sid, 4015, "x" * 124)
        assert gateway.session(sid).live.is_set()
        await gateway.close_session(sid, 4015, "crashed")
        await eventually(lambda: voice.stats.resumes == 1, 15)


async def test_close_gives_up_on_a_client_that_reads_nothing_within_its_timeout() -> None:
    # Found by a new-user trial: close() waited for room in the write buffer before
    # arming its timeout, so against a client that reads nothing it never returned.
    import websockets

    async with WebsocketTestServer() as server:
        client = await websockets.connect(server.url, max_queue=1, ping_interval=None)
        try:
            conn = await server.accepted()
            client.transport.pause_reading()
            while not conn.write_blocked():
                conn.write_frame(frames.BINARY, b"x" * 65536)
            for _ in range(4):  # well past the write buffer's high-water mark
                conn.write_frame(frames.BINARY, b"x" * 65536)
            await asyncio.wait_for(conn.close(4008, "slow", timeout=0.5), 10)
            await conn.wait_closed(10)
        finally:
            client.transport.abort()


async def test_misused_test_servers_say_what_is_wrong() -> None:
    # Found by a new-user trial: bare KeyErrors and TimeoutErrors with no message, a
    # stopped server waited out accepted()'s timeout, start() twice said "address in
    # use", and a connection never taken came out of accepted() after a restart.
    import websockets

    server = WebsocketTestServer()
    with pytest.raises(RuntimeError, match="not running"):
        await server.accepted(timeout=10)
    await server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            await server.start()
        with pytest.raises(asyncio.TimeoutError, match=r"no connection accepted within 0.01s"):
            await server.accepted(timeout=0.01)
        async with websockets.connect(server.url):
            await eventually(lambda: server.handshakes == 1)
        await server.stop()
        await server.start()
        with pytest.raises(asyncio.TimeoutError):
            await server.accepted(timeout=0.01)  # the one never taken is gone
        async with websockets.connect(server.url):
            conn = await server.accepted()
            with pytest.raises(asyncio.TimeoutError, match="no message from the client"):
                await conn.receive(timeout=0.01)
    finally:
        await server.stop()
    async with FakeVoiceGateway() as gateway:
        with pytest.raises(KeyError, match="no session 'nope'"):
            gateway.expire("nope")
        with pytest.raises(asyncio.TimeoutError, match="user 2001 sent 0 of 1 op 5"):
            await gateway.wait_received(2001, 5, timeout=0.01)


async def test_a_handler_that_raises_fails_the_test_when_the_server_stops() -> None:
    # Found by a new-user trial: a failed assert in a handler only reached asyncio's
    # log, and the test passed.
    import websockets

    async def handler(conn: Any) -> None:
        message = await conn.receive_json()
        assert message == {"op": "hello"}, f"client sent {message}"

    failing = await WebsocketTestServer(handler).__aenter__()
    async with websockets.connect(failing.url) as client:
        await client.send('{"op": "HELO"}')
        await eventually(lambda: bool(failing.handler_errors))
    with pytest.raises(HandlerError, match="client sent") as caught:
        await failing.__aexit__(None, None, None)  # the end of its async with
    assert isinstance(caught.value.__cause__, AssertionError)

    async def leaves(conn: Any) -> None:
        await conn.receive_json()  # the client goes away: not the handler's fault

    async with WebsocketTestServer(leaves) as server:
        async with websockets.connect(server.url):
            pass
        await eventually(lambda: server.open_connections == 0)
    assert server.handler_errors == []


async def test_the_test_server_answers_a_subprotocol_it_is_given(make_ws: WebsocketFactory) -> None:
    # Found by a new-user trial: a client that needs a subprotocol could not be tested.
    async with WebsocketTestServer() as server:
        server.subprotocols = ["chat.v2", "chat.v1"]
        ws = make_ws(subprotocols=["chat.v1", "chat.v2"])
        await ws.connect(server.url)
        conn = await server.accepted()
        assert ws.subprotocol == conn.subprotocol == "chat.v2"
        await ws.disconnect()
        plain = make_ws()
        await plain.connect(server.url)
        assert (await server.accepted()).subprotocol is None
        assert plain.subprotocol is None
        await plain.disconnect()


async def test_close_with_no_time_to_wait_still_sends_its_frame() -> None:
    # Found by review: with timeout=0 the frame's write was cancelled before it began.
    import websockets

    async with WebsocketTestServer() as server, websockets.connect(server.url) as client:
        conn = await server.accepted()
        await conn.close(4001, "bye", timeout=0)
        with pytest.raises(websockets.ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), 10)
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4001, "bye")
