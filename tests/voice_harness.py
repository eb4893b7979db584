"""Shared pieces of the voice tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from wavegate.discord.voice import VoiceCredentials
from wavegate.testing.traffic import Traffic
from wavegate.testing.voice import FakeVoiceGateway

CREDENTIALS = VoiceCredentials("1001", "2001", "session-SECRET-ID", "token-SECRET-VALUE", "1001")


def refreshing(
    gateway: FakeVoiceGateway, credentials: VoiceCredentials = CREDENTIALS
) -> Callable[[], Awaitable[VoiceCredentials]]:
    """``refresh_credentials`` as a bot does it: a fresh token from the gateway (its
    VOICE_SERVER_UPDATE), for each new session after the first."""

    async def refresh() -> VoiceCredentials:
        return replace(credentials, token=gateway.fresh_token(credentials.user_id))

    return refresh


async def assert_nothing_lost(traffic: Traffic) -> None:
    """Stop the traffic; every number arrived exactly once, in order, both ways."""
    tally = await traffic.stop()
    assert tally.client_sent > 0
    assert tally.server_sent > 0
    _same("client -> server", traffic.server_received(), traffic.client_sent)
    _same("server -> client", traffic.client_received, traffic.server_sent)
    assert tally.perfect


def _same(direction: str, got: list[int], sent: int) -> None:
    """``got`` is 0..sent-1 in order; otherwise say what was lost, doubled or moved."""
    if got == list(range(sent)):
        return
    missing = sorted(set(range(sent)) - set(got))
    doubled = sorted({n for n in got if got.count(n) > 1})
    extra = sorted(set(got) - set(range(sent)))
    raise AssertionError(
        f"{direction}: sent {sent}, received {len(got)}; missing {missing[:20]}, "
        f"doubled {doubled[:20]}, never sent {extra[:20]}, in order: {got == sorted(got)}"
    )
