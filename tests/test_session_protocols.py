"""The session with a protocol that is not Discord's, and the edges of the protocol
interface: a handshake that ends at once, a second HandshakeDone, I/O that fails or
is cancelled, a slow application during a resume, close() before start()."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections import Counter
from typing import Any

import pytest

from wavegate import (
    Backoff,
    Deliver,
    Event,
    Fail,
    HandshakeDone,
    HeartbeatAck,
    Output,
    Perform,
    ReconnectSignal,
    Send,
    Session,
    SessionState,
    WebsocketPacket,
    WebsocketPacketJSON,
)
from wavegate.discord.voice import Ready, VoiceClient
from wavegate.session import EventKind, SessionEvent
from wavegate.testing import ServerConnection, WebsocketTestServer, frames
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually
from .voice_harness import CREDENTIALS

FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)


class Feed:
    """A JSON feed: hello/resume, a welcome, numbered messages, ping/pong heartbeats."""

    def __init__(self, heartbeat: float | None = 0.2) -> None:
        self.heartbeat_interval = heartbeat
        self.last = -1
        self.welcomed = False

    def start(self, *, resume: bool) -> list[Output]:
        return [Send({"op": "resume", "after": self.last} if resume else {"op": "hello"})]

    def receive(self, packet: WebsocketPacket) -> list[Output]:
        assert isinstance(packet, WebsocketPacketJSON)
        message = packet.payload
        if message["op"] == "welcome":
            self.welcomed = True
            return [HandshakeDone(self.heartbeat_interval, resumed=bool(message.get("resumed")))]
        if message["op"] == "pong":
            return [HeartbeatAck(message["nonce"])]
        self.last = message.get("n", self.last)
        return [Deliver(message)]

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        return {"op": "ping", "nonce": nonce}

    def can_resume(self) -> bool:
        return self.welcomed

    def new_session(self) -> None:
        self.welcomed = False
        self.last = -1


def text(value: dict[str, Any]) -> bytes:
    return frames.encode_frame(frames.TEXT, json.dumps(value).encode())


async def answer_pings(conn: ServerConnection) -> None:
    while True:
        message = await conn.receive_json(timeout=None)
        if message["op"] == "ping":
            await conn.send_json({"op": "pong", "nonce": message["nonce"]})


async def test_a_protocol_of_your_own_runs_on_the_session() -> None:
    async def serve(conn: ServerConnection) -> None:
        await conn.receive_json()
        await conn.send_json({"op": "welcome"})
        for n in range(3):
            await conn.send_json({"op": "data", "n": n})
        await answer_pings(conn)

    events: list[SessionEvent] = []
    async with WebsocketTestServer(serve) as server:
        session = Session(server.url, Feed(), on_event=events.append)
        async with session:
            await session.wait_ready(5)
            assert [(await session.receive())["n"] for _ in range(3)] == [0, 1, 2]
            await eventually(lambda: session.latency is not None)
    assert [e.kind for e in events][:2] == [EventKind.CONNECTING, EventKind.READY]


async def test_events_subscribes_when_called_not_when_first_read() -> None:
    # Found by a new-user trial: the subscription began at the first read, so events
    # before it (CONNECTING, or all of them, read after close()) were missed.
    async def serve(conn: ServerConnection) -> None:
        await conn.receive_json()
        await conn.send_json({"op": "welcome"})
        await answer_pings(conn)

    async with WebsocketTestServer(serve) as server:
        session = Session(server.url, Feed())
        early, late = session.events(), session.events()
        await session.start()
        await session.wait_ready(5)
        first = await anext(early)
        await session.close()
        everything = [event.kind async for event in late]
    assert first.kind is EventKind.CONNECTING
    assert everything[:2] == [EventKind.CONNECTING, EventKind.READY]
    assert everything[-1] is EventKind.STOPPED


def test_a_subscription_never_read_is_let_go() -> None:
    session = Session("ws://127.0.0.1:9/", Feed())
    for _ in range(3):
        session.events()
    gc.collect()
    assert session._hub._subscribers == []


def test_a_subscription_kept_next_to_the_session_does_not_keep_it_alive() -> None:
    # Found by review: the subscription's finalizer held the hub, so an object keeping
    # both its session (with on_event=self.method) and session.events() never died.
    class App:
        def __init__(self) -> None:
            self.session = Session("ws://127.0.0.1:9/", Feed(), on_event=self.seen)
            self.events = self.session.events()

        def seen(self, event: SessionEvent) -> None:
            pass

    app = weakref.ref(App())
    gc.collect()
    assert app() is None


class Strict(Feed):
    """A feed that refuses a message out of sequence with ``Fail``."""

    def receive(self, packet: WebsocketPacket) -> list[Output]:
        assert isinstance(packet, WebsocketPacketJSON)
        if packet.payload.get("n") == 99:
            return [Fail(ReconnectSignal("sequence gap: " + "é" * 80, event=Event.PEER_CLOSE))]
        return super().receive(packet)


async def test_a_protocols_fail_tells_the_server_why_in_the_close_frame() -> None:
    # Found by a new-user trial: the close said 4000 and nothing more.
    from websockets.asyncio.server import ServerConnection as ForeignConnection

    from .peers import websockets_server

    reasons: list[str] = []

    async def gap(ws: ForeignConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps({"op": "welcome"}))
        await ws.send(json.dumps({"op": "data", "n": 99}))
        await ws.wait_closed()
        assert ws.close_reason is not None
        reasons.append(ws.close_reason)

    async with websockets_server(gap) as url:
        session = Session(url, Strict(heartbeat=None), backoff=FAST)
        async with session:
            await eventually(lambda: bool(reasons))
    assert reasons[0].startswith("sequence gap: éé")
    assert len(reasons[0].encode()) <= 123


class Broken(Feed):
    """A feed whose own code raises on the first data message (a bug of its own)."""

    def receive(self, packet: WebsocketPacket) -> list[Output]:
        assert isinstance(packet, WebsocketPacketJSON)
        if packet.payload["op"] == "data":
            raise ValueError("tick without a price")
        return super().receive(packet)


async def test_an_error_outcome_names_the_exception_not_only_our_close() -> None:
    # Found by a new-user trial: it said "error: local_close (code 4000, local)", the
    # code we closed with, and the exception only showed in the log.
    async def serve(conn: ServerConnection) -> None:
        await conn.receive_json()
        await conn.send_json({"op": "welcome"})
        await conn.send_json({"op": "data", "n": 0})
        await answer_pings(conn)

    events: list[SessionEvent] = []
    async with WebsocketTestServer(serve) as server:
        session = Session(server.url, Broken(), on_event=events.append)
        await session.start()
        outcome = await asyncio.wait_for(session.wait_closed(), 10)
    assert str(outcome).startswith("error: ValueError: tick without a price"), str(outcome)
    stopped = [event for event in events if event.kind is EventKind.STOPPED]
    assert stopped[0].detail == "error: ValueError: tick without a price"


async def test_a_server_that_recycles_every_connection_is_followed_for_ever() -> None:
    # Found by a new-user trial: every retry, resumes that worked included, counted
    # towards max_attempts, so a feed recycled more often than reset_after stopped
    # for good (retries_exhausted) though each resume worked.
    from websockets.asyncio.server import ServerConnection as ForeignConnection

    from .peers import websockets_server

    sent = 0

    async def recycle_after_two(ws: ForeignConnection) -> None:
        nonlocal sent
        hello = json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "welcome", "resumed": hello["op"] == "resume"}))
        for _ in range(2):
            await ws.send(json.dumps({"op": "data", "n": sent}))
            sent += 1
        await ws.close(4000, "recycled")

    backoff = Backoff(base=0.001, cap=0.01, max_attempts=3)
    async with websockets_server(recycle_after_two) as url:
        session = Session(url, Feed(heartbeat=None), backoff=backoff)
        async with session:
            numbers = [(await asyncio.wait_for(session.receive(), 10))["n"] for _ in range(20)]
            assert session.outcome is None  # 10 connections, each recycled: still going
    assert numbers == list(range(20))


@pytest.mark.timeout(30)
async def test_a_handshake_that_ends_at_once_is_still_ready_and_never_loops() -> None:
    connections = 0

    async def welcome_then_crash(conn: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await conn.receive_json()
        # The welcome, a message and a 4015 close, in one TCP write.
        await conn.send_raw(
            text({"op": "welcome", "resumed": connections > 1})
            + text({"op": "data", "n": connections})
            + frames.encode_frame(frames.CLOSE, frames.close_payload(4015, "crashed"))
        )
        await conn.wait_closed()

    events: list[SessionEvent] = []
    async with WebsocketTestServer(welcome_then_crash) as server:
        backoff = Backoff(base=0.05, cap=0.2, max_attempts=None)
        session = Session(server.url, Feed(), backoff=backoff, on_event=events.append)
        async with session:
            await eventually(lambda: connections >= 6, 10)
    kinds = Counter(e.kind for e in events)
    # Every connection reached READY or RESUMED, and said so...
    assert kinds[EventKind.READY] + kinds[EventKind.RESUMED] >= connections - 1
    assert session.stats.received >= connections - 1
    # ...and the flapping server was backed off from, not hammered in a hot loop.
    delays = [e.delay for e in events if e.kind is EventKind.RESUME_SCHEDULED]
    assert delays[0] == 0
    assert all(d is not None and d >= 0 for d in delays)
    assert any(d for d in delays[1:])


async def test_a_second_handshake_done_is_ignored() -> None:
    async def welcome_twice(conn: ServerConnection) -> None:
        await conn.receive_json()
        await conn.send_json({"op": "welcome"})
        await conn.send_json({"op": "welcome"})
        await answer_pings(conn)

    async with WebsocketTestServer(welcome_twice) as server:
        events: list[SessionEvent] = []
        session = Session(server.url, Feed(heartbeat=0.05), on_event=events.append)
        async with session:
            await session.wait_ready(5)
            beats = session.stats

            def acked() -> int:
                return sum(e.kind is EventKind.HEARTBEAT and e.latency is not None for e in events)

            await eventually(lambda: acked() >= 10, 30)  # ten beats answered, none missed
            assert beats.zombies == 0
            assert session.state is SessionState.READY


class FailingDiscovery:
    def __init__(self, error: BaseException, times: int) -> None:
        self.error = error
        self.times = times
        self.calls = 0

    async def __call__(self, ready: Ready) -> tuple[str, int]:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return ready.ip, ready.port


@pytest.mark.timeout(30)
async def test_a_failed_discovery_is_retried_as_a_new_session() -> None:
    discover = FailingDiscovery(OSError("no answer to UDP IP discovery"), times=2)
    events: list[SessionEvent] = []
    async with FakeVoiceGateway(heartbeat_interval=0.5) as gateway:
        voice = VoiceClient(
            gateway.url, CREDENTIALS, discover=discover, backoff=FAST, on_event=events.append
        )
        async with voice:
            await voice.wait_ready(10)
    lost = [e.signal for e in events if e.kind is EventKind.CONNECTION_LOST][:2]
    assert [s.reason for s in lost if s is not None] == [
        "UDP IP discovery failed: no answer to UDP IP discovery"
    ] * 2
    assert voice.outcome is not None
    assert voice.outcome.reason == "closed"


@pytest.mark.timeout(30)
async def test_io_cancelled_from_inside_stops_the_session_instead_of_hanging() -> None:
    discover = FailingDiscovery(asyncio.CancelledError(), times=100)
    async with FakeVoiceGateway(heartbeat_interval=0.5) as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, discover=discover, handshake_timeout=0.3)
        await voice.start()
        outcome = await asyncio.wait_for(voice.wait_closed(), 10)
    assert outcome.reason == "error"
    assert "cancelled from inside" in str(outcome.error)


@pytest.mark.timeout(30)
async def test_a_resume_is_read_through_even_when_the_application_is_slow() -> None:
    events: list[SessionEvent] = []
    async with FakeVoiceGateway(heartbeat_interval=0.5) as gateway:
        voice = VoiceClient(
            gateway.url,
            CREDENTIALS,
            backoff=FAST,
            receive_queue_size=3,
            on_event=events.append,
        )
        async with voice:
            await voice.wait_ready(10)
            for n in range(5):
                await gateway.send_speaking(CREDENTIALS.session_id, n)
            await eventually(lambda: voice.pending_receives >= 3)
            await gateway.drop(CREDENTIALS.session_id)  # the app has read nothing
            await eventually(lambda: EventKind.RESUMED in [e.kind for e in events], 10)
            received = [(await voice.receive()).ssrc for _ in range(5)]
    assert received == list(range(5))


async def test_close_before_start_then_start_is_refused() -> None:
    session = Session("ws://127.0.0.1:1/", Feed())
    outcome = await session.close()
    assert outcome.reason == "closed"
    with pytest.raises(RuntimeError, match="already stopped"):
        await session.start()


async def test_a_move_just_before_the_close_counts() -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.5) as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, move_grace=30.0)
        async with voice:
            await voice.wait_ready(10)
            voice.move_to(gateway.url, "token-2")  # VOICE_SERVER_UPDATE came first...
            await gateway.close_session(CREDENTIALS.session_id, 4014)  # ...then the 4014
            await eventually(lambda: gateway.identifies == 2, 5)  # not after 30 s
            await voice.wait_ready(10)


def test_a_perform_without_failed_handler_has_a_default() -> None:
    perform = Perform(lambda: asyncio.sleep(0), lambda result: [], "nothing")
    assert perform.failed is None
