"""A real websocket server on loopback whose faults tests control.

``WebsocketTestServer`` accepts websocket connections on 127.0.0.1 (an ephemeral
port) and hands each one to the test as a :class:`ServerConnection`, which can send
any frame (valid or not), close with any code, drop TCP with no close frame, ignore
the client's close or pings. Handshakes can be accepted, stalled or rejected.

    async with WebsocketTestServer() as server:
        ws = Websocket()
        await ws.connect(server.url)
        conn = await server.accepted()
        await conn.send_json({"op": 8})
        await conn.close(4015, "crashed")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import select
import socket
import ssl as ssl_module
import struct
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any

from . import frames

Handler = Callable[["ServerConnection"], Awaitable[None]]

_ids = itertools.count(1)
log = logging.getLogger("wavegate.testing.server")


_ERRORS_KEPT = 100


class HandlerError(AssertionError):
    """A :class:`WebsocketTestServer`'s handler raised (the cause is what it raised): an
    ``AssertionError``, so that pytest reports the test as failed."""


class ConnectionDropped(Exception):
    """The client went away (no more messages will arrive)."""


def check_close_frame(code: object, reason: object) -> None:
    """Refuse what cannot go in a close frame: a code that is not an int from 0 to
    65535 (or ``None``: no status), a reason that is not a str of at most 123 bytes."""
    if code is not None:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"close code must be an int from 0 to 65535 or None, got {code!r}")
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"close code must be an int from 0 to 65535 or None, got {code!r}")
    if not isinstance(reason, str):
        raise TypeError(f"close reason must be a str, got {type(reason).__name__}")
    if len(reason.encode()) > 123:
        raise ValueError("close reason must be at most 123 bytes of UTF-8")


class ServerConnection:
    """The server's side of one accepted websocket connection.

    Attributes:
        id: a number unique in this process.
        request_headers: the handshake request's headers (lower-case names).
        path: the request path with its query string.
        answer_close: reply to the client's close frame (default ``True``).
        answer_pings: reply to the client's pings (default ``True``).
        close_received: ``(code, reason)`` of the client's close frame, once it came.
        closed: set when the TCP connection is gone.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        headers: dict[str, str],
        *,
        answer_pings: bool,
        max_size: int,
    ) -> None:
        self.id = next(_ids)
        self.path = path
        self.request_headers = headers
        self.subprotocol: str | None = None
        """The subprotocol the server answered with (``WebsocketTestServer.subprotocols``)."""
        self.answer_close = True
        self.answer_pings = answer_pings
        self.close_received: tuple[int | None, str] | None = None
        self.ended_by_server = False
        """Set once the server closed or dropped this connection (not the client)."""
        self.closed = asyncio.Event()
        self.handled = asyncio.Event()
        """Set when the server's handler for this connection has returned."""
        self.pings_received = 0
        self._reader = reader
        self._writer = writer
        self._max_size = max_size
        self._messages: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._close_sent = False

    def __repr__(self) -> str:
        return f"<ServerConnection #{self.id} {self.path}>"

    # -- sending ----------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Write bytes to the socket as they are (for malformed frames)."""
        if self._writer.is_closing():
            raise ConnectionDropped(f"connection #{self.id} is closed")
        self._writer.write(data)
        await self._writer.drain()

    async def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0
    ) -> None:
        """Send one frame with any opcode and flags."""
        await self.send_raw(frames.encode_frame(opcode, payload, fin=fin, rsv=rsv))

    def write_frame(self, opcode: int, payload: bytes) -> bool:
        """Write one frame now, without waiting for the socket (so frames written in
        one go are never interleaved with others); ``False`` if the connection is gone."""
        if self._writer.is_closing():
            return False
        self._writer.write(frames.encode_frame(opcode, payload))
        return True

    async def send_text(self, text: str | bytes) -> None:
        """Send a text frame (``bytes`` are sent unvalidated, e.g. invalid UTF-8)."""
        await self.send_frame(frames.TEXT, text.encode() if isinstance(text, str) else text)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        await self.send_frame(frames.BINARY, data)

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as a JSON text frame."""
        await self.send_text(json.dumps(value, separators=(",", ":")))

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping frame."""
        await self.send_frame(frames.PING, payload)

    # -- ending -----------------------------------------------------------------------

    async def close(
        self, code: int | None = 1000, reason: str = "", *, timeout: float = 2.0
    ) -> None:
        """Send a close frame (no status when ``code`` is ``None``) and return.

        The connection is dropped when the client answers, or after ``timeout``
        seconds if it never does (or never reads: the close frame waits behind what
        it has not read). ``wait_closed()`` waits for either. Any code that fits the
        frame may be sent, invalid ones included (to test a client's checks).

        Raises:
            TypeError, ValueError: ``code`` is not an int from 0 to 65535 or ``None``,
                or ``reason`` is over 123 bytes: nothing is sent.
        """
        check_close_frame(code, reason)
        if self._close_sent or self._writer.is_closing():
            return
        self._close_sent = True
        self.ended_by_server = True
        log.info("#%s closed by the server: %s %s", self.id, code, reason)
        # Written at once, then the timer: a client that reads nothing never makes
        # room, and the abort wakes the drain below.
        self._writer.write(frames.encode_frame(frames.CLOSE, frames.close_payload(code, reason)))
        asyncio.get_running_loop().call_later(timeout, self._abort)
        with contextlib.suppress(ConnectionError, ConnectionDropped):
            await self._writer.drain()

    def drop(self) -> None:
        """Drop the TCP connection at once, with no close frame."""
        transport = self._writer.transport
        if not transport.is_closing():
            self.ended_by_server = True
            self._abort()

    def _abort(self) -> None:
        """Release the socket (the connection is over, whoever ended it)."""
        self._writer.transport.abort()

    async def reset(self) -> None:
        """Fail the connection as a network fault would, at one instant: every byte the
        client wrote before now is read, then a TCP RST (no close frame) is sent.

        Unlike :meth:`drop`, nothing the client sent before the call is lost, so a
        test can tell the client's losses from the fault's. Frames the server wrote
        that the client has not read yet are discarded by the client's kernel.
        """
        transport = self._writer.transport
        if transport.is_closing():
            return
        self.ended_by_server = True
        log.info("#%s dropped by the server (TCP reset, no close frame)", self.id)
        sock = self._writer.get_extra_info("socket")
        for _ in range(1000):  # a few loop turns move pending bytes into the reader
            await asyncio.sleep(0)
            if transport.is_closing() or not select.select([sock.fileno()], [], [], 0)[0]:
                break
        if not transport.is_closing():
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw = getattr(transport, "_sock", None)
            transport.abort()
            if raw is not None:
                # abort() stops reading now but closes the socket a loop turn later; a
                # client write in between would land unread. Close (RST) right now.
                raw.close()

    def stop_reading(self) -> None:
        """Stop reading the socket (a peer that hangs or stopped processing): the client's
        writes fill the kernel buffers and then block. Pings go unanswered too."""
        transport = self._writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()

    def write_blocked(self) -> bool:
        """Whether this side's writes are waiting for the client to read."""
        return self._writer.transport.get_write_buffer_size() > 0

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the TCP connection is gone."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    # -- receiving --------------------------------------------------------------------

    async def receive(self, timeout: float | None = 5.0) -> tuple[int, bytes]:
        """The next data message ``(opcode, payload)`` from the client.

        Raises:
            ConnectionDropped: the client is gone and every message was read.
        """
        try:
            item = await asyncio.wait_for(self._messages.get(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"connection #{self.id}: no message from the client within {timeout}s"
            ) from None
        if item is None:
            self._messages.put_nowait(None)
            raise ConnectionDropped(f"connection #{self.id} is closed")
        return item

    async def receive_text(self, timeout: float | None = 5.0) -> str:
        """The next message, which must be a text frame."""
        opcode, payload = await self.receive(timeout)
        if opcode != frames.TEXT:
            raise AssertionError(f"expected a text frame, got opcode {opcode}")
        return payload.decode()

    async def receive_json(self, timeout: float | None = 5.0) -> Any:
        """The next message, decoded as JSON."""
        return json.loads(await self.receive_text(timeout))

    def pending(self) -> int:
        """How many received messages are waiting to be read."""
        return self._messages.qsize()

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        head = await self._reader.readexactly(2)
        fin = bool(head[0] & 0x80)
        opcode = head[0] & 0x0F
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
        if length > self._max_size:
            raise ValueError(f"client frame of {length} bytes exceeds the server's max_size")
        mask = await self._reader.readexactly(4) if head[1] & 0x80 else b""
        payload = await self._reader.readexactly(length)
        return fin, opcode, frames.unmask(payload, mask) if mask else payload

    async def _run(self) -> None:
        """Read frames until the connection ends: answer control frames, queue data."""
        fragments: list[bytes] = []
        fragment_opcode = 0
        try:
            while True:
                fin, opcode, payload = await self._read_frame()
                if opcode == frames.PING:
                    self.pings_received += 1
                    if self.answer_pings:
                        await self.send_frame(frames.PONG, payload)
                elif opcode == frames.CLOSE:
                    self.close_received = frames.parse_close(payload)
                    if self.answer_close:
                        if not self._close_sent:
                            self._close_sent = True
                            await self.send_frame(frames.CLOSE, payload[:2])
                        self._abort()
                        return
                elif opcode == frames.PONG:
                    continue
                elif opcode == frames.CONTINUATION:
                    fragments.append(payload)
                    if fin:
                        self._messages.put_nowait((fragment_opcode, b"".join(fragments)))
                        fragments.clear()
                elif fin:
                    self._messages.put_nowait((opcode, payload))
                else:
                    fragment_opcode, fragments = opcode, [payload]
        except (asyncio.IncompleteReadError, ConnectionError, ConnectionDropped, ValueError):
            self._abort()
        finally:
            self._messages.put_nowait(None)
            self.closed.set()


class WebsocketTestServer:
    """A websocket server on 127.0.0.1 with fault injection, as an async context manager.

    Args:
        handler: run for each accepted connection (in a task the server owns);
            without one, tests drive connections obtained from :meth:`accepted`. What
            it raises (a failed ``assert``, say), other than the client going away, is
            kept in :attr:`handler_errors` and raised again when the ``async with``
            block ends, so the test fails.
        host: the address to listen on (loopback only).
        port: 0 for an ephemeral port.
        max_size: largest client frame accepted.
        ssl: a server-side SSLContext to serve ``wss://``.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_size: int = 16 << 20,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.handler_errors: list[Exception] = []
        """What the handler raised, in order (the first 100; the client going away
        excepted)."""
        self.ssl = ssl
        self.host = host
        self.port = port
        self.max_size = max_size
        self.answer_pings = True
        self.deflate = False
        """Accept permessage-deflate when the client offers it. Frames go both ways as
        they are: what the test sends, compress it yourself and set RSV1; what the
        client sends arrives compressed (``receive()`` does not inflate it)."""
        self.subprotocols: list[str] = []
        """Subprotocols to choose from, in this server's order of preference: the
        first the client offers is answered (``ServerConnection.subprotocol``)."""
        self.handshake_delay = 0.0
        """Seconds to wait before answering each opening handshake."""
        self.handshakes = 0
        self.connections: set[ServerConnection] = set()
        """Connections whose handshake was accepted and that are still open."""
        self.refuse_path: Callable[[str], int | tuple[int, str] | None] | None = None
        """Given a request's path (with its query), an HTTP status to refuse it with
        (or the status and why: the reason is logged and sent as the body)."""
        self._handshake_mode = "accept"
        self._reject_status = 503
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS) of the running server."""
        scheme = "wss" if self.ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"{scheme}://{host}:{self.port}/"

    # -- fault knobs ------------------------------------------------------------------

    def accept_handshakes(self) -> None:
        """Answer opening handshakes normally (the default)."""
        self._handshake_mode = "accept"

    def reject_handshakes(self, status: int) -> None:
        """Answer opening handshakes with HTTP ``status`` instead of 101.

        Raises:
            TypeError, ValueError: ``status`` is not an int from 100 to 599.
        """
        problem = f"status must be an HTTP status from 100 to 599, got {status!r}"
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(problem)
        if not 100 <= status <= 599:
            raise ValueError(problem)
        self._handshake_mode = "reject"
        self._reject_status = status

    def stall_handshakes(self) -> None:
        """Accept TCP connections but never answer their opening handshake."""
        self._handshake_mode = "stall"

    @property
    def open_connections(self) -> int:
        """How many TCP connections (handshaken or stalled) are still open."""
        live = sum(1 for conn in self.connections if not conn.closed.is_set())
        return live + sum(1 for writer in self._stalled if not writer.transport.is_closing())

    async def accepted(self, timeout: float = 5.0) -> ServerConnection:
        """The next connection whose handshake the server accepted (servers without a
        handler; with one, the handler receives each connection).

        Raises:
            RuntimeError: the server is not running.
            TimeoutError: (``asyncio.TimeoutError``) none within ``timeout`` seconds.
        """
        if self._server is None:
            raise RuntimeError("the server is not running: start() it (or use async with)")
        try:
            return await asyncio.wait_for(self._accepted.get(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"no connection accepted within {timeout}s ({self.handshakes} handshakes)"
            ) from None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening (the port is known afterwards).

        Raises:
            RuntimeError: it is already running.
        """
        if self._server is not None:
            raise RuntimeError("the server is already running (stop() it first)")
        self.handler_errors.clear()  # a new async with block: only its own
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop every connection and wait for the server's tasks."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drop()
        for writer in list(self._stalled):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        self._accepted = asyncio.Queue()  # none of them is handed out after a restart

    async def __aenter__(self) -> WebsocketTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc is None and self.handler_errors:
            raise HandlerError(
                f"the server's handler raised {len(self.handler_errors)} time(s); the first:"
                f" {self.handler_errors[0]!r}"
            ) from self.handler_errors[0]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()
        except asyncio.CancelledError:
            # stop() cancels the tasks it owns; asyncio's stream callback must not see it.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(1)
        if first == b"\x16":  # a TLS handshake record: a wss:// client on this plain port
            # What aiohttp, nginx and websockets do too: a plain 400, then hang up, so
            # the client fails at once instead of waiting for its open timeout.
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        path, headers = _parse_request(first + await reader.readuntil(b"\r\n\r\n"))
        self.handshakes += 1
        mode, status = self._handshake_mode, self._reject_status
        why = "reject_handshakes()"
        refused = self.refuse_path(path) if self.refuse_path is not None else None
        if refused is not None and mode == "accept":
            mode = "reject"
            status, why = refused if isinstance(refused, tuple) else (refused, "refuse_path")
        if self.handshake_delay:
            await asyncio.sleep(self.handshake_delay)
        if mode == "stall":
            self._stalled.add(writer)
            try:
                await reader.read()  # until the client gives up
            finally:
                writer.transport.abort()
                self._stalled.discard(writer)
            return
        if mode == "reject":
            await _refuse(writer, status, why)
            return
        chosen = self._choose(headers)
        await self._accept(writer, headers, chosen)
        conn = ServerConnection(
            reader, writer, path, headers, answer_pings=self.answer_pings, max_size=self.max_size
        )
        conn.subprotocol = chosen
        self.connections.add(conn)
        log.info("#%s connected from %s", conn.id, writer.get_extra_info("peername"))
        try:
            await self._handle(conn)
        finally:
            self.connections.discard(conn)

    def _choose(self, headers: dict[str, str]) -> str | None:
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        return next((name for name in self.subprotocols if name in offered), None)

    async def _accept(
        self, writer: asyncio.StreamWriter, headers: dict[str, str], subprotocol: str | None
    ) -> None:
        key = headers.get("sec-websocket-key", "")
        extensions = ""
        if self.deflate and "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            extensions = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        if subprotocol is not None:
            extensions += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {frames.accept_key(key)}\r\n{extensions}\r\n"
            ).encode()
        )
        await writer.drain()

    async def _handle(self, conn: ServerConnection) -> None:
        if self.handler is None:
            # Only a test driving connections itself takes them from here; with a
            # handler, nobody would, and the queue would keep every connection alive.
            self._accepted.put_nowait(conn)
            await conn._run()
            return
        reading = asyncio.create_task(conn._run())
        try:
            await self.handler(conn)
        except (ConnectionDropped, ConnectionError):
            pass  # the client went away: the handler's business ends there
        except Exception as exc:
            log.error("#%s: the handler raised", conn.id, exc_info=True)
            if len(self.handler_errors) < _ERRORS_KEPT:  # a long-running server stays small
                self.handler_errors.append(exc)
        finally:
            conn._abort()
            await reading
            conn.handled.set()


def _parse_request(request: bytes) -> tuple[str, dict[str, str]]:
    """The path and the (lower-cased) headers of an HTTP request head."""
    lines = request.decode("latin-1").split("\r\n")
    words = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return (words[1] if len(words) > 1 else "/"), headers


async def _refuse(writer: asyncio.StreamWriter, status: int, why: str) -> None:
    """Answer an opening handshake with HTTP ``status``; ``why`` is the body and is
    logged (a client library rarely shows the body)."""
    log.info("refused a handshake: HTTP %s (%s)", status, why)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Refused"
    body = why.encode()
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    writer.close()
