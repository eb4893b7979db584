"""One connection's life: open, handshake, serve, end (the session's I/O side).

:func:`run` opens the connection, lets the protocol run its handshake, serves the
connection with one task, a second while messages wait to be sent, and the loop's
timers, and returns how it ended:

- **read** (a task): every received packet goes to the protocol; its outputs are
  carried out (the handshake is just the protocol's first states);
- **beat** (timer callbacks, :class:`Beats`): a heartbeat every interval, the first at a
  random point of the first; a zombie ends the connection;
- **write** (a task while the outbox has messages, :class:`Writer`): the outbox's head,
  once the socket has room.

The first of them to see the connection end decides its ending (:meth:`Link.end`);
the others are cancelled. Decisions about what to do next are the machine's.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..heartbeat import HeartbeatTracker, first_beat_delay, next_beat_due
from ..protocol import (
    Deliver,
    Fail,
    GatewayProtocol,
    HandshakeDone,
    HeartbeatAck,
    HeartbeatRequest,
    Notify,
    Output,
    Perform,
    Send,
)
from ..signals import DisconnectSignal, Event, PayloadError, ReconnectSignal, Signal
from ..websocket import Websocket
from .events import EventHub, EventKind, SessionStats
from .inbox import Inbox
from .machine import Ending
from .outbox import Outbox

log = logging.getLogger("wavegate.session")


@dataclass(frozen=True, slots=True)
class Timing:
    """How a connection is timed (see :class:`~wavegate.Session` for each)."""

    handshake_timeout: float = 10.0
    max_missed_acks: int = 2
    max_heartbeat_interval: float | None = None
    zombie_close_code: int = 4000


@dataclass(eq=False)
class Parts:
    """What a connection uses of its session."""

    ws: Websocket
    protocol: GatewayProtocol
    outbox: Outbox
    inbox: Inbox
    hub: EventHub
    stats: SessionStats
    timing: Timing
    clock: Callable[[], float]
    on_ready: Callable[[HandshakeDone], None]
    on_latency: Callable[[float], None]


class Link:
    """What one connection's tasks share: the first ending, the handshake, the tracker."""

    def __init__(self, parts: Parts) -> None:
        loop = asyncio.get_running_loop()
        self.parts = parts
        self.ending: asyncio.Future[Signal] = loop.create_future()
        self.handshake: asyncio.Future[HandshakeDone] = loop.create_future()
        self.tracker: HeartbeatTracker | None = None
        self.beats: Beats | None = None
        self.beat_requested = False
        """The gateway asked for a heartbeat before the beats started."""
        self.bugs: list[BaseException] = []
        """Exceptions (not signals) raised by the connection's callbacks."""
        self.close_reason = ""
        """Why we end it ourselves, for the close frame ("zombie connection"...)."""
        self.stopping = False
        """:func:`run` is cancelling the tasks: a cancellation is not theirs."""
        self.cancelled_inside = False
        """A task was cancelled by something other than :func:`run` (a bug)."""

    def end(self, signal: Signal) -> None:
        """The connection ended with ``signal``, unless it had already ended."""
        if not self.ending.done():
            self.ending.set_result(signal)

    def handshake_done(self, done: HandshakeDone) -> None:
        """The connection is ready (once: a second ``HandshakeDone`` is ignored)."""
        if self.handshake.done() or self.ending.done():
            return
        timing = self.parts.timing
        interval = done.heartbeat_interval
        if interval is not None:
            if timing.max_heartbeat_interval is not None:
                interval = min(interval, timing.max_heartbeat_interval)
            self.tracker = HeartbeatTracker(
                interval, max_missed=timing.max_missed_acks, clock=self.parts.clock
            )
        self.handshake.set_result(done)
        # Told at once, in order with the deliveries around it.
        self.parts.on_ready(done)

    def failed(self, bug: BaseException) -> None:
        """A bug (not a signal) in one of the connection's callbacks: it ends the
        connection, and :func:`run` raises it."""
        self.bugs.append(bug)
        self.task_failed()

    def task_failed(self) -> None:
        """A task or callback ended without a signal: that ends the connection."""
        if not self.ending.done():
            self.end(DisconnectSignal("a connection task failed", event=Event.LOCAL_CLOSE))

    def beat_now(self) -> None:
        """The gateway asked for a heartbeat: send one at once."""
        if self.beats is not None:
            self.beats.now()
        else:
            self.beat_requested = True

    def heard(self) -> None:
        if self.tracker is not None:
            self.tracker.frame_received()

    def acked(self, nonce: object) -> None:
        if self.tracker is not None and (latency := self.tracker.ack(nonce)) is not None:
            self.parts.on_latency(latency)


