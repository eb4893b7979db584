"""Discord gateways: the voice gateway v8 (:mod:`wavegate.discord.voice`).

The names a voice bot needs are here too: ``from wavegate.discord import VoiceClient``.
They are loaded on first use, so the sans-I/O modules (``wavegate.discord.payloads``...)
import without the ``voice`` extra; the voice client needs it (``pip install
'wavegate[voice]'``, for DAVE) and without it fails with an ``ImportError`` that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".voice", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
