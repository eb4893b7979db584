"""The Discord voice gateway v8 client, on the session supervisor.

    credentials = VoiceCredentials(server_id, user_id, session_id, token)
    async with VoiceClient("region.discord.media:2087", credentials) as voice:
        await voice.wait_ready()
        await voice.send_speaking(1)
        async for message in voice:
            ...

Facts and their sources: ``reference/discord-voice-gateway.md`` (opcodes §2, payloads
§3, binary frames §4, buffered resume §5).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from ..packets import WebsocketPacketBytes, WebsocketPacketJSON
from ..redact import REDACTED, redact
from ..session import Deliver, HeartbeatAck, HeartbeatRequest, Session
from ..signals import DisconnectSignal, Event
from ..websocket import Websocket

log = logging.getLogger("wavegate.discord.voice")


class Op(IntEnum):
    """Voice gateway opcodes."""

    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    CLIENT_DISCONNECT = 13
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_PREPARE_EPOCH = 24
    DAVE_MLS_EXTERNAL_SENDER = 25
    DAVE_MLS_KEY_PACKAGE = 26
    DAVE_MLS_PROPOSALS = 27
    DAVE_MLS_COMMIT_WELCOME = 28
    DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    DAVE_MLS_WELCOME = 30
    DAVE_MLS_INVALID_COMMIT_WELCOME = 31


PREFERRED_MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")
"""Encryption modes in order of preference (Discord: prefer AES-GCM when offered)."""


@dataclass(frozen=True, slots=True)
class VoiceCredentials:
    """What IDENTIFY and RESUME need. ``token`` and ``session_id`` never appear in reprs."""

    server_id: str
    user_id: str
    session_id: str = field(repr=False)
    token: str = field(repr=False)


# -- typed payloads --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """op 8: the heartbeat interval (milliseconds; may be fractional)."""

    heartbeat_interval: float
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """op 2: the UDP endpoint and the encryption modes offered."""

    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """op 4: the chosen mode and the secret key (hidden from reprs)."""

    mode: str
    secret_key: bytes = field(repr=False)
    dave_protocol_version: int = 0


@dataclass(frozen=True, slots=True)
class Speaking:
    """op 5: someone's speaking state."""

    speaking: int
    ssrc: int
    user_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ClientsConnect:
    """op 11: users that joined (or were present)."""

    user_ids: tuple[str, ...]
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ClientDisconnect:
    """op 13: a user left."""

    user_id: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DavePrepareTransition:
    """op 21."""

    protocol_version: int
    transition_id: int
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DaveExecuteTransition:
    """op 22."""

    transition_id: int
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DavePrepareEpoch:
    """op 24 (``epoch == 1``: a new MLS group)."""

    protocol_version: int
    epoch: int
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class VoiceBinary:
    """A server binary (DAVE) frame: ``seq`` u16 BE, ``op`` u8, then ``body``.

    ``transition_id`` is parsed for ops 29 and 30, ``operation_type`` for op 27.
    """

    seq: int
    op: int
    body: bytes
    transition_id: int | None = None
    operation_type: int | None = None


@dataclass(frozen=True, slots=True)
class VoiceMessage:
    """A JSON message of a known op with no typed payload (e.g. op 5 from a client)."""

    op: int
    data: Any
    seq: int | None = None


def _seq(payload: dict[str, Any]) -> int | None:
    seq = payload.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def parse_json(payload: dict[str, Any]) -> Any:
    """A typed payload for a server JSON message, or ``None`` for an unknown op.

    Raises:
        ValueError: a known op whose payload lacks required fields.
    """
    op = payload.get("op")
    data: Any = payload.get("d")
    seq = _seq(payload)
    try:
        if op == Op.HELLO:
            return Hello(float(data["heartbeat_interval"]), data.get("v"))
        if op == Op.READY:
            return Ready(
                int(data["ssrc"]), str(data["ip"]), int(data["port"]), tuple(data["modes"])
            )
        if op == Op.SESSION_DESCRIPTION:
            return SessionDescription(
                str(data["mode"]),
                bytes(data["secret_key"]),
                int(data.get("dave_protocol_version") or 0),
            )
        if op == Op.SPEAKING:
            user_id = data.get("user_id")
            return Speaking(
                int(data["speaking"]),
                int(data["ssrc"]),
                None if user_id is None else str(user_id),
                seq,
            )
        if op == Op.CLIENTS_CONNECT:
            return ClientsConnect(tuple(str(user) for user in data["user_ids"]), seq)
        if op == Op.CLIENT_DISCONNECT:
            return ClientDisconnect(str(data["user_id"]), seq)
        if op == Op.DAVE_PREPARE_TRANSITION:
            return DavePrepareTransition(
                int(data["protocol_version"]), int(data["transition_id"]), seq
            )
        if op == Op.DAVE_EXECUTE_TRANSITION:
            return DaveExecuteTransition(int(data["transition_id"]), seq)
        if op == Op.DAVE_PREPARE_EPOCH:
            return DavePrepareEpoch(int(data["protocol_version"]), int(data["epoch"]), seq)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed payload for op {op}: {exc!r}") from exc
    if isinstance(op, int) and op in Op._value2member_map_:
        return VoiceMessage(op, data, seq)
    return None