async def carry_out(link: Link, outputs: Sequence[Output]) -> None:
    """Do what the protocol asked, in order. If this is cancelled (the connection ended
    meanwhile), the deliveries not yet made are still made: the protocol counted them
    as received (its ``seq_ack`` moved on), so a resume would not replay them."""
    pending = list(outputs)
    try:
        while pending:
            await _carry_out_one(link, pending.pop(0))
    finally:
        for output in pending:
            if isinstance(output, Deliver):
                _deliver(link.parts, output)


def _deliver(parts: Parts, output: Deliver) -> None:
    parts.stats.received += 1
    parts.inbox.put(output.message)


async def _carry_out_one(link: Link, output: Output) -> None:
    parts = link.parts
    if isinstance(output, Deliver):
        _deliver(parts, output)
    elif isinstance(output, Send):
        if isinstance(output.payload, bytes):
            await parts.ws.send_bytes(output.payload)
        else:
            await parts.ws.send_json(output.payload)
    elif isinstance(output, HeartbeatAck):
        link.acked(output.nonce)
    elif isinstance(output, HeartbeatRequest):
        link.beat_now()
    elif isinstance(output, HandshakeDone):
        link.handshake_done(output)
    elif isinstance(output, Perform):
        await carry_out(link, await _perform(link, output))
    elif isinstance(output, Notify):
        parts.hub.emit(output.kind, detail=output.detail, data=dict(output.data))
    elif isinstance(output, Fail):
        link.close_reason = _close_reason(output.signal.reason)  # the server learns why
        link.end(output.signal)
    else:  # pragma: no cover - the Output union is closed
        raise TypeError(f"unknown protocol output {output!r}")


async def _perform(link: Link, perform: Perform) -> Sequence[Output]:
    """Await the protocol's I/O; its continuation's outputs. Nothing is read meanwhile,
    so the heartbeat tracker is held: ACKs may wait."""
    log.debug("performing %s", perform.what)
    tracker = link.tracker
    if tracker is not None:
        tracker.hold()
    try:
        result = await perform.action()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("%s failed: %s", perform.what, exc)
        if perform.failed is not None:
            return perform.failed(exc)
        signal = ReconnectSignal(
            f"{perform.what} failed: {exc}", event=Event.CONNECT_ERROR, initiated_locally=True
        )
        signal.__cause__ = exc
        return [Fail(signal)]
    finally:
        if tracker is not None:
            tracker.release()
    return perform.then(result)


async def read(link: Link, *, resume: bool) -> None:
    """Start the protocol's handshake, then hand it every received packet, until the
    connection ends."""
    parts = link.parts
    ws, inbox = parts.ws, parts.inbox
    await carry_out(link, parts.protocol.start(resume=resume))
    while True:
        if inbox.full() and link.handshake.done():
            # The handshake is always read through (a resume's replay may overfill).
            await _hold_reading(link)
        try:
            packet = await ws.receive()
        except PayloadError as error:
            link.heard()
            parts.hub.emit(EventKind.PAYLOAD_ERROR, detail=error.raw)
            continue
        link.heard()
        await carry_out(link, parts.protocol.receive(packet))
        # Not held while waiting for the next one: a heartbeat's ACK would live until
        # the next ACK, long enough for the collector to promote it and its payload.
        del packet


