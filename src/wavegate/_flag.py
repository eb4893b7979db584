"""A light ``asyncio.Event``: the same methods, a fraction of the memory."""

from __future__ import annotations

import asyncio
import contextlib


class Flag:
    """``set()``, ``clear()``, ``is_set()`` and ``await wait()``, as ``asyncio.Event``.

    An ``asyncio.Event`` holds an instance dict and a deque (about 800 bytes) whether or
    not anything waits; a session keeps about ten, and a process may keep thousands of
    sessions. A ``Flag`` holds a list of waiters only while something waits.
    """

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        return f"<Flag {'set' if self._value else 'unset'}>"

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._value

    def set(self) -> None:
        """Set the flag and wake every task waiting for it."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Unset the flag: ``wait()`` waits again."""
        self._value = False

    async def wait(self) -> bool:
        """Wait until the flag is set (at once if it is); ``True``, as ``Event.wait``."""
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            # Cancelled, or woken: either way this waiter is done with.
            if self._waiters is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True
