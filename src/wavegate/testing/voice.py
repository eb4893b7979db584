"""A fake Discord voice gateway v8 on loopback, with fault injection.

It speaks the server side of the voice gateway (HELLO first; IDENTIFY -> READY;
SELECT_PROTOCOL -> SESSION_DESCRIPTION; HEARTBEAT -> ACK; RESUME -> RESUMED + replay,
or 4006), numbers its messages with ``seq`` and keeps a bounded replay buffer per
session, and records everything each client sent, so tests can prove nothing was lost.

It plays DAVE's server side too (:mod:`wavegate.testing.dave`): one MLS group per
voice channel, the clients of a ``server_id`` sharing one channel. As Discord since
2026-03-01, a client offering ``max_dave_protocol_version`` 0 gets HELLO, then 4017
(``require_dave=False`` lets it in and downgrades the channel instead). A session
leaves its channel when it closes with 1000, when a new IDENTIFY replaces it, or when
it is not resumed within ``leave_grace`` seconds of losing its connection.

    async with FakeVoiceGateway(heartbeat_interval=0.1) as gateway:
        client = VoiceClient(gateway.url, credentials)
        ...
        await gateway.send_speaking("user", n)        # a numbered server message
        await gateway.close_session("session", 4015)   # faults
        await gateway.drop("session")
        gateway.stop_acking("session")
        gateway.expire("session")

It never imports the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import secrets
import ssl as ssl_module
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .. import _checks as checks
from . import voice_rules
from .dave import ArmHoldTimeout, ArmTimeout, DaveChannel, Output
from .frames import BINARY
from .server import (
    ConnectionDropped,
    ServerConnection,
    WebsocketTestServer,
    check_close_frame,
)
from .udp import FakeVoiceUdp

log = logging.getLogger("wavegate.testing.voice")
ENDING_CODES = frozenset({4006, 4009, 4014, 4021, 4022})
"""Server closes that end the voice session (and spend its token), unlike 4015."""
_KNOWN_CLIENT_OPS = frozenset({0, 1, 3, 5, 7, 23, 31, 32})
TEXT = 0x1
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
DAVE_REQUIRED = 4017


@dataclass
class _ConnectionState:
    conn: ServerConnection
    last_heartbeat: float
    session: FakeVoiceSession | None = None
    closing: bool = False


async def _retire(conn: ServerConnection) -> None:
    """Take an old connection out of service: read what the client sent on it (reset
    drains first), and let its handler record it, before the new one takes over."""
    await conn.reset()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(conn.handled.wait(), 2.0)


async def _send_quietly(conn: ServerConnection, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionDropped, ConnectionError):
        await conn.send_json(message)


@dataclass
class FakeVoiceSession:
    """The server's view of one voice session.

    Attributes:
        received: every application message the client sent, as ``(op, d)``
            (JSON) or ``(op, body)`` (binary), in order.
        sent: numbered messages the server produced in this session.
        replayed: messages resent after RESUMEs.
        seq_ack: the last ``seq_ack`` the client reported.
    """

    session_id: str
    user_id: str
    token: str
    server_id: str = "0"
    dave: bool = False
    """It offered DAVE (``max_dave_protocol_version`` >= 1)."""
    joined: bool = False
    """It is in its channel (since its SESSION_DESCRIPTION)."""
    ssrc: int = 0
    """The ssrc READY gave it."""
    generation: int = 0
    seq: int = 0
    buffer: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    """``(counter, frame opcode, frame payload)`` of recent numbered messages."""
    received: list[tuple[int, Any]] = field(default_factory=list)
    sent: int = 0
    replayed: int = 0
    seq_ack: int = -1
    selected: dict[str, Any] | None = None
    """The last SELECT_PROTOCOL's ``data`` (address, port, mode)."""
    heartbeats: int = 0
    resumes: int = 0
    expired: bool = False
    acking: bool = True
    mute: ServerConnection | None = None
    """A connection whose heartbeats are not answered (a zombie)."""
    ack_delay: float = 0.0
    reading: bool = True
    """``False``: every new connection of the session stops reading once authenticated."""
    conn: ServerConnection | None = None
    live: asyncio.Event = field(default_factory=asyncio.Event)

    def __repr__(self) -> str:
        return f"<FakeVoiceSession user={self.user_id} seq={self.seq} sent={self.sent}>"


