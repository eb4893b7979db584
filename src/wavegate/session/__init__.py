"""The session supervisor: acts on signals so callers never hand-roll the loop.

A :class:`Session` owns one :class:`~wavegate.Websocket` and drives a sans-I/O
:class:`~wavegate.protocol.GatewayProtocol` over it (the Discord voice client is one).
Its parts, one idea each:

- ``machine``: what to do after a connection ended, and the session's state (pure);
- ``connection``: one connection's life (open, handshake, read/beat/write, end);
- ``outbox`` / ``inbox``: messages waiting to be sent / to be read;
- ``events``: events and counters for whoever watches.

This facade starts the runner task, asks the machine after each connection and does
what it says: resume, open a new session after a backoff, wait for a move, or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from .. import _checks as checks
from .._flag import Flag
from ..backoff import Backoff, RetrySchedule
from ..protocol import GatewayProtocol, HandshakeDone
from ..redact import redact_url
from ..signals import SessionClosedError, Signal, WaitTimeoutError
from ..websocket import Websocket, check_close, check_url
from . import connection
from .events import EventHub, EventKind, OnEvent, SessionEvent, SessionStats
from .inbox import Inbox
from .machine import (
    AwaitMove,
    Ending,
    Outcome,
    Resume,
    RetryRules,
    SessionMachine,
    SessionState,
    Stop,
)
from .outbox import Outbox

log = logging.getLogger("wavegate.session")

__all__ = [
    "EventKind",
    "Outcome",
    "Session",
    "SessionEvent",
    "SessionState",
    "SessionStats",
]


_S = TypeVar("_S", bound="Session")
CLOSE_TIMEOUT = 5.0
"""``Session``'s default ``close_timeout``, in seconds."""


