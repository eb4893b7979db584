"""The voice v8 protocol's pure parts: parsing, URLs, payloads (no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavegate import WebsocketPacketBytes, WebsocketPacketJSON
from wavegate.discord.voice import (
    ClientDisconnect,
    DavePrepareEpoch,
    Hello,
    Op,
    Ready,
    SessionDescription,
    VoiceBinary,
    VoiceCredentials,
    VoiceMessage,
    VoiceProtocol,
    encode_binary,
    parse_binary,
    parse_json,
    voice_url,
)
from wavegate.session import HeartbeatAck, HeartbeatRequest

CREDENTIALS = VoiceCredentials("g", "u", "s", "t")


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
    protocol = VoiceProtocol(CREDENTIALS)
    item = protocol.interpret(WebsocketPacketBytes(frame))
    assert item is None or isinstance(item, VoiceBinary)


@given(
    st.dictionaries(
        st.sampled_from(["op", "d", "seq"]), st.integers() | st.none() | st.text() | st.booleans()
    )
)
def test_arbitrary_json_never_crashes_the_protocol(payload: dict[str, object]) -> None:
    VoiceProtocol(CREDENTIALS).interpret(WebsocketPacketJSON(payload))


def test_client_binary_frames_have_no_seq() -> None:
    assert encode_binary(26, b"kp") == b"\x1akp"


def test_interpret_tracks_seq_and_classifies_heartbeats() -> None:
    protocol = VoiceProtocol(CREDENTIALS)
    assert protocol.interpret(WebsocketPacketJSON({"op": 6, "d": {"t": 42}})) == HeartbeatAck(42)
    assert protocol.interpret(WebsocketPacketJSON({"op": 3, "d": None})) == HeartbeatRequest()
    protocol.interpret(WebsocketPacketJSON({"op": 5, "seq": 7, "d": {"speaking": 1, "ssrc": 2}}))
    assert protocol.seq_ack == 7
    protocol.interpret(WebsocketPacketJSON({"op": 6, "d": {"t": 1}}))  # no seq: unchanged
    assert protocol.seq_ack == 7
    protocol.interpret(WebsocketPacketBytes(struct.pack(">HB", 9, 25) + b"x"))
    assert protocol.seq_ack == 9
    assert protocol.heartbeat(5) == {"op": Op.HEARTBEAT, "d": {"t": 5, "seq_ack": 9}}
    protocol.new_session()
    assert protocol.seq_ack == -1
    assert not protocol.can_resume()
