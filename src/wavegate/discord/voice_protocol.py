"""The Discord voice gateway v8 protocol, sans-I/O (a :class:`~wavegate.GatewayProtocol`).

The handshake is a small state machine, fed the server's messages in whatever order
they come (HELLO may arrive before or after READY or RESUMED):

| stage | on | outputs | next stage |
|---|---|---|---|
| (start) | a new session | IDENTIFY | IDENTIFYING |
| (start) | a resume | RESUME (with ``seq_ack``) | RESUMING |
| IDENTIFYING | READY | UDP IP discovery (:class:`~wavegate.Perform`) | DISCOVERING |
| DISCOVERING | discovery done | SELECT_PROTOCOL, or Fail if no mode fits | SELECTING |
| SELECTING | SESSION_DESCRIPTION | | DESCRIBED |
| RESUMING | RESUMED | | RESUMED |
| DESCRIBED or RESUMED | once HELLO came too | HandshakeDone(interval) | OPEN |

In every stage a message's ``seq`` becomes ``seq_ack`` and heartbeat ACKs and requests
go to the session. DAVE messages (ops 21-31) go to :class:`~.dave.DaveState`, which
starts at SESSION_DESCRIPTION and carries on across resumes. Every other message is
delivered to the application, typed (a resume's replay included).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from ..packets import WebsocketPacket, WebsocketPacketBytes, WebsocketPacketJSON
from ..protocol import (
    Deliver,
    Fail,
    HandshakeDone,
    HeartbeatAck,
    HeartbeatRequest,
    Output,
    Perform,
    Send,
)
from ..redact import redact
from ..signals import DisconnectSignal, Event, ReconnectSignal
from .dave import MAX_VERSION, DaveState, is_dave_message
from .payloads import (
    PREFERRED_MODES,
    Hello,
    Op,
    Ready,
    SessionDescription,
    VoiceCredentials,
    message_seq,
    parse_binary,
    parse_json,
)

log = logging.getLogger("wavegate.discord.voice")

Discover = Callable[[Ready], Awaitable[tuple[str, int]]]
"""UDP IP discovery: given READY, this client's external ``(address, port)``."""


async def _no_discovery(ready: Ready) -> tuple[str, int]:
    return ready.ip, ready.port


class Stage(str, Enum):
    """Where a connection's voice handshake is."""

    IDLE = "idle"
    IDENTIFYING = "identifying"
    DISCOVERING = "discovering"
    SELECTING = "selecting"
    DESCRIBED = "described"
    RESUMING = "resuming"
    RESUMED = "resumed"
    OPEN = "open"