class Session:
    """Supervises a gateway session over a :class:`~wavegate.Websocket`.

    Args:
        url: the gateway URL.
        protocol: the gateway protocol (see :class:`~wavegate.GatewayProtocol`).
        websocket: the connection to drive (otherwise ``Websocket(close_timeout=...)``
            with this session's ``close_timeout``).
        backoff: retry delays for new sessions and repeated resumes.
        max_resume_attempts: consecutive resume attempts before a new session.
        handshake_timeout: seconds for a handshake (from the open to its end).
        max_missed_acks: heartbeats in a row without ACK that make a zombie.
        max_heartbeat_interval: beat at least this often (seconds), whatever the
            server asks; ``None`` uses the server's interval.
        send_queue_size: outgoing messages that may wait; more raise
            :class:`~wavegate.SendQueueFullError`.
        receive_queue_size: received messages that may wait for the application;
            past it the session stops reading the socket (TCP backpressure), and
            zombie detection and keepalive wait until the application reads again.
        close_timeout: seconds ``close()`` waits for the runner (and, with the default
            websocket, for the server to answer the close; your own ``websocket``'s
            ``close_timeout`` bounds that part).
        zombie_close_code: the code we close a zombie with, 3000-4999 (not 1000, so
            the server keeps the session resumable).
        move_grace: seconds to wait for :meth:`move` after a close with one of
            ``move_codes`` before stopping (Discord voice 4014 on a channel move;
            ``float("inf")``: for ever).
        move_codes: the close codes that open the ``move_grace`` window.
        on_event: called with every :class:`SessionEvent`: a function (it must not
            block) or a coroutine function (awaited one event at a time, in order;
            ``close()`` waits up to ``close_timeout`` for it to catch up).
        clock: a monotonic clock; random_source: for backoff jitter (tests).

    Raises:
        InvalidURLError: ``url`` is not a ``ws://`` or ``wss://`` URL with a host.
        TypeError, ValueError: another option that makes no sense (naming it).
    """

    def __init__(
        self,
        url: str,
        protocol: GatewayProtocol,
        *,
        websocket: Websocket | None = None,
        backoff: Backoff | None = None,
        max_resume_attempts: int = 3,
        handshake_timeout: float = 10.0,
        max_missed_acks: int = 2,
        max_heartbeat_interval: float | None = None,
        send_queue_size: int = 1024,
        receive_queue_size: int = 1024,
        close_timeout: float = CLOSE_TIMEOUT,
        zombie_close_code: int = 4000,
        move_grace: float = 0.0,
        move_codes: frozenset[int] = frozenset({4014}),
        on_event: OnEvent | None = None,
        clock: Callable[[], float] = time.monotonic,
        random_source: Any = None,
    ) -> None:
        seconds = _check_options(locals())
        self.url: str = seconds["url"]
        self.protocol = protocol
        if websocket is None:
            websocket = Websocket(close_timeout=seconds["close_timeout"])
        self.ws = websocket
        self.stats = SessionStats()
        self.latency: float | None = None
        """The last heartbeat round trip in seconds."""
        self.outcome: Outcome | None = None
        """Why the session stopped (``None`` while it runs)."""
        schedule = RetrySchedule(backoff or Backoff(), clock=clock, rng=random_source)
        rules = RetryRules(max_resume_attempts, frozenset(move_codes), seconds["move_grace"])
        self._machine = SessionMachine(rules, schedule)
        self._close_timeout = seconds["close_timeout"]
        self._clock = clock
        self._hub = EventHub(clock, self.stats, on_event)
        self._outbox = Outbox(send_queue_size)
        self._inbox = Inbox(receive_queue_size)
        timing = connection.Timing(
            seconds["handshake_timeout"],
            max_missed_acks,
            seconds["max_heartbeat_interval"],
            zombie_close_code,
        )
        self._parts = self._connection_parts(timing)
        self._runner: asyncio.Task[None] | None = None
        self._closing = Flag()
        """Set by ``close()``, and when the session stops by itself."""
        self._moved = Flag()
        self._ready = Flag()
        self._sessions_started = 0
        self._last_ending: Signal | None = None
        """How the last connection ended (kept across the next attempt, for messages)."""
        self._connections_tried = 0
        self._lost_at: float | None = None

    def _connection_parts(self, timing: connection.Timing) -> connection.Parts:
        return connection.Parts(
            self.ws,
            self.protocol,
            self._outbox,
            self._inbox,
            self._hub,
            self.stats,
            timing,
            self._clock,
            on_ready=self._on_ready,
            on_latency=self._on_latency,
        )

    @property
    def state(self) -> SessionState:
        """Where the session is (see :class:`SessionState`)."""
        return self._machine.state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.value} {redact_url(self.url)}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising (returns at once; see :meth:`wait_ready`).

        Raises:
            RuntimeError: it was started before, or closed already.
        """
        if self._runner is not None:
            raise RuntimeError("session already started")
        if self.outcome is not None:
            raise RuntimeError(f"session already stopped: {self.outcome}")
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="wavegate-session")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the session is READY.

        Raises:
            SessionClosedError: the session stopped first.
            WaitTimeoutError: not ready within ``timeout`` seconds (a
                ``TimeoutError``; the message gives the state and the last ending).
            TypeError, ValueError: ``timeout`` is not a number of at least 0 or None.
        """
        timeout = checks.wait("timeout", timeout)
        ready = asyncio.ensure_future(self._ready.wait())
        stopped = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait(
                {ready, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            stopped.cancel()
        if self._ready.is_set():
            return
        if self._closing.is_set():
            raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
        raise WaitTimeoutError(f"session not ready within {timeout}s: {self._progress()}")

    def _progress(self) -> str:
        """What the session is doing, for a timeout's message: the state, the URL, the
        number of connection attempts, and how the last connection ended."""
        text = (
            f"state {self.state.value} ({redact_url(self.url)}, attempt {self._connections_tried})"
        )
        last = self._last_ending
        return text + (f", last connection ended: {last}" if last is not None else "")

    async def close(self, code: int = 1000, reason: str = "") -> Outcome:
        """Stop: close the connection with ``code``, cancel and await every task.

        Close with a 4000-4999 code to leave the server-side session resumable.

        Raises:
            ValueError: ``code`` is not 1000 or in 3000..4999 (1001 included: it is
                the server's to send), or ``reason`` is over 123 bytes. Nothing is
                closed then.
        """
        check_close(code, reason)
        self._closing.set()
        await self.ws.disconnect(code, reason)
        runner = self._runner
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), self._close_timeout)
            except asyncio.TimeoutError:
                runner.cancel()
                await asyncio.wait({runner})
        self._finish(Outcome("closed"))
        await self._hub.drained(self._close_timeout)
        assert self.outcome is not None
        return self.outcome

    async def wait_closed(self) -> Outcome:
        """Wait until the session stops by itself (or by ``close()``) and say why."""
        if self._runner is not None:
            await asyncio.wait({self._runner})
        await self._hub.drained(self._close_timeout)  # an async on_event has had them all
        if self.outcome is None:
            raise RuntimeError("wait_closed() before start(): the session never ran")
        return self.outcome

    async def __aenter__(self: _S) -> _S:
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
            self.url = check_url(url)
        self._moved.set()

    # -- sending and receiving ---------------------------------------------------------

    async def send_json(self, payload: dict[str, Any], *, timeout: float | None = None) -> None:
        """Send ``payload`` as JSON once the session is ready; waits across reconnects.

        The payload is encoded now: what is sent is the payload as it is at this call.
        Returns once it was written, whole, to a live connection; order is kept.

        Raises:
            TypeError, EncodeError: not a dict, or not encodable (nothing queued).
            TypeError, ValueError: ``timeout`` is not a number of at least 0 or None.
            SendQueueFullError: ``send_queue_size`` messages are already waiting.
            SendTimeoutError: not written within ``timeout`` seconds; withdrawn, it
                never will be.
            SessionClosedError: the session stopped first (it was not sent).
        """
        await self._send(self.ws.encode_json(payload), binary=False, timeout=timeout)

    async def send_bytes(self, data: bytes, *, timeout: float | None = None) -> None:
        """Send a binary frame once the session is ready; as :meth:`send_json`."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._send(bytes(data), binary=True, timeout=timeout)

    async def _send(self, frame: bytes, *, binary: bool, timeout: float | None) -> None:
        timeout = checks.wait("timeout", timeout)
        if self._closing.is_set():
            raise SessionClosedError(f"session stopped: {self.outcome}", self.outcome)
        await self._outbox.send(frame, binary=binary, timeout=timeout)

    @property
    def pending_sends(self) -> int:
        """Messages waiting to be sent."""
        return len(self._outbox)

    @property
    def pending_receives(self) -> int:
        """Messages received and waiting to be read (at most about
        ``receive_queue_size``; see there)."""
        return len(self._inbox)

    async def receive(self) -> Any:
        """The next application message, in order, across reconnects.

        Raises:
            SessionClosedError: the session stopped and every message was read.
        """
        return await self._inbox.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive()
            except SessionClosedError:
                return

    def events(self) -> AsyncIterator[SessionEvent]:
        """Every :class:`SessionEvent` from now on, until the session stops.

        A subscriber more than 1,024 events behind loses the oldest
        (``stats.events_dropped`` counts them).
        """
        return self._hub.subscribe()

    # -- the runner --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            self._machine.start()
            while self.state is not SessionState.STOPPED:
                if self._closing.is_set():  # close() came while we were between connections
                    self._finish(Outcome("closed", self.ws.last_signal))
                    break
                ending = await self._connection(resume=self.state is SessionState.RESUMING)
                await self._after(ending)
        except asyncio.CancelledError:
            self._finish(Outcome("closed", self.ws.last_signal))
            raise
        except Exception as exc:
            log.exception("session runner failed")
            self._finish(Outcome("error", self.ws.last_signal, exc))
        finally:
            await self.ws.disconnect()

    async def _connection(self, *, resume: bool) -> Ending:
        self._connections_tried += 1
        self._hub.emit(EventKind.RESUMING if resume else EventKind.CONNECTING)
        if not resume:
            if self._sessions_started:
                await self._renew()
            self._sessions_started += 1
            self.protocol.new_session()
        ending = await connection.run(self._parts, self.url, resume=resume)
        self._ready.clear()
        if self._lost_at is None:
            self._lost_at = self._clock()
        self._hub.emit(EventKind.CONNECTION_LOST, signal=ending.signal)
        self._last_ending = ending.signal
        return ending

    async def _after(self, ending: Ending) -> None:
        """Do what the machine decides after a connection ended."""
        decision = self._machine.connection_ended(
            ending, closing=self._closing.is_set(), can_resume=self.protocol.can_resume()
        )
        if isinstance(decision, Stop):
            self._finish(decision.outcome)
        elif isinstance(decision, AwaitMove):
            await self._await_move(ending, decision.grace)
        else:
            if isinstance(decision, Resume):
                attempt, kind = decision.attempt, EventKind.RESUME_SCHEDULED
            else:
                attempt, kind = self._machine.schedule.attempts, EventKind.RECONNECT_SCHEDULED
                self.stats.reconnects += 1
                # The old session is over now, not when the next one starts: nothing
                # of it (a DAVE group...) may look current during the backoff.
                self.protocol.new_session()
            self._hub.emit(kind, attempt=attempt, delay=decision.delay, signal=ending.signal)
            if decision.delay > 0:
                if await _set_within(self._closing, decision.delay):
                    self._finish(Outcome("closed", ending.signal))
                    return
                self._machine.retry_due()

    async def _await_move(self, ending: Ending, grace: float) -> None:
        # Not cleared first: a move() that came just before the close counts.
        self._hub.emit(EventKind.MOVE_WAIT, delay=grace)
        moved = asyncio.ensure_future(self._moved.wait())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({moved, closing}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            closing.cancel()
        if self._moved.is_set() and not self._closing.is_set():
            self._moved.clear()
            self._machine.moved()
        else:
            reason = "closed" if self._closing.is_set() else "disconnect"
            self._finish(Outcome(reason, ending.signal))

    def _on_ready(self, done: HandshakeDone) -> None:
        self._machine.handshake_done()
        self._ready.set()
        if done.resumed:
            self.stats.resumes += 1
        if self._lost_at is not None:
            self.stats.recoveries.append(self._clock() - self._lost_at)
            self._lost_at = None
        self._hub.emit(EventKind.RESUMED if done.resumed else EventKind.READY)

    def _on_latency(self, latency: float) -> None:
        self.latency = latency
        self._hub.emit(EventKind.HEARTBEAT, latency=latency)

    def _explain(self, outcome: Outcome) -> Outcome:
        """The outcome, with what its close means to this gateway (for subclasses)."""
        return outcome

    async def _renew(self) -> None:
        """Before each new session but the first: get what it needs (for subclasses,
        e.g. fresh credentials)."""

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        outcome = self._explain(outcome)
        self.outcome = outcome
        self._machine.stop()
        self._closing.set()
        self._outbox.fail_all(
            lambda: SessionClosedError(f"session stopped before sending: {outcome}", outcome)
        )
        self._inbox.close(lambda: SessionClosedError(f"session stopped: {outcome}", outcome))
        log.info("session stopped: %s", outcome)
        self._hub.emit(EventKind.STOPPED, signal=outcome.signal, detail=outcome.summary)
        self._hub.close()


async def _set_within(event: Flag, delay: float) -> bool:
    """Wait up to ``delay`` seconds for ``event``; whether it is set (also when it was
    set in the very turn the delay ran out)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), delay)
    return event.is_set()


