"""The voice v8 protocol, sans-I/O: parsing, payloads and the handshake as a table
(no sockets, no event loop: packets in, outputs out)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavegate import (
    Deliver,
    DisconnectSignal,
    Fail,
    HandshakeDone,
    HeartbeatAck,
    HeartbeatRequest,
    InvalidURLError,
    Output,
    Perform,
    Send,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
)
from wavegate.discord.voice import (
    ClientDisconnect,
    DavePrepareEpoch,
    Hello,
    Op,
    Ready,
    SessionDescription,
    Speaking,
    Stage,
    VoiceBinary,
    VoiceCredentials,
    VoiceMessage,
    VoiceProtocol,
    encode_binary,
    parse_binary,
    parse_json,
    voice_url,
)

CREDENTIALS = VoiceCredentials("1", "2", "s", "t", "1")
PREFERRED = ("aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize")


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("c-fra01.discord.media:2087", "wss://c-fra01.discord.media:2087/?v=8"),
        ("c-fra01.discord.media", "wss://c-fra01.discord.media/?v=8"),
        ("wss://host:443/", "wss://host:443/?v=8"),
        ("ws://127.0.0.1:9000/?v=8", "ws://127.0.0.1:9000/?v=8"),
    ],
)
def test_voice_url_keeps_the_port(endpoint: str, url: str) -> None:
    assert voice_url(endpoint) == url


@pytest.mark.parametrize("interval", [0, -1, "nan", "inf", "Infinity"])
def test_a_hello_whose_interval_is_not_a_positive_number_is_malformed(interval: object) -> None:
    # A handshake done with it stopped the session (0) or turned heartbeats off (NaN).
    with pytest.raises(ValueError, match="malformed payload for op 8"):
        parse_json({"op": 8, "d": {"v": 8, "heartbeat_interval": interval}})


def test_typed_payloads() -> None:
    assert parse_json({"op": 8, "d": {"v": 8, "heartbeat_interval": 13750.5}}) == Hello(13750.5, 8)
    assert parse_json(
        {"op": 2, "d": {"ssrc": 1, "ip": "1.2.3.4", "port": 5, "modes": ["a"]}}
    ) == Ready(1, "1.2.3.4", 5, ("a",))
    description = parse_json(
        {"op": 4, "d": {"mode": "m", "secret_key": [1, 2], "dave_protocol_version": 1}}
    )
    assert description == SessionDescription("m", b"\x01\x02", 1)
    assert "\\x01" not in repr(description)  # the key is hidden
    assert parse_json({"op": 13, "seq": 4, "d": {"user_id": "9"}}) == ClientDisconnect("9", 4)
    assert parse_json({"op": 24, "d": {"protocol_version": 1, "epoch": 1}}) == DavePrepareEpoch(
        1, 1
    )
    assert parse_json({"op": 1, "d": {}}) == VoiceMessage(1, {})
    assert parse_json({"op": 18, "d": {}}) is None


def test_a_known_op_with_a_broken_payload_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="op 2"):
        parse_json({"op": 2, "d": {"ssrc": 1}})


@given(seq=st.integers(0, 65535), op=st.integers(0, 255), body=st.binary(max_size=300))
def test_binary_frames_parse_seq_op_and_body(seq: int, op: int, body: bytes) -> None:
    parsed = parse_binary(struct.pack(">HB", seq, op) + body)
    assert (parsed.seq, parsed.op, parsed.body) == (seq, op, body)
    if op in (29, 30) and len(body) >= 2:
        assert parsed.transition_id == struct.unpack(">H", body[:2])[0]
    if op == 27 and body:
        assert parsed.operation_type == body[0]


@given(st.binary(max_size=2))
def test_frames_shorter_than_the_header_are_rejected(frame: bytes) -> None:
    with pytest.raises(ValueError, match="header"):
        parse_binary(frame)


@given(st.binary())
def test_arbitrary_binary_never_crashes_the_protocol(frame: bytes) -> None:
    outputs = VoiceProtocol(CREDENTIALS).receive(WebsocketPacketBytes(frame))
    assert outputs == [] or (len(outputs) == 1 and isinstance(outputs[0].message, VoiceBinary))  # type: ignore[union-attr]


@given(
    st.dictionaries(
        st.sampled_from(["op", "d", "seq"]),
        st.integers() | st.none() | st.text() | st.booleans() | st.lists(st.integers()),
    ),
    st.booleans(),
)
def test_arbitrary_json_never_crashes_the_protocol(
    payload: dict[str, object], resume: bool
) -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    protocol.start(resume=resume)
    protocol.receive(WebsocketPacketJSON(payload))


def test_client_binary_frames_have_no_seq() -> None:
    assert encode_binary(26, b"kp") == b"\x1akp"


def test_receive_tracks_seq_and_classifies_heartbeats() -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    assert protocol.receive(json({"op": 6, "d": {"t": 42}})) == [HeartbeatAck(42)]
    assert protocol.receive(json({"op": 3, "d": None})) == [HeartbeatRequest()]
    assert protocol.receive(json({"op": 5, "seq": 7, "d": {"speaking": 1, "ssrc": 2}})) == [
        Deliver(Speaking(1, 2, None, 7))
    ]
    assert protocol.seq_ack == 7
    protocol.receive(json({"op": 6, "d": {"t": 1}}))  # no seq: unchanged
    assert protocol.seq_ack == 7
    protocol.receive(WebsocketPacketBytes(struct.pack(">HB", 9, 25) + b"x"))
    assert protocol.seq_ack == 9
    protocol.receive(json({"op": 5, "seq": 0, "d": {"speaking": 1, "ssrc": 2}}))
    assert protocol.seq_ack == 0  # 0 is a seq
    assert protocol.heartbeat(5) == {"op": Op.HEARTBEAT, "d": {"t": 5, "seq_ack": 0}}
    protocol.new_session()
    assert protocol.seq_ack == -1
    assert not protocol.can_resume()


# -- the handshake, as a table -------------------------------------------------------------


def json(payload: dict[str, Any]) -> WebsocketPacketJSON:
    return WebsocketPacketJSON(payload)


HELLO = {"op": 8, "d": {"v": 8, "heartbeat_interval": 13750}}
READY = {"op": 2, "d": {"ssrc": 7, "ip": "10.0.0.1", "port": 5000, "modes": list(PREFERRED)}}
DESCRIPTION = {"op": 4, "d": {"mode": PREFERRED[0], "secret_key": [0] * 32}}
DAVE_DESCRIPTION = {
    "op": 4,
    "d": {"mode": PREFERRED[0], "secret_key": [0] * 32, "dave_protocol_version": 1},
}
KEY_PACKAGE = ("binary", Op.DAVE_MLS_KEY_PACKAGE)
RESUMED = {"op": 9, "d": None}
SPEAKING = {"op": 5, "seq": 3, "d": {"speaking": 1, "ssrc": 9, "user_id": "u2"}}


def perform(output: Perform) -> object:
    async def action() -> object:
        return await output.action()

    return asyncio.run(action())


def run_discovery(protocol: VoiceProtocol, outputs: list[Output]) -> list[Output]:
    """Carry out a Perform as the session would (the discovery runs on an event loop)."""
    done: list[Output] = []
    for output in outputs:
        if isinstance(output, Perform):
            done += run_discovery(protocol, list(output.then(perform(output))))
        else:
            done.append(output)
    return done


def ops(outputs: list[Output]) -> list[object]:
    """Outputs in short: the op of each Send (``("binary", op)`` for a binary one), the
    class name of everything else."""
    return [
        (o.payload["op"] if isinstance(o.payload, dict) else ("binary", o.payload[0]))
        if isinstance(o, Send)
        else type(o).__name__
        for o in outputs
    ]


HANDSHAKES = [
    # (resume, server messages in order, outputs after each, the stage at the end)
    (False, [HELLO, READY, DESCRIPTION], [[], [Op.SELECT_PROTOCOL], ["HandshakeDone"]], Stage.OPEN),
    (False, [READY, HELLO, DESCRIPTION], [[Op.SELECT_PROTOCOL], [], ["HandshakeDone"]], Stage.OPEN),
    (False, [READY, DESCRIPTION, HELLO], [[Op.SELECT_PROTOCOL], [], ["HandshakeDone"]], Stage.OPEN),
    (False, [HELLO, SPEAKING, READY], [[], ["Deliver"], [Op.SELECT_PROTOCOL]], Stage.SELECTING),
    # DAVE: the key package follows SESSION_DESCRIPTION at once, HELLO or not
    (
        False,
        [HELLO, READY, DAVE_DESCRIPTION],
        [[], [Op.SELECT_PROTOCOL], [KEY_PACKAGE, "HandshakeDone"]],
        Stage.OPEN,
    ),
    (
        False,
        [READY, DAVE_DESCRIPTION, HELLO],
        [[Op.SELECT_PROTOCOL], [KEY_PACKAGE], ["HandshakeDone"]],
        Stage.OPEN,
    ),
    (False, [HELLO, RESUMED], [[], []], Stage.IDENTIFYING),  # RESUMED for nothing: ignored
    (True, [HELLO, RESUMED], [[], ["HandshakeDone"]], Stage.OPEN),
    (True, [RESUMED, SPEAKING, HELLO], [[], ["Deliver"], ["HandshakeDone"]], Stage.OPEN),
    (True, [RESUMED, HELLO, SPEAKING], [[], ["HandshakeDone"], ["Deliver"]], Stage.OPEN),
    (True, [HELLO, DESCRIPTION], [[], ["Deliver"]], Stage.RESUMING),  # not ours: delivered
]


@pytest.mark.parametrize(("resume", "messages", "expected", "stage"), HANDSHAKES)
def test_the_handshake_in_every_order(
    resume: bool, messages: list[dict[str, Any]], expected: list[list[object]], stage: Stage
) -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    first = protocol.start(resume=resume)
    assert ops(list(first)) == [Op.RESUME if resume else Op.IDENTIFY]
    for message, outputs in zip(messages, expected, strict=True):
        assert ops(run_discovery(protocol, list(protocol.receive(json(message))))) == outputs
    assert protocol.stage is stage


def test_identify_then_resume_carry_the_credentials_and_seq_ack() -> None:
    protocol = VoiceProtocol(CREDENTIALS, max_dave_protocol_version=1)
    (identify,) = protocol.start(resume=False)
    assert identify == Send({"op": 0, "d": {
        "server_id": "1", "user_id": "2", "session_id": "s", "token": "t",
        "max_dave_protocol_version": 1,
    }})  # fmt: skip
    assert not protocol.can_resume()
    for message in (HELLO, READY, DESCRIPTION, SPEAKING):
        run_discovery(protocol, list(protocol.receive(json(message))))
    assert protocol.can_resume()
    assert protocol.start(resume=True) == [
        Send({"op": 7, "d": {"server_id": "1", "session_id": "s", "token": "t", "seq_ack": 3}})
    ]


def test_select_protocol_uses_the_discovered_address_and_the_preferred_mode() -> None:
    async def discover(ready: Ready) -> tuple[str, int]:
        return "203.0.113.9", 40000

    protocol = VoiceProtocol(CREDENTIALS, discover=discover)
    protocol.start(resume=False)
    (discovery,) = protocol.receive(json(READY))
    assert isinstance(discovery, Perform)
    assert discovery.what == "UDP IP discovery"
    (select,) = discovery.then(perform(discovery))
    assert select == Send({"op": 1, "d": {"protocol": "udp", "data": {
        "address": "203.0.113.9", "port": 40000, "mode": "aead_aes256_gcm_rtpsize",
    }}})  # fmt: skip


def test_no_supported_encryption_mode_fails_the_connection_for_good() -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    protocol.start(resume=False)
    ready = {"op": 2, "d": {"ssrc": 1, "ip": "h", "port": 1, "modes": ["xsalsa20_poly1305"]}}
    (fail,) = run_discovery(protocol, list(protocol.receive(json(ready))))
    assert isinstance(fail, Fail)
    assert isinstance(fail.signal, DisconnectSignal)
    assert "xsalsa20_poly1305" in fail.signal.reason


def test_the_heartbeat_interval_comes_from_hello_in_seconds() -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    protocol.start(resume=True)
    protocol.receive(json(RESUMED))
    assert protocol.receive(json(HELLO)) == [HandshakeDone(13.75, resumed=True)]


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("c-fra01.discord.media:2087", "wss://c-fra01.discord.media:2087/?v=8"),
        ("c-fra01.discord.media:2087/", "wss://c-fra01.discord.media:2087/?v=8"),
        ("ws://127.0.0.1:5/?v=4", "ws://127.0.0.1:5/?v=8"),
        ("wss://x.example:443", "wss://x.example:443/?v=8"),
    ],
)
def test_voice_urls(endpoint: str, url: str) -> None:
    assert voice_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9/x", "not a url", "", "wss://"])
def test_bad_voice_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidURLError):
        voice_url(endpoint)
