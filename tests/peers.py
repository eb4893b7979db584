"""Servers wavegate did not write: the ``websockets`` library's server and raw sockets.

Our own test servers agree with our client by construction; these do not. A raw
server does the opening handshake by hand and then does exactly what a test says
(stop reading, flood pings, close the TCP connection right after a close frame...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import davey
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from wavegate.testing import frames

RawHandler = Callable[["RawPeer"], Awaitable[None]]


@contextlib.asynccontextmanager
async def websockets_server(
    handler: Callable[[ServerConnection], Awaitable[None]], **options: object
) -> AsyncIterator[str]:
    """A ``websockets.asyncio.server`` on 127.0.0.1; yields its ``ws://`` URL."""
    options.setdefault("compression", None)
    async with serve(handler, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


class RawPeer:
    """One accepted TCP connection of a :func:`raw_server`, handshake done by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.request = b""

    @property
    def sock(self) -> socket.socket:
        sock: socket.socket = self.writer.get_extra_info("socket")
        return sock

    async def handshake(self, extra_headers: str = "", then: bytes = b"") -> None:
        """Read the upgrade request and accept it (``extra_headers``: CRLF-ended lines),
        with ``then`` (frames) in the same write as the answer."""
        self.request = await self.reader.readuntil(b"\r\n\r\n")
        key = ""
        for line in self.request.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        self.writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {frames.accept_key(key)}\r\n"
                f"{extra_headers}\r\n"
            ).encode()
            + then
        )
        await self.writer.drain()

    async def reject(self, status: int, reason: str = "Rejected") -> None:
        """Answer the upgrade request with an HTTP status and close."""
        self.request = await self.reader.readuntil(b"\r\n\r\n")
        self.writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await self.writer.drain()
        self.writer.close()

    def write_frame(self, opcode: int, payload: bytes = b"") -> None:
        self.writer.write(frames.encode_frame(opcode, payload))

    async def read_frame(self) -> tuple[int, bytes]:
        """The next client frame ``(opcode, unmasked payload)``."""
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        mask = await self.reader.readexactly(4)
        return head[0] & 0x0F, frames.unmask(await self.reader.readexactly(length), mask)

    def stop_reading(self) -> None:
        """Never read again: the client's writes fill the kernel buffers, then block."""
        transport = self.writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()


@contextlib.asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[str]:
    """A plain asyncio TCP server on 127.0.0.1 running ``handler`` per connection.

    Every connection is aborted and every handler cancelled on exit.
    """
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.append(writer)
        # Small buffers so that "stopped reading" is felt after a few hundred KiB.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        try:
            await handler(RawPeer(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()  # the handler is done with it

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()


def open_fds() -> int:
    """How many file descriptors this process has open (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def established_to(port: int) -> int:
    """How many of this process's TCP sockets are ESTABLISHED to ``port`` (Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                    count += 1
    return count


class UdpResponder(asyncio.DatagramProtocol):
    """A voice server's UDP side on a plain asyncio datagram endpoint: answers each
    IP discovery request as Discord does, after losing the first ``ignore`` ones."""

    def __init__(self, ignore: int = 0) -> None:
        self.ignore = ignore
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests.append(data)
        if len(self.requests) <= self.ignore or self.transport is None:
            return
        ssrc = int.from_bytes(data[4:8], "big")
        answer = struct.pack(">HHI", 2, 70, ssrc) + addr[0].encode().ljust(64, b"\0")
        self.transport.sendto(answer + addr[1].to_bytes(2, "big"), addr)


@contextlib.asynccontextmanager
async def udp_responder(ignore: int = 0) -> AsyncIterator[tuple[UdpResponder, int]]:
    """A :class:`UdpResponder` on 127.0.0.1; yields it and its port."""
    loop = asyncio.get_running_loop()
    transport, made = await loop.create_datagram_endpoint(
        lambda: UdpResponder(ignore), local_addr=("127.0.0.1", 0)
    )
    try:
        yield made, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


class ForeignVoiceGateway:
    """The voice gateway's happy path written on ``websockets``' server, closing each
    connection with ``code`` after ``after`` SPEAKING messages and dropping TCP right
    behind the close frame (``close_timeout``), as a busy real server may.

    Counts IDENTIFYs and RESUMEs so tests can tell a new session from a resume.
    """

    def __init__(
        self,
        code: int,
        *,
        after: int = 20,
        close_timeout: float = 0.001,
        heartbeat_interval: int = 5000,
    ) -> None:
        self.code = code
        self.heartbeat_interval = heartbeat_interval
        self.after = after
        self.close_timeout = close_timeout
        self.identifies = 0
        self.resumes = 0
        self.udp_port = 0

    async def handle(self, conn: ServerConnection) -> None:
        hello = {"heartbeat_interval": self.heartbeat_interval, "v": 8}
        await conn.send(json.dumps({"op": 8, "d": hello}))
        spoken = 0
        async for raw in conn:
            message = json.loads(raw)
            op, data = message["op"], message.get("d") or {}
            if op == 0:
                self.identifies += 1
                ready = {
                    "ssrc": 1,
                    "ip": "127.0.0.1",
                    "port": self.udp_port,
                    "modes": ["aead_aes256_gcm_rtpsize"],
                }
                await conn.send(json.dumps({"op": 2, "d": ready}))
            elif op == 1:
                description = {"mode": "aead_aes256_gcm_rtpsize", "secret_key": [0] * 32}
                await conn.send(json.dumps({"op": 4, "d": description}))
            elif op == 7:
                self.resumes += 1
                await conn.send(json.dumps({"op": 9, "d": None}))
            elif op == 3:
                await conn.send(json.dumps({"op": 6, "d": {"t": data.get("t")}}))
            elif op == 5:
                spoken += 1
                if spoken == self.after:
                    await conn.close(self.code, "closed by the test")
                    return

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with (
            udp_responder() as (_, self.udp_port),
            websockets_server(self.handle, close_timeout=self.close_timeout) as url,
        ):
            yield url + "?v=8"


class ForeignDaveMember:
    """A voice gateway member written on ``websockets``' client and davey alone, doing
    DAVE the way discord.py does (no expected user ids, op 23 after each commit or
    welcome, op 31 and a new key package on a failure): a client we did not write,
    to join a channel beside :class:`~wavegate.discord.voice.VoiceClient`s.
    ``commits=False``: it processes proposals but never commits them (a member the
    gateway must not wait for forever)."""

    def __init__(
        self, url: str, server_id: str, user_id: int, channel_id: int, *, commits: bool = True
    ) -> None:
        self.url = url
        self.commits = commits
        self.identify = {
            "server_id": server_id,
            "user_id": str(user_id),
            "session_id": f"foreign-{user_id}",
            "token": f"token-{user_id}",
            "max_dave_protocol_version": 1,
        }
        self.user_id = user_id
        self.channel_id = channel_id
        self.session: Any = None
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ForeignDaveMember:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with connect(self.url, compression=None) as ws:
            hello = json.loads(await ws.recv())
            beats = asyncio.ensure_future(self._beat(ws, hello["d"]["heartbeat_interval"]))
            try:
                await ws.send(json.dumps({"op": 0, "d": self.identify}))
                async for frame in ws:
                    if isinstance(frame, bytes):
                        await self._binary(ws, frame)
                    else:
                        await self._json(ws, json.loads(frame))
                    self.changed.set()
            finally:
                beats.cancel()

    async def _beat(self, ws: Any, interval_ms: float) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(interval_ms / 1000)
            nonce += 1
            await ws.send(json.dumps({"op": 3, "d": {"t": nonce, "seq_ack": -1}}))

    async def _json(self, ws: Any, message: dict[str, Any]) -> None:
        op, data = message["op"], message.get("d") or {}
        if op == 2:
            select = {"address": "127.0.0.1", "port": 1, "mode": data["modes"][0]}
            await ws.send(json.dumps({"op": 1, "d": {"protocol": "udp", "data": select}}))
        elif op == 4 and data.get("dave_protocol_version"):
            self.session = davey.DaveSession(1, self.user_id, self.channel_id)
            await ws.send(bytes([26]) + self.session.get_serialized_key_package())
        elif op == 21 and data["transition_id"]:
            await ws.send(json.dumps({"op": 23, "d": {"transition_id": data["transition_id"]}}))
        elif op == 24 and data["epoch"] == 1:
            self.session.reinit(1, self.user_id, self.channel_id)
            await ws.send(bytes([26]) + self.session.get_serialized_key_package())

    async def _binary(self, ws: Any, frame: bytes) -> None:
        op, body = frame[2], frame[3:]
        if op == 25:
            self.session.set_external_sender(body)
        elif op == 27:
            kind = (
                davey.ProposalsOperationType.append
                if body[0] == 0
                else davey.ProposalsOperationType.revoke
            )
            result = self.session.process_proposals(kind, body[1:])
            if result is not None and self.commits:
                await ws.send(bytes([28]) + result.commit + (result.welcome or b""))
        elif op in (29, 30):
            tid = struct.unpack_from(">H", body)[0]
            try:
                if op == 29:
                    self.session.process_commit(body[2:])
                else:
                    self.session.process_welcome(body[2:])
            except ValueError:
                await ws.send(json.dumps({"op": 31, "d": {"transition_id": tid}}))
                self.session.reinit(1, self.user_id, self.channel_id)
                await ws.send(bytes([26]) + self.session.get_serialized_key_package())
                return
            if tid:
                await ws.send(json.dumps({"op": 23, "d": {"transition_id": tid}}))


class ConnectProxy:
    """An HTTP proxy on raw asyncio streams, as a corporate proxy serves a websocket:
    ``CONNECT host:port`` (a tunnel), or a request in absolute form (``GET
    ws://host:port/path``, what aiohttp sends for ``ws://``) forwarded in origin form;
    then it pipes bytes both ways. ``targets`` records ``(method, host:port)``."""

    def __init__(self, refuse: int | None = None) -> None:
        self.targets: list[tuple[str, str]] = []
        self.refuse = refuse
        """Answer every request with this HTTP status (407, 502...) instead."""
        self._pipes: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, rest = head.split(b"\r\n", 1)
        method, target, version = line.decode().split(" ", 2)
        if self.refuse is not None:
            writer.write(f"HTTP/1.1 {self.refuse} No\r\nContent-Length: 0\r\n\r\n".encode())
            writer.close()
            return
        if method == "CONNECT":
            where, forward = target, b""
        elif target.startswith(("http://", "ws://")):
            where, _, path = target.split("://", 1)[1].partition("/")
            forward = f"{method} /{path} {version}\r\n".encode() + rest
        else:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.targets.append((method, where))
        host, port = where.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        if forward:
            upstream_writer.write(forward)
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.ensure_future(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
        """Serve on 127.0.0.1; yields the proxy's ``http://`` URL (``https://`` with
        ``tls``, the server's context)."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        scheme = "https" if tls is not None else "http"
        try:
            yield f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            for pipe in list(self._pipes):
                pipe.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            await server.wait_closed()
