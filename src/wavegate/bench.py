"""``wavegate bench``: a short benchmark with what is installed here.

It starts the load server in another process and measures, for each wavegate
transport available and for raw aiohttp (always installed, the reference): receive
throughput of 200-byte JSON text frames and the round trip of a small JSON message.
The full comparison with every peer is ``make bench`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import aiohttp
import orjson

from .transport import TRANSPORTS, get_connector
from .websocket import Websocket

MESSAGE = {"op": 3, "d": {"t": 1732412345678, "seq_ack": 42}}

Progress = Callable[[str, int, int], None]
"""Told ``(what, done, total)`` as the benchmark goes."""


def _quiet(what: str, done: int, total: int) -> None:
    return None


async def wavegate_stream(url: str, count: int, transport: str, max_size: int = 1 << 20) -> float:
    """Seconds to receive ``count`` messages, one ``await`` each (connecting not timed)."""
    ws = Websocket(transport=transport, ping_interval=None, max_size=max_size)
    await ws.connect(url)
    receive = ws.receive
    started = time.perf_counter()
    for _ in range(count):
        await receive()
    elapsed = time.perf_counter() - started
    await ws.disconnect()
    return elapsed


async def wavegate_round_trips(url: str, count: int, transport: str) -> list[float]:
    """Seconds for each of ``count`` small JSON messages sent to an echo server and back."""
    ws = Websocket(transport=transport, ping_interval=None)
    await ws.connect(url)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await ws.send_json(MESSAGE)
        await ws.receive()
        samples.append(time.perf_counter() - started)
    await ws.disconnect()
    return samples


async def _aiohttp_stream(url: str, count: int) -> float:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        started = time.perf_counter()
        for _ in range(count):
            orjson.loads((await ws.receive()).data)
        return count / (time.perf_counter() - started)


async def _aiohttp_echo(url: str, count: int) -> float:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send_bytes(orjson.dumps(MESSAGE))
            orjson.loads((await ws.receive()).data)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e6


async def _rate(url: str, count: int, transport: str) -> float:
    return count / await wavegate_stream(url, count, transport)


async def _median_us(url: str, count: int, transport: str) -> float:
    return statistics.median(await wavegate_round_trips(url, count, transport)) * 1e6


def _available_transports() -> list[str]:
    available = []
    for name in TRANSPORTS:
        try:
            get_connector(name)
        except ValueError:
            continue
        available.append(name)
    return available


async def _measure(
    port: int, messages: int, rounds: int, progress: Progress
) -> dict[str, tuple[float, float]]:
    stream = f"ws://127.0.0.1:{port}/stream?kind=text&size=200&count={messages}"
    echo = f"ws://127.0.0.1:{port}/echo"
    clients: dict[str, tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]] = {
        "aiohttp (raw)": (
            lambda: _aiohttp_stream(stream, messages),
            lambda: _aiohttp_echo(echo, 2000),
        ),
    }
    for name in _available_transports():
        clients[f"wavegate ({name})"] = (
            lambda name=name: _rate(stream, messages, name),  # type: ignore[misc]
            lambda name=name: _median_us(echo, 2000, name),  # type: ignore[misc]
        )
    rates: dict[str, list[float]] = {name: [] for name in clients}
    latencies: dict[str, list[float]] = {name: [] for name in clients}
    await _aiohttp_stream(stream, messages)  # warm-up: the server builds its frames
    total, done = rounds * len(clients), 0
    for round_number in range(rounds):
        for name, (throughput, round_trip) in clients.items():
            progress(f"round {round_number + 1}/{rounds}: {name}", done, total)
            rates[name].append(await throughput())
            latencies[name].append(await round_trip())
            done += 1
    progress("done", done, total)
    return {
        name: (statistics.median(rates[name]), statistics.median(latencies[name]))
        for name in clients
    }


def run(
    out: TextIO, *, messages: int = 100_000, rounds: int = 3, progress: Progress = _quiet
) -> int:
    """Run the short benchmark and print a table; returns the exit status.
    ``progress`` hears each step (the CLI shows a progress bar on a terminal)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "wavegate.testing.loadserver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        results = asyncio.run(_measure(port, messages, rounds, progress))
    finally:
        server.terminate()
        server.wait(10)
    reference_rate, reference_latency = results["aiohttp (raw)"]
    print(
        f"{'client':<20} {'200 B JSON msg/s':>17} {'vs aiohttp':>11} {'RTT p50 µs':>11}", file=out
    )
    for name, (rate, latency) in results.items():
        print(
            f"{name:<20} {rate:>17,.0f} {rate / reference_rate:>10.2f}x {latency:>11.1f}", file=out
        )
    print(
        f"({'one round' if rounds == 1 else f'median of {rounds} rounds'};"
        f" round-trip reference: aiohttp {reference_latency:.1f} µs)",
        file=out,
    )
    return 0
