"""The Discord voice gateway v8 client, on the session supervisor.

    credentials = VoiceCredentials(server_id, user_id, session_id, token, channel_id)
    async with VoiceClient("region.discord.media:2087", credentials) as voice:
        await voice.wait_ready()
        await voice.wait_dave_ready(10)          # the call's MLS group is active
        await voice.send_speaking(1)
        packet = voice.encrypt_opus(opus_frame)  # then transport-encrypt and send by UDP
        async for message in voice:
            ...

The protocol itself is sans-I/O (:mod:`wavegate.discord.voice_protocol`, with DAVE in
:mod:`wavegate.discord.dave`); its messages are in :mod:`wavegate.discord.payloads`.
All are re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import _checks as checks
from .._flag import Flag
from ..redact import REDACTED
from ..session import CLOSE_TIMEOUT, Session, SessionEvent
from ..session.events import OnEvent
from ..session.machine import Outcome
from ..signals import SessionClosedError, WaitTimeoutError
from ..transport import MIN_READ_BUFFER
from ..websocket import Websocket
from .dave import SILENCE_FRAME, DaveEvent, DaveState
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
from .udp import DiscoveryFailed, UdpDiscovery, VoiceUdp
from .voice_protocol import Discover, Stage, VoiceProtocol

_STALE = frozenset({4006})
"""Without a way to refresh credentials, a 4006 ends the client (one set for all)."""


@dataclass(frozen=True)
class VoiceMedia:
    """The media side of a voice connection (see :attr:`VoiceClient.media`).

    Attributes:
        udp: the socket IP discovery used, connected to the voice server: ``send()``
            and ``receive()`` datagrams (RTP).
        ssrc: this client's RTP synchronisation source, from READY.
        mode: the transport encryption mode, from SESSION_DESCRIPTION.
        secret_key: its 32-byte key.
    """

    udp: VoiceUdp
    ssrc: int
    mode: str
    secret_key: bytes = field(repr=False)


if TYPE_CHECKING:  # dave.py imports davey itself, with an error that names the extra
    import davey


class VoiceClient(Session):
    """A supervised Discord voice gateway v8 connection.

    DAVE (end-to-end encryption) is on by default, as Discord requires since
    2026-03-01: see :attr:`dave`, :meth:`wait_dave_ready`, :meth:`encrypt_opus` and
    :meth:`decrypt`, and the ``DaveEvent`` events.

    Args:
        endpoint: the VOICE_SERVER_UPDATE endpoint (``host:port``; the port is kept)
            or a full ``ws://``/``wss://`` URL.
        credentials: server id, user id, session id, token (and channel id, for DAVE).
        max_dave_protocol_version: sent in IDENTIFY (0: no DAVE; Discord then closes
            with 4017, which stops the client).
        discover: UDP IP discovery for SELECT_PROTOCOL. The default,
            :class:`UdpDiscovery` (pass one to tune its timeout and attempts), does it
            for real and keeps the socket for the media layer (:attr:`media`); with a
            function of your own, :attr:`media` stays ``None``.
        websocket: the connection to use (default: ``Websocket(read_buffer_size=2048)``,
            with the voice policy: a voice gateway's messages are small, and picows
            grows the buffer for a larger one).
        refresh_credentials: awaited before every new session after the first, for
            credentials with a fresh token (a bot gets one by sending op 4 on the main
            gateway again: VOICE_STATE_UPDATE, then VOICE_SERVER_UPDATE). Without it,
            a 4006 (the voice session and its token are gone) stops the client with
            outcome ``needs_credentials``, instead of looping on 4006.
        **options: any :class:`~wavegate.session.Session` option (``backoff``,
            ``move_grace`` for the 4014 channel-move window, ``on_event``...).

    Raises:
        ValueError: DAVE offered without ``credentials.channel_id``, or a
            ``max_dave_protocol_version`` davey does not speak.
    """

    protocol: VoiceProtocol

    def __init__(
        self,
        endpoint: str,
        credentials: VoiceCredentials,
        *,
        max_dave_protocol_version: int = 1,
        discover: Discover | None = None,
        refresh_credentials: Callable[[], Awaitable[VoiceCredentials]] | None = None,
        websocket: Websocket | None = None,
        **options: Any,
    ) -> None:
        checks.instance("credentials", credentials, VoiceCredentials, none=False)
        if max_dave_protocol_version not in (0, 1) or isinstance(max_dave_protocol_version, bool):
            raise ValueError(
                "max_dave_protocol_version must be 0 (no DAVE) or 1, "
                f"got {max_dave_protocol_version!r}"
            )
        checks.function("discover", discover)
        checks.function("refresh_credentials", refresh_credentials)
        checks.instance("websocket", websocket, Websocket)
        self._udp = UdpDiscovery() if discover is None else None
        if isinstance(discover, UdpDiscovery):
            self._udp = discover  # tuned (timeout, attempts), still ours to keep
        protocol = VoiceProtocol(
            credentials,
            max_dave_protocol_version=max_dave_protocol_version,
            discover=discover or self._udp,
        )
        self._dave_changed = Flag()
        self._user_on_event: OnEvent | None = options.pop("on_event", None)
        checks.function("on_event", self._user_on_event)
        if websocket is None:
            websocket = Websocket(
                read_buffer_size=MIN_READ_BUFFER,  # 2 KiB less per session
                close_timeout=options.get("close_timeout", CLOSE_TIMEOUT),
            )
        super().__init__(
            voice_url(endpoint), protocol, websocket=websocket, on_event=self._seen, **options
        )
        self._refresh = refresh_credentials
        self._credentials_fresh = False
        if refresh_credentials is None:
            # Discord's 4006 ends the voice session and its token: without a way to
            # get a fresh one, a new session could only be refused again.
            self._machine.rules = replace(self._machine.rules, stale_codes=_STALE)

    def __repr__(self) -> str:
        return f"<VoiceClient {self.state.value} {self.protocol.credentials!r}>"

    def _seen(self, event: SessionEvent) -> Awaitable[None] | None:
        if isinstance(event.kind, DaveEvent):
            self._dave_changed.set()
        if self._user_on_event is not None:
            return self._user_on_event(event)
        return None

    @property
    def media(self) -> VoiceMedia | None:
        """What an RTP sender/receiver needs (the UDP socket from IP discovery, ssrc,
        mode and secret key), once SESSION_DESCRIPTION arrived; ``None`` before, or
        when ``discover`` was your own."""
        protocol = self.protocol
        udp = self._udp.udp if self._udp is not None else None
        ready, description = protocol.ready, protocol.session_description
        if udp is None or ready is None or description is None:
            return None
        return VoiceMedia(udp, ready.ssrc, description.mode, description.secret_key)

    def _finish(self, outcome: Outcome) -> None:
        super()._finish(outcome)
        if self._udp is not None:
            self._udp.close()

    # -- DAVE ----------------------------------------------------------------------------

    @property
    def dave_state(self) -> DaveState:
        """DAVE's state machine: ``version``, ``epoch``, ``status()``, counters."""
        return self.protocol.dave

    @property
    def dave(self) -> davey.DaveSession | None:
        """The ``davey.DaveSession`` in use, or ``None`` while DAVE is off (version 0,
        or before SESSION_DESCRIPTION). Encrypt only once ``dave.ready``."""
        state = self.protocol.dave
        return state.session if state.version > 0 else None

    @property
    def voice_privacy_code(self) -> str | None:
        """The call's privacy code (equal for all members) once the group is active."""
        return self.protocol.dave.privacy_code

    async def wait_dave_ready(self, timeout: float | None = None) -> None:
        """Wait until the call's MLS group is active (media is end-to-end encrypted),
        or the call negotiated no DAVE (version 0: a stage channel, a downgraded call;
        then :attr:`dave` is ``None`` and media is sent as it is).

        Raises:
            WaitTimeoutError: (a ``TimeoutError``) not within ``timeout`` seconds; the
                message says where DAVE
                stands (no external sender yet, waiting for a welcome, version 0...).
            SessionClosedError: the session stopped first.
        """
        timeout = checks.wait("timeout", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._dave_settled():
            if self.outcome is not None:
                raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(
                    f"DAVE not active within {timeout}s: {self.protocol.dave.status()}"
                )
            self._dave_changed.clear()
            changed = asyncio.ensure_future(self._dave_changed.wait())
            stopped = asyncio.ensure_future(self._closing.wait())
            try:
                await asyncio.wait(
                    {changed, stopped}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
                stopped.cancel()

    def _dave_settled(self) -> bool:
        state = self.protocol.dave
        return state.active or (state.negotiated and not state.version)

    def encrypt_opus(self, frame: bytes) -> bytes:
        """An Opus ``frame`` end-to-end encrypted for the call when DAVE is active; as it
        is when DAVE is off (and for silence frames). Transport-encrypt it after."""
        _check_frame("encrypt_opus", frame)
        return self.protocol.dave.encrypt_opus(frame)

    def decrypt(self, user_id: int | str, frame: bytes) -> bytes | None:
        """``user_id``'s Opus ``frame`` (transport decryption and RTP padding already
        removed) end-to-end decrypted; as it is when DAVE is off; ``None`` when it
        cannot be decrypted (around a transition: drop it)."""
        _check_frame("decrypt", frame)
        return self.protocol.dave.decrypt(_user_id(user_id), frame)

    async def _renew(self) -> None:
        if self._refresh is None or self._credentials_fresh:
            self._credentials_fresh = False
            return
        credentials = await self._refresh()
        self._use(credentials)

    def _use(self, credentials: VoiceCredentials) -> None:
        """Take ``credentials`` for the next session (same user: its MLS identity)."""
        if not isinstance(credentials, VoiceCredentials):
            kind = type(credentials).__name__
            raise TypeError(f"refresh_credentials must return VoiceCredentials, not {kind}")
        protocol = self.protocol
        if credentials.user_id != protocol.credentials.user_id:
            raise ValueError("refresh_credentials returned another user's credentials")
        protocol.credentials = credentials
        if credentials.channel_id is not None:
            protocol.dave.channel_id = int(credentials.channel_id)

    def _explain(self, outcome: Outcome) -> Outcome:
        if outcome.reason == "needs_credentials":
            why = (
                "the voice session ended (4006) and a new one needs a fresh token from "
                "VOICE_SERVER_UPDATE: pass refresh_credentials= to get one"
            )
            return replace(outcome, explanation=why)
        if outcome.code != 4017:
            return outcome
        offered = self.protocol.max_dave_protocol_version
        why = (
            "Discord requires DAVE end-to-end encryption in this call; this client "
            f"offered max_dave_protocol_version={offered}"
        )
        return replace(outcome, explanation=why)

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

    def move_to(
        self, endpoint: str, token: str | None = None, *, channel_id: str | None = None
    ) -> None:
        """A new VOICE_SERVER_UPDATE arrived: connect to ``endpoint`` with ``token``
        as a new session (ends a ``move_grace`` wait after 4014). ``channel_id``: the
        new voice channel, after a move (DAVE's group id changes with it)."""
        changes = {"token": token, "channel_id": channel_id}
        changed = {name: value for name, value in changes.items() if value is not None}
        self._use(replace(self.protocol.credentials, **changed))
        self._credentials_fresh = token is not None  # the move brought a token: no refresh
        self.protocol.new_session()
        self.move(voice_url(endpoint))


def _check_frame(call: str, frame: object) -> None:
    if not isinstance(frame, bytes):
        raise TypeError(f"{call}() takes the Opus frame as bytes, got {type(frame).__name__}")


def _user_id(user_id: object) -> int:
    """A speaker's snowflake as an int (``Speaking.user_id`` is a string or ``None``)."""
    if isinstance(user_id, str) and user_id.isdigit():
        return int(user_id)
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return user_id
    raise ValueError(f"decrypt needs the speaker's user id (a snowflake), not {user_id!r}")


__all__ = [
    "PREFERRED_MODES",
    "REDACTED",
    "SILENCE_FRAME",
    "ClientDisconnect",
    "ClientsConnect",
    "DaveEvent",
    "DaveExecuteTransition",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "DaveState",
    "Discover",
    "DiscoveryFailed",
    "Hello",
    "Op",
    "Ready",
    "SessionDescription",
    "Speaking",
    "Stage",
    "UdpDiscovery",
    "VoiceBinary",
    "VoiceClient",
    "VoiceCredentials",
    "VoiceMedia",
    "VoiceMessage",
    "VoiceProtocol",
    "VoiceUdp",
    "encode_binary",
    "parse_binary",
    "parse_json",
    "voice_url",
]
