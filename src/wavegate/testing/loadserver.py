"""A websocket load server that costs almost nothing per message (for benchmarks).

Run it in its own process: ``python -m wavegate.testing.loadserver`` prints
``PORT <n>`` and serves on 127.0.0.1 until killed. Paths:

- ``/stream?kind=text|binary&size=N&count=M``: send M pre-built frames of N bytes
  (text frames hold a JSON object of exactly N bytes), then close with 1000.
- ``/echo``: send every data frame back.
- ``/idle``: keep the connection open and answer pings.

It never imports the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import resource
import socket
import struct
import sys
from urllib.parse import parse_qs, urlsplit

from . import frames


def json_payload(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 40)."""
    base = {"op": 5, "seq": 123456, "d": {"speaking": 1, "ssrc": 4242, "pad": ""}}
    empty = len(json.dumps(base, separators=(",", ":")))
    base["d"]["pad"] = "x" * max(0, size - empty)  # type: ignore[index]
    payload = json.dumps(base, separators=(",", ":")).encode()
    assert len(payload) == max(size, empty)
    return payload


@functools.lru_cache(maxsize=8)
def stream_blob(kind: str, size: int, count: int) -> bytes:
    """``count`` pre-built frames of one workload, concatenated."""
    if kind == "text":
        frame = frames.encode_frame(frames.TEXT, json_payload(size))
    else:
        frame = frames.encode_frame(
            frames.BINARY, bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
        )
    return frame * count


class _LoadProtocol(asyncio.Protocol):
    """One connection: parses frames from its buffer (no awaits), writes with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.path: str | None = None
        self.blob: memoryview | None = None
        self.sent = 0
        self.paused = False
        self.close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Keep the kernel fed while streaming: pause only past 4 MiB of unsent data.
        transport.set_write_buffer_limits(high=4 << 20)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.path is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._handshake(bytes(self.buffer[:end]).decode("latin-1"))
            del self.buffer[: end + 4]
        self._frames()

    def _handshake(self, request: str) -> None:
        assert self.transport is not None
        lines = request.split("\r\n")
        target = urlsplit(lines[0].split(" ")[1])
        key = next(
            line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith("sec-websocket-key")
        )
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {frames.accept_key(key)}\r\n\r\n"
            ).encode()
        )
        self.path = target.path
        if target.path == "/stream":
            query = {name: values[0] for name, values in parse_qs(target.query).items()}
            # The cached blob is written as is (no per-connection copy), then one close frame.
            kind, size, count = query.get("kind", "text"), int(query["size"]), int(query["count"])
            self.blob = memoryview(stream_blob(kind, size, count))
            self._stream()

    def _stream(self) -> None:
        assert self.transport is not None
        assert self.blob is not None
        while not self.paused and self.sent < len(self.blob):
            chunk = self.blob[self.sent : self.sent + (1 << 20)]
            self.sent += len(chunk)
            self.transport.write(chunk)
            if self.sent == len(self.blob):
                self.transport.write(frames.encode_frame(frames.CLOSE, frames.close_payload(1000)))
                self.close_sent = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.blob is not None:
            self._stream()

    def _frames(self) -> None:
        assert self.transport is not None
        buffer = self.buffer
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                offset = 10
            masked = buffer[1] & 0x80
            end = offset + (4 if masked else 0) + length
            if len(buffer) < end:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[end - length : end])
            if masked:
                payload = frames.unmask(payload, bytes(buffer[offset : offset + 4]))
            del buffer[:end]
            if opcode == frames.CLOSE:
                if not self.close_sent:  # a close answers a close, once (RFC 6455 5.5.1)
                    self.transport.write(frames.encode_frame(frames.CLOSE, payload[:2]))
                self.transport.close()
                return
            if opcode == frames.PING:
                self.transport.write(frames.encode_frame(frames.PONG, payload))
            elif opcode in (frames.TEXT, frames.BINARY) and self.path == "/echo":
                self.transport.write(frames.encode_frame(opcode, payload))


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled, announcing the port on stdout."""
    _raise_fd_limit()
    server = await asyncio.get_running_loop().create_server(_LoadProtocol, host, port, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """``python -m wavegate.testing.loadserver [--port N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