class FakeVoiceGateway:
    """A voice gateway v8 server on 127.0.0.1 (async context manager).

    Args:
        heartbeat_interval: seconds, announced in HELLO (in ms, as Discord does).
        replay_size: numbered messages kept per session for resumes.
        heartbeat_timeout_factor: close with 4009 when no heartbeat came for this
            many intervals.
        valid_tokens: when given, IDENTIFY with another token is closed with 4004.
        modes: encryption modes offered in READY.
        require_dave: close a client that offers no DAVE with 4017 (Discord's rule);
            ``False`` lets it in and downgrades its channel to version 0.
        transition_timeout: seconds a DAVE transition waits for every member's
            readiness before it executes anyway; also the longest a key package
            waits while the Adds before it are out (they are committed first, and
            the waiting ones proposed together).
        leave_grace: seconds a session whose connection was lost stays in its channel
            (and resumable) before it leaves.
        channel_ids: the voice channel id (the MLS group id) of each ``server_id``;
            by default the server id itself.
        strict: refuse what Discord refuses (:mod:`.voice_rules`): a URL without
            ``v=8`` (HTTP 400), malformed heartbeats (4020), an unknown protocol
            (4012) or encryption mode (4016). ``False`` is a lax server, for clients
            that are not yet right.
        host: where to listen (loopback).
        port: the port (0: any free one; see ``url``).
        ssl: a server context to serve ``wss://`` (see :mod:`.tls`).
    """

    def __init__(
        self,
        *,
        heartbeat_interval: float = 0.25,
        replay_size: int = 256,
        heartbeat_timeout_factor: float = 3.0,
        valid_tokens: set[str] | None = None,
        modes: tuple[str, ...] = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"),
        keep_received: bool = True,
        require_dave: bool = True,
        transition_timeout: float = 2.0,
        leave_grace: float = 10.0,
        channel_ids: dict[str, str] | None = None,
        strict: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        checks.count("replay_size", replay_size, 0)  # 0: a resume replays nothing
        self.heartbeat_interval = checks.positive("heartbeat_interval", heartbeat_interval)
        self.replay_size = replay_size
        factor = checks.positive("heartbeat_timeout_factor", heartbeat_timeout_factor)
        self.heartbeat_timeout_factor = factor
        self.valid_tokens = valid_tokens
        self.modes = modes
        self.keep_received = keep_received
        self.server = WebsocketTestServer(self._handle, host=host, port=port, ssl=ssl)
        self.strict = strict
        if strict:
            self.server.refuse_path = voice_rules.check_path
        self.udp = FakeVoiceUdp(host)
        """The UDP endpoint READY advertises: IP discovery, RTP counts per ssrc."""
        self.sessions: dict[str, FakeVoiceSession] = {}
        self.identifies = 0
        self.resumes = 0
        self.resumes_refused = 0
        self.replayed = 0
        """Messages resent after RESUMEs, over all sessions."""
        self._pending: set[asyncio.Future[None]] = set()
        self.received_by_user: dict[str, list[tuple[int, Any]]] = {}
        """Every application message each user sent, across all its sessions, in order."""
        self._arrived = asyncio.Event()
        """Set at each recorded message (``wait_received`` clears it and waits)."""
        self.require_dave = require_dave
        self.transition_timeout = transition_timeout
        self._stopping = False
        self.leave_grace = leave_grace
        self.spent_tokens: set[str] = set()
        """Tokens of voice sessions that ended: IDENTIFY with one gets 4006 (strict)."""
        self.channel_ids = dict(channel_ids or {})
        self.channels: dict[str, DaveChannel] = {}
        """The DAVE state of each ``server_id``'s voice channel."""
        self._members: dict[tuple[str, int], FakeVoiceSession] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def url(self) -> str:
        """``ws://host:port/?v=8``."""
        return self.server.url + "?v=8"

    async def __aenter__(self) -> FakeVoiceGateway:
        self._stopping = False
        await self.udp.start()
        try:
            await self.server.start()
        except BaseException:
            self.udp.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Stopping drops every connection, and each drop would arm a leave timer: none
        # may outlive the gateway.
        self._stopping = True
        try:
            await self.server.stop()
        finally:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self.udp.close()

    # -- sending numbered messages ---------------------------------------------------

    def session(self, session_id: str) -> FakeVoiceSession:
        """The session called ``session_id``.

        Raises:
            KeyError: no client identified with it (ids are str, as sent).
        """
        try:
            return self.sessions[session_id]
        except KeyError:
            raise KeyError(f"no session {session_id!r}: no client identified with it") from None

    async def wait_live(self, session_id: str, timeout: float = 5.0) -> FakeVoiceSession:
        """Wait until ``session_id`` exists and has a live, authenticated connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Re-read each turn: a new IDENTIFY replaces the session object.
        while (session := self.sessions.get(session_id)) is None or not session.live.is_set():
            if loop.time() > deadline:
                raise asyncio.TimeoutError(f"session {session_id!r} not live within {timeout}s")
            await asyncio.sleep(0.002)
        return session

    async def send(self, session_id: str, op: int, data: Any) -> int:
        """Send a numbered JSON message; returns its ``seq``. Buffered for replay, and
        written at once if the session has a live connection."""
        session = self.session(session_id)
        seq = self._next_seq(session)
        frame = json.dumps({"op": op, "seq": seq, "d": data}, separators=(",", ":")).encode()
        await self._emit(session, 0x1, frame)
        return seq

    async def send_speaking(self, session_id: str, number: int) -> int:
        """Send op 5 SPEAKING carrying ``number`` as its ssrc (handy numbered traffic)."""
        session = self.session(session_id)
        return await self.send(
            session_id, 5, {"user_id": session.user_id, "ssrc": number, "speaking": 1}
        )

    async def send_binary(self, session_id: str, op: int, body: bytes) -> int:
        """Send a numbered binary (DAVE) frame: ``>HB`` seq and op, then the body."""
        session = self.session(session_id)
        seq = self._next_seq(session)
        await self._emit(session, BINARY, struct.pack(">HB", seq, op) + body)
        return seq

    def _next_seq(self, session: FakeVoiceSession) -> int:
        session.seq = (session.seq + 1) % (1 << 16)
        session.sent += 1
        return session.seq

    async def _emit(self, session: FakeVoiceSession, opcode: int, frame: bytes) -> None:
        self._buffer(session, opcode, frame)
        conn = session.conn
        if conn is not None and session.live.is_set():
            with contextlib.suppress(ConnectionDropped, ConnectionError):
                await conn.send_frame(opcode, frame)

    def _buffer(self, session: FakeVoiceSession, opcode: int, frame: bytes) -> None:
        session.buffer.append((session.sent, opcode, frame))
        while len(session.buffer) > self.replay_size:
            session.buffer.popleft()

    def _emit_now(self, session: FakeVoiceSession, opcode: int, frame: bytes) -> None:
        """Buffer and write a numbered frame at once (no wait: never interleaved)."""
        self._buffer(session, opcode, frame)
        conn = session.conn
        if conn is not None and session.live.is_set():
            conn.write_frame(opcode, frame)

    # -- faults -----------------------------------------------------------------------

    async def close_session(
        self, session_id: str, code: int | None, reason: str = "", *, timeout: float = 5.0
    ) -> None:
        """Close the session's live connection with ``code`` (a close frame).

        Waits (at most ``timeout`` s) for the session to have a live connection, so a
        fault is never silently applied to a connection that is already gone.
        """
        check_close_frame(code, reason)  # before anything changes
        session = await self.wait_live(session_id, timeout)
        session.live.clear()
        assert session.conn is not None
        conn = session.conn
        if code in ENDING_CODES:  # the voice session is over: its token with it
            self._end(session)
        await conn.close(code, reason)

    async def drop(self, session_id: str, *, timeout: float = 5.0) -> None:
        """Fail the session's live TCP connection with no close frame (see ``reset()``);
        waits for a live connection as :meth:`close_session` does."""
        session = await self.wait_live(session_id, timeout)
        session.live.clear()
        assert session.conn is not None
        await session.conn.reset()

    def stop_acking(self, session_id: str, *, permanently: bool = False) -> None:
        """Stop answering heartbeats on the session's current connection (a zombie
        connection), or on every connection from now on when ``permanently``."""
        session = self.session(session_id)
        session.mute = session.conn
        if permanently:
            session.acking = False

    def stop_reading(self, session_id: str, *, permanently: bool = False) -> None:
        """Stop reading the session's current connection (a gateway that hangs: no
        ACKs, and the client's writes block once the buffers are full), or every
        connection of the session from now on, right after it authenticates."""
        session = self.session(session_id)
        if permanently:
            session.reading = False
        if session.conn is not None:
            session.conn.stop_reading()

    def resume_acking(self, session_id: str) -> None:
        """Answer the session's heartbeats again."""
        session = self.session(session_id)
        session.acking = True
        session.mute = None

    def delay_acks(self, session_id: str, seconds: float) -> None:
        """Answer the session's heartbeats ``seconds`` late."""
        self.session(session_id).ack_delay = seconds

    def expire(self, session_id: str) -> None:
        """Forget the session's replay buffer: its next RESUME is refused with 4006."""
        self.session(session_id).expired = True

    async def send_unknown(
        self, session_id: str, op: int = 18, data: Any = None, *, timeout: float = 5.0
    ) -> None:
        """Send an op the client must ignore (undocumented ops 15/18/20 by default 18).

        Like every unnumbered send here, it waits (at most ``timeout`` s) for the
        session's live connection, so right after a fault it reaches the resumed one.
        """
        await self._send_live(
            session_id, {"op": op, "d": {"flags": 2} if data is None else data}, timeout
        )

    async def request_heartbeat(self, session_id: str, *, timeout: float = 5.0) -> None:
        """Send op 3 to the client: it must heartbeat at once."""
        await self._send_live(session_id, {"op": 3, "d": None}, timeout)

    async def _send_live(self, session_id: str, message: Any, timeout: float) -> None:
        session = await self.wait_live(session_id, timeout)
        assert session.conn is not None
        await session.conn.send_json(message)

    def reject_handshakes(self, status: int) -> None:
        """Answer new opening handshakes with HTTP ``status``."""
        self.server.reject_handshakes(status)

    def stall_handshakes(self) -> None:
        """Never answer new opening handshakes."""
        self.server.stall_handshakes()

    def accept_handshakes(self) -> None:
        """Answer opening handshakes normally again."""
        self.server.accept_handshakes()

    # -- the protocol -----------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        interval_ms = max(1, round(self.heartbeat_interval * 1000))  # an integer, as Discord's
        await conn.send_json({"op": 8, "d": {"v": 8, "heartbeat_interval": interval_ms}})
        state = _ConnectionState(conn, time.monotonic())
        try:
            while True:
                message = await self._next_message(state)
                if message is None:
                    continue
                if state.closing:
                    # Closed by us: what the client sent before it saw the close still counts.
                    if state.session is not None and (
                        message[0] == BINARY or isinstance(message[1], dict)
                    ):
                        self._record_late(state, message)
                    continue
                try:
                    await self._dispatch(state, *message)
                except ConnectionDropped:
                    # An answer could not be sent: the connection is going. What the
                    # client sent before it saw that still counts: read on, to the end.
                    state.closing = True
        except ConnectionDropped:
            return
        finally:
            _log_ending(state)
            session = state.session
            if session is not None and session.conn is conn:
                session.live.clear()
                self._connection_lost(session, conn)

    async def _next_message(self, state: _ConnectionState) -> tuple[int, Any] | None:
        """The next ``(opcode, message)`` (JSON decoded for text), or ``None`` on a timeout."""
        conn = state.conn
        limit = self.heartbeat_timeout_factor * self.heartbeat_interval
        remaining = state.last_heartbeat + limit - time.monotonic()
        if remaining <= 0 and not state.closing:
            if state.session is not None:
                self._end(state.session)
            await self._close(state, 4009, "heartbeat timeout")
            return None
        try:
            opcode, data = await conn.receive(timeout=remaining if not state.closing else None)
        except asyncio.TimeoutError:
            return None
        if opcode == BINARY:
            return BINARY, data
        try:
            return TEXT, json.loads(data)
        except ValueError:
            return TEXT, None

    async def _close(self, state: _ConnectionState, code: int, reason: str) -> None:
        state.closing = True
        await state.conn.close(code, reason)

    def _record_late(self, state: _ConnectionState, message: tuple[int, Any]) -> None:
        opcode, value = message
        assert state.session is not None
        if opcode == BINARY:
            self._record(state.session, (value[0] if value else -1, value[1:]))
        elif value.get("op") not in (0, 1, 3, 7):
            self._record(state.session, (value.get("op"), value.get("d")))

    async def _dispatch(self, state: _ConnectionState, opcode: int, message: Any) -> None:
        conn, session = state.conn, state.session
        if opcode == BINARY:
            if session is None:
                await self._close(state, 4003, "not authenticated")
            else:
                self._record(session, (message[0] if message else -1, message[1:]))
                self._dave_binary(session, message)
            return
        if not isinstance(message, dict) or "op" not in message:
            await self._close(state, 4002, "failed to decode payload")
            return
        op, payload = message["op"], message.get("d")
        if op not in _KNOWN_CLIENT_OPS:
            await self._close(state, 4001, "unknown opcode")
        elif op == 3:
            refusal = voice_rules.check_heartbeat(payload) if self.strict else None
            if refusal is not None:
                await self._close(state, *refusal)
                return
            state.last_heartbeat = time.monotonic()
            await self._heartbeat(conn, session, payload)
        elif session is None:
            state.session = await self._authenticate(conn, op, payload)
            if state.session is None:
                state.closing = True
        elif op in (0, 7):
            await self._close(state, 4005, "already authenticated")
        elif op == 1:
            refusal = (
                voice_rules.check_select_protocol(payload, self.modes) if self.strict else None
            )
            if refusal is not None:
                await self._close(state, *refusal)
                return
            await self._select_protocol(conn, session, payload)
        else:
            self._record(session, (op, payload))
            if op in (23, 31):
                self._dave_json(session, op, payload)
            elif op == 5:
                self._relay_speaking(session, payload)

    def _relay_speaking(self, session: FakeVoiceSession, payload: Any) -> None:
        """As Discord does: a member's SPEAKING goes to the others in its channel, with
        its user id and ssrc."""
        if not session.joined or not isinstance(payload, dict):
            return
        speaking = {"user_id": session.user_id, "ssrc": session.ssrc}
        speaking["speaking"] = payload.get("speaking", 0)
        others = [
            member
            for (server_id, _), member in self._members.items()
            if server_id == session.server_id and member is not session
        ]
        for member in others:
            # Written without waiting: a member that does not read must not stall the
            # speaker's handler (and so its heartbeats).
            seq = self._next_seq(member)
            message = {"op": 5, "seq": seq, "d": speaking}
            self._emit_now(member, TEXT, json.dumps(message, separators=(",", ":")).encode())

    def _record(self, session: FakeVoiceSession, message: tuple[int, Any]) -> None:
        if self.keep_received:
            session.received.append(message)
        self.received_by_user.setdefault(session.user_id, []).append(message)
        self._arrived.set()

    async def wait_received(
        self, user_id: str | int, op: int, *, count: int = 1, timeout: float = 5.0
    ) -> list[Any]:
        """Wait until ``user_id`` has sent ``count`` messages with ``op`` (across its
        sessions; heartbeats and handshakes are not recorded) and return their ``d``.

        Raises:
            TimeoutError: (``asyncio.TimeoutError``) not within ``timeout`` seconds;
                the message says how many came.
        """
        user = str(user_id)  # a snowflake, given as the int it is, is the same user

        def sent() -> list[Any]:
            return [d for o, d in self.received_by_user.get(user, []) if o == op]

        async def arrival() -> list[Any]:
            while len(found := sent()) < count:
                self._arrived.clear()
                await self._arrived.wait()
            return found[:count]

        try:
            return await asyncio.wait_for(arrival(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"user {user} sent {len(sent())} of {count} op {op} message(s) within {timeout}s"
            ) from None

    async def _authenticate(
        self, conn: ServerConnection, op: int, payload: Any
    ) -> FakeVoiceSession | None:
        if not isinstance(payload, dict):
            await conn.close(4002, "failed to decode payload")
            return None
        if op == 0:
            return await self._identify(conn, payload)
        if op == 7:
            return await self._resume(conn, payload)
        await conn.close(4003, "not authenticated")
        return None

    async def _identify(
        self, conn: ServerConnection, payload: dict[str, Any]
    ) -> FakeVoiceSession | None:
        try:
            session_id = str(payload["session_id"])
            user_id = str(payload["user_id"])
            token = str(payload["token"])
            server_id = str(payload["server_id"])
        except KeyError:
            await conn.close(4020, "bad request")
            return None
        if not (_SNOWFLAKE.fullmatch(user_id) and _SNOWFLAKE.fullmatch(server_id)):
            await conn.close(4020, "bad request: ids are snowflakes")
            return None
        if self.valid_tokens is not None and token not in self.valid_tokens:
            await conn.close(4004, "authentication failed")
            return None
        if token in self.spent_tokens:
            log.info("#%s user %s: a token whose voice session ended: 4006", conn.id, user_id)
            await conn.close(4006, "session no longer valid")
            return None
        dave = _dave_offered(payload)
        if not dave and self.require_dave:
            await conn.close(DAVE_REQUIRED, "E2EE/DAVE protocol required")
            return None
        old = self.sessions.get(session_id)
        if old is not None and old.conn is not None and old.conn is not conn:
            await _retire(old.conn)
        member = self._members.get((server_id, int(user_id)))
        if old is not None and old is not member:
            self._leave(old)
        self._leave(member)
        self.spent_tokens.discard(token)  # the one it replaced, if the same, goes on
        session = FakeVoiceSession(session_id, user_id, token, server_id, dave)
        session.generation = 0 if old is None else old.generation + 1
        self.sessions[session_id] = session
        self.identifies += 1
        session.conn = conn
        # Quietly: a connection closing under it is still this session's, and what
        # its client sent before the close is still recorded.
        ip, port = self.udp.address
        session.ssrc = 1000 + len(self.sessions)
        ready = {"ssrc": session.ssrc, "ip": ip, "port": port}
        await _send_quietly(conn, {"op": 2, "d": {**ready, "modes": list(self.modes)}})
        log.info("#%s user %s identified (server %s, DAVE %s)", conn.id, user_id, server_id,
                 "offered" if dave else "not offered")  # fmt: skip
        session.live.set()
        if old is not None and not old.reading:
            session.reading = False
            conn.stop_reading()
        return session

    async def _resume(
        self, conn: ServerConnection, payload: dict[str, Any]
    ) -> FakeVoiceSession | None:
        session = self.sessions.get(str(payload.get("session_id")))
        seq_ack = payload.get("seq_ack", -1)
        replay = None
        if session is not None and not session.expired and payload.get("token") == session.token:
            replay = self._replay_after(session, seq_ack)
        if session is None or replay is None:
            self.resumes_refused += 1
            if session is not None and payload.get("token") == session.token:
                self._end(session)
            await conn.close(4006, "session no longer valid")
            return None
        if session.conn is not None and session.conn is not conn:
            await _retire(session.conn)
        session.conn = conn
        session.seq_ack = seq_ack
        session.resumes += 1
        self.resumes += 1
        await _send_quietly(conn, {"op": 9, "d": None})
        # Written in one go, with no wait: a message numbered meanwhile would be in
        # neither the replay nor the live stream.
        replay = self._replay_after(session, seq_ack)
        if replay is None:  # the buffer overflowed meanwhile
            await conn.close(4006, "session no longer valid")
            return None
        for _, opcode, frame in replay:
            session.replayed += 1
            self.replayed += 1
            conn.write_frame(opcode, frame)
        log.info("#%s user %s resumed (%s replayed)", conn.id, session.user_id, len(replay))
        session.live.set()
        if not session.reading:
            conn.stop_reading()
        return session

    @staticmethod
    def _replay_after(
        session: FakeVoiceSession, seq_ack: int
    ) -> list[tuple[int, int, bytes]] | None:
        """Buffered messages after ``seq_ack``, or ``None`` if some are gone."""
        buffer = list(session.buffer)
        if seq_ack == session.seq and (seq_ack != -1 or session.sent == 0):
            return []
        if seq_ack == -1:
            return buffer if buffer and buffer[0][0] == 1 else ([] if session.sent == 0 else None)
        for index in range(len(buffer) - 1, -1, -1):
            counter = buffer[index][0]
            if counter % (1 << 16) == seq_ack:
                return buffer[index + 1 :]
        return None

    async def _heartbeat(
        self, conn: ServerConnection, session: FakeVoiceSession | None, payload: Any
    ) -> None:
        data = payload if isinstance(payload, dict) else {}
        reply = {"op": 6, "d": {"t": data.get("t")}}
        if session is not None:
            session.heartbeats += 1
            if isinstance(data.get("seq_ack"), int):
                session.seq_ack = data["seq_ack"]
            if not session.acking or conn is session.mute:
                return
            if session.ack_delay:
                # Late, without holding up the client's other messages.
                asyncio.get_running_loop().call_later(
                    session.ack_delay, lambda: self._late(_send_quietly(conn, reply))
                )
                return
        await conn.send_json(reply)

    def _late(self, sending: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(sending)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- DAVE ---------------------------------------------------------------------------

    def dave_channel(self, server_id: str) -> DaveChannel:
        """The DAVE state of ``server_id``'s voice channel (made on first use, so a
        test may set it up before anyone joins). Its user ids are ints.

        Raises:
            TypeError: ``server_id`` is not a str (an int would be another channel).
        """
        if not isinstance(server_id, str):
            raise TypeError(f"server_id is a str of digits, got {type(server_id).__name__}")
        channel = self.channels.get(server_id)
        if channel is None:
            channel_id = int(self.channel_ids.get(server_id, server_id))
            channel = DaveChannel(channel_id, require_dave=self.require_dave)
            self.channels[server_id] = channel
        return channel

    def corrupt_next_commit(self, session_id: str) -> None:
        """Corrupt the next commit (or welcome) the session is sent: its client must
        flag it (op 31) and start over."""
        session = self.session(session_id)
        self.dave_channel(session.server_id).corrupt_next_commit(int(session.user_id))

    def send_stale_commit(self, session_id: str) -> None:
        """Send the session the previous epoch's commit again (a state gone stale)."""
        session = self.session(session_id)
        channel = self.dave_channel(session.server_id)
        self._run_dave(session.server_id, channel.stale_commit(int(session.user_id)))

    def hold_transitions(self, server_id: str, hold: bool = True) -> None:
        """Execute no DAVE transition in the channel (``hold=False``: execute those
        that waited, and carry on as usual)."""
        channel = self.dave_channel(server_id)
        if hold:
            channel.hold_transitions = True
        else:
            self._run_dave(server_id, channel.release_transitions())

    def ignore_key_packages(self, server_id: str, user_id: str) -> None:
        """Drop ``user_id``'s key packages in ``server_id``'s channel, as if its client
        never sent one (call it before the client connects, or at any time)."""
        self.dave_channel(server_id).ignored_key_packages.add(int(user_id))

    async def _select_protocol(
        self, conn: ServerConnection, session: FakeVoiceSession, payload: Any
    ) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        mode = data.get("mode", self.modes[0]) if isinstance(data, dict) else self.modes[0]
        session.selected = data if isinstance(data, dict) else None
        channel = self.dave_channel(session.server_id)
        description = {
            "mode": mode,
            "secret_key": list(range(32)),
            "dave_protocol_version": channel.version_for(dave=session.dave),
        }
        await conn.send_json({"op": 4, "d": description})
        if not session.joined:
            session.joined = True
            self._members[(session.server_id, int(session.user_id))] = session
            self._run_dave(session.server_id, channel.join(int(session.user_id), dave=session.dave))

    def _dave_binary(self, session: FakeVoiceSession, message: bytes) -> None:
        if not session.joined or not message:
            return
        channel, user = self.dave_channel(session.server_id), int(session.user_id)
        if message[0] == 26:
            self._run_dave(session.server_id, channel.key_package(user, message[1:]))
        elif message[0] == 28:
            self._run_dave(session.server_id, channel.commit_welcome(user, message[1:]))

    def _dave_json(self, session: FakeVoiceSession, op: int, payload: Any) -> None:
        tid = payload.get("transition_id") if isinstance(payload, dict) else None
        if not session.joined or not isinstance(tid, int):
            return
        channel, user = self.dave_channel(session.server_id), int(session.user_id)
        if op == 23:
            self._run_dave(session.server_id, channel.transition_ready(user, tid))
        else:
            self._run_dave(session.server_id, channel.invalid_commit_welcome(user, tid))

    def _run_dave(self, server_id: str, outputs: list[Output]) -> None:
        """Send what the channel decided, numbered, in order, all at once."""
        for output in outputs:
            if isinstance(output, ArmTimeout):
                timed_out = functools.partial(self._timed_out, server_id, output.transition_id)
                self._later(self.transition_timeout, timed_out)
                continue
            if isinstance(output, ArmHoldTimeout):
                held = functools.partial(self._hold_timed_out, server_id, output.hold_id)
                self._later(self.transition_timeout, held)
                continue
            session = self._members.get((server_id, output.user_id))
            if session is None:
                continue
            seq = self._next_seq(session)
            if isinstance(output.data, bytes):
                self._emit_now(session, BINARY, struct.pack(">HB", seq, output.op) + output.data)
            else:
                message = {"op": output.op, "seq": seq, "d": output.data}
                self._emit_now(session, TEXT, json.dumps(message, separators=(",", ":")).encode())

    def _timed_out(self, server_id: str, tid: int) -> None:
        self._run_dave(server_id, self.dave_channel(server_id).transition_timed_out(tid))

    def _hold_timed_out(self, server_id: str, hold_id: int) -> None:
        self._run_dave(server_id, self.dave_channel(server_id).hold_timed_out(hold_id))

    def _connection_lost(self, session: FakeVoiceSession, conn: ServerConnection) -> None:
        """A member's connection ended: with 1000 it left; otherwise it leaves unless
        it resumes within ``leave_grace`` seconds."""
        if not session.joined:
            return
        if conn.close_received is not None and conn.close_received[0] == 1000:
            self._leave(session)
            return

        def leave_unless_resumed() -> None:
            if session.conn is conn:
                self._leave(session)

        self._later(self.leave_grace, leave_unless_resumed)

    def _end(self, session: FakeVoiceSession) -> None:
        """The voice session is over: it cannot be resumed, its token opens no other
        (as on Discord, a new session needs a new VOICE_SERVER_UPDATE's token)."""
        session.expired = True
        if self.strict:
            self.spent_tokens.add(session.token)
        self._leave(session)

    def fresh_token(self, user_id: str) -> str:
        """A new token for ``user_id``'s next session, as a VOICE_SERVER_UPDATE brings
        (accepted by ``valid_tokens`` too)."""
        token = f"token-{user_id}-{secrets.token_hex(8)}"
        if self.valid_tokens is not None:
            self.valid_tokens.add(token)
        return token

    def _leave(self, session: FakeVoiceSession | None) -> None:
        """The session leaves its channel; it can no longer be resumed (4006)."""
        if session is None:
            return
        if self.strict and not session.expired:
            self.spent_tokens.add(session.token)
        if not session.joined:
            session.expired = True
            return
        session.joined = False
        session.expired = True
        key = (session.server_id, int(session.user_id))
        if self._members.get(key) is session:
            del self._members[key]
        channel = self.dave_channel(session.server_id)
        self._run_dave(session.server_id, channel.leave(int(session.user_id)))

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        if self._stopping:
            return

        def fire() -> None:
            self._timers.discard(handle)
            callback()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)


def _dave_offered(identify: dict[str, Any]) -> bool:
    version = identify.get("max_dave_protocol_version", 0)
    return isinstance(version, int) and not isinstance(version, bool) and version >= 1


def _log_ending(state: _ConnectionState) -> None:
    """A log line for an ending the client chose (ours are logged where we close)."""
    if state.closing or state.conn.ended_by_server:
        return
    conn, who = state.conn, "" if state.session is None else f" user {state.session.user_id}"
    if conn.close_received is not None:
        code, reason = conn.close_received
        log.info("#%s%s closed by the client: %s %s", conn.id, who, code, reason)
    else:
        log.info("#%s%s lost its connection (no close frame)", conn.id, who)