async def _hold_reading(link: Link) -> None:
    """Stop reading until the application makes room: the peer feels TCP backpressure,
    and ACKs and pongs wait unread, so neither may count against it meanwhile."""
    ws = link.parts.ws
    if link.tracker is not None:
        link.tracker.hold()
    ws.hold_keepalive()
    try:
        await link.parts.inbox.wait_room()
    finally:
        ws.release_keepalive()
        if link.tracker is not None:
            link.tracker.release()


class Beats:
    """A connection's heartbeats, on the loop's timers: no task of their own, and one
    short task per beat for its send. Each beat is due an interval after the last was
    due (:func:`~wavegate.heartbeat.next_beat_due`). (A task waiting out each
    interval, per connection, held ~2 KiB and, at thousands of sessions, left the
    garbage collector thousands of interval-long objects to promote and sweep.)

    At most one timer or callback is pending (``_timer``), and at most one send is in
    flight (``_sending``): a send still waiting for room when the next beat is due is
    given up on first (nothing was written; the beat counts as missed)."""

    def __init__(self, link: Link, tracker: HeartbeatTracker, first: float) -> None:
        self._link = link
        self._tracker = tracker
        self._loop = asyncio.get_running_loop()
        self._sending: asyncio.Future[None] | None = None
        self._giving_up = False
        self._asked = False
        """The gateway asked for a beat while one was being sent: beat once it is."""
        self._stopped = False
        # One context for all of this connection's beat callbacks: left to the loop,
        # every call_at, call_soon and done callback would copy the current one. (Not
        # for the send's task: an eager task would run in it while _tick already does.)
        self._context = contextvars.copy_context()
        # Bound once: a bound method made for each beat's timer would live until the
        # beat (an interval), long enough for the collector to promote it.
        self._due_now_call = self._due_now
        self._due = self._loop.time() + first
        self._timer: asyncio.Handle | None = self._at(self._due)

    def now(self) -> None:
        """Beat at once (the gateway asked), then an interval after that."""
        if self._stopped or self._giving_up:
            return  # giving up on a send: the beat comes as soon as it let go
        if self._sending is not None and not self._sending.done():
            self._asked = True
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = self._loop.time()
        self._timer = self._loop.call_soon(self._tick, context=self._context)

    def stop(self) -> asyncio.Future[None] | None:
        """No more beats. Returns the send in flight (now cancelled), for the caller
        to await: its outcome is handled already."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sending = self._sending
        if sending is not None and not sending.done():
            sending.cancel()
        return sending

    def _due_now(self) -> None:
        # One loop turn later: frames that arrived in this turn (an ACK, after a
        # stall) reach the read task first, and count before the beat judges them.
        self._timer = self._loop.call_soon(self._tick, context=self._context)

    def _at(self, due: float) -> asyncio.TimerHandle:
        return self._loop.call_at(due, self._due_now_call, context=self._context)

    def _tick(self) -> None:
        self._timer = None
        if self._stopped or self._link.ending.done():
            return
        sending = self._sending
        if sending is not None and not sending.done():
            self._giving_up = True
            sending.cancel()
            sending.add_done_callback(self._gave_up)
            return
        try:
            self._beat()
        except Exception as bug:  # a protocol bug: the connection ends, run() raises it
            self._link.failed(bug)

    def _gave_up(self, _: object) -> None:
        self._giving_up = False
        self._tick()

    def _beat(self) -> None:
        link, tracker = self._link, self._tracker
        parts = link.parts
        self._asked = False
        nonce = tracker.beat()
        if nonce is None:
            self._stopped = True
            reason = tracker.zombie_reason() or "zombie"
            parts.stats.zombies += 1
            parts.hub.emit(EventKind.ZOMBIE, detail=reason)
            _timed_out(link, reason, "zombie connection")
            return
        self._due = next_beat_due(self._due, self._loop.time(), tracker.interval)
        self._timer = self._at(self._due)
        heartbeat = parts.protocol.heartbeat(nonce)
        ws = parts.ws
        sending = (
            ws.send_bytes(heartbeat) if isinstance(heartbeat, bytes) else ws.send_json(heartbeat)
        )
        self._sending = asyncio.ensure_future(sending)
        self._sending.add_done_callback(self._sent, context=self._context)

    def _sent(self, task: asyncio.Future[None]) -> None:
        # Let go of the finished send at once: held until the next beat, every beat's
        # task would live long enough for the garbage collector to promote it to its
        # oldest generation, and those promotions are what trigger full collections.
        if self._sending is task:
            self._sending = None
        # Retrieved even when cancelled: a send whose own wait swallowed the
        # cancellation ends with the connection's signal instead.
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, Signal):
            self._link.end(error)
        elif error is not None:
            self._link.failed(error)
        elif self._asked:
            self.now()


def _close_reason(text: str) -> str:
    """``text`` cut to the 123 bytes of UTF-8 a close frame carries, on a character."""
    return text.encode(errors="replace")[:123].decode(errors="ignore")


def _timed_out(link: Link, reason: str, close_reason: str) -> None:
    """The connection is a zombie, or its handshake never ended: end it with the
    policy's signal for a keepalive timeout (``run`` then closes it with
    ``zombie_close_code``, never 1000, so the server keeps the session resumable)."""
    parts = link.parts
    code = parts.timing.zombie_close_code
    link.close_reason = close_reason
    link.end(
        parts.ws.policy.signal_for(
            Event.KEEPALIVE_TIMEOUT, code=code, reason=reason, initiated_locally=True
        )
    )


async def write(link: Link) -> None:
    """The outbox's head, whole, each time the socket has room for it, until the outbox
    is empty (the next message queued starts a new writer: :class:`Writer`)."""
    parts = link.parts
    ws, outbox = parts.ws, parts.outbox
    while outbox:
        await ws.writable()  # room first: a message waiting here is still queued
        item = outbox.head()
        if item is None:
            return  # withdrawn meanwhile
        # With room, a send writes at once without suspending: it returns written, or
        # raises (nothing written: the message stays first in line).
        if item.binary:
            await ws.send_bytes(item.frame)
        else:
            await ws._send_encoded(item.frame)  # from encode_json: UTF-8 already
        outbox.written(item)
        parts.stats.sent += 1


class Writer:
    """Runs :func:`write` in a task while messages wait, from the handshake on. An idle
    connection has no writer task: one waiting for the next message held a task, four
    coroutines and a future per session (1.8 KiB, measured at 2,000 sessions)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.task: asyncio.Task[None] | None = None
        link.parts.outbox.on_filled = self.wake
        if link.parts.outbox:
            self.wake()  # queued before the handshake was done

    def wake(self) -> None:
        """A message was queued: start a writer unless one is running."""
        if self.task is not None and not self.task.done():
            return  # it writes the outbox until it is empty
        if self._link.ending.done() or self._link.stopping:
            return  # run() is ending the connection: the message waits for the next one
        self.task = task = asyncio.ensure_future(_until_ended(self._link, write, done=True))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # Let go of a writer that finished its work: held, it would keep its coroutine
        # and the sender's context alive until the connection ends. One that failed or
        # was cancelled stays, for run() to report or await.
        if self.task is task and not task.cancelled() and task.exception() is None:
            self.task = None

    def stop(self) -> asyncio.Task[None] | None:
        """No more writers; the running one, if any, cancelled (for run() to await)."""
        self._link.parts.outbox.on_filled = None
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        return task


