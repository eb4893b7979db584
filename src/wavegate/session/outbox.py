"""Messages waiting to be sent: queued until written, whole, or withdrawn.

The writer waits for room in the socket *before* it takes the head of the queue, and a
write never waits, so a message is never "maybe written" while anyone waits: a
deadline or a cancelled sender can always tell a queued message (withdrawn: never
written, never will be) from a written one (the send returns).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..signals import SendQueueFullError, SendTimeoutError


@dataclass(eq=False)
class Outgoing:
    """One message: a binary frame, or UTF-8 JSON text encoded when it was queued."""

    frame: bytes
    binary: bool
    sent: asyncio.Future[None]
    written: bool = False
    withdrawn: bool = False


class Outbox:
    """A bounded FIFO of :class:`Outgoing` messages (``limit`` of them at most)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Outgoing] | None = None
        """Made at the first send: many sessions never send one, and an empty deque is
        a 600-byte block."""
        self.on_filled: Callable[[], None] | None = None
        """Called when a message is queued: the connection's writer, while one can
        write (a writer waiting for messages would be a task held per session)."""

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    async def send(self, frame: bytes, *, binary: bool, timeout: float | None) -> None:
        """Queue a message and wait until it is written (or withdrawn).

        Raises:
            SendQueueFullError: ``limit`` messages are already waiting (not queued).
            SendTimeoutError: not written within ``timeout`` seconds (withdrawn).
            Whatever :meth:`fail_all` fails it with.
        """
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) >= self.limit:
            raise SendQueueFullError(f"{self.limit} messages already waiting to be sent")
        loop = asyncio.get_running_loop()
        item = Outgoing(frame, binary, loop.create_future())
        items.append(item)
        if self.on_filled is not None:
            self.on_filled()
        deadline = None
        if timeout is not None:
            deadline = loop.call_later(max(timeout, 0.0), self._expire, item, timeout)
        try:
            # Shielded: a cancelled sender must not cancel the outcome the writer sets.
            await asyncio.shield(item.sent)
        except asyncio.CancelledError:
            if not item.written:
                self._withdraw(item)
            raise
        finally:
            if deadline is not None:
                deadline.cancel()

    def head(self) -> Outgoing | None:
        """The first message, if any (it stays queued)."""
        return self._items[0] if self._items else None

    def written(self, item: Outgoing) -> None:
        """``item`` (the head) was written: its sender returns."""
        items = self._items
        assert items, "only the head is written"
        assert items[0] is item, "only the head is written"
        items.popleft()
        item.written = True
        if not item.sent.done():
            item.sent.set_result(None)

    def fail_all(self, error: Callable[[], Exception]) -> None:
        """Fail every queued message with a new ``error()`` (none was written)."""
        items = self._items
        if items is None:
            return
        for item in items:
            if not item.sent.done():
                item.sent.set_exception(error())
                item.sent.exception()  # retrieved: the sender may have given up already
        items.clear()

    def _expire(self, item: Outgoing, timeout: float) -> None:
        if item.written or item.sent.done():
            return
        self._withdraw(item)
        item.sent.set_exception(
            SendTimeoutError(f"not sent within {timeout}s (withdrawn, never sent)")
        )

    def _withdraw(self, item: Outgoing) -> None:
        item.withdrawn = True
        if self._items is not None:
            with contextlib.suppress(ValueError):
                self._items.remove(item)
