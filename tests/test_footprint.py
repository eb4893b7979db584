"""What a connection and a session keep alive between messages. With thousands of
sessions in one process (workload G), every object held per connection is memory, and
one more object for each full garbage collection to walk while the loop stands still;
one created per heartbeat and held until the next is promoted to the collector's oldest
generation, and those promotions are what trigger full collections.

Each test runs against a server wavegate did not write (``websockets``' server)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import subprocess
import sys
from collections import deque

import aiohttp
import pytest

from wavegate import Signal, Websocket
from wavegate.discord.voice import VoiceClient
from wavegate.session import EventKind, SessionEvent, SessionState
from wavegate.transport import TEXT, TransportOptions, picows_transport

from .conftest import WebsocketFactory, eventually
from .peers import ForeignVoiceGateway, websockets_server
from .voice_harness import CREDENTIALS


async def _echo(conn: object) -> None:
    async for message in conn:  # type: ignore[attr-defined]
        await conn.send(message)  # type: ignore[attr-defined]


def _loggers() -> int:
    # type(), not isinstance(): a dead weakref proxy raises on isinstance().
    return sum(issubclass(type(o), logging.Logger) for o in gc.get_objects())


def _finished_tasks(running: str = "") -> int:
    """Finished tasks still alive (those running ``running``, if given)."""
    gc.collect()
    tasks = [o for o in gc.get_objects() if issubclass(type(o), asyncio.Task)]
    finished = [t for t in tasks if t.done()]
    names = [getattr(t.get_coro(), "__qualname__", "") for t in finished]
    return sum(not running or name == running for name in names)


@pytest.mark.timeout(30)
async def test_connections_make_no_logger_of_their_own_and_still_log(
    transport: str, make_ws: WebsocketFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # picows, given a Logger, made a child Logger for every connection it opened.
    caplog.set_level(logging.DEBUG, logger="wavegate")
    async with websockets_server(_echo) as url:
        first = make_ws()
        await first.connect(url)  # the transport's modules, and their loggers, loaded
        before = _loggers()
        sockets = [make_ws() for _ in range(5)]
        for ws in sockets:
            await ws.connect(url)
        for ws in sockets:
            await ws.send_json({"n": 1})
            assert (await ws.receive()).payload == {"n": 1}  # type: ignore[attr-defined]
        assert _loggers() == before
        for ws in [first, *sockets]:
            await ws.disconnect()
    if transport == "picows":  # picows' own records still come, under our name
        picows = [r for r in caplog.records if r.name == "wavegate.transport.picows"]
        assert any("WS connection established" in r.getMessage() for r in picows)


@pytest.mark.timeout(30)
async def test_a_connected_websocket_keeps_no_finished_task(make_ws: WebsocketFactory) -> None:
    async with websockets_server(_echo) as url:
        before = _finished_tasks()
        sockets = [make_ws() for _ in range(5)]
        for ws in sockets:
            await ws.connect(url)  # the opening ran as a task of its own
        # A loop turn or two: the wakeup that resumed this test holds the last opening.
        await eventually(lambda: _finished_tasks() <= before)
        for ws in sockets:
            await ws.disconnect()


@pytest.mark.timeout(30)
async def test_a_failed_opening_keeps_no_finished_task(make_ws: WebsocketFactory) -> None:
    # Its task holds the failure's exception and traceback: not kept through a backoff.
    async with websockets_server(_echo) as url:
        pass  # closed: nothing listens on that port any more
    before = _finished_tasks("connect")  # the transports' opening coroutine
    ws = make_ws(open_timeout=5)
    with pytest.raises(Signal):  # refused
        await ws.connect(url)
    # (The signal keeps its cause, whose traceback may hold tasks of the transport's
    # own: those go with the signal, at the next connect.)
    await eventually(lambda: _finished_tasks("connect") <= before)


@pytest.mark.timeout(60)
async def test_a_heartbeat_task_is_let_go_once_its_beat_is_sent(transport: str) -> None:
    held: list[int] = []  # finished send tasks still alive, counted at each ACK
    before = _finished_tasks("Websocket.send_json")  # any an earlier test left

    def on_event(event: SessionEvent) -> None:
        if event.kind is EventKind.HEARTBEAT and event.latency is not None:
            # The beat's send finished before the gateway could answer it.
            held.append(_finished_tasks("Websocket.send_json"))

    foreign = ForeignVoiceGateway(4006, heartbeat_interval=200)
    async with foreign.running() as url:
        voice = VoiceClient(
            url, CREDENTIALS, websocket=Websocket(transport=transport), on_event=on_event
        )
        async with voice:
            await voice.wait_ready(10)
            await eventually(lambda: len(held) >= 5, 20)
            assert voice.stats.zombies == 0
    assert max(held[:5]) <= before


def _deques_held_by_wavegate() -> int:
    """Deques held in the attributes of wavegate's own objects (those still alive)."""
    gc.collect()
    count = 0
    for obj in gc.get_objects():
        module = vars(type(obj)).get("__module__")
        if isinstance(module, str) and module.startswith("wavegate.") and hasattr(obj, "__dict__"):
            count += sum(isinstance(value, deque) for value in vars(obj).values())
    return count