def parse_binary(frame: bytes) -> VoiceBinary:
    """Parse a server binary frame (``>HB`` header, then the body).

    Raises:
        ValueError: the frame is shorter than its header.
    """
    if len(frame) < 3:
        raise ValueError(
            f"binary voice frame of {len(frame)} bytes is shorter than its 3-byte header"
        )
    seq, op = struct.unpack_from(">HB", frame)
    body = frame[3:]
    if op in (Op.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, Op.DAVE_MLS_WELCOME) and len(body) >= 2:
        return VoiceBinary(seq, op, body, transition_id=struct.unpack_from(">H", body)[0])
    if op == Op.DAVE_MLS_PROPOSALS and body:
        return VoiceBinary(seq, op, body, operation_type=body[0])
    return VoiceBinary(seq, op, body)


def encode_binary(op: int, body: bytes) -> bytes:
    """A client binary frame: ``op`` u8, then the body (no seq)."""
    return bytes((op,)) + body


def voice_url(endpoint: str) -> str:
    """The v8 gateway URL for a VOICE_SERVER_UPDATE endpoint, keeping its port."""
    base = endpoint.split("?", 1)[0].rstrip("/")
    if not base.startswith(("ws://", "wss://")):
        base = "wss://" + base
    return f"{base}/?v=8"


Discover = Callable[[Ready], Awaitable[tuple[str, int]]]


async def _no_discovery(ready: Ready) -> tuple[str, int]:
    return ready.ip, ready.port


class VoiceProtocol:
    """The voice gateway v8 protocol for :class:`~wavegate.session.Session`.

    Args:
        credentials: server, user, session id and token.
        max_dave_protocol_version: sent in IDENTIFY (0: no DAVE).
        discover: given READY, returns this client's external ``(address, port)``
            from UDP IP discovery, for SELECT_PROTOCOL. The default echoes READY's
            address, which only suits test servers.
    """

    def __init__(
        self,
        credentials: VoiceCredentials,
        *,
        max_dave_protocol_version: int = 1,
        discover: Discover = _no_discovery,
    ) -> None:
        self.credentials = credentials
        self.max_dave_protocol_version = max_dave_protocol_version
        self.discover = discover
        self.seq_ack = -1
        self.ready: Ready | None = None
        self.session_description: SessionDescription | None = None
        self.hello: Hello | None = None
        self._identified = False

    def __repr__(self) -> str:
        return f"<VoiceProtocol {self.credentials!r} seq_ack={self.seq_ack}>"

    # -- SessionProtocol -------------------------------------------------------------

    def can_resume(self) -> bool:
        return self._identified

    def new_session(self) -> None:
        self.seq_ack = -1
        self._identified = False

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        return {"op": Op.HEARTBEAT, "d": {"t": nonce, "seq_ack": self.seq_ack}}

    def interpret(self, packet: Any) -> Any:
        if isinstance(packet, WebsocketPacketBytes):
            try:
                message = parse_binary(packet.payload)
            except ValueError as exc:
                log.warning("ignoring binary frame: %s", exc)
                return None
            self.seq_ack = message.seq
            return message
        if not isinstance(packet, WebsocketPacketJSON):
            return None
        payload = packet.payload
        seq = _seq(payload)
        if seq is not None:  # 0 is a valid seq (pitfall 16): compare with absence
            self.seq_ack = seq
        op = payload.get("op")
        if op == Op.HEARTBEAT_ACK:
            data = payload.get("d")
            return HeartbeatAck(data.get("t") if isinstance(data, dict) else data)
        if op == Op.HEARTBEAT:
            return HeartbeatRequest()
        if op in (Op.HELLO, Op.RESUMED):
            return None
        try:
            message = parse_json(payload)
        except ValueError as exc:
            log.warning("ignoring voice message: %s", exc)
            return None
        if message is None:
            log.debug("ignoring unknown voice op %r", op)
        return message

    async def open(self, ws: Websocket, deliver: Deliver, *, resume: bool) -> float:
        credentials = self.credentials
        self.hello = None
        if resume:
            await self._send(ws, Op.RESUME, {
                "server_id": credentials.server_id,
                "session_id": credentials.session_id,
                "token": credentials.token,
                "seq_ack": self.seq_ack,
            })  # fmt: skip
            await self._until(ws, deliver, Op.RESUMED)
        else:
            await self._send(ws, Op.IDENTIFY, {
                "server_id": credentials.server_id,
                "user_id": credentials.user_id,
                "session_id": credentials.session_id,
                "token": credentials.token,
                "max_dave_protocol_version": self.max_dave_protocol_version,
            })  # fmt: skip
            ready = await self._until(ws, deliver, Op.READY)
            assert isinstance(ready, Ready)
            self.ready = ready
            address, port = await self.discover(ready)
            mode = next((mode for mode in PREFERRED_MODES if mode in ready.modes), None)
            if mode is None:
                raise DisconnectSignal(
                    f"no supported encryption mode offered: {ready.modes}",
                    event=Event.PROTOCOL_ERROR,
                )
            await self._send(ws, Op.SELECT_PROTOCOL, {
                "protocol": "udp",
                "data": {"address": address, "port": port, "mode": mode},
            })  # fmt: skip
            description = await self._until(ws, deliver, Op.SESSION_DESCRIPTION)
            assert isinstance(description, SessionDescription)
            self.session_description = description
            self._identified = True
        if self.hello is None:
            await self._until(ws, deliver, Op.HELLO)
        assert self.hello is not None
        return self.hello.heartbeat_interval / 1000

    async def _send(self, ws: Websocket, op: Op, data: dict[str, Any]) -> None:
        payload = {"op": int(op), "d": data}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("voice >> %s", redact(payload))
        await ws.send_json(payload)

    async def _until(self, ws: Websocket, deliver: Deliver, op: Op) -> Any:
        """Receive until ``op`` arrives; deliver application messages meanwhile."""
        while True:
            packet = await ws.receive()
            if isinstance(packet, WebsocketPacketJSON):
                payload = packet.payload
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("voice << %s", redact(payload))
                got = payload.get("op")
                if got == Op.HELLO:
                    self.hello = parse_json(payload)
                    if op == Op.HELLO:
                        return self.hello
                    continue
                if got == op:
                    seq = _seq(payload)
                    if seq is not None:
                        self.seq_ack = seq
                    return None if op == Op.RESUMED else parse_json(payload)
            item = self.interpret(packet)
            if item is not None and not isinstance(item, (HeartbeatAck, HeartbeatRequest)):
                deliver(item)


