"""The aiohttp transport (default).

Every aiohttp detail lives here: its exceptions, message types and close-code access.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import weakref
from typing import cast

import aiohttp
from aiohttp import WSMsgType

from ..signals import Event, InvalidURLError
from . import BINARY, TEXT, ConnectFailed, TransportClosed, TransportOptions

_KINDS = {TEXT: WSMsgType.TEXT, BINARY: WSMsgType.BINARY}


def _valid_on_the_wire(code: int) -> bool:
    return code in _SENDABLE or 3000 <= code <= 4999


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


_ABNORMAL = 1006
# Codes an endpoint may put in a close frame it sends (RFC 6455 7.4.1).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class AiohttpTransport:
    """A connection opened with ``aiohttp.ClientSession.ws_connect``."""

    __slots__ = ("_closing_locally", "_shared", "_ws")

    def __init__(
        self, shared: _SharedSession | None, ws: aiohttp.ClientWebSocketResponse[bool]
    ) -> None:
        self._shared = shared
        self._ws = ws
        self._closing_locally = False

    async def _release(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.release()

    async def recv(self) -> str | bytes:
        msg = await self._ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            return cast("str | bytes", msg.data)
        if kind is WSMsgType.CLOSE:
            raise await self._peer_closed(cast(int, msg.data), str(msg.extra or ""))
        raise self._ended(msg.type, msg.data)

    async def _peer_closed(self, code: int, reason: str) -> TransportClosed:
        if code and not _valid_on_the_wire(code):
            # RFC 6455 7.4: 1004-1006, 1015, unassigned 1xxx/2xxx may never be sent.
            with contextlib.suppress(OSError, aiohttp.ClientError, asyncio.TimeoutError):
                await self._ws.close(code=1002, message=b"invalid close code")
            await self._release()
            return TransportClosed(
                Event.PROTOCOL_ERROR, 1002, f"peer sent invalid close code {code}", local=True
            )
        # Echo the peer's code (RFC 6455 5.5.1) rather than aiohttp's autoclose 1000:
        # Discord treats a 1000 from the client as "end the session".
        echo = code if 3000 <= code <= 4999 or code in _SENDABLE else 1000
        with contextlib.suppress(OSError, aiohttp.ClientError, asyncio.TimeoutError):
            await self._ws.close(code=echo)
        await self._release()
        # aiohttp reports a close frame without a status as code 0; RFC 6455 says 1005.
        return TransportClosed(Event.PEER_CLOSE, code or 1005, reason)

    def _ended(self, kind: WSMsgType, data: object) -> TransportClosed:
        if self._closing_locally or kind is WSMsgType.CLOSING:
            return TransportClosed(Event.LOCAL_CLOSE, self._ws.close_code, local=True)
        if kind is WSMsgType.ERROR:
            return self._error(cast(BaseException, data))
        stored = self._ws.exception()
        if isinstance(stored, aiohttp.ServerTimeoutError):
            # The keepalive closed the socket while nobody was reading.
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
            ended = TransportClosed(Event.PROTOCOL_ERROR, exc.code, str(exc), local=True)
        else:
            ended = TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, f"{type(exc).__name__}: {exc}"
            )
        ended.__cause__ = exc
        return ended

    def ended(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, TransportClosed):
            return exc
        return self._error(exc)

    async def send(self, kind: int, data: bytes) -> None:
        try:
            await self._ws.send_frame(data, _KINDS[kind])
        except (OSError, aiohttp.ClientError, RuntimeError) as exc:
            cause = self._ws.exception()
            if isinstance(cause, aiohttp.ServerTimeoutError):
                raise self._error(cause) from cause
            ended = TransportClosed(Event.TRANSPORT_ERROR, _ABNORMAL, f"send failed: {exc}")
            raise ended from exc
        if self._ws._writer.transport.is_closing():
            # asyncio swallows a write that fails at once (reset or broken pipe) and
            # closes the transport: the frame did not leave, so say so.
            raise TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, "connection lost; frame not sent"
            )

    async def close(self, code: int, reason: str) -> None:
        self._closing_locally = True
        try:
            # aiohttp bounds the close handshake with ClientWSTimeout.ws_close; the outer
            # timeout is a second guard in case the writer itself blocks.
            timeout = self._ws._timeout.ws_close
            await asyncio.wait_for(
                self._ws.close(code=code, message=reason.encode()), (timeout or 5) + 1
            )
        except (asyncio.TimeoutError, OSError, aiohttp.ClientError):
            pass
        finally:
            await self.abort()

    async def abort(self) -> None:
        self._closing_locally = True
        # Closing the response drops the TCP connection with no close handshake.
        self._ws._response.close()
        await self._release()


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 101:
        return ConnectFailed(Event.CONNECT_ERROR, None, f"invalid handshake: {exc.message}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ConnectFailed(Event.HANDSHAKE_STATUS, exc.status, f"HTTP {exc.status} {exc.message}")
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


async def connect(url: str, options: TransportOptions) -> AiohttpTransport:
    """Open a websocket to ``url``; raise :class:`ConnectFailed` on any failure."""
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
            proxy=options.proxy,
            ssl=options.ssl,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=options.close_timeout),
        )
        ws = await asyncio.wait_for(opening, options.open_timeout)
    except asyncio.CancelledError:
        await shared.release()
        raise
    except aiohttp.InvalidURL as exc:
        await shared.release()
        raise InvalidURLError(f"cannot connect to this URL: {exc}") from exc
    except (asyncio.TimeoutError, OSError, aiohttp.ClientError) as exc:
        # Before ValueError: certificate errors are ValueErrors too (ssl.CertificateError).
        await shared.release()
        raise _connect_failure(exc) from exc
    except ValueError as exc:
        await shared.release()
        raise InvalidURLError(f"cannot connect with this URL and these options: {exc}") from exc
    if options.ping_interval is not None:
        # aiohttp waits heartbeat/2 for the pong; honour ping_timeout instead.
        ws._pong_heartbeat = options.ping_timeout
    return AiohttpTransport(shared, ws)
