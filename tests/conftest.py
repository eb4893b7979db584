from __future__ import annotations

import asyncio
import shutil
import sysconfig
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


TRANSPORT_VARIANTS = (*TRANSPORTS, "picows-python")
"""Each transport, and picows with its fallback listener (what an install without a C
compiler runs): every behaviour is tested on each."""


@pytest.fixture(params=TRANSPORT_VARIANTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test that makes its websockets with ``make_ws`` (or passes this name to
    ``Websocket``) runs once per transport variant; the name returned is the transport's."""
    name = str(request.param)
    if name == "picows-python":
        from wavegate.transport import picows_transport

        monkeypatch.setattr(picows_transport, "LISTENER", "python")
        return "picows"
    if name == "picows":
        from wavegate.transport import picows_transport

        if picows_transport.LISTENER != "compiled" and _compiler() is not None:
            pytest.fail(f"a C compiler is here but {picows_transport.describe()}")
    return name


def _compiler() -> str | None:
    """The C compiler Python's build would use, if it is on this machine."""
    command = str(sysconfig.get_config_var("CC") or "cc").split()
    return shutil.which(command[0]) if command else None


def picows_listener() -> str:
    """The listener picows connections use now (``compiled`` or ``python``)."""
    from wavegate.transport import picows_transport

    return picows_transport.LISTENER


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
