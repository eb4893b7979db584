"""The close-code policies as data: every row of every preset (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavegate import (
    DISCORD_GATEWAY,
    DISCORD_VOICE,
    GENERIC,
    PRESETS,
    Action,
    ClosePolicy,
    DisconnectSignal,
    Event,
    ReconnectSignal,
    ResumeSignal,
)

D, RC, RS = Action.DISCONNECT, Action.RECONNECT, Action.RESUME

VOICE_TABLE = {
    4015: RS, 1001: RS, 1005: RS, 1006: RS,
    4006: RC, 4009: RC, 4001: RC, 4002: RC, 4003: RC, 4005: RC, 4011: RC, 4020: RC,
    1000: D, 4004: D, 4012: D, 4014: D, 4016: D, 4017: D, 4021: D, 4022: D,
}  # fmt: skip
GATEWAY_TABLE = {
    4000: RS, 4001: RS, 4002: RS, 4008: RS, 1000: RS, 1001: RS, 1005: RS, 1006: RS,
    4003: RC, 4005: RC, 4007: RC, 4009: RC,
    4004: D, 4010: D, 4011: D, 4012: D, 4013: D, 4014: D,
}  # fmt: skip
GENERIC_TABLE = {
    1000: D, 1001: RC, 1006: RC, 1011: RC, 1012: RC, 1013: RC, 1014: RC,
    1002: D, 1003: D, 1007: D, 1008: D, 1009: D, 1010: D,
}  # fmt: skip

SPEC_TABLES = [
    (DISCORD_VOICE, VOICE_TABLE, RC),
    (DISCORD_GATEWAY, GATEWAY_TABLE, RS),
    (GENERIC, GENERIC_TABLE, RC),
]


@pytest.mark.parametrize(
    ("policy", "table", "unknown"), SPEC_TABLES, ids=lambda p: getattr(p, "name", "")
)
def test_preset_tables_match_the_spec_exactly(
    policy: ClosePolicy, table: dict[int, Action], unknown: Action
) -> None:
    assert dict(policy.codes) == table
    assert policy.action_for_code(4999) is unknown
    assert policy.action_for_code(3123) is unknown


@pytest.mark.parametrize(
    ("event", "voice", "gateway", "generic"),
    [
        (Event.NO_CLOSE_FRAME, RS, RS, RC),
        (Event.TRANSPORT_ERROR, RS, RS, RC),
        (Event.KEEPALIVE_TIMEOUT, RS, RS, RC),
        (Event.LOCAL_CLOSE, D, D, D),
        (Event.CONNECT_TIMEOUT, RC, RC, RC),
        (Event.CONNECT_REFUSED, RC, RC, RC),
        (Event.CONNECT_DNS, RC, RC, RC),
        (Event.CONNECT_TLS, RC, RC, RC),
        (Event.CONNECT_TLS_CERTIFICATE, D, D, D),
        (Event.CONNECT_ERROR, RC, RC, RC),
    ],
)
def test_events_without_a_close_code(
    event: Event, voice: Action, gateway: Action, generic: Action
) -> None:
    assert DISCORD_VOICE.action_for(event) is voice
    assert DISCORD_GATEWAY.action_for(event) is gateway
    assert GENERIC.action_for(event) is generic


@pytest.mark.parametrize(
    ("status", "action"),
    [(500, RC), (502, RC), (503, RC), (599, RC), (429, RC), (408, RC),
     (400, D), (401, D), (403, D), (404, D), (426, D), (200, D), (302, D)],
)  # fmt: skip
def test_handshake_status_rules(status: int, action: Action) -> None:
    for policy in PRESETS.values():
        assert policy.action_for(Event.HANDSHAKE_STATUS, status) is action


def test_protocol_errors_use_the_code_we_closed_with() -> None:
    assert GENERIC.action_for(Event.PROTOCOL_ERROR, 1009) is D
    assert DISCORD_VOICE.action_for(Event.PROTOCOL_ERROR, 1009) is RC


def test_a_close_frame_without_status_counts_as_1005() -> None:
    assert DISCORD_VOICE.action_for(Event.PEER_CLOSE, None) is RS


def test_signal_for_builds_the_right_kind_with_context() -> None:
    signal = DISCORD_VOICE.signal_for(Event.PEER_CLOSE, code=4015, reason="crash")
    assert isinstance(signal, ResumeSignal)
    assert (signal.code, signal.reason, signal.event, signal.initiated_locally) == (
        4015,
        "crash",
        Event.PEER_CLOSE,
        False,
    )
    assert isinstance(DISCORD_VOICE.signal_for(Event.PEER_CLOSE, code=4006), ReconnectSignal)
    assert isinstance(DISCORD_VOICE.signal_for(Event.PEER_CLOSE, code=4014), DisconnectSignal)


def test_derive_overrides_codes_and_rules_without_touching_the_original() -> None:
    strict = DISCORD_VOICE.derive("strict", codes={4006: D, 4999: RS}, no_close_frame=RC)
    assert strict.action_for_code(4006) is D
    assert strict.action_for_code(4999) is RS
    assert strict.action_for(Event.NO_CLOSE_FRAME) is RC
    assert strict.action_for_code(4015) is RS
    assert DISCORD_VOICE.action_for_code(4006) is RC
    assert strict.name == "strict"


def test_policies_are_immutable() -> None:
    with pytest.raises(TypeError):
        DISCORD_VOICE.codes[4015] = D  # type: ignore[index]
    with pytest.raises(AttributeError):
        DISCORD_VOICE.unknown_code = D  # type: ignore[misc]


@pytest.mark.parametrize("code", [999, 5000, -1, True, "4000"])
def test_derive_rejects_invalid_close_codes(code: object) -> None:
    with pytest.raises(ValueError, match="close codes"):
        DISCORD_VOICE.derive(codes={code: D})  # type: ignore[dict-item]


def test_derive_rejects_non_action_values() -> None:
    with pytest.raises(TypeError, match="Action"):
        DISCORD_VOICE.derive(codes={4000: "resume"})  # type: ignore[dict-item]


@given(code=st.integers())
def test_every_integer_close_code_yields_an_action(code: int) -> None:
    for policy in PRESETS.values():
        assert isinstance(policy.action_for_code(code), Action)
        assert isinstance(policy.action_for(Event.PEER_CLOSE, code), Action)
        assert isinstance(policy.action_for(Event.HANDSHAKE_STATUS, code), Action)


@given(code=st.integers(1000, 4999), action=st.sampled_from(list(Action)))
def test_a_derived_row_always_wins(code: int, action: Action) -> None:
    assert DISCORD_VOICE.derive(codes={code: action}).action_for_code(code) is action
