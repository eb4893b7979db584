"""The session supervisor: acts on signals so callers never hand-roll the loop.

A :class:`Session` owns one :class:`~wavegate.Websocket` and a protocol object (see
:class:`SessionProtocol`; the Discord voice client is one). It connects, runs the
protocol's handshake, heartbeats, and on every signal decides what to do: resume at
once, open a new session after a backoff, or stop and report an :class:`Outcome`.
Outgoing messages wait in a bounded queue across reconnects; received messages wait
in the inbox until the application reads them.

Task ownership: the session's runner task owns, per connection, a reader, a
heartbeater and a writer; it cancels and awaits them when any of them ends, and
``close()`` cancels and awaits the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Protocol

from .backoff import Backoff, RetrySchedule
from .heartbeat import HeartbeatTracker
from .policy import CONNECT_FAILURES
from .redact import redact_url
from .signals import (
    DisconnectSignal,
    Event,
    PayloadError,
    ReconnectSignal,
    ResumeSignal,
    SendQueueFullError,
    SendTimeoutError,
    SessionClosedError,
    Signal,
)
from .websocket import Websocket, check_close

log = logging.getLogger("wavegate.session")

Deliver = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Returned by :meth:`SessionProtocol.interpret` for a heartbeat ACK."""

    nonce: object


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """Returned by :meth:`SessionProtocol.interpret` when the server asks for a beat now."""


class SessionProtocol(Protocol):
    """What the supervisor needs from a gateway protocol (voice, main gateway...)."""

    async def open(self, ws: Websocket, deliver: Deliver, *, resume: bool) -> float:
        """Run the opening handshake (IDENTIFY, or RESUME when ``resume``) on a fresh
        connection; return the heartbeat interval in seconds.

        Application messages that arrive during the handshake (a resume's replay) go
        to ``deliver`` in order. Signals from ``ws`` propagate.
        """
        ...

    def can_resume(self) -> bool:
        """Whether there is a session to resume."""
        ...

    def new_session(self) -> None:
        """Forget the resumable state: the next ``open()`` starts a new session."""
        ...

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        """The heartbeat payload for ``nonce``."""
        ...

    def interpret(self, packet: Any) -> Any:
        """Classify a received packet: a :class:`HeartbeatAck`, a
        :class:`HeartbeatRequest`, ``None`` (consumed) or an application message."""
        ...


class SessionState(str, Enum):
    """Where a :class:`Session` is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    RESUMING = "resuming"
    READY = "ready"
    WAITING = "waiting"
    """Backing off before the next attempt."""
    AWAITING_MOVE = "awaiting_move"
    """Closed with one of ``move_codes`` (4014): waiting up to ``move_grace`` for
    :meth:`Session.move`."""
    STOPPED = "stopped"


class EventKind(str, Enum):
    """Kinds of :class:`SessionEvent`."""

    CONNECTING = "connecting"
    RESUMING = "resuming"
    READY = "ready"
    RESUMED = "resumed"
    CONNECTION_LOST = "connection_lost"
    RESUME_SCHEDULED = "resume_scheduled"
    RECONNECT_SCHEDULED = "reconnect_scheduled"
    ZOMBIE = "zombie"
    HEARTBEAT = "heartbeat"
    PAYLOAD_ERROR = "payload_error"
    MOVE_WAIT = "move_wait"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened to a session.

    Attributes:
        kind: what happened.
        at: ``time.monotonic()`` when it happened.
        attempt: the attempt number, for scheduled retries.
        delay: seconds until the next attempt, for scheduled retries.
        signal: the signal behind ``CONNECTION_LOST``/``STOPPED``.
        latency: heartbeat round trip in seconds, for ``HEARTBEAT``.
        detail: a short description (the raw text for ``PAYLOAD_ERROR``).
    """

    kind: EventKind
    at: float
    attempt: int = 0
    delay: float | None = None
    signal: Signal | None = None
    latency: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Why a session stopped.

    Attributes:
        reason: ``"closed"`` (by ``close()``), ``"disconnect"`` (a
            :class:`DisconnectSignal`), ``"retries_exhausted"`` or ``"error"``.
        signal: the last signal, if any.
        error: the unexpected exception, for ``"error"``.
    """

    reason: str
    signal: Signal | None = None
    error: BaseException | None = None

    @property
    def code(self) -> int | None:
        """The close code (or HTTP status) of the last signal."""
        return None if self.signal is None else self.signal.code

    def __str__(self) -> str:
        return self.reason if self.signal is None else f"{self.reason}: {self.signal}"


@dataclass(eq=False)
class _Outgoing:
    """A message handed to ``send_*``: queued until written (once, whole) or withdrawn.

    The writer waits for room in the socket *before* taking a message, and writing
    never waits, so a message is never "maybe written" while anyone waits: its
    deadline or its sender's cancellation can always tell queued from written.
    """

    binary: bool
    payload: Any
    future: asyncio.Future[None]
    written: bool = False
    withdrawn: bool = False


class _Inbox:
    """Received messages waiting for the application, in order.

    ``limit`` is where the reader stops reading the socket (:meth:`wait_room`); a few
    more may be put while a connection's handshake replays or its end is drained.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[Any] = deque()
        self._limit = limit
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        self._items.append(item)
        self._readable.set()
        if len(self._items) >= self._limit:
            self._room.clear()

    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def get(self) -> Any:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) < self._limit:
            self._room.set()
        return item

    def last(self) -> Any:
        return self._items[-1] if self._items else None


