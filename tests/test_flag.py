"""``Flag``: the light ``asyncio.Event`` sessions use (thousands may live in a process)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from wavegate._flag import Flag


async def test_wait_returns_at_once_when_set_and_waits_when_cleared() -> None:
    flag = Flag()
    assert not flag.is_set()
    flag.set()
    assert flag.is_set()
    assert await flag.wait() is True
    flag.clear()
    waiting = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    flag.set()
    assert await waiting is True


async def test_set_wakes_every_waiter_and_forgets_them() -> None:
    flag = Flag()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag._waiters is None


async def test_a_cancelled_waiter_is_removed_and_the_others_still_wake() -> None:
    flag = Flag()
    first = asyncio.ensure_future(flag.wait())
    second = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert flag._waiters is not None
    assert len(flag._waiters) == 1
    flag.set()
    assert await second is True
    assert flag._waiters is None


async def test_wait_with_a_timeout_leaves_no_waiter_behind() -> None:
    flag = Flag()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.01)
    assert flag._waiters is None
    assert repr(flag) == "<Flag unset>"


def test_a_flag_is_much_smaller_than_an_event() -> None:
    def size(obj: object) -> int:
        total = sys.getsizeof(obj)
        for name in ("__dict__", "_waiters"):
            inner = getattr(obj, name, None)
            if inner is not None:
                total += sys.getsizeof(inner)
        return total

    assert size(Flag()) * 5 < size(asyncio.Event())
