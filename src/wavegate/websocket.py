"""The Websocket manager: one connection, every ending turned into one signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from .codec import DEFAULT, JSONCodec
from .packets import (
    WebsocketPacket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
)
from .policy import DISCORD_VOICE, ClosePolicy
from .redact import (
    ambiguous,
    redact_url,
    scrub_exception,
    scrub_text,
    secrets_in,
    url_problem,
)
from .signals import (
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    PayloadError,
    RedactedError,
    Signal,
)
from .transport import (
    BINARY,
    TEXT,
    ConnectFailed,
    Connector,
    Transport,
    TransportClosed,
    TransportOptions,
    default_transport,
    get_connector,
    proxy_hint,
    tls_mismatch_hint,
)

log = logging.getLogger("wavegate.websocket")


class WebsocketState(IntEnum):
    """Where a :class:`Websocket` is in its life (the reference API's values; prints
    as its name)."""

    CONNECTED = 0
    CONNECTING = 1
    DISCONNECTED = 2
    DISCONNECTING = 3

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


_DEFAULTS = TransportOptions()
"""The one place connection options get their defaults."""

_CONNECTED = WebsocketState.CONNECTED
_CONNECTING = WebsocketState.CONNECTING
_DISCONNECTED = WebsocketState.DISCONNECTED
_DISCONNECTING = WebsocketState.DISCONNECTING


class Trigger(str, Enum):
    """What changes a :class:`Websocket`'s state."""

    CONNECT = "connect"
    """``connect()`` starts an opening."""
    OPENED = "opened"
    """The opening handshake succeeded."""
    OPEN_FAILED = "open_failed"
    """The opening failed, or was abandoned."""
    DISCONNECT = "disconnect"
    """``disconnect()`` was called (while connecting or connected)."""
    CLOSED = "closed"
    """Our close, or the abandoned opening, is over."""
    LOST = "lost"
    """The connection ended: the peer closed it, the network failed, keepalive expired."""


TRANSITIONS: Mapping[WebsocketState, Mapping[Trigger, WebsocketState]] = {
    _DISCONNECTED: {Trigger.CONNECT: _CONNECTING},
    _CONNECTING: {
        Trigger.OPENED: _CONNECTED,
        Trigger.OPEN_FAILED: _DISCONNECTED,
        Trigger.DISCONNECT: _DISCONNECTING,
    },
    _CONNECTED: {Trigger.DISCONNECT: _DISCONNECTING, Trigger.LOST: _DISCONNECTED},
    _DISCONNECTING: {Trigger.CLOSED: _DISCONNECTED},
}
"""Every state change a :class:`Websocket` makes, and what triggers it (h11-style)."""

_FINISHED = {
    _CONNECTING: Trigger.OPEN_FAILED,
    _CONNECTED: Trigger.LOST,
    _DISCONNECTING: Trigger.CLOSED,
}
"""How a connection that is over leaves each state."""

_MAX_BACKLOG = 4096
"""Frames a failed send may read ahead while looking for the peer's close frame."""


@dataclass(eq=False)
class _Connection:
    """One ``connect()`` and the connection it opened: everything about how it ends.

    ``ending`` is decided once, by whoever observes it first; a local ``disconnect()``
    decides it at the moment it is called. ``backlog`` holds frames
    that arrived before the end but were read by a send looking for the peer's close
    frame: ``receive()`` returns them before the signal.
    """

    url: str
    secrets: frozenset[str]
    settled: asyncio.Future[None]
    """Resolved when the opening is over (connected, failed or abandoned)."""
    finished: asyncio.Future[None]
    """Resolved when the connection is over (``DISCONNECTED``)."""
    opener: asyncio.Task[Transport] | None = None
    transport: Transport | None = None
    ending: Signal | None = None
    verdict: asyncio.Future[None] | None = None
    """Created by a send waiting for the reader to decide ``ending``."""
    backlog: deque[str | bytes] | None = None
    """Made when first read into: most connections never read ahead, and an empty
    deque is a 600-byte block."""
    take: Callable[[], WebsocketPacket | None] | None = None
    """The transport's taker (see ``Transport.taker``), while connected."""


