"""The aiohttp transport (default).

Every aiohttp detail lives here: its exceptions, message types and close-code access,
and the few of its internals wavegate needs (``_WebSocketResponse`` below names them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import sys
import weakref
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType

from ..signals import Event, InvalidURLError
from . import (
    BINARY,
    TEXT,
    ConnectFailed,
    TransportClosed,
    TransportOptions,
    chosen_subprotocol,
    proxy_status_failure,
    status_failure,
    write_lost,
)

_KINDS = {TEXT: WSMsgType.TEXT, BINARY: WSMsgType.BINARY}
_ABNORMAL = 1006
_HEADER_LINE = 1 << 16
"""The longest handshake answer line read, in bytes."""
_TOO_BIG = 1009
# Codes an endpoint may put in a close frame it sends (RFC 6455 7.4.1).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _valid_on_the_wire(code: int) -> bool:
    return code in _SENDABLE or 3000 <= code <= 4999


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


class _WebSocketResponse(aiohttp.ClientWebSocketResponse):
    """aiohttp's client websocket with the changes wavegate needs.

    This class is the only place that touches aiohttp internals (pinned by the
    ``aiohttp>=3.14,<4`` requirement and covered by the contract tests):

    - a keepalive failure is reported to ``on_keepalive_failure`` (aiohttp would only
      close gracefully, which waits forever for a peer that stopped reading), and the
      keepalive can be held (:meth:`hold_keepalive`) while nobody reads on purpose;
    - :meth:`write` writes a frame at once, whole, and never waits afterwards (aiohttp's
      ``send_frame`` may wait for the buffer to drain after writing, so a timeout there
      could not tell whether the frame went out); compressed frames are compressed
      in the event loop for the same reason (about 4 ms per MiB of JSON);
    - :meth:`close_frame_waiting` looks at the last message aiohttp buffered (aiohttp
      handles a close frame only when it is read; picows and websockets at arrival);
    - :meth:`abandon` drops the socket and cancels aiohttp's keepalive timers at once
      (otherwise they keep every closed connection alive for ``ping_interval``), and
      :meth:`wake_writers` wakes whoever waits for the buffer to drain.
    """

    on_keepalive_failure: Callable[[BaseException], None] | None = None
    keepalive_held = False

    def hold_keepalive(self, held: bool) -> None:
        self.keepalive_held = held
        if held:
            self._cancel_heartbeat()
        elif not self._closed and not self._closing:
            self._reset_heartbeat()

    def _reset_heartbeat(self) -> None:
        if not self.keepalive_held:
            super()._reset_heartbeat()

    def _send_heartbeat(self) -> None:
        if self.keepalive_held:
            self._heartbeat_cb = None
            return
        super()._send_heartbeat()

    def _pong_not_received(self) -> None:
        # A close frame waiting unread is the ending (recv reports it): a peer that
        # closed answers no more pings, and that must not be taken for a dead one.
        if not self.keepalive_held and not self.close_frame_waiting():
            super()._pong_not_received()

    def _handle_ping_pong_exception(self, exc: BaseException) -> None:
        if not self._closed and self.on_keepalive_failure is not None:
            self.on_keepalive_failure(exc)
        super()._handle_ping_pong_exception(exc)

    @property
    def socket_transport(self) -> asyncio.Transport:
        return self._writer.transport

    @property
    def writing_paused(self) -> bool:
        return self._writer.protocol.writing_paused

    async def wait_writable(self) -> None:
        """Wait until the buffer drained or the connection was lost (whatever aiohttp
        does to its drain future then: it may cancel it). Cancelling this wait leaves
        aiohttp's future alone, as other waiters share it."""
        drained = asyncio.ensure_future(self._writer.protocol._drain_helper())
        drained.add_done_callback(_retrieve)
        await asyncio.wait({drained})

    def write(self, data: bytes, opcode: WSMsgType) -> None:
        if self.compress:
            self._writer._send_compressed_frame_sync(data, opcode, None)
        else:
            self._writer._write_websocket_frame(data, opcode, 0)

    def close_frame_waiting(self) -> bool:
        """Whether the peer's close frame has arrived but nobody has read it yet: from
        then on the peer discards what we send (RFC 6455 5.5.1)."""
        buffer = self._reader._buffer
        return bool(buffer) and buffer[-1][0].type is WSMsgType.CLOSE

    def wake_writers(self) -> None:
        waiter = self._writer.protocol._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abandon(self) -> None:
        self._set_closed()
        self.socket_transport.abort()
        self._response.close()


