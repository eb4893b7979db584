"""The picows transport (``pip install wavegate[fast]``, ``Websocket(transport="picows")``).

picows parses frames in C and calls back once per frame; this adapter assembles
fragmented messages, enforces ``max_size``, queues frames for ``receive()`` (which
returns without suspending when one is queued), pauses reading past 128 KiB, answers
close frames and reports every ending. Every picows detail lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from collections import deque
from typing import Any

import picows
from picows import WSCloseCode, WSMsgType

from ..signals import Event, InvalidURLError
from . import BINARY, TEXT, ConnectFailed, Frame, TransportClosed, TransportOptions

_ABNORMAL = 1006
_READ_HIGH_WATER = 128 * 1024
_KINDS = {TEXT: WSMsgType.TEXT, BINARY: WSMsgType.BINARY}
# Codes an endpoint may put in a close frame it sends (RFC 6455 7.4.1).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class PicowsTransport(picows.WSListener):
    """One picows connection; also its frame listener."""

    def __init__(self, options: TransportOptions) -> None:
        super().__init__()
        self._max_size = options.max_size
        self._close_timeout = options.close_timeout
        self._frames: deque[Frame] = deque()
        self._queued = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._ended: TransportClosed | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_kind = 0
        self._fragment_size = 0
        self._ws: Any = None
        self._local_close = False
        self._local_code = 0
        self._write_ready: asyncio.Future[None] | None = None
        self._disconnected = asyncio.get_running_loop().create_future()

    # -- picows callbacks (synchronous, on the event loop) ---------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self._ws = transport

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # No extension is negotiated on this transport: RSV bits are a protocol error.
            self._fail(WSCloseCode.PROTOCOL_ERROR, "RSV bit set with no extension negotiated")
            return
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if self._fragments is not None:
                self._fail(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif frame.fin:
                data = frame.get_payload_as_bytes()
                if self._max_size is not None and len(data) > self._max_size:
                    self._fail(
                        WSCloseCode.MESSAGE_TOO_BIG,
                        f"message of {len(data)} bytes exceeds max_size",
                    )
                else:
                    self._push((kind.value, data, None))
            else:
                self._fragments = [frame.get_payload_as_bytes()]
                self._fragment_kind = kind.value
                self._fragment_size = len(self._fragments[0])
                self._check_fragment_size()
        elif kind is WSMsgType.CONTINUATION:
            if self._fragments is None:
                self._fail(
                    WSCloseCode.PROTOCOL_ERROR, "continuation frame with nothing to continue"
                )
                return
            part = frame.get_payload_as_bytes()
            self._fragments.append(part)
            self._fragment_size += len(part)
            if self._check_fragment_size() and frame.fin:
                data = b"".join(self._fragments)
                self._fragments = None
                self._push((self._fragment_kind, data, None))
        elif kind is WSMsgType.CLOSE:
            handshake = transport.close_handshake
            if self._local_close or (handshake is not None and not handshake.recv_then_sent):
                # The peer answers a close we (or picows' keepalive) sent first.
                transport.disconnect()
                self._end(self._why_disconnected(transport))
                return
            code = int(frame.get_close_code())
            reason = frame.get_close_reason() or ""
            # Echo the peer's code: Discord treats a 1000 from the client as "end the session".
            echo = code if 3000 <= code <= 4999 or code in _SENDABLE else 1000
            transport.send_close(WSCloseCode(echo) if echo < 3000 else echo)
            transport.disconnect()
            self._end(TransportClosed(Event.PEER_CLOSE, code or 1005, reason))

    def on_ws_disconnected(self, transport: Any) -> None:
        if self._ended is None:
            self._end(self._why_disconnected(transport))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        if not self._disconnected.done():
            self._disconnected.set_result(None)

    def pause_writing(self) -> None:
        if self._write_ready is None or self._write_ready.done():
            self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    # -- helpers ------------------------------------------------------------------------

    def _why_disconnected(self, transport: Any) -> TransportClosed:
        if self._local_close:
            return TransportClosed(Event.LOCAL_CLOSE, self._local_code, local=True)
        handshake = transport.close_handshake
        sent = None if handshake is None else handshake.sent
        if sent is not None and not handshake.recv_then_sent:
            code = int(sent.code)
            if code == WSCloseCode.GOING_AWAY.value:
                # picows closes with 1001 when the peer did not answer its keepalive ping.
                return TransportClosed(Event.KEEPALIVE_TIMEOUT, _ABNORMAL, sent.reason, local=True)
            return TransportClosed(Event.PROTOCOL_ERROR, code, sent.reason, local=True)
        return TransportClosed(
            Event.NO_CLOSE_FRAME, _ABNORMAL, "connection lost without a close frame"
        )

    def _check_fragment_size(self) -> bool:
        if self._max_size is not None and self._fragment_size > self._max_size:
            self._fragments = None
            self._fail(WSCloseCode.MESSAGE_TOO_BIG, "message exceeds max_size")
            return False
        return True

    def _fail(self, code: WSCloseCode, reason: str) -> None:
        ws = self._ws
        ws.send_close(code, reason.encode())
        ws.disconnect()
        self._end(TransportClosed(Event.PROTOCOL_ERROR, code.value, reason, local=True))

    def _push(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._queued += len(frame[1])
        if self._queued > _READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._ws.underlying_transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, ended: TransportClosed) -> None:
        if self._ended is None:
            self._ended = ended
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- Transport ----------------------------------------------------------------------

    async def receive(self) -> Frame:
        frames = self._frames
        if not frames:
            if self._ended is not None:
                raise self._ended
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if not frames:
                assert self._ended is not None
                raise self._ended
        frame = frames.popleft()
        self._queued -= len(frame[1])
        if self._reading_paused and self._queued < _READ_HIGH_WATER // 2:
            self._reading_paused = False
            self._ws.underlying_transport.resume_reading()
        return frame

    async def send(self, kind: int, data: bytes) -> None:
        ws = self._ws
        if self._ended is not None or ws.is_disconnected or ws.is_close_frame_sent:
            # picows silently ignores sends after a close frame: say so instead.
            ended = self._ended or TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, "connection closed"
            )
            raise TransportClosed(ended.event, ended.code, ended.reason, local=ended.local)
        ws.send(_KINDS[kind], data)
        if ws.underlying_transport.is_closing():
            # asyncio swallows a write that fails at once: the frame did not leave.
            raise TransportClosed(
                Event.TRANSPORT_ERROR, _ABNORMAL, "connection lost; frame not sent"
            )
        if self._write_ready is not None and not self._write_ready.done():
            await self._write_ready

    async def close(self, code: int, reason: str) -> None:
        self._local_close = True
        self._local_code = code
        ws = self._ws
        with contextlib.suppress(Exception):
            if not ws.is_close_frame_sent:
                ws.send_close(WSCloseCode(code) if code < 3000 else code, reason.encode())
        self._end(TransportClosed(Event.LOCAL_CLOSE, code, reason, local=True))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._disconnected), self._close_timeout)
        await self.abort()

    async def abort(self) -> None:
        self._local_close = True
        self._end(TransportClosed(Event.LOCAL_CLOSE, self._local_code or None, local=True))
        if self._ws is not None:
            self._ws.disconnect(graceful=False)
            # picows keeps the reason it disconnected (a protocol error...) in this
            # future; awaiting it consumes it, so nothing is logged as unretrieved.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.wait_disconnected(), self._close_timeout)


def _connect_failure(exc: BaseException) -> ConnectFailed:
    if isinstance(exc, asyncio.TimeoutError):
        return ConnectFailed(Event.CONNECT_TIMEOUT, None, "opening handshake timed out")
    if isinstance(exc, picows.WSInvalidStatusError) and exc.response is not None:
        status = int(exc.response.status)
        return ConnectFailed(Event.HANDSHAKE_STATUS, status, f"HTTP {status}")
    if isinstance(exc, picows.WSHandshakeError):
        return ConnectFailed(Event.CONNECT_ERROR, None, f"invalid handshake: {exc}")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectFailed(Event.CONNECT_TLS_CERTIFICATE, None, f"certificate rejected: {exc}")
    if isinstance(exc, ssl_module.SSLError):
        return ConnectFailed(Event.CONNECT_TLS, None, f"TLS handshake failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(Event.CONNECT_REFUSED, None, "connection refused")
    if isinstance(exc, OSError) and exc.__class__.__name__ == "gaierror":
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
    elif options.ssl is False:
        ssl_context = ssl_module.create_default_context()
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl_module.CERT_NONE
    listener: list[PicowsTransport] = []
    sockets: list[socket.socket] = []
    loop = asyncio.get_running_loop()

    def factory() -> PicowsTransport:
        listener.append(PicowsTransport(options))
        return listener[-1]

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

    interval = options.ping_interval
    opening = picows.ws_connect(
        factory,
        url,
        ssl_context=ssl_context,
        websocket_handshake_timeout=None,
        enable_auto_ping=interval is not None,
        auto_ping_idle_timeout=interval or 10,
        # picows requires reply <= idle; the pong wait is capped at the ping interval.
        auto_ping_reply_timeout=min(options.ping_timeout, interval or 10),
        enable_auto_pong=True,
        max_frame_size=(options.max_size or (1 << 62)) + 16,
        extra_headers=dict(options.headers) or None,
        proxy=options.proxy,
        socket_factory=socket_factory,
    )
    try:
        _, transport = await asyncio.wait_for(opening, options.open_timeout)
    except asyncio.CancelledError:
        shut_down()
        for made in listener:
            await made.abort()
        raise
    except picows.WSInvalidURL as exc:
        raise InvalidURLError(str(exc)) from exc
    except (asyncio.TimeoutError, OSError, picows.WSError) as exc:
        shut_down()
        for made in listener:
            await made.abort()
        raise _connect_failure(exc) from exc
    assert isinstance(transport, PicowsTransport)
    return transport
