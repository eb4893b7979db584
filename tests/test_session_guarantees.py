"""The session's promises under races: the right signal, bounded and truthful sends,
a state that says what the session is doing, a bounded inbox.

Each test reproduced a defect before it was fixed (issue 8 of the project's tracker).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from wavegate import (
    Backoff,
    DisconnectSignal,
    Event,
    GatewayProtocol,
    Outcome,
    ReconnectSignal,
    ResumeSignal,
    Session,
    SessionState,
    Websocket,
)
from wavegate.discord.voice import Speaking, VoiceClient, VoiceCredentials
from wavegate.session import EventKind, SessionEvent
from wavegate.signals import SendTimeoutError
from wavegate.testing import ServerConnection, WebsocketTestServer
from wavegate.testing.server import ConnectionDropped
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually
from .peers import ForeignVoiceGateway, established_to
from .voice_harness import CREDENTIALS, refreshing

FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)
USER = CREDENTIALS.user_id
SESSION = CREDENTIALS.session_id


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeVoiceGateway]:
    # Heartbeats every 0.5 s: with eight tasks flooding the gateway on a busy machine,
    # a 50 ms heartbeat would be answered late and the client would rightly call the
    # connection a zombie, which is not what these tests are about.
    async with FakeVoiceGateway(heartbeat_interval=0.5, heartbeat_timeout_factor=20) as running:
        yield running


def client(
    gateway: FakeVoiceGateway, transport: str, *, close_timeout: float = 5.0, **options: object
) -> VoiceClient:
    options.setdefault("backoff", FAST)
    options.setdefault("refresh_credentials", refreshing(gateway))
    return VoiceClient(
        gateway.url,
        CREDENTIALS,
        websocket=Websocket(transport=transport, close_timeout=close_timeout),
        **options,  # type: ignore[arg-type]
    )


# -- a send racing the gateway's close --------------------------------------------------

RUNS = 100
FOREIGN_RUNS = 30


async def _speak_until_stopped(voice: VoiceClient) -> None:
    """Eight tasks calling send_speaking() in a loop: the writer is always writing."""

    async def speak() -> None:
        with contextlib.suppress(Exception):
            while True:
                await voice.send_speaking(1)

    await asyncio.gather(*(speak() for _ in range(8)))


def _reaches(count: Callable[[], int], target: int) -> Callable[[], bool]:
    return lambda: count() >= target


def _spoken(gateway: FakeVoiceGateway) -> int:
    return sum(op == 5 for op, _ in gateway.received_by_user.get(USER, []))


@pytest.mark.parametrize("code", [4014, 4021])
@pytest.mark.timeout(120)
async def test_a_final_close_racing_sends_stops_with_its_code_every_time(
    gateway: FakeVoiceGateway, transport: str, code: int
) -> None:
    for _ in range(RUNS):
        events: list[SessionEvent] = []
        voice = client(gateway, transport, on_event=events.append)
        await voice.start()
        await voice.wait_ready(10)
        speaking = asyncio.ensure_future(_speak_until_stopped(voice))
        target = _spoken(gateway) + 20
        await eventually(_reaches(lambda: _spoken(gateway), target))  # sends in full flow
        await gateway.close_session(SESSION, code)
        try:
            outcome = await asyncio.wait_for(voice.wait_closed(), 10)
        except asyncio.TimeoutError:
            await voice.close()
            raise AssertionError(f"still running; events: {events}") from None
        await speaking
        assert (outcome.reason, outcome.code) == ("disconnect", code), str(outcome)
        assert isinstance(outcome.signal, DisconnectSignal)


@pytest.mark.timeout(120)
async def _same_credentials() -> VoiceCredentials:
    return CREDENTIALS


async def test_a_4006_racing_sends_starts_a_new_session_every_time(transport: str) -> None:
    foreign = ForeignVoiceGateway(4006)
    events: list[SessionEvent] = []
    async with foreign.running() as url:
        voice = VoiceClient(
            url,
            CREDENTIALS,
            websocket=Websocket(transport=transport),
            backoff=FAST,
            on_event=events.append,
            refresh_credentials=_same_credentials,  # that gateway takes any token
        )
        async with voice:
            speaking = asyncio.ensure_future(_speak_until_stopped(voice))
            await eventually(lambda: foreign.identifies > FOREIGN_RUNS, 60)
            speaking.cancel()
    lost = [e.signal for e in events if e.kind is EventKind.CONNECTION_LOST]
    assert len(lost) >= FOREIGN_RUNS
    runs = lost[:FOREIGN_RUNS]
    assert all(isinstance(s, ReconnectSignal) and s.code == 4006 for s in runs), lost
    assert foreign.resumes == 0


@pytest.mark.timeout(120)
async def test_a_4006_from_the_fake_gateway_racing_sends_starts_a_new_session(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    events: list[SessionEvent] = []
    voice = client(gateway, transport, on_event=events.append)
    async with voice:
        await voice.wait_ready(10)
        speaking = asyncio.ensure_future(_speak_until_stopped(voice))
        for run in range(RUNS):
            await gateway.close_session(SESSION, 4006)
            identifies = run + 2
            await eventually(_reaches(lambda: gateway.identifies, identifies), 10)
            await gateway.wait_live(SESSION, 10)
        speaking.cancel()
    lost = [e.signal for e in events if e.kind is EventKind.CONNECTION_LOST]
    assert len(lost) == RUNS + 1  # and the last, closed by the test
    assert all(isinstance(s, ReconnectSignal) and s.code == 4006 for s in lost[:RUNS]), lost
    assert gateway.resumes == 0


# -- bounded and truthful sends ----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_send_timeout_bounds_the_call_when_the_gateway_stopped_reading(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    voice = client(gateway, transport, close_timeout=0.5)  # the close is not answered either
    async with voice:
        await voice.wait_ready(10)
        gateway.stop_reading(SESSION, permanently=True)
        big = {"op": 5, "d": {"pad": "x" * (256 << 10)}}
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(voice.send_json(big, timeout=1.0) for _ in range(80)), return_exceptions=True
            ),
            10,
        )
        elapsed = loop.time() - started
    assert all(o is None or isinstance(o, SendTimeoutError) for o in outcomes), outcomes
    assert any(isinstance(o, SendTimeoutError) for o in outcomes)
    assert elapsed < 8, f"timeout=1.0 calls took {elapsed:.1f}s"


@pytest.mark.timeout(60)
async def test_zombies_of_a_gateway_that_stopped_reading_leave_no_socket_behind(
    transport: str,
) -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.1, heartbeat_timeout_factor=50) as gateway:
        port = urlsplit(gateway.url).port
        assert port is not None
        voice = client(gateway, transport, close_timeout=0.2)
        async with voice:
            await voice.wait_ready(10)
            gateway.stop_reading(SESSION, permanently=True)
            big = {"op": 5, "d": {"pad": "x" * (256 << 10)}}
            for _ in range(40):  # more than the socket buffers hold: writes block
                with contextlib.suppress(SendTimeoutError):
                    await voice.send_json(big, timeout=0.05)
            await eventually(lambda: voice.stats.zombies >= 5, 30)
            assert established_to(port) <= 1  # the live connection, nothing else
        await eventually(lambda: established_to(port) == 0)


def _sent_numbers(gateway: FakeVoiceGateway) -> list[int | str]:
    return [
        d["n"]
        for op, d in gateway.received_by_user.get(USER, [])
        if op == 5 and isinstance(d, dict) and "n" in d
    ]


@pytest.mark.timeout(60)
async def test_a_zero_timeout_send_is_reported_sent_exactly_when_it_was(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    voice = client(gateway, transport)
    returned: list[int] = []
    async with voice:
        await voice.wait_ready(10)
        for n in range(20):
            with contextlib.suppress(SendTimeoutError):
                await voice.send_json({"op": 5, "d": {"n": n}}, timeout=0)
                returned.append(n)
        await voice.send_json({"op": 5, "d": {"n": "end"}})
        await eventually(lambda: "end" in _sent_numbers(gateway))
    assert [n for n in _sent_numbers(gateway) if n != "end"] == returned


@pytest.mark.timeout(120)
async def test_send_outcomes_never_lie_across_resumes(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    voice = client(gateway, transport)
    rng = random.Random(8)
    returned: list[int] = []
    timed_out: list[int] = []

    async def send(n: int) -> None:
        try:
            await voice.send_json({"op": 5, "d": {"n": n}}, timeout=rng.choice([0, 0.001, 0.01]))
        except SendTimeoutError:
            timed_out.append(n)
        else:
            returned.append(n)

    async with voice:
        await voice.wait_ready(10)
        for batch in range(20):
            sending = [asyncio.ensure_future(send(batch * 50 + i)) for i in range(50)]
            await asyncio.sleep(0)
            await gateway.close_session(SESSION, 4015)
            await asyncio.gather(*sending)
        await voice.send_json({"op": 5, "d": {"n": "end"}})
        await eventually(lambda: "end" in _sent_numbers(gateway), 10)
    received = [n for n in _sent_numbers(gateway) if n != "end"]
    assert sorted(received) == sorted(returned)
    assert not set(received) & set(timed_out)
    assert len(returned) + len(timed_out) == 1000


# -- the session's state -----------------------------------------------------------------


async def test_the_move_grace_wait_has_its_own_state(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    voice = client(gateway, "aiohttp", move_grace=30.0, on_event=events.append)
    async with voice:
        await voice.wait_ready(10)
        await gateway.close_session(SESSION, 4014)
        await eventually(lambda: EventKind.MOVE_WAIT in [e.kind for e in events])
        assert voice.state is SessionState.AWAITING_MOVE
        assert voice.ws.disconnected
        voice.move_to(gateway.url, "token-SECRET-VALUE")
        await eventually(lambda: voice.state is SessionState.READY, 10)


async def test_close_with_a_code_that_may_not_be_sent_raises_at_once(
    gateway: FakeVoiceGateway,
) -> None:
    voice = client(gateway, "aiohttp")
    async with voice:
        await voice.wait_ready(10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ValueError, match="1001"):
            await voice.close(1001)
        assert loop.time() - started < 1
        assert voice.state is SessionState.READY
        outcome = await voice.close(4000, "bye")
    assert outcome.reason == "closed"
    assert voice.ws.close_code == 4000


# -- a bounded inbox ----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_the_inbox_is_bounded_and_backpressure_reaches_the_gateway(transport: str) -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.1, heartbeat_timeout_factor=20) as gateway:
        await _bounded_inbox(gateway, transport)


async def _bounded_inbox(gateway: FakeVoiceGateway, transport: str) -> None:
    events: list[SessionEvent] = []
    voice = client(gateway, transport, receive_queue_size=50, on_event=events.append)
    total = 1500
    async with voice:
        await voice.wait_ready(10)
        session = await gateway.wait_live(SESSION)

        async def produce() -> None:
            for n in range(total):
                await gateway.send(SESSION, 5, {"speaking": 1, "ssrc": n, "pad": "x" * 8192})

        producing = asyncio.ensure_future(produce())
        await eventually(lambda: voice.pending_receives >= 50, 10)
        assert session.conn is not None
        # The gateway can no longer write: the client stopped reading its socket.
        await eventually(lambda: session.conn is not None and session.conn.write_blocked(), 10)
        assert voice.pending_receives <= 51
        # Heartbeat intervals pass while the client is not reading: no false zombie.
        # (Waiting is the point here: nothing may happen meanwhile.)
        await asyncio.sleep(0.5)
        assert not producing.done()
        received = []
        async for message in voice:
            assert isinstance(message, Speaking)
            received.append(message.ssrc)
            if len(received) == total:
                break
        await producing
    assert received == list(range(total))
    assert not [e for e in events if e.kind is EventKind.ZOMBIE]


@pytest.mark.timeout(60)
async def test_backpressure_longer_than_the_keepalive_does_not_drop_the_connection(
    transport: str,
) -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.1, heartbeat_timeout_factor=50) as gateway:
        events: list[SessionEvent] = []
        voice = VoiceClient(
            gateway.url,
            CREDENTIALS,
            websocket=Websocket(transport=transport, ping_interval=0.2, ping_timeout=0.2),
            backoff=FAST,
            receive_queue_size=20,
            on_event=events.append,
        )
        total = 400
        async with voice:
            await voice.wait_ready(10)

            async def produce() -> None:
                for n in range(total):
                    await gateway.send(SESSION, 5, {"speaking": 1, "ssrc": n, "pad": "x" * 8192})

            producing = asyncio.ensure_future(produce())
            await eventually(lambda: voice.pending_receives >= 20, 10)
            # The application stays busy for several keepalive periods (ping 0.2 + 0.2 s):
            # measured by the gateway's count of this session's heartbeats (one per 0.1 s),
            # which go on while the client reads nothing.
            beats = gateway.session(SESSION).heartbeats
            await eventually(lambda: gateway.session(SESSION).heartbeats >= beats + 15, 30)
            received = []
            async for message in voice:
                assert isinstance(message, Speaking)
                received.append(message.ssrc)
                if len(received) == total:
                    break
            await producing
        assert received == list(range(total))
        lost = [e for e in events if e.kind is EventKind.CONNECTION_LOST]
        assert len(lost) == 1  # only the close at the end
        assert lost[0].signal is not None
        assert lost[0].signal.event is not Event.KEEPALIVE_TIMEOUT


async def test_a_payload_changed_after_send_json_is_sent_as_it_was(
    gateway: FakeVoiceGateway,
) -> None:
    voice = client(gateway, "aiohttp")
    payload: dict[str, object] = {"op": 5, "d": {"n": "original"}}
    sending = asyncio.ensure_future(voice.send_json(payload))  # queued: not started yet
    await asyncio.sleep(0)
    payload["d"] = {"n": object()}  # no longer encodable
    async with voice:
        await asyncio.wait_for(sending, 10)
        await voice.send_json({"op": 5, "d": {"n": "end"}})
        await eventually(lambda: "end" in _sent_numbers(gateway), 10)
        assert voice.state is SessionState.READY
    assert _sent_numbers(gateway) == ["original", "end"]


def _feed_server(
    then: Callable[[ServerConnection], Awaitable[None]],
) -> WebsocketTestServer:
    """A server for ``Feed``: the welcome (a resume's too), then ``then``."""

    async def serve(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionDropped):
            hello = await conn.receive_json()
            await conn.send_json({"op": "welcome", "resumed": hello["op"] == "resume"})
            await then(conn)

    return WebsocketTestServer(serve)


class _BeatsThatFailWhenGivenUp(Websocket):
    """A heartbeat's send that waits for room and, when the beat gives up on it, ends
    with the connection's signal instead of its cancellation: what a send does when the
    peer's close frame is read in the same turn (the soak found "Task exception was
    never retrieved" for it once)."""

    given_up = 0

    async def send_json(self, data: dict[str, object]) -> None:
        if data.get("op") != "ping" or self.given_up:
            await super().send_json(data)
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.given_up += 1
            raise ResumeSignal("lost", code=1006, event=Event.NO_CLOSE_FRAME) from None


@pytest.mark.timeout(30)
async def test_a_beat_given_up_on_that_ends_with_a_signal_ends_the_connection_with_it() -> None:
    from .test_session_protocols import Feed, answer_pings

    unretrieved: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    events: list[SessionEvent] = []
    ws = _BeatsThatFailWhenGivenUp()
    try:
        async with _feed_server(answer_pings) as server:
            session = Session(
                server.url, Feed(heartbeat=0.05), websocket=ws, backoff=FAST, on_event=events.append
            )
            async with session:
                await eventually(lambda: session.stats.resumes >= 1, 20)
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []
    assert ws.given_up == 1
    lost = [e.signal for e in events if e.kind is EventKind.CONNECTION_LOST]
    assert isinstance(lost[0], ResumeSignal)
    assert lost[0].reason == "lost"


async def _stopped_by_a_bug(
    protocol: GatewayProtocol,
) -> tuple[Outcome, tuple[int | None, str] | None]:
    """Run ``protocol`` (a ``Feed`` that raises somewhere) against a ``Feed`` server:
    the session's outcome, and the close frame the server received."""
    from .test_session_protocols import answer_pings

    closes: list[tuple[int | None, str] | None] = []

    async def answer_then_record(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionDropped):
            await answer_pings(conn)
        closes.append(conn.close_received)

    async with _feed_server(answer_then_record) as server:
        session = Session(server.url, protocol, backoff=FAST)
        async with session:
            outcome = await asyncio.wait_for(session.wait_closed(), 20)
        await eventually(lambda: bool(closes))
    return outcome, closes[0]


@pytest.mark.timeout(30)
async def test_a_protocol_whose_heartbeat_raises_stops_the_session_with_that_error() -> None:
    from .test_session_protocols import Feed

    class BrokenBeats(Feed):
        def heartbeat(self, nonce: int) -> dict[str, object]:
            raise RuntimeError("no heartbeat for you")

    outcome, close = await _stopped_by_a_bug(BrokenBeats(heartbeat=0.05))
    assert outcome.reason == "error"
    assert isinstance(outcome.error, RuntimeError)
    assert str(outcome.error) == "no heartbeat for you"
    # A bug is not the end of the session on the server's side: resumable, never 1000.
    assert close is not None
    assert close[0] == 4000


@pytest.mark.timeout(30)
async def test_a_protocol_whose_receive_raises_stops_the_session_with_that_error() -> None:
    # The read task ends with an exception, not a signal: it ends the connection itself.
    from wavegate import Output, WebsocketPacket

    from .test_session_protocols import Feed

    class BrokenReader(Feed):
        def receive(self, packet: WebsocketPacket) -> list[Output]:
            outputs = super().receive(packet)
            if self.welcomed:
                raise RuntimeError("cannot read this")
            return outputs

    outcome, close = await _stopped_by_a_bug(BrokenReader(heartbeat=None))
    assert outcome.reason == "error"
    assert isinstance(outcome.error, RuntimeError)
    assert str(outcome.error) == "cannot read this"
    assert close is not None
    assert close[0] == 4000


def _beats_left(loop: asyncio.AbstractEventLoop) -> list[object]:
    """Timers of a ``Beats`` still scheduled, and heartbeat sends still running."""
    from wavegate.session.connection import Beats

    state = vars(loop)  # asyncio keeps its timers and ready callbacks there
    handles = [*state["_scheduled"], *state["_ready"]]
    scheduled = [
        handle
        for handle in handles
        if not handle.cancelled() and isinstance(getattr(handle._callback, "__self__", None), Beats)
    ]
    sends = [task for task in asyncio.all_tasks(loop) if "send_json" in repr(task.get_coro())]
    return [*scheduled, *sends]


@pytest.mark.timeout(60)
async def test_beats_asked_for_while_their_sends_are_stuck_leave_nothing_behind() -> None:
    """A gateway that stopped reading and keeps asking for heartbeats: the beats' sends
    wait for room, are given up on, and the connection ends as a zombie; no timer or
    send of the beats outlives the session."""
    from wavegate import HeartbeatRequest, Output, WebsocketPacket

    from .test_session_protocols import Feed

    class AskingFeed(Feed):
        def receive(self, packet: WebsocketPacket) -> list[Output]:
            if getattr(packet, "payload", {}).get("op") == "beat":
                return [HeartbeatRequest()]
            return super().receive(packet)

    async def stop_reading_and_ask(conn: ServerConnection) -> None:
        conn.stop_reading()
        while True:
            await conn.send_json({"op": "beat"})
            await asyncio.sleep(0.01)  # a request every 10 ms: pacing, not waiting

    loop = asyncio.get_running_loop()
    async with _feed_server(stop_reading_and_ask) as server:
        session = Session(server.url, AskingFeed(heartbeat=0.05), backoff=FAST)
        async with session:
            await session.wait_ready(10)
            big = {"op": "data", "pad": "x" * (256 << 10)}
            for _ in range(40):  # more than the socket buffers hold: the beats get stuck
                with contextlib.suppress(SendTimeoutError):
                    await session.send_json(big, timeout=0.05)
            await eventually(lambda: session.stats.zombies >= 2, 30)
    await eventually(lambda: not _beats_left(loop))
