"""The picows transport (``pip install wavegate[fast]``, ``Websocket(transport="picows")``).

picows parses frames in C. wavegate's receive side on it is one of two listeners:

- **compiled** (``_picows_listener.pyx``, built by ``pip install`` when a C compiler is
  at hand): a Cython subclass of picows' ``WSListener`` whose frame callback is C. It
  validates each frame (RSV bits, fragments, UTF-8, ``max_size``, close codes), keeps
  the messages in a ring, and ``Websocket.receive()`` takes a waiting one with
  ``poll()``, without awaiting anything.
- **python** (the fallback): picows' compiled ``websockets``-style connection, whose
  ``recv()`` ``Websocket`` awaits directly.

Either way wavegate opens the connection itself (``picows.ws_connect``) and owns the
rare paths here: write pressure (so that a frame is written whole, at once, and nothing
ever waits after a write), keepalive (its expiry is reported as such), and the ending.
Every picows detail lives in this module and the listener.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import ipaddress
import logging
import os
import re
import socket
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import picows
from picows.websockets.asyncio.connection import ClientConnection
from picows.websockets.compat import Request, Response
from picows.websockets.exceptions import ConnectionClosed
from python_socks import ProxyError  # picows' own proxy client

from ..heartbeat import Keepalive, keepalive_step
from ..packets import (
    WebsocketPacket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
)
from ..signals import Event, InvalidURLError, PayloadError
from . import (
    TEXT,
    ConnectFailed,
    TransportClosed,
    TransportOptions,
    chosen_subprotocol,
    proxy_status_failure,
    status_failure,
    write_lost,
)

_ABNORMAL = 1006
_TEXT, _BINARY = picows.WSMsgType.TEXT, picows.WSMsgType.BINARY
_HIGH_WATER = 32768
"""Write buffer size past which :meth:`PicowsTransport.writable` waits."""
_UNANSWERED_LIMIT = 1 << 20
"""Bytes picows may queue on its own (pongs) while the peer reads nothing, before the
connection is failed: a peer that floods pings and never reads the pongs would
otherwise grow memory without bound."""
_FLOOD_CHECK = 0.05
"""Seconds between checks of the write buffer while writing is paused."""
_log = logging.getLogger("wavegate.transport.picows")


class _QuieterLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows' chatter one level down: it logs each TCP connection at INFO (even one
    whose handshake is then refused) and a peer's protocol error at ERROR, where
    wavegate reports each ending itself (the signal, at INFO) and each opening (at
    DEBUG, as on aiohttp, which logs none)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level == logging.INFO or str(msg).startswith(_PEERS_FAULT):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class _ClassNotInstance(logging.Filter):
    """aiofastnet (picows' TLS engine) reports a peer hanging up during the TLS
    handshake to the loop's exception handler with the exception *class*
    (``ConnectionResetError``); the default handler's record then fails to format
    ("--- Logging error ---"). An ``OSError`` is dropped, as asyncio's own transports
    do (wavegate's signal reports the ending); anything else gets an instance."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info is None or not isinstance(info[1], type):
            return True
        kind = info[1]
        if issubclass(kind, OSError):
            return False
        try:  # a class that needs arguments cannot be made: the record goes without
            made = kind() if issubclass(kind, BaseException) else None
        except Exception:
            made = None
        record.exc_info = None if made is None else (kind, made, None)
        return True


logging.getLogger("asyncio").addFilter(_ClassNotInstance())

_PEERS_FAULT = ("WS parser error", "on_ws_frame raised WSProtocolError")
"""picows' words for a frame that broke the protocol (found by its parser, or by our
listener, which raises ``WSProtocolError`` to have picows close with the code)."""


_CONNECTION_LOG = _QuieterLog(_log, {})
"""What picows logs through: given a ``Logger``, picows makes a child ``Logger`` for
every connection (five objects, ~1 KiB, for the garbage collector to walk); given an
adapter, it uses it as it is. Its records come under this module's name (they came
under ``wavegate.transport.picows.<fd>``)."""
PICOWS_VERSION: str = metadata.version("picows")

ListenerKind = Literal["compiled", "python"]
_LISTENER_API = 2
"""The compiled listener's ``API`` this module calls (see ``_picows_listener.pyx``)."""


def _compiled_listener() -> tuple[Any, str]:
    """The compiled listener class, or ``None`` and why it cannot be used."""
    if os.environ.get("WAVEGATE_PICOWS_LISTENER") == "python":
        return None, "WAVEGATE_PICOWS_LISTENER=python"
    try:
        from . import _picows_listener
    except (ImportError, ValueError) as exc:  # ValueError: picows' C layout changed
        return None, f"compiled listener unavailable: {exc}"
    api = getattr(_picows_listener, "API", 1)
    if api != _LISTENER_API:
        return None, (
            f"compiled listener out of date (API {api}, this wavegate needs "
            f"{_LISTENER_API}): reinstall wavegate"
        )
    if _picows_listener.BUILT_AGAINST != PICOWS_VERSION:
        # Compiled against another picows' C layouts: reading them would be unsafe.
        return None, (
            f"compiled listener built against picows {_picows_listener.BUILT_AGAINST}, "
            f"picows {PICOWS_VERSION} installed: reinstall wavegate"
        )
    return _picows_listener.Listener, "compiled listener"


_COMPILED, _COMPILED_STATUS = _compiled_listener()
LISTENER: ListenerKind = "compiled" if _COMPILED is not None else "python"
"""The listener new connections use (tests may switch it to ``"python"``)."""


def describe() -> str:
    """Which picows and which listener new connections use, in words."""
    if LISTENER == "compiled":
        return f"picows {PICOWS_VERSION}, compiled listener"
    return f"picows {PICOWS_VERSION}, picows' Python-facing connection ({_COMPILED_STATUS})"


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Listener(ClientConnection):
    """The fallback listener: picows' compiled connection, with wavegate's hooks on its
    rare callbacks."""

    owner: PicowsTransport

    def pause_writing(self) -> None:
        # Not passed on: picows' own send would then wait after writing.
        self.owner._writing_paused()

    def resume_writing(self) -> None:
        self.owner._writing_resumed()

    def on_ws_disconnected(self, transport: Any) -> None:
        super().on_ws_disconnected(transport)
        self.owner._disconnected(transport)

    def ping_now(self) -> asyncio.Future[float]:
        """Send a ping; return a future resolved by its pong. picows' ``ping()``
        coroutine, run to its end at once (the keepalive's timer has no task to await
        it in): on an open connection, which the caller checked, it never waits."""
        coroutine = self.ping()
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except ConnectionClosed:
            pass  # closed meanwhile: no ping went, no pong will come
        else:
            coroutine.close()  # it waits for the ending: no ping went either
        never: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        never.cancel()
        return never


class PicowsTransport:
    """A picows connection. ``_ending`` is the first ending known for certain."""

    __slots__ = (
        "_capacity",
        "_deadline",
        "_ending",
        "_flood_check",
        "_keepalive",
        "_keepalive_call",
        "_keepalive_held",
        "_listener",
        "_options",
        "_paused_at",
        "_pinged_at",
        "_pong",
        "_sock",
        "_timer_context",
        "_tls",
        "_underlying",
        "_wt",
        "recv",
        "subprotocol",
    )

    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        self.subprotocol: str | None = None
        self._ending: TransportClosed | None = None
        self._capacity: asyncio.Future[None] | None = None
        self._paused_at: int | None = None
        self._flood_check: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        """The keepalive's one timer: the next ping, or the deadline of the last."""
        self._pong: asyncio.Future[Any] | None = None
        """The last ping's pong, until the next ping (or a skip) replaces it."""
        self._pinged_at: float | None = None
        self._keepalive_held = False
        self._listener: _Listener | None = None
        self._wt: Any = None
        self._underlying: Any = None
        self._sock: socket.socket | None = None
        self._tls = False
        self._deadline: asyncio.TimerHandle | None = None
        # The keepalive's timer callback and context, made once: left to the loop,
        # each ping's timer would make both anew and hold them for the interval, long
        # enough for the collector to promote them.
        self._keepalive_call = self._keepalive_due
        self._timer_context = contextvars.copy_context()

    def _opened(self, wt: Any, listener: Any, sock: socket.socket) -> None:
        self._wt = wt
        self._listener = listener
        self._sock = sock
        self._underlying = underlying = wt.underlying_transport
        # TLS to the server, or to an https:// proxy carrying a ws:// connection.
        self._tls = underlying.get_extra_info("sslcontext") is not None
        self.recv = listener.recv
        interval = self._options.ping_interval
        # Not when it ended before connect() returned it: the timer would hold it.
        if interval is not None and self._ending is None and not self._closing():
            self._keepalive_at(asyncio.get_running_loop().time() + interval)

    def taker(
        self, loads: Callable[[bytes | str], Any], decode_json: bool
    ) -> Callable[[], WebsocketPacket | None] | None:
        listener = self._listener
        if isinstance(listener, _Listener) or listener is None:
            return None  # picows' own connection: its recv() does the work
        listener.configure(
            loads,
            decode_json,
            WebsocketPacketJSON,
            WebsocketPacketText,
            WebsocketPacketBytes,
            PayloadError,
        )
        take: Callable[[], WebsocketPacket | None] = listener.take
        return take

    def taken(self) -> tuple[int, int]:
        listener = self._listener
        if isinstance(listener, _Listener) or listener is None:
            return (0, 0)
        return (int(listener.taken_frames), int(listener.taken_bytes))

    def _record(self, ending: TransportClosed) -> TransportClosed:
        if self._ending is None:
            self._ending = ending
        return self._ending

    # -- endings ---------------------------------------------------------------------

    def ending(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, TransportClosed):
            return exc
        if self._ending is not None:
            return self._ending
        if isinstance(exc, ConnectionClosed):
            ended = self._closed(exc.rcvd, exc.sent, bool(exc.rcvd_then_sent))
        else:
            ended = TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, f"{type(exc).__name__}: {exc}"
            )
        ended.__cause__ = exc
        return self._record(ended)

    def _closed(self, rcvd: Any, sent: Any, rcvd_then_sent: bool) -> TransportClosed:
        if rcvd is not None and (sent is None or rcvd_then_sent):
            return TransportClosed(Event.PEER_CLOSE, int(rcvd.code) or 1005, rcvd.reason or "")
        if sent is not None:
            # picows closed it for a protocol error: 1002, 1007 (bad UTF-8), 1009 (size).
            code, reason = int(sent.code), sent.reason or ""
            if code == 1009:  # worded as the compiled listener and aiohttp word it
                limit = self._options.max_size or 2**31 - 1
                reason = f"message larger than max_size ({limit} bytes)"
            return TransportClosed(Event.PROTOCOL_ERROR, code, reason, local=True)
        return TransportClosed(
            Event.NO_CLOSE_FRAME, _ABNORMAL, "connection lost without a close frame"
        )

    def _known_ending(self) -> TransportClosed:
        """The ending, once the connection is closing or closed (picows reads close
        frames as they arrive, so what it knows is final). Its cause is the
        ``ConnectionClosed`` picows' ``recv()`` raises for it."""
        if self._ending is None:
            handshake = self._wt.close_handshake
            if handshake is None:
                cause = ConnectionClosed(None, None, None)
            else:
                cause = ConnectionClosed(handshake.recv, handshake.sent, handshake.recv_then_sent)
            ended = self._closed(cause.rcvd, cause.sent, bool(cause.rcvd_then_sent))
            ended.__cause__ = cause
            self._record(ended)
        assert self._ending is not None
        return self._ending

    def _fail(self, ending: TransportClosed) -> None:
        """End the connection now with ``ending`` (no close handshake)."""
        self._record(ending)
        self._wt.disconnect(False)

    def _connected(self, wt: Any) -> None:
        """The compiled listener's connection is open. Frames, a close, even the end
        may follow before connect() returns ``wt`` (they can share the handshake's
        TCP segment): every callback below may need it."""
        self._wt = wt

    def _failed(self, code: int, reason: str) -> None:
        """The compiled listener found a protocol error: close with ``code`` and drop
        the connection (flushing the close frame, within the close timeout)."""
        self._record(TransportClosed(Event.PROTOCOL_ERROR, code, reason, local=True))
        self._wt.send_close(code, reason.encode())
        self._wt.disconnect(True)
        self._drop_later()

    def _peer_closed(self) -> None:
        """The compiled listener received and echoed the peer's close frame: that is
        the ending (a keepalive expiring meanwhile must not replace it); the server
        closes the TCP connection, or we drop it after the close timeout."""
        self._known_ending()
        self._stop_keepalive()
        self._drop_later()

    def _drop_later(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(
                self._options.close_timeout, self._wt.disconnect, False
            )

    def _disconnected(self, wt: Any) -> None:
        if self._wt is None:
            self._wt = wt  # it ended before connect() returned it
        self._known_ending()
        # picows keeps the protocol error it failed the connection with for whoever
        # awaits wait_disconnected(); retrieve it (the ending already says what it was).
        asyncio.ensure_future(wt.wait_disconnected()).add_done_callback(_retrieve)
        self._stop_keepalive()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._writing_resumed()

    # -- keepalive -------------------------------------------------------------------

    def _keepalive_at(self, when: float) -> None:
        self._keepalive = asyncio.get_running_loop().call_at(
            when, self._keepalive_call, context=self._timer_context
        )

    def _keepalive_due(self) -> None:
        """The keepalive's one timer (see :func:`~wavegate.heartbeat.keepalive_step`)."""
        self._keepalive = None
        if self._ending is not None or self._closing():
            return  # ending already: a ping now could only misreport it
        options, pong = self._options, self._pong
        assert options.ping_interval is not None
        now = asyncio.get_running_loop().time()
        # A pong read in this loop turn, before the timer ran (after a stall), counts.
        answered = False
        if pong is not None and pong.done() and not pong.cancelled():
            answered = pong.exception() is None  # a ping cut short by the ending: no pong
        action, when = keepalive_step(
            now,
            sent=self._pinged_at,
            answered=answered,
            held=self._keepalive_held,
            interval=options.ping_interval,
            timeout=options.ping_timeout,
        )
        if action is Keepalive.EXPIRED:
            self._fail(
                TransportClosed(
                    Event.KEEPALIVE_TIMEOUT, _ABNORMAL, "no pong from the peer", local=True
                )
            )
            return
        if action is Keepalive.SKIP:
            self._forget_ping()
        elif action is Keepalive.PING:
            listener = self._listener
            assert listener is not None
            self._forget_ping()
            try:
                self._pong = listener.ping_now()
            except Exception as exc:  # raised in a timer, it would stop pings unseen
                reason = f"ping: {exc}"
                ending = TransportClosed(Event.TRANSPORT_ERROR, _ABNORMAL, reason, local=True)
                ending.__cause__ = exc
                self._fail(ending)
                return
            self._pinged_at = now
        self._keepalive_at(when)

    def _forget_ping(self) -> None:
        pong, self._pong, self._pinged_at = self._pong, None, None
        if pong is None:
            return
        if not pong.done():
            pong.cancel()
        elif not pong.cancelled():
            pong.exception()  # retrieved: picows fails the pongs waiting at the end

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._forget_ping()

    def hold_keepalive(self, held: bool) -> None:
        self._keepalive_held = held

    # -- write pressure --------------------------------------------------------------

    def _writing_paused(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._wt.underlying_transport.get_write_buffer_size()
            self._flood_check = asyncio.get_running_loop().call_later(
                _FLOOD_CHECK, self._check_flood
            )

    def _writing_resumed(self) -> None:
        self._paused_at = None
        if self._flood_check is not None:
            self._flood_check.cancel()
            self._flood_check = None
        self._wake_writers()

    def _wake_writers(self) -> None:
        """Let every ``writable()`` look again (room, or an ending to report)."""
        capacity, self._capacity = self._capacity, None
        if capacity is not None and not capacity.done():
            capacity.set_result(None)

    def _check_flood(self) -> None:
        if self._paused_at is None:
            return
        waiting = self._wt.underlying_transport.get_write_buffer_size()
        if waiting - self._paused_at > _UNANSWERED_LIMIT:
            self._fail(
                TransportClosed(
                    Event.TRANSPORT_ERROR,
                    _ABNORMAL,
                    f"the peer does not read ({waiting} bytes waiting) but keeps sending "
                    "control frames that need an answer",
                    local=True,
                )
            )
            return
        self._flood_check = asyncio.get_running_loop().call_later(_FLOOD_CHECK, self._check_flood)

    def _closing(self) -> bool:
        wt = self._wt
        return bool(wt.is_disconnected or wt.is_close_frame_sent)

    async def writable(self) -> None:
        while True:
            if self._ending is not None or self._closing():
                raise self._known_ending()
            if self._paused_at is None:
                return
            if self._capacity is None:
                self._capacity = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._capacity)

    def send(self, kind: int, data: bytes) -> None:
        if self._ending is not None or self._closing():
            raise self._known_ending()
        self._wt.send(_TEXT if kind == TEXT else _BINARY, data)
        if write_lost(self._underlying, self._sock, self._tls):
            raise TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, "connection lost; frame not sent"
            )

    # -- closing ---------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        self._record(TransportClosed(Event.LOCAL_CLOSE, code, local=True))
        self._wake_writers()
        # Messages may wait unread with the socket paused: the peer's close frame and
        # its end of the connection must still be read.
        if isinstance(self._listener, _Listener):
            # picows keeps thinking it paused reading, so it does not pause it again.
            underlying = self._wt.underlying_transport
            if not underlying.is_closing():
                underlying.resume_reading()
        elif self._listener is not None:
            self._listener.unpause()
        try:
            if not self._closing():
                self._wt.send_close(code, reason.encode())
            await asyncio.wait_for(
                asyncio.shield(self._wt.wait_disconnected()), self._options.close_timeout
            )
        except (asyncio.TimeoutError, OSError, picows.WSError):
            pass
        finally:
            self._drop()  # at once, even when cancelled

    async def abort(self) -> None:
        self._record(TransportClosed(Event.LOCAL_CLOSE, None, local=True))
        self._drop()

    def _drop(self) -> None:
        self._wt.disconnect(False)
        self._stop_keepalive()


_PROXY_STATUS = re.compile(r"with status (\d{3})\b")


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, ProxyError):
        # picows' HTTP proxy client gives the status in its message only (picows 1.x).
        found = _PROXY_STATUS.search(str(exc))
        status = exc.error_code or (int(found[1]) if found else None)
        if isinstance(status, int) and 100 <= status <= 599:
            return proxy_status_failure(status)
        return ConnectFailed(Event.CONNECT_ERROR, None, f"the proxy failed: {exc}")
    if isinstance(exc, picows.WSInvalidStatusError):
        response = exc.response
        if response is None:
            return status_failure(0)
        headers = response.headers
        return status_failure(
            int(response.status), headers.get("Location"), headers.get("Retry-After")
        )
    if isinstance(exc, picows.WSHandshakeError):
        return ConnectFailed(Event.HANDSHAKE_INVALID, None, f"invalid handshake: {exc}")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc}")
    if isinstance(exc, ssl_module.SSLError):
        return ConnectFailed(Event.CONNECT_TLS, None, f"TLS handshake failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(Event.CONNECT_REFUSED, None, "connection refused")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(Event.CONNECT_DNS, None, f"name resolution failed: {exc}")
    return ConnectFailed(Event.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}")


def _negotiated(transport: PicowsTransport, headers: Any) -> str:
    """Take the subprotocol the server's 101 answer chose; what it negotiated that we
    never offered (RFC 6455 4.1), or ``""``."""
    offered = transport._options.subprotocols
    transport.subprotocol, problem = chosen_subprotocol(
        headers.get("Sec-WebSocket-Protocol"), offered
    )
    extensions = headers.get("Sec-WebSocket-Extensions")
    if not problem and extensions is not None:
        problem = f"Sec-WebSocket-Extensions {extensions!r}, but the client offered none"
    return problem


_DEFAULT_CONTEXTS: dict[bool, ssl_module.SSLContext] = {}
"""``ssl=True``'s context and ``ssl=False``'s, each made at its first use. Given
``True``, picows, asyncio and aiofastnet make one per connection: loading the system's
CA store blocks the loop for ~18 ms, and the connection keeps its context (~850 KiB)."""


def _ssl_context(url: str, option: ssl_module.SSLContext | bool) -> ssl_module.SSLContext | None:
    if isinstance(option, ssl_module.SSLContext):
        return option
    if urlsplit(url).scheme != "wss":
        return None
    return _default_context(verify=option)


def _proxy_context(
    proxy: str | None, option: ssl_module.SSLContext | bool
) -> ssl_module.SSLContext | None:
    """An ``https://`` proxy's context: ``ssl``'s, as aiohttp's (picows refuses one
    for other proxies)."""
    if proxy is None or urlsplit(proxy).scheme != "https":
        return None
    return option if isinstance(option, ssl_module.SSLContext) else _default_context(verify=option)


def _default_context(*, verify: bool) -> ssl_module.SSLContext:
    context = _DEFAULT_CONTEXTS.get(verify)
    if context is None:
        if verify:
            context = ssl_module.create_default_context()
        else:  # no CA store to load
            context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        _DEFAULT_CONTEXTS[verify] = context
    return context


async def connect(url: str, options: TransportOptions) -> PicowsTransport:
    """Open a websocket to ``url`` with picows; raise :class:`ConnectFailed` on failure."""
    _check_supported(url, options)
    url, headers = _with_credentials(url, options.headers)
    if options.subprotocols:
        headers = {**headers, "Sec-WebSocket-Protocol": ", ".join(options.subprotocols)}
    transport = PicowsTransport(options)
    sockets: list[socket.socket] = []
    opening = picows.ws_connect(
        _listener_factory(transport, options),
        url,
        ssl_context=_ssl_context(url, options.ssl),
        websocket_handshake_timeout=None,  # bounded below, so the socket is shut down
        enable_auto_ping=False,
        enable_auto_pong=True,
        max_frame_size=options.max_size or 2**31 - 1,
        extra_headers=headers or None,
        proxy=options.proxy,
        proxy_ssl_context=_proxy_context(options.proxy, options.ssl),
        socket_factory=_socket_factory(sockets),
        # picows doubles it when a read nearly fills it; it never shrinks.
        read_buffer_init_size=options.read_buffer_size,
        logger_name=_CONNECTION_LOG,
        max_redirects=0,  # see status_failure
        use_aiofastnet=_use_aiofastnet(url),
    )
    try:
        wt, made = await asyncio.wait_for(opening, options.open_timeout)
    except asyncio.CancelledError:
        _shut_down(sockets)
        raise
    except picows.WSInvalidURL as exc:
        raise InvalidURLError(str(exc)) from exc
    except (asyncio.TimeoutError, OSError, picows.WSError, ProxyError) as exc:
        # Before ValueError: certificate errors are ValueErrors too (ssl.CertificateError).
        _shut_down(sockets)
        raise _connect_failure(exc) from exc
    except ValueError as exc:  # e.g. a host name IDNA cannot encode
        _shut_down(sockets)
        raise InvalidURLError(f"cannot connect with this URL and these options: {exc}") from exc
    if wt.response is None:  # picows returns so when the connection ended first
        _shut_down(sockets)
        raise ConnectFailed(
            Event.CONNECT_ERROR, None, "the server closed the connection before answering"
        )
    unoffered = _negotiated(transport, wt.response.headers)
    if unoffered:
        wt.disconnect(False)
        raise ConnectFailed(Event.HANDSHAKE_INVALID, None, f"the server answered with {unoffered}")
    # picows keeps the opening's request and response for the connection's life; their
    # headers (1.7 KiB a connection, in the CIMultiDicts' strings) are never read again.
    wt.request.headers.clear()
    wt.response.headers.clear()
    transport._opened(wt, made, sockets[-1])
    return transport


def _check_supported(url: str, options: TransportOptions) -> None:
    if options.compression:
        raise InvalidURLError(
            "the picows transport does not support compression; use transport='aiohttp'"
        )


def _with_credentials(url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``url`` without its ``user:password@`` part, and ``headers`` with the HTTP Basic
    ``Authorization`` it stands for (picows would drop the credentials with a warning)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, dict(headers)
    if any(name.lower() == "authorization" for name in headers):
        raise InvalidURLError(
            "credentials in the URL and an Authorization header: give one of them"
        )
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=hostport)), {
        **headers,
        "Authorization": f"Basic {token}",
    }