_PROTOCOL_METHODS = ("start", "receive", "heartbeat", "can_resume", "new_session")


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse, by name, an option that would fail later and far from its cause;
    the durations, as floats, and the URL (``check_url``'s)."""
    url = check_url(options["url"])
    protocol = options["protocol"]
    if isinstance(protocol, type):
        raise TypeError(f"protocol must be an instance, got the class {protocol.__name__}")
    if not all(callable(getattr(protocol, name, None)) for name in _PROTOCOL_METHODS):
        raise TypeError(
            f"protocol must be a GatewayProtocol ({', '.join(_PROTOCOL_METHODS)}), "
            f"got {type(protocol).__name__}"
        )
    checks.count("max_resume_attempts", options["max_resume_attempts"], 0)
    checks.count("max_missed_acks", options["max_missed_acks"], 1)
    for name in ("send_queue_size", "receive_queue_size"):
        checks.count(name, options[name], 1)
    seconds: dict[str, Any] = {
        name: checks.positive(name, options[name])
        for name in ("handshake_timeout", "close_timeout")
    }
    seconds["url"] = url
    beat = options["max_heartbeat_interval"]
    seconds["max_heartbeat_interval"] = checks.positive_or_none("max_heartbeat_interval", beat)
    seconds["move_grace"] = checks.at_least("move_grace", options["move_grace"], 0, infinite=True)
    _check_codes(options["zombie_close_code"], options["move_codes"])
    checks.instance("websocket", options["websocket"], Websocket)
    checks.instance("backoff", options["backoff"], Backoff)
    for name in ("on_event", "clock"):
        checks.function(name, options[name])
    return seconds


def _check_codes(code: object, move_codes: object) -> None:
    problem = (
        "zombie_close_code must be an int from 3000 to 4999 (1000 and 1001 end a "
        f"Discord session), got {code!r}"
    )
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(problem)
    if not 3000 <= code <= 4999:
        raise ValueError(problem)
    if (
        not isinstance(move_codes, Iterable)
        or isinstance(move_codes, (str, bytes))
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in move_codes)
    ):
        raise TypeError(f"move_codes must be a set of ints, got {move_codes!r}")