Tasks = set["asyncio.Task[None]"]


async def _until_ended(
    link: Link, work: Callable[[Link], Awaitable[None]], *, done: bool = False
) -> None:
    """Run ``work(link)`` as one of the connection's tasks; a signal it raises is the
    connection's ending, unless another task saw the end first. One that ends without
    a signal (an exception, a return unless ``done`` says its work may finish, or
    cancelled from inside: a bug) ends the connection too.

    The task reports its own ending, so :func:`run` awaits ``link.ending`` alone: an
    ``asyncio.wait`` over the tasks held a waiter, three sets and a callback (with its
    context) per task for as long as the connection lived."""
    # A task cancelled before its first step (a writer started as the connection ends,
    # or every task as asyncio.run() shuts down) never makes its work's coroutine,
    # so none is left never awaited; no except clause here sees that cancellation.
    try:
        await work(link)
    except Signal as signal:
        link.end(signal)
        return
    except asyncio.CancelledError:
        if not link.stopping and not link.ending.done():
            link.cancelled_inside = True
            link.task_failed()
        raise
    except GeneratorExit:
        raise  # the coroutine is being closed (its loop is gone): nothing to report to
    except BaseException:
        link.task_failed()
        raise
    if not done:
        link.task_failed()


async def run(parts: Parts, url: str, *, resume: bool) -> Ending:
    """Open a connection to ``url``, run the handshake, serve it; how it ended.

    Raises whatever is not a signal (a bug, in wavegate or in the protocol), after
    closing the connection so that the server keeps the session resumable.
    """
    try:
        await parts.ws.connect(url)
    except Signal as failed:
        return Ending(failed, while_opening=True)
    parts.stats.connects += 1
    link = Link(parts)
    reading = functools.partial(read, resume=resume)
    tasks: Tasks = {asyncio.ensure_future(_until_ended(link, reading))}
    writer: Writer | None = None
    try:
        if await _handshake(link):
            writer = Writer(link)
            if link.tracker is not None:
                first = 0.0 if link.beat_requested else first_beat_delay(link.tracker.interval)
                link.beats = Beats(link, link.tracker, first)
        await link.ending
    finally:
        link.stopping = True
        sending = link.beats.stop() if link.beats is not None else None
        writing = writer.stop() if writer is not None else None
        for task in tasks:
            task.cancel()
        tasks.update(t for t in (writing,) if t is not None)
        await asyncio.wait(tasks if sending is None else {*tasks, sending})
    bugs = [task.exception() for task in tasks if not task.cancelled() and task.exception()]
    bugs += link.bugs
    if not bugs and link.cancelled_inside:
        bugs.append(RuntimeError("a connection task was cancelled from inside (a protocol bug?)"))
    ending = link.ending.result()
    await _close(link, ending, bug=bool(bugs))
    for extra in bugs[1:]:
        log.error("another connection task failed too", exc_info=extra)
    if bugs:
        raise bugs[0]  # type: ignore[misc]
    return Ending(ending, reached_ready=link.handshake.done())