class VoiceClient(Session):
    """A supervised Discord voice gateway v8 connection.

    Args:
        endpoint: the VOICE_SERVER_UPDATE endpoint (``host:port``; the port is kept)
            or a full ``ws://``/``wss://`` URL.
        credentials: server id, user id, session id and token.
        max_dave_protocol_version: sent in IDENTIFY.
        discover: UDP IP discovery for SELECT_PROTOCOL (see :class:`VoiceProtocol`).
        websocket: the connection to use (``Websocket()`` with the voice policy).
        **options: any :class:`~wavegate.session.Session` option (``backoff``,
            ``move_grace`` for the 4014 channel-move window, ``on_event``...).
    """

    protocol: VoiceProtocol

    def __init__(
        self,
        endpoint: str,
        credentials: VoiceCredentials,
        *,
        max_dave_protocol_version: int = 1,
        discover: Discover = _no_discovery,
        websocket: Websocket | None = None,
        **options: Any,
    ) -> None:
        protocol = VoiceProtocol(
            credentials, max_dave_protocol_version=max_dave_protocol_version, discover=discover
        )
        super().__init__(voice_url(endpoint), protocol, websocket=websocket, **options)

    def __repr__(self) -> str:
        return f"<VoiceClient {self.state.value} {self.protocol.credentials!r}>"

    async def send_speaking(
        self, speaking: int, *, ssrc: int | None = None, delay: int = 0
    ) -> None:
        """Send op 5 SPEAKING (``speaking`` is the 1/2/4 bitmask); ssrc from READY."""
        if ssrc is None:
            ssrc = self.protocol.ready.ssrc if self.protocol.ready is not None else 0
        await self.send_json(
            {"op": Op.SPEAKING, "d": {"speaking": speaking, "delay": delay, "ssrc": ssrc}}
        )

    async def send_binary(self, op: int, body: bytes) -> None:
        """Send a client binary (DAVE) frame: ``op`` then ``body``."""
        await self.send_bytes(encode_binary(op, body))

    def move_to(self, endpoint: str, token: str | None = None) -> None:
        """A new VOICE_SERVER_UPDATE arrived: connect to ``endpoint`` with ``token``
        as a new session (ends a ``move_grace`` wait after 4014)."""
        if token is not None:
            self.protocol.credentials = replace(self.protocol.credentials, token=token)
        self.protocol.new_session()
        self.move(voice_url(endpoint))


__all__ = [
    "REDACTED",
    "ClientDisconnect",
    "ClientsConnect",
    "DaveExecuteTransition",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "Hello",
    "Op",
    "Ready",
    "SessionDescription",
    "Speaking",
    "VoiceBinary",
    "VoiceClient",
    "VoiceCredentials",
    "VoiceMessage",
    "VoiceProtocol",
    "encode_binary",
    "parse_binary",
    "parse_json",
    "voice_url",
]
