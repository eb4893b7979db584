"""wavegate: resilient websocket connections to real-time gateways."""

from .backoff import Backoff, RetrySchedule
from .codec import JSONCodec
from .packets import (
    WebsocketPacket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
)
from .policy import (
    DISCORD_GATEWAY,
    DISCORD_VOICE,
    GENERIC,
    PRESETS,
    Action,
    ClosePolicy,
)
from .session import (
    EventKind,
    Outcome,
    Session,
    SessionEvent,
    SessionProtocol,
    SessionState,
)
from .signals import (
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    PayloadError,
    ReconnectSignal,
    ResumeSignal,
    SendQueueFullError,
    SendTimeoutError,
    SessionClosedError,
    Signal,
    WavegateError,
)
from .websocket import Websocket, WebsocketState, WebsocketStats

__version__ = "0.1.0"

__all__ = [
    "DISCORD_GATEWAY",
    "DISCORD_VOICE",
    "GENERIC",
    "PRESETS",
    "Action",
    "Backoff",
    "ClosePolicy",
    "DisconnectSignal",
    "EncodeError",
    "Event",
    "EventKind",
    "InvalidURLError",
    "JSONCodec",
    "Outcome",
    "PayloadError",
    "ReconnectSignal",
    "ResumeSignal",
    "RetrySchedule",
    "SendQueueFullError",
    "SendTimeoutError",
    "Session",
    "SessionClosedError",
    "SessionEvent",
    "SessionProtocol",
    "SessionState",
    "Signal",
    "WavegateError",
    "Websocket",
    "WebsocketPacket",
    "WebsocketPacketBytes",
    "WebsocketPacketJSON",
    "WebsocketPacketText",
    "WebsocketState",
    "WebsocketStats",
]
