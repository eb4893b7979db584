"""What a new user ran into, each fixed and kept fixed: an endpoint without a scheme
pointed at a plain server, a readiness timeout that did not say what it waited for,
credentials that were not checked, a state that printed as a number, no ``async for``
on a Websocket, ``on_event`` that took only plain functions, and timing options
(``ping_timeout=None``, NaN) that failed with a bare ``TypeError`` or were taken."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from wavegate import (
    GENERIC,
    Backoff,
    DisconnectSignal,
    Event,
    HandshakeDone,
    InvalidURLError,
    ResumeSignal,
    Send,
    SendTimeoutError,
    Session,
    WaitTimeoutError,
    Websocket,
    WebsocketPacketJSON,
    WebsocketState,
)
from wavegate.discord import VoiceClient, VoiceCredentials
from wavegate.policy import CONNECT_FAILURES
from wavegate.session import EventKind, SessionEvent, SessionState
from wavegate.testing import WebsocketTestServer
from wavegate.testing.voice import FakeVoiceGateway
from wavegate.transport import retry_after_seconds

from .peers import websockets_server
from .voice_harness import CREDENTIALS

FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)

pytestmark = pytest.mark.timeout(60)


def host_port(url: str) -> str:
    return url.split("//", 1)[1].split("/", 1)[0]


async def _ignore(ws: ServerConnection) -> None:
    await ws.wait_closed()


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
@pytest.mark.parametrize("server", ["fake gateway", "websockets"])
async def test_a_bare_host_port_on_a_plain_server_says_to_use_ws(
    transport: str, server: str
) -> None:
    """``host:port`` means wss:// (Discord's endpoints). A plain server answers the TLS
    hello with HTTP 400 at once; the ending and wait_ready's timeout say to use ws://.
    The open timeout is long, so a stalled handshake could not pass for that answer."""
    async with FakeVoiceGateway() as gateway, websockets_server(_ignore) as foreign:
        url = gateway.url if server == "fake gateway" else foreign
        ws = Websocket(transport=transport, open_timeout=60)
        voice = VoiceClient(host_port(url), CREDENTIALS, backoff=FAST, websocket=ws)
        await voice.start()
        with pytest.raises(WaitTimeoutError) as caught:
            await voice.wait_ready(5)
        await voice.close()
    message = str(caught.value)
    assert f"wss://{host_port(url)}/?v=8" in message
    # Our fake answers the TLS hello with HTTP 400 (certainly not TLS); websockets'
    # server hangs up (perhaps not TLS): the hint says which.
    assert ("without TLS" if server == "fake gateway" else "hung up during TLS") in message
    assert f"ws://{host_port(url)}" in message


async def test_a_ws_url_endpoint_is_used_as_given() -> None:
    async with FakeVoiceGateway() as gateway:
        plain = "ws://" + host_port(gateway.url)
        async with VoiceClient(plain, CREDENTIALS, backoff=FAST) as voice:
            await voice.wait_ready(10)


async def test_wait_ready_names_the_url_and_the_attempt_it_waits_on() -> None:
    async with FakeVoiceGateway() as gateway:
        gateway.stall_handshakes()
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST)
        await voice.start()
        with pytest.raises(WaitTimeoutError) as caught:
            await voice.wait_ready(0.5)
        await voice.close()
    message = str(caught.value)
    assert "state connecting (ws://127.0.0.1:" in message
    assert "attempt 1)" in message


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("session_id", "", ValueError),
        ("token", "", ValueError),
        ("token", None, TypeError),
        ("session_id", 12, TypeError),
    ],
)
def test_credentials_check_the_session_id_and_token(
    field: str, value: object, error: type[Exception]
) -> None:
    fields: dict[str, object] = {
        "server_id": "1001",
        "user_id": "2001",
        "session_id": "s",
        "token": "t",
        "channel_id": "3001",
    }
    fields[field] = value
    with pytest.raises(error, match=f"VoiceCredentials.{field}"):
        VoiceCredentials(**fields)  # type: ignore[arg-type]


def test_a_session_state_prints_as_the_docs_name_it() -> None:
    assert str(SessionState.READY) == "ready"
    assert f"{SessionState.AWAITING_MOVE}" == "awaiting_move"


def test_a_websocket_state_prints_its_name() -> None:
    assert str(WebsocketState.CONNECTED) == "CONNECTED"
    assert f"{WebsocketState.DISCONNECTING}" == "DISCONNECTING"
    assert int(WebsocketState.CONNECTED) == 0  # still the reference API's values


async def test_async_for_ends_on_a_disconnect_signal() -> None:
    async with WebsocketTestServer() as server, Websocket() as ws:
        await ws.connect(server.url)
        conn = await server.accepted()
        await conn.send_json({"n": 1})
        await conn.send_json({"n": 2})
        await conn.close(4014, "kicked")
        got = [packet async for packet in ws]
        assert got == [WebsocketPacketJSON({"n": 1}), WebsocketPacketJSON({"n": 2})]
        assert isinstance(ws.last_signal, DisconnectSignal)
        assert ws.last_signal.code == 4014


async def test_async_for_raises_a_resume_or_reconnect_signal() -> None:
    async with WebsocketTestServer() as server, Websocket() as ws:
        await ws.connect(server.url)
        conn = await server.accepted()
        await conn.send_json({"n": 1})
        await conn.close(4015, "crashed")
        got: list[object] = []

        async def loop() -> None:
            async for packet in ws:
                got.append(packet)

        with pytest.raises(ResumeSignal):
            await loop()
        assert got == [WebsocketPacketJSON({"n": 1})]


async def test_on_event_takes_a_coroutine_function_awaited_in_order() -> None:
    seen: list[EventKind] = []

    async def on_event(event: SessionEvent) -> None:
        if not seen:
            await asyncio.sleep(0)  # an awaiting callback must not reorder events
        seen.append(event.kind)  # type: ignore[arg-type]

    async with FakeVoiceGateway() as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=on_event)
        async with voice:
            await voice.wait_ready(10)
    assert seen[0] is EventKind.CONNECTING
    assert EventKind.READY in seen
    assert seen[-1] is EventKind.STOPPED  # close() awaited the last one


async def test_a_failing_async_on_event_is_logged_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(event: SessionEvent) -> None:
        raise RuntimeError("callback bug")

    async with FakeVoiceGateway() as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=broken)
        async with voice:
            await voice.wait_ready(10)
    assert "on_event callback failed" in caplog.text


async def test_an_async_on_event_may_close_the_session_itself() -> None:
    """close() from inside the callback must not wait on the callback (it would wait
    out close_timeout, then cancel itself and lose the events after)."""
    seen: list[object] = []
    voice: VoiceClient

    async def on_event(event: SessionEvent) -> None:
        seen.append(event.kind)
        if event.kind is EventKind.READY:
            await voice.close()

    async with FakeVoiceGateway() as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=on_event)
        voice._close_timeout = 30.0  # a self-wait would show as a 30 s stall, then a failure
        await voice.start()
        outcome = await asyncio.wait_for(voice.wait_closed(), 20)
    assert outcome.reason == "closed"
    assert seen[-1] is EventKind.STOPPED


async def test_a_session_that_stops_by_itself_delivers_every_event_to_an_async_callback() -> None:
    seen: list[object] = []

    async def on_event(event: SessionEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.kind)

    async with FakeVoiceGateway() as gateway:
        voice = VoiceClient(gateway.url, CREDENTIALS, backoff=FAST, on_event=on_event)
        await voice.start()
        await voice.wait_ready(10)
        await gateway.close_session(CREDENTIALS.session_id, 4014, "kicked")
        await voice.wait_closed()
    assert seen[-1] is EventKind.STOPPED


@pytest.mark.parametrize(
    ("url", "event", "reason", "hint"),
    [
        (
            "wss://u:p@h.example/x",
            Event.CONNECT_TLS,
            "[SSL] wrong version number",
            "(did the server answer without TLS? for a plain server use ws://h.example:443)",
        ),
        (
            "wss://[::1]:8443/",
            Event.CONNECT_ERROR,
            "ConnectionResetError: ",
            "(the server hung up during TLS: if it is a plain server, use ws://[::1]:8443)",
        ),
        ("wss://h.example/", Event.CONNECT_TLS, "certificate unknown", ""),
        ("ws://h.example/", Event.CONNECT_TLS, "wrong version number", ""),
        ("wss://h.example/", Event.CONNECT_REFUSED, "wrong version number", ""),
    ],
)
def test_the_tls_hint_names_the_plain_url_and_never_credentials(
    url: str, event: Event, reason: str, hint: str
) -> None:
    from wavegate.transport import tls_mismatch_hint

    said = tls_mismatch_hint(url, event, reason)
    assert said == (f"{reason} {hint}" if hint else reason)
    assert "u:p" not in said


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"ping_timeout": None},
            TypeError,
            "ping_timeout must be a positive number, got None "
            "(to turn the keepalive off, pass ping_interval=None)",
        ),
        ({"close_timeout": None}, TypeError, "close_timeout must be a positive number, got None"),
        (
            {"ping_interval": "20"},
            TypeError,
            "ping_interval must be a positive number or None, got '20'",
        ),
        (
            {"open_timeout": True},
            TypeError,
            "open_timeout must be a positive number or None, got True",
        ),
        (
            {"ping_interval": float("nan")},
            ValueError,
            "ping_interval must be a positive number or None, got nan",
        ),
        ({"ping_timeout": 0}, ValueError, "ping_timeout must be a positive number, got 0"),
        (
            {"max_size": -1},
            ValueError,
            "max_size must be a positive int up to 2**62, or None, got -1",
        ),
        # picows takes it in a C ssize_t: connect() raised OverflowError (found by review)
        (
            {"max_size": 2**70},
            ValueError,
            f"max_size must be a positive int up to 2**62, or None, got {2**70}",
        ),
        (
            {"read_buffer_size": 1024},
            ValueError,
            "read_buffer_size must be in 2048..16777216, got 1024",
        ),
        (
            {"read_buffer_size": 4096.0},
            TypeError,
            "read_buffer_size must be an int (bytes), got 4096.0",
        ),
        (
            {"read_buffer_size": None},
            TypeError,
            "read_buffer_size must be an int (bytes), got None",
        ),
        (
            {"read_buffer_size": 1 << 30},
            ValueError,
            "read_buffer_size must be in 2048..16777216, got 1073741824",
        ),
        # Found by review: picows took None (and "") as "do not verify".
        (
            {"ssl": None},
            TypeError,
            "ssl must be True (verify), False (do not verify) or an ssl.SSLContext, got None",
        ),
        (
            {"ssl": 1},
            TypeError,
            "ssl must be True (verify), False (do not verify) or an ssl.SSLContext, got 1",
        ),
        # Found by a new-user trial: accepted, then failing (or hanging) at connect().
        ({"max_size": 1.5}, TypeError, "max_size must be an int (bytes) or None, got 1.5"),
        ({"max_size": True}, TypeError, "max_size must be an int (bytes) or None, got True"),
        ({"compression": "yes"}, TypeError, "compression must be True or False, got 'yes'"),
        (
            {"compression": True, "transport": "picows"},
            ValueError,
            "compression (permessage-deflate) needs transport='aiohttp': picows has none",
        ),
        ({"json_codec": "orjson"}, TypeError, "json_codec must be a JSONCodec, got str"),
        (
            {"headers": "Authorization: x"},
            TypeError,
            "headers must be a mapping of header names to str values, got str",
        ),
        (
            {"headers": {"X-Count": 1}},
            TypeError,
            "header 'X-Count' must have a str value, got int",
        ),
        ({"headers": {1: "x"}}, TypeError, "header names must be str, got int"),
        (
            {"headers": {"X-A": "a\r\nInjected: yes"}},
            ValueError,
            "header 'X-A' has a line break or another control character in its value",
        ),
        (
            {"headers": {"Authorization": "Bot s3cr3t\n"}},
            ValueError,
            "header 'Authorization' has a line break or another control character in its value",
        ),
        (
            {"headers": {"X A": "1"}},
            ValueError,
            "a header name has ' ' at position 1: names are HTTP tokens (letters, digits,"
            " !#$%&'*+-.^_`|~)",
        ),
        (  # a value written as part of the name: the name is not shown (found by review)
            {"headers": {"Authorization: Bot s3cr3t": "x"}},
            ValueError,
            "a header name has ':' at position 13: names are HTTP tokens (letters, digits,"
            " !#$%&'*+-.^_`|~)",
        ),
        (
            {"headers": {"": "1"}},
            ValueError,
            "a header name is empty: names are HTTP tokens (letters, digits, !#$%&'*+-.^_`|~)",
        ),
        # Found by a new-user trial: given as headers, the handshake's own were sent
        # twice on picows (the server refused) and silently replaced on aiohttp.
        (
            {"headers": {"sec-websocket-protocol": "chat.v1"}},
            ValueError,
            "header 'sec-websocket-protocol' is the handshake's own: pass "
            "subprotocols=[...] instead",
        ),
        (
            {"headers": {"Sec-WebSocket-Extensions": "permessage-deflate"}},
            ValueError,
            "header 'Sec-WebSocket-Extensions' is the handshake's own: pass "
            "compression=True instead",
        ),
        (
            {"headers": {"Sec-WebSocket-Key": "x"}},
            ValueError,
            "header 'Sec-WebSocket-Key' is the handshake's own: the transport writes it",
        ),
        (
            {"subprotocols": "chat.v1"},
            TypeError,
            "subprotocols must be a list of names, got the str 'chat.v1' (pass ['chat.v1'])",
        ),
        (
            {"subprotocols": ["chat v1"]},
            ValueError,
            "subprotocol names are HTTP tokens (letters, digits, !#$%&'*+-.^_`|~), got 'chat v1'",
        ),
        ({"subprotocols": [1]}, TypeError, "subprotocol names are str, got int"),
        (
            {"subprotocols": ["a", "a"]},
            ValueError,
            "subprotocols #1 and #2 are the same",
        ),
    ],
)
def test_timing_options_that_make_no_sense_are_refused_by_name(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        Websocket(**options)  # type: ignore[arg-type]
    assert str(caught.value) == message


NAN = float("nan")


class _Feed:
    def start(self, *, resume: bool) -> list[Any]:
        return []

    def receive(self, packet: Any) -> list[Any]:
        return []

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        return {}

    def can_resume(self) -> bool:
        return False

    def new_session(self) -> None:
        pass


FEED = _Feed()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        # Found by a new-user trial: each was taken, then failed at run time (a zombie
        # that ended the Discord session with 1000, tracebacks per event, a session
        # stopped at READY) or with a bare comparison TypeError.
        ({"max_missed_acks": 0}, ValueError, "max_missed_acks must be an int of at least 1, got 0"),
        (
            {"max_missed_acks": 1.5},
            TypeError,
            "max_missed_acks must be an int of at least 1, got 1.5",
        ),
        (
            {"max_heartbeat_interval": -1},
            ValueError,
            "max_heartbeat_interval must be a positive number or None, got -1",
        ),
        (
            {"max_heartbeat_interval": 0},
            ValueError,
            "max_heartbeat_interval must be a positive number or None, got 0",
        ),
        ({"close_timeout": NAN}, ValueError, "close_timeout must be a positive number, got nan"),
        ({"close_timeout": -1}, ValueError, "close_timeout must be a positive number, got -1"),
        (
            {"handshake_timeout": NAN},
            ValueError,
            "handshake_timeout must be a positive number, got nan",
        ),
        (
            {"handshake_timeout": float("inf")},
            ValueError,
            "handshake_timeout must be a positive number, got inf",
        ),
        (
            {"zombie_close_code": 1000},
            ValueError,
            "zombie_close_code must be an int from 3000 to 4999 (1000 and 1001 end a Discord"
            " session), got 1000",
        ),
        (
            {"zombie_close_code": 99999},
            ValueError,
            "zombie_close_code must be an int from 3000 to 4999 (1000 and 1001 end a Discord"
            " session), got 99999",
        ),
        (
            {"move_grace": -1},
            ValueError,
            "move_grace must be a number of at least 0 (inf: never), got -1",
        ),
        (
            {"move_grace": NAN},
            ValueError,
            "move_grace must be a number of at least 0 (inf: never), got nan",
        ),
        (
            {"send_queue_size": 1.5},
            TypeError,
            "send_queue_size must be an int of at least 1, got 1.5",
        ),
        (
            {"send_queue_size": "10"},
            TypeError,
            "send_queue_size must be an int of at least 1, got '10'",
        ),
        (
            {"receive_queue_size": 0},
            ValueError,
            "receive_queue_size must be an int of at least 1, got 0",
        ),
        (
            {"max_resume_attempts": None},
            TypeError,
            "max_resume_attempts must be an int of at least 0, got None",
        ),
        (
            {"max_resume_attempts": -1},
            ValueError,
            "max_resume_attempts must be an int of at least 0, got -1",
        ),
        ({"move_codes": {4014, "x"}}, TypeError, "move_codes must be a set of ints"),
        ({"move_codes": "4014"}, TypeError, "move_codes must be a set of ints"),
        ({"move_codes": 4014}, TypeError, "move_codes must be a set of ints"),
        ({"zombie_close_code": "4000"}, TypeError, "zombie_close_code must be an int"),
        ({"websocket": "ws"}, TypeError, "websocket must be a Websocket or None, got str"),
        ({"backoff": "b"}, TypeError, "backoff must be a Backoff or None, got str"),
        ({"on_event": 5}, TypeError, "on_event must be a callable or None, got int"),
        ({"refresh_credentials": "x"}, TypeError, "refresh_credentials must be a callable"),
        ({"discover": 5}, TypeError, "discover must be a callable or None, got int"),
        (
            {"max_dave_protocol_version": 2},
            ValueError,
            "max_dave_protocol_version must be 0 (no DAVE) or 1, got 2",
        ),
    ],
)
def test_voice_client_options_that_make_no_sense_are_refused_by_name(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        VoiceClient("127.0.0.1:9", CREDENTIALS, **options)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"base": NAN}, ValueError, "base must be a positive number, got nan"),
        ({"cap": 0}, ValueError, "cap must be a positive number, got 0"),
        ({"factor": 0.5}, ValueError, "factor must be a number of at least 1, got 0.5"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be an int of at least 1 or None"),
        ({"max_attempts": 2.5}, TypeError, "max_attempts must be an int of at least 1 or None"),
        (
            {"reset_after": -1},
            ValueError,
            "reset_after must be a number of at least 0 (inf: never), got -1",
        ),
    ],
)
def test_backoff_options_that_make_no_sense_are_refused_by_name(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        Backoff(**options)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("wss://voice.example:99999", "its port is out of range (0-65535)"),
        ("voice.example:port", "its port is not a number"),
        # Found by a new-user trial: both were taken.
        ("voice.example.com:0", "its port is 0"),
        ("user:TOKSECRET@voice.example:1", "a voice endpoint takes no user info"),
    ],
)
def test_a_voice_endpoint_with_a_bad_port_is_refused(endpoint: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        VoiceClient(endpoint, CREDENTIALS)
    assert "TOKSECRET" not in str(caught.value)


def test_ping_timeout_none_is_taken_once_the_keepalive_is_off() -> None:
    # Found by a new-user trial: refused, with a hint to pass what was passed.
    Websocket(ping_interval=None, ping_timeout=None)  # type: ignore[arg-type]


async def test_a_url_with_a_fragment_is_refused_in_our_words() -> None:
    with pytest.raises(InvalidURLError, match=r"a websocket URL has no #fragment"):
        await Websocket().connect("ws://127.0.0.1:9/feed#part")


def test_options_given_in_other_reasonable_forms_are_taken() -> None:
    # Found by review: each worked before the checks, and still must.
    ws = Websocket(headers=[("X-Token-Id", "7")], max_size=1e6)  # type: ignore[arg-type]
    assert ws._options.headers == {"X-Token-Id": "7"}
    assert ws._options.max_size == 1_000_000
    assert isinstance(ws._options.max_size, int)
    client = VoiceClient("127.0.0.1:9", CREDENTIALS, move_codes=[4014])
    assert client._machine.rules.move_codes == frozenset({4014})
    assert GENERIC.derive(retry_http_statuses=[429]).retry_http_statuses == frozenset({429})


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        # Found by a new-user trial: each was taken, then stopped a session with
        # outcome "error" (or, NaN and infinity, silently turned heartbeats off).
        (lambda: HandshakeDone(0, resumed=False), ValueError, "heartbeat_interval must be"),
        (lambda: HandshakeDone(-1, resumed=False), ValueError, "heartbeat_interval must be"),
        (lambda: HandshakeDone(NAN, resumed=False), ValueError, "heartbeat_interval must be"),
        (
            lambda: HandshakeDone(float("inf"), resumed=False),
            ValueError,
            "heartbeat_interval must be",
        ),
        (lambda: Send("text"), TypeError, "Send takes a dict (JSON) or bytes, got str"),  # type: ignore[arg-type]
        (
            lambda: GENERIC.derive(no_close_frame="resume"),
            TypeError,
            "no_close_frame must be a wavegate.Action, got 'resume'",
        ),
        (
            lambda: GENERIC.derive(http_5xx=None),
            TypeError,
            "http_5xx must be a wavegate.Action, got None",
        ),
        (
            lambda: GENERIC.derive(retry_http_statuses={"429"}),
            TypeError,
            "retry_http_statuses must be a set of HTTP statuses (ints from 100 to 599), "
            "got {'429'}",
        ),
        (
            lambda: GENERIC.derive(retry_http_statuses=429),
            TypeError,
            "retry_http_statuses must be a set of HTTP statuses (ints from 100 to 599), got 429",
        ),
        (
            lambda: GENERIC.derive(retry_http_statuses=[429, 99]),
            ValueError,
            "retry_http_statuses must be a set of HTTP statuses (ints from 100 to 599), "
            "got [429, 99]",
        ),
        (lambda: Session("http://feed.example/", FEED), InvalidURLError, "ws:// or wss://"),
        (lambda: Session("not a url", FEED), InvalidURLError, "URL scheme must be"),
        (
            lambda: GENERIC.derive(connect_failures=dict.fromkeys(CONNECT_FAILURES, "reconnect")),
            TypeError,
            "connect_failures values must be wavegate.Action, got 'reconnect'",
        ),
        (
            lambda: Session("ws://feed.example/", _Feed),  # type: ignore[arg-type]
            TypeError,
            "protocol must be an instance, got the class _Feed",
        ),
        (
            lambda: Session("ws://feed.example/", FEED).move("http://elsewhere.example/"),
            InvalidURLError,
            "URL scheme must be ws:// or wss://",
        ),
        (
            lambda: Session("ws://feed.example/", None),  # type: ignore[arg-type]
            TypeError,
            "protocol must be a GatewayProtocol (start, receive, heartbeat, can_resume,"
            " new_session), got NoneType",
        ),
    ],
)
def test_protocol_outputs_policies_and_sessions_refuse_bad_values_at_once(
    make: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        make()
    assert message in str(caught.value), str(caught.value)


async def test_wait_closed_before_start_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"wait_closed\(\) before start\(\)"):
        await Session("ws://feed.example/", FEED).wait_closed()


def test_a_sessions_url_is_kept_without_the_whitespace_around_it() -> None:
    session = Session("  ws://feed.example/p\n", FEED)
    assert session.url == "ws://feed.example/p"
    session.move("ws://feed.example/q\r\n")
    assert session.url == "ws://feed.example/q"


def test_wrong_types_name_the_call_that_took_them() -> None:
    # Found by a new-user trial: encode_json([1]) said "send_json() takes a dict", and
    # the voice client's media calls failed inside davey or bytes.endswith.
    with pytest.raises(TypeError) as caught:
        Websocket().encode_json([1])  # type: ignore[arg-type]
    assert str(caught.value) == "a JSON message must be a dict (a JSON object), got list"
    voice = VoiceClient("127.0.0.1:9", CREDENTIALS)
    with pytest.raises(TypeError) as caught:
        voice.encrypt_opus("x")  # type: ignore[arg-type]
    assert str(caught.value) == "encrypt_opus() takes the Opus frame as bytes, got str"
    with pytest.raises(TypeError) as caught:
        voice.decrypt(2001, "x")  # type: ignore[arg-type]
    assert str(caught.value) == "decrypt() takes the Opus frame as bytes, got str"


def test_a_fraction_is_a_number_and_a_decimal_is_refused_with_the_fix() -> None:
    # Left out at stop 23: a Fraction (a numbers.Real, as numpy's numbers are) was
    # refused as "not a positive number"; a Decimal does not mix with the loop's
    # float clock, so it is refused, saying how to pass it.
    session = Session("ws://feed.example/", FEED, close_timeout=Fraction(3, 2))  # type: ignore[arg-type]
    assert session._close_timeout == 1.5
    assert type(session._close_timeout) is float
    with pytest.raises(TypeError) as caught:
        Websocket(open_timeout=Decimal("2.5"))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "open_timeout must be a positive number or None, got Decimal('2.5')"
        " (a Decimal does not mix with the event loop's float clock: pass float(...))"
    )


def test_the_close_timeout_bounds_the_close_handshake_of_the_default_websocket() -> None:
    # Found by a new-user trial: Session(close_timeout=1).close() took 5 s against a
    # peer that stopped reading (the default Websocket's own close_timeout).
    assert Session("ws://feed.example/", FEED, close_timeout=1).ws._options.close_timeout == 1
    voice = VoiceClient("127.0.0.1:9", CREDENTIALS, close_timeout=0.5)
    assert voice.ws._options.close_timeout == 0.5
    assert voice.ws._options.read_buffer_size == 2048
    own = Websocket(close_timeout=3)
    assert Session("ws://feed.example/", FEED, websocket=own, close_timeout=1).ws is own


def test_never_is_infinity_where_waiting_for_ever_makes_sense() -> None:
    # Found by review: move_grace and reset_after took inf before the checks.
    VoiceClient("127.0.0.1:9", CREDENTIALS, move_grace=float("inf"))
    Backoff(reset_after=float("inf"))


def test_a_huge_backoff_factor_caps_instead_of_overflowing() -> None:
    # Found by review: attempts grow without bound while a server recycles
    # connections, and factor**attempt overflowed (an error outcome).
    backoff = Backoff(factor=1e10, cap=30.0)
    assert [backoff.ceiling(n) for n in (0, 1, 100, 10_000)] == [0.5, 30.0, 30.0, 30.0]
    assert Backoff().ceiling(10_000) == 30.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),  # 100 s after the epoch; now is 40
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("٣", None),  # a digit to str.isdigit(), not to HTTP
        (None, None),
        # Found by review: 400 digits raised OverflowError out of connect(), and a date
        # in the year 9999 parked the session for 8,000 years. An hour at most.
        ("1" + "0" * 400, 3600.0),
        ("1" + "0" * 5000, 3600.0),
        ("7200", 3600.0),
        ("0000000000000", 0.0),  # found by review: 13 digits of nothing were an hour
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
    ],
)
def test_retry_after_is_read_as_http_says(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=40.0) == seconds


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
async def test_a_retry_after_is_waited_out_before_the_next_attempt(transport: str) -> None:
    # Found by a new-user trial: a 429 with Retry-After: 30 was tried again 5 times in
    # 2.3 s. The session waits at least what the server asked (the backoff's delay
    # if longer); the signal says it too.
    def limited(conn: ServerConnection, request: object) -> Any:
        response = conn.respond(429, "slow down\n")
        response.headers["Retry-After"] = "30"
        return response

    async with websockets_server(lambda conn: asyncio.sleep(0), process_request=limited) as url:
        session = Session(url, FEED, backoff=FAST, websocket=Websocket(transport=transport))
        events = session.events()
        await session.start()

        async def until_scheduled() -> list[SessionEvent]:
            seen = []
            async for event in events:
                seen.append(event)
                if event.kind is EventKind.RECONNECT_SCHEDULED:
                    return seen
            return seen

        try:
            seen = await asyncio.wait_for(until_scheduled(), 30)
            assert seen[-1].delay == 30.0
            lost = [e.signal for e in seen if e.kind is EventKind.CONNECTION_LOST]
            assert lost
            assert lost[-1] is not None
            assert lost[-1].retry_after == 30.0
            assert "HTTP 429 (Retry-After: 30 s)" in str(lost[-1])
        finally:
            await session.close()


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (NAN, ValueError, "timeout must be a number or None, got nan"),
        (True, TypeError, "timeout must be a number or None, got True"),
        ("5", TypeError, "timeout must be a number or None, got '5'"),
    ],
)
async def test_a_calls_timeout_that_makes_no_sense_is_refused_by_name(
    timeout: object, error: type[Exception], message: str
) -> None:
    # Found by a new-user trial: NaN waited for ever; "x" failed in a comparison.
    session = Session("ws://127.0.0.1:9/", FEED, backoff=FAST)
    voice = VoiceClient("127.0.0.1:9", CREDENTIALS)
    calls: list[Callable[[], Awaitable[None]]] = [
        lambda: session.wait_ready(timeout),  # type: ignore[arg-type]
        lambda: session.send_json({"op": 1}, timeout=timeout),  # type: ignore[arg-type]
        lambda: session.send_bytes(b"x", timeout=timeout),  # type: ignore[arg-type]
        lambda: voice.wait_dave_ready(timeout),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(error) as caught:
            await asyncio.wait_for(call(), 10)
        assert str(caught.value) == message
    assert session.pending_sends == 0


async def test_a_zero_negative_or_infinite_timeout_is_taken() -> None:
    # Found by review: a deadline already past (timeout=deadline - now) timed out
    # before the checks, as asyncio's own timeouts do; it must not raise ValueError.
    session = Session("ws://127.0.0.1:9/", FEED, backoff=FAST)
    with pytest.raises(WaitTimeoutError):
        await session.wait_ready(0)
    with pytest.raises(WaitTimeoutError):
        await session.wait_ready(-0.001)
    with pytest.raises(SendTimeoutError):
        await session.send_json({"op": 1}, timeout=-1)
    waiting = asyncio.ensure_future(session.wait_ready(float("inf")))
    await asyncio.sleep(0)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
