"""The sans-I/O gateway protocol interface: what a session needs from a protocol.

A protocol is a state machine that is handed what happens (a connection opened, a
packet arrived, the result of some I/O it asked for) and returns what to do about it,
as a list of outputs. It never awaits, never touches a socket, never reads a clock:
the :class:`~wavegate.Session` owns the connection, the tasks and the timers, and
carries the outputs out. So a protocol is tested by feeding it packets, with no
server, and the same session drives the Discord voice gateway or your own.

    class Feed:                                    # a JSON feed with resume
        def start(self, *, resume):
            op = {"op": "resume", "after": self.last} if resume else {"op": "hello"}
            return [Send(op)]
        def receive(self, packet):
            message = packet.payload
            if message["op"] == "welcome":
                return [HandshakeDone(heartbeat_interval=10.0, resumed=False)]
            if message["op"] == "pong":
                return [HeartbeatAck(message["nonce"])]
            self.last = message["id"]
            return [Deliver(message)]
        ...

The outputs, in the order they must be carried out:

- :class:`Send`: send a frame (a dict as JSON text, bytes as a binary frame);
- :class:`Deliver`: hand a message to the application;
- :class:`HandshakeDone`: the connection is ready; heartbeats start;
- :class:`HeartbeatAck`, :class:`HeartbeatRequest`: for the session's heartbeats;
- :class:`Perform`: do some I/O the protocol must not do itself (UDP IP discovery),
  then hand the result to ``then``, which returns more outputs;
- :class:`Notify`: tell whoever watches the session (an event of the protocol's own);
- :class:`Fail`: this connection cannot go on; end it with a signal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from . import _checks as checks
from .packets import WebsocketPacket
from .signals import Signal


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``payload``: a dict as a JSON text frame, bytes as a binary frame."""

    payload: dict[str, Any] | bytes

    def __post_init__(self) -> None:
        if not isinstance(self.payload, (dict, bytes)):
            kind = type(self.payload).__name__
            raise TypeError(f"Send takes a dict (JSON) or bytes, got {kind}")


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to the application (in order, across reconnects)."""

    message: Any


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The connection is ready for the application.

    Attributes:
        heartbeat_interval: seconds between heartbeats; ``None`` for none.
        resumed: the session was resumed (``False``: a new session).
    """

    heartbeat_interval: float | None
    resumed: bool

    def __post_init__(self) -> None:
        # NaN or infinity would turn heartbeats, and zombie detection, off unseen.
        interval = checks.positive_or_none("heartbeat_interval", self.heartbeat_interval)
        object.__setattr__(self, "heartbeat_interval", interval)


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """The server acknowledged the heartbeat with this nonce."""

    nonce: object


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """The server asks for a heartbeat now."""


@dataclass(frozen=True, slots=True)
class Perform:
    """Await ``action()`` (I/O the protocol must not do itself), then carry out what
    ``then(result)`` returns; if it raises, what ``failed(error)`` returns (by default,
    the connection ends with a :class:`~wavegate.ReconnectSignal`). ``what`` says what
    it is, for logs. Nothing is read from the connection meanwhile: keep it short.
    """

    action: Callable[[], Awaitable[Any]]
    then: Callable[[Any], Sequence[Output]]
    what: str
    failed: Callable[[BaseException], Sequence[Output]] | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """Emit a :class:`~wavegate.SessionEvent` of the protocol's own ``kind`` (an enum
    member, e.g. :class:`~wavegate.discord.dave.DaveEvent`), with ``detail`` and
    ``data``. Never secrets: events reach logs."""

    kind: Enum
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fail:
    """The connection cannot go on (for instance, the server offers nothing this client
    supports): end it, and let the session act on ``signal``."""

    signal: Signal


Output = Send | Deliver | HandshakeDone | HeartbeatAck | HeartbeatRequest | Perform | Notify | Fail
"""Anything a protocol asks the session to do."""


class GatewayProtocol(Protocol):
    """What a :class:`~wavegate.Session` needs from a gateway protocol (sans-I/O).

    Every method returns at once; none awaits or does I/O.
    """

    def start(self, *, resume: bool) -> Sequence[Output]:
        """A connection just opened: begin the handshake (a new session, or a resume
        of the current one when ``resume``)."""
        ...

    def receive(self, packet: WebsocketPacket) -> Sequence[Output]:
        """Everything that follows from one received packet, handshake or not."""
        ...

    def heartbeat(self, nonce: int) -> dict[str, Any] | bytes:
        """The heartbeat to send, carrying ``nonce`` (echoed by its ACK)."""
        ...

    def can_resume(self) -> bool:
        """Whether there is a session to resume."""
        ...

    def new_session(self) -> None:
        """Forget the resumable state: the next ``start()`` is a new session."""
        ...
