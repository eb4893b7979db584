"""Discord gateways: the voice gateway v8 (:mod:`wavegate.discord.voice`).

The names a voice bot needs are here too: ``from wavegate.discord import VoiceClient``.
The voice client needs the ``voice`` extra (``pip install 'wavegate[voice]'``, for
DAVE); without it this import fails with an ``ImportError`` that says so.
"""

from .voice import (
    ClientDisconnect,
    ClientsConnect,
    DaveEvent,
    DiscoveryFailed,
    Speaking,
    VoiceClient,
    VoiceCredentials,
    VoiceMedia,
    VoiceMessage,
    VoiceProtocol,
)

__all__ = [
    "ClientDisconnect",
    "ClientsConnect",
    "DaveEvent",
    "DiscoveryFailed",
    "Speaking",
    "VoiceClient",
    "VoiceCredentials",
    "VoiceMedia",
    "VoiceMessage",
    "VoiceProtocol",
]
