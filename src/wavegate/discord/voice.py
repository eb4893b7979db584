"""The Discord voice gateway v8 client, on the session supervisor.

    credentials = VoiceCredentials(server_id, user_id, session_id, token)
    async with VoiceClient("region.discord.media:2087", credentials) as voice:
        await voice.wait_ready()
        await voice.send_speaking(1)
        async for message in voice:
            ...

The protocol itself is sans-I/O (:mod:`wavegate.discord.voice_protocol`); its
messages are in :mod:`wavegate.discord.payloads`. Both are re-exported here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..redact import REDACTED
from ..session import Session
from ..websocket import Websocket
from .payloads import (
    PREFERRED_MODES,
    ClientDisconnect,
    ClientsConnect,
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
    Hello,
    Op,
    Ready,
    SessionDescription,
    Speaking,
    VoiceBinary,
    VoiceCredentials,
    VoiceMessage,
    encode_binary,
    parse_binary,
    parse_json,
    voice_url,
)
from .voice_protocol import Discover, Stage, VoiceProtocol


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
        discover: Discover | None = None,
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
    "PREFERRED_MODES",
    "REDACTED",
    "ClientDisconnect",
    "ClientsConnect",
    "DaveExecuteTransition",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "Discover",
    "Hello",
    "Op",
    "Ready",
    "SessionDescription",
    "Speaking",
    "Stage",
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
