"""What happens to a session, for whoever wants to know: events and counters."""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..signals import Signal

log = logging.getLogger("wavegate.session")

OnEvent = Callable[["SessionEvent"], "Awaitable[None] | None"]
"""An ``on_event`` callback: a plain function, or a coroutine function (awaited one
event at a time, in order)."""


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
        kind: what happened: an :class:`EventKind`, or a protocol's own kind (e.g.
            :class:`~wavegate.discord.dave.DaveEvent`); all are ``str`` enums.
        at: the session clock (``time.monotonic()``) when it happened.
        attempt: the attempt number, for scheduled retries.
        delay: seconds until the next attempt, for scheduled retries.
        signal: the signal behind ``CONNECTION_LOST``/``STOPPED``.
        latency: heartbeat round trip in seconds, for ``HEARTBEAT``.
        detail: a short description (the raw text for ``PAYLOAD_ERROR``).
        data: details of a protocol's own event (e.g. ``epoch``, ``transition_id``).
    """

    kind: Enum
    at: float
    attempt: int = 0
    delay: float | None = None
    signal: Signal | None = None
    latency: float | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


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


def _discard(subscribers: list[Any], queue: Any) -> None:
    if queue in subscribers:
        subscribers.remove(queue)


class EventHub:
    """Hands every event to the ``on_event`` callback and to each subscriber.

    A subscriber more than ``backlog`` events behind loses the oldest
    (``stats.events_dropped`` counts them).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        stats: SessionStats,
        on_event: OnEvent | None,
        backlog: int = 1024,
    ) -> None:
        self._clock = clock
        self._stats = stats
        self._on_event = on_event
        self._backlog = backlog
        self._subscribers: list[asyncio.Queue[SessionEvent | None]] = []
        self._closed = False
        self._awaiting: asyncio.Queue[SessionEvent | None] | None = None
        self._deliverer: asyncio.Task[None] | None = None

    def emit(self, kind: Enum, **details: Any) -> None:
        if self._closed:  # after STOPPED nothing happens to the session
            log.debug("event %s after the session stopped: not delivered", kind)
            return
        event = SessionEvent(kind, self._clock(), **details)
        log.debug("session event %s", event)
        for queue in tuple(self._subscribers):  # a finalizer may remove one meanwhile
            self._push(queue, event)
        if self._on_event is None:
            return
        if self._awaiting is not None:  # an async callback is still busy: keep the order
            self._awaiting.put_nowait(event)
            return
        result = self._call(event)
        if inspect.isawaitable(result):
            self._awaiting = asyncio.Queue()
            self._deliverer = asyncio.ensure_future(self._deliver(result))

    def _call(self, event: SessionEvent) -> Awaitable[None] | None:
        assert self._on_event is not None
        try:
            return self._on_event(event)
        except Exception:
            log.exception("on_event callback failed for %s", event.kind.value)
            return None

    async def _deliver(self, first: Awaitable[None]) -> None:
        """Await an async callback's results one at a time, in the events' order."""
        assert self._awaiting is not None
        step: Awaitable[None] | None = first
        while True:
            if step is not None:
                try:
                    await step
                except Exception:
                    log.exception("on_event callback failed")
            event = await self._awaiting.get()
            if event is None:
                return
            step = self._call(event)

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until an async callback has had every event,
        then cancel what is left."""
        deliverer = self._deliverer
        if deliverer is None or deliverer.done() or deliverer is asyncio.current_task():
            return  # (called from the callback itself, e.g. close() in on_event)
        try:
            await asyncio.wait_for(asyncio.shield(deliverer), timeout)
        except asyncio.TimeoutError:
            deliverer.cancel()
            await asyncio.wait({deliverer})

    def _push(self, queue: asyncio.Queue[SessionEvent | None], item: SessionEvent | None) -> None:
        if queue.full():
            queue.get_nowait()
            self._stats.events_dropped += 1
        queue.put_nowait(item)

    def subscribe(self) -> AsyncIterator[SessionEvent]:
        """Every event from now on (from this call, not from the first read), until
        :meth:`close`."""
        queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue(maxsize=self._backlog)
        if self._closed:
            queue.put_nowait(None)
        else:
            self._subscribers.append(queue)
        events = self._read(queue)
        # A subscription never read (or dropped unfinished) is let go with its reader.
        # Not through self: the finalizer would keep the hub, and all it reaches, alive.
        weakref.finalize(events, _discard, self._subscribers, queue)
        return events

    async def _read(self, queue: asyncio.Queue[SessionEvent | None]) -> AsyncIterator[SessionEvent]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._unsubscribe(queue)

    def _unsubscribe(self, queue: asyncio.Queue[SessionEvent | None]) -> None:
        _discard(self._subscribers, queue)

    def close(self) -> None:
        """No more events: every subscription ends (after the events it has)."""
        self._closed = True
        if self._awaiting is not None:
            self._awaiting.put_nowait(None)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