@pytest.mark.timeout(60)
async def test_a_quiet_session_holds_no_empty_queue_blocks(transport: str) -> None:
    # An empty deque is a 600-byte block: the inbox (nothing delivered yet), the outbox
    # (nothing sent yet), the read-ahead backlog (never needed) and the UDP socket's
    # receive queue (discovery's answer taken, no media yet) are made when used.
    foreign = ForeignVoiceGateway(4006)
    async with foreign.running() as url:
        before = _deques_held_by_wavegate()
        voice = VoiceClient(url, CREDENTIALS, websocket=Websocket(transport=transport))
        async with voice:
            await voice.wait_ready(10)
            assert _deques_held_by_wavegate() == before
            await voice.send_speaking(1)
            assert _deques_held_by_wavegate() - before == 1  # the outbox, once used


def _connection_tasks() -> list[str]:
    """What each running connection task of a session does (its work's name)."""
    names = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "") == "_until_ended":
            work = coro.cr_frame.f_locals["work"]  # type: ignore[union-attr]
            names.append(getattr(work, "func", work).__qualname__)  # a partial, or not
    return sorted(names)


@pytest.mark.timeout(60)
async def test_a_session_runs_a_writer_only_while_messages_wait(transport: str) -> None:
    # A writer waiting for the next message held a task, four coroutines and a future
    # for each session (about 1.8 KiB at thousands of them: workload G).
    foreign = ForeignVoiceGateway(4006)
    async with foreign.running() as url:
        voice = VoiceClient(url, CREDENTIALS, websocket=Websocket(transport=transport))
        finished_before = _finished_tasks("_until_ended")
        async with voice:
            early = asyncio.ensure_future(voice.send_speaking(1))
            await asyncio.sleep(0)  # one loop turn: queued, long before the handshake ends
            assert voice.pending_sends == 1
            await voice.wait_ready(10)
            await early  # the writer the handshake started wrote it
            assert voice.stats.sent == 1
            await eventually(lambda: _connection_tasks() == ["read"])
            for n in range(1, 4):
                await voice.send_speaking(1)  # returns once written
                assert voice.stats.sent == n + 1
                await eventually(lambda: _connection_tasks() == ["read"])
            assert voice.state is SessionState.READY
            # Queued at once: the writer started by the first writes them all, in order.
            await asyncio.gather(*(voice.send_speaking(0) for _ in range(5)))
            assert voice.stats.sent == 9
            await eventually(lambda: _connection_tasks() == ["read"])
            # Each finished writer is let go (with its coroutine and the sender's context).
            await eventually(lambda: _finished_tasks("_until_ended") == finished_before)


def _made_by_wavegate(function: object) -> bool:
    """A (bound) function of wavegate's, scheduled by wavegate: aiohttp schedules its
    keepalive timers itself, with our response class's overrides as their callbacks."""
    if isinstance(getattr(function, "__self__", None), aiohttp.ClientWebSocketResponse):
        return False
    module = getattr(getattr(function, "__func__", function), "__module__", None)
    return isinstance(module, str) and module.startswith("wavegate.")


