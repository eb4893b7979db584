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
from .protocol import (
    Deliver,
    Fail,
    GatewayProtocol,
    HandshakeDone,
    HeartbeatAck,
    HeartbeatRequest,
    Notify,
    Output,
    Perform,
    Send,
)
from .session import (
    EventKind,
    Outcome,
    Session,
    SessionEvent,
    SessionState,
    SessionStats,
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
    WaitTimeoutError,
    WavegateError,
)
from .transport import TransportInfo, transports
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
    "Deliver",
    "DisconnectSignal",
    "EncodeError",
    "Event",
    "EventKind",
    "Fail",
    "GatewayProtocol",
    "HandshakeDone",
    "HeartbeatAck",
    "HeartbeatRequest",
    "InvalidURLError",
    "JSONCodec",
    "Notify",
    "Outcome",
    "Output",
    "PayloadError",
    "Perform",
    "ReconnectSignal",
    "ResumeSignal",
    "RetrySchedule",
    "Send",
    "SendQueueFullError",
    "SendTimeoutError",
    "Session",
    "SessionClosedError",
    "SessionEvent",
    "SessionState",
    "SessionStats",
    "Signal",
    "TransportInfo",
    "WaitTimeoutError",
    "WavegateError",
    "Websocket",
    "WebsocketPacket",
    "WebsocketPacketBytes",
    "WebsocketPacketJSON",
    "WebsocketPacketText",
    "WebsocketState",
    "WebsocketStats",
    "transports",
]