@dataclass
class SessionStats:
    """Counters of a session's life."""

    connects: int = 0
    resumes: int = 0
    reconnects: int = 0
    zombies: int = 0
    sent: int = 0
    received: int = 0
    events_dropped: int = 0
    recoveries: list[float] = field(default_factory=list)
    """Seconds from each connection loss to the next READY/RESUMED."""


class Session:
    """Supervises a gateway session over a :class:`~wavegate.Websocket`.

    Args:
        url: the gateway URL.
        protocol: the gateway protocol (see :class:`SessionProtocol`).
        websocket: the connection to drive (a default ``Websocket()`` otherwise).
        backoff: retry delays for new sessions and repeated resumes.
        max_resume_attempts: consecutive resume attempts before a new session.
        handshake_timeout: seconds for a handshake (HELLO..READY/RESUMED).
        max_missed_acks: heartbeats in a row without ACK that make a zombie.
        max_heartbeat_interval: beat at least this often (seconds), whatever the
            server asks; ``None`` uses the server's interval.
        send_queue_size: outgoing messages that may wait; more raise
            :class:`SendQueueFullError`.
        receive_queue_size: received messages that may wait for the application;
            past it the session stops reading the socket (TCP backpressure), and
            zombie detection waits until the application reads again.
        close_timeout: seconds ``close()`` waits for the runner.
        zombie_close_code: the code we close a zombie with (not 1000/1001, so the
            server keeps the session resumable).
        move_grace: seconds to wait for :meth:`move` after a close with one of
            ``move_codes`` before stopping (Discord voice 4014 on a channel move).
        move_codes: the close codes that open the ``move_grace`` window.
        on_event: called with every :class:`SessionEvent` (must not block).
        clock: a monotonic clock; random_source: for backoff jitter (tests).
    """

    def __init__(
        self,
        url: str,
        protocol: SessionProtocol,
        *,
        websocket: Websocket | None = None,
        backoff: Backoff | None = None,
        max_resume_attempts: int = 3,
        handshake_timeout: float = 10.0,
        max_missed_acks: int = 2,
        max_heartbeat_interval: float | None = None,
        send_queue_size: int = 1024,
        receive_queue_size: int = 1024,
        close_timeout: float = 5.0,
        zombie_close_code: int = 4000,
        move_grace: float = 0.0,
        move_codes: frozenset[int] = frozenset({4014}),
        on_event: Callable[[SessionEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        random_source: Any = None,
    ) -> None:
        if (
            max_resume_attempts < 0
            or send_queue_size < 1
            or receive_queue_size < 1
            or handshake_timeout <= 0
        ):
            raise ValueError(
                "max_resume_attempts >= 0, send_queue_size >= 1, receive_queue_size >= 1, "
                "handshake_timeout > 0"
            )
        self.url = url
        self.protocol = protocol
        self.ws = websocket if websocket is not None else Websocket()
        self._schedule = RetrySchedule(backoff or Backoff(), clock=clock, rng=random_source)
        self.max_resume_attempts = max_resume_attempts
        self.handshake_timeout = handshake_timeout
        self.max_missed_acks = max_missed_acks
        self.max_heartbeat_interval = max_heartbeat_interval
        self.send_queue_size = send_queue_size
        self.close_timeout = close_timeout
        self.zombie_close_code = zombie_close_code
        self.move_grace = move_grace
        self.move_codes = move_codes
        self._on_event = on_event
        self._clock = clock
        self.state = SessionState.IDLE
        self.stats = SessionStats()
        self.latency: float | None = None
        self.outcome: Outcome | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._moved = asyncio.Event()
        self._ready = asyncio.Event()
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._inbox = _Inbox(receive_queue_size)
        self._subscribers: list[asyncio.Queue[SessionEvent | None]] = []
        self._beat_now = asyncio.Event()
        self._zombie: Signal | None = None
        self._lost_at: float | None = None

    def __repr__(self) -> str:
        return f"<Session {self.state.value} {redact_url(self.url)}>"

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising (returns at once; see :meth:`wait_ready`)."""
        if self._runner is not None:
            raise RuntimeError("session already started")
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="wavegate-session")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the session is READY (or raise :class:`SessionClosedError`)."""
        ready = asyncio.ensure_future(self._ready.wait())
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {ready, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            stopped.cancel()
        if self._ready.is_set():
            return
        if self.outcome is not None or self._stopping.is_set():
            raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
        raise asyncio.TimeoutError("session not ready in time")

    async def close(self, code: int = 1000, reason: str = "") -> Outcome:
        """Stop: close the connection with ``code``, cancel and await every task.

        Close with a 4000-4999 code to leave the server-side session resumable.

        Raises:
            ValueError: ``code`` is not 1000 or in 3000..4999 (1001 included: it is
                the server's to send), or ``reason`` is over 123 bytes. Nothing is
                closed then.
        """
        check_close(code, reason)
        self._stopping.set()
        await self.ws.disconnect(code, reason)
        runner = self._runner
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), self.close_timeout)
            except asyncio.TimeoutError:
                runner.cancel()
                await asyncio.wait({runner})
        if self.outcome is None:
            self._finish(Outcome("closed"))
        assert self.outcome is not None
        return self.outcome

    async def wait_closed(self) -> Outcome:
        """Wait until the session stops by itself (or by ``close()``) and say why."""
        if self._runner is not None:
            await asyncio.wait({self._runner})
        assert self.outcome is not None, "session was never started"
        return self.outcome

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def move(self, url: str | None = None) -> None:
        """The endpoint changed (e.g. a new VOICE_SERVER_UPDATE): use ``url`` for the
        next connection; ends a ``move_grace`` wait with a new session."""
        if url is not None:
            self.url = url
        self._moved.set()

    # -- sending and receiving -----------------------------------------------------

    async def send_json(self, payload: dict[str, Any], *, timeout: float | None = None) -> None:
        """Send ``payload`` as JSON once the session is ready; waits across reconnects.

        Returns when the message was written to a live connection. Order is kept.

        Raises:
            TypeError, EncodeError: not a dict, or not encodable (nothing queued).
            SendQueueFullError: ``send_queue_size`` messages are already waiting.
            SendTimeoutError: not sent within ``timeout`` seconds (it was withdrawn).
            SessionClosedError: the session stopped first (it was not sent).
        """
        # Encoded now: what is sent is the payload as it was at this call.
        await self._enqueue(False, self.ws.encode_json(payload), timeout)

    async def send_bytes(self, data: bytes, *, timeout: float | None = None) -> None:
        """Send a binary frame once the session is ready; as :meth:`send_json`."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._enqueue(True, bytes(data), timeout)

    async def _enqueue(self, binary: bool, payload: Any, timeout: float | None) -> None:
        if self.outcome is not None or self._stopping.is_set():
            raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
        if len(self._outbox) >= self.send_queue_size:
            raise SendQueueFullError(f"{self.send_queue_size} messages already waiting to be sent")
        loop = asyncio.get_running_loop()
        item = _Outgoing(binary, payload, loop.create_future())
        self._outbox.append(item)
        self._outbox_ready.set()
        deadline = None
        if timeout is not None:
            deadline = loop.call_later(max(timeout, 0.0), self._expire, item, timeout)
        try:
            # Shielded: a cancelled sender must not cancel the outcome the writer sets.
            await asyncio.shield(item.future)
        except asyncio.CancelledError:
            if not item.written:
                self._withdraw(item)
            raise
        finally:
            if deadline is not None:
                deadline.cancel()

    def _expire(self, item: _Outgoing, timeout: float) -> None:
        if item.written or item.future.done():
            return
        self._withdraw(item)
        item.future.set_exception(
            SendTimeoutError(f"not sent within {timeout}s (withdrawn, never sent)")
        )

    def _withdraw(self, item: _Outgoing) -> None:
        item.withdrawn = True
        with contextlib.suppress(ValueError):
            self._outbox.remove(item)

    @property
    def pending_sends(self) -> int:
        """Messages waiting to be sent."""
        return len(self._outbox)

    @property
    def pending_receives(self) -> int:
        """Messages received and waiting to be read (at most about
        ``receive_queue_size``; see there)."""
        return len(self._inbox) - (self._inbox.last() is _END)

    async def receive(self) -> Any:
        """The next application message, in order, across reconnects.

        Raises:
            SessionClosedError: the session stopped and every message was read.
        """
        item = await self._inbox.get()
        if item is _END:
            self._inbox.put(_END)
            raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive()
            except SessionClosedError:
                return

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Every :class:`SessionEvent` from now on, until the session stops.

        A subscriber more than 1,024 events behind loses the oldest
        (``stats.events_dropped`` counts them).
        """
        queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue(maxsize=1024)
        self._subscribers.append(queue)
        try:
            if self.outcome is not None:
                return
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    def _emit(self, kind: EventKind, **details: Any) -> None:
        event = SessionEvent(kind, self._clock(), **details)
        log.debug("session event %s", event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.stats.events_dropped += 1
            queue.put_nowait(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback failed for %s", kind.value)

    # -- the runner ----------------------------------------------------------------

    async def _run(self) -> None:
        resume = False
        resume_attempts = 0
        try:
            while not self._stopping.is_set():
                signal, reached_ready = await self._connection(resume)
                if reached_ready:
                    resume_attempts = 0
                self._ready.clear()
                if self._lost_at is None:
                    self._lost_at = self._clock()
                self._emit(EventKind.CONNECTION_LOST, signal=signal)
                if self._stopping.is_set():
                    self._finish(Outcome("closed", signal))
                    return
                if isinstance(signal, DisconnectSignal):
                    if signal.code in self.move_codes and await self._wait_for_move():
                        resume = False
                        continue
                    self._finish(Outcome("disconnect", signal))
                    return
                retry_resume = isinstance(signal, ResumeSignal) or (
                    resume
                    and isinstance(signal, ReconnectSignal)
                    and (signal.event in CONNECT_FAILURES or signal.event is Event.HANDSHAKE_STATUS)
                )
                if (
                    retry_resume
                    and self.protocol.can_resume()
                    and resume_attempts < self.max_resume_attempts
                ):
                    resume_attempts += 1
                    # The first resume is immediate; later ones back off.
                    delay = 0.0 if resume_attempts == 1 else self._schedule.next_delay()
                    if delay is None:
                        self._finish(Outcome("retries_exhausted", signal))
                        return
                    resume = True
                    self._emit(
                        EventKind.RESUME_SCHEDULED,
                        attempt=resume_attempts,
                        delay=delay,
                        signal=signal,
                    )
                else:
                    resume_attempts = 0
                    resume = False
                    delay = self._schedule.next_delay()
                    if delay is None:
                        self._finish(Outcome("retries_exhausted", signal))
                        return
                    self.stats.reconnects += 1
                    self._emit(
                        EventKind.RECONNECT_SCHEDULED,
                        attempt=self._schedule.attempts,
                        delay=delay,
                        signal=signal,
                    )
                if delay and await self._sleep(delay):
                    break
            self._finish(Outcome("closed", self.ws.last_signal))
        except asyncio.CancelledError:
            self._finish(Outcome("closed", self.ws.last_signal))
            raise
        except Exception as exc:
            log.exception("session runner failed")
            self._finish(Outcome("error", self.ws.last_signal, exc))
        finally:
            with contextlib.suppress(ValueError):
                await self.ws.disconnect()

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; ``True`` if the session was closed meanwhile."""
        self.state = SessionState.WAITING
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return self._stopping.is_set()

    async def _wait_for_move(self) -> bool:
        if self.move_grace <= 0:
            return False
        self._moved.clear()
        self.state = SessionState.AWAITING_MOVE
        self._emit(EventKind.MOVE_WAIT, delay=self.move_grace)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._moved.wait(), self.move_grace)
        return self._moved.is_set() and not self._stopping.is_set()

    async def _connection(self, resume: bool) -> tuple[Signal, bool]:
        """Connect, handshake and serve one connection; the signal that ended it."""
        self.state = SessionState.RESUMING if resume else SessionState.CONNECTING
        self._emit(EventKind.RESUMING if resume else EventKind.CONNECTING)
        if not resume:
            self.protocol.new_session()
        try:
            await self.ws.connect(self.url)
            self.stats.connects += 1
            interval = await asyncio.wait_for(
                self.protocol.open(self.ws, self._deliver, resume=resume), self.handshake_timeout
            )
        except Signal as signal:
            return signal, False
        except asyncio.TimeoutError:
            timeout = (ResumeSignal if resume else ReconnectSignal)(
                f"handshake not done within {self.handshake_timeout}s",
                code=self.zombie_close_code,
                event=Event.KEEPALIVE_TIMEOUT,
                initiated_locally=True,
            )
            await self.ws.disconnect(self.zombie_close_code, "handshake timeout")
            return timeout, False
        self.state = SessionState.READY
        self._ready.set()
        self._schedule.healthy()
        if resume:
            self.stats.resumes += 1
        if self._lost_at is not None:
            self.stats.recoveries.append(self._clock() - self._lost_at)
            self._lost_at = None
        self._emit(EventKind.RESUMED if resume else EventKind.READY)
        return await self._serve(interval), True

    def _deliver(self, item: Any) -> None:
        self.stats.received += 1
        self._inbox.put(item)

    async def _serve(self, interval: float) -> Signal:
        if self.max_heartbeat_interval is not None:
            interval = min(interval, self.max_heartbeat_interval)
        tracker = HeartbeatTracker(interval, max_missed=self.max_missed_acks, clock=self._clock)
        self._zombie = None
        self._beat_now.clear()
        reader = asyncio.ensure_future(self._read(tracker))
        tasks = {
            reader,
            asyncio.ensure_future(self._heartbeat(tracker)),
            asyncio.ensure_future(self._write()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        if reader not in done and self.ws.disconnected:
            await self._drain()
        # Every task's outcome is retrieved (two may have failed at once); the first
        # finished one's signal is the connection's ending, unless it was a zombie.
        first = [task for task in done if not task.cancelled()]
        failures = [task.exception() for task in tasks if not task.cancelled()]
        if self._zombie is not None:
            return self._zombie
        for exc in [task.exception() for task in first] + failures:
            if exc is not None and not isinstance(exc, Signal):
                raise exc
        for exc in [task.exception() for task in first] + failures:
            if isinstance(exc, Signal):
                return exc
        raise AssertionError("a connection task ended without a signal")

    async def _read(self, tracker: HeartbeatTracker) -> None:
        ws, protocol, inbox = self.ws, self.protocol, self._inbox
        while True:
            if inbox.full():
                # Stop reading the socket until the application catches up: the peer
                # feels TCP backpressure. ACKs and pongs wait unread meanwhile.
                tracker.hold()
                ws.hold_keepalive()
                try:
                    await inbox.wait_room()
                finally:
                    ws.release_keepalive()
                    tracker.release()
            try:
                packet = await ws.receive()
            except PayloadError as error:
                tracker.frame_received()
                self._emit(EventKind.PAYLOAD_ERROR, detail=error.raw)
                continue
            tracker.frame_received()
            item = protocol.interpret(packet)
            if item is None:
                continue
            if isinstance(item, HeartbeatAck):
                latency = tracker.ack(item.nonce)
                if latency is not None:
                    self.latency = latency
                    self._emit(EventKind.HEARTBEAT, latency=latency)
            elif isinstance(item, HeartbeatRequest):
                self._beat_now.set()
            else:
                self._deliver(item)

    async def _drain(self) -> None:
        """Deliver frames that arrived before a send noticed the end (bounded)."""
        with contextlib.suppress(Signal, PayloadError, asyncio.TimeoutError):
            while True:
                item = self.protocol.interpret(await asyncio.wait_for(self.ws.receive(), 1.0))
                if item is not None and not isinstance(item, (HeartbeatAck, HeartbeatRequest)):
                    self._deliver(item)

    async def _heartbeat(self, tracker: HeartbeatTracker) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + tracker.interval
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), max(next_beat - loop.time(), 0))
            self._beat_now.clear()
            next_beat = loop.time() + tracker.interval
            nonce = tracker.beat()
            if nonce is None:
                raise await self._zombie_found(tracker)
            # A gateway that stopped reading leaves no room for the beat: give up on it
            # at the next tick (nothing written), which then counts it as missed.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self.ws.send_json(self.protocol.heartbeat(nonce)),
                    max(next_beat - loop.time(), 0),
                )

    async def _zombie_found(self, tracker: HeartbeatTracker) -> Signal:
        reason = tracker.zombie_reason() or "zombie"
        self.stats.zombies += 1
        self._zombie = self.ws.policy.signal_for(
            Event.KEEPALIVE_TIMEOUT,
            code=self.zombie_close_code,
            reason=reason,
            initiated_locally=True,
        )
        self._emit(EventKind.ZOMBIE, detail=reason)
        await self.ws.disconnect(self.zombie_close_code, "zombie connection")
        return self._zombie

    async def _write(self) -> None:
        outbox, ws = self._outbox, self.ws
        while True:
            while not outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            # Room first: a message waiting here is still queued (and withdrawable).
            await ws.writable()
            if not outbox:
                continue
            item = outbox[0]
            # With room, a send writes the whole frame without suspending: it returns
            # written, or raises (nothing written, the message stays first in line).
            if item.binary:
                await ws.send_bytes(item.payload)
            else:
                await ws.send_text(item.payload)
            assert not item.withdrawn, "a message was withdrawn while being written"
            outbox.popleft()
            item.written = True
            self.stats.sent += 1
            if not item.future.done():
                item.future.set_result(None)

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.state = SessionState.STOPPED
        self._stopping.set()
        for item in self._outbox:
            if not item.future.done():
                item.future.set_exception(
                    SessionClosedError(f"session stopped before sending: {outcome}", outcome)
                )
                item.future.exception()  # retrieved: the sender may have given up already
        self._outbox.clear()
        self._inbox.put(_END)
        log.info("session stopped: %s", outcome)
        self._emit(EventKind.STOPPED, signal=outcome.signal, detail=outcome.reason)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)


_END = object()