def _kept_between_beats(made: list[object]) -> dict[str, int]:
    """What wavegate made since the last beat and still holds: packets, bound methods,
    timers, and contexts made for its timers."""
    made_ids = {id(o) for o in made}
    timers = [
        o
        for o in made
        if isinstance(o, asyncio.Handle) and _made_by_wavegate(o._callback)  # type: ignore[attr-defined]
    ]
    return {
        "packets": sum(type(o).__module__ == "wavegate.packets" for o in made),
        "bound methods": sum(type(o).__name__ == "method" and _made_by_wavegate(o) for o in made),
        "timers": len(timers),
        "contexts for timers": sum(id(t._context) in made_ids for t in timers),  # type: ignore[attr-defined]
    }


@pytest.mark.timeout(60)
async def test_a_beat_leaves_nothing_alive_but_its_next_timer(transport: str) -> None:
    # What a beat makes that the session still holds at the next beat, an interval
    # later, is promoted to the collector's oldest generation at thousands of sessions,
    # and those promotions are what trigger full collections: the ACK's packet (held
    # by the read loop), a bound method and a context for each timer.
    loop = asyncio.get_running_loop()
    snapshots: list[list[object]] = []

    def snapshot() -> None:  # the read task, done with the ACK, waits for the next
        snapshots.append(gc.get_objects())

    def on_event(event: SessionEvent) -> None:
        beat = event.kind is EventKind.HEARTBEAT and event.latency is not None
        if beat and len(snapshots) < 6:
            loop.call_soon(snapshot)

    foreign = ForeignVoiceGateway(4006, heartbeat_interval=200)
    async with foreign.running() as url:
        # Keepalive pings too, on the transports whose timers are wavegate's.
        ws = Websocket(transport=transport, ping_interval=0.15)
        voice = VoiceClient(url, CREDENTIALS, websocket=ws, on_event=on_event)
        async with voice:
            await voice.wait_ready(10)
            await eventually(lambda: len(snapshots) >= 6, 20)
    kept = []
    for earlier, later in itertools.pairwise(snapshots[2:]):  # the first beats settled
        seen = {id(o) for o in earlier}
        kept.append(_kept_between_beats([o for o in later if id(o) not in seen]))
    assert max(k["timers"] for k in kept) >= 1  # each pair spans a beat; one at least its timer
    for k in kept:
        assert (k["packets"], k["bound methods"], k["contexts for timers"]) == (0, 0, 0), k


@pytest.mark.timeout(30)
async def test_a_picows_connection_lets_go_of_its_opening_headers() -> None:
    # picows keeps the handshake's request and response for the connection's life:
    # their headers were 1.7 KiB of each idle connection (workloads E and G).
    async with websockets_server(_echo) as url:
        opened = await picows_transport.connect(url, TransportOptions(ping_interval=None))
        try:
            assert len(opened._wt.request.headers) == 0
            assert len(opened._wt.response.headers) == 0
            opened.send(TEXT, b'{"still": "works"}')
            assert await opened.recv() == '{"still": "works"}'
        finally:
            await opened.close(1000, "")


_WRITER_AT_SHUTDOWN = """
import asyncio
from wavegate.discord.voice import VoiceClient, VoiceCredentials
from wavegate.testing.voice import FakeVoiceGateway

async def main():
    gateway = await FakeVoiceGateway(require_dave=False).__aenter__()
    voice = VoiceClient(gateway.url, VoiceCredentials("1001", "2001", "s", "t", "1001"))
    await voice.start()
    await voice.wait_ready(30)
    # Returning at once: the send starts a writer in asyncio.run()'s last loop turn,
    # and asyncio.run() then cancels every task, that writer before its first step.
    asyncio.ensure_future(voice.send_speaking(1))

asyncio.run(main())
print("returned")
"""


@pytest.mark.timeout(90)
def test_a_writer_cancelled_before_its_first_step_leaves_no_coroutine_never_awaited() -> None:
    ran = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _WRITER_AT_SHUTDOWN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.stdout.strip() == "returned", ran.stderr[-2000:]
    assert "never awaited" not in ran.stderr, ran.stderr[-2000:]
