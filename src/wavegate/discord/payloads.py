"""The Discord voice gateway v8's messages: opcodes, typed payloads, binary frames.

Pure data and parsing, after Discord's developer documentation ("Voice
Connections", "Opcodes and Status Codes") and what discord.js and discord.py send.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

from .. import _checks as checks
from ..redact import redact_url, url_problem
from ..signals import InvalidURLError


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


_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class VoiceCredentials:
    """What IDENTIFY and RESUME need. ``token`` and ``session_id`` never appear in reprs.

    Attributes:
        server_id: the guild's (or, for DMs, the channel's) snowflake.
        user_id: this user's snowflake (DAVE's MLS identity).
        session_id: from VOICE_STATE_UPDATE.
        token: from VOICE_SERVER_UPDATE.
        channel_id: the voice channel's snowflake (from VOICE_STATE_UPDATE): DAVE's MLS
            group id, so required unless the client offers no DAVE.

    Raises:
        ValueError: an id is not a snowflake (decimal digits, below 2**64), or
            ``session_id`` or ``token`` is empty. The message names the field, never
            its value (a token passed in the wrong place must not reach a log).
        TypeError: ``session_id`` or ``token`` is not a ``str``.
    """

    server_id: str
    user_id: str
    session_id: str = field(repr=False)
    token: str = field(repr=False)
    channel_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("session_id", "token"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(
                    f"VoiceCredentials.{name} must be a str, got {type(value).__name__}"
                )
            if not value:
                raise ValueError(f"VoiceCredentials.{name} must not be empty")
        ids = {"server_id": self.server_id, "user_id": self.user_id}
        if self.channel_id is not None:
            ids["channel_id"] = self.channel_id
        for name, value in ids.items():
            if not isinstance(value, str) or not _SNOWFLAKE.fullmatch(value):
                got = f"a {type(value).__name__}"
                if isinstance(value, str):
                    got += f" of {len(value)} characters"
                raise ValueError(
                    f"VoiceCredentials.{name} must be a Discord snowflake as a string of "
                    f"digits, got {got} (not shown: it may be a secret in the wrong place)"
                )
            if int(value) >= 2**64:
                raise ValueError(f"VoiceCredentials.{name} is too large for a snowflake")


# -- typed payloads --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """op 8: the heartbeat interval (milliseconds; may be fractional)."""

    heartbeat_interval: float
    version: int | None = None

    def __post_init__(self) -> None:
        interval = checks.positive("heartbeat_interval", self.heartbeat_interval)
        object.__setattr__(self, "heartbeat_interval", interval)


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


def message_seq(payload: dict[str, Any]) -> int | None:
    """The ``seq`` of a server message, or ``None`` (0 is a valid seq)."""
    seq = payload.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _speaking(data: Any, seq: int | None) -> Speaking:
    user_id = data.get("user_id")
    return Speaking(
        int(data["speaking"]), int(data["ssrc"]), None if user_id is None else str(user_id), seq
    )


_PARSERS: dict[int, Callable[[Any, int | None], Any]] = {
    Op.HELLO: lambda d, seq: Hello(float(d["heartbeat_interval"]), d.get("v")),
    Op.READY: lambda d, seq: Ready(int(d["ssrc"]), str(d["ip"]), int(d["port"]), tuple(d["modes"])),
    Op.SESSION_DESCRIPTION: lambda d, seq: SessionDescription(
        str(d["mode"]), bytes(d["secret_key"]), int(d.get("dave_protocol_version") or 0)
    ),
    Op.SPEAKING: _speaking,
    Op.CLIENTS_CONNECT: lambda d, seq: ClientsConnect(tuple(str(u) for u in d["user_ids"]), seq),
    Op.CLIENT_DISCONNECT: lambda d, seq: ClientDisconnect(str(d["user_id"]), seq),
    Op.DAVE_PREPARE_TRANSITION: lambda d, seq: DavePrepareTransition(
        int(d["protocol_version"]), int(d["transition_id"]), seq
    ),
    Op.DAVE_EXECUTE_TRANSITION: lambda d, seq: DaveExecuteTransition(int(d["transition_id"]), seq),
    Op.DAVE_PREPARE_EPOCH: lambda d, seq: DavePrepareEpoch(
        int(d["protocol_version"]), int(d["epoch"]), seq
    ),
}


def parse_json(payload: dict[str, Any]) -> Any:
    """A typed payload for a server JSON message: one of the dataclasses above for the
    ops that have one, :class:`VoiceMessage` for other known ops, ``None`` for an
    unknown op.

    Raises:
        ValueError: a known op whose payload lacks required fields.
    """
    op = payload.get("op")
    data: Any = payload.get("d")
    seq = message_seq(payload)
    parser = _PARSERS.get(op) if isinstance(op, int) else None
    if parser is not None:
        try:
            return parser(data, seq)
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
    """The v8 gateway URL for a VOICE_SERVER_UPDATE endpoint (``host:port``, kept as
    it is) or a ``ws://``/``wss://`` URL.

    Raises:
        InvalidURLError: another scheme (``http://``...), or no host.
    """
    base = endpoint.split("?", 1)[0].rstrip("/")
    scheme, found, rest = base.partition("://")
    if not found:
        scheme, rest = "wss", base
    if scheme not in ("ws", "wss"):
        raise InvalidURLError(
            f"a voice endpoint is host:port or a ws:// or wss:// URL, not {scheme}://"
        )
    host = rest.split("/", 1)[0]
    if not host or host.endswith(":") or any(c.isspace() for c in host):
        raise InvalidURLError(
            "a voice endpoint needs a host (no spaces), like region.discord.media:443"
        )
    shown = redact_url(f"{scheme}://{rest}")  # not the endpoint: "user:pw@host" is no URL
    if "@" in host:
        where = shown
        raise InvalidURLError(
            f"a voice endpoint takes no user info (the token goes in IDENTIFY): {where!r}"
        )
    try:
        port = urlsplit(f"{scheme}://{host}").port
    except ValueError as exc:
        raise InvalidURLError(f"voice endpoint {shown!r}: {url_problem(exc, endpoint)}") from None
    if port == 0:
        raise InvalidURLError(f"voice endpoint {shown!r}: its port is 0")
    return f"{scheme}://{rest}/?v=8"