class VoiceProtocol:
    """The voice gateway v8 protocol for :class:`~wavegate.Session` (sans-I/O).

    Args:
        credentials: server, user, session id and token.
        max_dave_protocol_version: sent in IDENTIFY (0: no DAVE; at most davey's
            ``DAVE_PROTOCOL_VERSION``).
        discover: given READY, returns this client's external ``(address, port)``
            from UDP IP discovery, for SELECT_PROTOCOL. The default echoes READY's
            address, which only suits test servers.

    Raises:
        ValueError: ``max_dave_protocol_version`` out of range, or DAVE offered with no
            ``credentials.channel_id``.

    Attributes:
        seq_ack: the last ``seq`` received (-1: none yet).
        hello, ready, session_description: the last of each, once received.
        stage: where the handshake is (:class:`Stage`).
        dave: DAVE's state (:class:`~.dave.DaveState`).
    """

    def __init__(
        self,
        credentials: VoiceCredentials,
        *,
        max_dave_protocol_version: int = 1,
        discover: Discover | None = None,
    ) -> None:
        _check_dave(credentials, max_dave_protocol_version)
        self.credentials = credentials
        self.max_dave_protocol_version = max_dave_protocol_version
        self.discover = discover or _no_discovery
        self.seq_ack = -1
        self.hello: Hello | None = None
        self.ready: Ready | None = None
        self.session_description: SessionDescription | None = None
        self.stage = Stage.IDLE
        self.dave = DaveState(int(credentials.user_id), int(credentials.channel_id or 0))
        self._identified = False

    def __repr__(self) -> str:
        return f"<VoiceProtocol {self.credentials!r} {self.stage.value} seq_ack={self.seq_ack}>"

    # -- GatewayProtocol -------------------------------------------------------------

    def can_resume(self) -> bool:
        return self._identified

    def new_session(self) -> None:
        self.seq_ack = -1
        self._identified = False
        self.dave.forget()

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        return {"op": Op.HEARTBEAT, "d": {"t": nonce, "seq_ack": self.seq_ack}}

    def start(self, *, resume: bool) -> list[Output]:
        credentials = self.credentials
        self.hello = None
        if resume:
            self.stage = Stage.RESUMING
            return [_send(Op.RESUME, {
                "server_id": credentials.server_id,
                "session_id": credentials.session_id,
                "token": credentials.token,
                "seq_ack": self.seq_ack,
            })]  # fmt: skip
        self.stage = Stage.IDENTIFYING
        return [_send(Op.IDENTIFY, {
            "server_id": credentials.server_id,
            "user_id": credentials.user_id,
            "session_id": credentials.session_id,
            "token": credentials.token,
            "max_dave_protocol_version": self.max_dave_protocol_version,
        })]  # fmt: skip

    def receive(self, packet: WebsocketPacket) -> list[Output]:
        if isinstance(packet, WebsocketPacketBytes):
            try:
                message = parse_binary(packet.payload)
            except ValueError as exc:
                log.warning("ignoring binary frame: %s", exc)
                return []
            self.seq_ack = message.seq
            return self.dave.receive(message)
        if not isinstance(packet, WebsocketPacketJSON):
            return []
        payload = packet.payload
        if log.isEnabledFor(logging.DEBUG):
            log.debug("voice << %s", redact(payload))
        seq = message_seq(payload)
        if seq is not None:  # 0 is a valid seq: compare with absence
            self.seq_ack = seq
        op = payload.get("op")
        handler = _HANDLERS.get(op) if isinstance(op, int) else None
        if handler is not None:
            return handler(self, payload)
        return self._deliver(payload)

    # -- the handshake -----------------------------------------------------------------

    def _on_hello(self, payload: dict[str, Any]) -> list[Output]:
        hello = self._parse(payload)
        if not isinstance(hello, Hello):
            return []
        self.hello = hello
        return self._handshake_done()

    def _on_ready(self, payload: dict[str, Any]) -> list[Output]:
        ready = self._parse(payload)
        if not isinstance(ready, Ready):
            return []
        self.ready = ready
        if self.stage is not Stage.IDENTIFYING:
            return [Deliver(ready)]
        self.stage = Stage.DISCOVERING
        return [
            Perform(
                lambda: self.discover(ready),
                lambda found: self._discovered(ready, found),
                "UDP IP discovery",
                failed=self._discovery_failed,
            )
        ]

    def _discovered(self, ready: Ready, found: tuple[str, int]) -> list[Output]:
        address, port = found
        mode = next((mode for mode in PREFERRED_MODES if mode in ready.modes), None)
        if mode is None:
            reason = f"no supported encryption mode offered: {ready.modes}"
            return [Fail(DisconnectSignal(reason, event=Event.PROTOCOL_ERROR))]
        self.stage = Stage.SELECTING
        return [_send(Op.SELECT_PROTOCOL, {
            "protocol": "udp",
            "data": {"address": address, "port": port, "mode": mode},
        })]  # fmt: skip

    @staticmethod
    def _discovery_failed(error: BaseException) -> list[Output]:
        # Worth another try, as a new session (the server may hand another address).
        signal = ReconnectSignal(
            f"UDP IP discovery failed: {error}", event=Event.CONNECT_ERROR, initiated_locally=True
        )
        signal.__cause__ = error
        return [Fail(signal)]

    def _on_session_description(self, payload: dict[str, Any]) -> list[Output]:
        description = self._parse(payload)
        if not isinstance(description, SessionDescription):
            return []
        self.session_description = description
        if self.stage is not Stage.SELECTING:
            return [Deliver(description)]
        self.stage = Stage.DESCRIBED
        self._identified = True
        offered = self.max_dave_protocol_version > 0
        dave = self.dave.start(description.dave_protocol_version if offered else 0)
        return [*dave, *self._handshake_done()]

    def _on_resumed(self, payload: dict[str, Any]) -> list[Output]:
        if self.stage is not Stage.RESUMING:
            return []
        self.stage = Stage.RESUMED
        return [*self._handshake_done(), *self.dave.resumed()]

    def _handshake_done(self) -> list[Output]:
        if self.hello is None or self.stage not in (Stage.DESCRIBED, Stage.RESUMED):
            return []
        resumed = self.stage is Stage.RESUMED
        self.stage = Stage.OPEN
        return [HandshakeDone(self.hello.heartbeat_interval / 1000, resumed=resumed)]

    # -- everything else ---------------------------------------------------------------

    def _on_heartbeat_ack(self, payload: dict[str, Any]) -> list[Output]:
        data = payload.get("d")
        return [HeartbeatAck(data.get("t") if isinstance(data, dict) else data)]

    def _on_heartbeat(self, payload: dict[str, Any]) -> list[Output]:
        return [HeartbeatRequest()]

    def _deliver(self, payload: dict[str, Any]) -> list[Output]:
        message = self._parse(payload)
        if message is None:
            log.debug("ignoring unknown voice op %r", payload.get("op"))
            return []
        if is_dave_message(message):
            return self.dave.receive(message)
        self.dave.observe(message)
        return [Deliver(message)]

    @staticmethod
    def _parse(payload: dict[str, Any]) -> Any:
        try:
            return parse_json(payload)
        except ValueError as exc:
            log.warning("ignoring voice message: %s", exc)
            return None


_HANDLERS: dict[int, Callable[[VoiceProtocol, dict[str, Any]], list[Output]]] = {
    Op.HELLO: VoiceProtocol._on_hello,
    Op.READY: VoiceProtocol._on_ready,
    Op.SESSION_DESCRIPTION: VoiceProtocol._on_session_description,
    Op.RESUMED: VoiceProtocol._on_resumed,
    Op.HEARTBEAT_ACK: VoiceProtocol._on_heartbeat_ack,
    Op.HEARTBEAT: VoiceProtocol._on_heartbeat,
}


def _check_dave(credentials: VoiceCredentials, version: int) -> None:
    """Refuse, at construction, what would only fail later against Discord."""
    if not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ValueError(
            f"max_dave_protocol_version must be 0 (no DAVE) to {MAX_VERSION}, not {version!r}"
        )
    if version and credentials.channel_id is None:
        raise ValueError(
            "VoiceCredentials.channel_id is required for DAVE: the call's MLS group id is "
            "the voice channel's id (from VOICE_STATE_UPDATE)"
        )


def _send(op: Op, data: dict[str, Any]) -> Send:
    payload = {"op": int(op), "d": data}
    if log.isEnabledFor(logging.DEBUG):
        log.debug("voice >> %s", redact(payload))
    return Send(payload)