@dataclass(frozen=True, slots=True)
class WebsocketStats:
    """Counters since the ``Websocket`` was created (data frames only)."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int


_MISPARSED = (
    "its port is empty and an @ follows (a password with /, ?, # or @ in it must be "
    "percent-encoded)"
)


_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_AROUND = "".join(map(chr, range(0x21)))  # C0 controls and space, as WHATWG strips
_CHAR_NAMES = {" ": "a space", "\t": "a tab", "\n": "a line feed", "\r": "a carriage return"}


def check_url(url: str) -> str:
    """``url`` without the spaces and control characters around it (as a line read
    from a file has: browsers drop them too); raise :class:`InvalidURLError` unless it
    is a ``ws://`` or ``wss://`` URL with a host, in words that never show its secrets."""
    if not isinstance(url, str):
        raise InvalidURLError(f"url must be a str, got {type(url).__name__}")
    lead = len(url) - len(url.lstrip(_AROUND))  # positions are told in what was given
    url = url.strip(_AROUND)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        why = url_problem(exc, url)
    else:
        why = _MISPARSED if ambiguous(url) else ""
    if why:
        # Raised out here so that the parser's error, which may quote a piece of the
        # password, is not even its __context__.
        raise InvalidURLError(f"malformed URL {redact_url(url)!r}: {why}")
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURLError(f"URL scheme must be ws:// or wss://, got {redact_url(url)!r}")
    inside = _UNSAFE.search(url)
    if inside is not None:
        # Python's parser drops tab, CR and LF unseen, and a space breaks the request
        # line (or is encoded, depending on the transport).
        char = inside.group()
        shown = redact_url(_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", url))
        raise InvalidURLError(
            f"URL has {_CHAR_NAMES.get(char, f'control character U+{ord(char):04X}')} at "
            f"position {lead + inside.start()} (percent-encode it: a space is %20): {shown!r}"
        )
    if parts.fragment or url.endswith("#"):
        raise InvalidURLError(
            f"a websocket URL has no #fragment (RFC 6455 3), got {redact_url(url)!r}"
        )
    if not parts.hostname:
        raise InvalidURLError(f"URL has no host: {redact_url(url)!r}")
    return url


def _scrubbed(exc: InvalidURLError, secrets: frozenset[str]) -> InvalidURLError:
    """``exc`` as it may be shown: its text (a transport may quote the URL) and its
    cause chain without the URL's secrets."""
    clean = InvalidURLError(scrub_text(str(exc), secrets))
    clean.__cause__ = scrub_exception(exc.__cause__, secrets, RedactedError)
    clean.__suppress_context__ = True
    return clean


def _resolve(conn: _Connection, name: str) -> None:
    """Wake whoever waits on ``conn``'s future ``name``; a ``verdict`` is used once."""
    future: asyncio.Future[None] | None = getattr(conn, name)
    if name == "verdict":
        conn.verdict = None
    if future is not None and not future.done():
        future.set_result(None)


def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+; False before)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())


def _scrub_in_place(ended: TransportClosed | ConnectFailed, secrets: frozenset[str]) -> None:
    """Scrub the transport's report of an ending itself: whatever may later chain it
    (Python 3.10 leaks the exception being handled into the caller's next raise) then
    finds nothing secret in it."""
    if not secrets:
        return
    ended.reason = scrub_text(ended.reason, secrets)
    ended.args = (ended.reason,)
    ended.__cause__ = scrub_exception(ended.__cause__, secrets, RedactedError)
    ended.__context__ = scrub_exception(ended.__context__, secrets, RedactedError)


