"""Every close code of every preset, sent by a real server: the right signal, with its code."""

from __future__ import annotations

import pytest

from wavegate import (
    DISCORD_GATEWAY,
    DISCORD_VOICE,
    GENERIC,
    Action,
    ClosePolicy,
    Event,
    Signal,
    WebsocketState,
)
from wavegate.testing import WebsocketTestServer

from .conftest import WebsocketFactory, picows_listener

CASES = [
    (policy, code, action)
    for policy in (DISCORD_VOICE, DISCORD_GATEWAY, GENERIC)
    for code, action in [
        *policy.codes.items(),
        (4999, policy.unknown_code),
        (3000, policy.unknown_code),
    ]
]


@pytest.mark.parametrize(
    ("policy", "code", "action"), CASES, ids=[f"{p.name}-{c}-{a.value}" for p, c, a in CASES]
)
async def test_peer_close_code_raises_the_policy_signal(
    server: WebsocketTestServer,
    make_ws: WebsocketFactory,
    policy: ClosePolicy,
    code: int,
    action: Action,
) -> None:
    ws = make_ws(policy=policy)
    await ws.connect(server.url)
    conn = await server.accepted()
    # 1005 and 1006 may never appear in a close frame (RFC 6455 7.4.1): they are what
    # a close frame without a status, and a connection lost without one, are reported as.
    if code == 1006:
        conn.drop()
        expected = (1006, "connection lost without a close frame", Event.NO_CLOSE_FRAME)
    elif code == 1005:
        await conn.close(None)
        expected = (1005, "", Event.PEER_CLOSE)
    else:
        await conn.close(code, f"reason {code}")
        expected = (code, f"reason {code}", Event.PEER_CLOSE)
    with pytest.raises(action.signal_type) as caught:
        await ws.receive()
    signal: Signal = caught.value
    assert type(signal) is action.signal_type
    assert (signal.code, signal.reason, signal.event) == expected
    assert signal.initiated_locally is False
    assert ws.state is WebsocketState.DISCONNECTED
    assert (ws.close_code, ws.close_reason) == expected[:2]
    await conn.wait_closed()
    if code not in (1005, 1006):
        # The client echoed the code: a 1000 would end a Discord session.
        assert conn.close_received is not None
        assert conn.close_received[0] == code


async def test_close_frame_without_status_is_1005(
    server: WebsocketTestServer, make_ws: WebsocketFactory
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.close(None)
    with pytest.raises(Action.RESUME.signal_type) as caught:
        await ws.receive()
    assert caught.value.code == 1005


@pytest.mark.parametrize("code", [0, 1004, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_a_close_code_invalid_on_the_wire(
    server: WebsocketTestServer, make_ws: WebsocketFactory, transport: str, code: int
) -> None:
    ws = make_ws()
    await ws.connect(server.url)
    conn = await server.accepted()
    await conn.close(code)
    with pytest.raises(Signal) as caught:
        await ws.receive()
    if (
        transport == "aiohttp"
        or code not in (0, 1006, 5000, 65535)
        or picows_listener() == "compiled"
    ):
        # RFC 6455 7.4.1: such a code fails the connection with 1002.
        assert (caught.value.code, caught.value.event) == (1002, Event.PROTOCOL_ERROR)
    else:
        # picows' own connection echoes these (see conformance/allowlist.txt): the
        # signal still carries what the peer sent (0 reads as "no code", 1005).
        assert (caught.value.code, caught.value.event) == (code or 1005, Event.PEER_CLOSE)
    assert ws.disconnected
