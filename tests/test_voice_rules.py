"""What the fake voice gateway refuses, as Discord does: the pure checks, row by row."""

from __future__ import annotations

from typing import Any

import pytest

from wavegate.testing.voice_rules import check_heartbeat, check_path, check_select_protocol

MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")
UDP = {"address": "127.0.0.1", "port": 5000}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/?v=8", None),
        ("/?encoding=json&v=8", None),
        ("/", 400),
        ("/?v=4", 400),
        ("/?v=8&v=9", 400),
        ("/?version=8", 400),
    ],
)
def test_the_url_must_ask_for_version_8(path: str, status: int | None) -> None:
    refusal = check_path(path)
    assert (refusal and refusal[0]) == status
    assert refusal is None or "v=8" in refusal[1]


@pytest.mark.parametrize(
    ("payload", "refusal"),
    [
        ({"t": 1732700000000, "seq_ack": 10}, None),
        ({"t": 0}, None),
        ({"t": (1 << 53) - 1, "seq_ack": -1}, None),
        (None, (4020, "heartbeat without a nonce (t)")),
        (12345, (4020, "heartbeat without a nonce (t)")),  # the pre-v8 bare nonce
        ({"seq_ack": 1}, (4020, "heartbeat without a nonce (t)")),
        ({"t": 1.5}, (4020, "heartbeat nonce is not an integer")),
        ({"t": "1"}, (4020, "heartbeat nonce is not an integer")),
        ({"t": True}, (4020, "heartbeat nonce is not an integer")),
        ({"t": 1 << 53}, (4020, "heartbeat nonce out of range (0 to 2**53)")),
        ({"t": -1}, (4020, "heartbeat nonce out of range (0 to 2**53)")),
        ({"t": 1, "seq_ack": "3"}, (4020, "heartbeat seq_ack is not an integer")),
    ],
)
def test_heartbeats(payload: Any, refusal: tuple[int, str] | None) -> None:
    assert check_heartbeat(payload) == refusal


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"protocol": "udp", "data": {**UDP, "mode": MODES[0]}}, None),
        ({"protocol": "udp", "data": {**UDP, "mode": MODES[1]}}, None),
        ({"protocol": "webrtc", "data": {**UDP, "mode": MODES[0]}}, 4012),
        ({"data": {**UDP, "mode": MODES[0]}}, 4012),
        ("udp", 4012),
        ({"protocol": "udp"}, 4020),
        ({"protocol": "udp", "data": {"mode": MODES[0]}}, 4020),
        ({"protocol": "udp", "data": {**UDP, "port": "5000", "mode": MODES[0]}}, 4020),
        ({"protocol": "udp", "data": UDP}, 4016),
        ({"protocol": "udp", "data": {**UDP, "mode": "xsalsa20_poly1305_lite"}}, 4016),
        ({"protocol": "udp", "data": {**UDP, "mode": "rot13"}}, 4016),
    ],
)
def test_select_protocol(payload: Any, code: int | None) -> None:
    refusal = check_select_protocol(payload, MODES)
    assert (refusal[0] if refusal else None) == code


def test_a_legacy_mode_is_named_as_such() -> None:
    data = {**UDP, "mode": "xsalsa20_poly1305_lite"}
    assert check_select_protocol({"protocol": "udp", "data": data}, MODES) == (
        4016,
        "legacy encryption mode",
    )