def _socket_factory(sockets: list[socket.socket]) -> Callable[[Any], Awaitable[socket.socket]]:
    """Sockets connected here (and kept in ``sockets``): owning the socket lets a
    cancelled or timed-out handshake be shut down, which picows leaves open otherwise.
    Each address of the host is tried in turn, as ``loop.create_connection`` does."""

    async def make(address: Any) -> socket.socket:
        loop = asyncio.get_running_loop()
        errors: list[OSError] = []
        for family, proto, sockaddr in await _addresses(loop, address.host, address.port):
            try:
                sock = socket.socket(family, socket.SOCK_STREAM, proto)
            except OSError as exc:  # e.g. IPv6 off on this machine: try the next
                errors.append(exc)
                continue
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, sockaddr)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            sockets.append(sock)
            return sock
        if len({type(e) for e in errors}) == 1:
            raise errors[0]
        raise OSError(f"no address of the host answered: {'; '.join(map(str, errors))}")

    return make


async def _addresses(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> list[tuple[int, int, Any]]:
    """``(family, proto, sockaddr)`` for each address of ``host``; an IP address needs
    no lookup (``getaddrinfo`` would run in a thread)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(int(info[0]), info[2], info[4]) for info in infos]
    if ip.version == 6:
        return [(socket.AF_INET6, 0, (host, port, 0, 0))]
    return [(socket.AF_INET, 0, (host, port))]


_ASYNCIO_WRITES_IN_O1 = sys.version_info < (3, 12)
"""Before 3.12 asyncio's socket transport buffers writes in one bytearray; from 3.12 in
a deque that it sums on every write (``get_write_buffer_size``): a peer that floods
pings and reads no pong makes every pong's write cost the whole backlog."""


def _use_aiofastnet(url: str) -> bool:
    """Whether picows runs the connection on aiofastnet's transport rather than
    asyncio's: for ``wss://`` (any case), and for every URL on Python 3.12 and later.

    aiofastnet's TLS is far smaller than asyncio's (58.7 KiB per idle wss connection
    against 310 KiB: asyncio's keeps a 256 KiB buffer for each). Over plain TCP its
    transport was no faster on A-D and is 4.6 KiB larger (it embeds a 4 KiB array of
    write vectors, workload E), so before 3.12 asyncio's is used; from 3.12 asyncio's
    goes quadratic under a flood of small writes (``_ASYNCIO_WRITES_IN_O1``)."""
    return urlsplit(url).scheme == "wss" or not _ASYNCIO_WRITES_IN_O1


def _listener_factory(transport: PicowsTransport, options: TransportOptions) -> Callable[..., Any]:
    if LISTENER == "compiled":
        compiled, max_size = _COMPILED, options.max_size or 2**31 - 1
        return lambda request, response: compiled(transport, max_size)

    def make(request: Any, response: Any) -> _Listener:
        made = _Listener(
            request=Request.from_picows(request),
            response=Response.from_picows(response),
            subprotocol=None,
            permessage_deflate=None,
            ping_interval=None,  # wavegate's own keepalive (PicowsTransport._keepalive_due)
            ping_timeout=None,
            close_timeout=options.close_timeout,
            max_queue=16,
            write_limit=_HIGH_WATER,
            max_message_size=options.max_size,
            max_frame_size=options.max_size or 2**31 - 1,
            logger=_log,
        )
        made.owner = transport
        return made

    return make


def _shut_down(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