async def _handshake(link: Link) -> bool:
    """Wait for the protocol's handshake; ``False`` if the connection ended first, or
    if the handshake took longer than ``handshake_timeout`` (which then ends it)."""
    parts = link.parts
    waiting: set[asyncio.Future[Any]] = {link.handshake, link.ending}
    timeout = parts.timing.handshake_timeout
    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if not done:
        _timed_out(link, f"handshake not done within {timeout}s", "handshake timeout")
    return link.handshake.done() and not link.ending.done()


async def _close(link: Link, ending: Signal, *, bug: bool = False) -> None:
    """Make sure the connection is closed, then deliver what arrived before its end."""
    parts = link.parts
    ws = parts.ws
    if not ws.disconnected:
        # We ended it (a zombie, a handshake timeout, the protocol's Fail, a bug):
        # close it, keeping the session resumable unless it is over for good.
        final = isinstance(ending, DisconnectSignal) and not bug
        code = 1000 if final else parts.timing.zombie_close_code
        await ws.disconnect(code, link.close_reason)
    while True:  # frames read ahead before the end are still delivered
        try:
            packet = await ws.receive()
        except PayloadError:
            continue
        except Signal:
            return
        for output in parts.protocol.receive(packet):
            if isinstance(output, Deliver):
                _deliver(parts, output)
