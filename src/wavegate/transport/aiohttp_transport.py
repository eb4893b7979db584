"""The aiohttp transport (default).

Every aiohttp detail lives here: its exceptions, message types and close-code access.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from typing import cast

import aiohttp
from aiohttp import WSMsgType

from ..signals import Event
from . import BINARY, TEXT, ConnectFailed, Frame, TransportClosed, TransportOptions

_KINDS = {TEXT: WSMsgType.TEXT, BINARY: WSMsgType.BINARY}
_ABNORMAL = 1006


class AiohttpTransport:
    """A connection opened with ``aiohttp.ClientSession.ws_connect``."""

    __slots__ = ("_closing_locally", "_session", "_ws")

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._closing_locally = False

    async def receive(self) -> Frame:
        msg = await self._ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            return cast(Frame, msg)
        raise self._ended(msg.type, msg.data, msg.extra)

    def _ended(self, kind: WSMsgType, data: object, extra: object) -> TransportClosed:
        if kind is WSMsgType.CLOSE:
            # aiohttp reports a close frame without a status as code 0; RFC 6455 says 1005.
            code = cast(int, data) or 1005
            return TransportClosed(Event.PEER_CLOSE, code, str(extra or ""))
        if self._closing_locally or kind is WSMsgType.CLOSING:
            return TransportClosed(Event.LOCAL_CLOSE, self._ws.close_code, local=True)
        if kind is WSMsgType.ERROR:
            return self._error(cast(BaseException, data))
        # CLOSED without a close frame: EOF or a dropped connection.
        return TransportClosed(Event.NO_CLOSE_FRAME, _ABNORMAL, "connection lost without a close frame")

    def _error(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, aiohttp.ServerTimeoutError):
            ended = TransportClosed(Event.KEEPALIVE_TIMEOUT, _ABNORMAL, "no pong from the peer", local=True)
        elif isinstance(exc, aiohttp.WebSocketError):
            ended = TransportClosed(Event.PROTOCOL_ERROR, exc.code, str(exc), local=True)
        else:
            ended = TransportClosed(Event.TRANSPORT_ERROR, _ABNORMAL, f"{type(exc).__name__}: {exc}")
        ended.__cause__ = exc
        return ended

    async def send(self, kind: int, data: bytes) -> None:
        try:
            await self._ws.send_frame(data, _KINDS[kind])
        except (OSError, aiohttp.ClientError, RuntimeError) as exc:
            ended = TransportClosed(Event.TRANSPORT_ERROR, _ABNORMAL, f"send failed: {exc}")
            raise ended from exc

    async def close(self, code: int, reason: str) -> None:
        self._closing_locally = True
        try:
            # aiohttp bounds the close handshake with ClientWSTimeout.ws_close; the outer
            # timeout is a second guard in case the writer itself blocks.
            timeout = self._ws._timeout.ws_close
            await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()), (timeout or 5) + 1)
        except (asyncio.TimeoutError, OSError, aiohttp.ClientError):
            pass
        finally:
            await self.abort()

    async def abort(self) -> None:
        self._closing_locally = True
        # Closing the response drops the TCP connection with no close handshake.
        self._ws._response.close()
        await self._session.close()


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 101:
        return ConnectFailed(Event.CONNECT_ERROR, None, f"invalid handshake: {exc.message}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ConnectFailed(Event.HANDSHAKE_STATUS, exc.status, f"HTTP {exc.status} {exc.message}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc.certificate_error}")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc}")
    if isinstance(exc, (aiohttp.ClientSSLError, ssl_module.SSLError)):
        return ConnectFailed(Event.CONNECT_TLS, None, f"TLS handshake failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ConnectFailed(Event.CONNECT_DNS, None, f"name resolution failed: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return ConnectFailed(Event.CONNECT_REFUSED, None, "connection refused")
    return ConnectFailed(Event.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}")


async def connect(url: str, options: TransportOptions) -> AiohttpTransport:
    """Open a websocket to ``url``; raise :class:`ConnectFailed` on any failure."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    try:
        opening = session.ws_connect(
            url,
            autoclose=True,
            autoping=True,
            heartbeat=options.ping_interval,
            max_msg_size=options.max_size or 0,
            compress=15 if options.compression else 0,
            headers=dict(options.headers),
            proxy=options.proxy,
            ssl=options.ssl,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=options.close_timeout),
            decode_text=False,
        )
        ws = await asyncio.wait_for(opening, options.open_timeout)
    except asyncio.CancelledError:
        await session.close()
        raise
    except (aiohttp.InvalidURL, ValueError) as exc:
        await session.close()
        raise ConnectFailed(Event.CONNECT_ERROR, None, f"invalid URL: {exc}") from exc
    except (asyncio.TimeoutError, OSError, aiohttp.ClientError) as exc:
        await session.close()
        raise _connect_failure(exc) from exc
    if options.ping_interval is not None:
        # aiohttp waits heartbeat/2 for the pong; honour ping_timeout instead.
        ws._pong_heartbeat = options.ping_timeout
    return AiohttpTransport(session, ws)