class _Redirected(Exception):
    """Raised from aiohttp's redirect hook: aiohttp's ``ws_connect`` follows an
    ``http(s)://`` redirect and has no option not to (see ``status_failure``)."""

    def __init__(self, status: int, location: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.location = location


async def _refuse_redirect(
    session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestRedirectParams
) -> None:
    raise _Redirected(params.response.status, params.response.headers.get("Location"))


def _no_redirects() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(_refuse_redirect)
    config.freeze()
    return config


class _SharedSession:
    """One aiohttp session per event loop, shared by its connections (~5 KiB less each).

    No cookie jar (connections must not see each other's cookies) and no connection
    limit (aiohttp's default of 100 would block the 101st socket). Closed when its
    last connection is released.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedSession] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            ws_response_class=_WebSocketResponse,
            trace_configs=[_no_redirects()],
            # aiohttp's 8190 bytes a header line would make a refusal with one long
            # header (a debug dump, a big cookie) "not HTTP", where picows reads it.
            max_line_size=_HEADER_LINE,
            max_field_size=_HEADER_LINE,
        )
        self.users = 0

    @classmethod
    def acquire(cls) -> _SharedSession:
        loop = asyncio.get_running_loop()
        shared = cls._by_loop.get(loop)
        if shared is None or shared.session.closed:
            shared = cls._by_loop[loop] = cls()
        shared.users += 1
        return shared

    async def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            if self._by_loop.get(asyncio.get_running_loop()) is self:
                del self._by_loop[asyncio.get_running_loop()]
            await self.session.close()


class AiohttpTransport:
    """A connection opened with ``aiohttp.ClientSession.ws_connect``.

    ``_ending`` is the first ending the transport knows for certain (a close frame read,
    our own close, a keepalive expiry); every later failure reports it.
    """

    __slots__ = ("_ending", "_max_size", "_shared", "_socket", "_tls", "_ws", "subprotocol")

    def __init__(
        self, shared: _SharedSession | None, ws: _WebSocketResponse, max_size: int | None = None
    ) -> None:
        self._shared = shared
        self._ws = ws
        self._max_size = max_size
        self._ending: TransportClosed | None = None
        self._tls = ws.get_extra_info("ssl_object") is not None
        self._socket = ws.get_extra_info("socket")
        self.subprotocol: str | None = None
        ws.on_keepalive_failure = self._keepalive_failed

    def _record(self, ending: TransportClosed) -> TransportClosed:
        if self._ending is None:
            self._ending = ending
        return self._ending

    async def _release(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.release()

    # -- receiving -------------------------------------------------------------------

    @staticmethod
    def taker(loads: Callable[[bytes | str], Any], decode_json: bool) -> None:
        """aiohttp keeps its messages behind ``receive()``: ``recv`` does all the work."""

    @staticmethod
    def taken() -> tuple[int, int]:
        return (0, 0)

    async def recv(self) -> str | bytes:
        msg = await self._ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            return cast("str | bytes", msg.data)
        if kind is WSMsgType.CLOSE:
            raise await self._peer_closed(cast(int, msg.data), str(msg.extra or ""))
        raise self._record(self._classify(kind, msg.data))

    async def _peer_closed(self, code: int, reason: str) -> TransportClosed:
        # Recorded before answering, so that a send failing meanwhile reports this close.
        if code and not _valid_on_the_wire(code):
            # RFC 6455 7.4: 1004-1006, 1015, unassigned 1xxx/2xxx may never be sent.
            ending = self._record(
                TransportClosed(
                    Event.PROTOCOL_ERROR, 1002, f"peer sent invalid close code {code}", local=True
                )
            )
            echo = 1002
        else:
            # aiohttp reports a close frame without a status as code 0; RFC 6455 says 1005.
            ending = self._record(TransportClosed(Event.PEER_CLOSE, code or 1005, reason))
            # Echo the peer's code (RFC 6455 5.5.1) rather than aiohttp's autoclose 1000:
            # Discord treats a 1000 from the client as "end the session".
            echo = code if _valid_on_the_wire(code) else 1000
        try:
            await self._close_handshake(echo, "")
        finally:
            self._ws.abandon()  # at once, even when cancelled
            await self._release()
        return ending

    async def _close_handshake(self, code: int, reason: str) -> None:
        # aiohttp bounds waiting for the answer with ClientWSTimeout.ws_close; the outer
        # timeout also bounds writing the close frame to a peer that stopped reading.
        timeout = self._ws._timeout.ws_close or 5.0
        with contextlib.suppress(asyncio.TimeoutError, OSError, aiohttp.ClientError):
            await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()), timeout)

    def _classify(self, kind: WSMsgType, data: object) -> TransportClosed:
        if kind is WSMsgType.CLOSING:
            return TransportClosed(Event.LOCAL_CLOSE, self._ws.close_code, local=True)
        if kind is WSMsgType.ERROR:
            return self._error(cast(BaseException, data))
        stored = self._ws.exception()
        if isinstance(stored, aiohttp.ServerTimeoutError):
            return self._error(stored)
        # CLOSED without a close frame: EOF or a dropped connection.
        return TransportClosed(
            Event.NO_CLOSE_FRAME, _ABNORMAL, "connection lost without a close frame"
        )

    def _error(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, aiohttp.ServerTimeoutError):
            ended = TransportClosed(
                Event.KEEPALIVE_TIMEOUT, _ABNORMAL, "no pong from the peer", local=True
            )
        elif isinstance(exc, aiohttp.WebSocketError):
            code, why = int(exc.code), str(exc)
            if code == _TOO_BIG:  # aiohttp's limit is ours plus one: say ours, as picows
                why = f"message larger than max_size ({self._max_size} bytes)"
            ended = TransportClosed(Event.PROTOCOL_ERROR, code, why, local=True)
        else:
            ended = TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, f"{type(exc).__name__}: {exc}"
            )
        ended.__cause__ = exc
        return ended

    def ending(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, TransportClosed):
            return exc
        return self._record(self._error(exc))

    def _keepalive_failed(self, exc: BaseException) -> None:
        # aiohttp's keepalive gave up (no pong, or the ping could not be written):
        # drop the socket now so that blocked sends and receives wake up.
        self._record(self._error(exc))
        self._ws.socket_transport.abort()

    def hold_keepalive(self, held: bool) -> None:
        self._ws.hold_keepalive(held)

    # -- sending ---------------------------------------------------------------------

    def _lost(self, why: str) -> TransportClosed:
        """The ending a send sees: the known one, or "connection lost" (not recorded:
        the read side may still find the peer's close frame)."""
        if self._ending is not None:
            return self._ending
        return TransportClosed(Event.TRANSPORT_ERROR, _ABNORMAL, why)

    async def writable(self) -> None:
        ws = self._ws
        while True:
            if self._ending is not None or ws.socket_transport.is_closing():
                raise self._lost("connection lost")
            if not ws.writing_paused:
                return
            await ws.wait_writable()

    def send(self, kind: int, data: bytes) -> None:
        if self._ending is not None:
            raise self._ending
        if self._ws.close_frame_waiting():
            raise self._lost("the peer closed the connection")
        try:
            self._ws.write(data, _KINDS[kind])
        except (OSError, aiohttp.ClientError, RuntimeError) as exc:
            raise self._lost(f"send failed: {exc}") from exc
        if write_lost(self._ws.socket_transport, self._socket, self._tls):
            raise self._lost("connection lost; frame not sent")

    # -- ending ----------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        self._record(TransportClosed(Event.LOCAL_CLOSE, code, local=True))
        self._ws.wake_writers()
        try:
            await self._close_handshake(code, reason)
        finally:
            self._ws.abandon()  # at once, even when cancelled
            await self._release()

    async def abort(self) -> None:
        self._record(TransportClosed(Event.LOCAL_CLOSE, None, local=True))
        self._ws.abandon()
        await self._release()


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 101:
        return ConnectFailed(Event.HANDSHAKE_INVALID, None, f"invalid handshake: {exc.message}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the CONNECT for a wss:// URL
        return proxy_status_failure(exc.status)
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        headers: Any = exc.headers or {}
        return status_failure(exc.status, None, headers.get("Retry-After"))
    if isinstance(exc, aiohttp.ClientResponseError):
        # Not a status the server sent: aiohttp's parser found no HTTP answer (400).
        first = str(exc.message).strip().splitlines()[0] if exc.message else "no HTTP"
        return ConnectFailed(
            Event.HANDSHAKE_INVALID, None, f"the server's answer is not HTTP ({first})"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ConnectFailed(
            Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc.certificate_error}"
        )
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc}")
    if isinstance(exc, (aiohttp.ClientSSLError, ssl_module.SSLError)):
        return ConnectFailed(Event.CONNECT_TLS, None, f"TLS handshake failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ConnectFailed(Event.CONNECT_DNS, None, f"name resolution failed: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return ConnectFailed(Event.CONNECT_REFUSED, None, "connection refused")
    return ConnectFailed(Event.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}")


def _unoffered(ws: _WebSocketResponse, options: TransportOptions) -> str | None:
    """What the server's 101 answer negotiated that we never offered (RFC 6455 4.1)."""
    headers: Any = ws._response.headers
    _, problem = chosen_subprotocol(headers.get("Sec-WebSocket-Protocol"), options.subprotocols)
    if problem:
        return problem
    extensions = headers.get("Sec-WebSocket-Extensions")
    if extensions is not None and not ws.compress:
        # Nothing offered, or something other than the permessage-deflate we offered.
        offered = "permessage-deflate" if options.compression else "no extension"
        return f"Sec-WebSocket-Extensions {extensions!r}, but the client offered {offered}"
    return None


def _check_supported(url: str, options: TransportOptions) -> None:
    proxy = urlsplit(options.proxy).scheme if options.proxy else None
    if sys.version_info < (3, 11) and proxy == "https" and urlsplit(url).scheme == "wss":
        # asyncio's start_tls() takes no TLS transport before 3.11: it never could work.
        raise InvalidURLError(
            "a wss:// server through an https:// proxy (TLS in TLS) needs Python 3.11 "
            "on the aiohttp transport; use transport='picows'"
        )


async def connect(url: str, options: TransportOptions) -> AiohttpTransport:
    """Open a websocket to ``url``; raise :class:`ConnectFailed` on any failure."""
    _check_supported(url, options)
    shared = _SharedSession.acquire()
    try:
        opening = shared.session.ws_connect(
            url,
            autoclose=False,
            autoping=True,
            heartbeat=options.ping_interval,
            # aiohttp rejects a message of exactly max_msg_size; ours is the largest accepted.
            max_msg_size=options.max_size + 1 if options.max_size else 0,
            compress=15 if options.compression else 0,
            headers=dict(options.headers),
            protocols=options.subprotocols,
            proxy=options.proxy,
            ssl=options.ssl,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=options.close_timeout),
        )
        ws = cast(_WebSocketResponse, await asyncio.wait_for(opening, options.open_timeout))
    except asyncio.CancelledError:
        await shared.release()
        raise
    except aiohttp.InvalidURL as exc:
        await shared.release()
        raise InvalidURLError(f"cannot connect to this URL: {exc}") from exc
    except _Redirected as exc:
        await shared.release()
        raise status_failure(exc.status, exc.location) from None
    except (asyncio.TimeoutError, OSError, aiohttp.ClientError) as exc:
        # Before ValueError: certificate errors are ValueErrors too (ssl.CertificateError).
        await shared.release()
        raise _connect_failure(exc) from exc
    except ValueError as exc:
        await shared.release()
        raise InvalidURLError(f"cannot connect with this URL and these options: {exc}") from exc
    unoffered = _unoffered(ws, options)
    if unoffered is not None:
        ws.abandon()
        await shared.release()
        raise ConnectFailed(Event.HANDSHAKE_INVALID, None, f"the server answered with {unoffered}")
    if options.ping_interval is not None:
        # aiohttp waits heartbeat/2 for the pong; honour ping_timeout instead.
        ws._pong_heartbeat = options.ping_timeout
    transport = AiohttpTransport(shared, ws, options.max_size)
    transport.subprotocol = ws.protocol  # checked above: one of those offered, or None
    return transport
