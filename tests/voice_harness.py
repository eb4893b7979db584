"""Shared pieces of the voice tests."""

from __future__ import annotations

from wavegate.discord.voice import VoiceCredentials
from wavegate.testing.traffic import Traffic

CREDENTIALS = VoiceCredentials("1001", "2001", "session-SECRET-ID", "token-SECRET-VALUE", "1001")


async def assert_nothing_lost(traffic: Traffic) -> None:
    """Stop the traffic; every number arrived exactly once, in order, both ways."""
    tally = await traffic.stop()
    assert tally.client_sent > 0
    assert tally.server_sent > 0
    assert traffic.server_received() == list(range(traffic.client_sent))
    assert traffic.client_received == list(range(traffic.server_sent))
    assert tally.perfect
