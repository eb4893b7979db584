"""One benchmark client per library, each run in its own process by ``run.py``.

    python -m benchmarks.clients CLIENT MODE URL COUNT

MODE is ``stream`` (receive COUNT messages one ``await`` at a time, decoding JSON text
frames with orjson; prints msgs/s), ``echo`` (COUNT round trips of a small JSON
message; prints latencies) or ``idle`` (hold COUNT connections; prints RSS bytes per
connection). Connecting is not timed. Output: one JSON line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

ECHO_MESSAGE = {"op": 3, "d": {"t": 1732412345678, "seq_ack": 42}}
ECHO_BYTES = orjson.dumps(ECHO_MESSAGE)
MAX_SIZE = 1 << 24


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# -- wavegate -------------------------------------------------------------------------


def wavegate_factory(transport: str) -> Callable[[], Any]:
    from wavegate import Websocket

    def make() -> Any:
        return Websocket(transport=transport, ping_interval=None, max_size=MAX_SIZE)

    return make


async def wavegate_stream(url: str, count: int, transport: str) -> float:
    # The same measurement as `wavegate bench`, so the two never drift apart.
    from wavegate.bench import wavegate_stream as measure

    return await measure(url, count, transport, max_size=MAX_SIZE)


async def wavegate_echo(url: str, count: int, transport: str) -> list[float]:
    from wavegate.bench import wavegate_round_trips

    return await wavegate_round_trips(url, count, transport)


async def wavegate_connect(url: str, transport: str) -> Callable[[], Awaitable[None]]:
    ws = wavegate_factory(transport)()
    await ws.connect(url)
    return ws.disconnect  # type: ignore[no-any-return]


# -- hikari-wave 0.7.0a1 (the reference) ----------------------------------------------


async def hikari_stream(url: str, count: int) -> float:
    from hikariwave.internal.websocket import Websocket

    ws = Websocket()
    await ws.connect(url)
    receive = ws.receive
    started = time.perf_counter()
    for _ in range(count):
        await receive()
    elapsed = time.perf_counter() - started
    await ws.disconnect()
    return elapsed


async def hikari_echo(url: str, count: int) -> list[float]:
    from hikariwave.internal.websocket import Websocket

    ws = Websocket()
    await ws.connect(url)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await ws.send_json(ECHO_MESSAGE)
        await ws.receive()
        latencies.append(time.perf_counter() - started)
    await ws.disconnect()
    return latencies


async def hikari_connect(url: str) -> Callable[[], Awaitable[None]]:
    from hikariwave.internal.websocket import Websocket

    ws = Websocket()
    await ws.connect(url)
    return ws.disconnect  # type: ignore[no-any-return]


# -- websockets ---------------------------------------------------------------------


async def websockets_stream(url: str, count: int) -> float:
    import websockets

    async with websockets.connect(
        url, max_size=MAX_SIZE, compression=None, ping_interval=None
    ) as ws:
        recv, loads = ws.recv, orjson.loads
        started = time.perf_counter()
        for _ in range(count):
            message = await recv()
            if isinstance(message, str):
                loads(message)
        return time.perf_counter() - started


async def websockets_echo(url: str, count: int) -> list[float]:
    import websockets

    async with websockets.connect(url, compression=None, ping_interval=None) as ws:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(ECHO_BYTES.decode())
            orjson.loads(await ws.recv())
            latencies.append(time.perf_counter() - started)
        return latencies


async def websockets_connect(url: str) -> Callable[[], Awaitable[None]]:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, ping_interval=None)
    return ws.close


# -- aiohttp --------------------------------------------------------------------------


async def aiohttp_stream(url: str, count: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        receive, loads, text = ws.receive, orjson.loads, aiohttp.WSMsgType.TEXT
        started = time.perf_counter()
        for _ in range(count):
            message = await receive()
            if message.type is text:
                loads(message.data)
        return time.perf_counter() - started


async def aiohttp_echo(url: str, count: int) -> list[float]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send_str(ECHO_BYTES.decode())
            orjson.loads((await ws.receive()).data)
            latencies.append(time.perf_counter() - started)
        return latencies


async def aiohttp_connect(url: str) -> Callable[[], Awaitable[None]]:
    import aiohttp

    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url)

    async def close() -> None:
        await ws.close()
        await session.close()

    return close


# -- picows -----------------------------------------------------------------------------


async def picows_recv_stream(url: str, count: int) -> float:
    from picows.websockets import connect

    async with connect(url, max_size=MAX_SIZE, ping_interval=None) as ws:
        recv, loads = ws.recv, orjson.loads
        started = time.perf_counter()
        for _ in range(count):
            message = await recv()
            if isinstance(message, str):
                loads(message)
        return time.perf_counter() - started


async def picows_recv_echo(url: str, count: int) -> list[float]:
    from picows.websockets import connect

    async with connect(url, ping_interval=None) as ws:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(ECHO_BYTES.decode())
            orjson.loads(await ws.recv())
            latencies.append(time.perf_counter() - started)
        return latencies


def _picows_listener(count: int, done: asyncio.Future[float], echo: bool) -> Any:
    import picows

    class Listener(picows.WSListener):
        def __init__(self) -> None:
            super().__init__()
            self.left = count
            self.started = 0.0
            self.sent_at = 0.0
            self.latencies: list[float] = []

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is picows.WSMsgType.TEXT:
                orjson.loads(frame.get_payload_as_memoryview())
            elif kind is not picows.WSMsgType.BINARY:
                return
            self.left -= 1
            if echo:
                self.latencies.append(time.perf_counter() - self.sent_at)
                if self.left:
                    self.sent_at = time.perf_counter()
                    transport.send(picows.WSMsgType.TEXT, ECHO_BYTES)
            if not self.left and not done.done():
                done.set_result(time.perf_counter())

    return Listener


async def picows_callback_stream(url: str, count: int) -> float:
    import picows

    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    transport, _ = await picows.ws_connect(
        _picows_listener(count, done, echo=False), url, max_frame_size=MAX_SIZE
    )
    # Timed from the end of connect, like every other client (frames that arrived
    # during the handshake count against it, as they do for the others).
    started = time.perf_counter()
    finished = await done
    transport.disconnect()
    return finished - started


async def picows_callback_echo(url: str, count: int) -> list[float]:
    import picows

    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    transport, listener_base = await picows.ws_connect(
        _picows_listener(count, done, echo=True), url
    )
    listener: Any = listener_base
    listener.sent_at = time.perf_counter()
    transport.send(picows.WSMsgType.TEXT, ECHO_BYTES)
    await done
    transport.disconnect()
    return listener.latencies  # type: ignore[no-any-return]


async def picows_connect(url: str) -> Callable[[], Awaitable[None]]:
    import picows

    transport, _ = await picows.ws_connect(picows.WSListener, url)

    async def close() -> None:
        transport.disconnect()

    return close


# -- the physical limit: the same bytes read from a plain socket -------------------------


async def raw_socket_stream(url: str, count: int) -> float:
    """The same bytes from a plain blocking socket, no parsing: the physical limit."""
    import socket
    from urllib.parse import parse_qs, urlsplit

    from wavegate.testing.loadserver import stream_blob

    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    total = len(stream_blob(query["kind"], int(query["size"]), count))
    sock = socket.create_connection((parts.hostname, parts.port or 80))
    sock.sendall(
        (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    buffer = bytearray(1 << 22)
    view = memoryview(buffer)
    started = time.perf_counter()
    left = total
    while left > 0:
        got = sock.recv_into(view, min(left, len(buffer)))
        if not got:
            break
        left -= got
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed


STREAM: dict[str, Callable[[str, int], Coroutine[Any, Any, float]]] = {
    "wavegate-aiohttp": lambda url, n: wavegate_stream(url, n, "aiohttp"),
    "wavegate-picows": lambda url, n: wavegate_stream(url, n, "picows"),
    "wavegate-picows-python": lambda url, n: wavegate_stream(url, n, "picows"),
    "hikari-wave": hikari_stream,
    "websockets": websockets_stream,
    "aiohttp": aiohttp_stream,
    "picows-recv": picows_recv_stream,
    "picows-callback": picows_callback_stream,
    "raw-socket": raw_socket_stream,
}
ECHO: dict[str, Callable[[str, int], Coroutine[Any, Any, list[float]]]] = {
    "wavegate-aiohttp": lambda url, n: wavegate_echo(url, n, "aiohttp"),
    "wavegate-picows": lambda url, n: wavegate_echo(url, n, "picows"),
    "wavegate-picows-python": lambda url, n: wavegate_echo(url, n, "picows"),
    "hikari-wave": hikari_echo,
    "websockets": websockets_echo,
    "aiohttp": aiohttp_echo,
    "picows-recv": picows_recv_echo,
    "picows-callback": picows_callback_echo,
}
CONNECT: dict[str, Callable[[str], Coroutine[Any, Any, Callable[[], Awaitable[None]]]]] = {
    "wavegate-aiohttp": lambda url: wavegate_connect(url, "aiohttp"),
    "wavegate-picows": lambda url: wavegate_connect(url, "picows"),
    "hikari-wave": hikari_connect,
    "websockets": websockets_connect,
    "aiohttp": aiohttp_connect,
    "picows-callback": picows_connect,
}


async def idle_memory(client: str, url: str, count: int) -> float:
    connect = CONNECT[client]
    closer = await connect(url)  # import and warm up everything first
    await closer()
    gc.collect()
    before = rss()
    closers = [await connect(url) for _ in range(count)]
    gc.collect()
    per_connection = (rss() - before) / count
    for close in closers:
        await close()
    return per_connection


def main() -> None:
    client, mode, url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if client == "wavegate-picows-python":
        # picows without the compiled listener: what an install without a C compiler runs.
        os.environ["WAVEGATE_PICOWS_LISTENER"] = "python"
    if mode == "stream":
        elapsed: float = asyncio.run(STREAM[client](url, count))
        result: dict[str, Any] = {"rate": count / elapsed}
    elif mode == "stream-warm":
        # Once untimed, then timed, in one process: large buffers are then allocated
        # already (a first, cold run of 64 KiB frames measures the allocator).
        asyncio.run(STREAM[client](url, count))
        result = {"rate": count / asyncio.run(STREAM[client](url, count))}
    elif mode == "echo":
        result = {"latencies": asyncio.run(ECHO[client](url, count))}
    else:
        from wavegate.testing.loadserver import _raise_fd_limit

        _raise_fd_limit()
        result = {"bytes_per_connection": asyncio.run(idle_memory(client, url, count))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
