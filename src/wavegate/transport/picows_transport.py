"""The picows transport (``pip install wavegate[fast]``, ``Websocket(transport="picows")``).

Built on ``picows.websockets``, whose ``recv()`` is compiled (Cython): ``Websocket``
awaits it directly, with no wrapper, so a buffered message costs one await. picows
assembles fragments, validates UTF-8, enforces ``max_size``, answers pings and close
frames (echoing the code) and closes with 1011 when its keepalive ping gets no pong.
This module translates its exceptions; every picows detail lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from typing import Any

import picows.websockets as pws
from picows.websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from ..signals import Event, InvalidURLError
from . import TEXT, ConnectFailed, TransportClosed, TransportOptions

_ABNORMAL = 1006
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux
_TCP_ESTABLISHED = 1


def _established(sock: socket.socket) -> bool:
    """Whether the kernel still has the connection ESTABLISHED (always true off Linux)."""
    if _TCP_INFO is None:
        return True
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0] == _TCP_ESTABLISHED
    except OSError:
        return False


class PicowsTransport:
    """A ``picows.websockets`` client connection."""

    __slots__ = ("_close_timeout", "_conn", "_local_code", "_sock", "recv")

    def __init__(self, conn: Any, sock: socket.socket, options: TransportOptions) -> None:
        self._conn = conn
        self._sock = sock
        self._close_timeout = options.close_timeout
        self._local_code: int | None = None
        self.recv = conn.recv

    def ended(self, exc: BaseException) -> TransportClosed:
        if isinstance(exc, TransportClosed):
            return exc
        if self._local_code is not None:
            ended = TransportClosed(Event.LOCAL_CLOSE, self._local_code, local=True)
        elif isinstance(exc, ConnectionClosed):
            ended = self._closed(exc)
        else:
            ended = TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, f"{type(exc).__name__}: {exc}"
            )
        ended.__cause__ = exc
        return ended

    @staticmethod
    def _closed(exc: ConnectionClosed) -> TransportClosed:
        rcvd, sent = exc.rcvd, exc.sent
        if rcvd is not None and (sent is None or exc.rcvd_then_sent):
            return TransportClosed(Event.PEER_CLOSE, int(rcvd.code) or 1005, rcvd.reason or "")
        if sent is not None:
            code, reason = int(sent.code), sent.reason or ""
            if code == 1011 and "keepalive" in reason:
                return TransportClosed(Event.KEEPALIVE_TIMEOUT, _ABNORMAL, reason, local=True)
            # picows closed it for a protocol error: 1002, 1007 (bad UTF-8), 1009 (size).
            return TransportClosed(Event.PROTOCOL_ERROR, code, reason, local=True)
        return TransportClosed(
            Event.NO_CLOSE_FRAME, _ABNORMAL, "connection lost without a close frame"
        )

    async def send(self, kind: int, data: bytes) -> None:
        try:
            await self._conn.send(data, text=kind == TEXT)
        except Exception as exc:
            raise self.ended(exc) from exc
        if not _established(self._sock):
            # asyncio swallows a write that fails at once (reset, broken pipe), and
            # picows hides its transport: ask the kernel. The frame did not leave.
            raise TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, "connection lost; frame not sent"
            )

    async def close(self, code: int, reason: str) -> None:
        self._local_code = code
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.close(code, reason), self._close_timeout + 1)
        await self.abort()

    async def abort(self) -> None:
        if self._local_code is None:
            self._local_code = 0
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # picows sees EOF and tears down
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.wait_closed(), self._close_timeout)


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, InvalidStatus):
        status = int(exc.response.status_code)
        return ConnectFailed(Event.HANDSHAKE_STATUS, status, f"HTTP {status}")
    if isinstance(exc, InvalidHandshake):
        return ConnectFailed(Event.CONNECT_ERROR, None, f"invalid handshake: {exc}")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc}")
    if isinstance(exc, ssl_module.SSLError):
        return ConnectFailed(Event.CONNECT_TLS, None, f"TLS handshake failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(Event.CONNECT_REFUSED, None, "connection refused")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(Event.CONNECT_DNS, None, f"name resolution failed: {exc}")
    return ConnectFailed(Event.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}")


async def connect(url: str, options: TransportOptions) -> PicowsTransport:
    """Open a websocket to ``url`` with picows; raise :class:`ConnectFailed` on failure."""
    if options.compression:
        raise InvalidURLError(
            "the picows transport does not support compression; use transport='aiohttp'"
        )
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        # picows would ignore them with a warning: refuse rather than drop them quietly.
        raise InvalidURLError(
            "the picows transport does not take credentials in the URL; send a header"
        )
    ssl_context: ssl_module.SSLContext | None = None
    if isinstance(options.ssl, ssl_module.SSLContext):
        ssl_context = options.ssl
    elif options.ssl is False and url.startswith("wss:"):
        ssl_context = ssl_module.create_default_context()
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl_module.CERT_NONE
    sockets: list[socket.socket] = []
    loop = asyncio.get_running_loop()

    async def socket_factory(address: Any) -> socket.socket:
        # Owning the socket lets a cancelled or timed-out handshake be shut down:
        # picows leaves it open otherwise.
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        sock.setblocking(False)
        sockets.append(sock)
        return sock

    def shut_down() -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    opening = pws.connect(
        url,
        compression=None,
        additional_headers=dict(options.headers) or None,
        proxy=options.proxy,
        open_timeout=None,  # bounded below, so that the socket is shut down on timeout
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        close_timeout=options.close_timeout,
        max_size=options.max_size,
        ssl=ssl_context,
        socket_factory=socket_factory,
    )
    try:
        conn = await asyncio.wait_for(opening, options.open_timeout)
    except asyncio.CancelledError:
        shut_down()
        raise
    except InvalidURI as exc:
        raise InvalidURLError(str(exc)) from exc
    except (asyncio.TimeoutError, OSError, pws.exceptions.WebSocketException) as exc:
        shut_down()
        raise _connect_failure(exc) from exc
    return PicowsTransport(conn, sockets[-1], options)
