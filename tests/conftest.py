from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from wavegate import Websocket
from wavegate.testing import WebsocketTestServer
from wavegate.transport import TRANSPORTS


@pytest_asyncio.fixture
async def server() -> AsyncIterator[WebsocketTestServer]:
    async with WebsocketTestServer() as running:
        yield running


WebsocketFactory = Callable[..., Websocket]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Every test that makes its websockets with ``make_ws`` runs once per transport."""
    return str(request.param)


@pytest_asyncio.fixture
async def make_ws(transport: str) -> AsyncIterator[WebsocketFactory]:
    """Websockets (on the test's transport) disconnected after the test, whatever it did."""
    made: list[Websocket] = []

    def make(**options: object) -> Websocket:
        options.setdefault("transport", transport)
        ws = Websocket(**options)  # type: ignore[arg-type]
        made.append(ws)
        return ws

    yield make
    for ws in made:
        await ws.disconnect()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, or fail after ``timeout`` seconds.

    For state owned by another component that offers no notification (a server's
    counters); checked every few milliseconds, in this one place.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