def check_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` unless ``code`` and ``reason`` may be sent in a close frame
    by an application (1000 or 3000..4999; at most 123 bytes of reason)."""
    if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
        raise ValueError(f"close code must be 1000 or in 3000..4999, got {code!r}")
    if len(reason.encode()) > 123:
        raise ValueError("close reason must be at most 123 bytes of UTF-8")


class Websocket:
    """A websocket connection that turns every way it can end into one signal.

    ``connect()``, ``receive()`` and ``send_*()`` raise :class:`DisconnectSignal`
    (stop), :class:`ReconnectSignal` (open a fresh session) or :class:`ResumeSignal`
    (re-open and continue the session), chosen by ``policy``. After a signal the state
    is ``DISCONNECTED`` and ``connect()`` may be called again.

    Args:
        policy: the close-code policy (default :data:`~wavegate.DISCORD_VOICE`).
        open_timeout: seconds for the whole opening handshake; ``None`` waits forever.
        close_timeout: seconds to wait for the peer to answer our close frame.
        ping_interval: seconds between keepalive pings (aiohttp: seconds of silence
            before one); ``None`` disables them. On picows a ping waits for the last
            one's pong, so with ``ping_timeout`` longer than this a slow pong delays
            the next ping (by at most an interval).
        ping_timeout: seconds to wait for the pong (aiohttp: for anything) before the
            connection counts as dead (``KEEPALIVE_TIMEOUT``): a peer gone silent is
            found within about ``ping_interval + ping_timeout``. Must be a number; to
            turn the keepalive off, pass ``ping_interval=None`` (``None`` is then
            taken here too).
        max_size: largest message accepted, in bytes (an int up to 2**62); a larger
            one closes the connection with 1009. ``None`` means no limit.
        json_codec: JSON functions for ``send_json`` and JSON receive mode (orjson
            when installed).
        receive_mode: ``"json"`` (text frames -> :class:`WebsocketPacketJSON`) or
            ``"text"`` (text frames -> :class:`WebsocketPacketText`).
        headers: extra HTTP headers for the opening handshake: HTTP token names, ``str``
            values without line breaks or other control characters; not the
            handshake's own (``Sec-WebSocket-*``, ``Upgrade``, ``Connection``).
        subprotocols: subprotocol names to offer, in order of preference
            (``Sec-WebSocket-Protocol``); :attr:`subprotocol` is the server's choice.
        ssl: ``True`` (verify, default), ``False`` (no verification) or an SSLContext,
            for the server and for an ``https://`` proxy alike. Each transport makes
            one context for ``True`` per process (picows at first use, aiohttp at its
            import; changes to ``SSL_CERT_FILE``/``SSL_CERT_DIR`` after that are not
            seen): it holds the system's CA store, ~850 KiB and ~18 ms to load.
        proxy: an ``http://`` or ``https://`` proxy URL (credentials in it are sent,
            never logged). A ``wss://`` server through an ``https://`` proxy (TLS in
            TLS) needs Python 3.11 on aiohttp.
        compression: negotiate permessage-deflate (aiohttp only).
        read_buffer_size: picows: the read buffer a connection starts with, in bytes
            (2048 to 16 MiB). It doubles whenever a read nearly fills it and never
            shrinks: 2048 keeps each idle connection 2 KiB smaller, and the default
            (4096) read small messages a few percent faster. aiohttp sizes its reads
            itself.
        transport: the transport library, ``"picows"`` or ``"aiohttp"``; by default
            picows (with its compiled listener when it was built), or aiohttp when
            ``compression`` is asked for. :func:`wavegate.transports` says which is
            which here.

    Raises:
        TypeError, ValueError: an option that makes no sense (naming it, never a
            secret).
    """

    def __init__(
        self,
        *,
        policy: ClosePolicy = DISCORD_VOICE,
        open_timeout: float | None = _DEFAULTS.open_timeout,
        close_timeout: float = _DEFAULTS.close_timeout,
        ping_interval: float | None = _DEFAULTS.ping_interval,
        ping_timeout: float = _DEFAULTS.ping_timeout,
        max_size: int | None = _DEFAULTS.max_size,
        json_codec: JSONCodec = DEFAULT,
        receive_mode: Literal["json", "text"] = "json",
        headers: Mapping[str, str] | None = None,
        ssl: ssl_module.SSLContext | bool = _DEFAULTS.ssl,
        proxy: str | None = _DEFAULTS.proxy,
        compression: bool = _DEFAULTS.compression,
        transport: str | None = None,
        read_buffer_size: int = _DEFAULTS.read_buffer_size,
        subprotocols: Sequence[str] = (),
    ) -> None:
        if not isinstance(policy, ClosePolicy):
            raise TypeError(f"policy must be a ClosePolicy, got {type(policy).__name__}")
        if receive_mode not in ("json", "text"):
            raise ValueError(f"receive_mode must be 'json' or 'text', got {receive_mode!r}")
        if not isinstance(json_codec, JSONCodec):
            raise TypeError(f"json_codec must be a JSONCodec, got {type(json_codec).__name__}")
        self._policy = policy
        self._options = TransportOptions(
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_size=max_size,
            headers={} if headers is None else headers,
            ssl=ssl,
            proxy=proxy,
            compression=compression,
            read_buffer_size=read_buffer_size,
            subprotocols=subprotocols,  # type: ignore[arg-type]  # checked: made a tuple
        )
        if compression and transport == "picows":
            raise ValueError(
                "compression (permessage-deflate) needs transport='aiohttp': picows has none"
            )
        self._connector: Connector = get_connector(
            default_transport(compression=compression) if transport is None else transport
        )
        self._loads = json_codec.loads
        self._dumps = json_codec.dumps
        self._decode_json = receive_mode == "json"
        self._state = WebsocketState.DISCONNECTED
        self._conn: _Connection | None = None
        """The current connection, or the last one."""
        self._receiving = False
        self._take: Callable[[], WebsocketPacket | None] | None = None
        """``conn.take`` while receive() may use it without looking further."""
        self._draining: asyncio.Future[None] | None = None
        """Set while a failed send reads ahead for the peer's close frame."""
        self._frames_in = 0
        self._frames_out = 0
        self._bytes_in = 0
        self._bytes_out = 0

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> WebsocketState:
        """The current :class:`WebsocketState`."""
        return self._state

    @property
    def connected(self) -> bool:
        """``True`` iff the state is ``CONNECTED``."""
        return self._state is WebsocketState.CONNECTED

    @property
    def connecting(self) -> bool:
        """``True`` iff the state is ``CONNECTING``."""
        return self._state is WebsocketState.CONNECTING

    @property
    def disconnected(self) -> bool:
        """``True`` iff the state is ``DISCONNECTED``."""
        return self._state is WebsocketState.DISCONNECTED

    @property
    def disconnecting(self) -> bool:
        """``True`` iff the state is ``DISCONNECTING``."""
        return self._state is WebsocketState.DISCONNECTING

    @property
    def policy(self) -> ClosePolicy:
        """The close-code policy in force."""
        return self._policy

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose from ``subprotocols`` while ``CONNECTED``
        (``None``: it chose none, or not connected)."""
        conn = self._conn
        if self._state is not _CONNECTED or conn is None or conn.transport is None:
            return None
        return conn.transport.subprotocol

    @property
    def last_signal(self) -> Signal | None:
        """The signal that ended the last connection, if it has ended."""
        return None if self._conn is None else self._conn.ending

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection end (``None`` if none yet)."""
        end = self.last_signal
        return None if end is None else end.code

    @property
    def close_reason(self) -> str | None:
        """The close reason of the last connection end (``None`` if none yet)."""
        end = self.last_signal
        return None if end is None else end.reason

    @property
    def stats(self) -> WebsocketStats:
        """Frame and byte counters (data frames, both directions)."""
        frames_in, bytes_in = self._frames_in, self._bytes_in
        conn = self._conn
        if conn is not None and conn.transport is not None:
            frames, nbytes = conn.transport.taken()  # not yet counted: still connected
            frames_in += frames
            bytes_in += nbytes
        return WebsocketStats(frames_in, self._frames_out, bytes_in, self._bytes_out)

    def _fire(self, trigger: Trigger) -> None:
        try:
            self._state = TRANSITIONS[self._state][trigger]
        except KeyError:
            message = f"no transition from {self._state.name} on {trigger.value}"
            raise AssertionError(message) from None
        self._refresh_take()

    def _refresh_take(self) -> None:
        """Let ``receive()`` take packets straight from the transport (``_take``) only
        while nothing else has to be looked at: connected, no other reader, no send
        reading ahead, nothing read ahead. Called whenever one of those changes."""
        conn = self._conn
        self._take = (
            conn.take
            if conn is not None
            and conn.transport is not None
            and self._state is _CONNECTED
            and not self._receiving
            and self._draining is None
            and not conn.backlog
            else None
        )

    def __repr__(self) -> str:
        url = "-" if self._conn is None else redact_url(self._conn.url)
        return f"<Websocket {self._state.name} {url} policy={self._policy.name!r}>"

    async def __aenter__(self) -> Websocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- opening ---------------------------------------------------------------------

    async def connect(self, url: str) -> None:
        """Open the connection.

        Raises:
            InvalidURLError: ``url`` is not a ``ws://``/``wss://`` URL (at once).
            RuntimeError: already connected, or connecting to another URL (a
                ``connect()`` to the same URL during an opening shares it).
            ReconnectSignal: the open failed in a way worth retrying (timeout,
                refused, DNS, 5xx/408/429...), per the policy.
            DisconnectSignal: the open failed for good (4xx, bad certificate, a
                handshake that breaks RFC 6455), or ``disconnect()`` was called meanwhile.
        """
        url = check_url(url)
        while self._state is not _DISCONNECTED:
            if self._state is _CONNECTING:
                assert self._conn is not None
                if self._conn.url != url:
                    raise RuntimeError(
                        f"already connecting to {redact_url(self._conn.url)}; call "
                        "disconnect() before connecting elsewhere"
                    )
                await self._wait_opening()  # share the opening in flight
                return
            if self._state is _CONNECTED:
                raise RuntimeError("already connected; call disconnect() before connect()")
            assert self._conn is not None
            await asyncio.shield(self._conn.finished)  # then look again: another caller
        loop = asyncio.get_running_loop()
        options = self._options
        conn = self._conn = _Connection(
            url,
            secrets_in((url, options.proxy), options.headers),
            loop.create_future(),
            loop.create_future(),
        )
        self._fire(Trigger.CONNECT)
        conn.opener = loop.create_task(self._connector(url, options))
        signal = await self._open(conn, conn.opener)
        if signal is not None:
            log.info("connect to %s failed: %s", redact_url(url), signal)
            raise signal

    async def _open(self, conn: _Connection, opener: asyncio.Task[Transport]) -> Signal | None:
        """Await the opening; ``None`` once connected, else the signal to raise."""
        try:
            transport = await opener
        except ConnectFailed as failed:
            # Python 3.10 leaks the exception asyncio was handling when it resumed us
            # into connect()'s raise: the signal may get this report as __context__.
            # Its traceback (our frames and asyncio's, holding the finished opening) is
            # of no use to anyone: the signal's __cause__ is the transport's own error.
            failed.__traceback__ = None
            _scrub_in_place(failed, conn.secrets)
            reason = tls_mismatch_hint(conn.url, failed.event, failed.reason)
            reason = proxy_hint(self._options.proxy, conn.url, failed.event, reason)
            self._record_ending(conn, failed.event, failed.code, reason, False, failed.__cause__)
            if conn.ending is not None:
                conn.ending.retry_after = failed.retry_after
            return self._finish(conn)
        except asyncio.CancelledError:
            if opener.cancelled() and self._state is _DISCONNECTING and not _cancelling():
                return self._finish(conn)  # disconnect() cancelled the opening, not our caller
            try:
                # Shielded: a second cancellation must not leave what opened unclosed.
                await asyncio.shield(self._cancel_opener(opener))
            finally:
                reason = "connect() was cancelled"
                self._record_ending(conn, Event.LOCAL_CLOSE, None, reason, True, None)
                self._finish(conn)
            raise
        except InvalidURLError as exc:  # the transport refused the URL or its options
            invalid = _scrubbed(exc, conn.secrets)
            self._record_ending(conn, Event.CONNECT_ERROR, None, str(invalid), False, exc)
            self._finish(conn)
        except Exception as exc:  # a bug in a transport: shown as it is
            self._record_ending(
                conn, Event.CONNECT_ERROR, None, f"connect() failed: {exc}", False, exc
            )
            self._finish(conn)
            raise
        else:
            return await self._opened(conn, transport)
        # Raised out here, not in the except block: the raw exception, which may quote
        # the URL, must not become its __context__.
        raise invalid

    async def _opened(self, conn: _Connection, transport: Transport) -> Signal | None:
        if self._state is _DISCONNECTING:
            # disconnect() came in the loop turn the opening completed: close what opened.
            assert conn.ending is not None
            try:
                await transport.close(conn.ending.code or 1000, conn.ending.reason)
            finally:
                self._finish(conn)
            return conn.ending
        try:
            conn.take = transport.taker(self._loads, self._decode_json)
        except Exception as exc:  # a bug in a transport: shown as it is
            await transport.abort()
            reason = f"connect() failed: {exc}"
            self._record_ending(conn, Event.CONNECT_ERROR, None, reason, False, exc)
            self._finish(conn)
            raise
        conn.transport = transport
        # The finished opening is not kept: with thousands of connections each held
        # task (and its context) is one more object for the garbage collector to sweep.
        conn.opener = None
        self._fire(Trigger.OPENED)
        conn.settled.set_result(None)
        log.debug("connected to %s", redact_url(conn.url))
        return None

    @staticmethod
    async def _cancel_opener(opener: asyncio.Task[Transport]) -> None:
        opener.cancel()
        await asyncio.wait({opener})
        if not opener.cancelled() and opener.exception() is None:
            # It finished opening just as we were cancelled: close what it opened.
            await opener.result().abort()

    async def _wait_opening(self) -> tuple[_Connection, Transport]:
        """Wait for the opening in flight: the connection, or the signal it ended with."""
        conn = self._conn
        assert conn is not None
        await asyncio.shield(conn.settled)
        if conn is self._conn and self._state is _CONNECTED and conn.transport is not None:
            return conn, conn.transport
        raise self._signal_after_end(conn)

    # -- closing ---------------------------------------------------------------------

    async def disconnect(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; idempotent, bounded by ``close_timeout``.

        A ``receive()`` or a send blocked in another task wakes with
        :class:`DisconnectSignal`. Called while connecting, it abandons the opening (or
        closes the connection that opened meanwhile). Close with a code in 3000..4999
        (for instance 4000) to keep a Discord session resumable: Discord invalidates
        sessions closed with 1000 or 1001. Cancelling it still releases the socket.

        Raises:
            ValueError: ``code`` is not 1000 or in 3000..4999, or ``reason`` is longer
                than 123 bytes.
        """
        check_close(code, reason)
        conn, state = self._conn, self._state
        if conn is None or state is _DISCONNECTED:
            return
        if state is _DISCONNECTING:
            await asyncio.shield(conn.finished)
            return
        self._record_ending(conn, Event.LOCAL_CLOSE, code, reason, True, None)
        self._fire(Trigger.DISCONNECT)
        if state is _CONNECTING:
            assert conn.opener is not None
            conn.opener.cancel()
            await asyncio.shield(conn.finished)
            return
        transport = conn.transport
        assert transport is not None
        try:
            await transport.close(code, reason)
        finally:
            self._finish(conn)
            log.debug("disconnected (code %s)", code)

    def _finish(self, conn: _Connection) -> Signal:
        """The connection is over: DISCONNECTED, every waiter woken; its signal."""
        assert conn.ending is not None
        if conn.transport is not None:
            frames, nbytes = conn.transport.taken()
            self._frames_in += frames
            self._bytes_in += nbytes
        conn.transport = None
        conn.take = None
        # A failed opening's task holds its exception and traceback: not kept through
        # the backoff that follows.
        conn.opener = None
        self._refresh_take()
        if self._state is not _DISCONNECTED and conn is self._conn:
            self._fire(_FINISHED[self._state])
        for name in ("settled", "finished", "verdict"):
            _resolve(conn, name)
        return conn.ending

    # -- endings ---------------------------------------------------------------------

    def _record_ending(
        self,
        conn: _Connection,
        event: Event,
        code: int | None,
        reason: str,
        local: bool,
        cause: BaseException | None,
    ) -> None:
        """Record how ``conn`` ended, once: the first observed ending wins."""
        if conn.ending is not None:
            return
        if event is Event.LOCAL_CLOSE:
            signal: Signal = DisconnectSignal(
                reason, code=code, event=event, initiated_locally=True
            )
        else:
            signal = self._policy.signal_for(
                event,
                code=code,
                reason=scrub_text(reason, conn.secrets),
                initiated_locally=local,
            )
            signal.__cause__ = scrub_exception(cause, conn.secrets, RedactedError)
        conn.ending = signal
        _resolve(conn, "verdict")

    async def _ending_reported(self, conn: _Connection, ended: TransportClosed) -> Signal:
        """The transport reported the end of ``conn``: decide (once), drop the transport
        unless a local close owns it, and return the signal to raise."""
        first = conn.ending is None
        _scrub_in_place(ended, conn.secrets)
        self._record_ending(
            conn, ended.event, ended.code, ended.reason, ended.local, ended.__cause__
        )
        assert conn.ending is not None
        if first:
            log.info("connection ended: %s -> %s", conn.ending, type(conn.ending).__name__)
        transport = conn.transport
        if self._state is _CONNECTED and conn is self._conn:
            self._finish(conn)
            if transport is not None:
                await transport.abort()
        return conn.ending if first else conn.ending.copy()

    def _signal_after_end(self, conn: _Connection | None) -> Signal:
        if conn is not None and conn.ending is not None:
            return conn.ending.copy()
        return DisconnectSignal("not connected; call connect() first", event=Event.NOT_CONNECTED)

    async def _live(self) -> tuple[_Connection, Transport]:
        """The connection to use: the open one, or the one being opened."""
        conn = self._conn
        if self._state is _CONNECTED and conn is not None and conn.transport is not None:
            return conn, conn.transport
        if self._state is _CONNECTING:
            return await self._wait_opening()
        raise self._signal_after_end(conn)

    # -- receiving -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[WebsocketPacket]:
        """``async for packet in ws``: each packet until the connection ends.

        The loop ends quietly on a :class:`DisconnectSignal` (stop for good:
        ``last_signal`` says why). A :class:`ResumeSignal` or :class:`ReconnectSignal`
        is raised, because the caller has to act on it, and so is a
        :class:`PayloadError` (the connection stays usable). Looping over a Websocket
        that was never connected raises its ``DisconnectSignal`` (``NOT_CONNECTED``).
        """
        return self._packets()

    async def _packets(self) -> AsyncIterator[WebsocketPacket]:
        while True:
            try:
                packet = await self.receive()
            except DisconnectSignal as signal:
                if signal.event is Event.NOT_CONNECTED:
                    raise
                return
            yield packet

    async def receive(self) -> WebsocketPacket:
        """Wait for the next packet.

        Every frame that arrived before the connection ended is returned before the
        signal. Cancelling a waiting ``receive()`` loses nothing.

        Returns:
            :class:`WebsocketPacketJSON` for a text frame (``receive_mode="json"``),
            :class:`WebsocketPacketText` (``receive_mode="text"``), or
            :class:`WebsocketPacketBytes` for a binary frame.

        Raises:
            DisconnectSignal, ReconnectSignal, ResumeSignal: the connection ended.
            PayloadError: a text frame was not a JSON object; it carries the raw text
                and the connection stays usable.
            RuntimeError: another task is already in ``receive()``.
        """
        take = self._take
        if take is not None:
            # The hot path (see _refresh_take): a packet the transport already holds,
            # made in C, without awaiting anything.
            packet = take()
            if packet is not None:
                return packet
        if self._receiving:
            raise RuntimeError(
                "receive() is already waiting in another task; only one reader is allowed"
            )
        conn = self._conn
        transport = None if conn is None else conn.transport
        if (
            transport is None
            or self._state is not _CONNECTED
            or self._draining is not None
            or conn.backlog  # type: ignore[union-attr]
        ):
            return await self._receive_slow()
        assert conn is not None
        self._receiving = True
        self._take = None
        try:
            # The transport's recv may be the library's own coroutine.
            data = await transport.recv()
        except BaseException as exc:
            self._reader_left(conn)
            if not isinstance(exc, Exception):
                raise  # cancelled: nothing was taken, nothing ended
            failure = exc
        else:
            # _reader_left() and _packet() inlined: a call is a measurable share here.
            self._receiving = False
            if conn.take is not None:
                self._refresh_take()
            if conn.verdict is not None:
                _resolve(conn, "verdict")
            self._frames_in += 1
            self._bytes_in += len(data)
            if type(data) is bytes:
                return WebsocketPacketBytes(data)
            if self._decode_json:
                try:
                    value = self._loads(data)
                except ValueError:
                    raise PayloadError("text frame is not valid JSON", data) from None  # type: ignore[arg-type]
                if type(value) is dict:
                    return WebsocketPacketJSON(value)
                raise PayloadError("JSON text frame is not an object", data)  # type: ignore[arg-type]
            return WebsocketPacketText(data)  # type: ignore[arg-type]
        # Raised out here, not in the handler: the library's exception is the cause
        # (scrubbed), never a stray __context__.
        raise await self._ending_reported(conn, transport.ending(failure))

    def _reader_left(self, conn: _Connection) -> None:
        self._receiving = False
        self._refresh_take()
        if conn.verdict is not None:
            _resolve(conn, "verdict")  # a send waits for the reader that just left

    async def _receive_slow(self) -> WebsocketPacket:
        """``receive()`` while connecting, while a send reads ahead, or after the end."""
        self._receiving = True
        self._take = None
        try:
            if self._draining is not None:
                await asyncio.shield(self._draining)
            conn = self._conn
            if conn is not None and conn.backlog:
                return self._packet(conn.backlog.popleft())
            conn, transport = await self._live()
            try:
                data = await transport.recv()
            except Exception as exc:
                failure = exc
            else:
                return self._packet(data)
        finally:
            self._receiving = False
            self._refresh_take()
            if conn is not None and conn.verdict is not None:
                _resolve(conn, "verdict")
        raise await self._ending_reported(conn, transport.ending(failure))

    def _packet(self, data: str | bytes) -> WebsocketPacket:
        self._frames_in += 1
        self._bytes_in += len(data)
        if type(data) is bytes:
            return WebsocketPacketBytes(data)
        if not self._decode_json:
            return WebsocketPacketText(data)  # type: ignore[arg-type]
        try:
            value = self._loads(data)
        except ValueError:
            raise PayloadError("text frame is not valid JSON", data) from None  # type: ignore[arg-type]
        if type(value) is not dict:
            raise PayloadError("JSON text frame is not an object", data)  # type: ignore[arg-type]
        return WebsocketPacketJSON(value)

    def hold_keepalive(self) -> None:
        """Stop judging the connection by its keepalive pongs, for as long as you
        deliberately stop calling ``receive()`` (backpressure): the pongs wait unread
        behind the frames you are not reading, and the connection would otherwise be
        taken for dead. Until :meth:`release_keepalive` or the end of the connection."""
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.hold_keepalive(True)

    def release_keepalive(self) -> None:
        """Judge the connection by its keepalive pongs again (see :meth:`hold_keepalive`)."""
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.hold_keepalive(False)

    # -- sending ---------------------------------------------------------------------

    async def writable(self) -> None:
        """Wait until a send would write at once: connected (waiting for a connect in
        flight), with room in the socket's buffer. Cancelling it changes nothing.

        Raises:
            DisconnectSignal, ReconnectSignal, ResumeSignal: the connection ended.
        """
        conn, transport = await self._live()
        try:
            await transport.writable()
        except TransportClosed as ended:
            failure = ended
        else:
            return
        raise await self._send_failed(conn, failure)

    async def _send(self, kind: int, data: bytes) -> None:
        conn = self._conn
        transport = None if conn is None else conn.transport
        if transport is None or self._state is not _CONNECTED:
            conn, transport = await self._live()
        assert conn is not None
        try:
            # Wait for room first, then write the whole frame at once: cancelled while
            # waiting, nothing was written; once written, nothing waits.
            await transport.writable()
            transport.send(kind, data)
        except TransportClosed as ended:
            failure = ended
        else:
            self._frames_out += 1
            self._bytes_out += len(data)
            return
        raise await self._send_failed(conn, failure)

    async def _send_failed(self, conn: _Connection, ended: TransportClosed) -> Signal:
        """A send saw the connection fail. The read side decides how it ended (the
        peer's close frame may still be unread, and frames before it must still be
        delivered); the send's view counts only if the read side cannot tell in time."""
        if conn.ending is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._read_verdict(conn), self._options.close_timeout)
        return await self._ending_reported(conn, ended)

    async def _read_verdict(self, conn: _Connection) -> None:
        """Wait until the read side decides how ``conn`` ended: the task in
        ``receive()`` while there is one, else read ahead into the backlog ourselves."""
        loop = asyncio.get_running_loop()
        while conn.ending is None:
            if self._receiving or self._draining is not None:
                # Woken when the end is decided, or when that reader leaves receive().
                if conn.verdict is None:
                    conn.verdict = loop.create_future()
                await asyncio.shield(conn.verdict)
                continue
            transport = conn.transport
            if transport is None:
                return
            await self._read_ahead(conn, transport)
            return

    async def _read_ahead(self, conn: _Connection, transport: Transport) -> None:
        draining = self._draining = asyncio.get_running_loop().create_future()
        self._take = None
        try:
            backlog = conn.backlog
            if backlog is None:
                backlog = conn.backlog = deque()
            while conn.ending is None and len(backlog) < _MAX_BACKLOG:
                try:
                    backlog.append(await transport.recv())
                except Exception as exc:
                    await self._ending_reported(conn, transport.ending(exc))
        finally:
            self._draining = None
            self._refresh_take()
            draining.set_result(None)

    def encode_json(self, data: dict[str, Any]) -> bytes:
        """``data`` as the UTF-8 JSON text ``send_json`` would send (for
        :meth:`send_text`): encode once, now, and send later.

        Raises:
            TypeError: ``data`` is not a dict.
            EncodeError: the codec cannot encode it (NaN and infinities included).
        """
        if not isinstance(data, dict):
            raise TypeError(
                f"a JSON message must be a dict (a JSON object), got {type(data).__name__}"
            )
        try:
            encoded = self._dumps(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}") from exc
        return encoded.encode() if isinstance(encoded, str) else encoded

    async def send_json(self, data: dict[str, Any]) -> None:
        """Send ``data`` as a JSON text frame.

        Waits for room in the socket's buffer first (backpressure), then writes the
        frame whole. Cancelled while waiting, nothing was sent.

        Raises:
            TypeError: ``data`` is not a dict.
            EncodeError: the codec cannot encode it (NaN and infinities included;
                nothing was sent).
            DisconnectSignal, ReconnectSignal, ResumeSignal: not connected, or the
                connection ended (the message was not sent).
        """
        await self._send(TEXT, self.encode_json(data))

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame (as :meth:`send_json` for waiting and cancelling).

        Raises:
            TypeError: ``data`` is not bytes, bytearray or memoryview.
            DisconnectSignal, ReconnectSignal, ResumeSignal: as for ``send_json``.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._send(BINARY, bytes(data) if isinstance(data, memoryview) else data)

    async def _send_encoded(self, data: bytes) -> None:
        """Send a text frame of UTF-8 this package encoded itself (unchecked)."""
        await self._send(TEXT, data)

    async def send_text(self, data: str | bytes, *, check_utf8: bool = True) -> None:
        """Send a text frame as-is, no JSON encoding (as :meth:`send_json` otherwise).

        ``bytes`` are taken as text already encoded in UTF-8 (from :meth:`encode_json`,
        say); they are checked, as the peer would fail the connection (1007) for
        invalid UTF-8. ASCII is checked without decoding; other text is decoded (about
        8 µs per 16 KiB): ``check_utf8=False`` skips that for bytes known to be UTF-8,
        such as :meth:`encode_json`'s sent to many connections.

        Raises:
            TypeError: ``data`` is not a str or bytes.
            EncodeError: it holds lone surrogates, which UTF-8 cannot encode, or
                ``bytes`` that are not UTF-8; nothing was sent.
            DisconnectSignal, ReconnectSignal, ResumeSignal: as for ``send_json``.
        """
        if isinstance(data, bytes):
            if check_utf8 and not data.isascii():
                try:
                    data.decode()
                except UnicodeDecodeError as exc:
                    raise EncodeError(
                        f"text is not valid UTF-8: {exc.reason} at byte {exc.start}"
                    ) from None
            await self._send(TEXT, data)
            return
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str or bytes, got {type(data).__name__}")
        try:
            encoded = data.encode()
        except UnicodeEncodeError as exc:
            raise EncodeError(f"text is not encodable as UTF-8: {exc}") from exc
        await self._send(TEXT, encoded)
