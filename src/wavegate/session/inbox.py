"""Received messages waiting for the application, in order, bounded."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from .._flag import Flag


class Inbox:
    """A FIFO the reader fills and the application empties.

    ``limit`` is where the reader stops reading the socket (:meth:`wait_room`): the
    peer then feels TCP backpressure. A few more may be put while a handshake replays
    or a connection's end is drained. :meth:`close` ends it: once empty, :meth:`get`
    raises the error ``close()`` was given a maker for.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Any] | None = None
        """Made at the first put: many sessions never deliver a message, and an empty
        deque is a 600-byte block."""
        self._readable = Flag()
        self._room = Flag()
        self._room.set()
        self._closed: Callable[[], Exception] | None = None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def put(self, item: Any) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        self._readable.set()
        if len(items) >= self.limit:
            self._room.clear()

    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    def close(self, error: Callable[[], Exception]) -> None:
        """No more messages will come: :meth:`get` raises ``error()`` once empty."""
        self._closed = error
        self._readable.set()

    async def get(self) -> Any:
        """The next message (waits for one)."""
        while True:
            items = self._items
            if items:
                break
            if self._closed is not None:
                raise self._closed()
            self._readable.clear()
            await self._readable.wait()
        item = items.popleft()
        if len(items) < self.limit:
            self._room.set()
        return item
