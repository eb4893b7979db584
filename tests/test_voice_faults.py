"""Each fault of the demo, on the fake voice gateway: signals, events, outcome, zero loss."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from wavegate import Backoff, DisconnectSignal, Event, ReconnectSignal, ResumeSignal, Websocket
from wavegate.discord.voice import (
    ClientsConnect,
    DaveEvent,
    Speaking,
    VoiceClient,
    VoiceCredentials,
)
from wavegate.session import EventKind, SessionEvent
from wavegate.signals import SendQueueFullError, SendTimeoutError, SessionClosedError
from wavegate.testing.traffic import Traffic
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually
from .voice_harness import CREDENTIALS, assert_nothing_lost, refreshing

# Uncapped: tests that wait for recovery must not run out of attempts on a busy machine
# (the cap itself is tested in test_retries_are_capped_and_the_outcome_says_so).
FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeVoiceGateway]:
    # The server tolerates 1 s without heartbeats: on a busy machine a 150 ms limit
    # would add its own 4009 closes to the faults under test.
    async with FakeVoiceGateway(heartbeat_interval=0.05, heartbeat_timeout_factor=20) as running:
        yield running


def kinds(events: list[SessionEvent]) -> list[str]:
    """The kinds of ``events`` in order, without heartbeats: they interleave anywhere
    (an ACK may land just before a close on a busy machine)."""
    return [event.kind.value for event in events if event.kind is not EventKind.HEARTBEAT]


async def started(
    gateway: FakeVoiceGateway, events: list[SessionEvent], **options: object
) -> tuple[VoiceClient, Traffic]:
    options.setdefault("backoff", FAST)
    options.setdefault("refresh_credentials", refreshing(gateway))
    client = VoiceClient(gateway.url, CREDENTIALS, on_event=events.append, **options)  # type: ignore[arg-type]
    await client.start()
    await client.wait_ready(5)
    traffic = Traffic(gateway, client)
    traffic.start()
    await traffic.run_for(10)
    return client, traffic


async def test_4015_resumes_the_same_session_with_nothing_lost(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.close_session(CREDENTIALS.session_id, 4015, "voice server crashed")
    await traffic.run_for(20)
    await assert_nothing_lost(traffic)
    lost = [event for event in events if event.kind is EventKind.CONNECTION_LOST]
    assert isinstance(lost[0].signal, ResumeSignal)
    assert lost[0].signal.code == 4015
    assert kinds(events)[:6] == [
        "connecting",
        "ready",
        "connection_lost",
        "resume_scheduled",
        "resuming",
        "resumed",
    ]
    scheduled = next(event for event in events if event.kind is EventKind.RESUME_SCHEDULED)
    assert scheduled.delay == 0  # the first resume is immediate
    assert (client.stats.resumes, client.stats.reconnects, gateway.identifies) == (1, 0, 1)
    outcome = await client.close()
    assert outcome.reason == "closed"


async def test_tcp_drop_resumes_and_replays_with_nothing_lost(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    for _ in range(3):
        await gateway.drop(CREDENTIALS.session_id)
        await traffic.run_for(15)
    await assert_nothing_lost(traffic)
    signals = [event.signal for event in events if event.kind is EventKind.CONNECTION_LOST]
    assert all(isinstance(signal, ResumeSignal) for signal in signals)
    assert {signal.event for signal in signals if signal} <= {
        Event.NO_CLOSE_FRAME,
        Event.TRANSPORT_ERROR,
    }
    assert client.stats.resumes == 3
    assert gateway.identifies == 1
    await client.close()


async def test_zombie_connection_is_closed_with_4000_and_resumed(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    session = gateway.session(CREDENTIALS.session_id)
    zombie = session.conn
    gateway.stop_acking(CREDENTIALS.session_id)
    await traffic.run_for(60)
    await assert_nothing_lost(traffic)
    assert client.stats.zombies == 1
    assert "zombie" in kinds(events)
    assert zombie is not None
    assert zombie.close_received is not None
    assert zombie.close_received[0] == 4000  # not 1000: the session stays resumable
    lost = next(event for event in events if event.kind is EventKind.CONNECTION_LOST)
    assert isinstance(lost.signal, ResumeSignal)
    assert lost.signal.event is Event.KEEPALIVE_TIMEOUT
    assert client.stats.resumes == 1
    assert gateway.identifies == 1
    await client.close()


async def test_expired_replay_buffer_escalates_to_a_new_session(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    gateway.expire(CREDENTIALS.session_id)
    await gateway.close_session(CREDENTIALS.session_id, 4015)
    await traffic.run_for(20)
    await assert_nothing_lost(traffic)
    assert gateway.resumes_refused == 1
    assert gateway.identifies == 2
    assert client.stats.reconnects == 1
    sequence = kinds(events)
    assert sequence.index("reconnect_scheduled") > sequence.index("resuming")
    assert sequence.count("resuming") == 1  # no resume loop
    assert gateway.session(CREDENTIALS.session_id).generation == 1
    await client.close()


async def test_4006_opens_a_new_session_never_resumes(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.close_session(CREDENTIALS.session_id, 4006, "session no longer valid")
    await traffic.run_for(20)
    await assert_nothing_lost(traffic)
    lost = next(event for event in events if event.kind is EventKind.CONNECTION_LOST)
    assert isinstance(lost.signal, ReconnectSignal)
    assert "resuming" not in kinds(events)
    assert gateway.resumes == 0
    assert gateway.identifies == 2
    await client.close()


async def test_4014_stops_with_an_outcome_that_says_why(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.close_session(CREDENTIALS.session_id, 4014, "disconnected")
    outcome = await asyncio.wait_for(client.wait_closed(), 5)
    await traffic.stop()
    assert outcome.reason == "disconnect"
    assert isinstance(outcome.signal, DisconnectSignal)
    assert (outcome.code, outcome.signal.reason) == (4014, "disconnected")
    assert kinds(events)[-1] == "stopped"
    # Every message sent before the stop arrived; later sends fail loudly.
    assert traffic.server_received() == list(range(traffic.client_sent))
    with pytest.raises(SessionClosedError):
        await client.send_speaking(1)


async def test_4014_within_the_move_grace_becomes_a_new_session(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events, move_grace=2.0)
    await gateway.close_session(CREDENTIALS.session_id, 4014, "moved")
    await eventually(lambda: "move_wait" in kinds(events))
    client.move_to(gateway.url, token="token-NEW")
    await traffic.run_for(10)
    await assert_nothing_lost(traffic)
    assert gateway.session(CREDENTIALS.session_id).token == "token-NEW"
    assert client.outcome is None
    await client.close()


async def test_4014_without_a_move_stops_after_the_grace(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events, move_grace=0.05)
    await gateway.close_session(CREDENTIALS.session_id, 4014)
    outcome = await asyncio.wait_for(client.wait_closed(), 5)
    await traffic.stop()
    assert (outcome.reason, outcome.code) == ("disconnect", 4014)


@pytest.mark.parametrize("code", [4017, 4021, 4022, 4004])
async def test_final_codes_stop_without_retrying(gateway: FakeVoiceGateway, code: int) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.close_session(CREDENTIALS.session_id, code)
    outcome = await asyncio.wait_for(client.wait_closed(), 5)
    await traffic.stop()
    assert (outcome.reason, outcome.code) == ("disconnect", code)
    assert gateway.identifies == 1
    assert "reconnect_scheduled" not in kinds(events)


async def test_a_server_that_always_refuses_resume_is_never_looped_on(
    gateway: FakeVoiceGateway,
) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    for _ in range(4):
        gateway.expire(CREDENTIALS.session_id)  # every RESUME is answered with 4006
        await gateway.close_session(CREDENTIALS.session_id, 4015)
        await gateway.wait_live(CREDENTIALS.session_id)
        await traffic.run_for(3)
    await assert_nothing_lost(traffic)
    # One RESUME per crash, each refused, each followed by exactly one new session.
    assert gateway.resumes_refused == 4
    assert gateway.identifies == 5
    assert kinds(events).count("resuming") == 4
    await client.close()


async def test_repeated_failed_resumes_escalate_after_max_resume_attempts(
    gateway: FakeVoiceGateway,
) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events, max_resume_attempts=2)
    gateway.reject_handshakes(503)  # resumes cannot even connect
    await gateway.close_session(CREDENTIALS.session_id, 4015)
    await eventually(lambda: "reconnect_scheduled" in kinds(events))
    gateway.accept_handshakes()
    await traffic.run_for(10)
    await assert_nothing_lost(traffic)
    sequence = kinds(events)
    assert sequence.count("resuming") == 2
    assert "reconnect_scheduled" in sequence
    await client.close()


async def test_retries_are_capped_and_the_outcome_says_so() -> None:
    events: list[SessionEvent] = []
    client = VoiceClient(
        "ws://127.0.0.1:1/",
        CREDENTIALS,
        backoff=Backoff(base=0.001, cap=0.002, max_attempts=3),
        on_event=events.append,
    )
    await client.start()
    outcome = await asyncio.wait_for(client.wait_closed(), 5)
    assert outcome.reason == "retries_exhausted"
    assert isinstance(outcome.signal, ReconnectSignal)
    assert outcome.signal.event is Event.CONNECT_REFUSED
    assert [event.attempt for event in events if event.kind is EventKind.RECONNECT_SCHEDULED] == [
        1,
        2,
        3,
    ]


async def test_first_connect_failure_is_retried_until_the_gateway_appears() -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.05) as gateway:
        gateway.reject_handshakes(502)
        events: list[SessionEvent] = []
        client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=events.append)
        await client.start()
        await eventually(lambda: kinds(events).count("reconnect_scheduled") >= 2)
        gateway.accept_handshakes()
        await client.wait_ready(5)
        await client.close()


async def test_sends_wait_across_a_reconnect_in_order(gateway: FakeVoiceGateway) -> None:
    events: list[SessionEvent] = []
    client = VoiceClient(
        gateway.url,
        CREDENTIALS,
        backoff=FAST,
        on_event=events.append,
        refresh_credentials=refreshing(gateway),
    )
    await client.start()
    await client.wait_ready(5)
    gateway.reject_handshakes(503)
    await gateway.close_session(CREDENTIALS.session_id, 4006)
    await eventually(lambda: client.stats.reconnects > 0)
    sends = [asyncio.create_task(client.send_speaking(1, ssrc=n)) for n in range(50)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in sends)  # waiting, not failed
    gateway.accept_handshakes()
    await asyncio.wait_for(asyncio.gather(*sends), 5)

    def spoken() -> list[int]:  # DAVE's messages are recorded too: count SPEAKING only
        return [d["ssrc"] for op, d in gateway.received_by_user[CREDENTIALS.user_id] if op == 5]

    await eventually(lambda: len(spoken()) >= 50)
    assert spoken() == list(range(50))
    await client.close()


async def test_send_queue_is_bounded_with_a_clear_error(gateway: FakeVoiceGateway) -> None:
    gateway.stall_handshakes()
    client = VoiceClient(gateway.url, CREDENTIALS, send_queue_size=3, backoff=FAST)
    await client.start()
    waiting = [asyncio.create_task(client.send_speaking(1, ssrc=n)) for n in range(2)]
    with pytest.raises(SendTimeoutError):
        await client.send_json({"op": 5, "d": {}}, timeout=0.01)
    assert client.pending_sends == 2  # the timed-out one was withdrawn
    waiting.append(asyncio.create_task(client.send_speaking(1, ssrc=2)))
    await asyncio.sleep(0)
    with pytest.raises(SendQueueFullError):
        await client.send_speaking(1, ssrc=99)
    assert client.pending_sends == 3
    await client.close()
    for task in waiting:
        with pytest.raises(SessionClosedError):
            await task


async def test_a_timed_out_send_is_withdrawn_and_never_sent(gateway: FakeVoiceGateway) -> None:
    client = VoiceClient(
        gateway.url, CREDENTIALS, backoff=FAST, websocket=Websocket(open_timeout=0.05)
    )
    gateway.stall_handshakes()
    await client.start()
    with pytest.raises(SendTimeoutError):
        await client.send_json({"op": 5, "d": {"speaking": 1, "ssrc": 7, "delay": 0}}, timeout=0.02)
    gateway.accept_handshakes()
    await client.wait_ready(5)
    await client.send_speaking(1, ssrc=8)
    await eventually(
        lambda: any(op == 5 for op, _ in gateway.received_by_user[CREDENTIALS.user_id])
    )
    received = [d["ssrc"] for op, d in gateway.received_by_user[CREDENTIALS.user_id] if op == 5]
    assert received == [8]
    await client.close()


async def test_heartbeats_carry_seq_ack_across_sockets_and_measure_latency(
    gateway: FakeVoiceGateway,
) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await traffic.stop()
    last_seq = gateway.session(CREDENTIALS.session_id).seq
    await eventually(lambda: gateway.session(CREDENTIALS.session_id).seq_ack == last_seq)
    await gateway.drop(CREDENTIALS.session_id)
    await gateway.wait_live(CREDENTIALS.session_id)
    assert gateway.session(CREDENTIALS.session_id).seq_ack == last_seq  # RESUME carried it
    assert client.latency is not None
    assert 0 <= client.latency < 1
    assert any(event.kind is EventKind.HEARTBEAT for event in events)
    await client.close()


async def test_unknown_ops_are_ignored_typed_payloads_delivered_and_dave_ops_handled(
    gateway: FakeVoiceGateway,
) -> None:
    events: list[SessionEvent] = []
    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=events.append)
    await client.start()
    await client.wait_ready(5)
    for op in (15, 18, 20, 99):
        await gateway.send_unknown(CREDENTIALS.session_id, op)
    await gateway.send(CREDENTIALS.session_id, 11, {"user_ids": ["2", "3"]})
    await gateway.send_binary(CREDENTIALS.session_id, 30, b"\x00\x07welcome")
    await gateway.send_binary(CREDENTIALS.session_id, 27, b"\x00junk")  # append: refused
    await gateway.send_binary(CREDENTIALS.session_id, 27, b"\x01refs")  # revoke: nothing held
    # seq 1 was the gateway's DAVE external sender (op 25), handled by the protocol.
    assert await client.receive() == ClientsConnect(("2", "3"), seq=2)
    # DAVE's ops are the protocol's: a welcome it cannot read is flagged (op 31) and
    # DAVE starts over with a new key package; bad proposals are refused.
    await eventually(lambda: len(gateway.received_by_user[CREDENTIALS.user_id]) >= 3)
    first, flag, second = gateway.received_by_user[CREDENTIALS.user_id]
    assert (first[0], flag, second[0]) == (26, (31, {"transition_id": 7}), 26)
    assert first[1] != second[1]
    await eventually(lambda: client.protocol.seq_ack == 5)
    errors = [e for e in events if e.kind is DaveEvent.ERROR]
    assert [e.data["recovery"] for e in errors] == ["reinit", "none"]
    assert client.pending_receives == 0
    assert client.state.value == "ready"
    await client.close()


async def test_seq_zero_is_a_valid_seq(gateway: FakeVoiceGateway) -> None:
    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST)
    await client.start()
    await client.wait_ready(5)
    session = gateway.session(CREDENTIALS.session_id)
    session.seq = (1 << 16) - 1  # the next seq wraps to 0
    await gateway.send_speaking(CREDENTIALS.session_id, 1)
    message = await client.receive()
    assert isinstance(message, Speaking)
    assert message.seq == 0
    assert client.protocol.seq_ack == 0
    await client.close()


async def test_close_cancels_every_task_and_leaves_nothing_open(gateway: FakeVoiceGateway) -> None:
    before = asyncio.all_tasks()
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.drop(CREDENTIALS.session_id)
    await traffic.run_for(5)
    await traffic.stop()
    outcome = await client.close(4000, "bye")
    assert outcome.reason == "closed"
    assert client.ws.disconnected
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    await eventually(lambda: gateway.server.open_connections == 0)


async def test_no_token_or_session_id_in_any_log_record(
    gateway: FakeVoiceGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events)
    await gateway.close_session(CREDENTIALS.session_id, 4015)
    await traffic.run_for(5)
    gateway.expire(CREDENTIALS.session_id)
    await gateway.drop(CREDENTIALS.session_id)
    await traffic.run_for(5)
    await traffic.stop()
    await client.close()
    texts = [record.getMessage() for record in caplog.records]
    texts += [repr(client), repr(client.protocol), repr(CREDENTIALS), str(events)]
    assert any("voice >>" in text for text in texts)  # payloads were logged, redacted
    for secret in (CREDENTIALS.token, CREDENTIALS.session_id):
        assert not [text for text in texts if secret in text]


def test_credentials_repr_hides_secrets() -> None:
    credentials = VoiceCredentials("1", "2", "sess-xyz", "tok-xyz", "1")
    assert "sess-xyz" not in repr(credentials)
    assert "tok-xyz" not in repr(credentials)


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
async def test_resumes_lose_nothing_on_every_transport(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    events: list[SessionEvent] = []
    client, traffic = await started(gateway, events, websocket=Websocket(transport=transport))
    await gateway.close_session(CREDENTIALS.session_id, 4015)
    await traffic.run_for(10)
    await gateway.drop(CREDENTIALS.session_id)
    await traffic.run_for(10)
    gateway.stop_acking(CREDENTIALS.session_id)
    await traffic.run_for(60)
    await gateway.close_session(CREDENTIALS.session_id, 4006)
    await traffic.run_for(10)
    await assert_nothing_lost(traffic)
    assert (client.stats.resumes, client.stats.zombies, client.stats.reconnects) == (3, 1, 1)
    await client.close()


# -- tokens go stale, as on Discord -----------------------------------------------------


async def test_without_refresh_a_4006_stops_once_and_says_why(gateway: FakeVoiceGateway) -> None:
    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST)
    await client.start()
    await client.wait_ready(5)
    identifies = gateway.identifies
    await gateway.close_session(CREDENTIALS.session_id, 4006, "session no longer valid")
    outcome = await asyncio.wait_for(client.wait_closed(), 10)
    assert outcome.reason == "needs_credentials"
    assert "refresh_credentials" in str(outcome)
    assert gateway.identifies == identifies  # no IDENTIFY doomed to another 4006


async def test_refresh_is_asked_before_each_new_session_and_never_for_a_resume(
    gateway: FakeVoiceGateway,
) -> None:
    asked: list[str] = []
    fresh = refreshing(gateway)

    async def refresh() -> VoiceCredentials:
        credentials = await fresh()
        asked.append(credentials.token)
        return credentials

    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, refresh_credentials=refresh)
    async with client:
        await client.wait_ready(5)
        await gateway.close_session(CREDENTIALS.session_id, 4015)
        await eventually(lambda: client.stats.resumes == 1)
        assert asked == []
        await gateway.close_session(CREDENTIALS.session_id, 4006)
        await eventually(lambda: client.stats.reconnects == 1)
        await client.wait_ready(5)
        assert len(asked) == 1
        assert gateway.session(CREDENTIALS.session_id).token == asked[0]
        gateway.expire(CREDENTIALS.session_id)
        await gateway.close_session(CREDENTIALS.session_id, 4015)  # resume refused: 4006
        await eventually(lambda: client.stats.reconnects == 2)
        await client.wait_ready(5)
        assert len(asked) == 2


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        ("not credentials", "must return VoiceCredentials, not str"),
        (VoiceCredentials("1001", "9999", "s", "t", "1001"), "another user's credentials"),
    ],
)
async def test_a_refresh_that_returns_nonsense_stops_with_the_reason(
    gateway: FakeVoiceGateway, returned: object, error: str
) -> None:
    async def refresh() -> VoiceCredentials:
        return returned  # type: ignore[return-value]

    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, refresh_credentials=refresh)
    await client.start()
    await client.wait_ready(5)
    await gateway.close_session(CREDENTIALS.session_id, 4006)
    outcome = await asyncio.wait_for(client.wait_closed(), 10)
    assert outcome.reason == "error"
    assert error in str(outcome.error)


async def test_unnumbered_sends_right_after_a_fault_reach_the_resumed_connection(
    gateway: FakeVoiceGateway,
) -> None:
    """The README's fake-gateway tour: a fault, then at once an op the client must
    ignore and a server op 3. They wait for the session's next live connection
    instead of failing on the one the fault just closed."""
    client = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST)
    await client.start()
    await client.wait_ready(5)
    sid = CREDENTIALS.session_id
    for fault in (gateway.close_session(sid, 4015), gateway.drop(sid)):
        before = gateway.session(sid).heartbeats
        await fault
        await gateway.send_unknown(sid, 18)
        await gateway.request_heartbeat(sid)
        await eventually(lambda b=before: gateway.session(sid).heartbeats > b)  # type: ignore[misc]
    assert gateway.session(sid).resumes == 2
    await client.close()
